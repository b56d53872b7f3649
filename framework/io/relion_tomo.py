"""RELION 5 / Warp sub-tilt particles: 2D image stacks, one image per tilt of each particle.

A particle STAR file with ``rlnTomoSubTomosAre2DStacks = 1`` (written by WarpTools
``ts_export_particles --2d`` and RELION 5's pseudo-subtomogram job) names one MRC stack per
particle (``rlnImageName``) holding one image per tilt, in the order of the rows of that
particle's tilt series in the tomogram STAR file (``rlnTomoTomogramsFile``). Each image is read
with its own pose and CTF, exactly as RELION does it (``Experiment::read``):

* pose: ``A_image = P_f @ A_particle``, where ``P_f`` is the rotation part of the tilt's
  projection matrix (rows ``rlnTomoProjX/Y/Z``) and ``A_particle`` the matrix of the particle's
  ``rlnAngleRot/Tilt/Psi`` (times ``rlnTomoSubtomogramRot/Tilt/Psi`` when present); all are
  matrices A of docs/conventions.md (map frame -> image frame);
* shift: the particle's 3D offset ``rlnOriginX/Y/ZAngst`` projected by ``P_f`` (first two rows),
  in Angstrom with RELION's sign;
* CTF: the tilt's ``rlnDefocusU/V/Angle`` (Angstrom, degrees) plus the particle's depth in that
  tilt, ``hand * (P_f (r - c))_z * tilt-series pixel size`` (``rlnTomoHand``); voltage, Cs and
  amplitude contrast from the optics group; ``rlnCtfScalefactor`` per tilt;
* only the tilts flagged in ``rlnTomoVisibleFrames`` are kept;
* ``rlnCtfDataAreCtfPremultiplied = 1``: the images already carry their CTF (reconstruct them
  with ``ctf_premultiplied=True``).

Particle coordinates (for the depth) are ``rlnCenteredCoordinateX/Y/ZAngst`` when present, else
``rlnCoordinateX/Y/Z`` in tilt-series pixels measured from the tomogram centre ``rlnTomoSize / 2``
(RELION 4's columns, read as RELION 5 does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputFileError
from ..numerics.rotations import euler_zyz_to_matrix
from .star import read_star_blocks

__all__ = ["SubtiltImages", "read_subtilt_particles"]

_PROJ = ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ")


@dataclass(frozen=True)
class SubtiltImages:
    """One row per visible tilt image of every particle (N images of P particles).

    Attributes
    ----------
    stack : ndarray (N,) object, absolute path of the MRC stack holding the image
    frame : ndarray (N,) int64, 0-based image index in that stack (= tilt index)
    particle : ndarray (N,) int64, 0-based row of the particle in the STAR file
    rotations : ndarray (N, 3, 3) float64, matrices A (map frame -> image frame)
    shifts : ndarray (N, 2) float64, (shift_x, shift_y) Angstrom, RELION's sign
    defocus_u, defocus_v : ndarray (N,) float64, Angstrom (depth included)
    defocus_angle : ndarray (N,) float64, degrees
    voltage, cs, amplitude_contrast : ndarray (N,) float64, kV, mm, fraction
    ctf_scale : ndarray (N,) float64, ``rlnCtfScalefactor`` (1 when absent)
    pre_exposure : ndarray (N,) float64, e/A^2 before the tilt (0 when absent)
    subset : ndarray (N,) int64 of 1/2 (the particle's ``rlnRandomSubset``), or None
    pixel_size : float, Angstrom per pixel of the images
    box : int, image side in pixels
    ctf_premultiplied : bool
    """

    stack: np.ndarray
    frame: np.ndarray
    particle: np.ndarray
    rotations: np.ndarray
    shifts: np.ndarray
    defocus_u: np.ndarray
    defocus_v: np.ndarray
    defocus_angle: np.ndarray
    voltage: np.ndarray
    cs: np.ndarray
    amplitude_contrast: np.ndarray
    ctf_scale: np.ndarray
    pre_exposure: np.ndarray
    subset: np.ndarray | None
    pixel_size: float
    box: int
    ctf_premultiplied: bool

    def __len__(self) -> int:
        return int(self.frame.size)

    def read_images(self) -> np.ndarray:
        """All images, float32 (N, box, box), read stack by stack."""
        from .mrc import open_stack

        out = np.empty((len(self), self.box, self.box), dtype=np.float32)
        for path in dict.fromkeys(self.stack):
            rows = np.nonzero(self.stack == path)[0]
            with open_stack(path) as st:
                if st.shape[1:] != (self.box, self.box):
                    raise InputFileError(path, f"images are {st.shape[1:]}, expected {self.box}²")
                if int(self.frame[rows].max()) >= len(st):
                    raise InputFileError(path, f"has {len(st)} images, fewer than the tilts")
                out[rows] = st[self.frame[rows]]
        return out


def _vector(path: Path, text: str, label: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in str(text).strip().strip("[]").split(",")])
    except ValueError:
        raise InputFileError(path, f"{label}: not a list of numbers: {text!r}") from None


def _column(path: Path, table: pd.DataFrame, label: str, default=None) -> np.ndarray:
    if label in table:
        return table[label].to_numpy()
    if default is None:
        raise InputFileError(path, f"no {label} column")
    return np.full(len(table), default)


def _tomogram_file(particles: Path, blocks: dict, tomograms) -> Path:
    if tomograms is not None:
        return Path(tomograms)
    opt = particles.with_name(particles.stem + "_optimisation_set.star")
    if opt.is_file():
        name = read_star_blocks(opt)[""]["rlnTomoTomogramsFile"].iloc[0]
        return (opt.parent / str(name)).resolve()
    guess = particles.with_name(particles.stem + "_tomograms.star")
    if guess.is_file():
        return guess
    raise InputFileError(particles, "no tomograms STAR file given or found beside it")


def _optics(path: Path, blocks: dict, table: pd.DataFrame) -> pd.DataFrame:
    optics = blocks.get("optics")
    if optics is None or "rlnOpticsGroup" not in optics:
        raise InputFileError(path, "no data_optics block with rlnOpticsGroup")
    by = optics.set_index("rlnOpticsGroup")
    groups = _column(path, table, "rlnOpticsGroup", 1)
    missing = set(groups) - set(by.index)
    if missing:
        raise InputFileError(path, f"optics groups {sorted(missing)} are not in data_optics")
    return by.loc[groups].reset_index()


def _particle_matrices(path: Path, table: pd.DataFrame) -> np.ndarray:
    a = euler_zyz_to_matrix(
        np.stack([_column(path, table, f"rlnAngle{k}", 0.0) for k in ("Rot", "Tilt", "Psi")], 1)
    )
    if "rlnTomoSubtomogramRot" in table:
        sub = np.stack([table[f"rlnTomoSubtomogram{k}"] for k in ("Rot", "Tilt", "Psi")], 1)
        a = euler_zyz_to_matrix(sub) @ a
    return a


def _centred_positions(path: Path, table: pd.DataFrame, tomo: pd.Series, px: float):
    if "rlnCenteredCoordinateXAngst" in table:
        return np.stack([table[f"rlnCenteredCoordinate{k}Angst"] for k in "XYZ"], 1) / px
    size = np.array([tomo[f"rlnTomoSize{k}"] for k in "XYZ"], dtype=np.float64)
    xyz = np.stack([_column(path, table, f"rlnCoordinate{k}", 0.0) for k in "XYZ"], 1)
    return xyz.astype(np.float64) - size / 2.0


def read_subtilt_particles(
    particles: str | os.PathLike, tomograms: str | os.PathLike | None = None
) -> SubtiltImages:
    """Read a RELION 5 / Warp sub-tilt particle set (module notes for the conventions).

    Parameters
    ----------
    particles : path of the particle STAR file
    tomograms : path of the tomogram STAR file; default from ``*_optimisation_set.star`` or
        ``*_tomograms.star`` beside the particle file

    Returns
    -------
    SubtiltImages

    Raises
    ------
    InputFileError
        A missing file, block, column or tilt series, or a malformed vector.
    """
    path = Path(particles).resolve()
    blocks = read_star_blocks(path)
    table = blocks.get("particles")
    if table is None:
        raise InputFileError(path, "no data_particles block")
    general = blocks.get("general")
    stacks2d = general is not None and int(general.get("rlnTomoSubTomosAre2DStacks", [0])[0]) == 1
    if not stacks2d:
        raise InputFileError(path, "not a 2D sub-tilt set (rlnTomoSubTomosAre2DStacks is not 1)")
    tpath = _tomogram_file(path, blocks, tomograms)
    tblocks = read_star_blocks(tpath)
    glob = tblocks.get("global")
    if glob is None or "rlnTomoName" not in glob:
        raise InputFileError(tpath, "no data_global block with rlnTomoName")
    glob = glob.set_index("rlnTomoName")
    optics = _optics(path, blocks, table)
    a_part = _particle_matrices(path, table)
    origin = np.stack([_column(path, table, f"rlnOrigin{k}Angst", 0.0) for k in "XYZ"], 1)
    rows: dict[str, list] = {k: [] for k in SubtiltImages.__dataclass_fields__}
    names = _column(path, table, "rlnTomoName").astype(str)
    for tomo_name in dict.fromkeys(names):
        if tomo_name not in glob.index or tomo_name not in tblocks:
            raise InputFileError(tpath, f"no tilt series {tomo_name!r}")
        series = _series(tpath, tblocks[tomo_name], glob.loc[tomo_name])
        for p in np.nonzero(names == tomo_name)[0]:
            _add_particle(rows, path, table, optics, series, int(p), a_part[p], origin[p])
    cat = {k: np.concatenate(v) for k, v in rows.items() if v}
    px = optics["rlnImagePixelSize"].to_numpy(float)
    boxes = optics["rlnImageSize"].to_numpy(int)
    if np.ptp(px) > 1e-6 or np.ptp(boxes) != 0:
        raise InputFileError(path, "optics groups differ in rlnImagePixelSize or rlnImageSize")
    premult = optics.get("rlnCtfDataAreCtfPremultiplied", pd.Series([0]))
    return SubtiltImages(
        **{k: cat[k] for k in cat if k != "subset"},
        subset=cat["subset"] if np.all(cat["subset"] > 0) else None,
        pixel_size=float(px[0]), box=int(boxes[0]),
        ctf_premultiplied=bool(int(premult.iloc[0])),
    )  # fmt: skip


@dataclass(frozen=True)
class _Series:
    """One tilt series of the tomogram STAR file: its tilts' table, global row and the
    rotation parts of the tilts' projection matrices ``proj`` (T, 3, 3), parsed once."""

    path: Path
    tilts: pd.DataFrame
    tomo: pd.Series
    proj: np.ndarray


def _series(path: Path, tilts: pd.DataFrame, tomo: pd.Series) -> _Series:
    proj = np.stack([[_vector(path, v, lab)[:3] for v in tilts[lab]] for lab in _PROJ], 1)
    return _Series(path, tilts, tomo, proj)


def _add_particle(rows, path, table, optics, series: _Series, p: int, a_part, origin) -> None:
    """Append the visible tilt images of particle ``p`` to ``rows`` (lists per field)."""
    tilts, tpath = series.tilts, series.path
    vis = _vector(path, table["rlnTomoVisibleFrames"].iloc[p], "rlnTomoVisibleFrames")
    if vis.size != len(tilts):
        raise InputFileError(path, f"particle {p + 1}: {vis.size} flags for {len(tilts)} tilts")
    f = np.nonzero(vis > 0)[0]
    proj = series.proj[f]
    ts_px = float(series.tomo["rlnTomoTiltSeriesPixelSize"])
    centred = _centred_positions(path, table.iloc[[p]], series.tomo, ts_px)[0]
    dz = float(series.tomo.get("rlnTomoHand", 1.0)) * (proj[:, 2, :] @ centred) * ts_px
    subset = int(table["rlnRandomSubset"].iloc[p]) if "rlnRandomSubset" in table else 0
    values = {
        "stack": np.full(f.size, str(_stack_path(path, table["rlnImageName"].iloc[p])), object),
        "frame": f,
        "particle": np.full(f.size, p),
        "rotations": proj @ a_part,
        "shifts": proj[:, :2, :] @ origin,
        "defocus_u": tilts["rlnDefocusU"].to_numpy(float)[f] + dz,
        "defocus_v": tilts["rlnDefocusV"].to_numpy(float)[f] + dz,
        "defocus_angle": tilts["rlnDefocusAngle"].to_numpy(float)[f],
        "ctf_scale": _column(tpath, tilts, "rlnCtfScalefactor", 1.0)[f].astype(float),
        "pre_exposure": _column(tpath, tilts, "rlnMicrographPreExposure", 0.0)[f].astype(float),
        "subset": np.full(f.size, subset),
    }
    for key, lab in (("voltage", "rlnVoltage"), ("cs", "rlnSphericalAberration"),
                     ("amplitude_contrast", "rlnAmplitudeContrast")):  # fmt: skip
        values[key] = np.full(f.size, float(optics[lab].iloc[p]))
    for key, value in values.items():
        rows[key].append(value)


def _stack_path(star: Path, name: str) -> Path:
    name = str(name).split("@")[-1]
    p = Path(name)
    return p if p.is_absolute() else (star.parent / p)
