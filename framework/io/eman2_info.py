"""EMAN2 tomogram info files, ``info/<tomogram>_info.json``: 3D boxes with classes.

Layout (EMAN2 2018-09 standard): ``boxes_3d`` rows ``[x, y, z, method, score, class_id]``
(template matching adds a 7th field, the peak volume in voxels), ``class_list``
``{"<id>": {"boxsize": int, "name": str}}`` (old files: a plain name, boxsize 64). When
``apix_unbin`` is present the box coordinates are UNBINNED tilt-series pixels from the
tomogram centre; without it they are voxel indices of that tomogram.

Reading keeps every float as written. Coordinates come back in one of two frames (the set's
``frame`` attribute): ``"voxel"`` (x, y, z voxel positions of a tomogram of known shape and
voxel size, as ``docs/conventions.md`` states) or, when the tomogram's shape is not given,
``"centred"``: x, y, z in unbinned pixels from the centre with ``pixel_size = apix_unbin``.

Writing reproduces EMAN2's writer byte for byte: ``json.dumps(indent=0, sort_keys=True)``,
then every bracketed run without a closing bracket or a brace inside loses its newlines (so
each box, and each flat list, is one line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..coords3d import centres
from ..errors import InputFileError

__all__ = ["read_info", "dumps_info", "info_to_columns", "columns_to_info", "info_name"]

_INNER = re.compile(r"\[[^\]{]*\]")


def info_name(tomogram: str) -> str:
    """EMAN2's info file name of a tomogram: the base name before any ``__``, ``_info.json``."""
    base = Path(tomogram).name
    base = base.split(".")[0] if "." in base else base
    return base.split("__")[0] + "_info.json"


