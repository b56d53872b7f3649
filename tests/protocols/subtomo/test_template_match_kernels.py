"""Template-matching kernels on small synthetic tomograms with planted copies of known position
and rotation."""

import numpy as np
import pytest

from emforge.numerics.align3d import rotate_volume
from emforge.numerics.rotations import rotation_angle_between
from emforge.protocols.subtomo.kernels import template_match as tm

S = 16


def _template():
    g = np.arange(S) - S // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    body = ((x / 6) ** 2 + (y / 3.5) ** 2 + (z / 2.5) ** 2) <= 1
    knob = ((x - 3) ** 2 + (y - 2) ** 2 + z**2) <= 4
    return (body.astype(np.float32) + knob).astype(np.float32)


ROTS = tm.rotation_set("eman", delta=30)
PLANTED = [((12, 14, 16), 100), ((28, 32, 40), 300)]


def _tomogram(seed=0):
    t = _template()
    tomo = np.zeros((40, 48, 56), np.float32)
    for (z, y, x), k in PLANTED:
        tomo[z - 8 : z + 8, y - 8 : y + 8, x - 8 : x + 8] += rotate_volume(t, ROTS[k])
    rng = np.random.default_rng(seed)
    return tomo + rng.normal(0, 0.3, tomo.shape).astype(np.float32)


def test_eman_rotation_count_is_tempmatch_default():
    assert len(tm.rotation_set("eman", delta=30)) == 588


@pytest.fixture(scope="module")
def matched():
    # the planted rotations and their neighbours within one step, to keep the test fast
    keep = [
        i
        for i in range(len(ROTS))
        if min(rotation_angle_between(ROTS[i], ROTS[k]) for _, k in PLANTED) < 45
    ]
    rots = ROTS[keep]
    best, idx = tm.match_template(_tomogram(), _template(), rots)
    return rots, keep, best, idx


def test_recall_and_orientation(matched):
    rots, keep, best, idx = matched
    picks = tm.pick_peaks(best, min_distance=8, n_max=2, edge=4)
    assert len(picks) == 2
    for pos, k in PLANTED:
        d = np.sqrt(((picks - np.asarray(pos)) ** 2).sum(1))
        j = int(np.argmin(d))
        assert d[j] <= 1.0
        got = rots[idx[tuple(picks[j])]]
        assert rotation_angle_between(got, ROTS[k]) < 30.0  # within the angular step
    assert best[tuple(picks[0])] > 0.6


def test_tiled_equals_untiled():
    tomo, t = _tomogram(1), _template()
    rots = ROTS[:6]
    tiles = tm.plan_tiles(tomo.shape, t.shape, memory_bytes=3e6)
    assert len(tiles) > 4
    b1, i1 = tm.match_template(tomo, t, rots)
    b2, i2 = tm.match_template(tomo, t, rots, memory_bytes=3e6)
    np.testing.assert_allclose(b1, b2, atol=1e-5)
    assert (i1 == i2).mean() > 0.999


def test_flc_score_is_pearson_at_one_voxel():
    tomo, t = tm.prepare_tomogram(_tomogram(2)), _template()
    rots = ROTS[:1]
    best, _ = tm.match_template(tomo, t, rots)
    m = tm.spherical_mask(S) > 0
    tt = rotate_volume(t, rots[0])[m]
    z, y, x = 20, 24, 28
    w = tomo[z - 8 : z + 8, y - 8 : y + 8, x - 8 : x + 8][m]
    assert best[z, y, x] == pytest.approx(np.corrcoef(tt, w)[0, 1], abs=1e-4)


def test_tile_planner_covers_overlaps_and_fits():
    shape, ts, bound = (256, 512, 512), (48, 48, 48), 2e9
    tiles = tm.plan_tiles(shape, ts, memory_bytes=bound)
    cover = np.zeros(shape, np.uint8)
    for tile in tiles:
        cover[tuple(slice(a, b) for a, b in tile.inner)] += 1
        for (a, b), (c, d) in zip(tile.inner, tile.outer, strict=True):
            assert a - c >= 24 and d - b >= 24
        assert all(f >= d - c for f, (c, d) in zip(tile.fft_shape, tile.outer, strict=True))
        assert tm.estimate_memory(tile.fft_shape, ts) <= bound
    assert (cover == 1).all()
    assert len(tm.plan_tiles(shape, ts, memory_bytes=1e12)) == 1


def test_edge_exclusion_and_min_distance():
    s = np.zeros((30, 30, 30), np.float32)
    s[2, 15, 15] = 5.0  # near a face
    s[15, 15, 15] = 3.0
    s[15, 15, 19] = 2.0  # 4 px away
    s[15, 15, 25] = 1.0  # 10 px away
    p = tm.pick_peaks(s, min_distance=6, edge=4, threshold=0.5)
    assert p.tolist() == [[15, 15, 15], [15, 15, 25]]
    p = tm.pick_peaks(s, min_distance=3, edge=0, threshold=0.5, n_max=3)
    assert p.tolist() == [[2, 15, 15], [15, 15, 15], [15, 15, 19]]
    assert len(tm.pick_peaks(s, min_distance=3, threshold=2.5)) == 2


def test_eman_label_sum_rule():
    s = np.zeros((30, 30, 30), np.float32)
    s[5:8, 5:8, 5:8] = 11.0  # sum 297
    s[20, 20, 20] = 12.0  # single voxel, sum 12
    s[20, 20, 22] = 4.0  # below vthr
    pos, sc = tm.pick_peaks_eman(s, vthr=10, dthr=3)
    assert pos.tolist()[1] == [20, 20, 20] and len(pos) == 2
    assert sc[0] == 1.0 and sc[1] == pytest.approx(12 / 297)


def test_pixel_size_refused_when_unknown_and_resampled_when_different():
    ref = tm.spherical_mask(32, radius=8)
    for a, b in ((None, 4.0), (1.0, 4.0), (2.0, 1.0)):
        with pytest.raises(ValueError, match="pixel size"):
            tm.reference_at_pixel_size(ref, a, b)
    out = tm.reference_at_pixel_size(ref, 2.0, 4.0)
    assert out.shape == (16, 16, 16)
    # volume of a radius-8 px sphere at 2 Å is a radius-4 px sphere at 4 Å
    assert (out > 0.5).sum() == pytest.approx(4 / 3 * np.pi * 4**3, rel=0.15)
    np.testing.assert_array_equal(tm.reference_at_pixel_size(ref, 4.0, 4.0), ref)


def test_wedge_model_raises_the_score_of_a_wedged_copy():
    from emforge.numerics import fft
    from emforge.numerics.tilt import missing_wedge_mask

    tomo = _tomogram(3)
    f = fft.rfftn(tomo.astype(np.float32))
    tomo = fft.irfftn(
        f * missing_wedge_mask(tomo.shape, tilt_min=-40, tilt_max=40), shape=tomo.shape
    )
    (z, y, x), k = PLANTED[0]
    rots = ROTS[[k]]
    plain, _ = tm.match_template(tomo, _template(), rots)
    w = missing_wedge_mask((S, S, S), tilt_min=-40, tilt_max=40)
    wedged, _ = tm.match_template(tomo, _template(), rots, wedge=w)
    assert wedged[z, y, x] > plain[z, y, x] + 0.1  # measured 0.77 vs 0.56
