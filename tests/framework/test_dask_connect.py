"""Issue 15, defects 1-2: the scheduler address reaches every entry point, and an unreachable
scheduler is one line, exit 2, with the database unchanged."""

from __future__ import annotations

import socket
import sqlite3

import pytest

pytest.importorskip("distributed")

from emforge.cli import main  # noqa: E402
from emforge.engine.executors import check_scheduler, scheduler_address  # noqa: E402
from emforge.errors import ParamError  # noqa: E402
from emforge.project import Project  # noqa: E402


def _dead_address() -> str:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def _db_rows(path) -> dict[str, int]:
    con = sqlite3.connect(path / "project.sqlite")
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def test_dask_scheduler_address_env_is_honoured(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    import dask

    dask.config.refresh()
    try:
        assert scheduler_address(None) == "tcp://10.0.0.1:8786"
        assert scheduler_address("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()
    assert scheduler_address(None) is None


def test_dask_scheduler_without_dask_executor_is_refused():
    with pytest.raises(ParamError, match="--scheduler.*needs --executor dask"):
        check_scheduler("local", "tcp://127.0.0.1:1")


def test_dask_unreachable_scheduler_cli_exit2_db_unchanged(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMFORGE_DASK_TIMEOUT", "1")
    proj = tmp_path / "p"
    assert main(["project", "init", str(proj)]) == 0
    before = _db_rows(proj)
    addr = _dead_address()
    capsys.readouterr()
    code = main(
        [
            "run",
            "import.volume",
            "--project",
            str(proj),
            "-p",
            "path=x.mrc",
            "-p",
            "sampling=1.0",
            "--executor",
            "dask",
            "--scheduler",
            addr,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and addr in lines[0], err
    assert _db_rows(proj) == before


def test_dask_unreachable_scheduler_project_run_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EMFORGE_DASK_TIMEOUT", "1")
    proj = Project.init(tmp_path / "p")
    before = _db_rows(tmp_path / "p")
    addr = _dead_address()
    with pytest.raises(ParamError, match=addr.replace(".", r"\.")):
        proj.run(
            "import.volume",
            params={"path": "x.mrc", "sampling": 1.0},
            executor="dask",
            scheduler=addr,
        )
    assert _db_rows(tmp_path / "p") == before
