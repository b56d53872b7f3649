"""Implementations of the CLI sub-commands (thin: the work is in the library)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError, ParamError

if TYPE_CHECKING:
    from ..project import Project

# piped output (files, CI logs) gets a wide console so tables keep full protocol ids


#: what rich would change in a string besides markup: an emoji code ``:name:``, tabs (expanded)
#: and control characters
_RICH_CHANGES = re.compile(r":[a-z0-9_+-]+:|[\t\r\x00-\x08\x0b-\x1f\x7f]")


class _LazyConsole:
    """A :class:`rich.console.Console` made on first use: commands that print plain text
    (``protocols list``) never import rich."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Any = None

    def print(self, *objects: Any, markup: bool | None = None, **kw: Any) -> None:
        """Plain strings to a stream that is not a terminal are written as they are (what
        rich writes there too, without importing it); anything else goes through rich."""
        stream = sys.stderr if self._stderr else sys.stdout
        if not kw and all(isinstance(o, str) for o in objects) and not stream.isatty():
            text = " ".join(objects)
            if (markup is False or "[" not in text) and not _RICH_CHANGES.search(text):
                stream.write(text + "\n")
                return
        self._rich().print(*objects, markup=markup, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rich(), name)

    def _rich(self) -> Any:
        if self._console is None:
            from rich.console import Console

            if self._stderr:  # one line per message, never wrapped
                self._console = Console(stderr=True, highlight=False, soft_wrap=True)
            else:
                width = None if sys.stdout.isatty() else 200
                self._console = Console(highlight=False, soft_wrap=True, width=width)
        return self._console


out = _LazyConsole()
err = _LazyConsole(stderr=True)


