"""emforge-example: an emforge plugin written exactly as a third party would write one.

This module is what emforge imports when it discovers the plugin (entry point
``example = emforge_example:manifest``), so it stays light: it only builds the manifest.
The protocol classes live in :mod:`emforge_example.protocols` and are imported the first
time one of them is used.
"""

from __future__ import annotations

from emforge.plugins import PluginManifest, ProtocolEntry

__all__ = ["manifest"]

manifest = PluginManifest(
    name="example",
    description="Example plugin: normalise a map, threshold it into a mask, sleep (scheduling tests)",
    protocols=[
        ProtocolEntry(
            id="example.normalize",
            python_name="emforge_example.protocols:Normalize",
            label="Normalise a map",
            help="Shift and scale a map to a target mean and standard deviation.",
        ),
        ProtocolEntry(
            id="example.threshold",
            python_name="emforge_example.protocols:Threshold",
            label="Threshold a map into a mask",
            help="Binary mask of the voxels above a value or above mean + n sigma.",
        ),
        ProtocolEntry(
            id="example.sleep",
            python_name="emforge_example.protocols:Sleep",
            label="Sleep in parallel steps",
            help="n independent steps that each sleep; measures parallel step scheduling.",
        ),
    ],
)
