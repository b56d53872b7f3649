"""emforge.numerics.asymmetric_unit: EMAN2's units as exact fractions of the sphere, boundaries,
reduction of poses into the unit."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import asymmetric_unit as au
from emforge.numerics import rotations as ro
from emforge.numerics import symmetry as sy


def _random_directions(n, seed=0):
    u = np.random.default_rng(seed).normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@pytest.mark.parametrize("symbol", ["c1", "c2", "c3", "c7", "d2", "d3", "d7", "tet", "oct", "icos"])
@pytest.mark.parametrize("inc_mirror", [False, True])
def test_asymmetric_unit_is_one_group_image_of_the_sphere(symbol, inc_mirror):
    """The unit holds 1/(2G) of all directions (1/G with its mirror half), and its images under the
    group (plus their antipodes without mirror) cover the sphere."""
    u = _random_directions(120_000)
    g = sy.symmetry_order(symbol)
    frac = au.direction_in_asymmetric_unit(u, symbol, inc_mirror=inc_mirror).mean()
    expected = (2.0 if inc_mirror else 1.0) / (2 * g)
    assert abs(frac - expected) < 4 * np.sqrt(expected / len(u)) + 1e-3 * expected
    mates = np.einsum("nj,gjk->ngk", u[:3000], sy.symmetry_matrices(symbol))
    if not inc_mirror:
        mates = np.concatenate([mates, -mates], axis=1)
    assert au.direction_in_asymmetric_unit(mates, symbol, inc_mirror=inc_mirror).any(axis=1).all()


def test_asymmetric_unit_boundaries():
    d = lambda alt, az: ro.eman_to_matrix([az, alt, 0.0])  # noqa: E731
    assert au.in_asymmetric_unit(d(90, 0), "c1") and not au.in_asymmetric_unit(d(91, 0), "c1")
    assert au.in_asymmetric_unit(d(91, 0), "c1", inc_mirror=True)
    assert au.in_asymmetric_unit(d(45, 119.9), "c3") and not au.in_asymmetric_unit(d(45, 121), "c3")
    assert au.in_asymmetric_unit(d(45, 25.7), "d7") and not au.in_asymmetric_unit(d(45, 26.0), "d7")
    assert au.in_asymmetric_unit(d(45, 51.0), "d7", inc_mirror=True)
    # icos: unit of alt <= 37.38 deg, 36 deg of az starting at EMAN's offset 234
    assert au.in_asymmetric_unit(d(10, 250), "icos") and not au.in_asymmetric_unit(
        d(10, 200), "icos"
    )
    assert not au.in_asymmetric_unit(d(38, 234), "icos")
    # helical: a band of +-maxtilt about the equator
    assert au.in_asymmetric_unit(d(80, 300), "h3", maxtilt=20) and not au.in_asymmetric_unit(
        d(60, 0), "h3", maxtilt=20
    )


@pytest.mark.parametrize("symbol", ["c4", "d3", "tet", "icos"])
def test_reduce_to_asymmetric_unit(symbol):
    poses = ro.random_rotations(500, seed=4)
    red = au.reduce_to_asymmetric_unit(poses, symbol, inc_mirror=True)
    assert au.in_asymmetric_unit(red, symbol, inc_mirror=True).all()
    rel = np.einsum("nji,njk->nik", poses, red)  # A^T A' must be a group element
    d = np.abs(rel[:, None] - sy.symmetry_matrices(symbol)[None]).max(axis=(2, 3))
    assert np.all(d.min(axis=1) < 1e-9)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: au.in_asymmetric_unit(np.zeros((2, 3)), "c1"), "matrices: expected shape"),
        (lambda: au.direction_in_asymmetric_unit(np.zeros(3), "c1"), "directions: has zero"),
        (lambda: au.direction_in_asymmetric_unit(np.ones(3), "c1", tol=-1), "tol: must be >= 0"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
