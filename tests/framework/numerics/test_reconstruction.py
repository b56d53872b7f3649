"""Fourier reconstruction: round trips against the true map, halves, symmetry, CTF, weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recon_data import (  # noqa: E402
    corr,
    emd3488_64,
    euler_matrix,
    gaussian_blobs,
    random_rotations,
)

from emforge.numerics import (  # noqa: E402
    finish_reconstruction,
    fsc,
    insert_images,
    project_fourier,
    reconstruct_fourier,
    spatial_frequency_rfft,
)


@pytest.fixture(scope="module")
def emd64(data_dir):
    return emd3488_64(data_dir)


def _min_fsc(a, b, px, upto: float) -> float:
    """Smallest FSC between ``a`` and ``b`` over shells 1 .. upto x Nyquist."""
    _, f = fsc(a, b, pixel_size=px)
    return float(f[1 : int(upto * (a.shape[0] // 2)) + 1].min())


@pytest.mark.slow
def test_round_trip_2000_views_emd3488(emd64):
    # Acceptance: 2,000 noise-free projections of EMD-3488 at 64^3, true poses:
    # FSC with the truth >= 0.9 up to 0.8 x Nyquist.
    vol, px = emd64
    rots = random_rotations(2000, seed=7)
    rec = reconstruct_fourier(project_fourier(vol, rots), rots, pixel_size=px)
    assert _min_fsc(rec.volume, vol, px, 0.8) >= 0.99
    assert corr(rec.volume, vol) > 0.995
    assert np.std(rec.volume) == pytest.approx(np.std(vol), rel=0.02)  # density scale kept
    assert rec.count == (1000, 1000)
    assert rec.fsc is not None and rec.fsc[1:26].min() > 0.99  # halves agree


@pytest.mark.slow
def test_round_trip_with_shifts(emd64):
    vol, px = emd64
    rots = random_rotations(1000, seed=8)
    shifts = np.random.default_rng(8).uniform(-3, 3, (1000, 2)) * px
    imgs = project_fourier(vol, rots, shifts=shifts, pixel_size=px)
    good = reconstruct_fourier(imgs, rots, shifts=shifts, pixel_size=px)
    assert _min_fsc(good.volume, vol, px, 0.8) >= 0.95
    ignored = reconstruct_fourier(imgs, rots, pixel_size=px)
    assert corr(ignored.volume, vol) < 0.8 < corr(good.volume, vol)


def test_gaussian_kernel_round_trip(emd64):
    vol, px = emd64
    rots = random_rotations(300, seed=9)
    rec = reconstruct_fourier(project_fourier(vol, rots), rots, pixel_size=px, kernel="gauss")
    assert _min_fsc(rec.volume, vol, px, 0.6) >= 0.9
    assert corr(rec.volume, vol) > 0.95


def test_halves_come_from_their_subsets():
    n = 32
    a = gaussian_blobs(n, [(5.0, 0.0, 0.0), (-4.0, 6.0, 2.0)], 2.0)
    b = gaussian_blobs(n, [(0.0, -7.0, 3.0), (3.0, 3.0, -6.0)], 2.0)
    rots = random_rotations(600, seed=4)
    imgs = np.concatenate([project_fourier(a, rots[:300]), project_fourier(b, rots[300:])])
    subset = np.repeat([1, 2], 300)
    rec = reconstruct_fourier(imgs, rots, subset=subset, pixel_size=2.0)
    assert corr(rec.half1, a) > 0.99 and corr(rec.half2, b) > 0.99
    assert corr(rec.volume, a + b) > 0.98
    _, f = fsc(rec.half1, rec.half2, pixel_size=2.0)
    np.testing.assert_allclose(rec.fsc, f, atol=1e-6)
    assert rec.fsc[3:10].max() < 0.5  # different maps
    # the default split is even/odd: alternate a, b images
    order = np.ravel(np.column_stack([np.arange(300), np.arange(300, 600)]))
    alt = reconstruct_fourier(imgs[order], rots[order])
    assert corr(alt.half1, a) > 0.99 and corr(alt.half2, b) > 0.99
    assert alt.s is None and alt.fsc is None  # no pixel size, no FSC


def test_symmetry_fills_a_missing_cone():
    # Blobs with a 4-fold about x; views only within 40 degrees of z leave a cone around kz
    # empty, which the 4-fold rotates into sampled directions.
    n = 40
    rng = np.random.default_rng(0)

    def rx(deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    sym = np.stack([rx(d) for d in (0, 90, 180, 270)])
    base = rng.uniform(-10, 10, (5, 3))
    vol = gaussian_blobs(n, [s @ c for s in sym for c in base], 1.5)
    count = 400
    tilt = np.degrees(np.arccos(rng.uniform(np.cos(np.radians(40)), 1.0, count)))
    angles = np.column_stack([rng.uniform(-180, 180, count), tilt, rng.uniform(-180, 180, count)])
    rots = np.stack([euler_matrix(*a) for a in angles])
    imgs = project_fourier(vol, rots)
    plain = reconstruct_fourier(imgs, rots)
    symm = reconstruct_fourier(imgs, rots, symmetry=sym)
    assert corr(plain.volume, vol) < 0.9
    assert corr(symm.volume, vol) > 0.99
    assert _min_fsc(symm.volume, vol, 1.0, 0.7) > 0.9


def _ctf(n: int, px: float, defocus: np.ndarray) -> np.ndarray:
    """A phase-contrast CTF -sin(pi lambda dz s^2) with 7% amplitude contrast, 300 kV."""
    s2 = spatial_frequency_rfft((n, n), pixel_size=px) ** 2
    lam = 0.019687  # A at 300 kV
    chi = np.pi * lam * defocus[:, None, None] * s2[None]
    w = 0.07
    return (-np.sqrt(1 - w * w) * np.sin(chi) - w * np.cos(chi)).astype(np.float32)


@pytest.mark.slow
def test_wiener_reconstruction_undoes_the_ctf(emd64):
    vol, px = emd64
    count = 800
    rots = random_rotations(count, seed=12)
    ctf = _ctf(64, px, np.random.default_rng(12).uniform(10000, 30000, count))
    imgs = project_fourier(vol, rots, ctf=ctf)
    wiener = reconstruct_fourier(imgs, rots, ctf=ctf, wiener_constant=1e-3, pixel_size=px)
    assert _min_fsc(wiener.volume, vol, px, 0.8) > 0.95
    uncorrected = reconstruct_fourier(imgs, rots, pixel_size=px)
    assert corr(uncorrected.volume, vol) < 0.5 < 0.95 < corr(wiener.volume, vol)
    # a per-shell constant works the same way
    tau = np.full(33, 1e-3)
    shells = reconstruct_fourier(imgs, rots, ctf=ctf, wiener_constant=tau, pixel_size=px)
    assert corr(shells.volume, wiener.volume) > 0.9999


def test_chunks_add_and_zero_weight_leaves_an_image_out():
    n = 32
    vol = gaussian_blobs(n, [(5.0, 0.0, 0.0), (-4.0, 6.0, 2.0)], 2.0)
    rots = random_rotations(400, seed=3)
    imgs = project_fourier(vol, rots)
    whole = finish_reconstruction(insert_images(imgs, rots))
    parts = insert_images(imgs[:150], rots[:150]) + insert_images(imgs[150:], rots[150:])
    assert parts.count == (200, 200)
    chunked = finish_reconstruction(parts)
    assert corr(chunked.volume, whole.volume) > 0.99999
    junk = np.random.default_rng(0).normal(0, 10, (100, n, n)).astype(np.float32)
    weights = np.r_[np.ones(400), np.zeros(100)]
    rec = reconstruct_fourier(
        np.concatenate([imgs, junk]), np.concatenate([rots, rots[:100]]), weights=weights
    )
    assert corr(rec.volume, whole.volume) > 0.99999


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotations": np.zeros((2, 3, 3))}, "rotations: 2 matrices for 3 images"),
        ({"weights": [1.0, 2.0]}, "weights"),
        ({"subset": [0, 1, 2]}, "subset"),
        ({"symmetry": np.eye(2)}, "symmetry"),
        ({"kernel": "nearest"}, "kernel"),
        ({"ctf": np.ones((3, 8, 8))}, "ctf"),
        ({"shifts": np.zeros((3, 2))}, "pixel_size"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    args = {"rotations": np.tile(np.eye(3), (3, 1, 1))} | kwargs
    rot = args.pop("rotations")
    with pytest.raises(ValueError, match=match):
        insert_images(np.zeros((3, 8, 8)), rot, **args)


def test_images_must_be_square():
    with pytest.raises(ValueError, match="images: must be a stack of square images"):
        insert_images(np.zeros((3, 8, 9)), np.tile(np.eye(3), (3, 1, 1)))


def test_point_group_matrices_of_the_symmetry_module(emd64):
    # EMD-3488 has an exact 2-fold about z (EMAN's c2 axis). With few views, inserting each
    # image twice (c2) beats no symmetry; a 2-fold about x (the wrong axis) ruins the map.
    from emforge.numerics import symmetry_matrices

    vol, px = emd64
    rots = random_rotations(60, seed=21)
    imgs = project_fourier(vol, rots)
    plain = reconstruct_fourier(imgs, rots).volume
    c2 = reconstruct_fourier(imgs, rots, symmetry=symmetry_matrices("c2")).volume
    wrong = np.stack([np.eye(3), np.diag([1.0, -1.0, -1.0])])
    bad = reconstruct_fourier(imgs, rots, symmetry=wrong).volume
    assert corr(c2, vol) > corr(plain, vol) + 0.01
    assert corr(bad, vol) < corr(plain, vol) - 0.1


def test_private_grids_and_shared_planes_insert_the_same(monkeypatch):
    """Both thread schemes of the inserter (module notes of _slice_kernels) give one result."""
    from emforge.numerics import _slice_kernels, reconstruction

    if _slice_kernels.num_threads() < 2:
        pytest.skip("one numba thread: only the shared-grid scheme runs")
    rng = np.random.default_rng(8)
    imgs = rng.normal(size=(30, 16, 16)).astype(np.float32)
    rots = random_rotations(30, seed=9)
    split = insert_images(imgs, rots, kernel="gauss")
    monkeypatch.setattr(reconstruction, "SPLIT_GRID_BYTES", 0)
    shared = insert_images(imgs, rots, kernel="gauss")
    np.testing.assert_allclose(
        split.grid, shared.grid, rtol=1e-4, atol=1e-4 * np.abs(shared.grid).max()
    )
    assert split.count == shared.count == (15, 15)
