"""Executing a run: scheduling its steps, recording status, registering outputs.

The engine process is the only writer of the database. It marks a step ``running`` before
submitting it, and in ONE transaction registers the step's outputs and marks it
``finished`` when it returns, so a kill at any moment loses nothing that had finished and
never leaves an output without its step. On resume a step whose key is unchanged and whose
outputs are intact is ``skipped``; everything else is redone.

SIGTERM and Ctrl-C abort the run (``aborted``, resumable). A run is claimed atomically, so
one engine at most executes it. A run whose process died without a word keeps ``running`` in
the database but is shown ``interrupted`` (its process is gone, or, seen from another host, its
heartbeat is stale), see :mod:`.claims`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select, update

from .. import db
from ..errors import EmforgeError
from ..versions import file_version
from .claims import STALE_AFTER_S, RunBusyError, busy_message, claim_run, effective_status
from .context import StepContext, StepOutcome, append_line, check_run_folder
from .executors import Executor, WorkerDied, make_executor
from .keys import canonical_json, step_keys, toposort
from .protocol import Step
from .runs import LoadedRun, check_sources, load_run
from .verify import damaged_files, record_files, remove_leftovers

if TYPE_CHECKING:  # the engine runs on a project; it never imports emforge.project
    from ..project import Project

__all__ = ["execute_run", "effective_status", "RunAborted", "HEARTBEAT_S", "STALE_AFTER_S"]

HEARTBEAT_S = 1.0
DONE = ("finished", "skipped")


class RunAborted(KeyboardInterrupt):
    """Raised in the engine by SIGTERM (or Ctrl-C) to stop a run cleanly."""


def external_versions(instance: Any, root: Any = None) -> dict[str, str]:
    """Content versions of a run's external files, keyed ``file:<path>`` (the path in its
    stored form when ``root``, the project root, is given: see :mod:`emforge.paths`)."""
    from ..paths import to_stored

    return {
        f"file:{to_stored(root, p) if root is not None else p}": file_version([p])
        for p in instance.external_files()
    }


class _Heartbeat(threading.Thread):
    """Writes the run's heartbeat and overall progress every second."""

    def __init__(self, project: Project, run_id: int) -> None:
        super().__init__(daemon=True)
        self.project, self.run_id = project, run_id
        self.progress: tuple[float, str] = (0.0, "")
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_S):
            self.beat()

    def beat(self) -> None:
        frac, msg = self.progress
        try:
            with db.write(self.project.engine) as conn:
                conn.execute(
                    update(db.runs)
                    .where(db.runs.c.id == self.run_id)
                    .values(heartbeat=time.time(), progress=frac, progress_message=msg)
                )
        except Exception:  # a missed beat is harmless; the next one retries
            pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _outputs_intact(conn: Connection, project: Project, run_id: int, step: str) -> bool:
    rows = (
        conn.execute(
            select(db.objects).where((db.objects.c.run_id == run_id) & (db.objects.c.step == step))
        )
        .mappings()
        .all()
    )
    for row in rows:
        if row["kind"].startswith("SetOf"):
            continue
        if project.row_version(row) != row["data_version"]:
            return False
    return True


def _stored_objects(project: Project, registrations: list[dict[str, Any]]) -> dict[int, Any]:
    """``project.stored_attrs`` (attributes and data version: the content hash of the files)
    of each single-object registration, by its index. Computed before the write transaction
    (which then stays short), the files of different objects hashed by parallel threads:
    hashing and reading release the interpreter lock."""
    todo = [i for i, reg in enumerate(registrations) if reg["type"] == "object"]
    if len(todo) <= 1:
        return {i: project.stored_attrs(registrations[i]["object"]) for i in todo}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
        done = pool.map(lambda i: project.stored_attrs(registrations[i]["object"]), todo)
        return dict(zip(todo, done, strict=True))


