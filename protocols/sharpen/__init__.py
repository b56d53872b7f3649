"""Map sharpening and resolution analysis (manifests only; classes load on first use)."""

from emforge.plugins import PluginManifest, ProtocolEntry

_M = "emforge.protocols.sharpen._protocols"
_L = "emforge.protocols.sharpen._protocols_local"

manifest = PluginManifest(
    name="sharpen",
    description="Map sharpening with Phenix map_sharpening / RELION postprocess semantics",
    protocols=[
        ProtocolEntry(
            id="sharpen.bfactor", python_name=f"{_M}:SharpenBFactor", label="B-factor sharpening"
        ),
        ProtocolEntry(
            id="sharpen.auto",
            python_name=f"{_M}:SharpenAuto",
            label="Automatic sharpening (b_iso scan)",
        ),
        ProtocolEntry(
            id="sharpen.halfmaps",
            python_name=f"{_M}:SharpenHalfmaps",
            label="Half-map sharpening (RELION postprocess / Phenix)",
        ),
        ProtocolEntry(
            id="sharpen.model", python_name=f"{_L}:SharpenModel", label="Model-based sharpening"
        ),
        ProtocolEntry(
            id="sharpen.shells",
            python_name=f"{_L}:SharpenShells",
            label="Shell sharpening with anisotropic correction",
        ),
        ProtocolEntry(
            id="sharpen.local", python_name=f"{_L}:SharpenLocal", label="Local sharpening"
        ),
    ],
)
analysis_manifest = PluginManifest(
    name="analysis",
    description="Resolution analysis",
    protocols=[
        ProtocolEntry(
            id="analysis.local_resolution",
            python_name=f"{_L}:LocalResolution",
            label="Local resolution from half maps",
        )
    ],
)
