"""The map B: one Guinier fit, one fit-range rule and one sign for every sharpening protocol.

**Sign.** The map B (the *blur*) is positive for a map whose amplitudes fall off as
``exp(-B s^2 / 4)``; an over-sharpened map has a negative map B. The *applied sharpening B* is
positive when a protocol sharpens (multiplies by ``exp(+b s^2/4)``). Summaries and reports
say both: "map B (blur) = +X Å²; applied sharpening B = Y Å²".

**What is fitted.** ``ln A(s) = a - B s^2/4`` to the rms amplitude per Fourier shell
``A(s) = sqrt(<|F|^2>)`` of the whole, unmasked map (for half maps: of their average).

**Fit range** (:func:`map_b_fit_range`), from the box, the pixel size and the resolution:

* ``d_min`` (fine end) = the resolution, never finer than 2.5 pixels (1.25 x Nyquist, where
  the corners of the box no longer fill whole shells); 3 pixels when no resolution is known
  (deposited maps are often low-passed at their resolution, and a fit into the empty shells
  beyond it would report a huge B);
* ``d_max`` (coarse end) = the larger of 10 Å (where the Wilson regime of protein maps begins)
  and 2 ``d_min`` (so a 20-40 Å map is fitted over an octave of its own signal);
* at least ``min_shells`` (5) Fourier shells: when the range holds fewer, ``d_max`` moves to
  coarser shells (never shell 0) until it does. With fewer than 3 shells in the whole box there
  is no fit (ValueError); with 3-4 a warning is returned.

**Plausible range** (:func:`plausible_map_b`): -50 … max(300, 16 d_min²) Å²; outside it a
warning says the fit may reach beyond the map's signal. On 20-40 Å maps the map B is mostly
the molecule's shape: over 2 d … d the reference protein spectrum (:mod:`.refspec`) alone
has B ≈ 5.3-6.3 d² (Phenix's target_b_iso_ratio is 5.9), so 16 d² leaves about 10 d² of
blur beyond a protein's own fall-off (amplitude at d down to ~8%) before a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emforge.numerics import amplitude_profile_rfft, rfftn, shell_frequencies

__all__ = [
    "MIN_FIT_SHELLS",
    "PLAUSIBLE_MAP_B",
    "MapBFit",
    "map_b_fit_range",
    "fit_map_b",
    "map_b",
    "plausible_map_b",
    "b_sentence",
]

#: fewer shells than this in a Guinier fit gets a warning
MIN_FIT_SHELLS = 5
#: (low, high) map B in Å^2 outside which a warning is given; the high end grows with the fit's
#: fine end d_min as max(300, 16 d_min^2): the map B at which the amplitude at d_min has fallen
#: to about 2% (exp(-16/4) = 0.018), beyond which the fit is mostly past the map's signal
PLAUSIBLE_MAP_B = (-50.0, 300.0)
_PLAUSIBLE_PER_D2 = 16.0
_HARD_MIN_SHELLS = 3


@dataclass
class MapBFit:
    """A map B fit: ``b`` (Å², positive = blurred), ``intercept`` (ln amplitude at s = 0), the
    range used ``d_max`` >= ``d_min`` (Å), the number of shells fitted and warnings (text)."""

    b: float
    intercept: float
    d_max: float
    d_min: float
    n_shells: int
    warnings: list[str] = field(default_factory=list)

    @property
    def fit_range(self) -> tuple[float, float]:
        return (self.d_max, self.d_min)


def _shell_selection(s, d_min: float, d_max: float, min_shells: int) -> np.ndarray:
    """Indices of the fitted shells (rule in the module docstring)."""
    s = np.asarray(s, dtype=np.float64)
    idx = np.arange(s.size)
    usable = idx[(idx >= 1) & (s <= 1.0 / d_min * (1 + 1e-9))]
    sel = usable[s[usable] >= 1.0 / d_max * (1 - 1e-9)]
    if sel.size < min_shells:
        sel = usable[-min_shells:]
    return sel


def map_b_fit_range(
    shape,
    *,
    pixel_size: float,
    resolution: float | None = None,
    d_max: float | None = None,
    min_shells: int = MIN_FIT_SHELLS,
) -> tuple[float, float]:
    """``(d_max, d_min)`` in Å of the map B fit for a box ``shape`` at ``pixel_size``.

    ``resolution`` (Å) sets the fine end; ``d_max`` (Å) overrides the coarse end's default
    (the shell minimum still applies). Raises ValueError (naming ``resolution``) when the box
    holds fewer than 3 shells coarser than ``d_min``.
    """
    px = float(pixel_size)
    d_min = max(float(resolution), 2.5 * px) if resolution else 3.0 * px
    dmx = float(d_max) if d_max else max(10.0, 2.0 * d_min)
    s = shell_frequencies(tuple(shape), pixel_size=px)
    sel = _shell_selection(s, d_min, max(dmx, d_min * (1 + 1e-6)), min_shells)
    if sel.size < _HARD_MIN_SHELLS:
        raise ValueError(
            f"resolution: a {'x'.join(map(str, shape))} box at {px:g} Å/px has only {sel.size} "
            f"Fourier shells coarser than {d_min:.3g} Å; at least {_HARD_MIN_SHELLS} are needed "
            "to fit the map's B"
        )
    return float(max(dmx, 1.0 / s[sel[0]])), d_min


def fit_map_b(
    s, amplitude, *, d_min: float, d_max: float, min_shells: int = MIN_FIT_SHELLS
) -> MapBFit:
    """Guinier fit ``ln A = a - B s^2/4`` of a radial amplitude profile over the shells of
    ``d_max >= 1/s >= d_min`` (at least ``min_shells`` of them, see the module docstring).

    ``s`` (1/Å) and ``amplitude`` are per shell (shell 0 first); shells with non-positive or
    non-finite amplitude are skipped. Returns a :class:`MapBFit` whose warnings name a short fit
    and a map B outside :func:`plausible_map_b`. Raises ValueError with fewer than 3 shells.
    """
    s = np.asarray(s, dtype=np.float64)
    amp = np.asarray(amplitude, dtype=np.float64)
    if s.shape != amp.shape:
        raise ValueError("amplitude: must have the same length as s")
    sel = _shell_selection(s, d_min, d_max, min_shells)
    sel = sel[np.isfinite(amp[sel]) & (amp[sel] > 0)]
    if sel.size < _HARD_MIN_SHELLS:
        raise ValueError(
            f"resolution: only {sel.size} shells with signal between {d_max:.3g} and "
            f"{d_min:.3g} Å; at least {_HARD_MIN_SHELLS} are needed to fit the map's B"
        )
    slope, intercept = np.polyfit(s[sel] ** 2, np.log(amp[sel]), 1)
    b = float(-4.0 * slope)
    d_lo = float(min(d_min, 1.0 / s[sel[-1]]))
    fit = MapBFit(b, float(intercept), float(max(d_max, 1.0 / s[sel[0]])), d_lo, int(sel.size))
    if sel.size < min_shells:
        fit.warnings.append(
            f"map B fitted over only {sel.size} Fourier shells ({fit.d_max:.3g}–{d_lo:.3g} Å): "
            "it is uncertain"
        )
    lo, hi = plausible_map_b(d_lo)
    if not lo <= b <= hi:
        fit.warnings.append(
            f"map B {b:+.1f} Å² is outside the plausible range {lo:+.0f} … {hi:+.0f} Å² for "
            f"a fit to {d_lo:.3g} Å: "
            "check the resolution given (the fit may reach beyond the map's signal)"
        )
    return fit


def map_b(
    map, *, pixel_size: float, resolution: float | None = None, d_max: float | None = None
) -> MapBFit:
    """The map B of a map (float32 (z, y, x) or (y, x), Å/px): :func:`fit_map_b` of its rms
    amplitude per shell over :func:`map_b_fit_range`."""
    a = np.asarray(map, dtype=np.float32)
    dmx, dmn = map_b_fit_range(a.shape, pixel_size=pixel_size, resolution=resolution, d_max=d_max)
    s, amp = amplitude_profile_rfft(rfftn(a), shape=a.shape, pixel_size=pixel_size, kind="rms")
    return fit_map_b(s, amp, d_min=dmn, d_max=dmx)


def plausible_map_b(d_min: float) -> tuple[float, float]:
    """The plausible map B range (Å²) for a fit whose fine end is ``d_min`` (Å)."""
    lo, hi = PLAUSIBLE_MAP_B
    return lo, max(hi, _PLAUSIBLE_PER_D2 * float(d_min) ** 2)


def b_sentence(map_b_value: float, applied_sharpening_b: float | None = None) -> str:
    """The sentence every summary and report uses: "map B (blur) = +X Å²; applied sharpening
    B = Y Å²" (the second part only when a single B was applied)."""
    text = f"map B (blur) = {map_b_value:+.1f} Å²"
    if applied_sharpening_b is not None:
        text += f"; applied sharpening B = {applied_sharpening_b:+.1f} Å²"
    return text
