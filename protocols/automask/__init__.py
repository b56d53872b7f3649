"""The automask protocol family (manifest only; classes load on first use)."""

from emforge.plugins import PluginManifest

manifest = PluginManifest(name="automask", description="automask protocols", protocols=[])
