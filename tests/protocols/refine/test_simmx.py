"""similarity_matrix / twostage_similarity: known alignments, hand-computed comparator values,
the candidates rule, and twostage against the full matrix on simulated projections."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from emforge.numerics import transform_images_2d
from emforge.numerics.compare import ccc
from emforge.protocols.refine.kernels import (
    classify,
    similarity_matrix,
    twostage_similarity,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _phantom import (  # noqa: E402
    blob_images,
    phantom,
    project,
    random_blobs,
    random_eulers,
    references,
)

N = 64


@pytest.fixture(scope="module")
def blobs_case():
    rng = np.random.default_rng(3)
    sets = [random_blobs(rng) for _ in range(6)]
    refs = np.concatenate([blob_images(b, [0.0], [0.0], [0.0], [False]) for b in sets])
    own = np.array([0, 1, 2, 3, 4, 5, 0, 2])
    k = own.size
    truth = dict(angle=rng.uniform(0, 360, k), dx=rng.uniform(-5, 5, k), dy=rng.uniform(-5, 5, k),
                 mirror=np.arange(k) % 2 == 1)  # fmt: skip
    parts = np.concatenate([blob_images(sets[o], *(np.array([truth[f][i]]) for f in
                            ("angle", "dx", "dy", "mirror"))) for i, o in enumerate(own)])  # fmt: skip
    parts += rng.normal(0, 0.05, parts.shape).astype(np.float32)
    return parts, refs, own, truth


def _angle_error(a, b):
    return np.abs((np.asarray(a) - b + 180) % 360 - 180)


@pytest.mark.parametrize("shrink", [1, 2])
def test_known_alignments_are_found(blobs_case, shrink):
    parts, refs, own, t = blobs_case
    calls = []
    sim = similarity_matrix(parts, refs, shrink=shrink, chunk=3, progress=calls.append)
    assert sim.score.shape == (8, 6) and sim.score.dtype == np.float32
    assert calls[-1] == 1.0 and len(calls) == 3
    b = sim.best()
    np.testing.assert_array_equal(b.reference, own)
    np.testing.assert_array_equal(b.mirror, t["mirror"])
    assert _angle_error(b.angle, t["angle"]).max() < 2.5
    assert np.abs(b.dx - t["dx"]).max() < 1.0 and np.abs(b.dy - t["dy"]).max() < 1.0
    if shrink == 1:  # the score is -ccc of the particle brought onto its reference
        moved = transform_images_2d(parts, b.angle, b.dx, b.dy, b.mirror)
        c = np.array([ccc(moved[i], refs[j])[0, 0] for i, j in enumerate(own)])
        np.testing.assert_allclose(-b.score, c, atol=0.03)


def test_comparators_match_hand_computed_values():
    rng = np.random.default_rng(4)
    ref = blob_images(random_blobs(rng), [0.0], [0.0], [0.0], [False])[0]
    other = blob_images(random_blobs(rng), [0.0], [0.0], [0.0], [False])[0]
    part = (2.0 * ref + 1.0)[None]
    refs = np.stack([ref, other])
    sim = similarity_matrix(part, refs)
    assert sim.angle[0, 0] == 0 and abs(sim.dx[0, 0]) < 1e-3 and abs(sim.dy[0, 0]) < 1e-3
    np.testing.assert_allclose(sim.score[0, 0], -1.0, atol=1e-5)
    sq = similarity_matrix(part, refs, cmp="sqeuclidean")
    np.testing.assert_allclose(sq.score[0, 0], np.mean((ref + 1.0) ** 2), rtol=1e-3)
    fit = similarity_matrix(part, refs, cmp="sqeuclidean", cmp_options={"normto": True})
    assert abs(fit.score[0, 0]) < 1e-3 * np.mean((ref + 1.0) ** 2)
    yy, xx = np.mgrid[0:N, 0:N] - N // 2
    mask = (xx**2 + yy**2 <= 20**2).astype(np.float32)
    msq = similarity_matrix(part, refs, cmp="sqeuclidean", mask=mask)
    np.testing.assert_allclose(msq.score[0, 0], np.mean(mask * (ref + 1.0) ** 2), rtol=1e-3)
    mc = similarity_matrix(part, refs, mask=mask)
    want = -np.corrcoef((mask * (2 * ref + 1)).ravel(), (mask * ref).ravel())[0, 1]
    np.testing.assert_allclose(mc.score[0, 0], want, atol=1e-4)
    fr = similarity_matrix(part, refs, cmp="frc", cmp_options={"pixel_size": 2.0})
    np.testing.assert_allclose(fr.score[0, 0], -1.0, atol=1e-4)
    assert fr.score[0, 1] > -0.9


def test_candidates_score_only_the_best_k(blobs_case):
    parts, refs, own, _ = blobs_case
    full = similarity_matrix(parts, refs, cmp="sqeuclidean", cmp_options={"normto": True})
    some = similarity_matrix(parts, refs, cmp="sqeuclidean", cmp_options={"normto": True},
                             candidates=2)  # fmt: skip
    plain = similarity_matrix(parts, refs)
    for i in range(parts.shape[0]):
        top = np.argsort(plain.score[i], kind="stable")[:2]
        np.testing.assert_allclose(some.score[i, top], full.score[i, top], rtol=1e-5)
        rest = np.setdiff1d(np.arange(6), top)
        np.testing.assert_allclose(some.score[i, rest], some.score[i, top].max() + 1e-4,
                                   rtol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(some.best().reference, own)


def test_rotate_translate_has_no_mirror_and_ralign_does_not_worsen(blobs_case):
    parts, refs, own, t = blobs_case
    flip = similarity_matrix(parts, refs)
    plain = similarity_matrix(parts, refs, align="rotate_translate")
    assert not plain.mirror.any()
    rows = np.arange(own.size)
    m = t["mirror"]
    assert np.all(plain.score[rows, own][m] > flip.score[rows, own][m] + 0.05)
    # the same comparison (reference moved into the particle's frame, -ccc) without refine
    ones = np.ones((N, N), np.float32)
    rescored = similarity_matrix(parts, refs, mask=ones, candidates=1)
    refined = similarity_matrix(parts, refs, ralign="refine", candidates=1)
    assert np.all(refined.score[rows, own] <= rescored.score[rows, own] + 1e-3)
    assert _angle_error(refined.angle[rows, own], t["angle"]).max() < 1.0


def test_bad_options_name_the_parameter(blobs_case):
    parts, refs, _, _ = blobs_case
    for kw, name in [({"align": "tree"}, "align"), ({"ralign": "nm"}, "ralign"),
                     ({"cmp": "dot"}, "cmp"), ({"cmp_options": {"bogus": 1}}, "cmp_options"),
                     ({"cmp": "frc"}, "cmp_options"), ({"candidates": -1}, "candidates"),
                     ({"shrink": 0}, "shrink"), ({"align_options": {"x": 1}}, "align_options"),
                     ({"mask": np.ones((5, 5))}, "mask")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"^{name}:"):
            similarity_matrix(parts[:1], refs[:2], **kw)
    with pytest.raises(ValueError, match="^ncenters:"):
        twostage_similarity(parts[:1], refs, ncenters=0)


def test_twostage_agrees_with_the_full_matrix_on_noisy_projections():
    rng = np.random.default_rng(11)
    vol = phantom(64, seed=5)  # stage 1 runs at 32^2 (shrink1 2), as for 64^2 particles
    _, refs = references(vol, 12.0)  # 145 views
    k = 60
    parts = project(vol, random_eulers(rng, k), rng.uniform(-2, 2, (k, 2)))
    parts += rng.normal(0, 0.5 * parts.std(), parts.shape).astype(np.float32)
    full = similarity_matrix(parts, refs)
    two, info = twostage_similarity(parts, refs)
    assert info["centers"].size == 3 * int(np.sqrt(145))
    assert info["computed_fraction"] < 0.5
    agree = np.mean(two.best().reference == full.best().reference)
    assert agree >= 0.95, agree
    # where computed, stage 2 is the full matrix's entry; elsewhere row max + 1e-4
    c = classify(two, sep=1)
    np.testing.assert_allclose(c.score[:, 0], two.score.min(1))


def test_shrunk_and_twostage_matrices_take_full_box_ring_snr():
    """An SNR curve per ring of the full box works with shrink and twostage (its low rings are
    the shrunk box's rings), and a shrunk noisy copy still finds its own reference."""
    from emforge.protocols.refine import kernels as K

    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[:32, :32] - 16
    disc = (xx**2 + yy**2 < 12**2).astype(np.float32)  # smooth random blobs, distinct shapes
    refs = np.stack([gaussian_filter(rng.normal(size=(32, 32)), 2.0) * disc for _ in range(12)])
    refs = (refs / refs.std(axis=(1, 2), keepdims=True)).astype(np.float32)
    truth = rng.integers(0, len(refs), 20)
    parts = (refs[truth] + 0.05 * rng.normal(size=(20, 32, 32))).astype(np.float32)
    opts = dict(pixel_size=2.0, snr=np.ones((20, 16)), maxres=8.0)
    sim = K.similarity_matrix(parts, refs, shrink=2, cmp="frc", cmp_options=opts,
                              align="rotate_translate", candidates=4)  # fmt: skip
    assert sim.score.shape == (20, 12)
    assert np.mean(np.argmin(sim.score, axis=1) == truth) >= 0.9
    sim2, _ = K.twostage_similarity(parts, refs, shrink1=2, cmp="frc", cmp_options=opts,
                                    align="rotate_translate", candidates=4)  # fmt: skip
    assert sim2.score.shape == (20, 12)
