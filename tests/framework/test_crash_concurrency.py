"""Crash safety and concurrency of the project database, with real processes.

* A child process writing a 1,000,000-item set is killed with SIGKILL part-way; the database
  must pass ``PRAGMA integrity_check`` and hold no trace of the half-written set.
* Four processes write ten 100,000-item sets each into one project at the same moment; all
  forty sets must be complete and correct and no process may see "database is locked".

Checks go through plain ``sqlite3`` on the file, independent of the code under test.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emforge.project import Project

CRASH_N = 1_000_000
CONC_WORKERS, CONC_SETS, CONC_N = 4, 10, 100_000

# Builds a 1M-item set in memory, says "started", writes it, says "done".
CRASH_CHILD = r"""
import sys
import numpy as np
from emforge.project import Project
proj = Project.open(sys.argv[1])
n = int(sys.argv[2])
rng = np.random.default_rng(7)
cols = {"rot": rng.uniform(-180, 180, n), "tilt": rng.uniform(0, 180, n), "psi": rng.uniform(-180, 180, n),
        "defocus_u": rng.uniform(5e3, 3e4, n), "micrograph": np.array(["m1", "m2", "m3"], dtype=object)[rng.integers(0, 3, n)],
        "coord_x": rng.uniform(0, 4096, n), "ex_tag": rng.integers(0, 9, n)}
print("started", flush=True)
proj.create_set("SetOfParticles", cols, label="doomed")
print("done", flush=True)
"""

# The items worker ``w`` writes as its set ``k``: run by each worker, and by the test as ground truth.
CONC_DATA = r"""
import numpy as np


def conc_columns(worker, k, n):
    rng = np.random.default_rng(1_000 * worker + k)
    mics = np.array([f"w{worker}_mic{i}" for i in range(40)], dtype=object)
    return {"rot": rng.uniform(-180, 180, n), "defocus_u": rng.uniform(5e3, 3e4, n),
            "micrograph": mics[rng.integers(0, 40, n)], "worker": np.full(n, worker),
            "ex_k": np.full(n, k)}
"""

# Prepares its sets, says "ready", waits for the start file, writes them all.
CONC_CHILD = (
    CONC_DATA
    + r"""
import os, sys, time
from emforge.project import Project
path, worker, start, n_sets, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
proj = Project.open(path)
data = [conc_columns(worker, k, n) for k in range(n_sets)]
print("ready", flush=True)
while not os.path.exists(start):
    time.sleep(0.002)
for k, cols in enumerate(data):
    proj.create_set("SetOfParticles", cols, label=f"w{worker}_s{k}")
