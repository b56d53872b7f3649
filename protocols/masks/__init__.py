"""The masks protocol family (manifest only; classes load on first use)."""

from emforge.plugins import PluginManifest

manifest = PluginManifest(name="masks", description="masks protocols", protocols=[])
