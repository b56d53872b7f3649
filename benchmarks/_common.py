"""Shared helpers of the benchmarks: cold and warm timing, peak RSS, load, tables, the Scipion peer.

The rules these helpers enforce are in ``docs/benchmarks.md``. In short:

- :func:`cold_command` / :func:`cold_call` start a fresh process per repeat, with empty caches
  (:func:`cold_env`: no FFTW wisdom, a new ``XDG_CACHE_HOME`` and numba cache folder), and
  collect wall time, CPU time and peak RSS of that process and its children (``os.wait4`` in a
  small launcher process: a child's ``ru_maxrss`` would otherwise include its parent's RSS).
- :func:`warm` repeats a call in this process (after one untimed call).
- Every measurement has ≥ :data:`MIN_REPEATS` repeats and reports min / median / max.
- :func:`wait_quiet` waits a bounded time for load < 1.5 and says whether it got it;
  :func:`machine` prints cores, load averages and the thread settings.
- :func:`report` prints both sides with their ratio.

Run a callable cold only if it is a module-level function (it is imported by name in the child).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # makes `benchmarks.peers` importable when run as a script
    sys.path.insert(0, str(ROOT))

MIN_REPEATS = 5
QUIET_LOAD = 1.5
THREAD_VARS = ("EMFORGE_FFT_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_RESULT_TAG = "@@bench-result@@"


@dataclass
class Sample:
    """One measured repeat: wall and CPU seconds, peak RSS in MB (of the process and children)."""

    wall: float
    cpu: float
    rss_mb: float
    inner_wall: float | None = None  # the call alone, without interpreter start (cold_call)


@dataclass
class Stats:
    """All repeats of one case; ``min`` / ``median`` / ``max`` of wall time."""

    label: str
    samples: list[Sample] = field(default_factory=list)

    def _walls(self) -> list[float]:
        return [s.wall for s in self.samples]

    @property
    def min(self) -> float:
        return min(self._walls())

    @property
    def median(self) -> float:
        return statistics.median(self._walls())

    @property
    def max(self) -> float:
        return max(self._walls())

    @property
    def cpu_median(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return max(s.rss_mb for s in self.samples)

    def summary(self) -> str:
        return (
            f"{self.min:.3f} / {self.median:.3f} / {self.max:.3f} s "
            f"(cpu {self.cpu_median:.3f} s, peak RSS {self.rss_mb:.0f} MB, n={len(self.samples)})"
        )


def check_repeats(repeats: int) -> int:
    """``repeats`` itself, or ValueError when it is below :data:`MIN_REPEATS`."""
    if int(repeats) < MIN_REPEATS:
        raise ValueError(f"repeats must be ≥ {MIN_REPEATS} (min/median/max), got {repeats}")
    return int(repeats)


def peak_rss_mb() -> float:
    """Peak RSS in MB of this process or of the largest waited-for child, whichever is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # Linux reports kB


def thread_settings() -> str:
    return ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARS)


def machine() -> str:
    """Cores, the 1/5/15-min load averages, Python and the thread settings, in one line."""
    la = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, load {la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f}, "
        f"python {sys.version.split()[0]}; {thread_settings()}"
    )


def wait_quiet(
    threshold: float = QUIET_LOAD, timeout: float = 120.0, poll: float = 5.0
) -> tuple[bool, float]:
    """Wait up to ``timeout`` s for the 1-min load average to drop below ``threshold``.

    Returns ``(quiet, load)`` and prints one line; a loaded machine is said, not hidden.
    """
    deadline = time.monotonic() + timeout
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() < deadline:
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        load = os.getloadavg()[0]
    quiet = load < threshold
    state = "quiet" if quiet else f"NOT quiet (waited {timeout:.0f} s)"
    print(f"[load] {load:.2f} (threshold {threshold}): machine {state}", flush=True)
    return quiet, load