def _register(
    conn: Connection,
    project: Project,
    run_id: int,
    step: str,
    reg: dict[str, Any],
    stored: tuple[str, str] | None = None,
) -> None:
    """Write one registration; an output redone keeps its object id (downstream edges).
    ``stored``: the object's ``project.stored_attrs``, when already computed."""
    o = db.objects.c
    old = conn.execute(select(o.id).where((o.run_id == run_id) & (o.name == reg["name"]))).scalar()
    if old is not None:
        conn.execute(delete(db.set_columns).where(db.set_columns.c.object_id == old))
    if reg["type"] == "object":
        obj = reg["object"]
        attrs_json, version = stored or project.stored_attrs(obj)
        values = dict(
            kind=obj.kind,
            attrs_json=attrs_json,
            data_version=version,
            count=1,
            label=reg["label"],
            step=step,
            created=time.time(),
        )
        if old is None:
            old = conn.execute(
                insert(db.objects).values(run_id=run_id, name=reg["name"], **values)
            ).inserted_primary_key[0]
        else:
            conn.execute(update(db.objects).where(o.id == old).values(**values))
    else:
        if reg["type"] == "set":
            handle = project.create_set(
                reg["kind"],
                reg["columns"],
                run_id=run_id,
                name=reg["name"],
                label=reg["label"],
                attrs=reg["attrs"],
                conn=conn,
            )
        else:
            handle = project.get(reg["source_id"]).copy(
                reg["changes"],
                run_id=run_id,
                name=reg["name"],
                label=reg["label"],
                attrs=reg["attrs"],
                conn=conn,
            )
        conn.execute(update(db.objects).where(o.id == handle.id).values(step=step))
        if old is not None:  # move the new content under the old id, keeping downstream links
            row = conn.execute(select(db.objects).where(o.id == handle.id)).mappings().one()
            conn.execute(
                update(db.set_columns)
                .where(db.set_columns.c.object_id == handle.id)
                .values(object_id=old)
            )
            conn.execute(
                update(db.objects)
                .where(o.id == old)
                .values(
                    kind=row["kind"],
                    attrs_json=row["attrs_json"],
                    data_version=row["data_version"],
                    count=row["count"],
                    label=row["label"],
                    step=step,
                    created=row["created"],
                )
            )
            conn.execute(delete(db.objects).where(o.id == handle.id))
        else:
            old = handle.id
    version = conn.execute(select(o.data_version).where(o.id == old)).scalar()
    conn.execute(
        delete(db.edges).where(
            (db.edges.c.run_id == run_id)
            & (db.edges.c.direction == "out")
            & (db.edges.c.name == reg["name"])
        )
    )
    conn.execute(
        insert(db.edges).values(
            run_id=run_id, object_id=old, direction="out", name=reg["name"], data_version=version
        )
    )


