"""emforge: cryo-EM and cryo-ET image processing with typed data and a project database."""

from __future__ import annotations

from typing import Any

from .errors import (
    EmforgeError,
    InputFileError,
    NotFoundError,
    ParamError,
    PluginError,
    ProjectError,
    ValidationError,
)


def __getattr__(name: str) -> Any:
    # __version__ on first use (PEP 562): importlib.metadata costs ~30 ms at every start-up
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("emforge")
        except PackageNotFoundError:  # pragma: no cover - a source tree without install
            value = "0+unknown"
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
