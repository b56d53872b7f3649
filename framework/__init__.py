"""emforge: cryo-EM and cryo-ET image processing with typed data and a project database."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    EmforgeError,
    InputFileError,
    NotFoundError,
    ParamError,
    PluginError,
    ProjectError,
    ValidationError,
)

try:
    __version__ = version("emforge")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "EmforgeError",
    "InputFileError",
    "NotFoundError",
    "ParamError",
    "PluginError",
    "ProjectError",
    "ValidationError",
]
