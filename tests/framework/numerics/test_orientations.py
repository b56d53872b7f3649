"""emforge.numerics.orientations: EMAN2's "eman" generator against the counts and views that
EMAN2's gen_orientations produces (reference table of the EMAN2 sources), and the SO(3) grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from emforge.numerics import asymmetric_unit as au
from emforge.numerics import orientations as og
from emforge.numerics import rotations as ro
from emforge.numerics import symmetry as sy

SYMS = ["c1", "c2", "c3", "c4", "c5", "c7", "d2", "d3", "d7", "tet", "oct", "icos"]
# views without / with inc_mirror (perturb 0, phitoo 0), one row per delta
COUNTS = {
    5.0: "833/1665 436/837 279/557 221/425 170/340 124/248 226/419 150/279 74/124 72/138 42/72 22/29",
    7.5: "372/743 196/369 126/251 102/193 78/157 57/114 107/185 70/126 39/57 33/63 21/34 13/14",
    10.0: "210/419 114/211 72/143 59/110 44/88 33/66 62/106 42/72 27/33 18/34 14/19 10/9",
    15.0: "93/185 54/97 33/65 27/49 21/42 16/33 32/49 21/33 18/16 9/15 9/9 7/5",
    30.0: "25/49 15/25 10/19 8/14 7/13 7/13 11/13 9/10 9/7 3/4 4/3 4/3",
}
CASES = [
    (sym, delta, mirror, int(cell.split("/")[mirror]))
    for delta, row in COUNTS.items()
    for sym, cell in zip(SYMS, row.split(), strict=True)
    for mirror in (0, 1)
]


@pytest.mark.parametrize("sym, delta, mirror, count", CASES)
def test_eman_counts_equal_eman2(sym, delta, mirror, count):
    views = og.eman_orientations(sym, delta, inc_mirror=bool(mirror))
    assert views.shape == (count, 3) and views.dtype == np.float32
    np.testing.assert_array_equal(views[:, 2], 0.0)
    mats = ro.eman_to_matrix(views)
    assert au.in_asymmetric_unit(mats, sym, inc_mirror=bool(mirror)).all()


@pytest.mark.parametrize(
    "sym, head, tail",
    [
        ("c1", [(0, 0), (0, 5), (57.369, 5)], [(175, 90), (180, 90)]),
        ("d7", [(0, 0), (0, 5), (12.245, 5)], [(0, 90), (5, 90), (10, 90)]),
        ("icos", [(234, 0), (234, 5), (251.143, 5), (268.286, 5), (234, 10)], None),
    ],
)
def test_eman_first_and_last_views(sym, head, tail):
    views = og.eman_orientations(sym, 5.0)
    np.testing.assert_allclose(views[: len(head), :2], head, atol=1e-3)
    if tail:
        np.testing.assert_allclose(views[-len(tail) :, :2], tail, atol=1e-3)


def test_eman_quirks():
    # delta not dividing 90: the equator rules never fire (astep 4.999 of e2refine_easy, box 128)
    assert len(og.eman_orientations("c1", 4.999)) == 868
    # the 2.8 rule: icos with mirror has fewer views than without at delta 10
    assert len(og.eman_orientations("icos", 10, inc_mirror=True)) == 9
    # e2spt_tempmatch and e2spt_align_subtlt rotation sets
    assert len(og.eman_orientations("c1", 30, phitoo=30, inc_mirror=True)) == 588
    assert len(og.eman_orientations("c1", 7.5, phitoo=7.5, inc_mirror=True)) == 35_664


def test_helical_views_lie_in_the_tilt_band():
    plain = og.eman_orientations("h3", 5, maxtilt=20)
    assert plain[:, 1].min() == 70 and plain[:, 1].max() == 90
    assert au.in_asymmetric_unit(ro.eman_to_matrix(plain), "h3", maxtilt=20).all()
    # EMAN2 adds, for every ring above alt_min, the views at 2 alt_min - alt
    mirror = og.eman_orientations("h3", 5, maxtilt=20, inc_mirror=True)
    first_ring = np.count_nonzero(plain[:, 1] == 70)
    assert len(mirror) == 2 * len(plain) - first_ring
    np.testing.assert_array_equal(
        np.sort(mirror[mirror[:, 1] < 70, 1]), np.sort(140 - plain[plain[:, 1] > 70, 1])
    )
    assert au.in_asymmetric_unit(ro.eman_to_matrix(mirror), "h3", inc_mirror=True, maxtilt=20).all()


def test_phitoo_copies_every_view():
    base = og.eman_orientations("c2", 15)
    views = og.eman_orientations("c2", 15, phitoo=30)
    assert len(views) == 12 * len(base)
    np.testing.assert_array_equal(views[:12, 2], np.arange(12) * 30.0)
    np.testing.assert_array_equal(views[::12, :2], base[:, :2])


def test_perturb_is_seeded_and_of_the_stated_size():
    base = og.eman_orientations("c1", 5)
    a = og.eman_orientations("c1", 5, perturb=True, seed=1)
    np.testing.assert_array_equal(a, og.eman_orientations("c1", 5, perturb=True, seed=1))
    assert a.shape == base.shape
    np.testing.assert_array_equal(a[0], base[0])  # the pole view is never perturbed
    dalt = (a - base)[1:, 1]
    assert abs(dalt.std() - 5 / 8) < 0.05 and abs(dalt.mean()) < 0.05


@pytest.mark.parametrize("sym, bound", [("c1", 0.75), ("c2", 0.75), ("c4", 0.75), ("d2", 1.05),
                                        ("d3", 1.05), ("d7", 1.05), ("tet", 1.3), ("oct", 1.3),
                                        ("icos", 1.3)])  # fmt: skip
@pytest.mark.parametrize("delta", [5.0, 10.0, 15.0])
def test_eman_views_cover_the_sphere(sym, bound, delta):
    """Symmetry images of the views plus their antipodes leave no hole wider than the bound
    (C: 0.75 delta, D: 1.05 delta; measured 0.70 and 0.64-1.02; platonic measured <= 1.27)."""
    dirs = ro.eman_to_matrix(og.eman_orientations(sym, delta))[:, 2, :]
    cloud = np.einsum("nj,gjk->ngk", dirs, sy.symmetry_matrices(sym)).reshape(-1, 3)
    tree = cKDTree(np.concatenate([cloud, -cloud]))
    u = np.random.default_rng(0).normal(size=(20_000, 3))
    dist, _ = tree.query(u / np.linalg.norm(u, axis=1, keepdims=True))
    gap = np.degrees(2 * np.arcsin(dist.max() / 2))
    assert gap <= bound * delta


def test_mirror_set_of_c1_covers_both_hemispheres():
    """The mirror set of c1 is the full sphere: each direction's antipode is (nearly) in it."""
    dirs = ro.eman_to_matrix(og.eman_orientations("c1", 5, inc_mirror=True))[:, 2, :]
    assert dirs[:, 2].min() < -0.99 and dirs[:, 2].max() > 0.99
    dist, _ = cKDTree(dirs).query(-dirs)
    assert np.degrees(2 * np.arcsin(dist.max() / 2)) < 5.0


@pytest.mark.parametrize("step", [30.0, 15.0])
def test_so3_grid_covers_so3(step):
    grid = og.so3_grid(step)
    assert len(grid) == og.so3_grid_size(step)
    np.testing.assert_allclose(np.linalg.det(grid), 1.0, atol=1e-12)
    rand = ro.random_rotations(20_000, seed=1)
    # nearest grid rotation of each random one, through quaternions (q and -q are one rotation)
    qg = Rotation.from_matrix(grid).as_quat()
    _, idx = cKDTree(np.concatenate([qg, -qg])).query(Rotation.from_matrix(rand).as_quat())
    gap = ro.rotation_angle_between(rand, np.concatenate([grid, grid])[idx])
    assert gap.max() <= step and np.median(gap) < 0.6 * step


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: og.eman_orientations("c1", 0), "delta: must be a positive"),
        (lambda: og.eman_orientations("c1", 5, phitoo=-1), "phitoo: must be >= 0"),
        (lambda: og.eman_orientations("q2", 5), "symmetry: 'q2'"),
        (lambda: og.so3_grid(0), r"step: must be in \(0, 180\]"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
