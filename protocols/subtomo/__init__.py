"""Subtomogram-averaging family (issues 13 and 14), after EMAN2's e2spt workflow: tilt series and
tagged coordinates, extraction, sets by tag, template matching (manifest only; classes load on
first use). Pure kernels live in :mod:`.kernels`."""

from emforge.plugins import PluginManifest, ProtocolEntry

_P = "emforge.protocols.subtomo"

manifest = PluginManifest(
    name="subtomo",
    description="Subtomogram averaging (EMAN2 e2spt): extraction, sets by tag, template matching",
    protocols=[
        ProtocolEntry(
            id="subtomo.buildsets",
            python_name=f"{_P}._buildsets:BuildSets",
            label="Build sets by tag",
        ),
        ProtocolEntry(
            id="subtomo.export_info",
            python_name=f"{_P}._export_info:ExportInfo",
            label="Export EMAN2 info json",
        ),
    ],
)

# Entries are added as the protocols land; each keeps to the form
#     ProtocolEntry(id="subtomo.<name>", python_name=f"{_P}._<module>:<Class>", label="...")
__all__ = ["manifest", "ProtocolEntry"]
