"""FSC curves out: RELION postprocess STAR, EMDB FSC XML and CSV.

A curve is its shell frequencies ``s`` (1/Å, shell ``k`` at ``k / (N · pixel size)``, the
first at 0) and its correlation per shell. Every writer is atomic (see ``docs/conventions.md``).
"""

from __future__ import annotations

import csv
import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..errors import ParamError
from .mrc import atomic_target

__all__ = ["FSC_FORMATS", "write_fsc", "write_fsc_star", "write_fsc_xml", "write_fsc_csv"]

#: RELION's resolution (Å) for the DC shell, whose frequency is 0
_DC_ANGSTROM = 999.0
_NUMBER = "%.12g"


def _curve(frequencies, values) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(frequencies, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if s.ndim != 1 or s.shape != v.shape or s.size == 0:
        raise ParamError(
            "fsc", f"frequencies and values must be equal-length 1D, got {s.shape} and {v.shape}"
        )
    return s, v


def _angstrom(s: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), np.inf)


def _write(path: Path, text: str) -> Path:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_fsc_star(
    path: str | os.PathLike,
    frequencies,
    values,
    *,
    resolution: float | None = None,
    unmasked: bool = False,
) -> Path:
    """Write an FSC curve as RELION's postprocess STAR does (``data_general`` + ``data_fsc``).

    Parameters
    ----------
    path : str or path-like
    frequencies : array-like, shape (n,)
        Shell frequencies in 1/Å (``rlnResolution``), shell ``k`` is ``rlnSpectralIndex`` k.
    values : array-like, shape (n,)
        The FSC, written as ``rlnFourierShellCorrelationCorrected`` (the curve RELION quotes
        its resolution from); also as ``rlnFourierShellCorrelationUnmaskedMaps`` when
        ``unmasked`` (an unmasked FSC needs no correction: the two are the same curve).
    resolution : float, optional
        ``rlnFinalResolution`` (Å) in ``data_general``.

    Notes
    -----
    ``rlnAngstromResolution`` is ``1 / rlnResolution``, and 999 for the DC shell (s = 0), as
    RELION writes it.
    """
    s, v = _curve(frequencies, values)
    table = pd.DataFrame(
        {
            "rlnSpectralIndex": np.arange(s.size, dtype=np.int64),
            "rlnResolution": s,
            "rlnAngstromResolution": np.where(s > 0, _angstrom(s), _DC_ANGSTROM),
            "rlnFourierShellCorrelationCorrected": v,
        }
    )
    if unmasked:
        table["rlnFourierShellCorrelationUnmaskedMaps"] = v
    general = {} if resolution is None else {"rlnFinalResolution": float(resolution)}
    blocks = {"general": general, "fsc": table} if general else {"fsc": table}
    text = starfile.to_string(blocks, float_format=_NUMBER, na_rep="nan")
    if text.startswith("# Created by the starfile"):  # a fixed line: equal data, equal bytes
        text = "# written by emforge" + text[text.index("\n") :]
    return _write(Path(path), text)


def write_fsc_xml(path: str | os.PathLike, frequencies, values, *, title: str = "FSC") -> Path:
    """Write an FSC curve as an EMDB FSC XML file (the layout EMDB deposition takes).

    ``<fsc title=... xaxis="Resolution (A-1)" yaxis="Correlation Coefficient">`` with one
    ``<coordinate><x>s</x><y>fsc</y></coordinate>`` per shell, x in 1/Å.
    """
    s, v = _curve(frequencies, values)
    root = ET.Element("fsc", title=title, xaxis="Resolution (A-1)", yaxis="Correlation Coefficient")
    for x, y in zip(s.tolist(), v.tolist(), strict=True):
        point = ET.SubElement(root, "coordinate")
        ET.SubElement(point, "x").text = _NUMBER % x
        ET.SubElement(point, "y").text = _NUMBER % y
    ET.indent(root)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
    return _write(Path(path), text + "\n")


def write_fsc_csv(path: str | os.PathLike, frequencies, values) -> Path:
    """Write an FSC curve as CSV: ``shell, frequency_per_A, resolution_A, fsc`` (DC: inf Å)."""
    s, v = _curve(frequencies, values)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["shell", "frequency_per_A", "resolution_A", "fsc"])
    for k, (x, d, y) in enumerate(zip(s.tolist(), _angstrom(s).tolist(), v.tolist(), strict=True)):
        out.writerow([k, _NUMBER % x, _NUMBER % d, _NUMBER % y])
    return _write(Path(path), buf.getvalue())


#: file suffix -> what it holds
FSC_FORMATS = {
    ".star": "RELION postprocess STAR",
    ".xml": "EMDB FSC XML",
    ".csv": "CSV",
}


def write_fsc(
    path: str | os.PathLike,
    frequencies,
    values,
    *,
    resolution: float | None = None,
    title: str = "FSC",
    unmasked: bool = False,
) -> Path:
    """Write an FSC curve in the format its suffix names (:data:`FSC_FORMATS`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".star":
        return write_fsc_star(path, frequencies, values, resolution=resolution, unmasked=unmasked)
    if suffix == ".xml":
        return write_fsc_xml(path, frequencies, values, title=title)
    if suffix == ".csv":
        return write_fsc_csv(path, frequencies, values)
    known = ", ".join(f"{k} ({v})" for k, v in FSC_FORMATS.items())
    raise ParamError("output", f"{path}: an FSC exports to {known}")
