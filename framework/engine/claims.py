"""One engine per run: claiming a run atomically and telling whether its engine is alive.

An engine claims a run in ONE write transaction (``BEGIN IMMEDIATE`` serialises writers):
it reads the run row, refuses when another engine is alive, and writes its own pid, host and
process identity. Two engines can therefore never both claim a run, however many
``runs resume`` start at once.

Liveness is judged, in this order:

* on the engine's own host, by the process: its pid must exist, not be a zombie, and (on
  Linux) have the recorded *process identity* — the boot id and the start time of the process
  (``/proc/<pid>/stat`` field 22) — so a reused pid is not taken for the engine, and a stalled
  engine (SIGSTOP, a paused VM) whose process lives is still ``running``;
* elsewhere (another host, or no process identity recorded), by the heartbeat the engine
  writes every second: older than :data:`STALE_AFTER_S` means ``interrupted``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from sqlalchemy import Connection, select, update

from .. import db
from ..errors import ProjectError

__all__ = [
    "STALE_AFTER_S",
    "RunBusyError",
    "process_identity",
    "effective_status",
    "busy_message",
    "claim_run",
    "stop_run",
    "abort_own_run",
]

STALE_AFTER_S = 10.0


class RunBusyError(ProjectError):
    """The run is being executed by a live engine."""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after the command name), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_identity(pid: int) -> str | None:
    """``<boot id>:<start time in clock ticks>`` of a process, or None where unknown.

    The start time is field 22 of ``/proc/<pid>/stat``: with the boot id it names one
    process for ever, whereas a pid is reused.
    """
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"  # fields[0] is field 3 (state); field 22 is [19]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"  # a zombie child of ours is not alive


def _engine_alive(row: dict[str, Any], now: float) -> bool:
    identity = row.get("pid_start")
    if row.get("host") == socket.gethostname():
        if not _pid_alive(row.get("pid")):
            return False
        if identity:
            current = process_identity(row["pid"])
            if current is not None:
                return current == identity
    # another host, or no identity to compare: the heartbeat decides
    beat = row.get("heartbeat")
    return not (beat and now - beat > STALE_AFTER_S)


def effective_status(row: dict[str, Any], *, now: float | None = None) -> str:
    """The status to show: ``interrupted`` for a ``running`` run whose engine is gone."""
    if row["status"] != "running":
        return row["status"]
    now = time.time() if now is None else now
    return "running" if _engine_alive(row, now) else "interrupted"


def busy_message(row: dict[str, Any]) -> str:
    return f"run {row['id']} is running in process {row['pid']} on {row['host']}"


def claim_run(conn: Connection, run_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Mark ``run_id`` as executed by this process, inside the caller's write transaction.

    Raises :class:`RunBusyError` (nothing written) when a live engine already runs it.
    Returns the row as it was before the claim.
    """
    row = conn.execute(select(db.runs).where(db.runs.c.id == run_id)).mappings().one()
    if effective_status(dict(row)) == "running":
        raise RunBusyError(busy_message(dict(row)))
    pid = os.getpid()
    conn.execute(
        update(db.runs)
        .where(db.runs.c.id == run_id)
        .values(
            status="running",
            pid=pid,
            host=socket.gethostname(),
            pid_start=process_identity(pid),
            **values,
        )
    )
    return dict(row)


def _mark_aborted(conn: Connection, run_id: int, message: str) -> None:
    now = time.time()
    conn.execute(
        update(db.steps)
        .where((db.steps.c.run_id == run_id) & (db.steps.c.status == "running"))
        .values(status="aborted", finished=now, error="aborted")
    )
    conn.execute(
        update(db.runs)
        .where((db.runs.c.id == run_id) & (db.runs.c.status == "running"))
        .values(status="aborted", finished=now, error=message)
    )


def abort_own_run(project: Any, run_id: int) -> None:
    """Mark a run aborted when this very process holds it ``running`` (cut short by Ctrl-C)."""
    with db.write(project.engine) as conn:
        row = conn.execute(select(db.runs).where(db.runs.c.id == run_id)).mappings().first()
        if row is not None and row["status"] == "running" and row["pid"] == os.getpid():
            _mark_aborted(conn, run_id, "aborted by signal")


def stop_run(project: Any, run_id: int, *, wait_s: float = 15.0) -> str:
    """Stop a run's engine (``runs stop``): the run ends ``aborted`` and stays resumable.

    A live engine on this host gets SIGTERM (and SIGCONT, should it be stopped) after its
    process identity was checked, so a reused pid is never signalled; when it has not
    aborted within ``wait_s`` it is killed and the run is marked aborted here. A run whose
    engine is gone (``interrupted``) is marked aborted. Returns a one-line report.
    """
    from .runs import run_row

    row = run_row(project, run_id)
    status = effective_status(row)
    if status == "interrupted":
        with db.write(project.engine) as conn:
            _mark_aborted(conn, run_id, "stopped (its engine had already gone)")
        return f"run {run_id}: its engine was gone; marked aborted (resume it with 'emforge runs resume {run_id}')"
    if status != "running":
        raise ProjectError(f"run {run_id}: is {status}, not running; nothing to stop")
    if row["host"] != socket.gethostname():
        raise ProjectError(
            f"run {run_id}: its engine runs on host {row['host']} (pid {row['pid']}); stop it there"
        )
    pid = row["pid"]
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)  # a stopped engine must run to handle the SIGTERM
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if effective_status(run_row(project, run_id)) != "running":
            break
        time.sleep(0.05)
    else:
        if _pid_alive(pid) and process_identity(pid) == row["pid_start"]:
            os.kill(pid, signal.SIGKILL)
        with db.write(project.engine) as conn:
            _mark_aborted(conn, run_id, f"stopped (killed: it did not abort within {wait_s:g} s)")
    final = run_row(project, run_id)["status"]
    return f"run {run_id}: stopped ({final}); resume it with 'emforge runs resume {run_id}'"
