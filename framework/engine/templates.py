"""Workflow templates: JSON files chaining protocol runs.

::

    {"format": "emforge-template", "version": 1, "description": "...",
     "nodes": [
       {"id": "map", "protocol": "import.volume", "params": {"path": "emd_3488.mrc"}},
       {"id": "mask", "protocol": "automask.auto3d", "inputs": {"volume": "map.volume"}}
     ]}

An input is ``"<node>.<output>"`` (another node's output) or an object id of the project.
Nodes run in dependency order; a node whose protocol, version, params and inputs match a
finished run that is still FRESH is skipped and that run's outputs are used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from .. import db
from ..errors import EmforgeError, InputFileError, ParamError, ValidationError
from .claims import abort_own_run
from .execute import execute_run
from .keys import canonical_json, params_dict
from .runs import create_run, parse_params, protocol_info, stored_params
from .staleness import why

if TYPE_CHECKING:  # the engine runs on a project; it never imports emforge.project
    from ..project import Project

__all__ = [
    "Template",
    "TemplateNode",
    "load_template",
    "run_template",
    "validate_template",
    "TemplateAborted",
    "export_template",
    "template_schema",
]


_NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class TemplateNode(BaseModel):
    """One protocol run of a workflow."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        description="Node name, unique in the template; other nodes refer to '<id>.<output>'",
        pattern=_NODE_ID.pattern,
    )
    protocol: str = Field(description="Protocol id, '<plugin>.<name>'")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameter values (defaults fill the rest)"
    )
    inputs: dict[str, str | int | list[str | int]] = Field(
        default_factory=dict,
        description="Input name -> '<node>.<output>' or an object id (a list for multiple)",
    )
    label: str = Field("", description="Label given to the run")


class Template(BaseModel):
    """A workflow: nodes naming protocols, params and inputs wired to other nodes' outputs."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["emforge-template"] = Field("emforge-template", description="File type marker")
    version: Literal[1] = Field(1, description="Template format version")
    description: str = Field("", description="What the workflow does")
    nodes: list[TemplateNode] = Field(description="The runs, in any order")


def template_schema() -> dict[str, Any]:
    """JSON schema of template files (for editors and validation)."""
    return Template.model_json_schema()


def load_template(path: str | Path) -> Template:
    """Read and validate a template file; one clear line on any problem."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such template file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputFileError(p, f"not valid JSON ({exc})") from None
    try:
        tpl = Template.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise InputFileError(p, f"invalid template at {where}: {err['msg']}") from None
    _order(tpl)
    return tpl


def _refs(node: TemplateNode) -> list[str]:
    out = []
    for value in node.inputs.values():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.isdigit():
                out.append(v.split(".", 1)[0])
    return out


def _order(tpl: Template) -> list[TemplateNode]:
    nodes = {}
    for n in tpl.nodes:
        if n.id in nodes:
            raise ParamError("nodes", f"two nodes are named {n.id!r}")
        nodes[n.id] = n
    for n in tpl.nodes:
        for r in _refs(n):
            if r not in nodes:
                raise ParamError(f"{n.id}.inputs", f"refers to unknown node {r!r}")
    sorter = TopologicalSorter({n.id: _refs(n) for n in tpl.nodes})
    try:
        return [nodes[name] for name in sorter.static_order()]
    except CycleError as err:
        raise ParamError("nodes", f"dependency cycle through node {err.args[1][0]!r}") from None


def apply_overrides(tpl: Template, settings: list[str]) -> Template:
    """Apply ``node.param=value`` settings (values parsed as JSON when they are JSON)."""
    nodes = {n.id: n.model_copy(deep=True) for n in tpl.nodes}
    for item in settings:
        key, sep, value = item.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot or node not in nodes:
            raise ParamError(
                "--set", f"{item!r}: expected <node>.<param>=<value> with a node of the template"
            )
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        nodes[node].params[name] = parsed
    return tpl.model_copy(update={"nodes": [nodes[n.id] for n in tpl.nodes]})


def _resolve(value: Any, runs: dict[str, int]) -> Any:
    if isinstance(value, list):
        return [_resolve(v, runs) for v in value]
    if isinstance(value, str) and not value.isdigit():
        node, _, output = value.partition(".")
        return f"{runs[node]}.{output}"
    return value


