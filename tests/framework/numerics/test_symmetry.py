"""emforge.numerics.symmetry: group structure, EMAN2/RELION axes, asymmetric units, expansion."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import rotations as ro
from emforge.numerics import symmetry as sy

GROUPS = {"c1": 1, "c2": 2, "c7": 7, "d2": 4, "d3": 6, "d7": 14, "tet": 12, "oct": 24, "icos": 60}


def _same_set(a, b, atol=1e-6):
    if len(a) != len(b):
        return False
    d = np.abs(a[:, None] - b[None]).max(axis=(2, 3))
    return bool(np.all(d.min(axis=1) < atol))


def _axes(group, fold):
    """Unit axes (sign-normalised) of the rotations by 360/fold in the group."""
    ang = ro.rotation_angle_between(group, np.eye(3))
    out = []
    for m in group[np.abs(ang - 360.0 / fold) < 1e-6]:
        w, v = np.linalg.eig(m)
        ax = np.real(v[:, np.argmin(np.abs(w - 1))])
        ax = np.round(ax, 9) + 0.0
        out.append(ax if tuple(ax[::-1]) > (0, 0, 0) else -ax + 0.0)
    return np.unique(np.array(out), axis=0)


@pytest.mark.parametrize("convention", ["eman", "relion"])
@pytest.mark.parametrize("symbol, order", list(GROUPS.items()))
def test_groups_are_closed_rotation_groups(symbol, order, convention):
    g = sy.symmetry_matrices(symbol, convention=convention)
    assert g.shape == (order, 3, 3) and sy.symmetry_order(symbol) == order
    np.testing.assert_array_equal(g[0], np.eye(3))
    np.testing.assert_allclose(np.linalg.det(g), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        g @ g.transpose(0, 2, 1), np.broadcast_to(np.eye(3), g.shape), atol=1e-12
    )
    products = np.einsum("aij,bjk->abik", g, g).reshape(-1, 3, 3)
    d = np.abs(products[:, None] - g[None]).max(axis=(2, 3))
    assert np.all(d.min(axis=1) < 1e-9)  # every product is in the group
    assert not g.flags.writeable


def test_eman_axes():
    z = np.array([0.0, 0.0, 1.0])
    # cn/dn: n-fold on z; EMAN's D2 puts the 2-folds on x and y
    np.testing.assert_allclose(_axes(sy.symmetry_matrices("c7"), 7), [z])
    assert _same_set(sy.symmetry_matrices("d2"), np.array([np.diag(v) for v in
                     [(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)]]).astype(float))  # fmt: skip
    d7_twofolds = _axes(sy.symmetry_matrices("d7"), 2)
    assert np.abs(d7_twofolds[:, 2]).max() < 1e-12 and np.any(
        np.all(np.isclose(d7_twofolds, [1, 0, 0]), 1)
    )
    # tet: 3-fold on z; oct: 4-folds on x, y, z; icos: 5-fold on z and a 2-fold in the xz plane
    assert np.any(np.all(np.isclose(_axes(sy.symmetry_matrices("tet"), 3), z), axis=1))
    oct4 = _axes(sy.symmetry_matrices("oct"), 4)
    assert _same_set(oct4[:, None, :], np.eye(3)[:, None, :])
    icos = sy.symmetry_matrices("icos")
    assert np.any(np.all(np.isclose(_axes(icos, 5), z), axis=1))
    two = _axes(icos, 2)
    assert np.any(
        np.all(np.isclose(two, [np.sin(np.arctan(0.5 / 0.809017)), 0, 0.85065081], atol=1e-6), 1)
    )


@pytest.mark.parametrize(
    "relion, eman, turn",
    [("c7", "c7", 0.0), ("d3", "d3", 0.0), ("oct", "oct", 0.0), ("tet", "tet", 60.0),
     ("i3", "icos", 36.0), ("i4", "icos", 0.0)],
)  # fmt: skip
def test_relion_axes_relate_to_eman_by_a_turn_about_z(relion, eman, turn):
    g_rel = sy.symmetry_matrices(relion, convention="relion")
    q = ro.axis_angle_to_matrix([0, 0, 1], turn)
    g_eman = sy.symmetry_matrices(eman)
    assert _same_set(g_rel, q @ g_eman @ q.T)
    if turn:
        assert not _same_set(g_rel, g_eman)


@pytest.mark.parametrize("symbol", ["c5", "d2", "tet", "oct", "i", "i1", "i2", "i3", "i4"])
def test_symmetry_axes_rotation_maps_eman_axes_onto_relion(symbol):
    q = sy.symmetry_axes_rotation(symbol)
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(q) == pytest.approx(1.0)
    g_eman = sy.symmetry_matrices("icos" if symbol.startswith("i") else symbol)
    assert _same_set(sy.symmetry_matrices(symbol, convention="relion"), q @ g_eman @ q.T)
    if symbol in ("c5", "d2", "oct", "i4"):
        np.testing.assert_allclose(q, np.eye(3))


def test_relion_default_icos_has_two_folds_on_the_axes():
    for variant in ("i", "i1", "i2"):
        two = _axes(sy.symmetry_matrices(variant, convention="relion"), 2)
        assert _same_set(two[np.isclose(np.abs(two).max(1), 1)][:, None], np.eye(3)[:, None])
    assert _same_set(
        sy.symmetry_matrices("i", convention="relion"),
        sy.symmetry_matrices("i2", convention="relion"),
    )


def test_expand_poses_gives_the_same_projection_of_a_symmetric_map():
    """A D7-symmetric point cloud seen at pose A and at every expanded pose A S: the same set of
    particle-frame points, hence the same projection."""
    rng = np.random.default_rng(2)
    g = sy.symmetry_matrices("d7")
    atoms = np.einsum("gij,nj->gni", g, rng.normal(size=(5, 3))).reshape(-1, 3)  # a D7 object
    poses = ro.random_rotations(4, seed=3)
    expanded = sy.expand_poses(poses, "d7")
    assert expanded.shape == (4, 14, 3, 3)
    np.testing.assert_allclose(expanded[:, 0], poses)
    for i in range(4):
        ref = np.sort(np.round(atoms @ poses[i].T, 9), axis=0)
        for k in range(14):
            np.testing.assert_allclose(
                np.sort(np.round(atoms @ expanded[i, k].T, 9), axis=0), ref, atol=1e-8
            )


def test_helical_operators_eman_order():
    rot, shift = sy.helical_operators(5, twist=22.0, rise=4.5)
    k = np.array([0, 1, -1, 2, -2])
    np.testing.assert_allclose(shift[:, 2], 4.5 * k)
    ref = np.stack([ro.axis_angle_to_matrix([0, 0, 1], 22.0 * i) for i in k])
    np.testing.assert_allclose(rot, ref, atol=1e-12)
    np.testing.assert_allclose(
        rot[1] @ [1.0, 0, 0], [np.cos(np.radians(22)), np.sin(np.radians(22)), 0]
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sy.symmetry_matrices("x3"), "symmetry: 'x3' is not one of"),
        (lambda: sy.symmetry_matrices("c0"), "symmetry: 'c0' needs an order"),
        (lambda: sy.symmetry_matrices("i3"), "symmetry: 'i3' is not one of"),
        (lambda: sy.symmetry_matrices("h3"), "symmetry: helical groups need twist"),
        (lambda: sy.symmetry_matrices("c2", convention="spider"), "convention: 'spider'"),
        (lambda: sy.symmetry_axes_rotation("h2"), "symbol: 'h2' is helical"),
        (lambda: sy.expand_poses(np.eye(3), "c2"), r"matrices: expected shape \(N, 3, 3\)"),
        (lambda: sy.helical_operators(0, twist=1, rise=1), "n: must be an integer"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
