"""The engine and the project import in one direction: ``emforge.engine`` never imports
``emforge.project`` (annotations name ``Project`` under ``TYPE_CHECKING`` only); the project
calls the engine only from ``Project.run``, lazily, so opening a project, registering objects
and reading a run's outputs load no engine module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import emforge.engine

ENGINE = Path(emforge.engine.__file__).parent


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import that runs (not those under ``if TYPE_CHECKING:``)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            found.append((node.lineno, f"{dots}{node.module or ''}"))
            found.extend((node.lineno, f"{dots}{node.module or ''}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _is_project(name: str) -> bool:
    return name in ("..project", "emforge.project", "...project") or name.startswith(
        ("..project.", "emforge.project.")
    )


def test_no_engine_module_imports_the_project_module():
    offenders = []
    for path in sorted(ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{path.name}:{line} {name}"
            for line, name in _runtime_imports(tree)
            if _is_project(name)
        ]
    # ``from .. import project`` would name it as an alias: caught by the second form above
    assert offenders == []


def test_the_checker_sees_imports_inside_functions_and_skips_type_checking():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..project import Project\n"
        "def f():\n    from ..project import EMSet\n"
        "def g():\n    from .. import project\n"
    )
    names = [n for _, n in _runtime_imports(tree) if _is_project(n)]
    assert names == ["..project", "..project.EMSet", "...project"]


ENGINE_CHILD = """
import sys
import emforge.engine, emforge.engine.execute, emforge.engine.listing, emforge.engine.staleness
import emforge.engine.templates, emforge.engine.provenance, emforge.engine.runs
print("emforge.project" in sys.modules)
"""

PROJECT_CHILD = """
import sys
import numpy as np
from emforge.project import Project
from emforge.objects import Volume
proj = Project.init(sys.argv[1])
(proj.path / "v.mrc").write_bytes(b"x" * 10)
oid = proj.add(Volume(str(proj.path / "v.mrc"), 1.0, (1, 1, 10)), name="v")
s = proj.create_set("SetOfParticles", {"rot": np.zeros(3)})
assert proj.get(oid).path.endswith("v.mrc") and len(proj.get(s.id)) == 3
assert proj.outputs(0) == {} and proj.materialise(proj.object_row(s.id)).id == s.id
print(sorted(m for m in sys.modules if m.startswith("emforge.engine")))
"""


def _child(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_engine_loads_without_the_project_module():
    assert _child(ENGINE_CHILD) == "False"


def test_a_project_is_used_without_loading_the_engine(tmp_path):
    assert _child(PROJECT_CHILD, str(tmp_path / "p")) == "[]"
