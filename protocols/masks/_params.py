"""Parameters shared by the masks protocols (Xmipp geometry semantics, Scipion's -1 defaults)."""

from __future__ import annotations

from typing import Any, Literal

from emforge.engine import Level, ProtocolParams, ShownWhen, param

from ._geometry import GEOMETRIES_2D, GEOMETRIES_3D, resolve_mask_params

__all__ = [
    "Geometry2DParams",
    "Geometry3DParams",
    "FillParams",
    "geometry_options",
    "geometry_problems",
]

_RADIAL = ("circular", "sphere", "cylinder")
_RING = ("crown", "raised_cosine", "raised_crown")


class _GeometryCommon(ProtocolParams):
    radius: float = param(
        -1.0,
        "Radius of the circle / sphere / cylinder; -1: half the box",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "in", list(_RADIAL)),
    )
    inner_radius: float = param(
        0.0,
        "Inner radius of the crown / raised cosine / raised crown (0 allowed)",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "in", list(_RING)),
    )
    outer_radius: float = param(
        -1.0,
        "Outer radius of the crown / raised cosine / raised crown; -1: half the box",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "in", list(_RING)),
    )
    box_size: list[int] = param(
        [-1],
        "Box widths x[, y[, z]] (one value for all axes); -1: half the box (a full width)",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "==", "box"),
    )
    sigma: float = param(
        -1.0,
        "Gaussian sigma; -1: box/6. The gaussian integrates to 1 (peak 1/(√(2π)σ)^dim) "
        "unless peak_one",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "==", "gaussian"),
    )
    peak_one: bool = param(
        False,
        "Scale the gaussian to a peak of 1 instead of a unit integral",
        section="Geometry",
        shown_when=ShownWhen("geometry", "==", "gaussian"),
    )
    border: float = param(
        2.0,
        "Border decay w of the raised crown (its edges are raised cosines R±w)",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "==", "raised_crown"),
    )
    shift: list[float] = param(
        [],
        "Shift of the mask centre from the box centre (index N//2), x y[ z]",
        unit="px",
        section="Geometry",
        level=Level.ADVANCED,
    )


class Geometry2DParams(_GeometryCommon):
    geometry: Literal[GEOMETRIES_2D] = param("circular", "Shape of the 2D mask", section="Geometry")  # type: ignore[valid-type]


class Geometry3DParams(_GeometryCommon):
    geometry: Literal[GEOMETRIES_3D] = param("sphere", "Shape of the 3D mask", section="Geometry")  # type: ignore[valid-type]
    height: float = param(
        -1.0,
        "Cylinder height along z; -1: the box size",
        unit="px",
        section="Geometry",
        shown_when=ShownWhen("geometry", "==", "cylinder"),
    )


class FillParams(ProtocolParams):
    fill: Literal["value", "min", "max", "mean"] = param(
        "value",
        "What replaces the pixels outside a BINARY shape (circular, sphere, box, crown, cylinder): "
        "fill_value, or the min / max / mean of the whole input image, per image. Continuous shapes (gaussian, "
        "raised cosine, raised crown) and created masks multiply the image; fill does not apply to them",
        section="Fill",
    )
    fill_value: float = param(
        0.0,
        "Value outside a binary shape when fill is 'value'",
        section="Fill",
        shown_when=ShownWhen("fill", "==", "value"),
    )


def geometry_options(params: Any) -> dict[str, Any]:
    """The keyword options of the kernels' ``make_mask`` from a params model."""
    opts: dict[str, Any] = dict(
        radius=params.radius,
        inner_radius=params.inner_radius,
        outer_radius=params.outer_radius,
        sigma=params.sigma,
        border=params.border,
        shift=list(params.shift) or None,
        peak_one=params.peak_one,
    )
    box = list(params.box_size)
    opts["box_size"] = box[0] if len(box) == 1 else box
    if hasattr(params, "height"):
        opts["height"] = params.height
    return opts


def geometry_problems(params: Any, shape: tuple[int, ...]) -> list[str]:
    """Problems with the geometry for a box of ``shape`` ((y, x) or (z, y, x)), one line each."""
    try:
        resolve_mask_params(shape, params.geometry, **geometry_options(params))
    except ValueError as exc:
        text = str(exc)
        name = text.split(":", 1)[0].strip() if ":" in text else "geometry"
        return [f"param '{name}': {text.split(':', 1)[1].strip() if ':' in text else text}"]
    return []
