"""``emforge plugin new``: the scaffold renders an installable plugin whose protocol works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emforge.engine.protocol import Protocol
from emforge.errors import ParamError
from emforge.plugins import Registry
from emforge.scaffold import check_plugin_name, create_plugin, render, scaffold_root

EXPECTED = [
    "README.md",
    "pyproject.toml",
    "emforge_zorp/__init__.py",
    "emforge_zorp/protocols.py",
    "emforge_zorp/py.typed",
    "tests/test_zorp_scale.py",
]


@pytest.fixture
def plugin_dir(tmp_path):
    folder = create_plugin("zorp", tmp_path)
    yield folder
    for name in [m for m in sys.modules if m == "emforge_zorp" or m.startswith("emforge_zorp.")]:
        del sys.modules[name]


def test_scaffold_is_package_data():
    root = scaffold_root()
    assert root.is_dir()
    assert (root / "pyproject.toml.tmpl").is_file()


def test_files_are_rendered(plugin_dir, tmp_path):
    assert plugin_dir == tmp_path / "emforge-zorp"
    found = sorted(str(p.relative_to(plugin_dir)) for p in plugin_dir.rglob("*") if p.is_file())
    assert found == sorted(EXPECTED)
    assert [p.name for p in tmp_path.iterdir()] == ["emforge-zorp"]  # no staging left
    for path in plugin_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "{{" not in text and "}}" not in text, path
            if path.suffix == ".py":
                compile(text, str(path), "exec")
    pyproject = (plugin_dir / "pyproject.toml").read_text()
    assert '[project.entry-points."emforge.plugins"]' in pyproject
    assert 'zorp = "emforge_zorp:manifest"' in pyproject
    assert 'name = "emforge-zorp"' in pyproject


def test_generated_manifest_loads_its_protocol(plugin_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_dir))
    import emforge_zorp

    assert "emforge_zorp.protocols" not in sys.modules  # the manifest module is light
    registry = Registry.from_manifests([emforge_zorp.manifest], distribution="emforge-zorp")
    assert list(registry.protocols) == ["zorp.scale"] and not registry.problems
    cls = registry.load("zorp.scale")
    assert issubclass(cls, Protocol) and cls.id == "zorp.scale"
    assert [row.ok for row in registry.doctor()] == [True]


def test_generated_tests_pass_and_code_is_clean(plugin_dir):
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin_dir / "tests")],
        cwd=plugin_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.exists():
        lint = subprocess.run(
            [
                str(ruff),
                "check",
                "--isolated",
                "--select",
                "E,F,W,I,UP,B",
                "--line-length",
                "100",
                ".",
            ],
            cwd=plugin_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        fmt = subprocess.run(
            [str(ruff), "format", "--check", "--isolated", "--line-length", "100", "."],
            cwd=plugin_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("Zorp", "lowercase Python identifier"),
        ("1zorp", "lowercase Python identifier"),
        ("my-plug", "lowercase Python identifier"),
        ("", "lowercase Python identifier"),
        ("_zorp", "lowercase Python identifier"),
        ("masks", "built-in"),
        ("import", "built-in"),
        ("analysis", "built-in"),
    ],
)
def test_bad_names_are_param_errors(name, match, tmp_path):
    with pytest.raises(ParamError, match=f"^name: .*{match}"):
        create_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_installed_plugin_name_is_refused():
    pytest.importorskip("emforge_example", reason="the example plugin is not installed")
    with pytest.raises(
        ParamError, match="name: 'example' is already the name of an installed plugin"
    ):
        check_plugin_name("example")


def test_existing_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "emforge-zorp"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ParamError, match="name: .*emforge-zorp already exists"):
        create_plugin("zorp", tmp_path)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_render_replaces_and_rejects_unknown_placeholders():
    assert render("a {{name}} b {{ package }}", {"name": "x", "package": "y"}) == "a x b y"
    with pytest.raises(KeyError):
        render("{{nope}}", {"name": "x"})
