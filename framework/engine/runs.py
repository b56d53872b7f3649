"""Creating runs: params parsing, input resolution, validation, the run row.

Nothing is written to the database until the params parse, the inputs resolve and the
protocol's ``validate()`` finds no problem: a rejected run leaves no trace.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic
from sqlalchemy import Connection, insert, select, update

from .. import __version__, db
from .. import paths as _paths
from ..errors import InputFileError, NotFoundError, ValidationError
from .keys import canonical_json, params_dict
from .protocol import Protocol, ProtocolParams, path_params

if TYPE_CHECKING:  # the engine runs on a project; it never imports emforge.project
    from ..project import Project

__all__ = [
    "ProtocolInfo",
    "protocol_info",
    "parse_params",
    "resolve_inputs",
    "create_run",
    "load_run",
    "stored_params",
    "resolved_params",
    "missing_sources",
    "check_sources",
]


@dataclass(frozen=True)
class ProtocolInfo:
    cls: type[Protocol]
    plugin: str
    plugin_version: str


def protocol_info(protocol: str | type[Protocol], registry: Any = None) -> ProtocolInfo:
    """The class and plugin of a protocol given by id (through the registry) or by class."""
    if isinstance(protocol, type):
        plugin = protocol.id.split(".", 1)[0]
        return ProtocolInfo(protocol, plugin, getattr(protocol, "plugin_version", __version__))
    if registry is None:
        from ..plugins import default_registry

        registry = default_registry()
    entry = registry.get(protocol)
    cls = registry.load(protocol)
    return ProtocolInfo(cls, entry.plugin, entry.plugin_version or "")


def _coerce(value: Any) -> Any:
    """CLI values arrive as strings: JSON when they parse as JSON, else the string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_params(
    cls: type[Protocol], params: dict[str, Any] | None
) -> tuple[ProtocolParams | None, list[str]]:
    """Validated params, or ``None`` and one line per problem naming the param.

    Params declared as paths (:class:`~emforge.engine.protocol.PathParam`) come back
    absolute: a relative one is relative to the current folder, the submitter's.
    """
    raw = {k: _coerce(v) for k, v in (params or {}).items()}
    try:
        parsed = cls.Params(**raw)
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "params"
            if err["type"] == "extra_forbidden":
                known = ", ".join(cls.Params.model_fields)
                lines.append(f"param '{name}': unknown parameter of {cls.id} (known: {known})")
            else:
                got = (
                    f" (got {err['input']!r})"
                    if "input" in err and not isinstance(err["input"], dict)
                    else ""
                )
                lines.append(f"param '{name}': {err['msg']}{got}")
        return None, lines
    names = path_params(cls.Params)
    bad = [n for n in names if "\0" in str(getattr(parsed, n))]
    if bad:
        return None, [f"param '{n}': a path cannot contain a NUL character" for n in bad]
    # a relative path means relative to the folder of whoever submits the run: fix it now
    absolute = {
        n: _paths.absolute(v) for n in names if isinstance(v := getattr(parsed, n), str) and v
    }
    return (parsed.model_copy(update=absolute) if absolute else parsed), []


def _map_path_params(
    cls: type[Protocol], params: dict[str, Any], fn: Any, root: Any
) -> dict[str, Any]:
    out = dict(params)
    for name in path_params(cls.Params):
        if isinstance(out.get(name), str) and out[name]:
            out[name] = fn(root, out[name])
    return out


def stored_params(project: Project, cls: type[Protocol], params: dict[str, Any]) -> dict[str, Any]:
    """Params as the database records them: path params inside the project made relative."""
    return _map_path_params(cls, params, _paths.to_stored, project.path)


def resolved_params(
    project: Project, cls: type[Protocol], params: dict[str, Any]
) -> dict[str, Any]:
    """Recorded params with their path params absolute again (the inverse of
    :func:`stored_params`)."""
    return _map_path_params(cls, params, _paths.from_stored, project.path)


