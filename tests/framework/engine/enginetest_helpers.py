"""Helpers of the engine tests: real-data path, raw DB queries, the child-run script."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emforge.project import Project

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / ".." / "shared" / "data"


def need_data() -> Path:
    """The real data folder, or skip the test with one clear line."""
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA.resolve()}")
    return DATA


def steps_of(project: Project, run_id: int) -> dict[str, dict]:
    """name -> {status, executions, key, started, finished} of a run's steps (raw SQL)."""
    con = sqlite3.connect(project.db_path)
    try:
        rows = con.execute(
            "SELECT name, status, executions, key, started, finished FROM steps WHERE run_id = ?"
            " ORDER BY idx",
            (run_id,),
        ).fetchall()
    finally:
        con.close()
    return {
        r[0]: {"status": r[1], "executions": r[2], "key": r[3], "started": r[4], "finished": r[5]}
        for r in rows
    }


def run_status(project: Project, run_id: int) -> str:
    con = sqlite3.connect(project.db_path)
    try:
        return con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    finally:
        con.close()


def integrity(project: Project) -> str:
    con = sqlite3.connect(project.db_path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def calls(workdir: str | Path) -> list[str]:
    """Step names in the order the toy steps started (every real execution, killed ones too)."""
    path = Path(workdir) / "calls.log"
    return path.read_text().split() if path.exists() else []


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from toyprotocols import make_registry
    from emforge.engine import execute_run
    from emforge.project import Project

    status = execute_run(Project.open(sys.argv[1]), int(sys.argv[2]), registry=make_registry(), workers=1)
    print(status)
    """
)


def write_child(folder: Path) -> list[str]:
    """argv prefix of a child python that executes ``PROJECT RUN`` with the toy registry."""
    path = folder / "child_run.py"
    path.write_text(CHILD.format(here=str(HERE)))
    return [sys.executable, str(path)]


# -P: like the console script, the current folder is not put on the import path
CLI = [sys.executable, "-P", "-c", "import sys; from emforge.cli import main; sys.exit(main())"]


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    """Poll ``predicate`` until it returns a true value (returned), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(step)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def set_run(project: Project, run_id: int, **values) -> None:
    """Write columns of a run row directly (raw SQL), e.g. to fake a crashed engine."""
    con = sqlite3.connect(project.db_path)
    try:
        cols = ", ".join(f"{k} = ?" for k in values)
        con.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*values.values(), run_id))
        con.commit()
    finally:
        con.close()
