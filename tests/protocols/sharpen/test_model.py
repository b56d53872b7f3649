"""Model sharpening: the 5ME2 model against EMD-3488 (see conftest.py for the ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emforge.numerics import amplitude_profile
from emforge.protocols.sharpen.kernels.model import check_model_in_box, model_map, sharpen_model

MODEL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "models" / "5me2.pdb"
RES = 3.2


@pytest.fixture(scope="module")
def model_path() -> Path:
    if not MODEL.exists():
        pytest.skip(f"real test data missing: {MODEL}")
    return MODEL


@pytest.fixture(scope="module")
def mmap(model_path, truth, pixel_size):
    return model_map(model_path, shape=truth.shape, pixel_size=pixel_size, resolution=RES)


def _one_atom(x, y, z):
    import gemmi

    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(1, 1, 1, 90, 90, 90)
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    res = gemmi.Residue()
    res.name, res.seqid = "GLY", gemmi.SeqId(1, " ")
    atom = gemmi.Atom()
    atom.name, atom.element, atom.b_iso, atom.occ = "CA", gemmi.Element("C"), 10.0, 1.0
    atom.pos = gemmi.Position(x, y, z)
    res.add_atom(atom)
    chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    return st


def test_axis_order_and_origin_on_a_non_cubic_box():
    st = _one_atom(10.0, 20.0, 30.0)
    shape = (40, 48, 56)  # z, y, x
    m = model_map(st, shape=shape, pixel_size=1.0, resolution=2.5)
    assert m.shape == shape and m.dtype == np.float32
    assert np.unravel_index(np.argmax(m), shape) == (30, 20, 10)
    m2 = model_map(st, shape=shape, pixel_size=1.0, origin=(4.0, -2.0, 6.0), resolution=2.5)
    assert np.unravel_index(np.argmax(m2), shape) == (24, 22, 6)


def test_b_add_blurs_by_exactly_exp_minus_b_s2_over_4():
    st = _one_atom(20.0, 20.0, 20.0)
    kw = dict(shape=(40, 40, 40), pixel_size=1.0, resolution=2.5)
    s, a0 = amplitude_profile(model_map(st, **kw), pixel_size=1.0, kind="rms")
    _, a1 = amplitude_profile(model_map(st, b_add=40.0, **kw), pixel_size=1.0, kind="rms")
    sel = (s > 0.05) & (s < 0.35)
    np.testing.assert_allclose(a1[sel] / a0[sel], np.exp(-40.0 * s[sel] ** 2 / 4), rtol=0.02)


def test_model_map_fits_the_real_map_only_in_the_right_frame(
    mmap, model_path, truth, mask, masked_cc, pixel_size
):
    # 5ME2 is deposited in EMD-3488's frame: map origin 0, atoms in Angstrom from voxel 0.
    cc = masked_cc(mmap, truth, mask)
    assert cc > 0.5
    shifted = model_map(
        model_path, shape=truth.shape, pixel_size=pixel_size, origin=(2.1, 0, 0), resolution=RES
    )
    assert masked_cc(shifted, truth, mask) < cc - 0.1


def test_model_outside_the_box_is_refused(model_path, truth, pixel_size):
    assert check_model_in_box(model_path, truth.shape, pixel_size) == 0.0
    with pytest.raises(ValueError, match=r"model: 100% of atoms lie outside the map box"):
        check_model_in_box(model_path, truth.shape, pixel_size, (200.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="outside the map box"):
        model_map(
            model_path,
            shape=truth.shape,
            pixel_size=pixel_size,
            origin=(0.0, 150.0, 0.0),
            resolution=RES,
        )


def test_model_sharpening_improves_the_blurred_map(blurred, truth, mask, mmap, masked_cc):
    r = sharpen_model(blurred, mmap, pixel_size=1.05, resolution=RES)
    before = masked_cc(blurred, truth, mask)
    after = masked_cc(r.map, truth, mask)
    assert after > before + 0.03
    assert r.map.shape == truth.shape and r.map.dtype == np.float32
    n = r.s.size
    assert r.cc.shape == r.scale.shape == r.cc_smoothed.shape == (n,)
    assert r.cc[1:10].min() > 0.7  # map and model agree at low resolution
    assert np.all(r.scale[r.s > 1.2 / RES] == 0)  # data are kept to resolution / d_extend (1.2)
    assert r.b_error >= 0 and 0 < r.cc0 <= 1
    # B = 100 took amplitude away at high resolution: the model-based scale puts it back
    k8, k35 = (int(np.argmin(np.abs(r.s - 1 / d))) for d in (8.0, 3.5))
    assert r.scale[k35] > 1.5 * r.scale[k8]


def test_model_sharpening_rejects_bad_input(blurred, mmap):
    with pytest.raises(ValueError, match="model_map: shape"):
        sharpen_model(blurred, mmap[:50], pixel_size=1.05, resolution=RES)
    with pytest.raises(ValueError, match="finer than Nyquist"):
        sharpen_model(blurred, mmap, pixel_size=1.05, resolution=1.5)
    with pytest.raises(ValueError, match="constant"):
        sharpen_model(np.zeros_like(blurred), mmap, pixel_size=1.05, resolution=RES)