def _resolve_one(conn: Connection, ref: Any) -> dict[str, Any]:
    """An objects row from ``RUN.output``, ``object:ID`` or an int object id.

    A bare number in a string (``-i volume=15``) is refused: it reads like a run id but would
    mean object 15.
    """
    o = db.objects.c
    if isinstance(ref, str) and ref.isdigit():
        raise NotFoundError(
            f"{ref!r}: give RUN.output (e.g. {ref}.volume) or object:{ref} for object id {ref}"
        )
    if isinstance(ref, str) and ref.startswith("object:") and ref[7:].isdigit():
        ref = int(ref[7:])
    if isinstance(ref, int) and not isinstance(ref, bool):
        row = conn.execute(select(db.objects).where(o.id == int(ref))).mappings().first()
        if row is None:
            raise NotFoundError(f"object {ref}: no such object")
        return dict(row)
    if isinstance(ref, str) and "." in ref:
        run, name = ref.split(".", 1)
        if run.isdigit():
            row = (
                conn.execute(select(db.objects).where((o.run_id == int(run)) & (o.name == name)))
                .mappings()
                .first()
            )
            if row is None:
                outs = conn.execute(select(o.name).where(o.run_id == int(run))).scalars().all()
                raise NotFoundError(
                    f"{ref}: run {run} has no output {name!r} (outputs: {', '.join(outs) or 'none'})"
                )
            return dict(row)
    raise NotFoundError(f"{ref!r}: not an object id or RUN.output reference")


def materialise(project: Project, row: dict[str, Any]) -> Any:
    """The typed object (or set handle) of an objects row, its file paths absolute."""
    return project.materialise(row)


def resolve_inputs(
    project: Project, cls: type[Protocol], refs: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], list[str]]:
    """Resolve input references to objects.

    Returns (objects by input name, object ids by name, edge rows, problems).
    """
    refs = dict(refs or {})
    objs: dict[str, Any] = {}
    ids: dict[str, Any] = {}
    edges: list[dict[str, Any]] = []
    problems: list[str] = []
    for name in refs:
        if name not in cls.inputs:
            problems.append(
                f"input '{name}': {cls.id} has no such input (inputs: {', '.join(cls.inputs) or 'none'})"
            )
    with db.read(project.engine) as conn:
        for name, spec in cls.inputs.items():
            ref = refs.get(name)
            if ref is None or ref == [] or ref == "":
                if not spec.optional:
                    problems.append(
                        f"input '{name}': required ({' or '.join(spec.kinds)}) — {spec.help}"
                    )
                objs[name] = [] if spec.multiple else None
                continue
            many = ref if isinstance(ref, list | tuple) else [ref]
            if len(many) > 1 and not spec.multiple:
                problems.append(f"input '{name}': takes one object, got {len(many)}")
                continue
            got = []
            for i, r in enumerate(many):
                try:
                    row = _resolve_one(conn, r)
                except NotFoundError as exc:
                    problems.append(f"input '{name}': {exc}")
                    continue
                if row["kind"] not in spec.kinds:
                    problems.append(
                        f"input '{name}': object {row['id']} is a {row['kind']}, expected {' or '.join(spec.kinds)}"
                    )
                    continue
                got.append(row)
                edge_name = f"{name}#{i}" if spec.multiple else name
                edges.append(
                    {"name": edge_name, "object_id": row["id"], "data_version": row["data_version"]}
                )
            objs[name] = (
                [materialise(project, r) for r in got]
                if spec.multiple
                else (materialise(project, got[0]) if got else None)
            )
            ids[name] = [r["id"] for r in got] if spec.multiple else (got[0]["id"] if got else None)
    return objs, ids, edges, problems


def create_run(
    project: Project,
    protocol: str | type[Protocol],
    params: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    *,
    label: str = "",
    registry: Any = None,
    source_run_id: int | None = None,
) -> int:
    """Validate and record a new run (status ``new``); returns its id.

    Raises :class:`~emforge.errors.ValidationError` listing every problem, with nothing
    written, when params, inputs or the protocol's own ``validate()`` find any.
    """
    info = protocol_info(protocol, registry)
    cls = info.cls
    parsed, problems = parse_params(cls, params)
    objs, ids, edges, more = resolve_inputs(project, cls, inputs)
    problems += more
    if parsed is not None and not more:
        problems += list(cls(parsed, objs, input_ids=ids).validate())
    if problems:
        raise ValidationError(problems)
    assert parsed is not None
    params_json = canonical_json(stored_params(project, cls, params_dict(parsed)))
    with db.write(project.engine) as conn:
        run_id = conn.execute(
            insert(db.runs).values(
                id=db.next_run_id(conn),  # never the id of a deleted run
                protocol_id=cls.id,
                protocol_version=str(cls.version),
                plugin=info.plugin,
                plugin_version=str(info.plugin_version),
                emforge_version=__version__,
                label=label,
                params_json=params_json,
                status="new",
                host=socket.gethostname(),
                created=time.time(),
                source_run_id=source_run_id,
                inputs_json=canonical_json(dict(inputs or {})),
            )
        ).inserted_primary_key[0]
        for e in edges:
            conn.execute(insert(db.edges).values(run_id=run_id, direction="in", **e))
        workdir = project.run_dir(run_id, cls.id)
        conn.execute(
            update(db.runs)
            .where(db.runs.c.id == run_id)
            .values(workdir=_paths.to_stored(project.path, os.fspath(workdir)))
        )
    return run_id


