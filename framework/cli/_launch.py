"""The engine of a detached run, in a new process session.

``emforge run --detach`` starts it with :func:`start_engine`: a fork of the command's own
process when that process runs a single thread (the engine, the plugin and the protocol are
already imported there, so the engine claims its run at once instead of after a new
interpreter's half second of imports), else a new interpreter running
``python -P -m emforge.cli._launch PROJECT RUN`` (:func:`main`). Either way its output goes to
the run's ``logs/stdout.log``; the run's own status, heartbeat and log live in the database and
``logs/run.log`` as for a foreground run.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from ..engine.execute import execute_run
from ..errors import EmforgeError
from ..project import Project


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emforge-launch")
    p.add_argument("project")
    p.add_argument("run", type=int)
    p.add_argument("--mode", choices=("resume", "restart"), default="resume")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--executor", default="local")
    p.add_argument("--scheduler", default=None)
    args = p.parse_args(argv)
    try:
        status = execute_run(
            Project.open(args.project),
            args.run,
            resume=args.mode == "resume",
            workers=args.workers,
            executor=args.executor,
            address=args.scheduler,
        )
    except EmforgeError as exc:
        print(f"emforge: error: {exc}", file=sys.stderr)
        return 2
    return 0 if status == "finished" else 1


def argv_of(
    project: str,
    run_id: int,
    *,
    mode: str,
    executor: str,
    workers: int | None,
    scheduler: str | None,
) -> list[str]:
    """The arguments of :func:`main` for a run."""
    argv = [str(project), str(run_id), "--mode", mode, "--executor", executor]
    if workers:
        argv += ["--workers", str(workers)]
    if scheduler:
        argv += ["--scheduler", scheduler]
    return argv


def can_fork() -> bool:
    """Whether :func:`start_engine` may fork this process: POSIX, one thread only (a fork
    copies no other thread, and the locks they held would stay held in the child)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def fork_engine(argv: list[str], log_fd: int) -> int:
    """Fork this process into the engine of a detached run (:func:`main` with ``argv``) in a
    new session: stdin from ``/dev/null``, stdout and stderr to ``log_fd``. Returns the pid.
    The child never returns into the caller's code: it ends with ``os._exit``."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing buffered here is written twice by the child
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        # the caller's sys.stdout / sys.stderr may be its own objects (a capture, a console):
        # the engine prints to the log through new ones on the file descriptors
        sys.stdout = open(1, "w", buffering=1, errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
        code = main(argv)
    except BaseException:  # anything at all: reported in the log, never raised into the caller
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    raise AssertionError("unreachable")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
