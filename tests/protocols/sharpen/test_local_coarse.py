"""Local sharpening on coarse maps: the fit range follows the family's rule and the automatic
box fits a small map (ground truth: a map blurred by a known B)."""

from __future__ import annotations

import numpy as np

from emforge.numerics import bfactor_filter
from emforge.protocols.sharpen.kernels.local import default_box, sharpen_local
from emforge.protocols.sharpen.kernels.mapb import map_b_fit_range


def _blobs(n: int, px: float, seed: int = 3) -> np.ndarray:
    """Gaussian blobs of 12 A sd (a 20-40 A map's features) in an n^3 box, float32."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32)
    out = np.zeros((n, n, n), np.float32)
    for c in rng.uniform(0.25 * n, 0.75 * n, size=(12, 3)):
        r2 = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2
        out += np.exp(-r2 * px * px / (2 * 12.0**2))
    return out


def test_coarse_map_fit_range_follows_the_map_b_rule():
    # 5.7 A/px, resolution 24 A: the documented rule puts the coarse end at 2 x 24 = 48 A
    # (the old fixed 10 A was finer than the resolution and refused the map)
    px, res = 5.7, 24.0
    truth = _blobs(48, px)
    blurred = bfactor_filter(truth, 400.0, pixel_size=px)
    assert map_b_fit_range(blurred.shape, pixel_size=px, resolution=res)[0] >= 2 * res
    out = sharpen_local(blurred, pixel_size=px, resolution=res, box=24)
    assert np.all(np.isfinite(out.map)) and out.notes == []
    # the whole map's Guinier B over 48-24 A sees the known extra blur of 400 A^2
    ref = sharpen_local(truth, pixel_size=px, resolution=res, box=24)
    assert abs((out.b_global - ref.b_global) - 400.0) < 40.0


def test_automatic_box_fits_a_small_map():
    # EMD-3197-like: 20^3 at 11.4 A/px, resolution 30 A; the automatic box would be 32 px
    px, res = 11.4, 30.0
    assert default_box(res, px) == 32
    assert default_box(res, px, (20, 20, 20)) == 20
    assert default_box(res, px, (21, 40, 40)) == 20  # even, not larger than the map
    a = bfactor_filter(_blobs(20, px), 300.0, pixel_size=px)
    out = sharpen_local(a, pixel_size=px, resolution=res)
    assert out.box == 20 and out.step == 10
    assert np.all(np.isfinite(out.map)) and float(out.map.std()) > 0
    assert len(out.notes) == 1 and "limited by the map's size" in out.notes[0]


def test_coarse_map_is_sharpened_to_a_proteins_fall_off_not_to_zero():
    # at 24 Å the reference protein spectrum alone falls with B ~ 6 d^2 over 48-24 Å: the
    # default target; sharpening to B = 0 would amplify 24 Å by exp(b_global/4/24^2) more
    from emforge.protocols.sharpen.kernels.refspec import protein_ln_amplitude

    px, res = 5.7, 24.0
    a = bfactor_filter(_blobs(48, px), 400.0, pixel_size=px)
    out = sharpen_local(a, pixel_size=px, resolution=res, box=24)
    s = np.linspace(1 / 48.0, 1 / 24.0, 16)
    b_ref = -4.0 * np.polyfit(s * s, protein_ln_amplitude(s), 1)[0]
    assert abs(out.b_target - b_ref) < 1e-6
    assert 5.0 * res**2 < out.b_target < 6.5 * res**2
    # finer than 10 Å (Wilson regime) the target stays 0
    fine = sharpen_local(a, pixel_size=1.0, resolution=3.5, box=24, step=12)
    assert fine.b_target == 0.0
