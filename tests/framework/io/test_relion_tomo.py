"""RELION 5 / Warp sub-tilt particles (EMPIAR-10499 test set): reading and reconstruction."""

from __future__ import annotations

import shutil

import mrcfile
import numpy as np
import pytest
import starfile
from scipy.spatial.transform import Rotation

from emforge.errors import InputFileError
from emforge.io.relion_tomo import read_subtilt_particles
from emforge.numerics import ctf_2d, finish_reconstruction, fsc_wiener_constant, insert_images

NAME = "warptools_test_4-tomos_10-ptcls_box-32_angpix-12"


@pytest.fixture(scope="module")
def tomo(data_dir):
    return data_dir / "tomo" / "ribosome_tiltseries"


@pytest.fixture(scope="module")
def subtilts(tomo):
    return read_subtilt_particles(tomo / f"{NAME}.star")


def _vec(text: str) -> np.ndarray:
    return np.array(text.strip("[]").split(","), dtype=float)


def test_every_visible_tilt_is_an_image_with_relions_pose(tomo, subtilts):
    parts = starfile.read(tomo / f"{NAME}.star")["particles"]
    tilts = starfile.read(tomo / f"{NAME}_tomograms.star")
    visible = [_vec(v) for v in parts["rlnTomoVisibleFrames"]]
    assert len(subtilts) == sum(int(v.sum()) for v in visible) == 1430
    assert subtilts.ctf_premultiplied and subtilts.pixel_size == 12.0 and subtilts.box == 32
    # particle 12 (second of Unt_050), its 5th visible tilt: pose = P_f @ A(rot, tilt, psi)
    p = 11
    row = parts.iloc[p]
    f = int(np.nonzero(visible[p])[0][4])
    table = tilts[row["rlnTomoName"]]
    proj = np.stack(
        [_vec(table[c].iloc[f])[:3] for c in ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ")]
    )
    angles = (row["rlnAngleRot"], row["rlnAngleTilt"], row["rlnAnglePsi"])
    a = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().T
    i = int(np.nonzero((subtilts.particle == p) & (subtilts.frame == f))[0][0])
    np.testing.assert_allclose(subtilts.rotations[i], proj @ a, atol=1e-9)
    # defocus = the tilt's, shifted by the particle's depth (at most ~1,500 A in this series)
    assert abs(subtilts.defocus_u[i] - table["rlnDefocusU"].iloc[f]) < 1500
    np.testing.assert_allclose(subtilts.defocus_u[i] - subtilts.defocus_v[i],
                               table["rlnDefocusU"].iloc[f] - table["rlnDefocusV"].iloc[f])  # fmt: skip
    images = subtilts.read_images()
    with mrcfile.open(subtilts.stack[i], permissive=True) as m:
        np.testing.assert_array_equal(images[i], m.data[f].astype(np.float32))


@pytest.mark.slow
def test_reconstruction_matches_the_bundled_map_up_to_its_hand(tomo, subtilts):
    """Conventions test: poses, tilt geometry, CTF (premultiplied) and the centre.

    Our reconstruction, by RELION's rule (``A = P_f A_particle``), equals the bundled Warp
    reconstruction mirrored along z about the box centre: the same map in the other hand.
    """
    images = subtilts.read_images()
    ctf = ctf_2d((32, 32), pixel_size=12.0, defocus_u=subtilts.defocus_u,
                 defocus_v=subtilts.defocus_v, defocus_angle=subtilts.defocus_angle,
                 voltage=subtilts.voltage, cs=subtilts.cs,
                 amplitude_contrast=subtilts.amplitude_contrast)  # fmt: skip
    halves = np.where(subtilts.particle % 2 == 0, 1, 2)
    acc = insert_images(images, subtilts.rotations, shifts=subtilts.shifts, pixel_size=12.0,
                        ctf=ctf, ctf_premultiplied=True, subset=halves)  # fmt: skip
    first = finish_reconstruction(acc, wiener_constant=0.1, pixel_size=12.0)
    ours = finish_reconstruction(acc, wiener_constant=fsc_wiener_constant(acc, first.fsc)).volume
    ref = mrcfile.read(tomo / "warptools_test_box-32_angpix-12_reconstruct.mrc").astype(np.float32)

    def cc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    mirrored = np.roll(ours[::-1], 1, axis=0)  # z -> -z about index 16
    assert cc(mirrored, ref) > 0.78
    assert cc(ours, ref) < cc(mirrored, ref) - 0.1
    # the particles' signal adds up: gold-standard halves agree at low resolution
    assert first.fsc[2] > 0.6
    # without the CTF weights the same images give a much worse map
    plain = finish_reconstruction(insert_images(images, subtilts.rotations), wiener_constant=0.1)
    assert cc(np.roll(plain.volume[::-1], 1, axis=0), ref) < cc(mirrored, ref) - 0.2


def test_premultiplied_images_give_the_reconstruction_of_the_plain_ones():
    rng = np.random.default_rng(3)
    n, count = 16, 60
    images = rng.normal(size=(count, n, n)).astype(np.float32)
    rots = Rotation.random(count, random_state=4).as_matrix()
    ctf = ctf_2d((n, n), pixel_size=4.0, defocus_u=rng.uniform(8000, 20000, count),
                 defocus_v=rng.uniform(8000, 20000, count))  # fmt: skip
    spec = np.fft.rfft2(images) * ctf
    premult = np.fft.irfft2(spec, s=(n, n)).astype(np.float32)
    a = insert_images(images, rots, ctf=ctf)
    b = insert_images(premult, rots, ctf=ctf, ctf_premultiplied=True)
    np.testing.assert_allclose(b.grid, a.grid, atol=1e-3 * np.abs(a.grid).max())
    with pytest.raises(ValueError, match="ctf_premultiplied"):
        insert_images(images, rots, ctf_premultiplied=True)


def test_fsc_wiener_constant_damps_only_shells_without_signal():
    rng = np.random.default_rng(5)
    n = 16
    acc = insert_images(rng.normal(size=(40, n, n)).astype(np.float32),
                        Rotation.random(40, random_state=6).as_matrix())  # fmt: skip
    fsc = np.linspace(1.0, 0.0, n // 2 + 1)
    wc = fsc_wiener_constant(acc, fsc)
    assert wc.shape == (n // 2 + 1,) and np.all(np.diff(wc[1:]) > 0)
    assert wc[1] < 1e-2 * wc[-1]
    np.testing.assert_allclose(fsc_wiener_constant(acc, fsc, fudge=2.0), wc / 2)
    with pytest.raises(ValueError, match="fsc: need 9"):
        fsc_wiener_constant(acc, fsc[:-1])
    with pytest.raises(ValueError, match="fudge"):
        fsc_wiener_constant(acc, fsc, fudge=0)


def test_bad_sets_are_refused_naming_the_file(tmp_path, tomo):
    single = tmp_path / "single.star"
    single.write_text("data_particles\nloop_\n_rlnImageName\n1@a.mrcs\n")
    with pytest.raises(InputFileError, match="single.star: no data_optics|not a 2D sub-tilt"):
        read_subtilt_particles(single)
    src = tmp_path / "p.star"
    shutil.copy(tomo / f"{NAME}.star", src)
    with pytest.raises(InputFileError, match="no tomograms STAR file"):
        read_subtilt_particles(src)
    with pytest.raises(InputFileError, match="tomos.star: file not found"):
        read_subtilt_particles(src, tmp_path / "tomos.star")
