"""Run administration: listing, showing, editing params, re-running, deleting, exporting."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from .. import db
from ..errors import NotFoundError, ParamError, ProjectError, ValidationError
from ..objects import FSC, SET_KINDS
from ..paths import from_stored
from .execute import effective_status
from .keys import canonical_json, params_dict
from .runs import (
    create_run,
    load_run,
    materialise,
    parse_params,
    protocol_info,
    resolved_params,
    run_row,
    stored_params,
)

if TYPE_CHECKING:  # the engine runs on a project; it never imports emforge.project
    from ..project import Project

__all__ = [
    "run_rows",
    "pending_params",
    "shown_params",
    "show_lines",
    "edit_params",
    "rerun",
    "delete_runs",
    "dependents",
    "export_object",
]


def _duration(row: dict[str, Any]) -> str:
    if not row["started"]:
        return ""
    end = row["finished"]
    if end is None:  # an interrupted run stopped counting at its last heartbeat
        running = effective_status(row) == "running"
        end = time.time() if running else (row["heartbeat"] or row["started"])
    return f"{end - row['started']:.1f} s"


def _changed_inputs(conn: Any) -> set[int]:
    """Runs with an input whose object changed since the run used it (cheap: no hashing)."""
    e, o = db.edges.c, db.objects.c
    rows = conn.execute(
        select(e.run_id)
        .join(db.objects, o.id == e.object_id)
        .where((e.direction == "in") & (e.data_version != o.data_version))
    )
    return set(rows.scalars())


def run_rows(project: Project) -> list[dict[str, Any]]:
    """Every run with its shown status (``interrupted`` detected), duration and outputs.

    ``stale`` is a short reason (or ``""``) from what the database alone tells: params
    edited since the outputs were made, or an input changed since the run used it;
    ``runs why`` checks the files too.
    """
    with db.read(project.engine) as conn:
        runs = [dict(r) for r in conn.execute(select(db.runs).order_by(db.runs.c.id)).mappings()]
        outs: dict[int, list[str]] = {}
        for r in conn.execute(select(db.objects.c.run_id, db.objects.c.name)):
            outs.setdefault(r.run_id, []).append(r.name)
        changed = _changed_inputs(conn)
    for r in runs:
        r["shown_status"] = effective_status(r)
        r["duration"] = _duration(r)
        r["outputs"] = ", ".join(outs.get(r["id"], []))
        reasons = []
        if pending_params(r):
            reasons.append("params edited")
        if r["id"] in changed:
            reasons.append("input changed")
        r["stale"] = ", ".join(reasons)
    return runs


def pending_params(row: dict[str, Any]) -> dict[str, Any]:
    """Params edited (``runs edit``) since the run's outputs were made: name -> new value."""
    if not row["executed_params_json"]:
        return {}
    ran, now = json.loads(row["executed_params_json"]), json.loads(row["params_json"])
    return {k: now.get(k) for k in sorted(set(ran) | set(now)) if ran.get(k) != now.get(k)}


def shown_params(row: dict[str, Any]) -> dict[str, Any]:
    """The params that produced the run's outputs (the recorded ones before a first run)."""
    return json.loads(row["executed_params_json"] or row["params_json"])


