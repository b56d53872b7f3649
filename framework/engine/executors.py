"""Executors: where step functions run.

The engine only needs ``submit(fn, ctx, args) -> handle`` (``handle.done()``,
``handle.result()``), ``drain_progress()`` and ``shutdown(terminate=...)``. Three
implementations:

* :class:`InlineExecutor` — in the engine's own process, one step at a time (no start-up cost:
  the default for runs whose steps cannot overlap).
* :class:`ProcessExecutor` — a pool of local worker processes (``fork``), the default for
  runs with independent steps. Progress comes back through a queue.
* :class:`DaskExecutor` — a Dask ``distributed`` cluster (a scheduler address, or a local
  cluster); ``distributed`` is imported only when this executor is created.

Payloads are plain and picklable and workers never open the project database.
"""

from __future__ import annotations

import os
import queue as _queue
import signal
import sys
from typing import Any

from .context import StepContext, call_step, set_progress_sink

__all__ = [
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "DaskExecutor",
    "WorkerDied",
    "make_executor",
]


def _pin_threads() -> None:
    """One FFT thread and one compiled-kernel thread for a step on a worker slot.

    A worker (a pool process or a Dask worker with one thread per slot) runs one step per
    core, so the step gains nothing from more threads; pinning them also makes a step's
    arithmetic the same on every executor: FFTW plans and numba's per-thread partial sums
    differ with the thread count, and in a refinement a last-bit difference in a score can
    flip a near-tie between two references. ``EMFORGE_FFT_THREADS`` is read at each call;
    ``NUMBA_NUM_THREADS`` before numba loads, ``numba.set_num_threads`` (per thread) after.
    """
    os.environ["EMFORGE_FFT_THREADS"] = "1"
    numba = sys.modules.get("numba")
    if numba is None:
        os.environ["NUMBA_NUM_THREADS"] = "1"
    else:
        numba.set_num_threads(1)


def call_on_worker(fn: Any, ctx: StepContext, args: dict[str, Any]) -> Any:
    """:func:`call_step` on a worker slot (process pool or Dask), threads pinned to one."""
    _pin_threads()
    return call_step(fn, ctx, args)


class _Done:
    """Handle of an inline call: already finished."""

    def __init__(self, fn: Any, ctx: StepContext, args: dict[str, Any]) -> None:
        try:
            self._value, self._error = call_step(fn, ctx, args), None
        except BaseException as exc:  # re-raised by result()
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._value, self._error = None, exc

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class Executor:
    """Interface of step executors."""

    parallel = False
    workers = 1

    def submit(self, fn: Any, ctx: StepContext, args: dict[str, Any]) -> Any:
        raise NotImplementedError

    def drain_progress(self) -> list[tuple[int, str, float, str]]:
        return []

    def shutdown(self, *, terminate: bool = False) -> None:
        return None


class InlineExecutor(Executor):
    """Run steps in the engine's process, sequentially."""

    def __init__(self, progress_sink: Any = None) -> None:
        set_progress_sink(progress_sink)

    def submit(self, fn: Any, ctx: StepContext, args: dict[str, Any]) -> Any:
        return _Done(fn, ctx, args)


def _die_with_engine(engine_pid: int) -> None:
    """Have the kernel kill this worker when the engine process dies, even by SIGKILL (Linux).

    Otherwise an orphaned worker finishes its step after the engine is gone and could write
    the same files as the resumed run.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != engine_pid:  # the engine died before prctl took effect
        os._exit(1)


def _init_worker(q: Any, engine_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides about Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_engine(engine_pid)
    set_progress_sink(q)


class WorkerDied(RuntimeError):
    """A worker process died (killed, segfault, bus error) while it ran a step."""


class _PoolHandle:
    """Handle of a step in the process pool: a worker's death becomes :class:`WorkerDied`."""

    def __init__(self, future: Any, executor: ProcessExecutor) -> None:
        self._future, self._executor = future, executor

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._future.result()
        except BrokenProcessPool:
            raise WorkerDied(self._executor.death_note()) from None


