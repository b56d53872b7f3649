"""The benchmark helpers measure what they claim: fresh processes, peak RSS, enough repeats."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_common.py"
_spec = importlib.util.spec_from_file_location("_bench_common_under_test", _PATH)
bc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bc
_spec.loader.exec_module(bc)

MB = 2**20


def record_process(out_dir: str) -> None:
    """Child side: write what this process sees into a file named by its pid."""
    info = {
        "pid": os.getpid(),
        "xdg": os.environ.get("XDG_CACHE_HOME"),
        "numba": os.environ.get("NUMBA_CACHE_DIR"),
        "wisdom": os.environ.get("EMFORGE_FFTW_WISDOM"),
        "xdg_empty": not Path(os.environ["XDG_CACHE_HOME"]).exists(),
        "threads": os.environ.get("EMFORGE_FFT_THREADS"),
    }
    (Path(out_dir) / f"{os.getpid()}.json").write_text(json.dumps(info))
    # leave something in the cache folder: the next repeat must not see it
    Path(os.environ["XDG_CACHE_HOME"]).mkdir(parents=True)


@pytest.mark.slow
def test_cold_call_starts_a_fresh_process_with_empty_caches_each_repeat(tmp_path):
    stats = bc.cold_call(record_process, str(tmp_path), repeats=5, threads=1)
    seen = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(seen) == 5 and len(stats.samples) == 5
    assert len({s["pid"] for s in seen}) == 5 and os.getpid() not in {s["pid"] for s in seen}
    assert len({s["xdg"] for s in seen}) == 5 and len({s["numba"] for s in seen}) == 5
    assert all(s["wisdom"] == "0" and s["xdg_empty"] and s["threads"] == "1" for s in seen)
    for s in stats.samples:  # the call alone is part of the whole process's time
        assert 0 < s.inner_wall < s.wall and s.cpu > 0


@pytest.mark.slow
def test_cold_command_peak_rss_counts_an_allocation_of_200_mb():
    grab = "b = b'\\x01' * (200 * 2**20)"
    stats = bc.cold_command([sys.executable, "-c", grab], repeats=5)
    assert all(s.rss_mb >= 200 for s in stats.samples), stats.samples
    ballast = b"\x01" * (300 * MB)  # a big parent must not show in its child's peak RSS
    small = bc.cold_command([sys.executable, "-c", "pass"], repeats=5)
    assert small.rss_mb < 100 and len(ballast) == 300 * MB, small.samples


@pytest.mark.slow
def test_cold_command_peak_rss_includes_grandchildren():
    grab = "b = b'\\x01' * (200 * 2**20)"
    outer = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grab!r}], check=True)"
    stats = bc.cold_command([sys.executable, "-c", outer], repeats=5)
    assert stats.rss_mb >= 200, stats.samples


def test_fewer_than_five_repeats_are_refused():
    with pytest.raises(ValueError, match="repeats must be ≥ 5"):
        bc.cold_command([sys.executable, "-c", "pass"], repeats=4)
    with pytest.raises(ValueError, match="repeats must be ≥ 5"):
        bc.warm(lambda: None, repeats=3)
    with pytest.raises(ValueError, match="module-level"):
        bc.cold_call(lambda: None)


def test_warm_reports_min_median_max_and_the_table_has_the_ratio():
    calls = []
    stats = bc.warm(lambda: calls.append(1), repeats=5, label="append")
    assert len(calls) == 6  # one untimed warm-up call
    assert stats.min <= stats.median <= stats.max
    peer = bc.Stats("peer", [bc.Sample(2 * stats.median, 0.0, 1.0) for _ in range(5)])
    text = bc.report([("append", stats, peer)], peer="other")
    assert "2.00×" in text and "other/emforge" in text


def test_wait_quiet_is_bounded_and_says_when_the_machine_is_loaded(capsys):
    quiet, load = bc.wait_quiet(threshold=-1.0, timeout=0.0)
    assert not quiet and load >= 0
    assert "NOT quiet" in capsys.readouterr().out


@pytest.mark.slow
def test_copy_baseline_copies_the_same_bytes_afresh_each_repeat(tmp_path):
    src = tmp_path / "stack.bin"
    src.write_bytes(os.urandom(1 << 20))
    calls = []

    def before():  # runs after the last copy is gone, before every repeat
        calls.append(Path(f"{src}.bench-copy").exists())
        bc.drop_file_cache(src)

    for fsync in (False, True):
        calls.clear()
        stats = bc.copy_baseline(src, fsync=fsync, before=before)
        assert len(stats.samples) == 5 and calls == [False] * 5
        assert ("sync" in stats.label) == fsync
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.bin"]
