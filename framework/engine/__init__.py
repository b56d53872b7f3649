"""The protocol engine: protocol API, runs, execution, staleness and provenance."""

from .context import StepContext
from .execute import effective_status, execute_run, reset_run
from .protocol import (
    Input,
    Level,
    Output,
    PathParam,
    Protocol,
    ProtocolParams,
    ShownWhen,
    SourcePath,
    Step,
    param,
)
from .runs import create_run, load_run

__all__ = [
    "Input",
    "Level",
    "Output",
    "PathParam",
    "Protocol",
    "ProtocolParams",
    "ShownWhen",
    "SourcePath",
    "Step",
    "StepContext",
    "create_run",
    "effective_status",
    "execute_run",
    "load_run",
    "param",
    "reset_run",
]
