"""Scipion side of the emforge benchmarks; runs INSIDE the Scipion venv.

Usage (with the Scipion venv's python)::

    python benchmarks/peers/scipion_side.py sets [N [PER_MIC]]   # default 100000, 200
    python benchmarks/peers/scipion_side.py engine_inproc [REPEATS]
    python benchmarks/peers/scipion_side.py engine_detached [REPEATS]
    python benchmarks/peers/scipion_side.py engine_parallel [THREADS,...]  # default 3,2

Each prints ONE JSON object (timings in seconds) as the last line of stdout. Everything Scipion
prints goes to a log file in the temporary SCIPION_HOME; on failure its tail goes to stderr.
From the emforge side use :func:`run_scipion`, which builds the venv first.

Only the standard library is imported at module level, so the emforge interpreter can import
this file to get :data:`SCIPION_REQUIREMENTS` and :func:`run_scipion`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["SCIPION_REQUIREMENTS", "SCIPION_ENV_NAME", "MODES", "run_scipion"]

SCIPION_ENV_NAME = "scipion"
# Full pin set found to install and run on Python 3.11 (pip freeze of a working venv).
SCIPION_REQUIREMENTS = """
scipion-pyworkflow==3.11.7 scipion-em==3.11.1 bibtexparser==1.4.1 biopython==1.81
certifi==2026.10.18 charset-normalizer==3.5.2 configparser==6.0.0 contourpy==1.3.3
cycler==0.12.1 distro==1.9.0 emtable==0.0.14 fonttools==4.68.0 h5py==3.16.0 idna==3.20
ImageIO==2.38.1 importlib-metadata==6.8.0 kiwisolver==1.5.1 lazy-loader==0.6
matplotlib==3.8.1 metadata-viewer==2.5 mrcfile==1.4.3 ncempy==1.11.3 networkx==3.6.1
numpy==1.26.1 packaging==26.3 Pillow==10.1.0 psutil==5.9.6 pyparsing==3.3.3
pyperclip==1.9.0 PyQt5==5.15.11 PyQt5-Qt5==5.15.19 PyQt5_sip==12.20.0
python-dateutil==4.0.0 pyxmipp3==0.4.0 requests==2.31.0 scikit-image==0.24.0 scipy==1.10.0
tifffile==2023.9.26 tkColorPicker2==1.0 tzdata==2026.6 urllib3==2.8.0 zipp==4.1.2
""".split()
MODES = ("sets", "engine_inproc", "engine_detached", "engine_parallel")

_PLUGIN = "emforge_bench_scipion"  # the throw-away Scipion plugin holding the test protocols


def run_scipion(mode: str, *args: object, timeout: float = 600.0) -> dict:
    """Build the Scipion venv if needed, run one mode of this script in it, return its JSON."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if __package__:
        from .venv import ensure_venv, run_in_venv
    else:  # imported as a top-level module: load the sibling file (``venv`` is a stdlib name)
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "_emforge_peers_venv", Path(__file__).resolve().with_name("venv.py")
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        ensure_venv, run_in_venv = mod.ensure_venv, mod.run_in_venv
    python = ensure_venv(SCIPION_ENV_NAME, SCIPION_REQUIREMENTS)
    return run_in_venv(python, Path(__file__).resolve(), [mode, *map(str, args)], timeout)


# --------------------------------------------------------------------------- set-up

_HOSTS_CONF = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOBS)d %_(COMMAND)s
NAME =
MANDATORY = False
"""

_PLUGIN_INIT = '''"""Throw-away Scipion plugin written by emforge's benchmark."""
import pwem


class Plugin(pwem.Plugin):
    @classmethod
    def _defineVariables(cls):
        pass

    @classmethod
    def getEnviron(cls):
        return None
'''

_PLUGIN_PROTOCOLS = '''"""Protocols timed by emforge's engine benchmark."""
import time

import pyworkflow.object as pwobj
from pyworkflow.protocol import STEPS_PARALLEL
from pwem.protocols import EMProtocol