def cold_env(
    cache_dir: str | os.PathLike[str],
    threads: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a cold run: no FFTW wisdom, empty cache folders under ``cache_dir``.

    ``threads`` (if given) sets every thread variable of :data:`THREAD_VARS`.
    """
    env = dict(os.environ)
    base = Path(cache_dir)
    env["EMFORGE_FFTW_WISDOM"] = "0"
    env["XDG_CACHE_HOME"] = str(base / "xdg")
    env["NUMBA_CACHE_DIR"] = str(base / "numba")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if threads is not None:
        env.update({v: str(threads) for v in THREAD_VARS})
    env.update(extra or {})
    return env


# Linux counts the parent's RSS at fork/exec in a child's ru_maxrss, so the measured process is
# started by this small launcher (python -S, ~10 MB), which reports the grandchild's rusage.
_LAUNCHER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    json.dump({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_kb": ru.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _spawn(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> tuple[Sample, str]:
    """Run ``argv`` once: wall, CPU (user+sys) and peak RSS of it and its children (wait4)."""
    with tempfile.TemporaryDirectory(prefix="bench-spawn-") as tmp:
        res, log = Path(tmp) / "rusage.json", Path(tmp) / "out.txt"
        with open(log, "w") as out:
            done = subprocess.run(
                [sys.executable, "-S", "-c", _LAUNCHER, str(res), *map(str, argv)],
                env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        text = log.read_text()
        if done.returncode != 0 or not res.exists():
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {text[-2000:]}")
        r = json.loads(res.read_text())
    return Sample(r["wall"], r["cpu"], r["rss_kb"] / 1024.0), text


def cold_command(
    argv: Sequence[str],
    repeats: int = MIN_REPEATS,
    *,
    label: str | None = None,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    before: Callable[[], object] | None = None,
) -> Stats:
    """Run a command ``repeats`` times, each a fresh process with fresh empty caches.

    ``before`` (untimed) runs before each repeat: e.g. delete the last output, flush dirty
    pages and drop the input from the page cache, so every repeat starts from the same state.
    """
    stats = Stats(label or " ".join(map(str, argv)))
    for _ in range(check_repeats(repeats)):
        if before is not None:
            before()
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
            sample, _ = _spawn(argv, cold_env(tmp, threads, env), cwd)
        stats.samples.append(sample)
    return stats


def _target(fn: Callable[..., object]) -> tuple[str, str]:
    """(module or script file, qualified name) by which a child process can find ``fn``."""
    if "<locals>" in fn.__qualname__ or "<lambda>" in fn.__qualname__:
        raise ValueError(f"{fn.__qualname__}: cold_call needs a module-level function")
    mod = sys.modules[fn.__module__]
    path = Path(mod.__file__).resolve()
    try:  # by name when the child finds the same file by that name, else by path
        spec = importlib.util.find_spec(fn.__module__) if fn.__module__ != "__main__" else None
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).resolve() == path:
        return fn.__module__, fn.__qualname__
    return str(path), fn.__qualname__


def cold_call(
    fn: Callable[..., object],
    *args: object,
    repeats: int = MIN_REPEATS,
    label: str | None = None,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    before: Callable[[], object] | None = None,
) -> Stats:
    """Call the module-level function ``fn(*args)`` (JSON-able args) in a fresh process per repeat.

    ``wall`` is the whole process (interpreter, imports, the call); ``inner_wall`` the call alone.
    ``before`` runs untimed before each repeat, as in :func:`cold_command`.
    """
    where, name = _target(fn)
    payload = json.dumps({"where": where, "name": name, "args": list(args), "root": str(ROOT)})
    argv = [sys.executable, "-c", _CHILD, payload]
    stats = Stats(label or name)
    for _ in range(check_repeats(repeats)):
        if before is not None:
            before()
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
            sample, text = _spawn(argv, cold_env(tmp, threads, env), None)
        line = [ln for ln in text.splitlines() if ln.startswith(_RESULT_TAG)][-1]
        sample.inner_wall = json.loads(line[len(_RESULT_TAG) :])["inner_wall"]
        stats.samples.append(sample)
    return stats


_CHILD = f"""
import importlib, importlib.util, json, sys, time
p = json.loads(sys.argv[1])
sys.path[:0] = [p["root"], p["root"] + "/benchmarks"]
w = p["where"]
if w.endswith(".py"):
    spec = importlib.util.spec_from_file_location("_bench_target", w)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_bench_target"] = mod
    spec.loader.exec_module(mod)
else:
    mod = importlib.import_module(w)
fn = mod
for part in p["name"].split("."):
    fn = getattr(fn, part)
t0 = time.perf_counter()
fn(*p["args"])
print({_RESULT_TAG!r} + json.dumps({{"inner_wall": time.perf_counter() - t0}}), flush=True)
"""


def warm(
    fn: Callable[[], object],
    repeats: int = MIN_REPEATS,
    *,
    label: str | None = None,
    warmup: int = 1,
) -> Stats:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` timed times in this process.

    CPU is this process's (all threads); RSS is the process peak so far (it never decreases).
    """
    stats = Stats(label or getattr(fn, "__name__", "call"))
    n = check_repeats(repeats)
    for _ in range(warmup):
        fn()
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats.samples.append(Sample(wall, cpu, peak_rss_mb()))
    return stats


def drop_file_cache(*paths: str | os.PathLike[str]) -> None:
    """Flush all dirty pages (``sync``), then drop the files' pages from the page cache.

    Before each repeat of a streaming benchmark: the last repeat's unflushed output must not
    slow the next one, and every repeat reads its input from the disk, not from memory.
    """
    os.sync()
    for path in paths:
        if Path(path).exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def copy_baseline(
    src: str | os.PathLike[str],
    repeats: int = MIN_REPEATS,
    *,
    fsync: bool = False,
    before: Callable[[], object] | None = None,
) -> Stats:
    """Streaming baseline: ``cp`` of the same bytes to a new file next to it, cold processes.

    The copy is deleted before each repeat (a new file every time, as a writer makes). With
    ``fsync`` the process also flushes the copy to disk (``cp`` then coreutils ``sync FILE``):
    the like-for-like baseline of a writer that fsyncs before it renames. ``before`` runs
    untimed before each repeat, after the copy is deleted (e.g. :func:`drop_file_cache`).
    """
    dst = f"{src}.bench-copy"

    def reset() -> None:
        Path(dst).unlink(missing_ok=True)
        if before is not None:
            before()

    try:
        if shutil.which("cp") and (not fsync or shutil.which("sync")):
            script = 'cp "$1" "$2" && sync "$2"' if fsync else 'cp "$1" "$2"'
            argv = ["sh", "-c", script, "sh", str(src), dst]
            label = "cp + sync (same bytes)" if fsync else "cp (same bytes)"
        else:
            code = "import os, shutil, sys; shutil.copyfile(*sys.argv[1:3])"
            if fsync:
                code += "; fd = os.open(sys.argv[2], os.O_RDONLY); os.fsync(fd)"
            argv = [sys.executable, "-c", code, str(src), dst]
            label = "shutil.copyfile" + (" + fsync" if fsync else "") + " (same bytes)"
        return cold_command(argv, repeats, label=label, before=reset)
    finally:
        Path(dst).unlink(missing_ok=True)


def report(cases: Sequence[tuple[str, Stats, Stats | None]], peer: str = "peer") -> str:
    """A table: each case's min/median/max wall, CPU and peak RSS for both sides and the ratio.

    The ratio is the peer's median over ours (> 1: ours is faster).
    """

    def cells(s: Stats | None) -> tuple[str, str, str]:
        if s is None:
            return "-", "-", "-"
        return f"{s.min:.3f}/{s.median:.3f}/{s.max:.3f}", f"{s.cpu_median:.3f}", f"{s.rss_mb:.0f}"

    rows = []
    for case, ours, theirs in cases:
        ratio = f"{theirs.median / ours.median:.2f}×" if theirs is not None else "-"
        rows.append((case, *cells(ours), *cells(theirs), ratio))
    header = (
        "case", "emforge min/med/max s", "cpu s", "RSS MB",
        f"{peer} min/med/max s", "cpu s", "RSS MB", f"{peer}/emforge",
    )  # fmt: skip
    return table(rows, header)


def best_of(fn: Callable[[], object], repeats: int = MIN_REPEATS) -> float:
    """Smallest wall time of ``repeats`` (≥ 5) warm calls (seconds); prefer :func:`warm`."""
    return warm(fn, repeats, warmup=0).min


def table(rows: list[tuple], header: tuple) -> str:
    cols = list(zip(*([header] + [tuple(map(str, r)) for r in rows]), strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def scipion(mode: str, *args: object) -> dict | None:
    """Run one mode of the Scipion side in its own venv; None (with a line) if it cannot run."""
    from benchmarks.peers.scipion_side import run_scipion

    try:
        return run_scipion(mode, *args)
    except Exception as exc:  # the peer is optional: say why and carry on
        print(f"[scipion] {mode} could not run: {type(exc).__name__}: {str(exc)[:300]}")
        return None
