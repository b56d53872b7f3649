"""``runs why``: is a run FRESH, STALE or MISSING, and why.

Causes, each with a sentence:

* ``PARAMS``   — the run's params were edited since its steps ran (names the params and the
  steps that use them);
* ``CODE``     — the protocol's version now differs from the one that ran;
* ``INPUT``    — an external file the run read (an import's source) changed on disk, or an
  input object's files no longer match the data version recorded for them;
* ``UPSTREAM`` — an input produced by another run changed since this run used it, or that
  run is itself stale;
* ``MISSING``  — the run has not finished, or an output (object or file) is gone or was
  changed: a single object's files are checked against their content hash, the files a step
  wrote (a set's stacks included) against the size and mtime recorded when it finished
  (:mod:`emforge.engine.verify`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from .. import db
from ..objects import OBJECT_TYPES
from .execute import effective_status, external_versions
from .keys import step_keys, toposort
from .runs import load_run, materialise, missing_sources
from .verify import damaged_files

if TYPE_CHECKING:  # the engine runs on a project; it never imports emforge.project
    from ..project import Project

__all__ = ["Cause", "Staleness", "why", "stale_upstream"]


@dataclass(frozen=True)
class Cause:
    kind: str  # PARAMS, CODE, INPUT, UPSTREAM, MISSING
    sentence: str


@dataclass
class Staleness:
    run_id: int
    state: str  # FRESH, STALE, MISSING
    causes: list[Cause] = field(default_factory=list)
    stale_steps: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"run {self.run_id}: {self.state}"
        if self.stale_steps:
            head += f" (steps to redo: {', '.join(self.stale_steps)})"
        return [head] + [f"  {c.kind}: {c.sentence}" for c in self.causes]


def _changed_params(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def why(
    project: Project, run_id: int, *, registry: Any = None, _seen: set[int] | None = None
) -> Staleness:
    """Explain whether a run's outputs are up to date with its params, code and inputs."""
    seen = set() if _seen is None else _seen
    seen.add(run_id)
    loaded = load_run(project, run_id, registry=registry)
    row, cls = loaded.row, loaded.info.cls
    causes: list[Cause] = []
    status = effective_status(row)
    if status != "finished":
        causes.append(
            Cause(
                "MISSING",
                f"the run is {status}, not finished; 'emforge runs resume {run_id}' completes it",
            )
        )
        return Staleness(run_id, "MISSING", causes)
    with db.read(project.engine) as conn:
        step_rows = {
            r["name"]: dict(r)
            for r in conn.execute(select(db.steps).where(db.steps.c.run_id == run_id)).mappings()
        }
        outputs = [
            dict(r)
            for r in conn.execute(
                select(db.objects).where(db.objects.c.run_id == run_id)
            ).mappings()
        ]
        damaged = damaged_files(conn, project.path, run_id)
    missing = [f"{path} is gone" for path in missing_sources(loaded)]
    if missing:  # the run cannot be redone as it is: say so before anything else
        return Staleness(run_id, "MISSING", [Cause("MISSING", m) for m in missing])
    missing = [sentence for sentences in damaged.values() for sentence in sentences]
    for out in outputs:
        if out["kind"] in OBJECT_TYPES:
            obj = materialise(project, out)
            told = any(
                f"output file {Path(f).resolve()} (" in m for f in obj.files() for m in missing
            )
            if not told and project.row_version(out) != out["data_version"]:
                missing.append(
                    f"output '{out['name']}' ({', '.join(obj.files())}) is missing or was modified"
                )
    declared = [n for n, o in cls.outputs.items() if not o.optional]
    have = {o["name"] for o in outputs}
    missing += [f"output '{n}' was never registered" for n in declared if n not in have]
    for m in missing:
        causes.append(Cause("MISSING", m))

    params = loaded.key_params
    executed = json.loads(row["executed_params_json"] or row["params_json"])
    steps = toposort(loaded.instance.steps())
    external = external_versions(loaded.instance, project.path)
    keys = step_keys(
        cls.id, str(cls.version), params, {**loaded.current_versions, **external}, steps
    )
    stale_steps = [
        s.name
        for s in steps
        if step_rows.get(s.name, {}).get("key") != keys[s.name] or s.name in damaged
    ]

    changed = _changed_params(executed, params)
    if changed:
        users = [s.name for s in steps if s.uses is None or set(s.uses) & set(changed)]
        using = (
            f"steps using them: {', '.join(users)}"
            if users
            else "no step uses them (nothing to redo)"
        )
        causes.append(
            Cause("PARAMS", f"param(s) {', '.join(changed)} changed since the run; {using}")
        )
    if str(cls.version) != row["protocol_version"]:
        causes.append(
            Cause(
                "CODE",
                f"protocol {cls.id} is now version {cls.version}; this run ran version "
                f"{row['protocol_version']}",
            )
        )
    recorded_external = json.loads(row["external_json"] or "{}")
    for key, version in external.items():
        if recorded_external.get(key) != version:
            causes.append(
                Cause("INPUT", f"source file {key[5:]} changed on disk since the run read it")
            )
    for name, inrow in loaded.input_rows.items():
        recorded = loaded.recorded_versions.get(name)
        producer = inrow["run_id"]
        if inrow["data_version"] != recorded:
            where = f"run {producer}.{inrow['name']}" if producer else f"object {inrow['id']}"
            causes.append(
                Cause("UPSTREAM", f"input '{name}' ({where}) changed since this run used it")
            )
            continue
        if inrow["kind"] in OBJECT_TYPES:
            obj = materialise(project, inrow)
            if project.row_version(inrow) != inrow["data_version"]:
                causes.append(
                    Cause(
                        "INPUT",
                        f"input '{name}' files ({', '.join(obj.files())}) were modified on disk",
                    )
                )
                continue
        if producer and producer not in seen:
            up = why(project, producer, registry=registry, _seen=seen)
            if up.state != "FRESH":
                causes.append(
                    Cause(
                        "UPSTREAM",
                        f"input '{name}' comes from run {producer}, which is {up.state}: "
                        f"{'; '.join(c.kind for c in up.causes)}",
                    )
                )
    state = "MISSING" if missing else ("STALE" if causes or stale_steps else "FRESH")
    return Staleness(run_id, state, causes, stale_steps)


def _producers(project: Project, run_id: int) -> list[int]:
    """The runs that made this run's inputs, in input order, each once."""
    with db.read(project.engine) as conn:
        rows = conn.execute(
            select(db.objects.c.run_id)
            .join(db.edges, db.edges.c.object_id == db.objects.c.id)
            .where((db.edges.c.run_id == run_id) & (db.edges.c.direction == "in"))
            .order_by(db.edges.c.id)
        ).scalars()
        return list(dict.fromkeys(r for r in rows if r is not None and r != run_id))


def stale_upstream(project: Project, run_id: int, *, registry: Any = None) -> list[tuple[int, str]]:
    """Upstream runs of ``run_id`` that are not FRESH, as (run id, state), upstream first.

    Resuming them in this order (``runs resume --cascade``) brings every input up to date.
    """
    order: list[int] = []
    seen: set[int] = set()

    def visit(rid: int) -> None:
        for up in _producers(project, rid):
            if up not in seen:
                seen.add(up)
                visit(up)
                order.append(up)

    visit(run_id)
    states = [(rid, why(project, rid, registry=registry).state) for rid in order]
    return [(rid, state) for rid, state in states if state != "FRESH"]
