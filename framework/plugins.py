"""The plugin registry: plugins are discovered, not imported.

A plugin is an installed distribution that declares an entry point in the group
``emforge.plugins``; the entry point's *name* is the plugin name and its value loads a
:class:`PluginManifest` from the plugin package's light ``__init__``::

    [project.entry-points."emforge.plugins"]
    example = "emforge_example:manifest"

The manifest lists the plugin's protocols by id (``"<plugin>.<name>"``) and
``python_name`` (``"package.module:ClassName"``). Discovery (:func:`discover`) reads the
entry points and the manifests only; a protocol's module is imported the first time
:meth:`Registry.load` asks for it, then cached. Discovery never raises: every failure (the
manifest cannot be imported, is not a manifest, is named differently from its entry point,
claims a plugin name or protocol id someone else claims) becomes a :class:`DiscoveryProblem`
in :attr:`Registry.problems`, shown by ``emforge plugins doctor``. Conflicting ids are
unusable until one claimant is uninstalled.

Tests (emforge's and plugin authors') build isolated registries with
:meth:`Registry.from_manifests`; :func:`default_registry` is the cached registry of the
installed plugins (``default_registry.cache_clear()`` forgets it). Nothing is discovered at
import time.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata as md
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import NotFoundError, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from .engine.protocol import Protocol

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILTIN_PLUGINS",
    "ProtocolEntry",
    "PluginManifest",
    "PluginInfo",
    "RegistryEntry",
    "DiscoveryProblem",
    "DoctorRow",
    "Registry",
    "discover",
    "default_registry",
]

#: Entry-point group every plugin (built-ins included) registers in.
ENTRY_POINT_GROUP = "emforge.plugins"
#: Plugin names taken by the protocols emforge ships.
BUILTIN_PLUGINS = (
    "import",
    "masks",
    "automask",
    "sharpen",
    "analysis",
    "simulate",
    "reconstruct",
    "project",
    "refine",
)
#: the distribution that ships the built-in plugins (their names are reserved to it)
_OWN_DISTRIBUTION = "emforge"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ID_TAIL_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_PYTHON_NAME_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- manifest


class ProtocolEntry(BaseModel):
    """One protocol a plugin contributes: its id and where its class lives."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Protocol id, '<plugin>.<name>' (lowercase, dots between words)")
    python_name: str = Field(description="Where the class lives: 'package.module:ClassName'")
    label: str = Field("", description="Short human name shown in lists")
    help: str = Field("", description="One sentence saying what the protocol does")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        plugin, dot, tail = value.partition(".")
        if not (dot and _NAME_RE.match(plugin) and _ID_TAIL_RE.match(tail)):
            raise ValueError(f"protocol id {value!r} must look like '<plugin>.<name>' (lowercase)")
        return value

    @field_validator("python_name")
    @classmethod
    def _check_python_name(cls, value: str) -> str:
        if not _PYTHON_NAME_RE.match(value):
            raise ValueError(f"python_name {value!r} must look like 'package.module:ClassName'")
        return value

    @property
    def module(self) -> str:
        """The module to import (the part before ':')."""
        return self.python_name.partition(":")[0]