def _kv(items: list[str], what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamError(what, f"{item!r}: expected NAME=VALUE")
        if what == "--input" and key in result:
            prev = result[key]
            result[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            result[key] = value
    return result


def _open(args: Any) -> Project:
    from ..project import Project

    return Project.open(args.project)


# -- project -----------------------------------------------------------------
def project_init(args: Any) -> int:
    from ..project import DB_NAME, Project

    proj = Project.init(args.path)
    out.print(f"created project {proj.path} ({DB_NAME})")
    return 0


def project_show(args: Any) -> int:
    from ..project import Project

    proj = Project.open(args.path or os.environ.get("EMFORGE_PROJECT", "."))
    from ..engine.listing import run_rows

    rows = run_rows(proj)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["shown_status"]] = counts.get(r["shown_status"], 0) + 1
    out.print(f"project {proj.path}")
    out.print(f"  runs: {len(rows)}  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    out.print(f"  objects: {len(proj.list_objects())}")
    return 0


def project_list(args: Any) -> int:
    from ..project import DB_NAME

    root = Path(args.root).expanduser()
    found = sorted(p.parent for p in root.glob(f"**/{DB_NAME}"))
    for p in found:
        out.print(str(p))
    if not found:
        err.print(f"no emforge project under {root.resolve()}")
    return 0


# -- protocols & plugins ---------------------------------------------------------
def _registry() -> Any:
    from ..plugins import default_registry

    return default_registry()


def protocols_list(args: Any) -> int:
    reg = _registry()
    rows = [("protocol", "plugin", "description")] + [
        (pid, f"{e.plugin} {e.plugin_version}", e.entry.label or e.entry.help)
        for pid, e in sorted(reg.protocols.items())
    ]
    # plain aligned text (rich would cost more start-up than the listing itself)
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    print("\n".join(f" {a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows))
    for prob in reg.problems:
        print(f"plugin {prob.plugin}: {prob.error} (see 'emforge plugins doctor')", file=sys.stderr)
    return 0


def protocols_describe(args: Any) -> int:
    from ..engine.describe import describe_lines

    cls = _registry().load(args.protocol)
    if args.json:
        out.print_json(json.dumps(cls.params_schema()))
        return 0
    for line in describe_lines(cls):
        out.print(line, markup=False)
    return 0


def plugins_list(args: Any) -> int:
    reg = _registry()
    for name, info in sorted(reg.plugins.items()):
        ids = sorted(pid for pid, e in reg.protocols.items() if e.plugin == name)
        out.print(
            f"{name} {info.version}  ({info.distribution})  {len(ids)} protocol(s): {', '.join(ids)}",
            markup=False,
        )
    for prob in reg.problems:
        out.print(f"{prob.plugin}  BROKEN: {prob.error}", markup=False)
    return 0


def plugins_doctor(args: Any) -> int:
    rows = _registry().doctor()
    bad = 0
    for row in rows:
        mark = "ok " if row.ok else "ERR"
        bad += not row.ok
        out.print(f"{mark} {row.plugin:<12} {row.protocol:<28} {row.error}", markup=False)
    out.print(f"{len(rows) - bad} ok, {bad} problem(s)")
    return 1 if bad else 0


def plugin_new(args: Any) -> int:
    from ..scaffold import create_plugin

    path = create_plugin(args.name, Path(args.dest))
    out.print(f"created {path}\nnext: pip install -e {path} && emforge protocols list")
    return 0


# -- running -----------------------------------------------------------------------
def _progress_runner(proj: Project, run_id: int, args: Any, *, resume: bool = True) -> str:
    from ..engine import execute_run

    how = dict(resume=resume, workers=args.workers, executor=args.executor, address=args.scheduler)
    if not sys.stderr.isatty():  # no bar to draw: rich is not even imported
        return execute_run(proj, run_id, **how)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("run {task.fields[run]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("", total=1.0, run=run_id)

        def on_progress(fraction: float, message: str, _status: dict[str, str]) -> None:
            bar.update(task, completed=fraction, description=message)

        status = execute_run(proj, run_id, on_progress=on_progress, **how)
    return status


def _finish_message(proj: Project, run_id: int, status: str) -> int:
    from ..engine.runs import run_row

    row = run_row(proj, run_id)
    if status == "finished":
        outs = proj.outputs(run_id)
        names = ", ".join(f"{run_id}.{n}" for n in outs) or "none"
        # another engine may already have claimed the run again (a concurrent resume that
        # finds every step done): its row then has no finish time yet
        took = (
            f" in {row['finished'] - row['started']:.2f} s"
            if row["finished"] is not None and row["started"] is not None
            else ""
        )
        out.print(f"run {run_id} finished{took}; outputs: {names}")
        if row["summary"]:
            out.print(row["summary"], markup=False)
        return 0
    err.print(
        f"run {run_id} {status}: {row['error']}  (log: emforge runs log {run_id})", markup=False
    )
    return 1


def _launch_argv(proj: Project, run_id: int, args: Any, mode: str) -> list[str]:
    from ._launch import argv_of

    return argv_of(
        str(proj.path),
        run_id,
        mode=mode,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
    )


def _launch_command(proj: Project, run_id: int, args: Any, mode: str) -> list[str]:
    """The command of a new interpreter running the engine (when this process cannot fork)."""
    # -P: the current folder must not come first on the child's import path, where a folder
    # named ``emforge`` (the one above a clone) would shadow the installed package
    return [
        sys.executable,
        "-P",
        "-m",
        "emforge.cli._launch",
        *_launch_argv(proj, run_id, args, mode),
    ]


def _can_fork() -> bool:
    from ._launch import can_fork

    return can_fork()


#: how long ``--detach`` waits for the background engine to claim its run
DETACH_CONFIRM_S = 60.0


def _detach(proj: Project, run_id: int, args: Any, mode: str = "resume") -> int:
    """Start the run's engine in a new session; return once it claimed the run (or failed)."""
    from ..engine.claims import RunBusyError, busy_message, effective_status
    from ..engine.runs import run_row

    row = run_row(proj, run_id)
    if effective_status(row) == "running":
        raise RunBusyError(busy_message(row))
    log_path = Path(row["workdir"]) / "logs" / "stdout.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log, open(os.devnull, "rb") as null:
        if _can_fork():  # the engine is already imported here: no new interpreter to start
            from ._launch import fork_engine

            pid = fork_engine(_launch_argv(proj, run_id, args, mode), log.fileno())
        else:  # posix_spawn, not Popen: the engine outlives this command on purpose
            cmd = _launch_command(proj, run_id, args, mode)
            pid = os.posix_spawn(
                cmd[0],
                cmd,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
                    (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
                ],
                setsid=True,
            )
    deadline = time.monotonic() + DETACH_CONFIRM_S
    while run_row(proj, run_id)["pid"] != pid:
        exited, status = os.waitpid(pid, os.WNOHANG)
        if exited and run_row(proj, run_id)["pid"] != pid:
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                lines = fh.read().decode("utf-8", "replace").strip().splitlines()
            why = lines[-1].removeprefix("emforge: error: ") if lines else "no message"
            err.print(
                f"emforge: error: run {run_id}: the background engine did not start "
                f"(exit {os.waitstatus_to_exitcode(status)}): {why}  (log: {log_path})",
                markup=False,
            )
            return 2
        if time.monotonic() > deadline:
            out.print(f"run {run_id}: background process {pid} has not started the run yet")
            return 0
        time.sleep(0.02)
    out.print(
        f"run {run_id} started in the background (process {pid}); "
        f"follow it with: emforge runs show {run_id}"
    )
    return 0


def run(args: Any) -> int:
    from ..engine import create_run
    from ..engine.executors import check_scheduler

    proj = _open(args)
    check_scheduler(args.executor, args.scheduler)  # unreachable: nothing recorded, exit 2
    run_id = create_run(
        proj,
        args.protocol,
        _kv(args.param, "--param"),
        _kv(args.input, "--input"),
        label=args.label,
        registry=_registry(),
    )
    if args.detach:
        return _detach(proj, run_id, args)
    return _finish_message(proj, run_id, _progress_runner(proj, run_id, args))


def runs_list(args: Any) -> int:
    from rich.table import Table

    from ..engine.listing import run_rows

    table = Table("id", "protocol", "status", "progress", "duration", "outputs", "label", box=None)
    for r in run_rows(_open(args)):
        table.add_row(
            str(r["id"]),
            r["protocol_id"],
            r["shown_status"] + (f" (stale: {r['stale']})" if r["stale"] else ""),
            f"{100 * (r['progress'] or 0):.0f}%",
            r["duration"],
            r["outputs"],
            r["label"],
        )
    out.print(table)
    return 0


def runs_show(args: Any) -> int:
    from ..engine.listing import show_lines

    for line in show_lines(_open(args), args.run):
        out.print(line, markup=False)
    return 0


def runs_log(args: Any) -> int:
    from ..engine.runs import run_row

    path = Path(run_row(_open(args), args.run)["workdir"]) / "logs" / "run.log"
    if not path.exists():
        raise NotFoundError(f"run {args.run}: no log yet ({path})")
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def runs_why(args: Any) -> int:
    from ..engine.staleness import why

    result = why(_open(args), args.run, registry=_registry())
    for line in result.lines():
        out.print(line, markup=False)
    return 0


def runs_edit(args: Any) -> int:
    from ..engine.listing import edit_params

    changed = edit_params(_open(args), args.run, _kv(args.param, "--param"), registry=_registry())
    out.print(
        f"run {args.run}: params updated ({', '.join(changed) or 'no change'}); "
        f"'emforge runs why {args.run}' tells what is stale"
    )
    return 0


def runs_resume(args: Any) -> int:
    from ..engine.listing import edit_params
    from ..engine.staleness import stale_upstream

    proj = _open(args)
    if args.param:
        edit_params(proj, args.run, _kv(args.param, "--param"), registry=_registry())
    for up_id, state in stale_upstream(proj, args.run, registry=_registry()):
        if not args.cascade:
            err.print(
                f"emforge: warning: run {args.run}: upstream run {up_id} is {state}; its outputs "
                f"are used as they are (resume it first, or use --cascade)",
                markup=False,
            )
            continue
        out.print(f"run {args.run}: resuming upstream run {up_id} ({state}) first")
        if _finish_message(proj, up_id, _progress_runner(proj, up_id, args)) != 0:
            return 1
    if args.detach:
        return _detach(proj, args.run, args)
    return _finish_message(proj, args.run, _progress_runner(proj, args.run, args))


def runs_restart(args: Any) -> int:
    from ..engine import reset_run

    proj = _open(args)
    reset_run(proj, args.run)  # refused while a live engine runs it
    if args.detach:
        return _detach(proj, args.run, args, mode="restart")
    return _finish_message(proj, args.run, _progress_runner(proj, args.run, args, resume=False))


def runs_stop(args: Any) -> int:
    from ..engine.claims import stop_run

    out.print(stop_run(_open(args), args.run), markup=False)
    return 0


def runs_rerun(args: Any) -> int:
    from ..engine.listing import rerun

    proj = _open(args)
    new_id = rerun(proj, args.run, registry=_registry())
    out.print(f"run {new_id}: re-run of run {args.run}")
    if args.detach:
        return _detach(proj, new_id, args)
    return _finish_message(proj, new_id, _progress_runner(proj, new_id, args))


def runs_delete(args: Any) -> int:
    from ..engine.listing import delete_runs

    deleted = delete_runs(_open(args), args.run, cascade=args.cascade)
    out.print(f"deleted run(s) {', '.join(map(str, deleted))}")
    return 0


def provenance(args: Any) -> int:
    from ..engine.provenance import lineage, lineage_dot, lineage_lines, run_record

    proj = _open(args)
    if args.run is None and args.object is None:
        raise ParamError("provenance", "give a run id or --object ID")
    if args.json:
        if args.run is None:
            raise ParamError("--json", "needs a run id")
        print(json.dumps(run_record(proj, args.run), indent=2))
        return 0
    tree = lineage(proj, run_id=args.run, object_id=args.object)
    if args.dot:
        sys.stdout.write(lineage_dot(tree))
    else:
        for line in lineage_lines(tree):
            out.print(line, markup=False)
    return 0


# -- templates -----------------------------------------------------------------------
def _template_file(name: str) -> str:
    """A template file as given, else the template of that name shipped with emforge."""
    if os.path.exists(name) or os.sep in name:
        return name
    from importlib.resources import files

    shipped = files("emforge.templates") / (name if name.endswith(".json") else f"{name}.json")
    return str(shipped) if shipped.is_file() else name


def _check_placeholders(tpl: Any) -> None:
    """'$name' params are blanks the user fills with --set; refuse the ones left blank."""
    from ..errors import ValidationError

    blanks = [
        f"node {n.id}: param {k!r} is the placeholder {v!r}; give it with --set {n.id}.{k}=VALUE"
        for n in tpl.nodes
        for k, v in n.params.items()
        if isinstance(v, str) and v.startswith("$")
    ]
    if blanks:
        raise ValidationError(blanks)


def template_run(args: Any) -> int:
    from ..engine.templates import apply_overrides, load_template, run_template

    proj = _open(args)
    tpl = apply_overrides(load_template(_template_file(args.file)), args.set)
    _check_placeholders(tpl)
    t0 = time.perf_counter()

    def event(node: str, what: str, run_id: int) -> None:
        word = {"fresh": "skipped (fresh)"}.get(what, what)
        out.print(f"  {node}: run {run_id} {word}")

    runs = run_template(
        proj,
        tpl,
        registry=_registry(),
        workers=args.workers,
        executor=args.executor,
        scheduler=args.scheduler,
        on_event=event,
    )
    out.print(
        f"template done in {time.perf_counter() - t0:.1f} s: "
        + ", ".join(f"{k}=run {v}" for k, v in runs.items())
    )
    return 0


def template_export(args: Any) -> int:
    from ..engine.templates import export_template

    tpl = export_template(_open(args), args.runs)
    text = tpl.model_dump_json(indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        out.print(f"wrote {args.output}")
    return 0


def template_schema(args: Any) -> int:
    from ..engine.templates import template_schema as schema

    print(json.dumps(schema(), indent=2))
    return 0


# -- export ---------------------------------------------------------------------------
def export(args: Any) -> int:
    from ..engine.listing import export_object

    path = export_object(_open(args), args.object, Path(args.output))
    out.print(f"wrote {path}")
    return 0


def demo(args: Any) -> int:
    from ..demo import run_demo

    run_demo(Path(args.path), workers=args.workers, echo=out.print)
    return 0
