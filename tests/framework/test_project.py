"""The project folder and its database: creation, opening, settings, run folders.

Settings are checked through plain ``sqlite3`` on the file (not through emforge), so a
wrong setting cannot hide behind the code that made it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from emforge import db
from emforge.errors import ProjectError
from emforge.objects import FSC, Mask2D, Tomogram, Volume, VolumeMask
from emforge.project import DB_NAME, Project

TABLES = {"meta", "runs", "steps", "objects", "edges", "set_columns"}


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def test_init_creates_database_and_runs_folder(tmp_path: Path) -> None:
    proj = Project.init(tmp_path / "new" / "proj")
    root = (tmp_path / "new" / "proj").resolve()
    assert proj.path == root
    assert (root / DB_NAME).is_file() and proj.db_path == root / DB_NAME
    assert (root / "Runs").is_dir()
    with sqlite3.connect(root / DB_NAME) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = dict(con.execute("SELECT key, value FROM meta"))
    assert TABLES <= tables
    assert meta["schema_version"] == str(db.SCHEMA_VERSION) and int(meta["schema_version"]) >= 1
    assert abs(float(meta["created"]) - time.time()) < 300
    assert meta["emforge_version"]
    assert TABLES <= set(proj.tables())


def test_connections_have_foreign_keys_busy_timeout_and_wal(project: Project) -> None:
    with project.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS >= 5_000
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    # and foreign keys are enforced: set items of an object that does not exist are refused
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        with db.write(project.engine) as conn:
            conn.execute(
                insert(db.set_columns).values(
                    object_id=12345, column="id", chunk=0, dtype="<i8", n=0, data=b""
                )
            )
    with sqlite3.connect(project.db_path) as con:
        assert con.execute("SELECT COUNT(*) FROM set_columns").fetchone()[0] == 0


def test_open_existing_project(project: Project) -> None:
    s = project.create_set("SetOfParticles", {"rot": [1.0, 2.0]})
    again = Project.open(project.path)
    assert again.path == project.path
    assert [o["id"] for o in again.list_objects()] == [s.id]


def test_open_adds_what_an_older_project_lacks(project: Project) -> None:
    """A project made before ``step_files`` and ``runs.pid_start`` existed gains both on
    opening (and the engine can record a step's files in it)."""
    con = sqlite3.connect(project.db_path)
    con.execute("DROP TABLE step_files")
    con.execute("ALTER TABLE runs DROP COLUMN pid_start")
    con.commit()
    con.close()
    Project.open(project.path)
    con = sqlite3.connect(project.db_path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    finally:
        con.close()
    assert "step_files" in tables and "pid_start" in columns


def test_open_a_folder_that_is_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as exc:
        Project.open(tmp_path)
    text = one_line(exc)
    assert str(tmp_path.resolve()) in text and "not an emforge project" in text
    assert not (tmp_path / DB_NAME).exists()  # opening created nothing
    with pytest.raises(ProjectError, match="not an emforge project"):
        Project.open(tmp_path / "does" / "not" / "exist")


def test_open_a_garbage_file_named_project_sqlite(tmp_path: Path) -> None:
    garbage = b"this is not an SQLite database\n" * 200
    (tmp_path / DB_NAME).write_bytes(garbage)
    with pytest.raises(ProjectError) as exc:
        Project.open(tmp_path)
    text = one_line(exc)
    assert str(tmp_path / DB_NAME) in text and "cannot read the project database" in text
    assert (tmp_path / DB_NAME).read_bytes() == garbage


def test_open_a_foreign_sqlite_database_leaves_it_untouched(tmp_path: Path) -> None:
    dbfile = tmp_path / DB_NAME
    with sqlite3.connect(dbfile) as con:
        con.execute("CREATE TABLE notes (x TEXT)")
    before = dbfile.read_bytes()
    with pytest.raises(ProjectError) as exc:
        Project.open(tmp_path)
    assert str(dbfile) in one_line(exc)
    assert dbfile.read_bytes() == before
    with sqlite3.connect(dbfile) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("version", [str(db.SCHEMA_VERSION + 1), "abc"])
def test_open_unsupported_schema_version(project: Project, version: str) -> None:
    with sqlite3.connect(project.db_path) as con:
        con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    with pytest.raises(ProjectError, match=f"schema version {version} is not supported") as exc:
        Project.open(project.path)
    one_line(exc)


def test_init_twice_is_an_error(project: Project) -> None:
    with pytest.raises(ProjectError, match="a project already exists here") as exc:
        Project.init(project.path)
    assert str(project.path) in one_line(exc)
    assert Project.init(project.path, exist_ok=True).path == project.path
    with sqlite3.connect(project.db_path) as con:
        assert (
            con.execute("SELECT COUNT(*) FROM meta WHERE key='schema_version'").fetchone()[0] == 1
        )


def test_init_on_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ProjectError, match="is not a folder") as exc:
        Project.init(tmp_path / "afile")
    one_line(exc)


def test_run_dir_creates_extra_tmp_logs(project: Project) -> None:
    d = project.run_dir(7, "import.volume")
    assert d == project.path / "Runs" / "000007_import_volume"
    assert sorted(p.name for p in d.iterdir()) == ["extra", "logs", "tmp"]
    assert all((d / sub).is_dir() for sub in ("extra", "tmp", "logs"))
    (d / "extra" / "keep.txt").write_text("kept")
    assert project.run_dir(7, "import.volume") == d  # idempotent, keeps what is there
    assert (d / "extra" / "keep.txt").read_text() == "kept"


def test_delete_refused_while_a_run_uses_the_object(project: Project) -> None:
    s = project.create_set("SetOfParticles", {"rot": [1.0, 2.0, 3.0]})
    with db.write(project.engine) as conn:
        run_id = conn.execute(
            insert(db.runs).values(
                protocol_id="x.y",
                protocol_version="1",
                plugin="x",
                plugin_version="1",
                emforge_version="0",
                params_json="{}",
                status="finished",
                created=time.time(),
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(db.edges).values(run_id=run_id, object_id=s.id, direction="in", name="particles")
        )
    with pytest.raises(
        ProjectError, match=rf"object {s.id}: used as input by run\(s\) \[{run_id}\]"
    ):
        s.delete()
    assert len(s) == 3 and list(s.read("rot")["rot"]) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "obj",
    [
        Volume(
            "/maps/a.mrc",
            1.05,
            (100, 100, 100),
            (1.0, 2.0, 3.0),
            half1="/maps/h1.mrc",
            half2="/maps/h2.mrc",
            voxel_size=(1.05, 1.05, 1.05),
        ),
        VolumeMask("/maps/m.mrc", 1.05, (100, 91, 91), soft=True, voxel_size=(1.05, 1.0, 1.1)),
        Mask2D("/maps/m2.mrc", 2.0, (64, 64), soft=False),
        Tomogram("/tomo/t.mrc", 10.52, (50, 512, 512), tilt_series="ts_017"),
        FSC((0.0, 0.1, 0.2), (1.0, 0.5, 0.01), {"0.143": 4.8}, label="gold"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_typed_objects_round_trip_through_the_project(project: Project, obj: object) -> None:
    oid = project.add(obj, name="x")
    back = project.get(oid)
    assert type(back) is type(obj) and back == obj  # tuples come back as tuples, not lists
    row = project.object_row(oid)
    assert row["kind"] == type(obj).kind and row["count"] == 1 and row["data_version"]