class _Scheduler:
    """Runs the steps of one run on an executor and records every transition."""

    def __init__(
        self,
        project: Project,
        loaded: LoadedRun,
        steps: list[Step],
        keys: dict[str, str],
        executor: Executor,
        heartbeat: _Heartbeat,
        on_progress: Callable[..., None] | None,
    ) -> None:
        self.project, self.loaded, self.executor = project, loaded, executor
        self.run_id = loaded.row["id"]
        self.workdir = Path(loaded.row["workdir"])
        self.steps, self.keys, self.heartbeat, self.on_progress = (
            steps,
            keys,
            heartbeat,
            on_progress,
        )
        self.status: dict[str, str] = {}
        self.fraction: dict[str, float] = {}
        self.running: dict[str, Any] = {}
        self.failed: str | None = None

    def log(self, message: str) -> None:
        try:
            append_line(
                self.workdir / "logs" / "run.log", f"{time.strftime('%H:%M:%S')} [engine] {message}"
            )
        except OSError:  # a full disk loses a log line, not the run's status
            pass

    def _set_step(self, name: str, **values: Any) -> None:
        with db.write(self.project.engine) as conn:
            conn.execute(
                update(db.steps)
                .where((db.steps.c.run_id == self.run_id) & (db.steps.c.name == name))
                .values(**values)
            )

    def report(
        self, step: str | None = None, fraction: float | None = None, message: str = ""
    ) -> None:
        if step is not None and fraction is not None:
            self.fraction[step] = fraction
        total = len(self.steps) or 1
        done = sum(
            1.0 if self.status.get(s.name) in DONE else self.fraction.get(s.name, 0.0)
            for s in self.steps
        )
        overall = done / total
        self.heartbeat.progress = (overall, message)
        if self.on_progress is not None:
            self.on_progress(overall, message, dict(self.status))

    def prepare(self, resume: bool) -> None:
        """Create/refresh step rows; mark fresh steps ``skipped`` when resuming."""
        with db.write(self.project.engine) as conn:
            existing = {
                r["name"]: dict(r)
                for r in conn.execute(
                    select(db.steps).where(db.steps.c.run_id == self.run_id)
                ).mappings()
            }
            damaged = damaged_files(conn, self.project.path, self.run_id) if resume else {}
            for idx, s in enumerate(self.steps):
                old = existing.get(s.name)
                fresh = (
                    resume
                    and old is not None
                    and old["status"] in DONE
                    and old["key"] == self.keys[s.name]
                    and s.name not in damaged
                    and _outputs_intact(conn, self.project, self.run_id, s.name)
                )
                status = "skipped" if fresh else "new"
                self.status[s.name] = status
                values = dict(
                    idx=idx,
                    key=self.keys[s.name] if fresh else (old or {}).get("key", ""),
                    status=status,
                    deps_json=json.dumps(list(s.deps)),
                    error=None,
                )
                if old is None:
                    conn.execute(insert(db.steps).values(run_id=self.run_id, name=s.name, **values))
                else:
                    conn.execute(
                        update(db.steps).where(db.steps.c.id == old["id"]).values(**values)
                    )
            stale = set(existing) - {s.name for s in self.steps}
            if stale:
                conn.execute(
                    delete(db.steps).where(
                        (db.steps.c.run_id == self.run_id) & (db.steps.c.name.in_(stale))
                    )
                )
        for sentences in damaged.values():
            for sentence in sentences:
                self.log(f"redo: {sentence}")
        skipped = [n for n, st in self.status.items() if st == "skipped"]
        if skipped:
            self.log(f"skipped (fresh): {', '.join(skipped)}")

    def _ready(self) -> list[Step]:
        return [
            s
            for s in self.steps
            if self.status[s.name] == "new" and all(self.status[d] in DONE for d in s.deps)
        ]

    def _submit(self, s: Step) -> None:
        self.status[s.name] = "running"
        self._set_step(s.name, status="running", started=time.time(), finished=None, error=None)
        self.log(f"{s.name}: started")
        self.report(s.name, 0.0, f"{s.name} started")
        ctx = StepContext(self.run_id, s.name, self.workdir)
        self.running[s.name] = self.executor.submit(s.fn, ctx, dict(s.args))

    def _finish(self, name: str, handle: Any) -> None:
        try:
            outcome: StepOutcome = handle.result()
        except (EmforgeError, WorkerDied) as exc:
            return self._fail(name, str(exc), str(exc))
        except Exception as exc:
            import traceback  # only for a failing step

            return self._fail(
                name,
                f"{type(exc).__name__}: {exc}",
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            )
        declared = next(s for s in self.steps if s.name == name).outputs
        missing = [o for o in declared if o not in {r["name"] for r in outcome.registrations}]
        if missing:
            return self._fail(name, f"step registered no output {missing}", "")
        stored = _stored_objects(self.project, outcome.registrations)
        with db.write(self.project.engine) as conn:
            for i, reg in enumerate(outcome.registrations):
                _register(conn, self.project, self.run_id, name, reg, stored.get(i))
            record_files(
                conn,
                self.project.path,
                self.run_id,
                name,
                self.workdir,
                outcome.files,
                outcome.registrations,
            )
            conn.execute(
                update(db.steps)
                .where((db.steps.c.run_id == self.run_id) & (db.steps.c.name == name))
                .values(
                    status="finished",
                    finished=time.time(),
                    key=self.keys[name],
                    error=None,
                    result_json=json.dumps(outcome.result, default=str),
                    executions=db.steps.c.executions + 1,
                )
            )
        self.status[name] = "finished"
        self.log(f"{name}: finished in {outcome.seconds:.2f} s")
        self.report(name, 1.0, f"{name} finished")

    def _fail(self, name: str, message: str, trace: str) -> None:
        self.status[name] = "failed"
        self.failed = self.failed or f"step {name}: {message}"
        self._set_step(
            name,
            status="failed",
            finished=time.time(),
            error=message,
            executions=db.steps.c.executions + 1,
        )
        self.log(f"{name}: FAILED: {message}\n{trace}")

    def loop(self) -> None:
        while True:
            if self.failed is None:
                for s in self._ready():
                    if len(self.running) >= max(1, self.executor.workers):
                        break
                    self._submit(s)
                    if not self.executor.parallel:
                        break
            if not self.running:
                return
            for item in self.executor.drain_progress():
                self.report(item[1], item[2], item[3])
            finished = [n for n, h in self.running.items() if h.done()]
            for n in finished:
                self._finish(n, self.running.pop(n))
            if not finished:
                time.sleep(0.01)

    def abort(self) -> None:
        # by status, not by handle: an inline step is interrupted inside submit(), before
        # its handle is stored in ``self.running``
        for name in [n for n, st in self.status.items() if st == "running"]:
            self.status[name] = "aborted"
            with db.write(
                self.project.engine
            ) as conn:  # a step whose finish committed stays finished
                conn.execute(
                    update(db.steps)
                    .where(
                        (db.steps.c.run_id == self.run_id)
                        & (db.steps.c.name == name)
                        & (db.steps.c.status == "running")
                    )
                    .values(status="aborted", finished=time.time(), error="aborted")
                )
        self.running.clear()


