"""Map sharpening and resolution analysis (manifests only; classes load on first use)."""

from emforge.plugins import PluginManifest

manifest = PluginManifest(name="sharpen", description="Map sharpening", protocols=[])
analysis_manifest = PluginManifest(name="analysis", description="Resolution analysis", protocols=[])
