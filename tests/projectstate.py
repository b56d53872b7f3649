"""What a test compares to show that a refused command left a project unchanged."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def db_dump(db: str | os.PathLike) -> list[str]:
    """Every statement of the SQLite file's dump (``iterdump``): schema and rows."""
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def runs_listing(project_path: str | os.PathLike) -> list[str]:
    """Every path below the project's ``Runs/`` folder, relative to the project, sorted."""
    root = Path(project_path)
    return sorted(str(p.relative_to(root)) for p in (root / "Runs").rglob("*"))