def _wants_parallel(steps: list[Step], todo: set[str]) -> bool:
    depth: dict[str, int] = {}
    for s in toposort(steps):
        depth[s.name] = 1 + max((depth[d] for d in s.deps), default=0)
    levels = [depth[n] for n in todo]
    return len(levels) != len(set(levels))


def execute_run(
    project: Project,
    run_id: int,
    *,
    resume: bool = True,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    registry: Any = None,
    on_progress: Callable[..., None] | None = None,
) -> str:
    """Run (or resume) a recorded run to its end; returns its final status."""
    loaded = load_run(project, run_id, registry=registry)
    check_sources(loaded)
    check_run_folder(Path(loaded.row["workdir"]))
    cls = loaded.info.cls
    steps = toposort(loaded.instance.steps())
    external = external_versions(loaded.instance, project.path)
    params = loaded.key_params
    keys = step_keys(
        cls.id, str(cls.version), params, {**loaded.current_versions, **external}, steps
    )
    now = time.time()
    with db.write(project.engine) as conn:
        before = claim_run(
            conn,
            run_id,
            dict(
                heartbeat=now,
                started=now,
                finished=None,
                error=None,
                progress=0.0,
                progress_message="",
                protocol_version=str(cls.version),
                plugin_version=str(loaded.info.plugin_version),
                external_json=json.dumps(external),
            ),
        )
        if before["executed_params_json"] is None:  # the params of a first execution
            conn.execute(
                update(db.runs)
                .where(db.runs.c.id == run_id)
                .values(executed_params_json=canonical_json(params))
            )
        for name, version in loaded.current_versions.items():
            conn.execute(
                update(db.edges)
                .where(
                    (db.edges.c.run_id == run_id)
                    & (db.edges.c.direction == "in")
                    & (db.edges.c.name == name)
                )
                .values(data_version=version)
            )
    heartbeat = _Heartbeat(project, run_id)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    scheduler = _Scheduler(project, loaded, steps, keys, None, heartbeat, on_progress)  # type: ignore[arg-type]
    scheduler.prepare(resume)
    remove_leftovers(scheduler.workdir)  # what killed steps left: no step of this run runs now
    todo = {n for n, st in scheduler.status.items() if st == "new"}
    kind = executor if (executor != "local" or _wants_parallel(steps, todo)) else "inline"
    scheduler.executor = make_executor(
        kind,
        workers=n_workers,
        address=address,
        progress_sink=lambda _r, s, f, m: scheduler.report(s, f, m),
    )
    final, error = "finished", None
    handlers = _install_abort_handlers()
    heartbeat.start()
    try:
        scheduler.log(
            f"run {run_id} ({cls.id} v{cls.version}) on {kind} executor, {len(todo)} step(s) to run"
        )
        scheduler.loop()
        if scheduler.failed:
            final, error = "failed", scheduler.failed
    except KeyboardInterrupt:
        scheduler.executor.shutdown(terminate=True)
        scheduler.abort()
        final, error = "aborted", "aborted by signal"
    finally:
        _restore_handlers(handlers)
        heartbeat.stop()
        if final != "aborted":
            scheduler.executor.shutdown()
        remove_leftovers(scheduler.workdir)
    _save_fft_wisdom()
    summary = _summary(project, loaded, final)
    with db.write(project.engine) as conn:
        conn.execute(
            update(db.runs)
            .where(db.runs.c.id == run_id)
            .values(
                status=final,
                finished=time.time(),
                error=error,
                heartbeat=time.time(),
                summary=summary,
                progress=1.0 if final == "finished" else heartbeat.progress[0],
                progress_message=heartbeat.progress[1],
            )
        )
        if final == "finished":  # the outputs now come from these params (pending edits ran)
            conn.execute(
                update(db.runs)
                .where(db.runs.c.id == run_id)
                .values(executed_params_json=canonical_json(params))
            )
    scheduler.log(f"run {run_id}: {final}" + (f" ({error})" if error else ""))
    return final


