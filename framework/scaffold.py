"""``emforge plugin new NAME``: create an installable plugin package from the scaffold.

The scaffold lives in ``templates/scaffold`` (package data of :mod:`emforge.templates`).
Every file ending in ``.tmpl`` is rendered (the suffix dropped) by replacing placeholders
written ``{{name}}``; other files are copied as they are; placeholders in file and folder
names are replaced too. Placeholders:

========================= ==================================================
``{{name}}``              the plugin name (``myplug``), prefix of its protocol ids
``{{package}}``           the import package (``emforge_myplug``)
``{{distribution}}``      the distribution name (``emforge-myplug``)
``{{emforge_requirement}}`` the emforge requirement (``emforge>=0.1``)
========================= ==================================================

An unknown placeholder is a bug in the scaffold and raises ``KeyError``.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import uuid
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from .errors import ParamError
from .plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP

__all__ = ["create_plugin", "check_plugin_name", "scaffold_root", "render"]

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SKIP = {"__pycache__", ".DS_Store"}


def scaffold_root() -> Traversable:
    """The scaffold folder shipped in :mod:`emforge.templates`."""
    return files("emforge.templates") / "scaffold"


def check_plugin_name(name: str) -> str:
    """Return ``name`` if it can name a new plugin; raise :class:`ParamError` otherwise.

    A plugin name is a lowercase Python identifier (letters, digits, ``_``; starting with a
    letter) that is neither a built-in plugin nor the name of an installed plugin.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ParamError(
            "name",
            f"{name!r} must be a lowercase Python identifier (a-z, 0-9, _), starting with a letter",
        )
    if name in BUILTIN_PLUGINS:
        raise ParamError("name", f"{name!r} is a built-in emforge plugin; choose another name")
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            dist = getattr(ep, "dist", None)
            owner = f" (distribution {dist.name!r})" if dist is not None else ""
            raise ParamError("name", f"{name!r} is already the name of an installed plugin{owner}")
    return name


def render(text: str, values: dict[str, str]) -> str:
    """Replace every ``{{key}}`` in ``text`` by ``values[key]`` (KeyError when unknown)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _values(name: str) -> dict[str, str]:
    try:
        version = md.version("emforge")
    except md.PackageNotFoundError:  # pragma: no cover - source tree without install
        version = "0.1"
    major_minor = ".".join(re.findall(r"\d+", version)[:2]) or "0.1"
    return {
        "name": name,
        "package": f"emforge_{name}",
        "distribution": f"emforge-{name}",
        "emforge_requirement": f"emforge>={major_minor}",
    }


def _copy_tree(source: Traversable, target: Path, values: dict[str, str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.name in _SKIP or item.name.endswith(".pyc"):
            continue
        name = render(item.name, values)
        if item.is_dir():
            _copy_tree(item, target / name, values)
        elif name.endswith(".tmpl"):
            text = render(item.read_text(encoding="utf-8"), values)
            (target / name[: -len(".tmpl")]).write_text(text, encoding="utf-8")
        else:
            (target / name).write_bytes(item.read_bytes())


def create_plugin(name: str, dest: str | Path) -> Path:
    """Create ``dest/emforge-<name>/``: an installable plugin with one working protocol.

    The package holds ``pyproject.toml`` (declaring the ``emforge.plugins`` entry point),
    ``emforge_<name>/__init__.py`` (the manifest), ``emforge_<name>/protocols.py`` (the
    protocol ``<name>.scale``: multiply a Volume by a factor), its tests and a README.

    Parameters
    ----------
    name : str
        Plugin name: a lowercase identifier, not a built-in or installed plugin's name.
    dest : path
        Folder in which ``emforge-<name>/`` is created (made if missing).

    Returns
    -------
    pathlib.Path
        The new plugin folder.

    Raises
    ------
    ParamError
        ``name`` is invalid or taken, or the folder already exists (never overwritten).
    """
    check_plugin_name(name)
    values = _values(name)
    dest = Path(dest).expanduser()
    target = dest / values["distribution"]
    if target.exists():
        raise ParamError("name", f"{target} already exists; remove it or choose another name")
    dest.mkdir(parents=True, exist_ok=True)
    # render next to the target, then rename: a failure never leaves a half-made plugin
    staging = dest / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        staging.mkdir()
        _copy_tree(scaffold_root(), staging, values)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
