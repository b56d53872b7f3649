"""Fuzzing protocol params with hypothesis: a run is refused with emforge's own error or it runs.

For each protocol, hypothesis draws param dicts mixing plausible values (in range, the
declared choices) with hostile ones (NaN, ±Inf, huge and negative numbers, wrong types,
strings such as ``"NaN"``). ``create_run`` must either raise an
:class:`~emforge.errors.EmforgeError` (nothing recorded) or record a run that then finishes
when executed: any other exception, or a validated run that fails, is a validation gap.
"""

from __future__ import annotations

import math
import os
import sqlite3
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emforge.engine import create_run, execute_run
from emforge.engine.runs import protocol_info, run_row
from emforge.errors import EmforgeError
from emforge.io import write_volume
from emforge.project import Project

N, PX = 20, 2.0
#: examples per protocol: small for CI (a few seconds each); raise it locally to dig deeper
EXAMPLES = int(os.environ.get("EMFORGE_FUZZ_EXAMPLES", "15"))
HOSTILE = [
    math.nan, math.inf, -math.inf, "NaN", "Infinity", "-Infinity", "abc", "", None, [], {},
    10**9, -(10**9), 2**63, 1e300, -1e300, True, [math.nan],
]  # fmt: skip


def _blob(seed: int) -> np.ndarray:
    z, y, x = np.mgrid[:N, :N, :N] - N // 2
    noise = 0.02 * np.random.default_rng(seed).normal(size=(N, N, N))
    return (np.exp(-(x * x + y * y + z * z) / 12.0) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory, data_dir) -> tuple[Project, Path]:
    """Run 1: a 20³ map with half maps; run 2: a mask of its grid; run 3: 5 particles."""
    root = tmp_path_factory.mktemp("fuzz")
    for name, data in (("map", _blob(0)), ("h1", _blob(1)), ("h2", _blob(2))):
        write_volume(root / f"{name}.mrc", data, voxel_size=PX)
    write_volume(root / "mask.mrc", (_blob(0) > 0.2).astype(np.float32), voxel_size=PX)
    project = Project.init(root / "project")
    m = {k: str(root / f"{k}.mrc") for k in ("map", "h1", "h2", "mask")}
    project.run("import.volume", params={"path": m["map"], "half1": m["h1"], "half2": m["h2"]}, executor="inline")  # fmt: skip
    project.run("import.mask", params={"path": m["mask"]}, executor="inline")
    star = data_dir / "particles" / "relion31.star"
    project.run("import.particles", params={"star": str(star)}, executor="inline")
    return project, root


def _plausible(name: str, annotation: Any, root: Path) -> st.SearchStrategy:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-3, 40)
    if annotation is float or float in args:
        return st.floats(-60, 60) | st.sampled_from([0.0, -1.0, 0.5, 1.0, 5.0])
    if origin is list:
        item = st.floats(-8, 8) if float in args else st.integers(-8, 40)
        return st.lists(item, max_size=4)
    if annotation is str:
        files = [str(root / f) for f in ("map.mrc", "h1.mrc", "mask.mrc", "nothing.mrc")]
        return st.sampled_from(["", *files]) | st.text(max_size=6)
    return st.none()


def params_strategy(protocol: str, root: Path) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the protocol's params, each plausible (2 in 3) or hostile (1 in 3)."""
    cls = protocol_info(protocol).cls
    optional = {
        name: st.one_of(
            _plausible(name, f.annotation, root),
            _plausible(name, f.annotation, root),
            st.sampled_from(HOSTILE),
        )
        for name, f in cls.Params.model_fields.items()
    }
    return st.fixed_dictionaries({}, optional=optional)


INPUTS = {
    "masks.create": [{}, {"reference": "1.volume"}, {"reference": "3.particles"}],
    "masks.volumes": [{"volume": "1.volume"}, {"volume": "1.volume", "mask": "2.mask"}],
    "masks.particles": [{"particles": "3.particles"}],
    "sharpen.bfactor": [{"volume": "1.volume"}],
    "automask.soft": [{"volume": "1.volume"}],
    "import.volume": [{}],
}


def _rows(project: Project) -> int:
    con = sqlite3.connect(project.db_path)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()


def _check(project: Project, protocol: str, params: dict, inputs: dict) -> None:
    before = _rows(project)
    try:
        rid = create_run(project, protocol, params, inputs)
    except EmforgeError:
        assert _rows(project) == before  # refused: nothing recorded
        return
    status = execute_run(project, rid, workers=1, executor="inline")
    assert status == "finished", (params, run_row(project, rid)["error"])


@pytest.mark.parametrize("protocol", sorted(INPUTS))
def test_fuzzed_params_give_emforge_errors_or_a_finished_run(fuzz_project, protocol):
    project, root = fuzz_project

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: CI never flakes
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(params=params_strategy(protocol, root), which=st.integers(0, 10))
    def fuzz(params: dict, which: int) -> None:
        choices = INPUTS[protocol]
        _check(project, protocol, params, choices[which % len(choices)])

    fuzz()
