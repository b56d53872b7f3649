"""emforge.numerics.rotations against scipy, the written-out RELION matrix and real RELION poses."""

from __future__ import annotations

import numpy as np
import pytest
import starfile
from scipy.spatial.transform import Rotation
from scipy.stats import kstest

from emforge.numerics import rotations as ro

STAR_FILES = ["relion31.star", "sample_particles_relion31.star"]


def _random_angles(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)], -1
    )


def test_euler_zyz_matches_scipy_intrinsic_zyz_transposed():
    ang = _random_angles(500)
    ref = Rotation.from_euler("ZYZ", ang, degrees=True).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(ro.euler_zyz_to_matrix(ang), ref, atol=1e-12)


def test_euler_zyz_matches_written_out_relion_matrix():
    rot, tilt, psi = np.radians([30.0, 50.0, -70.0])
    ca, cb, cg, sa, sb, sg = (np.cos(rot), np.cos(tilt), np.cos(psi), *np.sin([rot, tilt, psi]))
    ref = [
        [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
        [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
        [sb * ca, sb * sa, cb],
    ]
    np.testing.assert_allclose(ro.euler_zyz_to_matrix([30.0, 50.0, -70.0]), ref, atol=1e-15)


def test_projection_direction_is_third_row_and_pole_at_tilt_zero():
    # tilt 0: viewing along +z; tilt 90, rot 0: along +x (RELION's convention)
    np.testing.assert_allclose(ro.view_direction(ro.euler_zyz_to_matrix([0, 0, 40])), [0, 0, 1])
    d = ro.view_direction(ro.euler_zyz_to_matrix([0, 90, 40]))
    np.testing.assert_allclose(d, [1, 0, 0], atol=1e-15)


def test_matrix_to_euler_round_trip_and_ranges():
    ang = _random_angles(2000, seed=1)
    m = ro.euler_zyz_to_matrix(ang)
    back = ro.matrix_to_euler_zyz(m)
    np.testing.assert_allclose(ro.euler_zyz_to_matrix(back), m, atol=1e-10)
    np.testing.assert_allclose(back, ang, atol=1e-8)  # unique for tilt in (0, 180)
    assert back[:, 1].min() >= 0 and back[:, 1].max() <= 180
    assert np.all(np.abs(back[:, [0, 2]]) <= 180)


@pytest.mark.parametrize("tilt", [0.0, 180.0, 1e-9, 180 - 1e-9])
def test_matrix_to_euler_gimbal_lock(tilt):
    m = ro.euler_zyz_to_matrix([25.0, tilt, 40.0])
    back = ro.matrix_to_euler_zyz(m)
    assert back[0] == 0.0
    np.testing.assert_allclose(ro.euler_zyz_to_matrix(back), m, atol=1e-8)


@pytest.mark.parametrize("name", STAR_FILES)
def test_real_relion_poses_round_trip(data_dir, name):
    df = starfile.read(data_dir / "particles" / name)["particles"]
    ang = df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float)
    assert len(ang) >= 5
    m = ro.euler_zyz_to_matrix(ang)
    ref = Rotation.from_euler("ZYZ", ang, degrees=True).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(m, ref, atol=1e-12)
    np.testing.assert_allclose(
        m @ m.transpose(0, 2, 1), np.broadcast_to(np.eye(3), m.shape), atol=1e-12
    )
    back = ro.matrix_to_euler_zyz(m)
    np.testing.assert_allclose(ro.euler_zyz_to_matrix(back), m, atol=1e-10)
    # RELION writes tilt in [0, 180] and rot/psi in (-180, 180]: the angles come back as written
    diff = (back - ang + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(diff, 0.0, atol=1e-6)


def test_eman_matrix_is_eman2_formula():
    az, alt, phi = 35.0, 62.0, 118.0
    a, b, c = np.radians([az, alt, phi])
    ref = [
        [np.cos(c) * np.cos(a) - np.cos(b) * np.sin(a) * np.sin(c),
         np.cos(c) * np.sin(a) + np.cos(b) * np.cos(a) * np.sin(c), np.sin(b) * np.sin(c)],
        [-np.sin(c) * np.cos(a) - np.cos(b) * np.sin(a) * np.cos(c),
         -np.sin(c) * np.sin(a) + np.cos(b) * np.cos(a) * np.cos(c), np.sin(b) * np.cos(c)],
        [np.sin(b) * np.sin(a), -np.sin(b) * np.cos(a), np.cos(b)],
    ]  # fmt: skip
    np.testing.assert_allclose(ro.eman_to_matrix([az, alt, phi]), ref, atol=1e-14)


def test_eman_relion_conversion_keeps_the_matrix():
    rng = np.random.default_rng(3)
    eman = np.stack(
        [rng.uniform(0, 360, 300), rng.uniform(0, 180, 300), rng.uniform(0, 360, 300)], -1
    )
    rel = ro.eman_to_euler_zyz(eman)
    np.testing.assert_allclose(ro.euler_zyz_to_matrix(rel), ro.eman_to_matrix(eman), atol=1e-12)
    np.testing.assert_allclose(
        rel[0], [eman[0, 0] - 90, eman[0, 1], (eman[0, 2] + 90 + 180) % 360 - 180]
    )
    np.testing.assert_allclose(ro.euler_zyz_to_eman(rel), eman, atol=1e-9)
    m = ro.eman_to_matrix(eman)
    np.testing.assert_allclose(ro.eman_to_matrix(ro.matrix_to_eman(m)), m, atol=1e-10)


def test_axis_angle_matches_scipy_rotvec():
    rng = np.random.default_rng(4)
    axis = rng.normal(size=(50, 3))
    angle = rng.uniform(-180, 180, 50)
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    ref = Rotation.from_rotvec(unit * np.radians(angle)[:, None]).as_matrix()
    np.testing.assert_allclose(ro.axis_angle_to_matrix(axis, angle), ref, atol=1e-12)


def test_quaternion_to_matrix_matches_scipy():
    q = np.random.default_rng(5).normal(size=(40, 4))
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is scalar-last
    np.testing.assert_allclose(ro.quaternion_to_matrix(q), ref, atol=1e-12)


def test_rotation_angle_between():
    a = ro.euler_zyz_to_matrix(_random_angles(100, seed=6))
    b = a @ ro.axis_angle_to_matrix([1.0, 2.0, 3.0], 37.0)
    np.testing.assert_allclose(ro.rotation_angle_between(a, b), 37.0, atol=1e-9)
    np.testing.assert_allclose(ro.rotation_angle_between(a, a), 0.0, atol=1e-5)


def test_random_rotations_are_seeded_and_haar_uniform():
    r = ro.random_rotations(20000, seed=7)
    np.testing.assert_array_equal(r, ro.random_rotations(20000, seed=7))
    assert not np.array_equal(r, ro.random_rotations(20000, seed=8))
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # Haar measure: the rotation angle t has CDF (t - sin t) / pi; the mean matrix is 0
    t = np.radians(ro.rotation_angle_between(r, np.eye(3)))
    assert kstest(t, lambda x: (x - np.sin(x)) / np.pi).pvalue > 0.01
    assert np.abs(r.mean(axis=0)).max() < 0.02


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ro.euler_zyz_to_matrix([1.0, 2.0]), "angles: expected shape"),
        (lambda: ro.euler_zyz_to_matrix([1.0, np.nan, 2.0]), "angles: contains NaN"),
        (lambda: ro.matrix_to_euler_zyz(np.eye(4)), r"matrices: expected shape \(\.\.\., 3, 3\)"),
        (lambda: ro.axis_angle_to_matrix([0, 0, 0], 10), "axis: has zero length"),
        (lambda: ro.random_rotations(-1), "n: must be an integer"),
        (lambda: ro.quaternion_to_matrix([0, 0, 0, 0]), "q: has zero length"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