def show_lines(project: Project, run_id: int) -> list[str]:
    """What ``runs show`` prints: status, params, inputs, outputs, steps, summary."""
    row = run_row(project, run_id)
    lines = [
        f"run {run_id}: {row['protocol_id']} v{row['protocol_version']} ({row['plugin']} {row['plugin_version']}, "
        f"emforge {row['emforge_version']})",
        f"  status: {effective_status(row)}  progress: {100 * (row['progress'] or 0):.0f}% "
        f"{row['progress_message']}  duration: {_duration(row)}  host: {row['host']} pid: {row['pid']}",
    ]
    if row["error"]:
        lines.append(f"  error: {row['error']}")
    lines.append(f"  folder: {row['workdir']}")
    lines.append("  params: " + ", ".join(f"{k}={v!r}" for k, v in shown_params(row).items()))
    pending = pending_params(row)
    if pending:
        lines.append(
            "  pending edits (not run yet; 'emforge runs resume "
            f"{run_id}'): " + ", ".join(f"{k}={v!r}" for k, v in pending.items())
        )
    with db.read(project.engine) as conn:
        edges = (
            conn.execute(
                select(db.edges).where(db.edges.c.run_id == run_id).order_by(db.edges.c.id)
            )
            .mappings()
            .all()
        )
        steps = (
            conn.execute(
                select(db.steps).where(db.steps.c.run_id == run_id).order_by(db.steps.c.idx)
            )
            .mappings()
            .all()
        )
    for e in edges:
        arrow = "input " if e["direction"] == "in" else "output"
        lines.append(f"  {arrow} {e['name']}: object {e['object_id']}")
    for s in steps:
        took = f"{s['finished'] - s['started']:.2f} s" if s["started"] and s["finished"] else ""
        lines.append(
            f"  step {s['idx'] + 1} {s['name']}: {s['status']} {took}"
            + (f" — {s['error']}" if s["error"] and s["status"] == "failed" else "")
        )
    for s in steps:
        for text in json.loads(s["result_json"] or "{}").get("warnings", []):
            lines.append(f"  warning ({s['name']}): {text}")
    if row["summary"]:
        lines.append("  summary:")
        lines += [f"    {line}" for line in row["summary"].splitlines()]
    return lines


def edit_params(
    project: Project, run_id: int, changes: dict[str, Any], *, registry: Any = None
) -> list[str]:
    """Change params of a recorded run (validated); returns the names that changed."""
    loaded = load_run(project, run_id, registry=registry)
    if effective_status(loaded.row) == "running":
        raise ProjectError(f"run {run_id}: is running; wait for it or abort it first")
    cls = loaded.info.cls
    merged = {**resolved_params(project, cls, json.loads(loaded.row["params_json"])), **changes}
    parsed, problems = parse_params(loaded.info.cls, merged)
    if parsed is not None:
        problems += loaded.info.cls(
            parsed, loaded.instance.input, input_ids=loaded.instance.input_ids
        ).validate()
    if problems:
        raise ValidationError(problems)
    assert parsed is not None
    new = stored_params(project, cls, params_dict(parsed))
    old = json.loads(loaded.row["params_json"])
    with db.write(project.engine) as conn:
        conn.execute(
            update(db.runs).where(db.runs.c.id == run_id).values(params_json=canonical_json(new))
        )
    return sorted(k for k in new if new[k] != old.get(k))


def rerun(project: Project, run_id: int, *, registry: Any = None) -> int:
    """A new run with the recorded protocol, params and inputs of ``run_id``."""
    row = run_row(project, run_id)
    refs = json.loads(row["inputs_json"] or "{}")
    # the params that produced the outputs (a later `runs edit` without resume does not count)
    params = json.loads(row["executed_params_json"] or row["params_json"])
    params = resolved_params(project, protocol_info(row["protocol_id"], registry).cls, params)
    new_id = create_run(
        project,
        row["protocol_id"],
        params,
        refs,
        label=row["label"] or f"rerun of {run_id}",
        registry=registry,
        source_run_id=run_id,
    )
    return new_id


def dependents(project: Project, run_ids: list[int]) -> list[int]:
    """Runs that use (directly or transitively) an output of these runs."""
    found: set[int] = set()
    todo = list(run_ids)
    with db.read(project.engine) as conn:
        while todo:
            rid = todo.pop()
            objs = (
                conn.execute(select(db.objects.c.id).where(db.objects.c.run_id == rid))
                .scalars()
                .all()
            )
            users = (
                conn.execute(
                    select(db.edges.c.run_id).where(
                        db.edges.c.object_id.in_(objs) & (db.edges.c.direction == "in")
                    )
                )
                .scalars()
                .all()
            )
            for u in users:
                if u not in found and u not in run_ids:
                    found.add(u)
                    todo.append(u)
    return sorted(found)


