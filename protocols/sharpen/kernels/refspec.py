"""A reference protein amplitude spectrum: the expected fall-off of a protein map beyond 10 Å.

Beyond about 10 Å a protein map's rms Fourier amplitude per shell is not a straight Guinier
line: it dips near 6-7 Å, rises again to a bump at 4-5 Å (the spacing of helices and strands
and of neighbouring backbone atoms) and then falls with the atoms' own form factors. Scaling a
map to a flat (B = 0) target erases that bump; scaling it to this curve keeps it.

**The curve** (:data:`PROTEIN_LN_AMPLITUDE` at :data:`PROTEIN_S`) is ``ln A(s)`` of the rms
amplitude per Fourier shell of the density of an atomic model with every atomic B set to 0,
with gemmi's electron (Mott-Bethe) form factors (:func:`.model.model_map`), normalised to 0 at
10 Å, from 100 Å to 1.5 Å (``s`` in 1/Å). The shipped table is computed from PDB 5NI1
(haemoglobin, protein atoms only, no waters or ligands) in a 160³ box at 0.7 Å/px by
``python -m emforge.protocols.sharpen.kernels.refspec MODEL [MODEL ...]``, which rewrites the table module
(``_protein_spectrum.py``); several models are averaged in ``ln A``. Below 10 Å the
curve describes that molecule's shape and box rather than proteins in general; the kernels use
it only beyond 10 Å.

**Use** (:func:`expected_amplitude`): the signal amplitude of a map is fitted as
``ln A_signal = ln R(s) + a - B s^2/4`` over the map-B fit range (``d_max`` to ``d_min``),
i.e. the map is the reference blurred by ``B``; beyond ``s0 = 1/d_max`` the expected amplitude
is the reference, scaled to that fit at ``s0``: ``E(s) = exp(a - B s0^2/4 + ln R(s) - ln R(s0))
* exp(-b_target (s^2 - s0^2)/4)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._protein_spectrum import PROTEIN_LN_AMPLITUDE, PROTEIN_S, SOURCE

__all__ = [
    "PROTEIN_S",
    "PROTEIN_LN_AMPLITUDE",
    "SOURCE",
    "protein_ln_amplitude",
    "protein_spectrum_from_models",
    "fit_to_reference",
    "expected_amplitude",
    "table_module_text",
]

#: the table's grid (1/Å): 100 Å to 1.5 Å, 100 points (steps of 0.0066 Å^-1, about the
#: computing box's shell spacing)
TABLE_S = np.round(np.linspace(0.01, 1.0 / 1.5, 100), 6)
#: how the shipped table is computed (see the module docstring)
TABLE_PIXEL = 0.7
TABLE_BOX = 160
_NORM_D = 10.0
_TAIL = 12  # table points the extrapolation beyond 1.5 Å is fitted to


def protein_ln_amplitude(s) -> np.ndarray:
    """``ln R(s)`` of the reference protein spectrum at ``s`` (1/Å, any shape), float64.

    Linear interpolation in the table; below 1/100 Å^-1 the first value; beyond 1/1.5 Å^-1 a
    straight line in ``s^2`` fitted to the last 12 table points (a Guinier extrapolation).
    """
    s = np.asarray(s, dtype=np.float64)
    ts = np.asarray(PROTEIN_S, np.float64)
    tl = np.asarray(PROTEIN_LN_AMPLITUDE, np.float64)
    out = np.interp(s, ts, tl)
    beyond = s > ts[-1]
    if np.any(beyond):
        slope, icpt = np.polyfit(ts[-_TAIL:] ** 2, tl[-_TAIL:], 1)
        out = np.where(beyond, icpt + slope * s * s, out)
    return out


def _shell_selection(s, d_max: float, d_min: float) -> np.ndarray:
    s = np.asarray(s, np.float64)
    idx = np.arange(s.size)
    return idx[(idx >= 1) & (s >= 1.0 / d_max * (1 - 1e-9)) & (s <= 1.0 / d_min * (1 + 1e-9))]


def fit_to_reference(s, signal, *, d_max: float, d_min: float) -> tuple[float, float] | None:
    """Fit ``ln(signal) - ln R(s) = a - B s^2/4`` over the shells with ``d_max >= 1/s >=
    d_min`` (Å, shell 0 never) that have a positive, finite signal.

    ``s`` (1/Å) and ``signal`` (the estimated signal amplitude per shell, shell 0 first) are
    float arrays of one length. Returns ``(a, B)``, ``B`` in Å² (the map's blur relative to
    the reference), or None when fewer than 3 shells can be fitted.
    """
    s = np.asarray(s, np.float64)
    sig = np.asarray(signal, np.float64)
    if s.shape != sig.shape:
        raise ValueError("signal: must have the same length as s")
    sel = _shell_selection(s, d_max, d_min)
    sel = sel[np.isfinite(sig[sel]) & (sig[sel] > 0)]
    if sel.size < 3:
        return None
    slope, icpt = np.polyfit(s[sel] ** 2, np.log(sig[sel]) - protein_ln_amplitude(s[sel]), 1)
    return float(icpt), float(-4.0 * slope)


def expected_amplitude(
    s, *, intercept: float, b: float, d_max: float, b_target: float = 0.0
) -> np.ndarray:
    """Expected amplitude at ``s`` (1/Å, any shape) for a map fitted by
    :func:`fit_to_reference` as ``(intercept, b)``: the reference, scaled to the fit at
    ``s0 = 1/d_max``, times ``exp(-b_target (s^2 - s0^2)/4)`` (module docstring). Meant for
    ``s >= s0``; float64 of ``s``'s shape."""
    s = np.asarray(s, np.float64)
    s0 = 1.0 / float(d_max)
    ln_r0 = float(protein_ln_amplitude(s0))
    ln_e = intercept - b * s0**2 / 4.0 + protein_ln_amplitude(s) - ln_r0
    return np.exp(ln_e - float(b_target) * (s * s - s0**2) / 4.0)


