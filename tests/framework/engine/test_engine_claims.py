"""One engine per run, judged by real processes: 16 ``runs resume`` at once, a stalled
(SIGSTOPped) engine, ``runs restart`` of a live run, a reused pid, concurrent ``project init``,
and ``--detach`` from a folder holding a folder named ``emforge``.

``example.sleep`` comes from the example plugin's entry point, so the CLI processes find it
as a user's run would."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
from enginetest_helpers import CLI, dead_pid, integrity, run_status, set_run, steps_of, wait_for

import emforge.cli._commands as commands
from emforge.cli import main
from emforge.engine import create_run, effective_status
from emforge.engine.runs import run_row
from emforge.project import Project


def _sleep_run(project: Project, seconds: float, n_steps: int) -> int:
    return create_run(project, "example.sleep", {"seconds": seconds, "n_steps": n_steps})


def _start_engine(project: Project, run_id: int) -> subprocess.Popen:
    """A foreground ``runs resume`` in a child process; returns once it claimed the run."""
    proc = subprocess.Popen(
        CLI + ["runs", "resume", str(run_id), "-P", str(project.path), "--executor", "inline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: run_row(project, run_id)["pid"] == proc.pid, 30, "the engine's claim")
    return proc


BUSY = re.compile(r"^emforge: error: run (\d+) is running in process (\d+) on (\S+)$")


@pytest.mark.slow
def test_sixteen_concurrent_resumes_run_each_step_once(project):
    run_id = _sleep_run(project, 0.5, 3)
    # an interrupted run: `running` in the database, its engine's process gone
    set_run(
        project,
        run_id,
        status="running",
        pid=dead_pid(),
        host=socket.gethostname(),
        heartbeat=time.time() - 60,
        started=time.time() - 61,
    )
    assert effective_status(run_row(project, run_id)) == "interrupted"
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            CLI + ["runs", "resume", str(run_id), "-P", str(project.path), "--executor", "inline"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(16)
    ]
    results = [(p.pid, p.wait(timeout=120), *p.communicate()) for p in procs]
    wall = time.monotonic() - t0
    steps = steps_of(project, run_id)
    assert [s["executions"] for s in steps.values()] == [1, 1, 1], steps
    assert run_status(project, run_id) == "finished"
    refused = [r for r in results if r[1] == 2]
    ran = {pid for pid, rc, _, _ in results if rc == 0}
    for _pid, rc, _out, err in results:
        assert rc in (0, 2) and "Traceback" not in err, err
        if rc == 2:  # one line naming the engine that held the run
            m = BUSY.match(err.strip())
            assert m and int(m.group(1)) == run_id and int(m.group(2)) in ran, (err, results)
    # one engine ran the steps; the others were refused while it ran, or found them done
    assert integrity(project) == "ok"
    print(f"\n16 concurrent resumes: {len(refused)} refused, wall {wall:.1f} s")


def test_finish_line_survives_a_concurrent_claim(project, monkeypatch, capsys):
    """The engine that ran the steps reports its end although a second resume (which finds
    every step done) has claimed the run again in between: that row has no finish time."""
    run_id = _sleep_run(project, 0.0, 1)
    real = commands._progress_runner

    def then_claimed_again(proj, rid, args, **kw):
        status = real(proj, rid, args, **kw)
        set_run(proj, rid, status="running", finished=None, started=time.time())
        return status

    monkeypatch.setattr(commands, "_progress_runner", then_claimed_again)
    rc = main(["runs", "resume", str(run_id), "-P", str(project.path), "--executor", "inline"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"run {run_id} finished; outputs:" in out and "Traceback" not in err


def _stop_outside_a_transaction(project: Project, pid: int) -> None:
    """SIGSTOP ``pid``, again until it is not stopped inside a (millisecond) write."""
    for _ in range(20):
        os.kill(pid, signal.SIGSTOP)
        con = sqlite3.connect(project.db_path, timeout=0.2)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError("the engine always held the write lock")


@pytest.mark.slow
def test_stopped_engine_stays_running_and_refuses_a_second_engine(project):
    run_id = _sleep_run(project, 1.0, 2)
    engine = _start_engine(project, run_id)
    try:
        _stop_outside_a_transaction(project, engine.pid)
        # a stall of 100 s as the heartbeat sees it; the process is alive and is the engine
        set_run(project, run_id, heartbeat=time.time() - 100)
        assert effective_status(run_row(project, run_id)) == "running"
        rc = subprocess.run(
            CLI + ["runs", "resume", str(run_id), "-P", str(project.path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rc.returncode == 2 and BUSY.match(rc.stderr.strip()), rc.stderr
        before = steps_of(project, run_id)
        rc = subprocess.run(
            CLI + ["runs", "restart", str(run_id), "-P", str(project.path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rc.returncode == 2 and BUSY.match(rc.stderr.strip()), rc.stderr
        assert steps_of(project, run_id) == before  # restart touched nothing
    finally:
        os.kill(engine.pid, signal.SIGCONT)
    out, err = engine.communicate(timeout=60)
    assert engine.returncode == 0, err
    assert run_status(project, run_id) == "finished"
    assert [s["executions"] for s in steps_of(project, run_id).values()] == [1, 1]


def test_a_reused_pid_is_not_taken_for_the_engine(project):
    run_id = _sleep_run(project, 0, 1)
    # our own (live) pid, but recorded with another process start: the engine is gone
    set_run(
        project,
        run_id,
        status="running",
        pid=os.getpid(),
        host=socket.gethostname(),
        heartbeat=time.time(),
        pid_start="another-boot:12345",
    )
    assert effective_status(run_row(project, run_id)) == "interrupted"
    from emforge.engine.claims import process_identity

    set_run(project, run_id, pid_start=process_identity(os.getpid()), heartbeat=time.time() - 99)
    assert effective_status(run_row(project, run_id)) == "running"  # same process: alive


def test_another_hosts_engine_is_judged_by_its_heartbeat(project):
    run_id = _sleep_run(project, 0, 1)
    set_run(project, run_id, status="running", pid=1, host="elsewhere", heartbeat=time.time())
    assert effective_status(run_row(project, run_id)) == "running"
    set_run(project, run_id, heartbeat=time.time() - 11)
    assert effective_status(run_row(project, run_id)) == "interrupted"


GO = (
    "import os, sys, time\n"
    "from emforge.cli import main\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.001)\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.mark.slow
def test_concurrent_project_init_of_one_path(tmp_path):
    target, go = tmp_path / "same", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-P", "-c", GO, str(go), "project", "init", str(target)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(2.0)  # every process has imported the CLI and waits for the start signal
    go.touch()
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert sum(rc == 0 for rc, _, _ in results) == 1, results
    for rc, _out, err in results:
        assert "Traceback" not in err, err
        if rc:
            assert rc == 2 and len(err.strip().splitlines()) == 1, err
            assert "a project already exists here" in err, err
    Project.open(target)  # a whole project


@pytest.mark.slow
def test_detach_from_a_folder_holding_a_folder_named_emforge(project, tmp_path):
    above = tmp_path / "above_a_clone"
    (above / "emforge" / "framework").mkdir(parents=True)
    (above / "emforge" / "README.md").write_text("a clone of the repository\n")
    proc = subprocess.run(
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
        cwd=above,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0 and "started in the background" in proc.stdout, proc.stderr
    wait_for(lambda: run_status(project, 1) == "finished", 30, "the detached run", 0.05)


def test_detach_reports_a_child_that_failed_to_start(project, monkeypatch, capsys):
    run_id = _sleep_run(project, 0, 1)
    failing = [sys.executable, "-c", "import sys; sys.exit('emforge: error: no engine here')"]
    monkeypatch.setattr(commands, "_can_fork", lambda: False)  # a new interpreter, spawned
    monkeypatch.setattr(commands, "_launch_command", lambda *a: failing)
    rc = main(["runs", "resume", str(run_id), "--detach", "-P", str(project.path)])
    err = capsys.readouterr().err
    assert rc == 2 and "did not start" in err and "no engine here" in err, err
    assert len(err.strip().splitlines()) == 1
    assert run_status(project, run_id) == "new"


def test_detach_reports_a_forked_engine_that_failed_to_start(project, monkeypatch, capsys):
    import emforge.cli._launch as launch
    from emforge.errors import ProjectError

    def refuse(*_a, **_k):
        raise ProjectError("no engine here")

    run_id = _sleep_run(project, 0, 1)
    monkeypatch.setattr(commands, "_can_fork", lambda: True)
    monkeypatch.setattr(launch, "execute_run", refuse)  # the forked child inherits it
    rc = main(["runs", "resume", str(run_id), "--detach", "-P", str(project.path)])
    err = capsys.readouterr().err
    assert rc == 2 and "did not start" in err and "no engine here" in err, err
    assert len(err.strip().splitlines()) == 1
    assert run_status(project, run_id) == "new"


def test_detach_forks_the_engine_when_it_can(project, capsys):
    """A single-threaded command forks itself into the engine (no new interpreter): the run
    finishes, claimed by the forked process, whose log holds no error."""
    import threading

    assert threading.active_count() == 1 and commands._can_fork()
    rc = main(["run", "example.sleep", "--detach", "-P", str(project.path), "-p", "seconds=0"])
    out = capsys.readouterr().out
    assert rc == 0 and "started in the background" in out, out
    pid = int(re.search(r"process (\d+)", out).group(1))
    wait_for(lambda: run_status(project, 1) == "finished", 30, "the forked engine", 0.02)
    assert run_row(project, 1)["pid"] == pid
    os.waitpid(pid, 0)  # reap it: it is this process's child
    log = (project.path / run_row(project, 1)["workdir"] / "logs" / "stdout.log").read_text()
    assert "error" not in log.lower(), log
