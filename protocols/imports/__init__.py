"""Import protocols: maps, masks, particles (+ RELION STAR), tomograms, 3D coordinates.

Only the plugin manifest lives here (cheap to import); the classes load on first use.
"""

from emforge.plugins import PluginManifest, ProtocolEntry

_M = "emforge.protocols.imports._protocols"
_P = "emforge.protocols.imports._particles"

manifest = PluginManifest(
    name="import",
    description="Bring maps, masks, particles, tomograms and 3D coordinates into a project",
    protocols=[
        ProtocolEntry(
            id="import.volume",
            python_name=f"{_M}:ImportVolume",
            label="Import a map (with half maps)",
        ),
        ProtocolEntry(
            id="import.volumes", python_name=f"{_M}:ImportVolumes", label="Import several maps"
        ),
        ProtocolEntry(id="import.mask", python_name=f"{_M}:ImportMask", label="Import a 3D mask"),
        ProtocolEntry(
            id="import.particles",
            python_name=f"{_P}:ImportParticles",
            label="Import particles (MRC stack, RELION STAR)",
        ),
        ProtocolEntry(
            id="import.tomograms", python_name=f"{_P}:ImportTomograms", label="Import tomograms"
        ),
        ProtocolEntry(
            id="import.tiltseries",
            python_name=f"{_P}:ImportTiltSeries",
            label="Import tilt-series geometry (.tlt, Warp .xml, .mdoc, RELION 5)",
        ),
        ProtocolEntry(
            id="import.coordinates3d",
            python_name=f"{_P}:ImportCoordinates3D",
            label="Import 3D coordinates (STAR, text, EMAN2)",
        ),
    ],
)
