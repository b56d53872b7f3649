"""emforge.numerics.align2d / refine2d: known rotations, shifts and mirrors are found."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import align2d as al
from emforge.numerics.compare import ccc
from emforge.numerics.refine2d import refine_2d

N = 64


def blob_images(blobs, angle, dx, dy, mirror, n=N):
    """Exact images p with aligned(R M r + t) = p(r) for the reference sum_q g(r - q)."""
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n] - c
    out = []
    for a, tx, ty, m in zip(angle, dx, dy, mirror, strict=True):
        t = np.radians(a)
        x = -xx if m else xx
        px, py = np.cos(t) * x - np.sin(t) * yy + tx, np.sin(t) * x + np.cos(t) * yy + ty
        img = sum(w * np.exp(-((px - qx) ** 2 + (py - qy) ** 2) / (2 * s * s))
                  for qx, qy, s, w in blobs)  # fmt: skip
        out.append(img)
    return np.array(out, np.float32)


def random_blobs(rng, k=8):
    return [(rng.uniform(-12, 12), rng.uniform(-12, 12), rng.uniform(1.5, 3.5), rng.uniform(0.5, 1.5))
            for _ in range(k)]  # fmt: skip


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(1)
    blobs = random_blobs(rng)
    k = 10
    truth = dict(angle=rng.uniform(0, 360, k), dx=rng.uniform(-6, 6, k), dy=rng.uniform(-6, 6, k),
                 mirror=np.arange(k) % 2 == 1)  # fmt: skip
    ref = blob_images(blobs, [0.0], [0.0], [0.0], [False])
    parts = blob_images(blobs, **truth)
    parts += rng.normal(0, 0.05, parts.shape).astype(np.float32)
    return parts, ref, truth


def _angle_error(a, b):
    return np.abs((np.asarray(a) - b + 180) % 360 - 180)


@pytest.mark.parametrize("shrink", [1, 2])
def test_known_transform_found(case, shrink):
    parts, ref, truth = case
    r = al.rotate_translate_flip(parts, ref, shrink=shrink)
    assert r.angle.shape == (10, 1)
    assert np.all(r.mirror[:, 0] == truth["mirror"])
    assert _angle_error(r.angle[:, 0], truth["angle"]).max() < 2.0
    assert np.abs(r.dx[:, 0] - truth["dx"]).max() < 1.0
    assert np.abs(r.dy[:, 0] - truth["dy"]).max() < 1.0
    aligned = al.transform_images_2d(parts, r.angle[:, 0], r.dx[:, 0], r.dy[:, 0], r.mirror[:, 0])
    c = ccc(aligned, ref)[:, 0]
    assert c.min() > 0.97
    np.testing.assert_allclose(-r.score[:, 0], c, atol=0.03)


def test_best_reference_and_maxshift():
    rng = np.random.default_rng(5)
    refs = np.concatenate(
        [blob_images(random_blobs(rng), [0], [0], [0], [False]) for _ in range(4)]
    )
    blobs = random_blobs(rng)
    refs[2] = blob_images(blobs, [0], [0], [0], [False])[0]
    part = blob_images(blobs, [40.0], [2.0], [-3.0], [False])
    best = al.rotate_translate_flip(part, refs).best()
    assert best.reference[0] == 2
    assert _angle_error(best.angle[0], 40.0) < 2 and abs(best.dx[0] - 2) < 1
    far = blob_images(blobs, [0.0], [9.0], [0.0], [False])
    r = al.rotate_translate_flip(far, refs[2], maxshift=4)
    assert abs(r.dx[0, 0]) <= 4.5 and abs(r.dy[0, 0]) <= 4.5


def test_workers_and_chunks_give_the_same_result(case):
    parts, ref, _ = case
    refs = np.concatenate([ref, parts[:3]])
    one = al.rotate_translate_flip(parts, refs, shrink=2, workers=1)
    two = al.rotate_translate_flip(parts, refs, shrink=2, workers=2, chunk_pairs=8)
    np.testing.assert_array_equal(one.mirror, two.mirror)
    # the FFTs of the two calls may be answered by different libraries (scipy.fft first, a
    # measured FFTW plan once a shape repeats): equal to float32 rounding, not bit for bit
    for f in ("angle", "dx", "dy", "score"):
        np.testing.assert_allclose(getattr(one, f), getattr(two, f), rtol=1e-5, atol=1e-4)


def test_refine_from_a_perturbed_start(case):
    parts, ref, truth = case
    t = truth
    r = refine_2d(parts, ref[0], t["angle"] + 3.0, t["dx"] + 0.7, t["dy"] - 0.6, t["mirror"])
    assert _angle_error(r.angle, t["angle"]).max() < 0.5
    assert np.abs(r.dx - t["dx"]).max() < 0.25 and np.abs(r.dy - t["dy"]).max() < 0.25
    bad = refine_2d(parts[:1], ref[0], t["angle"][:1], [30.0], [0.0], t["mirror"][:1])
    assert bad.dx[0] == 30.0  # beyond maxshift: the input comes back (EMAN2)


def test_fourier_shrink_and_relion_relation():
    const = np.full((1, 32, 32), 2.5, np.float32)
    np.testing.assert_allclose(al.fourier_shrink_2d(const, 2), 2.5, atol=1e-5)
    # particle of pose psi0 + a with origin o  ==  reference rotated by -a, moved by -o:
    # the alignment is angle a, (dx, dy) = R(a) o
    rng = np.random.default_rng(2)
    blobs = random_blobs(rng)
    a, o = 25.0, np.array([3.0, -2.0])
    ref = blob_images(blobs, [0], [0], [0], [False])
    rot = al.transform_images_2d(ref, -a, 0.0, 0.0, False)  # projection at psi0 + a
    part = al.transform_images_2d(rot, 0.0, -o[0], -o[1], False)  # centre at N//2 - o
    r = al.rotate_translate_flip(part, ref).best()
    t = np.radians(a)
    want = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ o
    assert _angle_error(r.angle[0], a) < 2
    assert abs(r.dx[0] - want[0]) < 1 and abs(r.dy[0] - want[1]) < 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="images"):
        al.rotate_translate_flip(np.zeros((2, 31, 31)), np.zeros((1, 31, 31)))
    with pytest.raises(ValueError, match="shrink"):
        al.rotate_translate_flip(np.zeros((2, 32, 32)), np.zeros((1, 32, 32)), shrink=3)
    with pytest.raises(ValueError, match="references"):
        refine_2d(np.zeros((2, 32, 32)), np.zeros((3, 32, 32)), 0, 0, 0, False)


def test_pairs_subset_and_no_flip(case):
    parts, ref, truth = case
    refs = np.concatenate([ref, parts[:3]])
    full = al.rotate_translate_flip(parts, refs, workers=1)
    pairs = np.array([[0, 2, -1], [3, 0, 1]] * 5)
    sub = al.rotate_translate_flip(parts, refs, pairs=pairs, workers=1)
    rows = np.arange(10)[:, None]
    ok = pairs >= 0
    np.testing.assert_array_equal(sub.mirror[ok], full.mirror[rows, pairs][ok])
    for f in ("angle", "dx", "dy", "score"):
        np.testing.assert_allclose(getattr(sub, f)[ok], getattr(full, f)[rows, pairs][ok],
                                   rtol=1e-5, atol=1e-4)  # fmt: skip
    assert np.isinf(sub.score[~ok]).all()
    plain = al.rotate_translate_flip(parts, ref, flip=False)
    assert not plain.mirror.any()
    m = truth["mirror"]
    np.testing.assert_allclose(plain.score[~m], full.score[~m, :1], atol=1e-5)
    assert np.all(plain.score[m, 0] > full.score[m, 0])
    with pytest.raises(ValueError, match="pairs"):
        al.rotate_translate_flip(parts, refs, pairs=np.array([[0, 9]] * 10))


def test_same_result_without_pyfftw(case, monkeypatch):
    """The pruned CCF runs on reused FFTW plans, or through numerics.fft when pyFFTW is absent."""
    from emforge.numerics import fft

    parts, ref, _ = case
    refs = np.concatenate([ref, parts[:3]])
    one = al.rotate_translate_flip(parts, refs, workers=1)
    monkeypatch.setattr(fft, "backend", lambda: "scipy")
    monkeypatch.setattr(al, "_WORKSPACES", {})
    two = al.rotate_translate_flip(parts, refs, workers=1)
    np.testing.assert_array_equal(one.mirror, two.mirror)
    for f in ("angle", "dx", "dy", "score"):
        np.testing.assert_allclose(getattr(one, f), getattr(two, f), rtol=1e-5, atol=1e-4)


def test_compiled_refine_objective_is_the_ccc_of_the_transformed_image(case):
    """refine_2d scores trials without making the images: same as transform + Pearson ccc."""
    from emforge.numerics import _align_kernels as k
    from emforge.numerics.refine2d import _paired_ccc

    parts, ref, truth = case
    refs = np.broadcast_to(ref, parts.shape).copy()
    rng = np.random.default_rng(9)
    q = np.stack([truth["dx"] + rng.normal(0, 1, 10), truth["dy"] + rng.normal(0, 1, 10),
                  truth["angle"] + rng.normal(0, 5, 10)], -1)  # fmt: skip
    got = np.empty((10, 1))
    k.transformed_ccc(parts, refs, np.arange(10), q[:, None, :], truth["mirror"], got)
    moved = al.transform_images_2d(parts, q[:, 2], q[:, 0], q[:, 1], truth["mirror"])
    np.testing.assert_allclose(got[:, 0], _paired_ccc(moved, refs), atol=1e-6)
