"""EMAN2-style automatic masks (manifest only; classes load on first use)."""

from emforge.plugins import PluginManifest, ProtocolEntry

_M = "emforge.protocols.automask._protocols"

manifest = PluginManifest(
    name="automask",
    description="Automatic 3D masks: EMAN2 mask.auto3d, mask.soft and threshold masks with morphology",
    protocols=[
        ProtocolEntry(
            id="automask.auto3d",
            python_name=f"{_M}:AutoMask3D",
            label="Automatic 3D mask (mask.auto3d)",
        ),
        ProtocolEntry(
            id="automask.soft",
            python_name=f"{_M}:SoftMask",
            label="Soft spherical or threshold mask",
        ),
    ],
)
