"""Real ``emforge`` processes: detached runs (4 at once; one SIGKILLed, shown interrupted,
resumed) and SIGTERM to a foreground run. ``example.sleep`` is installed through the example
plugin's entry point, so the detached launcher finds it like a user's run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from enginetest_helpers import integrity, steps_of

from emforge.cli import main
from emforge.engine import effective_status
from emforge.engine.listing import run_rows
from emforge.engine.runs import run_row

CLI = [sys.executable, "-c", "import sys; from emforge.cli import main; sys.exit(main())"]

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(step)


def test_four_detached_runs_finish(project):
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            CLI
            + [
                "run",
                "example.sleep",
                "--detach",
                "-P",
                str(project.path),
                "-p",
                "seconds=0.3",
                "-p",
                "n_steps=2",
                "--label",
                f"d{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and "started in the background" in out, err
    returned = time.monotonic() - t0
    _wait(
        lambda: [r["shown_status"] for r in run_rows(project)] == ["finished"] * 4,
        20,
        "4 finished runs",
    )
    done = time.monotonic() - t0
    rows = run_rows(project)
    assert sorted(r["label"] for r in rows) == ["d0", "d1", "d2", "d3"]
    assert len({r["pid"] for r in rows}) == 4  # four launcher processes
    for r in rows:
        assert {s["status"] for s in steps_of(project, r["id"]).values()} == {"finished"}
    assert integrity(project) == "ok"
    durations = ", ".join(f"{r['finished'] - r['started']:.2f}" for r in rows)
    print(
        f"\n4 detached runs: CLI calls returned after {returned:.2f} s, all finished after {done:.2f} s; "
        f"run durations {durations} s"
    )


def test_single_detached_trivial_run_latency(project):
    t0 = time.monotonic()
    subprocess.run(
        CLI
        + [
            "run",
            "example.sleep",
            "--detach",
            "-P",
            str(project.path),
            "-p",
            "seconds=0",
            "-p",
            "n_steps=1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    returned = time.monotonic() - t0
    _wait(
        lambda: run_rows(project) and run_rows(project)[0]["shown_status"] == "finished",
        20,
        "the run",
    )
    print(
        f"\ndetached trivial run: CLI returned after {returned:.2f} s, finished after {time.monotonic() - t0:.2f} s"
    )


def test_sigkilled_detached_run_is_interrupted_then_resumes(project, capsys):
    subprocess.run(
        CLI
        + [
            "run",
            "example.sleep",
            "--detach",
            "-P",
            str(project.path),
            "-p",
            "seconds=2",
            "-p",
            "n_steps=1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    row = _wait(
        lambda: (r := run_row(project, 1))["status"] == "running" and r["pid"] and r, 20, "running"
    )
    _wait(
        lambda: steps_of(project, 1).get("sleep_1", {}).get("status") == "running",
        10,
        "step running",
    )
    assert effective_status(row) == "running"
    os.kill(row["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    _wait(lambda: effective_status(run_row(project, 1)) == "interrupted", 5, "'interrupted'")
    with capsys.disabled():
        print(f"\nkilled detached run shown interrupted after {time.monotonic() - t0:.2f} s")
    assert (
        run_row(project, 1)["status"] == "running"
    )  # the database still says so; the pid tells the truth
    assert main(["runs", "list", "-P", str(project.path)]) == 0
    listed = capsys.readouterr().out
    assert "interrupted" in listed and "running" not in listed

    assert main(["runs", "resume", "1", "-P", str(project.path), "--workers", "1"]) == 0
    assert "run 1 finished" in capsys.readouterr().out
    assert run_row(project, 1)["status"] == "finished"
    assert steps_of(project, 1)["sleep_1"]["status"] == "finished"
    assert integrity(project) == "ok"


def test_sigterm_to_foreground_cli_run_aborts_and_resumes(project, capsys):
    # 4 x 0.6 s steps on 2 worker processes; SIGTERM once the first two finished
    proc = subprocess.Popen(
        CLI
        + [
            "run",
            "example.sleep",
            "-P",
            str(project.path),
            "-p",
            "seconds=0.6",
            "-p",
            "n_steps=4",
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(
        lambda: (
            sum(s["status"] == "finished" for s in steps_of(project, 1).values()) >= 2
            and sum(s["status"] == "running" for s in steps_of(project, 1).values()) >= 1
        ),
        30,
        "steps",
        0.01,
    )
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "aborted" in err and "Traceback" not in err, err
    before = steps_of(project, 1)
    assert run_row(project, 1)["status"] == "aborted"
    finished = {n for n, s in before.items() if s["status"] == "finished"}
    assert len(finished) >= 2 and {s["status"] for n, s in before.items() if n not in finished} <= {
        "aborted",
        "new",
    }
    assert "aborted" in {s["status"] for s in before.values()}

    assert main(["runs", "resume", "1", "-P", str(project.path), "--workers", "2"]) == 0
    after = steps_of(project, 1)
    assert {n for n, s in after.items() if s["status"] == "skipped"} == finished
    assert all(s["status"] == "finished" for n, s in after.items() if n not in finished)
    assert all(s["executions"] == 1 for s in after.values())
