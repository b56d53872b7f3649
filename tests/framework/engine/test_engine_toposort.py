"""Step and template ordering (graphlib): dependencies first, cycles named in one line."""

from __future__ import annotations

import pytest

from emforge.engine.keys import toposort
from emforge.engine.protocol import Step
from emforge.engine.templates import Template, _order
from emforge.errors import ParamError


def _noop(ctx):
    return None


def _names(steps):
    return [s.name for s in steps]


def test_steps_come_after_their_deps():
    steps = [Step("c", _noop, deps=["a", "b"]), Step("a", _noop), Step("b", _noop, deps=["a"])]
    order = _names(toposort(steps))
    assert sorted(order) == ["a", "b", "c"]
    assert order.index("a") < order.index("b") < order.index("c")


def test_a_step_cycle_is_named_in_dependency_order():
    steps = [
        Step("a", _noop, deps=["b"]),
        Step("b", _noop, deps=["c"]),
        Step("c", _noop, deps=["a"]),
    ]
    with pytest.raises(
        ParamError, match=r"^steps: dependency cycle: (\w) -> (\w) -> (\w) -> \1$"
    ) as e:
        toposort(steps)
    names = str(e.value).split(": ")[-1].split(" -> ")
    deps = {"a": "b", "b": "c", "c": "a"}
    assert all(
        deps[x] == y for x, y in zip(names[:-1], names[1:], strict=True)
    )  # each depends on the next
    with pytest.raises(ParamError, match=r"dependency cycle: s -> s$"):
        toposort([Step("s", _noop, deps=["s"])])


def test_unknown_and_duplicate_steps_are_refused():
    with pytest.raises(ParamError, match="depends on unknown step 'x'"):
        toposort([Step("a", _noop, deps=["x"])])
    with pytest.raises(ParamError, match="two steps are named 'a'"):
        toposort([Step("a", _noop), Step("a", _noop)])


def _template(nodes):
    return Template.model_validate({"format": "emforge-template", "version": 1, "nodes": nodes})


def test_template_nodes_come_after_the_nodes_they_use():
    tpl = _template(
        [
            {"id": "mask", "protocol": "automask.auto3d", "inputs": {"volume": "imp.volume"}},
            {"id": "imp", "protocol": "import.volume", "params": {"path": "x.mrc"}},
        ]
    )
    assert [n.id for n in _order(tpl)] == ["imp", "mask"]


def test_a_template_cycle_names_a_node_on_it():
    tpl = _template(
        [
            {"id": "a", "protocol": "automask.auto3d", "inputs": {"volume": "b.volume"}},
            {"id": "b", "protocol": "automask.auto3d", "inputs": {"volume": "a.volume"}},
            {"id": "c", "protocol": "import.volume"},
        ]
    )
    with pytest.raises(ParamError, match=r"^nodes: dependency cycle through node '[ab]'$"):
        _order(tpl)
