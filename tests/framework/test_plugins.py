"""The plugin registry: manifests, discovery problems as data, lazy loading, doctor.

Fake plugins are isolated registries (``Registry.from_manifests``) over modules written to
``tmp_path``, or fake entry points handed to ``discover``; nothing is installed.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import textwrap
import uuid

import pytest
from pydantic import ValidationError as PydanticValidationError

from emforge.engine.protocol import Protocol
from emforge.errors import NotFoundError, PluginError
from emforge.plugins import (
    ENTRY_POINT_GROUP,
    PluginInfo,
    PluginManifest,
    ProtocolEntry,
    Registry,
    default_registry,
    discover,
)

GOOD = """
from emforge.engine.protocol import Protocol

class Good(Protocol):
    id = "{plugin}.good"

    def steps(self):
        return []

class WrongId(Protocol):
    id = "{plugin}.other"

class NotAProtocol:
    id = "{plugin}.plain"
"""


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    """Write a module with a unique name to tmp_path and return that name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(source: str) -> str:
        name = f"fake_emforge_plugin_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


def _manifest(plugin: str, module: str, *names: tuple[str, str]) -> PluginManifest:
    entries = [ProtocolEntry(id=f"{plugin}.{n}", python_name=f"{module}:{c}") for n, c in names]
    return PluginManifest(name=plugin, version="1.2", protocols=entries)


# --------------------------------------------------------------------------- manifest


def test_manifest_validation():
    entry = ProtocolEntry(id="fake.good", python_name="pkg.mod:Good", label="Good", help="h")
    assert entry.module == "pkg.mod"
    with pytest.raises(PydanticValidationError, match="must start with 'other.'"):
        PluginManifest(name="other", protocols=[entry])
    with pytest.raises(PydanticValidationError, match="listed twice"):
        PluginManifest(name="fake", protocols=[entry, entry])
    with pytest.raises(PydanticValidationError, match="module:attr|package.module:ClassName"):
        ProtocolEntry(id="fake.good", python_name="pkg.mod.Good")
    with pytest.raises(PydanticValidationError, match="<plugin>.<name>"):
        ProtocolEntry(id="fakegood", python_name="pkg:Good")
    with pytest.raises(PydanticValidationError, match="lowercase"):
        PluginManifest(name="Fake-Plugin")
    manifest = PluginManifest(name="fake", protocols=[entry])
    assert manifest.version == ""  # filled in from the distribution at discovery
    with pytest.raises(PydanticValidationError):
        manifest.name = "x"


# --------------------------------------------------------------------------- loading


def test_load_is_lazy_and_cached(fake_module):
    module = fake_module(GOOD.format(plugin="fake"))
    registry = Registry.from_manifests([_manifest("fake", module, ("good", "Good"))])
    assert module not in sys.modules  # building the registry imports nothing
    entry = registry.get("fake.good")
    assert (entry.plugin, entry.plugin_version) == ("fake", "1.2")
    assert module not in sys.modules
    cls = registry.load("fake.good")
    assert module in sys.modules
    assert issubclass(cls, Protocol) and cls.id == "fake.good"
    assert registry.load("fake.good") is cls


def test_import_error_is_a_plugin_error_and_others_still_load(fake_module):
    good = fake_module(GOOD.format(plugin="fake"))
    broken = fake_module("raise ImportError('libfoo.so: cannot open shared object file')\n")
    registry = Registry.from_manifests(
        [
            _manifest("fake", good, ("good", "Good")),
            _manifest("broken", broken, ("thing", "Thing")),
        ],
        distribution="emforge-fake",
    )
    with pytest.raises(
        PluginError,
        match=rf"'broken.thing' \(plugin 'broken', {broken}:Thing\).*"
        "ImportError: libfoo.so: cannot open shared object file",
    ) as info:
        registry.load("broken.thing")
    assert "\n" not in str(info.value)
    assert registry.load("fake.good").id == "fake.good"
    rows = {row.protocol: row for row in registry.doctor()}
    assert rows["fake.good"].ok and rows["fake.good"].status == "ok"
    assert not rows["broken.thing"].ok and rows["broken.thing"].status == "error"
    assert "libfoo.so" in rows["broken.thing"].error
    assert rows["broken.thing"].distribution == "emforge-fake"


@pytest.mark.parametrize(
    ("attr", "match"),
    [
        ("Missing", "AttributeError"),
        ("NotAProtocol", "is not a Protocol subclass"),
        ("WrongId", "declares id 'fake.other'"),
    ],
)
def test_load_checks_the_class(fake_module, attr, match):
    module = fake_module(GOOD.format(plugin="fake"))
    registry = Registry.from_manifests([_manifest("fake", module, ("bad", attr))])
    with pytest.raises(PluginError, match=match):
        registry.load("fake.bad")


