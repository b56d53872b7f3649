"""The context object a step receives: paths, log, progress and output registration.

It is a plain picklable dataclass, so it travels to a worker process (or a Dask worker)
with the step's arguments. Registrations are collected in the context and handed back to
the engine with the step's result; the engine writes them to the database in the same
transaction that marks the step finished, so an output exists exactly when its step did.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputFileError
from ..objects import DataObject

__all__ = [
    "StepContext",
    "StepOutcome",
    "set_progress_sink",
    "append_line",
    "check_run_folder",
    "unlinked",
]


def unlinked(path: Path) -> Path:
    """``path`` with any symbolic link at that name removed, so a write cannot follow it.

    Files in a run folder belong to the run: a link placed there (by hand, or left by a
    copied project) is dropped rather than written through.
    """
    if path.is_symlink():
        path.unlink()
    return path


def append_line(path: Path, line: str) -> None:
    """Append one line to a log file, never through a symbolic link."""
    fd = os.open(
        unlinked(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644
    )
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def check_run_folder(workdir: Path) -> None:
    """Refuse a run folder that is, or holds, a link to a folder (writes would leave it)."""
    for folder in (workdir, workdir / "extra", workdir / "tmp", workdir / "logs"):
        if folder.is_symlink():
            raise InputFileError(
                folder,
                f"is a symbolic link to {os.path.realpath(folder)}; emforge writes a run's "
                "files only in its own folder (replace the link by a folder)",
            )


_PROGRESS_SINK: Any = None


def set_progress_sink(sink: Any) -> None:
    """Where :meth:`StepContext.progress` sends updates in this process.

    ``sink`` is a callable ``(run_id, step, fraction, message)`` or an object with ``put``
    (a multiprocessing queue, set by the worker initializer); ``None`` drops them.
    """
    global _PROGRESS_SINK
    _PROGRESS_SINK = sink


@dataclass
class StepContext:
    """Engine services for one step of one run."""

    run_id: int
    step: str
    workdir: Path
    registrations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def extra(self) -> Path:
        """Folder for the run's result files."""
        return self.workdir / "extra"

    @property
    def tmp(self) -> Path:
        """Scratch folder, emptied when the run finishes."""
        return self.workdir / "tmp"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def path(self, name: str) -> Path:
        """A path in ``extra/`` for an output file (a link at that name is removed first)."""
        return unlinked(self.extra / name)

    def log(self, message: str) -> None:
        """Append one line to the run's log file."""
        stamp = time.strftime("%H:%M:%S")
        append_line(self.logs / "run.log", f"{stamp} [{self.step}] {message}")

    def warn(self, text: str) -> None:
        """Record a warning about this step's result (kept with the step's result under
        ``"warnings"``, logged, and shown by ``runs show``)."""
        text = str(text)
        if text not in self.warnings:
            self.warnings.append(text)
            self.log(f"warning: {text}")

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress of this step, ``fraction`` in [0, 1]."""
        sink = _PROGRESS_SINK
        item = (self.run_id, self.step, float(min(max(fraction, 0.0), 1.0)), message)
        if sink is None:
            return
        if hasattr(sink, "put"):
            sink.put(item)
        else:
            sink(*item)

    # -- outputs ------------------------------------------------------------
    def output(self, name: str, obj: DataObject, *, label: str = "") -> None:
        """Register a single typed object (Volume, VolumeMask, FSC, ...) as output ``name``."""
        if not isinstance(obj, DataObject):
            raise TypeError(
                f"output {name!r}: expected a typed emforge object, got {type(obj).__name__}"
            )
        self.registrations.append({"type": "object", "name": name, "object": obj, "label": label})

    def output_set(
        self,
        name: str,
        kind: str,
        columns: dict[str, Any],
        *,
        attrs: dict[str, Any] | None = None,
        label: str = "",
    ) -> None:
        """Register a new set built from column arrays."""
        cols = {k: np.asarray(v) for k, v in columns.items()}
        self.registrations.append(
            {
                "type": "set",
                "name": name,
                "kind": kind,
                "columns": cols,
                "attrs": dict(attrs or {}),
                "label": label,
            }
        )

    def output_set_copy(
        self,
        name: str,
        source_id: int,
        changes: dict[str, Any] | None = None,
        *,
        attrs: dict[str, Any] | None = None,
        label: str = "",
    ) -> None:
        """Register a copy of set ``source_id`` with some columns replaced (metadata kept)."""
        cols = {k: np.asarray(v) for k, v in (changes or {}).items()}
        self.registrations.append(
            {
                "type": "set_copy",
                "name": name,
                "source_id": int(source_id),
                "changes": cols,
                "attrs": dict(attrs or {}),
                "label": label,
            }
        )


@dataclass
class StepOutcome:
    """What a step hands back to the engine: its result dict and its registrations."""

    result: dict[str, Any]
    registrations: list[dict[str, Any]]
    seconds: float
    #: files the step wrote (through :func:`emforge.io.atomic_target`), in order
    files: list[str] = field(default_factory=list)


def take_written() -> list[str]:
    """:func:`emforge.io.mrc.take_written`, without loading the MRC module (and mrcfile) for
    a step that writes nothing: the atomic writer lives there, so if it is not imported yet,
    this process wrote nothing through it."""
    mrc = sys.modules.get("emforge.io.mrc")
    return [] if mrc is None else mrc.take_written()


def call_step(fn: Any, ctx: StepContext, args: dict[str, Any]) -> StepOutcome:
    """Run one step function (in whatever process) and package its outcome."""
    t0 = time.perf_counter()
    take_written()  # forget writes that were not this step's
    result = fn(ctx, **args)
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise TypeError(
            f"step {ctx.step!r} returned {type(result).__name__}; a step returns a dict or None"
        )
    if ctx.warnings:
        result = {**result, "warnings": list(result.get("warnings", [])) + ctx.warnings}
    return StepOutcome(
        result=result,
        registrations=ctx.registrations,
        seconds=time.perf_counter() - t0,
        files=take_written(),
    )
