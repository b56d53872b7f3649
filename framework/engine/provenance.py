"""Lineage of objects and runs: a tree for people, Graphviz DOT for pictures."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from .. import db
from ..errors import NotFoundError
from .listing import pending_params

if TYPE_CHECKING:  # the engine runs on a project; it never imports emforge.project
    from ..project import Project

__all__ = ["lineage", "lineage_lines", "lineage_dot", "run_record"]


def run_record(project: Project, run_id: int) -> dict[str, Any]:
    """Everything recorded about a run: protocol, versions, params, inputs, outputs, steps."""
    with db.read(project.engine) as conn:
        row = conn.execute(select(db.runs).where(db.runs.c.id == run_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"run {run_id}: no such run in {project.path}")
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
    return {
        "run": {
            k: row[k]
            for k in (
                "id",
                "protocol_id",
                "protocol_version",
                "plugin",
                "plugin_version",
                "emforge_version",
                "label",
                "status",
                "host",
                "created",
                "started",
                "finished",
            )
        },
        "params": json.loads(row["executed_params_json"] or row["params_json"]),
        "pending_params": (
            json.loads(row["params_json"])
            if row["executed_params_json"] and row["executed_params_json"] != row["params_json"]
            else None
        ),
        "inputs": [
            {"name": e["name"], "object": e["object_id"], "data_version": e["data_version"]}
            for e in edges
            if e["direction"] == "in"
        ],
        "outputs": [
            {"name": e["name"], "object": e["object_id"], "data_version": e["data_version"]}
            for e in edges
            if e["direction"] == "out"
        ],
        "steps": [
            {
                "name": s["name"],
                "status": s["status"],
                "key": s["key"],
                "started": s["started"],
                "finished": s["finished"],
                "executions": s["executions"],
            }
            for s in steps
        ],
    }


def _producer(conn: Any, object_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(db.objects).where(db.objects.c.id == object_id)).mappings().first()
    return dict(row) if row else None


def lineage(
    project: Project, *, run_id: int | None = None, object_id: int | None = None
) -> dict[str, Any]:
    """Nested lineage: a run with its inputs, each input with the run that produced it, ..."""
    with db.read(project.engine) as conn:
        if object_id is not None:
            obj = _producer(conn, object_id)
            if obj is None:
                raise NotFoundError(f"object {object_id}: no such object")
            node = {"object": object_id, "kind": obj["kind"], "name": obj["name"], "from": None}
            if obj["run_id"]:
                node["from"] = _run_node(conn, obj["run_id"], set())
            return node
        assert run_id is not None
        if conn.execute(select(db.runs.c.id).where(db.runs.c.id == run_id)).first() is None:
            raise NotFoundError(f"run {run_id}: no such run in {project.path}")
        return _run_node(conn, run_id, set())


def _run_node(conn: Any, run_id: int, seen: set[int]) -> dict[str, Any]:
    run = conn.execute(select(db.runs).where(db.runs.c.id == run_id)).mappings().one()
    node: dict[str, Any] = {
        "run": run_id,
        "protocol": run["protocol_id"],
        "version": run["protocol_version"],
        "status": run["status"],
        "params": json.loads(run["executed_params_json"] or run["params_json"]),
        "pending": pending_params(dict(run)),
        "inputs": [],
    }
    if run_id in seen:
        return node
    seen.add(run_id)
    for e in conn.execute(
        select(db.edges)
        .where((db.edges.c.run_id == run_id) & (db.edges.c.direction == "in"))
        .order_by(db.edges.c.id)
    ).mappings():
        obj = _producer(conn, e["object_id"])
        child = {
            "name": e["name"],
            "object": e["object_id"],
            "kind": obj["kind"] if obj else "?",
            "from": None,
        }
        if obj and obj["run_id"]:
            child["from"] = _run_node(conn, obj["run_id"], seen)
        node["inputs"].append(child)
    return node


def lineage_lines(tree: dict[str, Any], indent: str = "") -> list[str]:
    """The lineage as indented text lines (a tree)."""
    lines: list[str] = []
    if "run" in tree:
        params = ", ".join(f"{k}={v}" for k, v in tree["params"].items())
        lines.append(
            f"{indent}run {tree['run']} {tree['protocol']} v{tree['version']} [{tree['status']}]"
            + (f"  ({params})" if params else "")
        )
        if tree.get("pending"):
            edits = ", ".join(f"{k}={v}" for k, v in tree["pending"].items())
            lines.append(f"{indent}  pending edits (not run yet): {edits}")
        for child in tree["inputs"]:
            lines.append(
                f"{indent}  <- {child['name']}: object {child['object']} ({child['kind']})"
            )
            if child["from"]:
                lines += lineage_lines(child["from"], indent + "     ")
    else:
        lines.append(f"{indent}object {tree['object']} {tree['kind']} '{tree['name']}'")
        if tree["from"]:
            lines += lineage_lines(tree["from"], indent + "  ")
    return lines


def lineage_dot(tree: dict[str, Any]) -> str:
    """Graphviz DOT of the lineage: runs as boxes, objects as ellipses."""
    nodes: dict[str, str] = {}
    links: set[tuple[str, str]] = set()

    def walk(t: dict[str, Any]) -> str:
        if "run" in t:
            rid = f"run{t['run']}"
            nodes[rid] = f'{rid} [shape=box, label="run {t["run"]}\\n{t["protocol"]}"];'
            for child in t["inputs"]:
                oid = f"obj{child['object']}"
                nodes[oid] = f'{oid} [shape=ellipse, label="{child["object"]}: {child["kind"]}"];'
                links.add((oid, rid))
                if child["from"]:
                    links.add((walk(child["from"]), oid))
            return rid
        oid = f"obj{t['object']}"
        nodes[oid] = f'{oid} [shape=ellipse, label="{t["object"]}: {t["kind"]}"];'
        if t["from"]:
            links.add((walk(t["from"]), oid))
        return oid

    walk(tree)
    body = sorted(nodes.values()) + [f"{a} -> {b};" for a, b in sorted(links)]
    return "digraph lineage {\n  rankdir=LR;\n  " + "\n  ".join(body) + "\n}\n"
