"""Refinement family (issue 12): EMAN2 e2refine projection matching (manifest only; classes
load on first use). Pure kernels live in :mod:`.kernels`, step functions in :mod:`._steps`."""

from emforge.plugins import PluginManifest, ProtocolEntry

_P = "emforge.protocols.refine"

manifest = PluginManifest(
    name="refine",
    description="Projection-matching refinement (EMAN2 e2refine), gold standard, one step "
    "per stage",
    protocols=[
        ProtocolEntry(
            id="refine.projection_matching",
            python_name=f"{_P}._protocols:ProjectionMatching",
            label="Refine particles against a map (e2refine loop)",
        ),
        ProtocolEntry(
            id="refine.project",
            python_name=f"{_P}._stages:Project",
            label="Reference projections over the asymmetric unit (e2project3d)",
        ),
        ProtocolEntry(
            id="refine.simmx",
            python_name=f"{_P}._stages:Simmx",
            label="Similarity matrix of particles against references (e2simmx)",
        ),
        ProtocolEntry(
            id="refine.classify",
            python_name=f"{_P}._stages:Classify",
            label="Classify particles from their similarity matrix (e2classify)",
        ),
        ProtocolEntry(
            id="refine.classaverage",
            python_name=f"{_P}._stages:ClassAverage",
            label="Iterative class averages (e2classaverage)",
        ),
        ProtocolEntry(
            id="refine.make3d",
            python_name=f"{_P}._stages:Make3D",
            label="Reconstruct a map from class averages (e2make3dpar)",
        ),
    ],
)
