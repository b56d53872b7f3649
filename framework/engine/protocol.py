"""The protocol definition API.

A protocol is a small declarative class::

    class MaskVolumes(Protocol):
        id = "masks.volumes"
        version = "1"
        label = "Apply a 3D mask"

        class Params(ProtocolParams):
            radius: float = param(-1, "Sphere radius", unit="px", section="Geometry")

        inputs = {"volume": Input(("Volume", "SetOfVolumes"), "map(s) to mask")}
        outputs = {"volume": Output("Volume", "the masked map")}

        def validate(self) -> list[str]:
            ...                                   # every problem at once, one line each
        def steps(self) -> list[Step]:
            return [Step("mask", mask_step, args={...})]

Step functions are plain module-level functions ``fn(ctx, **args) -> dict | None``; ``args``
are plain, picklable data (numbers, strings, paths, numpy arrays) so a step can run in
another process or on a Dask worker. Engine services reach a step through ``ctx``
(:class:`~emforge.engine.context.StepContext`): paths, log, progress, output registration.
Only the engine writes the database.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Protocol",
    "ProtocolParams",
    "Input",
    "Output",
    "Step",
    "param",
    "PathParam",
    "SourcePath",
    "path_params",
    "ShownWhen",
    "Level",
]


class Level(enum.StrEnum):
    """How prominent a parameter is in a form: normal ones first, expert ones folded."""

    NORMAL = "normal"
    ADVANCED = "advanced"
    EXPERT = "expert"


@dataclass(frozen=True)
class ShownWhen:
    """A UI condition as data: show the parameter when ``param`` ``op`` ``value``.

    ``op`` is one of ``==``, ``!=``, ``in``; never a string to evaluate.
    """

    param: str
    op: str
    value: Any

    def holds(self, values: dict[str, Any]) -> bool:
        v = values.get(self.param)
        if self.op == "==":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        if self.op == "in":
            return v in self.value
        raise ValueError(f"ShownWhen.op must be '==', '!=' or 'in', not {self.op!r}")


def param(
    default: Any,
    help: str,
    *,
    unit: str = "",
    section: str = "General",
    level: Level | str = Level.NORMAL,
    shown_when: ShownWhen | None = None,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Declare a protocol parameter: default, help, unit and UI hints stored as schema data.

    The unit is appended to the description (``"Sphere radius (px)"``) so every schema and
    ``protocols describe`` shows it.
    """
    description = f"{help} ({unit})" if unit else help
    extra: dict[str, Any] = {"section": section, "level": Level(level).value, "unit": unit}
    if shown_when is not None:
        extra["shown_when"] = {
            "param": shown_when.param,
            "op": shown_when.op,
            "value": shown_when.value,
        }
    if choices is not None:
        extra["choices"] = list(choices)
    return Field(
        default,
        description=description,
        ge=ge,
        le=le,
        gt=gt,
        lt=lt,
        json_schema_extra=extra,
        **kwargs,
    )


@dataclass(frozen=True)
class PathParam:
    """Marks a ``str`` param as a path to a file (or a glob pattern) that the run reads.

    Use it through :data:`SourcePath` (``path: SourcePath = param("", "Map file")``). The
    engine then makes the value absolute when the run is submitted (a relative path means
    relative to the folder the user was in), stores it relative to the project root when it
    lies inside the project, reports ``MISSING: <file> is gone`` in ``runs why`` and refuses
    ``runs resume`` in one line when the file has disappeared. A param is a path by this
    declaration only, never because its value looks like one. The schema says
    ``"format": "path"``.
    """

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = dict(handler(core_schema))
        schema["format"] = "path"
        return schema


#: the type of a param naming a file (or glob pattern) the run reads, see :class:`PathParam`
SourcePath = Annotated[str, PathParam()]


def path_params(params_cls: type[BaseModel]) -> tuple[str, ...]:
    """Names of the params of ``params_cls`` declared as paths (:class:`PathParam`)."""
    return tuple(
        name
        for name, info in params_cls.model_fields.items()
        if any(isinstance(m, PathParam) for m in info.metadata)
    )


class ProtocolParams(BaseModel):
    """Base of every protocol's ``Params``: frozen, no unknown fields, described fields.

    Floats must be finite: NaN and ±Inf are refused at parsing unless a field declares
    otherwise (``param(..., allow_inf_nan=True)``).
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )


@dataclass(frozen=True)
class Input:
    """A typed input: the kinds of object accepted (either-of), help, optional, multiple."""

    kinds: tuple[str, ...]
    help: str
    optional: bool = False
    multiple: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str):
            object.__setattr__(self, "kinds", (self.kinds,))


@dataclass(frozen=True)
class Output:
    """A declared output: its kind and what it holds."""

    kind: str
    help: str
    optional: bool = False


@dataclass
class Step:
    """One unit of work.

    ``fn(ctx, **args)`` runs in the engine process or a worker; ``deps`` name steps that must
    finish first; ``uses`` names the params the step depends on (``None``: all of them), so a
    changed param only redoes the steps that use it; ``outputs`` names the outputs the step
    registers (checked after it finishes).
    """

    name: str
    fn: Callable[..., Any]
    args: dict[str, Any] = field(default_factory=dict)
    deps: Sequence[str] = ()
    uses: Sequence[str] | None = None
    outputs: Sequence[str] = ()
    label: str = ""


class Protocol:
    """Base of all protocols. Subclasses set the class attributes and override methods.

    The engine builds an instance with validated ``params`` and resolved ``inputs`` (typed
    objects or set handles, a list for ``multiple`` inputs, ``None`` for absent optional
    ones), then calls :meth:`validate` and :meth:`steps`.
    """

    id: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    label: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Params: ClassVar[type[ProtocolParams]] = ProtocolParams
    inputs: ClassVar[dict[str, Input]] = {}
    outputs: ClassVar[dict[str, Output]] = {}
    citations: ClassVar[Sequence[str]] = ()

    def __init__(
        self,
        params: ProtocolParams,
        inputs: dict[str, Any],
        *,
        input_ids: dict[str, Any] | None = None,
        workdir: Any = None,
    ) -> None:
        self.params = params
        self.input = inputs
        self.input_ids = input_ids or {}
        self.workdir = workdir

    def validate(self) -> list[str]:
        """Every problem with the params and inputs, one line each naming the culprit."""
        return []

    def steps(self) -> list[Step]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} defines no steps()")

    def external_files(self) -> list[str]:
        """Files outside the project this run reads (an import's source files).

        Their content is hashed into every step key, so ``runs why`` reports INPUT when one
        changes on disk.
        """
        return []

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        """A few lines for ``runs show`` once the run finished (default: nothing)."""
        return ""

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """The JSON schema of the params (the reference docs are generated from it)."""
        return cls.Params.model_json_schema()
