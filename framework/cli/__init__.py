"""The ``emforge`` command line.

Every user mistake is an :class:`~emforge.errors.EmforgeError`: printed as one line
(a validation prints one line per problem) with exit status 2 and no traceback. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import EmforgeError, ValidationError

__all__ = ["main", "build_parser"]


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project",
        "-P",
        default=os.environ.get("EMFORGE_PROJECT", "."),
        help="project folder (default: $EMFORGE_PROJECT or the current folder)",
    )


def _params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter value (JSON values allowed: -p shift=[1,0,0]); repeatable",
    )


class _LazyCommands:
    """``c.NAME`` is a function that imports :mod:`._commands` (rich, the project database)
    only when the command runs, so that building the parser and ``--help`` stay light."""

    def __getattr__(self, name: str) -> Any:
        def command(args: argparse.Namespace) -> Any:
            from . import _commands

            return getattr(_commands, name)(args)

        command.__name__ = command.__qualname__ = name
        return command


def build_parser() -> argparse.ArgumentParser:
    c = _LazyCommands()

    parser = argparse.ArgumentParser(
        prog="emforge", description="cryo-EM / cryo-ET processing with provenance"
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    proj = sub.add_parser("project", help="create and inspect projects").add_subparsers(
        dest="action", required=True
    )
    p = proj.add_parser("init", help="create a project folder")
    p.add_argument("path", help="the project folder to create")
    p.set_defaults(func=c.project_init)
    p = proj.add_parser("show", help="summary of a project")
    p.add_argument(
        "path", nargs="?", default=None, help="project folder (default: $EMFORGE_PROJECT or .)"
    )
    p.set_defaults(func=c.project_show)
    p = proj.add_parser("list", help="projects found under a folder")
    p.add_argument("root", nargs="?", default=".", help="folder to search (default: .)")
    p.set_defaults(func=c.project_list)

    prot = sub.add_parser("protocols", help="list and describe protocols").add_subparsers(
        dest="action", required=True
    )
    prot.add_parser("list", help="every protocol of every plugin").set_defaults(
        func=c.protocols_list
    )
    p = prot.add_parser("describe", help="every param with type, default, units and help")
    p.add_argument("protocol", help="protocol id, e.g. import.volume")
    p.add_argument("--json", action="store_true", help="print the params JSON schema")
    p.set_defaults(func=c.protocols_describe)

    p = sub.add_parser("run", help="run a protocol in a project")
    p.add_argument("protocol", help="protocol id, e.g. import.volume (see: protocols list)")
    _project_arg(p)
    _params_args(p)
    p.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=REF",
        help="an input: RUN.output (e.g. 1.volume) or an object id; repeat for multiple",
    )
    p.add_argument("--label", default="", help="a label for the run, shown by runs list")
    p.add_argument(
        "--detach", action="store_true", help="run in a background process and return at once"
    )
    _exec_args(p)
    p.set_defaults(func=c.run)

    runs = sub.add_parser("runs", help="inspect and control runs").add_subparsers(
        dest="action", required=True
    )
    for name, helptext in (
        ("list", "runs with status, duration and outputs"),
        ("show", "everything about a run"),
        ("log", "a run's log"),
        ("why", "FRESH / STALE / MISSING, with causes"),
        ("resume", "continue a run, skipping fresh steps"),
        ("restart", "redo every step of a run"),
        ("stop", "stop a running run (it becomes aborted, resumable)"),
        ("rerun", "a new run from a run's recorded provenance"),
        ("delete", "delete runs"),
        ("edit", "change params of a recorded run (then: runs why / runs resume)"),
    ):
        p = runs.add_parser(name, help=helptext)
        _project_arg(p)
        if name != "list":
            p.add_argument(
                "run",
                type=int,
                nargs="+" if name == "delete" else None,
                help="run id(s)" if name == "delete" else "run id (see: runs list)",
            )
        if name in ("resume", "edit"):
            _params_args(p)
        if name in ("resume", "restart", "rerun"):
            p.add_argument(
                "--detach", action="store_true", help="run in a background process, return at once"
            )
            _exec_args(p)
        if name == "delete":
            p.add_argument(
                "--cascade", action="store_true", help="also delete the runs that depend on them"
            )
        if name == "resume":
            p.add_argument(
                "--cascade",
                action="store_true",
                help="first resume the upstream runs that are stale or unfinished",
            )
        p.set_defaults(func=getattr(c, f"runs_{name}"))

    p = sub.add_parser("provenance", help="lineage of a run or an object as a tree")
    _project_arg(p)
    p.add_argument("run", type=int, nargs="?", help="run id")
    p.add_argument("--object", type=int, help="an object id instead of a run")
    p.add_argument("--dot", action="store_true", help="Graphviz DOT instead of text")
    p.add_argument("--json", action="store_true", help="the full record of the run as JSON")
    p.set_defaults(func=c.provenance)

    tpl = sub.add_parser("template", help="run and export workflow templates").add_subparsers(
        dest="action", required=True
    )
    p = tpl.add_parser("run", help="run a template's nodes in order, skipping fresh ones")
    p.add_argument(
        "file",
        help="template file, or the name of one shipped with emforge "
        "(demo, masks_pipeline, postprocess_pipeline)",
    )
    _project_arg(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="set a param of a node (JSON values allowed), e.g. --set map.path=emd_3488.mrc; "
        "'$name' placeholders must be set; repeatable",
    )
    _exec_args(p)
    p.set_defaults(func=c.template_run)
    p = tpl.add_parser("export", help="write a template reproducing runs")
    p.add_argument("runs", type=int, nargs="+", help="run ids to include (with their inputs)")
    _project_arg(p)
    p.add_argument("-o", "--output", default="-", help="template file to write (default: stdout)")
    p.set_defaults(func=c.template_export)
    p = tpl.add_parser("schema", help="print the JSON schema of template files")
    p.set_defaults(func=c.template_schema)

    plugins = sub.add_parser("plugins", help="installed plugins").add_subparsers(
        dest="action", required=True
    )
    plugins.add_parser("list", help="plugins and their protocols").set_defaults(func=c.plugins_list)
    plugins.add_parser(
        "doctor", help="try to load every protocol; show every failure"
    ).set_defaults(func=c.plugins_doctor)
    plugin = sub.add_parser("plugin", help="create a plugin").add_subparsers(
        dest="action", required=True
    )
    p = plugin.add_parser("new", help="scaffold an installable plugin package")
    p.add_argument("name", help="plugin name (a Python identifier), e.g. myplug")
    p.add_argument("--dest", default=".", help="folder to create emforge-NAME in (default: .)")
    p.set_defaults(func=c.plugin_new)

    p = sub.add_parser(
        "export", help="export an object: a volume to MRC, a set to STAR, an FSC to STAR/XML/CSV"
    )
    _project_arg(p)
    p.add_argument("object", help="object id or RUN.output (e.g. 3.fsc)")
    p.add_argument(
        "output",
        help="file to write: .mrc for volumes and masks, .star for sets; an FSC to .star "
        "(RELION postprocess), .xml (EMDB FSC) or .csv",
    )
    p.set_defaults(func=c.export)

    p = sub.add_parser(
        "demo", help="create a demo project and run the demo workflow on generated data"
    )
    p.add_argument(
        "path", nargs="?", default="emforge-demo", help="demo folder (default: emforge-demo)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: number of cores)"
    )
    p.set_defaults(func=c.demo)
    return parser


def _exec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: number of cores)"
    )
    p.add_argument(
        "--executor",
        choices=("local", "inline", "dask"),
        default="local",
        help="where steps run: local (worker processes, default), inline (this process, "
        "one at a time), dask (a Dask cluster: --scheduler, else a local one)",
    )
    p.add_argument(
        "--scheduler", default=None, help="Dask scheduler address (with --executor dask)"
    )


def _check_exec_args(args: argparse.Namespace) -> None:
    """--workers is at least 1; --scheduler goes with --executor dask (never ignored)."""
    from ..errors import ParamError

    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise ParamError("--workers", f"must be at least 1, got {workers}")
    if getattr(args, "scheduler", None) and getattr(args, "executor", "dask") != "dask":
        raise ParamError("--scheduler", f"needs --executor dask (got --executor {args.executor})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__

        print(f"emforge {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        _check_exec_args(args)
        return int(args.func(args) or 0)
    except ValidationError as exc:
        for line in exc.lines():
            print(f"emforge: error: {line}", file=sys.stderr)
        return exc.exit_code
    except EmforgeError as exc:
        print(f"emforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("emforge: interrupted", file=sys.stderr)
        return 130
