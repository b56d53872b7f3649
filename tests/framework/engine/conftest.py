"""Fixtures of the engine tests: the isolated toy registry and the child-run script.

``project`` and ``data_dir`` come from ``tests/conftest.py``. The test protocols are registered
as ``toyprotocols:<Class>`` (child processes import them the same way), so this folder is put
on ``sys.path``; pytest's importlib import mode does not do it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from enginetest_helpers import write_child  # noqa: E402
from toyprotocols import make_registry  # noqa: E402


@pytest.fixture(scope="session")
def registry():
    """Isolated registry: the toy protocols, the import protocols and the example plugin."""
    return make_registry()


@pytest.fixture
def child_script(tmp_path) -> list[str]:
    """argv prefix of a child python that executes ``PROJECT RUN`` with the toy registry."""
    return write_child(tmp_path)