class PluginManifest(BaseModel):
    """What a plugin contributes, loaded from its entry point without importing its protocols.

    ``version`` may be left empty: discovery fills it in from the installed distribution.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Plugin name: the entry point's name and every id's prefix")
    version: str = Field("", description="Plugin version; empty: the distribution's version")
    description: str = Field("", description="One line saying what the plugin provides")
    protocols: list[ProtocolEntry] = Field(default_factory=list, description="Its protocols")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"plugin name {value!r} must be lowercase letters, digits and '_'")
        return value

    @model_validator(mode="after")
    def _check_ids(self) -> PluginManifest:
        seen: set[str] = set()
        for entry in self.protocols:
            if not entry.id.startswith(self.name + "."):
                raise ValueError(f"protocol id {entry.id!r} must start with {self.name + '.'!r}")
            if entry.id in seen:
                raise ValueError(f"protocol id {entry.id!r} is listed twice")
            seen.add(entry.id)
        return self


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PluginInfo:
    """A discovered plugin: its manifest, version and the distribution that installed it."""

    manifest: PluginManifest
    version: str
    distribution: str

    @property
    def name(self) -> str:
        return self.manifest.name


@dataclass(frozen=True)
class RegistryEntry:
    """A usable protocol: its manifest entry and the plugin (name, version, distribution)."""

    entry: ProtocolEntry
    plugin: str
    plugin_version: str
    distribution: str

    @property
    def id(self) -> str:
        return self.entry.id


@dataclass(frozen=True)
class DiscoveryProblem:
    """A plugin that could not be discovered, or a conflict between plugins, as data."""

    plugin: str
    distribution: str
    error: str


@dataclass(frozen=True)
class DoctorRow:
    """One line of ``plugins doctor``: a protocol that loads (``ok``) or why it does not.

    Rows for discovery problems have ``protocol == ""``.
    """

    plugin: str
    distribution: str
    protocol: str
    ok: bool
    error: str = ""

    @property
    def status(self) -> str:
        return "ok" if self.ok else "error"


# --------------------------------------------------------------------------- registry


class Registry:
    """The protocols of a set of plugins, their classes imported on first use.

    Build one with :func:`discover` (installed plugins) or :meth:`from_manifests`
    (isolated, for tests). A registry is immutable apart from its cache of loaded classes.
    """

    def __init__(
        self, plugins: Iterable[PluginInfo], problems: Iterable[DiscoveryProblem] = ()
    ) -> None:
        self._problems: list[DiscoveryProblem] = list(problems)
        self._plugins: dict[str, PluginInfo] = {}
        self._protocols: dict[str, RegistryEntry] = {}
        self._conflicts: dict[str, list[PluginInfo]] = {}
        self._classes: dict[str, type[Protocol]] = {}
        by_name: dict[str, list[PluginInfo]] = {}
        for info in plugins:
            by_name.setdefault(info.name, []).append(info)
        for name, claimants in by_name.items():
            builtin = [c for c in claimants if c.distribution == _OWN_DISTRIBUTION]
            if len(claimants) > 1 and name in BUILTIN_PLUGINS and len(builtin) == 1:
                self._reserve(name, builtin[0], claimants)
            elif len(claimants) > 1:
                self._reject_duplicates(name, claimants)
            else:
                self._add(claimants[0])

    def _reserve(self, name: str, builtin: PluginInfo, claimants: list[PluginInfo]) -> None:
        """A built-in plugin name stays the built-in's; the other claimants are reported."""
        self._add(builtin)
        for info in claimants:
            if info is not builtin:
                self._problems.append(
                    DiscoveryProblem(
                        name,
                        info.distribution,
                        (
                            f"plugin name {name!r} is reserved for the built-in plugin of "
                            f"{_dist_label(builtin)}; {_dist_label(info)} cannot use it "
                            "(rename its entry point)"
                        ),
                    )
                )

    def _reject_duplicates(self, name: str, claimants: list[PluginInfo]) -> None:
        for info in claimants:
            others = ", ".join(_dist_label(o) for o in claimants if o is not info)
            ids = ", ".join(e.id for e in info.manifest.protocols) or "none"
            self._problems.append(
                DiscoveryProblem(
                    name,
                    info.distribution,
                    (
                        f"plugin name {name!r} is also declared by {others}; its protocols ({ids}) "
                        "are unusable until one of them is uninstalled"
                    ),
                )
            )
            for entry in info.manifest.protocols:
                self._conflicts.setdefault(entry.id, []).append(info)

    def _add(self, info: PluginInfo) -> None:
        self._plugins[info.name] = info
        for entry in info.manifest.protocols:
            other = self._protocols.pop(entry.id, None)
            if other is not None or entry.id in self._conflicts:
                # ids always start with their plugin's name, so this only happens with
                # manifests built without validation; handled for safety all the same
                owners = self._conflicts.setdefault(entry.id, [])
                if other is not None:
                    owners.append(self._plugins[other.plugin])
                owners.append(info)
                names = " and ".join(_dist_label(o) for o in owners)
                self._problems.append(
                    DiscoveryProblem(
                        info.name,
                        info.distribution,
                        (f"protocol id {entry.id!r} is declared by {names}; it is unusable"),
                    )
                )
                continue
            self._protocols[entry.id] = RegistryEntry(
                entry, info.name, info.version, info.distribution
            )

    # -- construction -------------------------------------------------------
    @classmethod
    def from_manifests(
        cls, manifests: Iterable[PluginManifest], *, distribution: str = ""
    ) -> Registry:
        """An isolated registry of the given manifests (no entry points read).

        ``distribution`` names the (fake) distribution they come from in messages. Plugin
        authors use this in their tests::

            registry = Registry.from_manifests([manifest])
            cls = registry.load("myplug.scale")
        """
        infos = [PluginInfo(m, m.version, distribution) for m in manifests]
        return cls(infos)

    # -- queries ------------------------------------------------------------
    @property
    def plugins(self) -> Mapping[str, PluginInfo]:
        """Usable plugins by name."""
        return MappingProxyType(self._plugins)

    @property
    def protocols(self) -> Mapping[str, RegistryEntry]:
        """Usable protocols by id, sorted by id."""
        return MappingProxyType(dict(sorted(self._protocols.items())))

    @property
    def problems(self) -> list[DiscoveryProblem]:
        """Everything discovery could not use, one entry per failure and claimant."""
        return list(self._problems)

    def __contains__(self, protocol_id: object) -> bool:
        return protocol_id in self._protocols

    def __len__(self) -> int:
        return len(self._protocols)

    def get(self, protocol_id: str) -> RegistryEntry:
        """The entry of a usable protocol.

        Raises :class:`NotFoundError` (with a close match when there is one) for an unknown
        id and :class:`PluginError` for an id claimed twice or owned by a broken plugin.
        """
        if protocol_id in self._protocols:
            return self._protocols[protocol_id]
        if protocol_id in self._conflicts:
            owners = " and ".join(_dist_label(o) for o in self._conflicts[protocol_id])
            raise PluginError(
                f"protocol {protocol_id!r} is declared by both {owners}; uninstall one of them"
            )
        plugin = protocol_id.partition(".")[0]
        broken = [p for p in self._problems if p.plugin == plugin and plugin not in self._plugins]
        if broken:
            raise PluginError(
                f"protocol {protocol_id!r} is unavailable: plugin {plugin!r} "
                f"failed to load ({broken[0].error})"
            )
        close = difflib.get_close_matches(protocol_id, list(self._protocols), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "; `emforge protocols list` shows them"
        raise NotFoundError(f"protocol {protocol_id!r} not found{hint}")

    def load(self, protocol_id: str) -> type[Protocol]:
        """Import the protocol's class (first use only) and check it.

        Raises :class:`PluginError` (one line: plugin, module, the exception's message) when
        the module cannot be imported, the attribute is missing, it is not a
        :class:`~emforge.engine.protocol.Protocol` subclass or its ``id`` differs.
        """
        entry = self.get(protocol_id)
        cached = self._classes.get(protocol_id)
        if cached is not None:
            return cached
        from .engine.protocol import Protocol

        where = f"plugin {entry.plugin!r}, {entry.entry.python_name}"
        module_name, _, attr = entry.entry.python_name.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginError(f"cannot load {protocol_id!r} ({where}): {_one_line(exc)}") from exc
        if not (isinstance(obj, type) and issubclass(obj, Protocol)):
            raise PluginError(
                f"cannot load {protocol_id!r} ({where}): "
                f"{type(obj).__name__} {attr!r} is not a Protocol subclass"
            )
        if obj.id != protocol_id:
            raise PluginError(
                f"cannot load {protocol_id!r} ({where}): the class declares id {obj.id!r}"
            )
        self._classes[protocol_id] = obj
        return obj

    def doctor(self) -> list[DoctorRow]:
        """Try to load every protocol; one row per protocol plus one per discovery problem."""
        rows = [DoctorRow(p.plugin, p.distribution, "", False, p.error) for p in self._problems]
        for protocol_id, entry in self.protocols.items():
            try:
                self.load(protocol_id)
            except PluginError as exc:
                rows.append(
                    DoctorRow(entry.plugin, entry.distribution, protocol_id, False, str(exc))
                )
            else:
                rows.append(DoctorRow(entry.plugin, entry.distribution, protocol_id, True))
        return rows


def _dist_label(info: PluginInfo) -> str:
    return f"distribution {info.distribution!r}" if info.distribution else f"plugin {info.name!r}"


# --------------------------------------------------------------------------- discovery


def _read_entry_point(ep: md.EntryPoint) -> PluginInfo | DiscoveryProblem:
    dist = getattr(ep, "dist", None)
    dist_name = dist.name if dist is not None else ""
    try:
        manifest = ep.load()
    except (Exception, SystemExit) as exc:
        return DiscoveryProblem(ep.name, dist_name, f"cannot import {ep.value}: {_one_line(exc)}")
    if not isinstance(manifest, PluginManifest):
        return DiscoveryProblem(
            ep.name, dist_name, f"{ep.value} is a {type(manifest).__name__}, not a PluginManifest"
        )
    if manifest.name != ep.name:
        return DiscoveryProblem(
            ep.name,
            dist_name,
            (f"entry point {ep.name!r} loads a manifest named {manifest.name!r}; they must match"),
        )
    version = manifest.version or (dist.version if dist is not None else "")
    return PluginInfo(manifest, version, dist_name)


def discover(entry_points: Iterable[md.EntryPoint] | None = None) -> Registry:
    """Read the ``emforge.plugins`` entry points and their manifests; never raises.

    ``entry_points`` replaces the installed ones (tests). Only each plugin's manifest
    module is imported; protocol classes are imported by :meth:`Registry.load`.
    """
    if entry_points is None:
        entry_points = md.entry_points(group=ENTRY_POINT_GROUP)
    plugins: list[PluginInfo] = []
    problems: list[DiscoveryProblem] = []
    for ep in sorted(entry_points, key=lambda e: e.name):
        found = _read_entry_point(ep)
        (plugins if isinstance(found, PluginInfo) else problems).append(found)  # type: ignore[arg-type]
    return Registry(plugins, problems)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of the installed plugins, discovered on first call and cached.

    ``default_registry.cache_clear()`` makes the next call discover again (after installing
    a plugin in the same process, or in tests).
    """
    return discover()