def _node_runs(
    project: Project,
    node: TemplateNode,
    inputs: dict[str, Any],
    registry: Any,
    statuses: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Runs of exactly this node (protocol, params as stored, inputs) in ``statuses``, newest
    first; none when the node's params do not parse."""
    info = protocol_info(node.protocol, registry)
    parsed, problems = parse_params(info.cls, node.params)
    if problems or parsed is None:
        return []
    r = db.runs.c
    with db.read(project.engine) as conn:
        rows = conn.execute(
            select(db.runs)
            .where(
                (r.protocol_id == info.cls.id)
                & r.status.in_(statuses)
                & (
                    r.params_json
                    == canonical_json(stored_params(project, info.cls, params_dict(parsed)))
                )
                & (r.inputs_json == canonical_json(inputs))
            )
            .order_by(r.id.desc())
        ).mappings()
        return [dict(row) for row in rows]


def _fresh_match(
    project: Project, node: TemplateNode, inputs: dict[str, Any], registry: Any
) -> int | None:
    for row in _node_runs(project, node, inputs, registry, ("finished",)):
        if why(project, row["id"], registry=registry).state == "FRESH":
            return int(row["id"])
    return None


def _check_ref(
    project: Project, node: TemplateNode, name: str, spec: Any, ref: Any, classes: dict
) -> list[str]:
    """Problems of one input reference of a node (kinds, outputs, object ids)."""
    where = f"node {node.id}: input '{name}'"
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        with db.read(project.engine) as conn:
            kind = conn.execute(
                select(db.objects.c.kind).where(db.objects.c.id == int(ref))
            ).scalar()
        if kind is None:
            return [f"{where}: object {ref} does not exist in the project"]
    else:
        up, _, output = str(ref).partition(".")
        up_cls = classes.get(up)
        if up_cls is None or not up_cls.outputs:  # unknown protocol (reported) or undeclared
            return []
        if output not in up_cls.outputs:
            known = ", ".join(up_cls.outputs)
            return [f"{where}: node {up} ({up_cls.id}) has no output {output!r} (outputs: {known})"]
        kind = up_cls.outputs[output].kind
    # an output may declare alternatives ("VolumeMask | Mask2D"): one must fit
    if not {k.strip() for k in kind.split("|")} & set(spec.kinds):
        return [f"{where}: {ref} is a {kind}, expected {' or '.join(spec.kinds)}"]
    return []


def validate_template(project: Project, tpl: Template, *, registry: Any = None) -> None:
    """Check every node (protocol, params, inputs and the references between nodes) at once.

    Raises :class:`~emforge.errors.ValidationError` with one line per problem, before any
    node runs; a node's own ``validate()`` needs its inputs and runs when the node does.
    """
    from ..errors import EmforgeError

    problems: list[str] = []
    classes: dict[str, Any] = {}
    for node in _order(tpl):
        try:
            cls = protocol_info(node.protocol, registry).cls
        except EmforgeError as exc:
            problems.append(f"node {node.id}: {exc}")
            continue
        classes[node.id] = cls
        problems += [f"node {node.id}: {p}" for p in parse_params(cls, node.params)[1]]
        for name in node.inputs:
            if name not in cls.inputs:
                known = ", ".join(cls.inputs) or "none"
                problems.append(
                    f"node {node.id}: input '{name}': {cls.id} has no such input (inputs: {known})"
                )
        for name, spec in cls.inputs.items():
            value = node.inputs.get(name)
            refs = value if isinstance(value, list) else ([] if value is None else [value])
            if not refs and not spec.optional:
                problems.append(
                    f"node {node.id}: input '{name}': required ({' or '.join(spec.kinds)})"
                )
            if len(refs) > 1 and not spec.multiple:
                problems.append(
                    f"node {node.id}: input '{name}': takes one object, got {len(refs)}"
                )
            for ref in refs:
                problems += _check_ref(project, node, name, spec, ref, classes)
    if problems:
        raise ValidationError(problems)


def _resumable_match(
    project: Project, node: TemplateNode, inputs: dict[str, Any], registry: Any
) -> int | None:
    """The latest aborted or interrupted run of exactly this node, to resume instead of adding one."""
    from .claims import effective_status

    for row in _node_runs(project, node, inputs, registry, ("aborted", "running")):
        if effective_status(row) in ("aborted", "interrupted"):
            return int(row["id"])
    return None


class TemplateAborted(EmforgeError):
    """Ctrl-C (or SIGTERM) stopped a template run; running it again resumes."""

    exit_code = 130


def run_template(
    project: Project,
    tpl: Template,
    *,
    registry: Any = None,
    workers: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    on_event: Callable[[str, str, int], None] | None = None,
) -> dict[str, int]:
    """Run every node in dependency order; returns node id -> run id (reused or new).

    The whole template is validated first. A node whose run is FRESH is skipped; one whose
    run was aborted or interrupted is resumed. Ctrl-C raises :class:`TemplateAborted`.
    """
    validate_template(project, tpl, registry=registry)
    from .executors import check_scheduler

    check_scheduler(executor, scheduler)  # before any node's run is recorded
    runs: dict[str, int] = {}
    node_id = ""
    try:
        for node in _order(tpl):
            node_id = node.id
            status = _run_node(
                project, node, runs, registry, workers, executor, on_event, scheduler
            )
            if status == "aborted":
                raise KeyboardInterrupt
            if status != "finished":
                rid = runs[node.id]
                raise EmforgeError(
                    f"node {node.id}: run {rid} {status}; see 'emforge runs log {rid}'"
                )
    except KeyboardInterrupt:
        rid = runs.get(node_id)
        if rid is not None:  # interrupted before the engine could record it
            abort_own_run(project, rid)
        what = f"node {node_id} (run {rid}) aborted" if rid else "stopped"
        raise TemplateAborted(
            f"template interrupted: {what}; run the template again to resume"
        ) from None
    return runs


def _run_node(
    project: Project,
    node: TemplateNode,
    runs: dict[str, int],
    registry: Any,
    workers: int | None,
    executor: str,
    on_event: Callable[[str, str, int], None] | None,
    scheduler: str | None = None,
) -> str:
    """Skip, resume or create-and-run one node; records its run id in ``runs``."""
    inputs = {k: _resolve(v, runs) for k, v in node.inputs.items()}
    found = _fresh_match(project, node, inputs, registry)
    if found is not None:
        runs[node.id] = found
        if on_event:
            on_event(node.id, "fresh", found)
        return "finished"
    rid = _resumable_match(project, node, inputs, registry)
    resumed = rid is not None
    if rid is None:
        try:
            rid = create_run(
                project,
                node.protocol,
                node.params,
                inputs,
                label=node.label or node.id,
                registry=registry,
            )
        except ValidationError as exc:
            raise ValidationError([f"node {node.id}: {p}" for p in exc.problems]) from None
    runs[node.id] = rid
    if on_event:
        on_event(node.id, "resumed" if resumed else "started", rid)
    status = execute_run(
        project, rid, registry=registry, workers=workers, executor=executor, address=scheduler
    )
    if on_event:
        on_event(node.id, status, rid)
    return status


def export_template(project: Project, run_ids: list[int], *, description: str = "") -> Template:
    """A template reproducing these runs; inputs from runs outside the list stay object ids."""
    names: dict[int, str] = {}
    nodes = []
    with db.read(project.engine) as conn:
        for rid in sorted(run_ids):
            row = conn.execute(select(db.runs).where(db.runs.c.id == rid)).mappings().first()
            if row is None:
                raise ParamError("runs", f"run {rid} does not exist")
            # a run made by a template is labelled with its node id: keep it, so that
            # exporting a template's runs gives back the template's nodes
            label = row["label"] or ""
            names[rid] = (
                label
                if _NODE_ID.match(label) and label not in names.values()
                else (f"{row['protocol_id'].split('.')[-1]}_{rid}")
            )
            refs = json.loads(row["inputs_json"] or "{}")
            inputs: dict[str, Any] = {}
            for name, ref in refs.items():
                inputs[name] = _export_ref(conn, ref, names)
            nodes.append(
                TemplateNode(
                    id=names[rid],
                    protocol=row["protocol_id"],
                    params=json.loads(row["params_json"]),
                    inputs=inputs,
                    label=row["label"],
                )
            )
    return Template(description=description, nodes=nodes)


def _export_ref(conn: Any, ref: Any, names: dict[int, str]) -> Any:
    if isinstance(ref, list):
        return [_export_ref(conn, r, names) for r in ref]
    if isinstance(ref, str) and "." in ref and ref.split(".", 1)[0].isdigit():
        run, out = ref.split(".", 1)
        if int(run) in names:
            return f"{names[int(run)]}.{out}"
        oid = conn.execute(
            select(db.objects.c.id).where(
                (db.objects.c.run_id == int(run)) & (db.objects.c.name == out)
            )
        ).scalar()
        return int(oid) if oid is not None else ref
    oid = int(str(ref).removeprefix("object:"))
    row = conn.execute(
        select(db.objects.c.run_id, db.objects.c.name).where(db.objects.c.id == oid)
    ).first()
    if row is not None and row.run_id in names:
        return f"{names[row.run_id]}.{row.name}"
    return oid