def test_unknown_id_suggests_a_close_match(fake_module):
    module = fake_module(GOOD.format(plugin="fake"))
    registry = Registry.from_manifests([_manifest("fake", module, ("good", "Good"))])
    with pytest.raises(
        NotFoundError, match="protocol 'fake.godo' not found; did you mean 'fake.good'"
    ):
        registry.get("fake.godo")
    with pytest.raises(NotFoundError, match="not found; `emforge protocols list`"):
        registry.load("zzz.qqq")
    assert "fake.good" in registry and len(registry) == 1


def test_duplicate_plugin_makes_its_ids_unusable(fake_module):
    module = fake_module(GOOD.format(plugin="fake"))
    other = fake_module(GOOD.format(plugin="other"))
    fake = _manifest("fake", module, ("good", "Good"))
    registry = Registry(
        [
            PluginInfo(fake, "1.0", "emforge-a"),
            PluginInfo(fake, "2.0", "emforge-b"),
            PluginInfo(_manifest("other", other, ("good", "Good")), "1.0", "emforge-other"),
        ]
    )
    problems = sorted(registry.problems, key=lambda p: p.distribution)
    assert [(p.plugin, p.distribution) for p in problems] == [
        ("fake", "emforge-a"),
        ("fake", "emforge-b"),
    ]  # both claimants reported
    assert "also declared by distribution 'emforge-b'" in problems[0].error
    assert "also declared by distribution 'emforge-a'" in problems[1].error
    assert all("(fake.good) are unusable" in p.error for p in problems)
    assert "fake.good" not in registry.protocols and "fake" not in registry.plugins
    with pytest.raises(PluginError, match="declared by both distribution 'emforge-a' and"):
        registry.load("fake.good")
    assert registry.load("other.good").id == "other.good"  # the rest is unaffected
    assert sorted(row.ok for row in registry.doctor()) == [False, False, True]


# --------------------------------------------------------------------------- discovery


MANIFEST = """
from emforge.plugins import PluginManifest, ProtocolEntry

manifest = PluginManifest(
    name="fake", protocols=[ProtocolEntry(id="fake.good", python_name="__MODULE__:Good")]
)
not_a_manifest = {"name": "fake"}
"""


def test_discover_turns_every_failure_into_data(fake_module):
    protocols = fake_module(GOOD.format(plugin="fake"))
    plugin = fake_module(MANIFEST.replace("__MODULE__", protocols))
    broken = fake_module("import not_a_module_anywhere_42\nmanifest = None\n")
    eps = [
        md.EntryPoint("fake", f"{plugin}:manifest", ENTRY_POINT_GROUP),
        md.EntryPoint("broken", f"{broken}:manifest", ENTRY_POINT_GROUP),
        md.EntryPoint("notmanifest", f"{plugin}:not_a_manifest", ENTRY_POINT_GROUP),
        md.EntryPoint("renamed", f"{plugin}:manifest", ENTRY_POINT_GROUP),
    ]
    registry = discover(eps)  # never raises
    assert list(registry.protocols) == ["fake.good"]
    assert protocols not in sys.modules  # only the manifest module was imported
    assert registry.load("fake.good").id == "fake.good"
    problems = {p.plugin: p.error for p in registry.problems}
    assert set(problems) == {"broken", "notmanifest", "renamed"}
    assert "ModuleNotFoundError" in problems["broken"]
    assert "not_a_module_anywhere_42" in problems["broken"]
    assert "is a dict, not a PluginManifest" in problems["notmanifest"]
    assert "entry point 'renamed' loads a manifest named 'fake'" in problems["renamed"]
    with pytest.raises(PluginError, match="unavailable: plugin 'broken' failed to load"):
        registry.get("broken.anything")


def test_discover_finds_the_installed_example_plugin():
    pytest.importorskip("emforge_example", reason="pip install -e plugins/emforge-example first")
    registry = discover()
    info = registry.plugins["example"]
    assert info.distribution == "emforge-example"
    assert info.version == md.version("emforge-example")  # manifest leaves it to the distribution
    assert {"example.normalize", "example.threshold", "example.sleep"} <= set(registry.protocols)
    assert registry.get("example.sleep").plugin_version == info.version
    assert all(row.ok for row in registry.doctor() if row.plugin == "example")


def test_discovery_imports_no_protocol_module():
    pytest.importorskip("emforge_example", reason="pip install -e plugins/emforge-example first")
    code = (
        "import sys\nfrom emforge.plugins import discover\nr = discover()\n"
        "assert 'example.normalize' in r.protocols\n"
        "print('emforge_example.protocols' in sys.modules)\n"
        "r.load('example.normalize')\nprint('emforge_example.protocols' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_default_registry_is_cached_and_clearable():
    default_registry.cache_clear()
    try:
        first = default_registry()
        assert default_registry() is first
        default_registry.cache_clear()
        assert default_registry() is not first
    finally:
        default_registry.cache_clear()
