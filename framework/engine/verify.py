"""Outputs are verified, not trusted: the files a step wrote, and leftovers of killed steps.

When a step finishes, the engine records the size and ``mtime_ns`` of every file the step
wrote (through :func:`emforge.io.atomic_target`) and of every file inside the run's folder
that a set it registered references (``image_path`` and the other ``*_path`` columns). A file
that is later gone or differs in size or modification time marks the step that wrote it to
be redone: ``runs why`` says MISSING naming the file, ``runs resume`` redoes that step. The
check is one ``stat`` per recorded file (a million-item set references few distinct stacks).

:func:`remove_leftovers` deletes what killed steps leave behind: the hidden
``.<name>.<random>.tmp`` files of atomic writes and the contents of the run's ``tmp/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import OperationalError

from .. import db
from .. import paths as _paths

__all__ = ["record_files", "damaged_files", "remove_leftovers"]

#: the hidden temporary name of :func:`emforge.io.atomic_target`
_ATOMIC_TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def _paths_of(registrations: Iterable[dict[str, Any]]) -> list[str]:
    """Distinct values of the path columns of the sets among ``registrations``."""
    paths: dict[str, None] = {}
    for reg in registrations:
        cols = reg.get("columns") if reg["type"] == "set" else reg.get("changes")
        for name, values in (cols or {}).items():
            if name in _paths.PATH_COLUMNS or name.endswith("_path"):
                paths.update(dict.fromkeys(str(v) for v in values.tolist() if v))
    return list(paths)


def record_files(
    conn: Connection,
    root: Path,
    run_id: int,
    step: str,
    workdir: Path,
    written: Iterable[str],
    registrations: Iterable[dict[str, Any]],
) -> None:
    """Record the files ``step`` wrote, and the run-folder files its sets reference.

    Only files inside ``workdir`` (outside its ``tmp/``) that exist are recorded; a written
    file is attributed to the step that wrote it last, a referenced one to the registering
    step unless a writer is already known.
    """
    workdir, scratch = workdir.resolve(), (workdir / "tmp").resolve()
    c = db.step_files.c
    for paths, replace in ((written, True), (_paths_of(registrations), False)):
        for p in paths:
            full = Path(_paths.from_stored(root, p)).resolve()
            if not full.is_relative_to(workdir) or full.is_relative_to(scratch):
                continue
            try:
                st = full.stat()
            except OSError:
                continue
            key = _paths.to_stored(root, full)
            where = (c.run_id == run_id) & (c.path == key)
            if conn.execute(select(c.step).where(where)).first() is not None:
                if not replace:
                    continue
                conn.execute(delete(db.step_files).where(where))
            conn.execute(
                insert(db.step_files).values(
                    run_id=run_id, path=key, step=step, size=st.st_size, mtime_ns=st.st_mtime_ns
                )
            )


def damaged_files(conn: Connection, root: Path, run_id: int) -> dict[str, list[str]]:
    """Steps of ``run_id`` whose recorded files are gone or changed: step -> sentences."""
    c = db.step_files.c
    try:
        rows = conn.execute(
            select(c.path, c.step, c.size, c.mtime_ns).where(c.run_id == run_id).order_by(c.path)
        ).all()
    except OperationalError:  # a project from before step_files: nothing recorded
        return {}
    out: dict[str, list[str]] = {}
    for path, step, size, mtime_ns in rows:
        full = Path(_paths.from_stored(root, path))
        try:
            st = full.stat()
        except FileNotFoundError:
            out.setdefault(step, []).append(f"output file {full} (step {step}) is gone")
            continue
        if st.st_size != size:
            problem = f"changed on disk ({size} bytes when written, {st.st_size} now)"
        elif st.st_mtime_ns != mtime_ns:
            problem = "changed on disk (modified after the step wrote it)"
        else:
            continue
        out.setdefault(step, []).append(f"output file {full} (step {step}) {problem}")
    return out


def remove_leftovers(workdir: Path) -> int:
    """Delete the atomic-write temp files under ``workdir`` and empty its ``tmp/``.

    Returns the number of entries removed. Only the engine of the run calls this, when no
    step of the run is running.
    """
    removed = 0
    for folder, _dirs, files in os.walk(workdir):
        for name in files:
            if _ATOMIC_TMP.match(name):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    scratch = workdir / "tmp"
    if scratch.is_dir():
        for entry in scratch.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed
