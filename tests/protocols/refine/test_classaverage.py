"""e2classaverage kernels: paired alignment, averagers with known CTFs, the class-average loop."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import ctf_2d, phase_flip_2d, rotate_translate_flip, transform_images_2d
from emforge.numerics import fft as F
from emforge.protocols.refine.kernels import class_averages
from emforge.protocols.refine.kernels._avgtools import average_groups, transform_ctf
from emforge.protocols.refine.kernels._pairalign import align_pairs, paired_cost
from emforge.protocols.refine.kernels.classaverage import class_quality, compose_alignments

N = 64


def _image(variant: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:N, 0:N] - N // 2
    g = lambda x0, y0, sx, sy: np.exp(-((xx - x0) ** 2 / sx + (yy - y0) ** 2 / sy))  # noqa: E731
    img = g(5, -3, 30, 30) + 0.7 * g(-8, 6, 20, 60) + 0.5 * g(2, 12, 8, 8)
    if variant:
        img = img + 0.8 * g(-10, -10, 15, 15) - 0.4 * g(9, 8, 10, 25)
    return img.astype(np.float32)


def _cc(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _copies(base, k, rng, noise):
    ang, dx, dy = rng.uniform(0, 360, k), rng.uniform(-3, 3, k), rng.uniform(-3, 3, k)
    mir = rng.random(k) < 0.5
    clean = transform_images_2d(np.repeat(base[None], k, 0), ang, dx, dy, mir)
    return clean, clean + rng.normal(0, noise, clean.shape).astype(np.float32)


def test_paired_alignment_equals_the_all_pairs_aligner_on_its_diagonal():
    rng = np.random.default_rng(1)
    refs = np.stack([_image(0), _image(1)])
    idx = np.array([0, 1, 1, 0, 1, 0])
    parts = np.concatenate([_copies(refs[j], 1, rng, 0.1)[1] for j in idx])
    full = rotate_translate_flip(parts, refs)
    got = align_pairs(parts, refs, idx)
    k = np.arange(idx.size)
    np.testing.assert_array_equal(got.mirror, full.mirror[k, idx])
    np.testing.assert_allclose(got.angle, full.angle[k, idx], atol=1e-3)
    np.testing.assert_allclose(got.dx, full.dx[k, idx], atol=1e-3)
    np.testing.assert_allclose(got.dy, full.dy[k, idx], atol=1e-3)
    np.testing.assert_allclose(got.score, full.score[k, idx], atol=1e-4)
    assert np.all(got.score < -0.85)  # -ccc of a mildly noisy copy


def test_paired_cost_matches_the_comparator_per_pair():
    rng = np.random.default_rng(2)
    refs = np.stack([_image(0), _image(1)])
    parts = rng.normal(size=(5, N, N)).astype(np.float32) + refs[[0, 1, 0, 1, 1]]
    idx = np.array([0, 1, 0, 1, 1])
    from emforge.numerics import cost

    parts[1, :3] = 0  # zeromask has pixels to leave out
    frc = {"pixel_size": 2.0, "minres": 100, "maxres": 8}
    for name, opts in (("ccc", {}), ("frc", frc), ("frc", {**frc, "zeromask": True})):
        want = [cost(name, parts[i], refs[idx[i]], **opts)[0, 0] for i in range(5)]
        np.testing.assert_allclose(paired_cost(name, parts, refs, idx, **opts), want, rtol=2e-5)


def test_class_quality_is_the_ratio_of_two_band_frcs():
    from emforge.numerics import frc

    rng = np.random.default_rng(3)
    a = _image(0)[None] + rng.normal(0, 0.2, (1, N, N)).astype(np.float32)
    b = _image(0)[None]
    want = frc(a, b, pixel_size=1.5, minres=30, maxres=10) / frc(
        a, b, pixel_size=1.5, minres=100, maxres=30
    )
    np.testing.assert_allclose(class_quality(a, b, pixel_size=1.5), want[:, 0], rtol=1e-6)


def _ctfs(defoci, px=2.0, angle=0.0):
    d = np.asarray(defoci, float)
    return ctf_2d((N, N), pixel_size=px, defocus_u=d, defocus_v=d * 0.9, defocus_angle=angle)


def test_ctf_weight_of_two_images_is_sum_f_ctf_over_sum_ctf2():
    rng = np.random.default_rng(4)
    truth = F.rfftn(_image(0))
    c = _ctfs([12000.0, 21000.0])
    raw = np.stack([F.irfftn(truth * c[i], shape=(N, N)) for i in range(2)])
    raw = raw + rng.normal(0, 0.3, raw.shape).astype(np.float32)
    flipped = phase_flip_2d(raw, c)
    avg, counts = average_groups(flipped, np.zeros(2, int), 1, ctf=c, averager="ctf.weight")
    fr = F.rfftn(raw, axes=(-2, -1))
    want = (fr * c).sum(0) / (c * c).sum(0)
    got = F.rfftn(avg[0])
    ok = (c * c).sum(0) > 1e-3  # the documented floor acts only below 1e-4 per image
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-3, atol=2e-3 * np.abs(want).max())
    assert counts.tolist() == [2]


def test_mean_averager_and_exclusion():
    rng = np.random.default_rng(5)
    imgs = rng.normal(size=(5, N, N)).astype(np.float32)
    groups = np.array([1, 0, 1, 1, 0])
    inc = np.array([True, True, False, True, True])
    avg, counts = average_groups(imgs, groups, 3, included=inc)
    np.testing.assert_allclose(avg[1], (imgs[0] + imgs[3]) / 2, atol=1e-6)
    np.testing.assert_allclose(avg[0], (imgs[1] + imgs[4]) / 2, atol=1e-6)
    assert counts.tolist() == [2, 2, 0] and not avg[2].any()


def test_ctf_auto_restores_noise_free_data_and_downweights_noisy_images():
    truth = F.rfftn(_image(0))
    c = _ctfs([9000.0, 14000.0, 19000.0, 26000.0])
    clean = np.stack([F.irfftn(truth * np.abs(c[i]), shape=(N, N)) for i in range(4)])
    avg, _ = average_groups(clean, np.zeros(4, int), 1, ctf=c, averager="ctf.auto")
    ring = np.rint(np.hypot(*np.meshgrid(np.fft.fftfreq(N) * N, np.arange(N // 2 + 1),
                                         indexing="ij")))  # fmt: skip
    ok = (np.abs(c).min(0) >= 0.05) & (ring <= (N - 2) / 2)
    got = F.rfftn(avg[0])
    np.testing.assert_allclose(got[ok], truth[ok], atol=1e-3 * np.abs(truth).max())
    assert not np.any(np.abs(got[ring > (N - 2) / 2]) > 1e-3)
    rng = np.random.default_rng(6)
    noisy = clean.copy()
    noisy[3] += rng.normal(0, 3.0, (N, N)).astype(np.float32)
    noisy[:3] += rng.normal(0, 0.1, (3, N, N)).astype(np.float32)
    t = _image(0)
    err = {
        a: np.abs(average_groups(noisy, np.zeros(4, int), 1, ctf=c, averager=a)[0][0] - t).mean()
        for a in ("ctf.weight", "ctf.auto")
    }
    assert err["ctf.auto"] < 0.7 * err["ctf.weight"]


def test_transform_ctf_rotates_the_astigmatism():
    c0 = ctf_2d((N, N), pixel_size=4.0, defocus_u=15000, defocus_v=9000, defocus_angle=10.0)
    c1 = ctf_2d((N, N), pixel_size=4.0, defocus_u=15000, defocus_v=9000, defocus_angle=40.0)
    got = transform_ctf(c0[None], np.array([30.0]), np.array([False]))[0]
    ky = np.fft.fftfreq(N) * N
    inside = np.hypot(ky[:, None], np.arange(N // 2 + 1)[None]) < N / 2 - 2
    assert _cc(got[inside], c1[inside]) > 0.99
    assert _cc(c0[inside], c1[inside]) < 0.95
    same = transform_ctf(c0[None], np.zeros(1), np.zeros(1, bool))[0]
    np.testing.assert_array_equal(same, c0)  # no alignment: the CTF itself
    cm = ctf_2d((N, N), pixel_size=4.0, defocus_u=15000, defocus_v=9000, defocus_angle=-10.0)
    mir = transform_ctf(c0[None], np.zeros(1), np.ones(1, bool))[0]  # x -> -x: angle -> -angle
    assert _cc(mir[inside], cm[inside]) > 0.99


def test_compose_alignments_equals_applying_both():
    from emforge.numerics import Alignment2D

    img = _image(1)[None]
    a = Alignment2D(*(np.array([v]) for v in (35.0, 2.0, -1.5, True, 0.0)))
    b = Alignment2D(*(np.array([v]) for v in (-70.0, -1.0, 3.0, False, 0.0)))
    two = transform_images_2d(transform_images_2d(img, a.angle, a.dx, a.dy, a.mirror),
                              b.angle, b.dx, b.dy, b.mirror)  # fmt: skip
    c = compose_alignments(a, b)
    one = transform_images_2d(img, c.angle, c.dx, c.dy, c.mirror)
    r = np.hypot(*np.mgrid[0:N, 0:N] - N // 2) < N / 2 - 8
    assert _cc(one[0][r], two[0][r]) > 0.995


def test_class_average_beats_every_single_copy_and_recovers_the_alignments():
    rng = np.random.default_rng(7)
    base = _image(0)
    clean, noisy = _copies(base, 12, rng, 0.4)
    res = class_averages(noisy, np.zeros((12, 1), np.int64), base[None], niter=2, keep=1.0)
    singles, found = [], []
    back = transform_images_2d(clean, *(res.alignment.__dict__[f][:, 0]
                                        for f in ("angle", "dx", "dy", "mirror")))  # fmt: skip
    r = np.hypot(*np.mgrid[0:N, 0:N] - N // 2) < N / 2 - 8
    for i in range(12):  # each noisy copy brought back by its own alignment
        one = transform_images_2d(noisy[i : i + 1], res.alignment.angle[i, 0],
                                  res.alignment.dx[i, 0], res.alignment.dy[i, 0],
                                  res.alignment.mirror[i, 0])  # fmt: skip
        singles.append(_cc(one[0][r], base[r]))
        found.append(_cc(back[i][r], base[r]))  # 1 when the alignment found is the true one
    assert np.median(found) > 0.95 and min(found) > 0.8
    got = _cc(res.averages[0][r], base[r])
    assert got > max(singles) + 0.2 and got > 0.9
    assert res.counts.tolist() == [12] and res.included.all()
    assert np.isfinite(res.quality[0]) and res.quality[0] > 0


def test_outliers_are_excluded_and_empty_classes_stay_empty():
    rng = np.random.default_rng(8)
    base0, base1 = _image(0), _image(1)
    _, good0 = _copies(base0, 10, rng, 0.3)
    _, good1 = _copies(base1, 6, rng, 0.3)
    junk = rng.normal(0, 1.0, (2, N, N)).astype(np.float32)
    imgs = np.concatenate([good0, junk, good1])
    cls = np.r_[np.zeros(12, int), np.full(6, 2)][:, None].astype(np.int64)
    res = class_averages(imgs, cls, np.stack([base0, base1 * 0, base1]), niter=1, keep=0.8)
    assert not res.included[10:12, 0].any() and res.included[:10, 0].all()
    assert res.counts.tolist() == [10, 0, res.included[12:, 0].sum()]
    assert not res.averages[1].any() and np.isnan(res.quality[1])
    assert _cc(res.averages[2], base1) > 0.8


def test_sep_two_puts_a_particle_in_both_classes():
    rng = np.random.default_rng(9)
    base0, base1 = _image(0), _image(1)
    _, p0 = _copies(base0, 4, rng, 0.2)
    _, p1 = _copies(base1, 4, rng, 0.2)
    cls = np.array([[0, 1]] * 4 + [[1, -1]] * 4, np.int64)
    res = class_averages(np.concatenate([p0, p1]), cls, np.stack([base0, base1]), keep=1.0)
    assert res.included.shape == (8, 2) and res.included[:, 0].all()
    assert res.included[:4, 1].all() and not res.included[4:, 1].any()
    assert res.counts.tolist() == [4, 8]
    assert np.isnan(res.alignment.score[4:, 1]).all()


def test_ctf_weight_class_average_of_flipped_particles_restores_the_image():
    rng = np.random.default_rng(10)
    base = _image(0)
    k = 12
    d = rng.uniform(8000, 25000, k)
    c = _ctfs(d, px=2.0)
    raw = np.stack([F.irfftn(F.rfftn(base) * c[i], shape=(N, N)) for i in range(k)])
    raw += rng.normal(0, 0.05, raw.shape).astype(np.float32)
    flipped = phase_flip_2d(raw, c)
    cls = np.zeros((k, 1), np.int64)
    kw = dict(niter=0, keep=1.0, align=None, pixel_size=2.0)
    w = class_averages(flipped, cls, base[None], ctf=c, averager="ctf.weight", **kw)
    m = class_averages(flipped, cls, base[None], ctf=c, averager="mean", **kw)
    assert _cc(w.averages[0], base) > _cc(m.averages[0], base) + 0.05


def test_bad_inputs_are_named():
    imgs = np.zeros((2, N, N), np.float32)
    refs = np.zeros((1, N, N), np.float32)
    with pytest.raises(ValueError, match="classes"):
        class_averages(imgs, np.array([[0], [3]]), refs)
    with pytest.raises(ValueError, match="ctf"):
        class_averages(imgs, np.zeros((2, 1), np.int64), refs, averager="ctf.weight")
    with pytest.raises(ValueError, match="averager"):
        class_averages(imgs, np.zeros((2, 1), np.int64), refs, averager="median")


def test_compiled_transform_equals_numerics_transform():
    from emforge.protocols.refine.kernels._transform2d import transform_stack

    rng = np.random.default_rng(11)
    imgs = rng.normal(size=(6, N, N)).astype(np.float32)
    args = (rng.uniform(0, 360, 6), rng.uniform(-4, 4, 6), rng.uniform(-4, 4, 6),
            rng.random(6) < 0.5)  # fmt: skip
    np.testing.assert_allclose(transform_stack(imgs, *args), transform_images_2d(imgs, *args),
                               atol=2e-5)  # fmt: skip


def test_refine_finds_sub_degree_angles():
    rng = np.random.default_rng(12)
    base = _image(1)
    k = 16
    ang = rng.integers(0, 360, k) + rng.uniform(0.2, 0.8, k)  # between the 1-degree grid
    z = np.zeros(k)
    parts = transform_images_2d(np.repeat(base[None], k, 0), ang, z, z, np.zeros(k, bool))
    coarse = align_pairs(parts, base[None], np.zeros(k, int))
    fine = align_pairs(parts, base[None], np.zeros(k, int), ralign="refine")
    want = (-ang) % 360.0  # the alignment undoes the rotation

    def err(a):
        return np.abs((a.angle - want + 180) % 360 - 180)

    assert np.all(fine.score <= coarse.score + 1e-6)
    assert np.median(err(fine)) < 0.15 < np.median(err(coarse))


def test_other_aligncmp_and_raligncmp_choose_the_true_candidate():
    rng = np.random.default_rng(13)
    base = _image(1)
    clean, noisy = _copies(base, 10, rng, 0.1)
    ref = base[None]
    idx = np.zeros(10, int)
    plain = align_pairs(noisy, ref, idx, ralign="refine")
    opts = {"pixel_size": 2.0, "minres": 100.0, "maxres": 5.0}
    other = align_pairs(noisy, ref, idx, ralign="refine", aligncmp="frc", aligncmp_options=opts,
                        raligncmp="sqeuclidean")  # fmt: skip
    np.testing.assert_array_equal(other.mirror, plain.mirror)
    assert np.all(np.abs((other.angle - plain.angle + 180) % 360 - 180) <= 1.5)
    back = transform_images_2d(clean, other.angle, other.dx, other.dy, other.mirror)
    r = np.hypot(*np.mgrid[0:N, 0:N] - N // 2) < N / 2 - 8
    assert min(_cc(x[r], base[r]) for x in back) > 0.97
    assert np.all(other.score >= 0)  # sqeuclidean is a distance: the score is that cost


def test_maxshift_limits_the_translation():
    base = _image(0)
    shifted = transform_images_2d(base[None], 0.0, 6.0, -5.0, False)
    free = align_pairs(shifted, base[None], [0])
    tight = align_pairs(shifted, base[None], [0], maxshift=2)
    assert abs(free.dx[0] + 6) < 0.3 and abs(free.dy[0] - 5) < 0.3
    assert abs(tight.dx[0]) <= 2.5 and abs(tight.dy[0]) <= 2.5


def test_setsfref_imposes_the_reference_ring_power():
    from emforge.protocols.refine.kernels._avgtools import match_structure_factor

    rng = np.random.default_rng(14)
    img = rng.normal(size=(2, N, N)).astype(np.float32)
    ref = np.stack([_image(0), _image(1)])
    out = match_structure_factor(img, ref)
    ky = np.fft.fftfreq(N) * N
    ring = np.rint(np.hypot(ky[:, None], np.arange(N // 2 + 1)[None])).astype(int)
    herm = np.r_[1.0, np.full(N // 2 - 1, 2.0), 1.0][None]

    def power(x):
        f = np.abs(F.rfftn(x, axes=(-2, -1))) ** 2 * herm
        return np.stack([np.bincount(ring.ravel(), v.ravel()) for v in f])

    np.testing.assert_allclose(power(out)[:, 1:20], power(ref)[:, 1:20], rtol=1e-3)
    phase = np.angle(F.rfftn(out, axes=(-2, -1)) * np.conj(F.rfftn(img, axes=(-2, -1))))
    assert np.abs(phase[:, ring < 20]).max() < 5e-3  # phases untouched