class ProcessExecutor(Executor):
    """A pool of local worker processes (``fork``).

    A worker that dies (SIGKILL, a segfault, a bus error) breaks the pool: every step it held
    then fails with :class:`WorkerDied` saying how the worker ended, and the run stops instead
    of waiting forever.
    """

    parallel = True

    def __init__(self, workers: int) -> None:
        # multiprocessing and concurrent.futures load here, not with the engine: a run whose
        # steps go inline (one worker, --executor inline) never needs them
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork")
        self.workers = max(1, int(workers))
        self._queue = ctx.Queue()
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self._queue, os.getpid()),
        )
        self._procs: dict[int, Any] = {}

    def submit(self, fn: Any, ctx: StepContext, args: dict[str, Any]) -> Any:
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        try:
            future = self._pool.submit(call_on_worker, fn, ctx, args)
        except BrokenProcessPool:  # an earlier step's worker died: this one cannot start
            future = Future()
            future.set_exception(BrokenProcessPool())
        self._procs.update(getattr(self._pool, "_processes", None) or {})
        return _PoolHandle(future, self)

    def death_note(self) -> str:
        """One line on how the pool's workers ended (e.g. 'killed by SIGBUS')."""
        ends = []
        for proc in self._procs.values():
            proc.join(timeout=1)
            code = proc.exitcode
            if code is not None and code < 0:
                try:
                    ends.append(f"killed by {signal.Signals(-code).name}")
                except ValueError:
                    ends.append(f"killed by signal {-code}")
            elif code:
                ends.append(f"exit status {code}")
        how = ", ".join(dict.fromkeys(ends)) or "ended abruptly"
        return f"a worker process died while running the step ({how})"

    def drain_progress(self) -> list[tuple[int, str, float, str]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except (_queue.Empty, OSError, ValueError):
                return items

    def shutdown(self, *, terminate: bool = False) -> None:
        if terminate:
            for proc in list(self._procs.values()):
                if proc.is_alive():
                    proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.close()


class DaskExecutor(Executor):
    """Steps on a Dask distributed cluster: ``address`` of a scheduler, or a local cluster."""

    parallel = True

    def __init__(self, address: str | None = None, *, workers: int = 2) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the install
            from ..errors import ParamError

            raise ParamError(
                "executor",
                f"dask needs the 'distributed' package ({exc}); pip install 'emforge[dask]'",
            ) from None
        self._own_cluster = None
        address = scheduler_address(address)
        if address:
            self._client = connect(address)
        else:
            self._own_cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self._client = Client(self._own_cluster)
        self.workers = len(self._client.scheduler_info().get("workers", {})) or workers
        self._futures: list[Any] = []

    def submit(self, fn: Any, ctx: StepContext, args: dict[str, Any]) -> Any:
        fut = self._client.submit(call_on_worker, fn, ctx, args, pure=False)
        self._futures.append(fut)
        return fut

    def shutdown(self, *, terminate: bool = False) -> None:
        if terminate:
            for fut in self._futures:
                fut.cancel()
        self._client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()


def scheduler_address(address: str | None = None) -> str | None:
    """The scheduler to use: ``address``, else Dask's ``scheduler-address`` config
    (``DASK_SCHEDULER_ADDRESS`` in the environment sets it), else None (a local cluster)."""
    if address:
        return address
    try:
        import dask
    except ImportError:  # pragma: no cover - depends on the install
        return None
    return dask.config.get("scheduler-address", None) or None


def connect_timeout() -> float:
    """Seconds to wait for a scheduler: ``EMFORGE_DASK_TIMEOUT``, default 10."""
    import os

    from ..errors import ParamError

    raw = os.environ.get("EMFORGE_DASK_TIMEOUT", "10")
    try:
        value = float(raw)
    except ValueError:
        raise ParamError(
            "EMFORGE_DASK_TIMEOUT", f"must be a number of seconds, got {raw!r}"
        ) from None
    if value <= 0:
        raise ParamError("EMFORGE_DASK_TIMEOUT", f"must be positive, got {raw!r}")
    return value


def connect(address: str) -> Any:
    """A ``distributed.Client`` on ``address``; an unreachable scheduler is a one-line
    :class:`~emforge.errors.ParamError` naming the address (no traceback)."""
    from distributed import Client

    from ..errors import ParamError

    timeout = connect_timeout()
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParamError(
            "--scheduler",
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({why[:120]})",
        ) from None


def check_scheduler(executor: str, address: str | None) -> None:
    """Before a run is recorded: with ``executor="dask"`` and a scheduler to reach, connect
    once (and close) so that an unreachable one fails with the database unchanged."""
    if executor != "dask":
        if address:
            from ..errors import ParamError

            raise ParamError("--scheduler", f"needs --executor dask (got --executor {executor})")
        return
    address = scheduler_address(address)
    if address:
        connect(address).close()


def make_executor(
    kind: str, *, workers: int, address: str | None = None, progress_sink: Any = None
) -> Executor:
    """An executor by name: ``inline``, ``local`` (processes) or ``dask``."""
    if kind == "inline" or (kind == "local" and workers <= 1):
        return InlineExecutor(progress_sink)
    if kind == "local":
        return ProcessExecutor(workers)
    if kind == "dask":
        return DaskExecutor(address, workers=workers)
    from ..errors import ParamError

    raise ParamError("executor", f"unknown executor {kind!r}; use local, inline or dask")
