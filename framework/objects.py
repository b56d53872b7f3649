"""Typed EM data: the objects protocols take as inputs and register as outputs.

Single objects (:class:`Volume`, :class:`VolumeMask`, :class:`Mask2D`, :class:`Tomogram`,
:class:`FSC`) are small frozen dataclasses stored as JSON attributes of an ``objects`` row;
their pixels stay in MRC files referenced by path. Sets (:class:`SetOfParticles`, ...) are
handles on column-chunked items in the database (see :mod:`emforge.sets`); their items are
light dataclasses (:class:`Particle`, :class:`Coordinate3D`, :class:`SubTomogram`) made on
iteration, the convenience path — bulk column access is the normal one.

Units: pixel sizes in Å, origins in Å (z, y, x), shapes (z, y, x), angles in degrees (RELION
ZYZ), shifts in Å. See ``docs/conventions.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .columns import SCHEMAS

__all__ = [
    "DataObject",
    "Volume",
    "VolumeMask",
    "Mask2D",
    "Tomogram",
    "FSC",
    "Item",
    "Particle",
    "Coordinate3D",
    "SubTomogram",
    "TiltImage",
    "ITEM_TYPES",
    "OBJECT_TYPES",
    "SET_KINDS",
    "kind_of",
]


@dataclass(frozen=True)
class DataObject:
    """Base of single typed objects; ``kind`` names the type in the database."""

    kind: ClassVar[str] = "DataObject"
    #: attributes holding file paths, hashed into the data version
    file_fields: ClassVar[tuple[str, ...]] = ()

    def to_attrs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> DataObject:
        names = {f.name for f in dataclasses.fields(cls)}
        clean = {
            k: (tuple(v) if isinstance(v, list) and k in ("shape", "origin", "voxel_size") else v)
            for k, v in attrs.items()
            if k in names
        }
        return cls(**clean)

    def files(self) -> list[str]:
        return [getattr(self, f) for f in self.file_fields if getattr(self, f)]


@dataclass(frozen=True)
class Volume(DataObject):
    """A 3D map in an MRC file.

    ``shape`` is (z, y, x) in voxels; ``pixel_size`` in Å is the edge of a cubic voxel
    (imports refuse anisotropic voxels and non-orthogonal cells, see ``docs/conventions.md``);
    ``voxel_size`` is the (z, y, x) triple from the header. ``origin`` is the map's frame: the
    (z, y, x) position in Å of voxel (0, 0, 0), whichever MRC header field held it;
    ``origin_field`` says which (``"origin"``, ``"nstart"``, ``"both"`` or ``"none"``) so
    derived maps and exports write it back the same way (rows stored before it existed read
    as ``"origin"``, which is how their files were written). ``half1``/``half2`` are optional
    half maps of the same shape and pixel size.
    """

    kind: ClassVar[str] = "Volume"
    file_fields: ClassVar[tuple[str, ...]] = ("path", "half1", "half2")
    path: str
    pixel_size: float
    shape: tuple[int, int, int]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    half1: str | None = None
    half2: str | None = None
    voxel_size: tuple[float, float, float] | None = None
    #: the file the map was imported from (informational; messages name it)
    source: str | None = None
    #: the MRC header field(s) the frame came in: "origin", "nstart", "both" or "none"
    origin_field: str = "origin"

    @property
    def has_halves(self) -> bool:
        return bool(self.half1 and self.half2)


@dataclass(frozen=True)
class VolumeMask(Volume):
    """A 3D mask: values in [0, 1]; ``soft`` when it has values strictly between."""

    kind: ClassVar[str] = "VolumeMask"
    soft: bool = False


@dataclass(frozen=True)
class Mask2D(DataObject):
    """A 2D mask image (y, x) in an MRC file, values in [0, 1]."""

    kind: ClassVar[str] = "Mask2D"
    file_fields: ClassVar[tuple[str, ...]] = ("path",)
    path: str
    pixel_size: float
    shape: tuple[int, int]
    soft: bool = False


@dataclass(frozen=True)
class Tomogram(DataObject):
    """A reconstructed tomogram (z, y, x) in an MRC file (or TIFF/EM imported as such)."""

    kind: ClassVar[str] = "Tomogram"
    file_fields: ClassVar[tuple[str, ...]] = ("path",)
    path: str
    pixel_size: float
    shape: tuple[int, int, int]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tilt_series: str | None = None
    #: the MRC header field(s) the frame (``origin``) came in, as for :class:`Volume`
    origin_field: str = "origin"
    #: voxel size / tilt-series pixel size (4 for a bin-4 tomogram; 1 when unknown)
    binning: float = 1.0

    @property
    def unbinned_pixel_size(self) -> float:
        """The tilt-series pixel size in Å (EMAN2 ``apix_unbin``)."""
        return self.pixel_size / self.binning


@dataclass(frozen=True)
class FSC(DataObject):
    """A Fourier shell correlation curve.

    ``frequencies`` in 1/Å, ``values`` the correlation per shell, ``crossings`` maps a name
    (e.g. ``"0.143"``) to the resolution in Å where the curve crosses it.
    """

    kind: ClassVar[str] = "FSC"
    frequencies: tuple[float, ...]
    values: tuple[float, ...]
    crossings: dict[str, float] = field(default_factory=dict)
    label: str = ""

    def to_attrs(self) -> dict[str, Any]:
        return {
            "frequencies": list(map(float, self.frequencies)),
            "values": list(map(float, self.values)),
            "crossings": dict(self.crossings),
            "label": self.label,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> FSC:
        return cls(
            tuple(attrs["frequencies"]),
            tuple(attrs["values"]),
            dict(attrs.get("crossings", {})),
            attrs.get("label", ""),
        )


@dataclass(frozen=True)
class Item:
    """One item of a set, made from a row of its columns; ``extra`` holds extra columns."""

    id: int
    extra: dict[str, Any] = field(default_factory=dict)


def _item_class(name: str, kind: str, doc: str) -> type[Item]:
    """An item dataclass whose fields are the standard columns of ``kind`` (one schema, in
    :mod:`emforge.columns`, defines both the stored columns and the item attributes)."""
    py = {"f": float, "i": int, "O": str}
    fields = [(c.name, py[c.dtype.kind], field(default=c.default)) for c in SCHEMAS[kind]]
    cls = dataclasses.make_dataclass(name, fields, bases=(Item,), frozen=True)
    cls.__doc__ = doc
    cls.__module__ = __name__
    return cls


Particle = _item_class(
    "Particle",
    "SetOfParticles",
    "A particle image: location, pose (RELION ZYZ, deg), shifts (Å), CTF, coordinate.",
)
Coordinate3D = _item_class(
    "Coordinate3D",
    "SetOfCoordinates3D",
    "A 3D position (px) in a tomogram, with optional orientation, tag and score.",
)
SubTomogram = _item_class(
    "SubTomogram",
    "SetOfSubTomograms",
    "A subtomogram image with its pose, shifts and position in its tomogram.",
)
VolumeItem = _item_class("VolumeItem", "SetOfVolumes", "One volume of a SetOfVolumes.")
TomogramItem = _item_class("TomogramItem", "SetOfTomograms", "One tomogram of a SetOfTomograms.")
TiltImage = _item_class(
    "TiltImage",
    "SetOfTiltSeries",
    "One tilt image of a SetOfTiltSeries: its series, index, geometry, dose and CTF.",
)


ITEM_TYPES: dict[str, type[Item]] = {
    "SetOfParticles": Particle,
    "SetOfCoordinates3D": Coordinate3D,
    "SetOfSubTomograms": SubTomogram,
    "SetOfVolumes": VolumeItem,
    "SetOfTomograms": TomogramItem,
    "SetOfTiltSeries": TiltImage,
}
SET_KINDS = tuple(ITEM_TYPES)
OBJECT_TYPES: dict[str, type[DataObject]] = {
    cls.kind: cls for cls in (Volume, VolumeMask, Mask2D, Tomogram, FSC)
}


def kind_of(obj: object) -> str:
    """The database kind of a typed object."""
    return getattr(obj, "kind", type(obj).__name__)


def make_items(kind: str, columns: dict[str, np.ndarray]):
    """Yield item objects from a block of columns (the convenience path)."""
    item_type = ITEM_TYPES[kind]
    std = {f.name for f in dataclasses.fields(item_type)} - {"extra"}
    names = list(columns)
    std_names = [n for n in names if n in std]
    extra_names = [n for n in names if n not in std]
    lists = {n: columns[n].tolist() for n in names}
    for i in range(len(columns["id"])):
        extra = {n: lists[n][i] for n in extra_names}
        yield item_type(extra=extra, **{n: lists[n][i] for n in std_names})