class BenchTrivial(EMProtocol):
    """One step that does nothing but register one output."""

    _label = "bench trivial"

    def _insertAllSteps(self):
        self._insertFunctionStep(self.outputStep, needsGPU=False)

    def outputStep(self):
        self._defineOutputs(outputNumber=pwobj.Integer(42))


class BenchParallel(EMProtocol):
    """Four independent steps that each sleep one second."""

    _label = "bench parallel"
    stepsExecutionMode = STEPS_PARALLEL

    def _defineParams(self, form):
        form.addParallelSection(threads=3, mpi=0)

    def _insertAllSteps(self):
        for i in range(4):
            self._insertFunctionStep(self.sleepStep, i, prerequisites=[], needsGPU=False)

    def sleepStep(self, i):
        time.sleep(1.0)
'''


def _write_plugin(folder: Path) -> None:
    """A real (entry-point registered) Scipion plugin, importable by the run subprocesses."""
    pkg = folder / _PLUGIN
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_PLUGIN_INIT)
    (pkg / "protocols.py").write_text(_PLUGIN_PROTOCOLS)
    dist = folder / f"{_PLUGIN}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {_PLUGIN}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[pyworkflow.plugin]\n{_PLUGIN} = {_PLUGIN}\n")


def _setup_scipion(tmp: Path) -> None:
    """Environment Scipion needs; must run before pyworkflow is imported."""
    home, user = tmp / "home", tmp / "userdata"
    (home / "config").mkdir(parents=True)
    (home / "config" / "hosts.conf").write_text(_HOSTS_CONF)
    (user / "projects").mkdir(parents=True)
    plugdir = tmp / "plugin"
    _write_plugin(plugdir)
    os.environ.update(
        SCIPION_HOME=str(home),
        SCIPION_USER_DATA=str(user),
        SCIPION_SOFTWARE=str(home / "software"),
        SCIPION_LOGS=str(user / "logs"),
        SCIPION_DOMAIN="pwem",
        SCIPION_PYTHON=sys.executable,  # default is 'python3' from PATH: not this venv
        SCIPION_NOTIFY="False",
        SCIPION_TEST_NOSYNC="True",
        PYTHONPATH=os.pathsep.join(p for p in (str(plugdir), os.environ.get("PYTHONPATH")) if p),
    )
    sys.path.insert(0, str(plugdir))
    import pyworkflow

    pyworkflow.Config.setDomain("pwem")


def _new_project(name: str):
    from pyworkflow.project import Manager

    # hosts.conf is found at $SCIPION_HOME/config/hosts.conf (passing it explicitly makes
    # pyworkflow 3.11 copy the file onto itself and fail)
    project = Manager().createProject(name)
    os.chdir(project.path)  # Scipion resolves run paths relative to the project folder
    return project


# --------------------------------------------------------------------------- sets


def _euler_zyz(rot, tilt, psi):
    """(n, 3, 3) rotation matrices from RELION ZYZ Euler angles in degrees."""
    import numpy as np

    a, b, g = (np.deg2rad(v) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty((len(a), 3, 3))
    m[:, 0] = np.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], axis=1)
    m[:, 1] = np.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], axis=1)
    m[:, 2] = np.stack([sc, ss, cb], axis=1)
    return m


def _make_inputs(n: int, per_mic: int = 200):
    import numpy as np

    rng = np.random.default_rng(0)
    du = rng.uniform(8000.0, 30000.0, n)
    dv = du - rng.uniform(0.0, 800.0, n)
    dang = rng.uniform(0.0, 179.0, n)
    mats = np.tile(np.eye(4), (n, 1, 1))
    mats[:, :3, :3] = _euler_zyz(
        rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)
    )
    mats[:, :2, 3] = rng.uniform(-10.0, 10.0, (n, 2))
    xy = rng.integers(0, 4096, (n, 2))
    mic_ids = np.arange(n) // per_mic + 1
    return du, dv, dang, mats, xy, mic_ids


def _write_set(fn: str, stack: str, inputs) -> None:
    """``stack`` is a pattern with ``{mic}``: one particle stack per micrograph."""
    """Write the set as a Scipion protocol would (see EMProtocol._createSetOfParticles)."""
    from pwem.objects import Acquisition, Coordinate, CTFModel, Particle, SetOfParticles, Transform

    du, dv, dang, mats, xy, mic_ids = inputs
    du, dv, dang, xy, mic_ids = (v.tolist() for v in (du, dv, dang, xy, mic_ids))
    pset = SetOfParticles(filename=fn, indexes=["_classId", "_micId"])
    pset.setSamplingRate(1.1)
    pset.setAcquisition(
        Acquisition(
            magnification=50000, voltage=300.0, sphericalAberration=2.7, amplitudeContrast=0.1
        )
    )
    pset.setHasCTF(True)
    pset.setAlignmentProj()
    for i in range(len(du)):
        part = Particle(location=(i + 1, stack.format(mic=mic_ids[i])))
        ctf = CTFModel()
        ctf.setStandardDefocus(du[i], dv[i], dang[i])
        part.setCTF(ctf)
        part.setTransform(Transform(mats[i]))
        coord = Coordinate()
        coord.setPosition(*xy[i])
        coord.setMicId(mic_ids[i])
        coord.setMicName(f"mic_{mic_ids[i]:05d}.mrc")
        part.setCoordinate(coord)
        pset.append(part)
    pset.write()
    pset.close()


def _read_set(fn: str) -> dict:
    """Read the set back into numpy arrays by iterating it (what protocols do)."""
    import numpy as np
    from pwem.objects import SetOfParticles

    pset = SetOfParticles(filename=fn)
    n = pset.getSize()
    out = {k: np.empty(n) for k in ("du", "dv", "dang", "x", "y")}
    out["mat"] = np.empty((n, 3, 4))
    for i, part in enumerate(pset.iterItems()):
        out["du"][i], out["dv"][i], out["dang"][i] = part.getCTF().getDefocus()
        out["mat"][i] = part.getTransform().getMatrix()[:3, :4]
        out["x"][i], out["y"][i] = part.getCoordinate().getPosition()
    acq = pset.getFirstItem().getAcquisition()  # per-item copy of the set's acquisition
    out["acq"] = (acq.getVoltage(), acq.getSphericalAberration(), acq.getAmplitudeContrast())
    pset.close()
    return out


def _check_read(out: dict, inputs) -> None:
    import numpy as np

    du, dv, dang, mats, xy, _ = inputs
    ok = (
        np.allclose(out["du"], du)
        and np.allclose(out["dv"], dv)
        and np.allclose(out["dang"], dang)
        and np.allclose(out["mat"], mats[:, :3, :4])
        and np.array_equal(out["x"], xy[:, 0])
        and np.array_equal(out["y"], xy[:, 1])
        and out["acq"] == (300.0, 2.7, 0.1)
    )
    if not ok:
        raise AssertionError("Scipion read back different values than it was given")


def mode_sets(n: int = 100000, per_mic: int = 200) -> dict:
    import resource

    import mrcfile
    import numpy as np
    from pwem.objects import SetOfParticles

    project = _new_project("bench_sets")
    run_dir = Path(project.path, "Runs", "000002_BenchSets")
    (run_dir / "extra").mkdir(parents=True)
    stack = "Runs/000002_BenchSets/extra/mic_{mic:05d}_particles.mrcs"
    first = stack.format(mic=1)  # only the first item's stack header is read
    mrcfile.new(first, data=np.zeros((4, 64, 64), np.float32), overwrite=True).close()
    fn = str(run_dir / "particles.sqlite")
    inputs = _make_inputs(n, per_mic)

    t0, c0 = time.perf_counter(), time.process_time()
    _write_set(fn, stack, inputs)
    write_s, write_cpu = time.perf_counter() - t0, time.process_time() - c0

    t0 = time.perf_counter()
    pset = SetOfParticles(filename=fn)
    count = pset.getSize()
    pset.close()
    count_s = time.perf_counter() - t0
    if count != n:
        raise AssertionError(f"Scipion set has {count} items, expected {n}")

    t0, c0 = time.perf_counter(), time.process_time()
    out = _read_set(fn)
    read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
    _check_read(out, inputs)
    return {
        "n": n,
        "write_s": round(write_s, 3),
        "read_s": round(read_s, 3),
        "open_count_s": round(count_s, 4),
        "write_cpu_s": round(write_cpu, 3),
        "read_cpu_s": round(read_cpu, 3),
        "verified": True,
        "db_bytes": os.path.getsize(fn),
        "distinct_micrographs": int(inputs[5][-1]),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --------------------------------------------------------------------------- engine


def _protocols():
    import importlib

    return importlib.import_module(f"{_PLUGIN}.protocols")


def _check_finished(project, prot) -> None:
    project._updateProtocol(prot)
    if not prot.isFinished():
        raise AssertionError(f"protocol {prot.getRunName()} ended as {prot.getStatus()}")


def _inproc_launch(protocol, wait=False, *args, **kwargs):
    """Stand-in for pyworkflow.protocol.launch: runs the run in THIS process (no subprocess)."""
    from pyworkflow.protocol import runProtocolMain

    cwd = os.getcwd()
    try:
        runProtocolMain(protocol.getProject().path, protocol.getDbPath(), protocol.getObjId())
    finally:
        os.chdir(cwd)


def mode_engine_inproc(repeats: int = 3) -> dict:
    """Trivial protocol launch->finished, blocking.

    ``wait_s``: ``project.launchProtocol(prot, wait=True)``, Scipion's blocking launch (what its
    own tests use); it always runs the protocol through ``pw_protocol_run.py`` in a child python.
    ``inproc_s``: the same ``launchProtocol`` with the child process replaced by
    ``runProtocolMain`` called in this process: Scipion's closest in-process equivalent.
    """
    import pyworkflow.project.project as pwproject

    prots = _protocols()
    project = _new_project("bench_inproc")
    res: dict = {"repeats": repeats, "wait_runs_s": [], "inproc_runs_s": []}
    for _ in range(repeats):
        prot = project.newProtocol(prots.BenchTrivial)
        t0 = time.perf_counter()
        project.launchProtocol(prot, wait=True)
        res["wait_runs_s"].append(round(time.perf_counter() - t0, 4))
        _check_finished(project, prot)
    real_launch = pwproject.pwprot.launch
    pwproject.pwprot.launch = _inproc_launch
    try:
        for _ in range(repeats):
            prot = project.newProtocol(prots.BenchTrivial)
            t0 = time.perf_counter()
            project.launchProtocol(prot, wait=True)
            res["inproc_runs_s"].append(round(time.perf_counter() - t0, 4))
            _check_finished(project, prot)
    finally:
        pwproject.pwprot.launch = real_launch
    res["wait_s"] = _median(res["wait_runs_s"])
    res["inproc_s"] = _median(res["inproc_runs_s"])
    return res


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else round((s[len(s) // 2 - 1] + s[len(s) // 2]) / 2, 4)


def _db_status(db_path: str, prot_id: int) -> str | None:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1.0)
        try:
            row = con.execute(
                "SELECT value FROM Objects WHERE parent_id=? AND name=?",
                (prot_id, f"{prot_id}.status"),  # pyworkflow names attributes '<parent>.<attr>'
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None  # locked or being rewritten: try again at the next poll
    return row[0] if row else None


def _reap(pid: int, limit: float = 30.0) -> None:
    """Wait for the run's process (our child) to exit so the temp folder can be removed."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.02)


def _launch_detached_and_poll(project, prot, poll: float, limit: float = 120.0) -> float:
    t0 = time.perf_counter()
    project.launchProtocol(prot)  # normal launch: background process, returns at once
    db_path = os.path.join(project.path, prot.getDbPath())
    while _db_status(db_path, prot.getObjId()) != "finished":
        if time.perf_counter() - t0 > limit:
            raise TimeoutError(f"{prot.getRunName()} not finished after {limit:.0f} s")
        time.sleep(poll)
    elapsed = time.perf_counter() - t0
    _reap(prot.getPid())
    _check_finished(project, prot)
    return elapsed


def mode_engine_detached(repeats: int = 3, poll: float = 0.02) -> dict:
    """Trivial protocol launched the normal way (background process); poll its run.db status."""
    prots = _protocols()
    project = _new_project("bench_detached")
    runs = []
    for _ in range(repeats):
        prot = project.newProtocol(prots.BenchTrivial)
        runs.append(round(_launch_detached_and_poll(project, prot, poll), 4))
    return {
        "repeats": repeats,
        "poll_s": poll,
        "detached_runs_s": runs,
        "detached_s": _median(runs),
    }


def mode_engine_parallel(threads: str = "3,2", poll: float = 0.02) -> dict:
    """Four independent 1-s steps, STEPS_PARALLEL with ThreadStepExecutor, detached launch.

    ``threads`` is a comma-separated list of ``numberOfThreads`` values, one run each. Scipion
    keeps one of ``numberOfThreads`` for its scheduling loop, so 3 gives 2 step workers (the
    like-for-like number, reported as ``parallel_s``) and 2 gives a single worker.
    """
    prots = _protocols()
    project = _new_project("bench_parallel")
    by_threads = {}
    for nthreads in (int(t) for t in str(threads).split(",")):
        prot = project.newProtocol(prots.BenchParallel, numberOfThreads=nthreads)
        by_threads[str(nthreads)] = round(_launch_detached_and_poll(project, prot, poll), 4)
    first = next(iter(by_threads))
    return {
        "steps": 4,
        "step_s": 1.0,
        "number_of_threads": int(first),
        "step_workers": int(first) - 1,
        "parallel_s": by_threads[first],
        "parallel_by_threads_s": by_threads,
        "steps_check_sec": float(os.environ.get("SCIPION_STEPS_CHECK_SEC", 5)),
    }


# --------------------------------------------------------------------------- main

_MODE_FUNCS = {
    "sets": (mode_sets, int),
    "engine_inproc": (mode_engine_inproc, int),
    "engine_detached": (mode_engine_detached, int),
    "engine_parallel": (mode_engine_parallel, str),
}


def _redirect_output(log_path: Path):
    """Send fd 1/2 (Scipion's prints, child processes) to a log; return the real stdout/err."""
    sys.stdout.flush()
    sys.stderr.flush()
    real_out = os.fdopen(os.dup(1), "w")
    real_err = os.fdopen(os.dup(2), "w")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return real_out, real_err


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in _MODE_FUNCS:
        print(__doc__, file=sys.stderr)
        return 2
    func, cast = _MODE_FUNCS[argv[0]]
    args = [cast(a) for a in argv[1:]]
    keep = os.environ.get("EMFORGE_BENCH_KEEP") == "1"
    tmp = Path(tempfile.mkdtemp(prefix="scipion-bench-"))
    log = tmp / "scipion-side.log"
    real_out, real_err = _redirect_output(log)
    t_start = time.perf_counter()
    try:
        _setup_scipion(tmp)
        result = func(*args)
    except BaseException:
        sys.stdout.flush()
        sys.stderr.flush()
        tail = log.read_text(errors="replace").splitlines()[-40:]
        real_err.write("\n".join(tail) + "\n" + traceback.format_exc())
        real_err.flush()
        return 1
    finally:
        os.chdir("/")
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    import pyworkflow

    result.update(
        mode=argv[0],
        scipion_pyworkflow=getattr(pyworkflow, "__version__", None),
        python=sys.version.split()[0],
        total_s=round(time.perf_counter() - t_start, 3),
    )
    if keep:
        result["tmp"] = str(tmp)
    real_out.write(json.dumps(result) + "\n")
    real_out.flush()
    return 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # our venv.py must not shadow the standard library's venv module
    sys.exit(main(sys.argv[1:]))