def delete_runs(project: Project, run_ids: list[int], *, cascade: bool = False) -> list[int]:
    """Delete runs, their outputs and folders; refused while other runs depend on them."""
    for rid in run_ids:
        row = run_row(project, rid)
        if effective_status(row) == "running":
            raise ProjectError(f"run {rid}: is running; it cannot be deleted now")
    deps = dependents(project, run_ids)
    if deps and not cascade:
        raise ProjectError(
            f"run(s) {', '.join(map(str, run_ids))} are used by run(s) {', '.join(map(str, deps))}; "
            "delete those first or use --cascade"
        )
    victims = sorted(set(run_ids) | set(deps), reverse=True)
    folders = []
    with db.write(project.engine) as conn:
        for rid in victims:
            folders.append(
                from_stored(
                    project.path,
                    conn.execute(select(db.runs.c.workdir).where(db.runs.c.id == rid)).scalar(),
                )
            )
            conn.execute(delete(db.edges).where(db.edges.c.run_id == rid))
        for rid in victims:
            objs = (
                conn.execute(select(db.objects.c.id).where(db.objects.c.run_id == rid))
                .scalars()
                .all()
            )
            conn.execute(delete(db.set_columns).where(db.set_columns.c.object_id.in_(objs)))
            conn.execute(delete(db.objects).where(db.objects.c.run_id == rid))
            conn.execute(delete(db.steps).where(db.steps.c.run_id == rid))
            conn.execute(delete(db.runs).where(db.runs.c.id == rid))
    for folder in folders:
        if (
            folder
            and Path(folder).is_dir()
            and Path(folder).resolve().parent == (project.path / "Runs").resolve()
        ):
            shutil.rmtree(folder, ignore_errors=True)
    return sorted(victims)


def export_object(project: Project, ref: str, path: Path) -> Path:
    """Write an object out: volumes and masks to MRC, particle/coordinate sets to STAR, FSC
    curves to a RELION postprocess STAR, an EMDB FSC XML or CSV (by the file's suffix)."""
    from ..io import read_volume, write_coordinates3d_star, write_particles_star, write_volume

    with db.read(project.engine) as conn:
        if ref.isdigit():
            row = (
                conn.execute(select(db.objects).where(db.objects.c.id == int(ref)))
                .mappings()
                .first()
            )
        else:
            run, _, name = ref.partition(".")
            row = (
                conn.execute(
                    select(db.objects).where(
                        (db.objects.c.run_id == int(run)) & (db.objects.c.name == name)
                    )
                )
                .mappings()
                .first()
                if run.isdigit()
                else None
            )
    if row is None:
        raise NotFoundError(f"{ref}: no such object (use an object id or RUN.output)")
    obj = materialise(project, dict(row))
    if isinstance(obj, FSC):
        return _export_fsc(obj, path)
    suffix = path.suffix.lower()
    if row["kind"] in SET_KINDS:
        if suffix != ".star":
            raise ParamError("output", f"{path}: a {obj.kind} exports to a .star file")
        if obj.kind == "SetOfParticles":
            star = obj.attrs.get("star") or {}  # what import.particles kept of its STAR file
            write_particles_star(
                path, obj.read(), optics=star.get("optics"), labels=star.get("labels")
            )
        elif obj.kind == "SetOfCoordinates3D":
            write_coordinates3d_star(path, obj.read())
        else:
            raise ParamError("object", f"export of a {obj.kind} is not supported yet")
        return path
    if suffix not in (".mrc", ".map"):
        raise ParamError("output", f"{path}: a {row['kind']} exports to a .mrc file")
    data, info = read_volume(obj.path)
    write_volume(path, data, **info.placement)
    return path


def _export_fsc(fsc: FSC, path: Path) -> Path:
    from ..io.fsc import write_fsc

    resolution = fsc.crossings.get("0.143")
    title = f"FSC ({fsc.label})" if fsc.label else "FSC"
    unmasked = fsc.label == "unmasked"
    return write_fsc(
        path, fsc.frequencies, fsc.values, resolution=resolution, title=title, unmasked=unmasked
    )
