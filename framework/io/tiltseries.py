"""Per-tilt geometry, dose and CTF of tilt series → ``SetOfTiltSeries`` columns.

Readers (each returns one dict of columns, one row per tilt, see
:data:`emforge.columns.TILT_COLUMNS`; ``tilt_index`` follows the file's order):

* IMOD ``.tlt``: one tilt angle per line.
* Warp ``.xml`` (UTF-16 or UTF-8): ``Angles``, ``Dose`` (accumulated e/Å²), ``AxisAngle``,
  ``AxisOffsetX/Y`` (Å), ``GridCTF`` (defocus µm per tilt), ``GridCTFDefocusDelta`` (µm,
  U = D + Δ, V = D - Δ), ``GridCTFDefocusAngle`` (deg), CTF ``PixelSize``/``Voltage``/``Cs``/
  ``Amplitude``.
* SerialEM ``.mdoc`` through ``mdocfile``:
  ``TiltAngle``, ``ExposureDose`` (accumulated in acquisition order), ``PixelSpacing``,
  ``Defocus`` (µm, negative = underfocus in SerialEM), ``RotationAngle``.
* RELION 5 ``tomograms.star``: one block per tilt series with ``rlnTomoProj*`` rows,
  ``rlnDefocusU/V/Angle``, ``rlnMicrographPreExposure``; optics from ``data_global``. The
  tilt angle is read from ``rlnTomoNominalStageTiltAngle`` when present; otherwise it is
  derived from the projection matrix: magnitude ``acos(P[2,2])`` (exact when there is no
  off-axis tilt), sign that of ``-P[2,0]`` (a heuristic, not checked against stage angles) and the 12 matrix entries are kept as extra
  columns ``proj_00 … proj_23``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..columns import STR
from ..errors import InputFileError

__all__ = ["read_tlt", "read_warp_xml", "read_mdoc", "read_relion5_tomograms", "read_tiltseries"]


def _base(name: str, n: int) -> dict[str, np.ndarray]:
    return {"tilt_series": np.full(n, name, dtype=STR), "tilt_index": np.arange(n, dtype=np.int64)}


def read_tlt(path: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    p = Path(path)
    try:
        angles = np.array([float(v) for v in p.read_text().split()])
    except (ValueError, UnicodeDecodeError):
        raise InputFileError(str(p), "not a .tlt file (one tilt angle per line)") from None
    if len(angles) == 0:
        raise InputFileError(str(p), "holds no tilt angles")
    return {**_base(name or p.stem, len(angles)), "tilt_angle": angles}


def _floats(root, tag: str, path: str) -> np.ndarray | None:
    node = root.find(tag)
    if node is None or node.text is None:
        return None
    try:
        return np.array([float(v) for v in node.text.split()])
    except ValueError:
        raise InputFileError(path, f"<{tag}> holds a value that is not a number") from None


def _grid(root, tag: str, n: int) -> np.ndarray | None:
    node = root.find(tag)
    if node is None:
        return None
    vals = np.full(n, np.nan)
    for nd in node:
        z = int(nd.attrib.get("Z", 0))
        if nd.attrib.get("X", "0") == "0" and nd.attrib.get("Y", "0") == "0" and z < n:
            vals[z] = float(nd.attrib["Value"])
    return vals


def read_warp_xml(path: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    p = Path(path)
    try:
        root = ET.fromstring(p.read_bytes())
    except ET.ParseError as exc:
        raise InputFileError(str(p), f"not valid XML ({exc})") from None
    if root.tag != "TiltSeries":
        raise InputFileError(str(p), f"root element is <{root.tag}>, not a Warp <TiltSeries>")
    angles = _floats(root, "Angles", str(p))
    if angles is None:
        raise InputFileError(str(p), "has no <Angles>")
    n = len(angles)
    cols = {**_base(name or p.stem, n), "tilt_angle": angles}
    for tag, col in (("Dose", "dose"), ("AxisAngle", "tilt_axis")):
        v = _floats(root, tag, str(p))
        if v is not None and len(v) == n:
            cols[col] = v
    for tag, col in (("AxisOffsetX", "shift_x"), ("AxisOffsetY", "shift_y")):
        v = _floats(root, tag, str(p))
        if v is not None and len(v) == n:
            cols[col] = v
    params = {e.attrib.get("Name"): e.attrib.get("Value") for e in root.iter("Param")}
    d = _grid(root, "GridCTF", n)
    if d is not None:
        delta = _grid(root, "GridCTFDefocusDelta", n)
        delta = np.zeros(n) if delta is None else delta
        cols["defocus_u"] = (d + delta) * 1e4
        cols["defocus_v"] = (d - delta) * 1e4
        ang = _grid(root, "GridCTFDefocusAngle", n)
        if ang is not None:
            cols["defocus_angle"] = ang
    for key, col in (
        ("PixelSize", "pixel_size"),
        ("Voltage", "voltage"),
        ("Cs", "cs"),
        ("Amplitude", "amplitude_contrast"),
    ):
        if params.get(key) is not None:
            cols[col] = np.full(n, float(params[key]))
    return cols


def read_mdoc(path: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    import mdocfile  # a dependency; imported here so other readers stay light

    p = Path(path)
    try:
        df = mdocfile.read(p)
    except Exception as exc:  # the parser's own errors: name the file, one line
        raise InputFileError(str(p), f"not a SerialEM .mdoc ({type(exc).__name__})") from None
    n = len(df)
    cols = {**_base(name or p.name.split(".")[0], n), "tilt_angle": df["TiltAngle"].to_numpy(float)}
    if "ExposureDose" in df:
        dose = df["ExposureDose"].fillna(0).to_numpy(float)
        order = np.argsort(df["DateTime"].to_numpy()) if "DateTime" in df else np.arange(n)
        acc = np.zeros(n)
        acc[order] = np.concatenate([[0.0], np.cumsum(dose[order])[:-1]])
        cols["dose"] = acc
    if "PixelSpacing" in df:
        cols["pixel_size"] = df["PixelSpacing"].to_numpy(float)
    if "Defocus" in df:
        cols["defocus_u"] = cols["defocus_v"] = -df["Defocus"].to_numpy(float) * 1e4
    if "RotationAngle" in df:
        cols["tilt_axis"] = df["RotationAngle"].to_numpy(float)
    return cols


def _matrix(path: str, values) -> np.ndarray:
    out = []
    for v in values:
        try:
            out.append([float(x) for x in re.sub(r"[\[\]]", "", str(v)).split(",")])
        except ValueError:
            raise InputFileError(
                path, f"projection matrix row {v!r} is not a list of numbers"
            ) from None
    return np.array(out)


def read_relion5_tomograms(path: str | Path) -> dict[str, np.ndarray]:
    from .star import read_star_blocks

    p = Path(path)
    blocks = read_star_blocks(p)
    glob = blocks.get("global")
    if glob is None or "rlnTomoName" not in glob:
        raise InputFileError(
            str(p), "has no data_global block with rlnTomoName (not a RELION 5 tomograms.star)"
        )
    parts: list[dict[str, np.ndarray]] = []
    for _, row in glob.iterrows():
        name = str(row["rlnTomoName"])
        t = blocks.get(name)
        if t is None:
            raise InputFileError(str(p), f"has no data_{name} block for tilt series {name}")
        n = len(t)
        cols = _base(name, n)
        if "rlnTomoProjX" in t:
            rows = [_matrix(str(p), t[f"rlnTomoProj{a}"]) for a in "XYZ"]
            for i, r in enumerate(rows):
                for j in range(4):
                    cols[f"proj_{i}{j}"] = r[:, j]
            mag = np.degrees(np.arccos(np.clip(rows[2][:, 2], -1.0, 1.0)))
            derived = np.where(rows[2][:, 0] > 0, -mag, mag)
        else:
            derived = np.zeros(n)
        cols["tilt_angle"] = (
            t["rlnTomoNominalStageTiltAngle"].to_numpy(float)
            if "rlnTomoNominalStageTiltAngle" in t
            else derived
        )
        for star, col in (
            ("rlnDefocusU", "defocus_u"),
            ("rlnDefocusV", "defocus_v"),
            ("rlnDefocusAngle", "defocus_angle"),
            ("rlnMicrographPreExposure", "dose"),
        ):
            if star in t:
                cols[col] = t[star].to_numpy(float)
        for star, col in (
            ("rlnTomoTiltSeriesPixelSize", "pixel_size"),
            ("rlnVoltage", "voltage"),
            ("rlnSphericalAberration", "cs"),
            ("rlnAmplitudeContrast", "amplitude_contrast"),
        ):
            if star in glob:
                cols[col] = np.full(n, float(row[star]))
        if "rlnTomoTiltSeriesName" in glob:
            cols["image_path"] = np.full(n, str(row["rlnTomoTiltSeriesName"]), dtype=STR)
            cols["image_index"] = np.arange(n, dtype=np.int64)
        parts.append(cols)
    keys = sorted({k for c in parts for k in c})
    out = {}
    for k in keys:
        if all(k in c for c in parts):
            out[k] = np.concatenate([c[k] for c in parts])
    return out


def read_tiltseries(path: str | Path, fmt: str = "auto") -> dict[str, np.ndarray]:
    """Dispatch on ``fmt`` (``tlt``, ``xml``, ``mdoc``, ``star``) or the file extension."""
    p = Path(path)
    if fmt == "auto":
        ext = p.suffix.lower()
        fmt = {
            ".tlt": "tlt",
            ".rawtlt": "tlt",
            ".xml": "xml",
            ".mdoc": "mdoc",
            ".star": "star",
        }.get(ext, "")
        if not fmt:
            raise InputFileError(
                str(p), "unknown tilt-series format; give format= tlt, xml, mdoc or star"
            )
    return {
        "tlt": read_tlt,
        "xml": read_warp_xml,
        "mdoc": read_mdoc,
        "star": read_relion5_tomograms,
    }[fmt](p)
