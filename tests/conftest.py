"""Shared fixtures: the real test data folder and a fresh project."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# shared test helpers (projectstate.py) import as top-level modules, as pytest's importlib
# import mode does not put this folder on the path
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from emforge.project import Project

#: ``../shared/data`` next to the repository (see its README): real maps and particles.
DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real test data folder; the test is skipped (one line) when it is missing."""
    path = DATA_DIR.resolve()
    if not path.is_dir():
        pytest.skip(
            f"real test data not found at {path} (expected ../shared/data next to the repository)"
        )
    return path


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A new, empty project in ``tmp_path / "project"``."""
    return Project.init(tmp_path / "project")
