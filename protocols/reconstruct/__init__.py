"""Simulation, reconstruction and projection of particles (manifests only; classes load on
first use). Kernels live in :mod:`.kernels`; the numerical core in :mod:`emforge.numerics`."""

from emforge.plugins import PluginManifest, ProtocolEntry

_P = "emforge.protocols.reconstruct"

simulate_manifest = PluginManifest(
    name="simulate",
    description="Simulated particles with known poses and CTF",
    protocols=[
        ProtocolEntry(
            id="simulate.particles",
            python_name=f"{_P}._simulate:SimulateParticles",
            label="Simulate particles from a map",
        )
    ],
)
reconstruct_manifest = PluginManifest(
    name="reconstruct",
    description="Direct Fourier reconstruction from particles with known poses",
    protocols=[
        ProtocolEntry(
            id="reconstruct.particles",
            python_name=f"{_P}._reconstruct:ReconstructParticles",
            label="Reconstruct a map from particles",
        )
    ],
)
project_manifest = PluginManifest(
    name="project",
    description="Fourier-slice projection of maps",
    protocols=[
        ProtocolEntry(
            id="project.volume",
            python_name=f"{_P}._project:ProjectVolume",
            label="Project a map into 2D images",
        )
    ],
)
