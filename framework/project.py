"""A project: a folder with ``project.sqlite`` and per-run working folders.

>>> proj = Project.init("~/projects/hemoglobin")          # doctest: +SKIP
>>> parts = proj.create_set("SetOfParticles", {"rot": rot, "tilt": tilt, ...})  # doctest: +SKIP
>>> parts.read("rot", "defocus_u")                          # doctest: +SKIP

Layout::

    <project>/project.sqlite
    <project>/Runs/<id>_<protocol>/{extra,tmp,logs}
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, insert, inspect, select, update

from . import __version__, db
from . import paths as _paths
from . import sets as _sets
from .errors import EmforgeError, NotFoundError, ParamError, ProjectError
from .objects import ITEM_TYPES, OBJECT_TYPES, SET_KINDS, DataObject, make_items
from .versions import file_version

__all__ = ["Project", "EMSet", "file_version", "DB_NAME"]

DB_NAME = "project.sqlite"


def _stored_schema_version(dbfile: Path) -> str | None:
    """The schema version recorded in ``dbfile``, read-only: a foreign file is left untouched."""
    query = "SELECT value FROM meta WHERE key = 'schema_version'"
    try:
        try:
            con = sqlite3.connect(f"{dbfile.as_uri()}?mode=ro", uri=True)
            try:
                row = con.execute(query).fetchone()
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            if not db.full_disk_error(exc):
                raise
            # a full disk: no room for the WAL index file; keep it in memory (see db.read)
            con = sqlite3.connect(dbfile)
            try:
                con.execute("PRAGMA locking_mode=EXCLUSIVE")
                row = con.execute(query).fetchone()
            finally:
                con.close()
    except sqlite3.Error as exc:  # corrupt file or foreign SQLite database
        raise ProjectError(f"{dbfile}: cannot read the project database ({exc})") from None
    return None if row is None else str(row[0])


class Project:
    """An emforge project folder and its database."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self.engine = engine

    # -- creation / opening -------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike, *, exist_ok: bool = False) -> Project:
        """Create a project folder (or open it when ``exist_ok`` and it exists)."""
        root = Path(path).expanduser().resolve()
        dbfile = root / DB_NAME
        if dbfile.exists():
            if not exist_ok:
                raise ProjectError(f"{root}: a project already exists here")
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        (root / "Runs").mkdir(exist_ok=True)
        engine = db.make_engine(dbfile)
        # tables and meta in one write transaction: of two `project init` of one path at
        # once, one creates the project and the other finds it (no half-made database)
        with db.write(engine) as conn:
            db.metadata.create_all(conn)
            made = conn.execute(
                select(db.meta.c.value).where(db.meta.c.key == "schema_version")
            ).scalar()
            if made is None:
                conn.execute(
                    insert(db.meta),
                    [
                        {"key": "schema_version", "value": str(db.SCHEMA_VERSION)},
                        {"key": "created", "value": repr(time.time())},
                        {"key": "emforge_version", "value": __version__},
                    ],
                )
        if made is not None:
            if not exist_ok:
                raise ProjectError(f"{root}: a project already exists here")
            return cls.open(root)
        return cls(root, engine)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Project:
        """Open an existing project; a clear error if ``path`` is not one."""
        root = Path(path).expanduser().resolve()
        dbfile = root / DB_NAME
        if not dbfile.is_file():
            raise ProjectError(
                f"{root}: not an emforge project (no {DB_NAME}); create it with 'emforge project init'"
            )
        version = _stored_schema_version(dbfile)
        if version is None or not version.isdigit() or int(version) > db.SCHEMA_VERSION:
            raise ProjectError(
                f"{dbfile}: schema version {version} is not supported by emforge {__version__}"
            )
        engine = db.make_engine(dbfile)
        db.upgrade(engine)
        return cls(root, engine)

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    def run_dir(self, run_id: int, protocol_id: str) -> Path:
        """The working folder of a run, created with ``extra/``, ``tmp/`` and ``logs/``."""
        d = self.path / "Runs" / f"{run_id:06d}_{protocol_id.replace('.', '_')}"
        for sub in ("extra", "tmp", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        return d

    def run(
        self,
        protocol: str | type,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        label: str = "",
        workers: int | None = None,
        executor: str = "local",
        scheduler: str | None = None,
        registry: Any = None,
    ) -> int:
        """Create and execute a run in this process; returns the run id.

        ``inputs`` map input names to object ids or ``"RUN.output"`` references. Raises
        :class:`~emforge.errors.ValidationError` (nothing recorded) when validation fails, and
        :class:`~emforge.errors.EmforgeError` when the run fails.
        """
        # the one edge between the two: the project calls the engine here (lazily, so that
        # opening a project does not load it); the engine never imports this module
        from .engine import create_run, execute_run
        from .engine.executors import check_scheduler

        check_scheduler(executor, scheduler)  # an unreachable scheduler records nothing
        run_id = create_run(
            self, protocol, dict(params or {}), dict(inputs or {}), label=label, registry=registry
        )
        status = execute_run(
            self, run_id, workers=workers, executor=executor, address=scheduler, registry=registry
        )
        if status != "finished":
            from .engine.runs import run_row

            raise EmforgeError(f"run {run_id} {status}: {run_row(self, run_id)['error']}")
        return run_id

    def outputs(self, run_id: int) -> dict[str, Any]:
        """The outputs of a run by name, as typed objects or set handles."""
        with db.read(self.engine) as conn:
            rows = conn.execute(
                select(db.objects).where(db.objects.c.run_id == run_id).order_by(db.objects.c.id)
            )
            return {r["name"]: self.materialise(dict(r)) for r in rows.mappings()}

    def materialise(self, row: Mapping[str, Any]) -> DataObject | EMSet:
        """The typed object (or set handle) of an ``objects`` row, its file paths absolute."""
        attrs = json.loads(row["attrs_json"])
        if row["kind"] in SET_KINDS:
            return EMSet(self, row["id"], kind=row["kind"], attrs=attrs)
        return _paths.resolved_object(OBJECT_TYPES[row["kind"]].from_attrs(attrs), self.path)

    def tables(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    # -- objects ------------------------------------------------------------
    def add(
        self,
        obj: DataObject,
        *,
        run_id: int | None = None,
        name: str = "",
        label: str = "",
        conn: Connection | None = None,
    ) -> int:
        """Register a single typed object; returns its id. Its data version hashes its files."""
        attrs_json, version = self.stored_attrs(obj)
        row = dict(
            run_id=run_id,
            name=name,
            kind=obj.kind,
            label=label,
            attrs_json=attrs_json,
            data_version=version,
            count=1,
            created=time.time(),
        )
        if conn is not None:
            return conn.execute(insert(db.objects).values(**row)).inserted_primary_key[0]
        with db.write(self.engine) as c:
            return c.execute(insert(db.objects).values(**row)).inserted_primary_key[0]

    def stored_attrs(self, obj: DataObject) -> tuple[str, str]:
        """The ``attrs_json`` recording ``obj`` (file paths inside the project relative to its
        root, see :mod:`emforge.paths`) and the object's data version."""
        stored = _paths.stored_object(obj, self.path)
        return json.dumps(stored.to_attrs()), self._version_of_stored(stored)

    def row_version(self, row: Mapping[str, Any]) -> str:
        """The data version an ``objects`` row of a single object has now: its recorded
        attributes and the current content of its files (compare with ``data_version``)."""
        stored = OBJECT_TYPES[row["kind"]].from_attrs(json.loads(row["attrs_json"]))
        return self._version_of_stored(stored)

    def _version_of_stored(self, stored: DataObject) -> str:
        # the attributes as recorded (so a copied or moved project keeps its versions, and
        # one recorded with absolute paths keeps its own), the files where they are now
        h = hashlib.blake2b(json.dumps(stored.to_attrs(), sort_keys=True).encode(), digest_size=16)
        h.update(file_version(_paths.resolved_object(stored, self.path).files()).encode())
        return h.hexdigest()

    def create_set(
        self,
        kind: str,
        columns: Mapping[str, Any],
        *,
        run_id: int | None = None,
        name: str = "",
        label: str = "",
        attrs: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> EMSet:
        """Create a set of ``kind`` from column arrays in one transaction (all or nothing)."""
        if kind not in SET_KINDS:
            raise ParamError("kind", f"unknown set kind {kind!r}; known: {list(SET_KINDS)}")
        n, cols = _sets.normalise_columns(kind, columns)
        cols = _paths.stored_columns(cols, self.path)
        if "id" not in cols:
            cols = {"id": np.arange(1, n + 1, dtype=np.int64), **cols}
        elif len(np.unique(cols["id"])) != n:
            raise ParamError("id", "item ids must be unique")

        def _do(c: Connection) -> int:
            oid = c.execute(
                insert(db.objects).values(
                    run_id=run_id,
                    name=name,
                    kind=kind,
                    label=label,
                    attrs_json=json.dumps(dict(attrs or {})),
                    count=n,
                    created=time.time(),
                )
            ).inserted_primary_key[0]
            version = _sets.write_columns(c, oid, cols)
            _sets.set_count(c, oid, n, version)
            return oid

        if conn is not None:
            return EMSet(self, _do(conn), kind=kind, attrs=dict(attrs or {}))
        with db.write(self.engine) as c:
            oid = _do(c)
        return EMSet(self, oid, kind=kind, attrs=dict(attrs or {}))

    def get(self, object_id: int) -> DataObject | EMSet:
        """The typed object (or set handle) with this id."""
        return self.materialise(self.object_row(object_id))

    def object_row(self, object_id: int) -> dict[str, Any]:
        with db.read(self.engine) as conn:
            row = (
                conn.execute(select(db.objects).where(db.objects.c.id == int(object_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"object {object_id}: no such object in {self.path}")
        return dict(row)

    def list_objects(self, run_id: int | None = None) -> list[dict[str, Any]]:
        q = select(db.objects).order_by(db.objects.c.id)
        if run_id is not None:
            q = q.where(db.objects.c.run_id == run_id)
        with db.read(self.engine) as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def delete_object(self, object_id: int) -> None:
        """Delete an object (and a set's items); refused while a run uses it as input."""
        with db.write(self.engine) as conn:
            users = (
                conn.execute(
                    select(db.edges.c.run_id).where(
                        (db.edges.c.object_id == object_id) & (db.edges.c.direction == "in")
                    )
                )
                .scalars()
                .all()
            )
            if users:
                raise ProjectError(
                    f"object {object_id}: used as input by run(s) {sorted(set(users))}"
                )
            conn.execute(delete(db.edges).where(db.edges.c.object_id == object_id))
            conn.execute(delete(db.set_columns).where(db.set_columns.c.object_id == object_id))
            conn.execute(delete(db.objects).where(db.objects.c.id == object_id))


class EMSet:
    """Handle on a set stored in a project: bulk column access, items, copies."""

    def __init__(
        self,
        project: Project,
        object_id: int,
        *,
        kind: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.project = project
        self.id = int(object_id)
        if kind is None:
            row = project.object_row(self.id)
            kind, attrs = row["kind"], json.loads(row["attrs_json"])
        if kind not in SET_KINDS:
            raise ParamError("object", f"object {self.id} is a {kind}, not a set")
        self.kind: str = kind
        self.attrs: dict[str, Any] = dict(attrs or {})

    def __repr__(self) -> str:
        return f"<{self.kind} id={self.id} n={len(self)}>"

    def __len__(self) -> int:
        return int(self.project.object_row(self.id)["count"])

    count = property(__len__)

    @property
    def data_version(self) -> str:
        return self.project.object_row(self.id)["data_version"]

    def column_names(self) -> list[str]:
        with db.read(self.project.engine) as conn:
            return _sets.column_names(conn, self.id)

    def read(self, *names: str) -> dict[str, np.ndarray]:
        """Columns as numpy arrays (all of them when no name is given)."""
        with db.read(self.project.engine) as conn:
            return _sets.read_columns(conn, self.id, names or None, root=self.project.path)

    def select(
        self,
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        where: Sequence[tuple[str, str, Any]] = (),
        columns: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Columns of the items with these ids and/or satisfying ``where`` conditions."""
        names = (
            None
            if columns is None
            else list(dict.fromkeys(["id", *columns, *(w[0] for w in where)]))
        )
        cols = self.read(*names) if names else self.read()
        keep = _sets.filter_mask(cols, where)
        if ids is not None:
            keep &= np.isin(cols["id"], np.asarray(ids, dtype=np.int64))
        return {k: v[keep] for k, v in cols.items() if columns is None or k in columns or k == "id"}

    def __iter__(self) -> Iterator[Any]:
        cols = self.read()
        yield from make_items(self.kind, cols)

    @property
    def item_type(self) -> type:
        return ITEM_TYPES[self.kind]

    def append(self, columns: Mapping[str, Any]) -> None:
        """Append items in bulk (one transaction); ids continue after the current maximum."""
        n, cols = _sets.normalise_columns(self.kind, columns)
        cols = _paths.stored_columns(cols, self.project.path)
        with db.write(self.project.engine) as conn:
            row = conn.execute(
                select(db.objects.c.count, db.objects.c.data_version).where(
                    db.objects.c.id == self.id
                )
            ).first()
            if "id" not in cols:
                start = int(_sets.read_columns(conn, self.id, ["id"])["id"].max(initial=0)) + 1
                cols = {"id": np.arange(start, start + n, dtype=np.int64), **cols}
            order = _sets.column_names(conn, self.id)
            cols = {k: cols[k] for k in order} if set(order) == set(cols) else cols
            version = _sets.append_columns(conn, self.id, cols, row.data_version)
            _sets.set_count(conn, self.id, row.count + n, version)

    def copy(
        self,
        changes: Mapping[str, Any] | None = None,
        *,
        ids: Sequence[int] | None = None,
        where: Sequence[tuple[str, str, Any]] = (),
        run_id: int | None = None,
        name: str = "",
        label: str = "",
        attrs: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> EMSet:
        """A new set with the same items (or a selection) and some columns replaced.

        Without a selection, unchanged columns are copied chunk by chunk inside SQLite; every
        column, extra columns included, survives the copy.
        """
        changes = dict(changes or {})
        new_attrs = {**self.attrs, **(attrs or {})}
        if ids is not None or where:
            cols = self.select(ids=ids, where=where)
            cols.update({k: np.asarray(v) for k, v in changes.items()})
            return self.project.create_set(
                self.kind, cols, run_id=run_id, name=name, label=label, attrs=new_attrs, conn=conn
            )
        n = len(self)
        _, changed = _sets.normalise_columns(self.kind, changes, fill_defaults=False)
        changed = _paths.stored_columns(changed, self.project.path)
        for k, v in changed.items():
            if len(v) != n:
                raise ParamError(k, f"has {len(v)} values for a set of {n} items")

        def _do(c: Connection) -> int:
            src_version = c.execute(
                select(db.objects.c.data_version).where(db.objects.c.id == self.id)
            ).scalar()
            oid = c.execute(
                insert(db.objects).values(
                    run_id=run_id,
                    name=name,
                    kind=self.kind,
                    label=label,
                    attrs_json=json.dumps(new_attrs),
                    count=n,
                    created=time.time(),
                )
            ).inserted_primary_key[0]
            _sets.copy_columns(c, self.id, oid, skip=changed)
            h = hashlib.blake2b(src_version.encode(), digest_size=16)
            h.update(_sets.write_columns(c, oid, changed).encode())
            _sets.set_count(c, oid, n, h.hexdigest())
            return oid

        if conn is not None:
            return EMSet(self.project, _do(conn), kind=self.kind, attrs=new_attrs)
        with db.write(self.project.engine) as c:
            oid = _do(c)
        return EMSet(self.project, oid, kind=self.kind, attrs=new_attrs)

    def delete(self) -> None:
        self.project.delete_object(self.id)

    def set_attrs(self, **attrs: Any) -> None:
        self.attrs.update(attrs)
        with db.write(self.project.engine) as conn:
            conn.execute(
                update(db.objects)
                .where(db.objects.c.id == self.id)
                .values(attrs_json=json.dumps(self.attrs))
            )