"""
)


def conc_columns(worker: int, k: int, n: int) -> dict[str, np.ndarray]:
    namespace: dict = {}
    exec(CONC_DATA, namespace)
    return namespace["conc_columns"](worker, k, n)


def assert_sound_database(dbfile: Path) -> list[tuple[int, str, int]]:
    """integrity_check ok, no orphan set items, every set holds exactly ``count`` items per column.

    Returns the (id, label, count) of every object.
    """
    con = sqlite3.connect(dbfile)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        orphans = con.execute(
            "SELECT DISTINCT object_id FROM set_columns WHERE object_id NOT IN (SELECT id FROM objects)"
        ).fetchall()
        assert orphans == [], f"set items without an object row: {orphans}"
        stored = con.execute(
            "SELECT o.id, o.count, c.column, SUM(c.n) FROM objects o JOIN set_columns c ON c.object_id = o.id "
            "WHERE c.chunk >= 0 GROUP BY o.id, c.column"
        ).fetchall()
        for oid, count, column, total in stored:
            assert total == count, (
                f"object {oid} column {column}: {total} items stored, count says {count}"
            )
        sets = con.execute("SELECT id FROM objects WHERE kind LIKE 'SetOf%'").fetchall()
        with_items = {oid for oid, *_ in stored}
        assert {s[0] for s in sets} <= with_items, "a set object without any stored column"
        return con.execute("SELECT id, label, count FROM objects ORDER BY id").fetchall()
    finally:
        con.close()


def _wal_size(dbfile: Path) -> int:
    try:
        return os.path.getsize(f"{dbfile}-wal")
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_at_mb", [1, 25, 50], ids=["early", "middle", "late"])
def test_sigkill_while_writing_a_million_item_set(project: Project, kill_at_mb: int) -> None:
    """Kill points are set by how far the write has gone, measured by the WAL's size.

    The child gives 7 columns x 1M x 8 bytes = 56 MB, so any storage writes more than the
    last kill point before it can commit (today, with default-filled columns, ~185 MB).
    """
    keep = {"rot": np.linspace(-90, 90, 1_000), "micrograph": np.array(["k"] * 1_000, dtype=object)}
    kept = project.create_set("SetOfParticles", keep, label="kept")
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(project.path), str(CRASH_N)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "started", (
            f"child failed before writing: {line!r} {child.stderr.read() if child.stderr else ''}"
        )
        deadline = time.monotonic() + 60
        while _wal_size(project.db_path) < kill_at_mb * 1_000_000:
            assert child.poll() is None, f"child ended before its WAL reached {kill_at_mb} MB"
            assert time.monotonic() < deadline, f"the WAL never reached {kill_at_mb} MB"
            time.sleep(0.001)
        wal_at_kill = _wal_size(project.db_path)
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert "done" not in out, (
        f"the write finished before the kill (WAL {wal_at_kill} bytes); not a crash test"
    )
    print(f"killed at WAL {wal_at_kill / 1e6:.1f} MB")

    objects = assert_sound_database(project.db_path)
    assert objects == [(kept.id, "kept", 1_000)], f"a partial set is visible: {objects}"
    # the project is still fully usable: the earlier set intact, new writes accepted
    again = Project.open(project.path)
    back = again.get(kept.id).read("rot", "micrograph")
    assert np.array_equal(back["rot"], keep["rot"]) and np.array_equal(
        back["micrograph"], keep["micrograph"]
    )
    after = again.create_set("SetOfParticles", {"rot": [1.0, 2.0]}, label="after")
    assert len(after) == 2
    assert_sound_database(project.db_path)


@pytest.mark.slow
def test_four_processes_write_forty_sets_at_once(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = tmp_path / "start"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONC_CHILD,
                str(project.path),
                str(w),
                str(start),
                str(CONC_SETS),
                str(CONC_N),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(CONC_WORKERS)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            assert line == "ready", (
                f"worker failed to start: {line!r} {p.stderr.read() if p.stderr else ''}"
            )
        t0 = time.perf_counter()
        start.touch()
        results = [p.communicate(timeout=300) for p in procs]
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with capsys.disabled():
        print(
            f"\n[sets] {CONC_WORKERS} processes x {CONC_SETS} sets x {CONC_N:,} items: {wall:.1f} s wall"
        )
    for w, (p, (out, err)) in enumerate(zip(procs, results, strict=True)):
        assert "locked" not in (out + err).lower(), f"worker {w}: {err.strip()[-500:]}"
        assert p.returncode == 0 and err == "", (
            f"worker {w} (exit {p.returncode}): {err.strip()[-500:]}"
        )

    objects = assert_sound_database(project.db_path)
    assert len(objects) == CONC_WORKERS * CONC_SETS
    assert {label for _, label, _ in objects} == {
        f"w{w}_s{k}" for w in range(CONC_WORKERS) for k in range(CONC_SETS)
    }
    assert {count for *_, count in objects} == {CONC_N}
    by_label = {label: oid for oid, label, _ in objects}
    for w, k in ((0, 0), (1, 9), (2, 4), (3, 7)):
        want = conc_columns(w, k, CONC_N)
        got = project.get(by_label[f"w{w}_s{k}"]).read(*want, "id")
        assert np.array_equal(got["id"], np.arange(1, CONC_N + 1))
        for name, values in want.items():
            assert np.array_equal(got[name], values), (w, k, name)