def _summary(project: Project, loaded: LoadedRun, final: str) -> str:
    if final != "finished":
        return ""
    from .runs import materialise

    run_id = loaded.row["id"]
    with db.read(project.engine) as conn:
        outs = {
            r["name"]: materialise(project, dict(r))
            for r in conn.execute(
                select(db.objects).where(db.objects.c.run_id == run_id)
            ).mappings()
        }
        results = {
            r["name"]: json.loads(r["result_json"])
            for r in conn.execute(select(db.steps).where(db.steps.c.run_id == run_id)).mappings()
        }
    try:
        return loaded.instance.summary(outs, results) or ""
    except Exception as exc:  # a broken summary must not fail a finished run
        return f"(summary unavailable: {type(exc).__name__}: {exc})"


def _save_fft_wisdom() -> None:
    """Keep the FFTW plans this run measured for the next runs (when it planned any FFT)."""
    import sys

    fft = sys.modules.get("emforge.numerics.fft")
    if fft is not None:
        fft.save_wisdom_cache()


def _install_abort_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def _abort(signum: int, _frame: Any) -> None:
        exc = RunAborted(signal.Signals(signum).name)
        if not db.defer_interrupt(exc):  # inside a transaction: raised when it has ended
            raise exc

    return {sig: signal.signal(sig, _abort) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_handlers(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


def reset_run(project: Project, run_id: int) -> None:
    """Forget a run's steps (``runs restart``): every step is redone on the next execute.

    Refused (:class:`~.claims.RunBusyError`) while a live engine runs it, and refused in one
    line, before anything is forgotten, when a source file of the run is gone.
    """
    check_sources(load_run(project, run_id))
    with db.write(project.engine) as conn:
        row = conn.execute(select(db.runs).where(db.runs.c.id == run_id)).mappings().first()
        if row is not None and effective_status(dict(row)) == "running":
            raise RunBusyError(busy_message(dict(row)))
        conn.execute(delete(db.steps).where(db.steps.c.run_id == run_id))
        conn.execute(
            update(db.runs)
            .where(db.runs.c.id == run_id)
            .values(status="new", error=None, progress=0.0)
        )


def outputs_of(project: Project, run_id: int) -> dict[str, dict[str, Any]]:
    with db.read(project.engine) as conn:
        return {
            r["name"]: dict(r)
            for r in conn.execute(
                select(db.objects).where(db.objects.c.run_id == run_id).order_by(db.objects.c.id)
            ).mappings()
        }
