"""Map sharpening and resolution analysis (manifests only; classes load on first use)."""

from emforge.plugins import PluginManifest, ProtocolEntry

_M = "emforge.protocols.sharpen._protocols"

manifest = PluginManifest(
    name="sharpen",
    description="Map sharpening with Phenix map_sharpening / RELION postprocess semantics",
    protocols=[
        ProtocolEntry(id="sharpen.bfactor", python_name=f"{_M}:SharpenBFactor", label="B-factor sharpening"),
        ProtocolEntry(id="sharpen.auto", python_name=f"{_M}:SharpenAuto", label="Automatic sharpening (b_iso scan)"),
        ProtocolEntry(id="sharpen.halfmaps", python_name=f"{_M}:SharpenHalfmaps",
                      label="Half-map sharpening (RELION postprocess / Phenix)"),
    ],
)
analysis_manifest = PluginManifest(name="analysis", description="Resolution analysis", protocols=[])
