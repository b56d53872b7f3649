"""A full disk and a dying worker fail the step within seconds, one line, never a hang.

The disk-full tests use a real 8 MiB tmpfs (``mount -t tmpfs``, root only) holding the
project; they are skipped with one line where mounting is not permitted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import toyprotocols

from emforge.engine import create_run, execute_run
from emforge.engine.runs import run_row
from emforge.errors import OutputFileError
from emforge.io import StackWriter, write_volume
from emforge.project import Project

FS_BYTES = 8 << 20


def _emforge(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from emforge.cli import main; sys.exit(main())"]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB tmpfs mounted at ``tmp_path/fs`` (skipped where mounting is not permitted)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not os.path.ismount(mnt):
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, name: str, leave: int) -> Path:
    """Allocate a file so that about ``leave`` bytes stay free on ``folder``'s file system."""
    st = os.statvfs(folder)
    size = max(st.f_bavail * st.f_frsize - leave, 0)
    path = folder / name
    with open(path, "wb") as fh:
        if size:
            os.posix_fallocate(fh.fileno(), 0, size)
    return path


def _import_and_mask(project: Path, data_dir: Path, workers: int) -> subprocess.CompletedProcess:
    data = data_dir / "particles"
    star, stack = data / "sample_particles_relion31.star", data / "sample.mrcs"
    imp = _emforge("run", "import.particles", "-P", project, "-p", f"star={star}")
    assert imp.returncode == 0, imp.stderr + imp.stdout
    assert stack.is_file()
    return project


def _mask(project: Path, workers: int) -> subprocess.CompletedProcess:
    # 17 images of 200² float32 in 2 stacks: 1.28 MB + 1.44 MB
    return _emforge(
        "run", "masks.particles", "-P", project, "-i", "particles=1.particles",
        "-p", "geometry=circular", "-p", "radius=60", "-p", "parts=2", "--workers", workers,
    )  # fmt: skip


def _stacks(project: Path) -> dict[str, bytes]:
    extra = next((project / "Runs").glob("000002_*")) / "extra"
    return {p.name: p.read_bytes() for p in sorted(extra.glob("*.mrcs"))}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "pool"])
def test_disk_full_fails_fast_and_resume_after_freeing_space_finishes(
    small_fs, tmp_path, data_dir, workers
):
    reference = tmp_path / "ref"
    assert _emforge("project", "init", reference).returncode == 0
    _import_and_mask(reference, data_dir, workers)
    assert _mask(reference, workers).returncode == 0
    expected = _stacks(reference)
    assert sorted(expected) == ["particles_001.mrcs", "particles_002.mrcs"]

    project = small_fs / "P"
    assert _emforge("project", "init", project).returncode == 0
    _import_and_mask(project, data_dir, workers)
    filler = _fill(small_fs, "filler", leave=1 << 20)  # 1 MiB left: neither stack fits

    t0 = time.monotonic()
    proc = _mask(project, workers)
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    print(f"disk full -> failed in {seconds:.2f} s ({'pool' if workers > 1 else 'inline'})")
    assert seconds < 20, out
    assert proc.returncode == 1, out  # the run failed (bad input would be 2)
    assert "Traceback" not in out
    assert "no space left" in out.lower() and "particles_00" in out, out
    run_dir = next((project / "Runs").glob("000002_*"))
    assert [p.name for p in run_dir.rglob("*.tmp")] == []

    # read-only commands work even with not a byte left
    rest = _fill(small_fs, "filler2", leave=0)
    for cmd in (["runs", "list"], ["runs", "show", "2"], ["runs", "why", "2"]):
        res = _emforge(*cmd, "-P", project)
        assert res.returncode == 0, (cmd, res.stdout + res.stderr)
    listing = _emforge("runs", "list", "-P", project).stdout
    assert "failed" in listing

    filler.unlink()
    rest.unlink()
    res = _emforge("runs", "resume", "2", "-P", project, "--workers", workers)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _stacks(project) == expected
    assert "finished" in _emforge("runs", "list", "-P", project).stdout


@pytest.mark.parametrize("writer", ["stack", "volume"])
def test_writers_on_a_full_disk_raise_one_line_and_leave_nothing(small_fs, writer):
    _fill(small_fs, "filler", leave=1 << 20)
    target = small_fs / ("out.mrcs" if writer == "stack" else "out.mrc")
    data = np.ones((40, 100, 100), np.float32)  # 1.6 MB: more than is left
    with pytest.raises(OutputFileError, match=r"out\.mrcs?: cannot write: no space left"):
        if writer == "stack":
            with StackWriter(target, data.shape, voxel_size=1.0) as w:
                w.write(0, data)
        else:
            write_volume(target, data, voxel_size=1.0)
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


def _dying_write(path, data, **kw):
    """write_volume that kills its own process on map b (a worker dying mid-step)."""
    if Path(path).name == "b.mrc":
        os.kill(os.getpid(), signal.SIGBUS)
    return _REAL_WRITE(path, data, **kw)


_REAL_WRITE = toyprotocols.write_volume


def test_worker_that_dies_fails_its_step_and_never_hangs(project, registry, monkeypatch):
    monkeypatch.setattr(toyprotocols, "write_volume", _dying_write)

    def _hung(*_):
        raise TimeoutError("the run hung after its worker died")

    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)
    try:
        rid = create_run(project, "toy.fan", {}, {}, registry=registry)
        t0 = time.monotonic()
        status = execute_run(project, rid, registry=registry, workers=2)
        seconds = time.monotonic() - t0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    print(f"worker died -> failed in {seconds:.2f} s")
    assert status == "failed"
    assert seconds < 10
    row = run_row(project, rid)
    assert "step b" in row["error"] and "worker" in row["error"] and "SIGBUS" in row["error"]
    assert "\n" not in row["error"]
    assert Project.open(project.path).outputs(rid).get("merged") is None