@dataclass
class LoadedRun:
    row: dict[str, Any]
    info: ProtocolInfo
    instance: Protocol
    recorded_versions: dict[str, str]
    input_rows: dict[str, dict[str, Any]]
    project: Project

    @property
    def key_params(self) -> dict[str, Any]:
        """The params in their recorded form, as step keys hash them (a copied or moved
        project keeps its keys)."""
        return stored_params(self.project, self.info.cls, params_dict(self.instance.params))

    @property
    def current_versions(self) -> dict[str, str]:
        """Data versions of the inputs as they are now (what a resume would consume)."""
        return {name: row["data_version"] for name, row in self.input_rows.items()}


def run_row(project: Project, run_id: int) -> dict[str, Any]:
    with db.read(project.engine) as conn:
        row = conn.execute(select(db.runs).where(db.runs.c.id == int(run_id))).mappings().first()
    if row is None:
        raise NotFoundError(f"run {run_id}: no such run in {project.path}")
    out = dict(row)
    out["workdir"] = _paths.from_stored(project.path, out["workdir"])
    return out


def load_run(project: Project, run_id: int, *, registry: Any = None) -> LoadedRun:
    """Rebuild a recorded run's protocol instance from the database."""
    from pathlib import Path

    row = run_row(project, run_id)
    info = protocol_info(row["protocol_id"], registry) if registry is not False else None
    assert info is not None
    params = info.cls.Params.model_validate_json(
        json.dumps(resolved_params(project, info.cls, json.loads(row["params_json"])))
    )
    with db.read(project.engine) as conn:
        edge_rows = (
            conn.execute(
                select(db.edges)
                .where((db.edges.c.run_id == run_id) & (db.edges.c.direction == "in"))
                .order_by(db.edges.c.id)
            )
            .mappings()
            .all()
        )
        objs_rows = {
            e["name"]: dict(
                conn.execute(select(db.objects).where(db.objects.c.id == e["object_id"]))
                .mappings()
                .one()
            )
            for e in edge_rows
        }
    inputs: dict[str, Any] = {}
    ids: dict[str, Any] = {}
    for name, spec in info.cls.inputs.items():
        if spec.multiple:
            names = sorted(
                (n for n in objs_rows if n.split("#")[0] == name),
                key=lambda n: int(n.split("#")[1]),
            )
            inputs[name] = [materialise(project, objs_rows[n]) for n in names]
            ids[name] = [objs_rows[n]["id"] for n in names]
        else:
            inputs[name] = materialise(project, objs_rows[name]) if name in objs_rows else None
            ids[name] = objs_rows[name]["id"] if name in objs_rows else None
    instance = info.cls(params, inputs, input_ids=ids, workdir=Path(row["workdir"]))
    versions = {e["name"]: e["data_version"] for e in edge_rows}
    return LoadedRun(row, info, instance, versions, objs_rows, project)


def missing_sources(loaded: LoadedRun) -> list[str]:
    """Files a run reads that are gone: path params matching nothing, and recorded external
    files (hashed into its step keys) that no longer exist."""
    import glob

    gone: list[str] = []
    for name in path_params(loaded.info.cls.Params):
        value = getattr(loaded.instance.params, name)
        if isinstance(value, str) and value:
            found = glob.glob(value) if glob.has_magic(value) else os.path.exists(value)
            if not found:
                gone.append(value)
    for key in json.loads(loaded.row.get("external_json") or "{}"):
        path = _paths.from_stored(loaded.project.path, key.removeprefix("file:"))
        if key.startswith("file:") and not os.path.exists(path) and path not in gone:
            gone.append(path)
    return gone


def check_sources(loaded: LoadedRun) -> None:
    """Refuse (one line naming the file) to execute a run whose source file is gone."""
    gone = missing_sources(loaded)
    if gone:
        raise InputFileError(gone[0], "is gone; restore it or change the param (emforge runs edit)")
