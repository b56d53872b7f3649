"""2D and 3D geometric masks with Xmipp semantics (manifest only; classes load on first use)."""

from emforge.plugins import PluginManifest, ProtocolEntry

_M = "emforge.protocols.masks._protocols"

manifest = PluginManifest(
    name="masks",
    description="Geometric 2D/3D masks (Xmipp semantics): create them and apply them to particles and maps",
    protocols=[
        ProtocolEntry(
            id="masks.create", python_name=f"{_M}:MaskCreate", label="Create a geometric mask"
        ),
        ProtocolEntry(
            id="masks.volumes", python_name=f"{_M}:MaskVolumes", label="Apply a 3D mask to map(s)"
        ),
        ProtocolEntry(
            id="masks.particles",
            python_name=f"{_M}:MaskParticles",
            label="Apply a 2D mask to particles",
        ),
    ],
)
