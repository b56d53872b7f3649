"""Entry point of a detached run: ``python -P -m emforge.cli._launch PROJECT RUN``.

Started by ``emforge run --detach`` in a new process session; its output goes to the run's
``logs/stdout.log``. The run's own status, heartbeat and log live in the database and
``logs/run.log`` as for a foreground run.
"""

from __future__ import annotations

import argparse
import sys

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


if __name__ == "__main__":
    sys.exit(main())