# ------------------------------------------------------------------------------ the table
def _protein_structure(path):
    import gemmi

    st = gemmi.read_structure(str(path))
    st.setup_entities()
    st.remove_hydrogens()
    st.remove_ligands_and_waters()
    st.remove_empty_chains()
    for model in st:
        for chain in model:
            for res in chain:
                for atom in res:
                    atom.b_iso = 0.0
    return st


def protein_spectrum_from_models(
    paths, *, pixel_size: float = TABLE_PIXEL, box: int = TABLE_BOX
) -> np.ndarray:
    """``ln A`` on :data:`TABLE_S` of the B = 0 density of the protein atoms of each model
    (PDB/mmCIF ``paths``), centred in a ``box``³ grid at ``pixel_size`` Å/px, averaged over the
    models and normalised to 0 at 10 Å (see the module docstring). float64 (TABLE_S.size,).
    Needs ``pixel_size < 0.75`` (the table reaches 1.5 Å) and a box that holds each model."""
    from emforge.numerics import amplitude_profile

    from .model import model_map

    if not 2.0 * pixel_size < 1.5:
        raise ValueError(f"pixel_size: must be finer than 0.75 Å to reach 1.5 Å, got {pixel_size}")
    curves = []
    for path in paths:
        st = _protein_structure(path)
        xyz = np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
        origin = xyz.mean(axis=0) - box * pixel_size / 2.0
        rho = model_map(
            st, shape=(box,) * 3, pixel_size=pixel_size, origin=tuple(origin),
            resolution=2.0 * pixel_size,
        )  # fmt: skip
        s, amp = amplitude_profile(rho, pixel_size=pixel_size, kind="rms")
        ln_a = np.interp(TABLE_S, s[1:], np.log(amp[1:]))
        curves.append(ln_a - np.interp(1.0 / _NORM_D, TABLE_S, ln_a))
    return np.mean(curves, axis=0)


def table_module_text(paths) -> str:
    """The source of ``_protein_spectrum.py`` for the models ``paths`` (the table of
    :func:`protein_spectrum_from_models`); written by ``python -m emforge.protocols.sharpen.kernels.refspec``."""
    ln_a = protein_spectrum_from_models(paths)
    names = ", ".join(Path(p).name for p in paths)

    def rows(v):
        return "\n".join(f"    {x:.6g}," for x in v)

    return (
        '"""Reference protein spectrum table (see :mod:`.refspec`), written by\n'
        '``python -m emforge.protocols.sharpen.kernels.refspec``; do not edit by hand."""\n\n'
        f'SOURCE = "ln rms amplitude per shell, B = 0, protein atoms of {names}"\n\n'
        f"PROTEIN_S = (\n{rows(TABLE_S)}\n)\n\n"
        f"PROTEIN_LN_AMPLITUDE = (\n{rows(ln_a)}\n)\n"
    )


def main(argv: list[str]) -> int:
    """Rewrite the shipped table from MODEL files (default: the 5NI1 model of the shared test
    data, the one the table was computed from); ``python -m`` this module."""
    import sys

    table = Path(__file__).with_name("_protein_spectrum.py")
    default = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "models"
    paths = [Path(a) for a in argv] or [(default / "5ni1_updated.cif").resolve()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"refspec: model file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    table.write_text(table_module_text(paths), encoding="utf-8")
    print(f"wrote {table} from {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