def read_info(path: str | Path) -> dict[str, Any]:
    """Parse an info json; refuses files that are not JSON objects."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputFileError(str(path), "not a text file") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(
            str(path), f"not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(info, dict):
        raise InputFileError(str(path), "is not a JSON object (not an EMAN2 info file)")
    return info


def dumps_info(info: Mapping[str, Any]) -> str:
    """The text EMAN2 writes for ``info``."""
    text = json.dumps(info, indent=0, sort_keys=True)
    return _INNER.sub(lambda m: m.group(0).replace("\n", ""), text)


def _classes(info: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    out = {}
    for k, v in (info.get("class_list") or {}).items():
        if isinstance(v, str):
            v = {"name": v, "boxsize": 64}
        out[int(k)] = {
            "name": str(v.get("name", f"particles_{int(k):02d}")),
            "boxsize": v.get("boxsize", 64),
        }
    return out


def info_to_columns(
    info: Mapping[str, Any],
    path: str,
    *,
    tomogram: str,
    shape_zyx: Sequence[int] | None = None,
    pixel_size: float | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """SetOfCoordinates3D columns and set attributes from a parsed info json.

    ``shape_zyx``/``pixel_size`` name the tomogram the coordinates should refer to; without a
    shape, files with ``apix_unbin`` give the ``centred`` frame (see the module docstring).
    """
    boxes = info.get("boxes_3d")
    if not isinstance(boxes, list):
        raise InputFileError(path, "has no 'boxes_3d' list (not an EMAN2 tomogram info file)")
    classes = _classes(info)
    apix_unbin = info.get("apix_unbin")
    n = len(boxes)
    xyz = np.zeros((n, 3))
    method = np.empty(n, dtype=object)
    score = np.zeros(n)
    cls = np.zeros(n, dtype=np.int64)
    peak = np.full(n, -1, dtype=np.int64)
    for i, box in enumerate(boxes):
        if not isinstance(box, list) or len(box) < 3:
            raise InputFileError(path, f"boxes_3d[{i}] is not a list [x, y, z, ...]")
        box = list(box) + [0, 0, 0, "manual", 0.0, 0][len(box) :]
        try:
            xyz[i] = [float(v) for v in box[:3]]
            score[i] = float(box[4])
            cls[i] = int(box[5])
        except (TypeError, ValueError):
            raise InputFileError(
                path, f"boxes_3d[{i}] has a non-numeric coordinate, score or class"
            ) from None
        method[i] = str(box[3])
        if len(box) > 6:
            peak[i] = int(box[6])
    for c in np.unique(cls).tolist():
        classes.setdefault(int(c), {"name": f"particles_{int(c):02d}", "boxsize": 64})
    frame = "voxel"
    ps = pixel_size
    if apix_unbin is not None:
        if shape_zyx is not None and pixel_size is not None:
            xyz = xyz * (float(apix_unbin) / float(pixel_size)) + centres(shape_zyx)
        else:
            frame, ps = "centred", float(apix_unbin)
    cols = {
        "tomogram": np.full(n, tomogram, dtype=object),
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "pixel_size": np.full(n, np.nan if ps is None else ps),
        "tag": np.array([classes[int(c)]["name"] for c in cls], dtype=object),
        "method": method,
        "score": score,
        "boxsize": np.array([int(classes[int(c)]["boxsize"]) for c in cls], dtype=np.int64),
        "eman2_class": cls,
        "peak_volume": peak,
    }
    rest = {k: v for k, v in info.items() if k not in ("boxes_3d", "class_list")}
    attrs = {
        "frame": frame,
        "eman2_classes": {str(k): v for k, v in sorted(classes.items())},
        "eman2_info": rest,
    }
    return cols, attrs


def columns_to_info(
    cols: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    base: Mapping[str, Any] | None = None,
    append: bool = False,
    apix_unbin: float | None = None,
    shape_zyx: Sequence[int] | None = None,
) -> dict[str, Any]:
    """An info dict for one tomogram's coordinates, merged into ``base`` (an existing file).

    ``append`` keeps the boxes already in ``base``; otherwise they are replaced. Classes are
    matched by name; a new name gets ``max(id) + 1``. With ``apix_unbin`` (from the argument,
    ``base`` or the imported attributes) the boxes are written as unbinned pixels from the
    centre, which needs ``shape_zyx`` unless the set is already in the ``centred`` frame.
    """
    info: dict[str, Any] = dict(attrs.get("eman2_info") or {})
    info.update(dict(base or {}))
    classes = _classes({"class_list": attrs.get("eman2_classes") or {}})
    classes.update(_classes(info))
    apix = apix_unbin if apix_unbin is not None else info.get("apix_unbin")
    if apix is not None:
        info["apix_unbin"] = apix
    boxes = list(info.get("boxes_3d") or []) if append else []
    xyz = np.stack([np.asarray(cols[k], dtype=np.float64) for k in ("x", "y", "z")], axis=1)
    ps = np.asarray(cols["pixel_size"], dtype=np.float64)
    if apix is not None:
        if attrs.get("frame") == "centred":
            scale = ps / float(apix)
            xyz = np.where((scale == 1.0)[:, None], xyz, xyz * scale[:, None])
        else:
            if shape_zyx is None:
                raise InputFileError(
                    "shape", "the tomogram shape is needed to write apix_unbin boxes"
                )
            xyz = (xyz - centres(shape_zyx)) * (ps / float(apix))[:, None]
    by_name = {v["name"]: k for k, v in classes.items()}
    n = len(xyz)
    tags = cols.get("tag", np.full(n, "", dtype=object))
    given = cols.get("eman2_class")
    sizes = cols.get("boxsize", np.zeros(n, dtype=np.int64))
    method = cols.get("method", np.full(n, "manual", dtype=object))
    score = cols.get("score", np.zeros(n))
    peak = cols.get("peak_volume", np.full(n, -1, dtype=np.int64))
    for i in range(n):
        name = str(tags[i]) or "particles_00"
        cid = by_name.get(name)
        if cid is None:
            cid = (
                int(given[i])
                if given is not None and int(given[i]) not in classes
                else (max(classes) + 1 if classes else 0)
            )
            classes[cid] = {"name": name, "boxsize": int(sizes[i]) or 64}
            by_name[name] = cid
        s = float(score[i])
        box = [
            float(xyz[i, 0]),
            float(xyz[i, 1]),
            float(xyz[i, 2]),
            str(method[i] or "manual"),
            0.0 if np.isnan(s) else s,
            cid,
        ]
        if int(peak[i]) >= 0:
            box.append(int(peak[i]))
        boxes.append(box)
    info["boxes_3d"] = boxes
    info["class_list"] = {
        str(k): {"boxsize": v["boxsize"], "name": v["name"]} for k, v in sorted(classes.items())
    }
    return info
