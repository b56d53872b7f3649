"""simulate.particles, reconstruct.particles and project.volume end to end (Python API).

Ground truth: the real map EMD-3488 from ``../shared/data`` (Fourier-cropped by an
independent numpy crop), the true poses of simulated particles, real-space projections, and
the real RELION 3.1 particles of EMPIAR-10017 imported from their STAR file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from emforge.engine.listing import export_object
from emforge.errors import EmforgeError, ValidationError
from emforge.io import open_stack, read_particles_star, read_volume
from emforge.numerics import (
    euler_zyz_to_matrix,
    fsc,
    fsc_crossing,
    project_real_space,
)
from emforge.project import Project

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "framework" / "numerics"))
from _recon_data import fourier_crop  # noqa: E402  (independent crop: full FFT, window, sphere)

os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data missing: {path.resolve()} (expected ../shared/data)")
    return path


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    return Project.init(tmp_path_factory.mktemp("reconstruct") / "P")


@pytest.fixture(scope="module")
def emd(project) -> int:
    return project.run("import.volume", params={"path": str(_need(MAP))})


# -- simulate -> reconstruct: the acceptance check at test size ------------------------------
@pytest.fixture(scope="module")
def simulated(project, emd) -> int:
    # 1,000 particles at 48³ (2.19 Å/px), CTF 1-3 µm, shifts up to 2 px. SNR 0.01, not 0.1:
    # at 0.1 both FSCs stay above their thresholds up to Nyquist and the comparison is empty;
    # at 0.01 they cross at ~8 Å, inside the band.
    params = dict(n=1000, box=48, snr=0.01, defocus_min=1.0, defocus_max=3.0, max_shift=2, seed=1)
    return project.run("simulate.particles", params=params, inputs={"volume": f"{emd}.volume"})


def test_simulated_rows_hold_the_truth_and_export_to_star(project, simulated, tmp_path):
    parts = project.outputs(simulated)["particles"]
    cols = parts.read()
    assert len(parts) == 1000 and parts.attrs["box"] == [48, 48]
    assert cols["pixel_size"][0] == pytest.approx(1.05 * 100 / 48)
    assert 1e4 <= cols["defocus_u"].min() and cols["defocus_u"].max() <= 3e4
    np.testing.assert_array_equal(cols["subset"][:4], [1, 2, 1, 2])
    images = open_stack(cols["image_path"][0])
    assert images.shape == (1000, 48, 48) if hasattr(images, "shape") else True
    images.close()
    star = export_object(project, f"{simulated}.particles", tmp_path / "sim.star")
    back, _ = read_particles_star(star)
    for name in ("rot", "tilt", "psi", "shift_x", "shift_y", "defocus_u", "voltage", "cs"):
        np.testing.assert_allclose(back[name], cols[name], rtol=1e-5, atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(back["image_index"], cols["image_index"])


def test_wiener_reconstruction_half_map_resolution_matches_the_truth(project, emd, simulated):
    rid = project.run(
        "reconstruct.particles",
        params={"ctf": "wiener"},
        inputs={"particles": f"{simulated}.particles"},
    )
    out = project.outputs(rid)
    vol = out["volume"]
    assert vol.has_halves and vol.shape == (48, 48, 48)
    truth = fourier_crop(read_volume(MAP)[0], 48)
    px = vol.pixel_size
    s, f_true = fsc(read_volume(vol.path)[0], truth, pixel_size=px)
    d_true = fsc_crossing(s, f_true, 0.5)
    d_half = out["fsc"].crossings["0.143"]
    # the gold-standard criterion: half-map FSC 0.143 ~ FSC with the truth 0.5
    assert abs(d_half - d_true) <= 0.10 * d_true, (d_half, d_true)
    # a real crossing inside the band (not the Nyquist limit 2 px), well above the noise floor
    assert 2.5 * px < d_true < 6 * px, d_true
    # the map runs through half-map sharpening
    sharp = project.run("sharpen.halfmaps", inputs={"volume": f"{rid}.volume"})
    assert np.all(np.isfinite(read_volume(project.outputs(sharp)["volume"].path)[0]))


def test_ctf_correction_matters(project, simulated):
    """Without CTF correction the same particles give a worse map than phase flipping."""
    res = {}
    for mode in ("none", "phase_flip"):
        rid = project.run(
            "reconstruct.particles",
            params={"ctf": mode},
            inputs={"particles": f"{simulated}.particles"},
        )
        res[mode] = project.outputs(rid)["fsc"].crossings["0.143"]
    assert res["phase_flip"] < 0.8 * res["none"], res


# -- project.volume -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_map(project, tmp_path_factory) -> tuple[int, np.ndarray]:
    from emforge.io import write_volume

    vol = fourier_crop(read_volume(_need(MAP))[0], 32)
    path = tmp_path_factory.mktemp("small") / "emd_32.mrc"
    write_volume(path, vol, voxel_size=1.05 * 100 / 32)
    return project.run("import.volume", params={"path": str(path)}), vol


def test_project_volume_eman_views_match_real_space_projections(project, small_map):
    from emforge.numerics import eman_orientations, eman_to_matrix

    imp, vol = small_map
    rid = project.run("project.volume", params={"delta": 15.0, "symmetry": "c3"},
                      inputs={"volume": f"{imp}.volume"})  # fmt: skip
    parts = project.outputs(rid)["particles"]
    cols = parts.read()
    assert len(parts) == len(eman_orientations("c3", 15.0))
    rot = euler_zyz_to_matrix(np.stack([cols["rot"], cols["tilt"], cols["psi"]], axis=1))
    np.testing.assert_allclose(
        rot, eman_to_matrix(eman_orientations("c3", 15.0).astype(float)), atol=1e-5
    )
    reader = open_stack(cols["image_path"][0])
    images = reader[np.arange(5)]
    reader.close()
    ref = project_real_space(vol, rot[:5])
    for a, b in zip(images, ref, strict=True):
        assert _corr(a, b) >= 0.99


def test_project_then_reconstruct_round_trip(project, small_map):
    imp, vol = small_map
    proj = project.run("project.volume", params={"mode": "random", "n": 600, "seed": 2},
                       inputs={"volume": f"{imp}.volume"})  # fmt: skip
    rec = project.run("reconstruct.particles", params={"ctf": "none"},
                      inputs={"particles": f"{proj}.particles"})  # fmt: skip
    out = read_volume(project.outputs(rec)["volume"].path)[0]
    s, f = fsc(out, vol, pixel_size=1.05 * 100 / 32)
    assert np.all(f[s <= 0.8 * s.max()] >= 0.9)


# -- executors: local processes and a Dask LocalCluster give the same map -------------------
@pytest.mark.slow
def test_local_and_dask_chunks_give_identical_maps(project, small_map):
    pytest.importorskip("distributed")
    imp, _ = small_map
    sim = project.run("simulate.particles", params={"n": 90, "snr": 1.0, "seed": 3},
                      inputs={"volume": f"{imp}.volume"})  # fmt: skip
    maps = []
    for executor in ("local", "dask"):
        rid = project.run("reconstruct.particles", params={"parts": 3, "pad": 1.5},
                          inputs={"particles": f"{sim}.particles"}, workers=2,
                          executor=executor, label=executor)  # fmt: skip
        vol = project.outputs(rid)["volume"]
        maps.append([read_volume(p)[0] for p in (vol.path, vol.half1, vol.half2)])
    for a, b in zip(*maps, strict=True):
        np.testing.assert_array_equal(a, b)
    inline = project.run("reconstruct.particles", params={"parts": 1, "pad": 1.5},
                         inputs={"particles": f"{sim}.particles"}, workers=1)  # fmt: skip
    one = read_volume(project.outputs(inline)["volume"].path)[0]
    np.testing.assert_allclose(one, maps[0][0], atol=1e-5 * np.abs(one).max())


# -- real RELION particles -----------------------------------------------------------------
def test_real_relion_star_reconstructs(project):
    star = _need(DATA / "particles" / "sample_particles_relion31.star")
    imp = project.run("import.particles", params={"star": str(star)})
    rid = project.run(
        "reconstruct.particles",
        params={"pad": 1.0, "split": "random_subset", "ctf": "wiener"},
        inputs={"particles": f"{imp}.particles"},
    )
    out = project.outputs(rid)
    vol = out["volume"]
    assert vol.shape == (200, 200, 200) and vol.pixel_size == pytest.approx(1.4)
    for p in (vol.path, vol.half1, vol.half2):
        data = read_volume(p)[0]
        assert np.all(np.isfinite(data)) and np.any(data)
    assert len(out["fsc"].values) > 50


# -- validation --------------------------------------------------------------------------------
def test_validation_names_every_problem(project, emd, simulated):
    with pytest.raises(ValidationError) as exc:
        project.run("simulate.particles", inputs={"volume": f"{emd}.volume"},
                    params={"defocus_min": 3.0, "defocus_max": 1.0, "symmetry": "x5",
                            "max_shift": 60, "box": 1})  # fmt: skip
    lines = exc.value.lines()
    assert any(ln.startswith("param 'defocus_max'") for ln in lines)
    assert any(ln.startswith("param 'symmetry'") and "x5" in ln for ln in lines)
    assert any(ln.startswith("param 'max_shift'") for ln in lines)
    assert any(ln.startswith("param 'box'") for ln in lines)
    with pytest.raises(ValidationError, match=r"param 'symmetry': helical"):
        project.run("reconstruct.particles", params={"symmetry": "h3"},
                    inputs={"particles": f"{simulated}.particles"})  # fmt: skip
    with pytest.raises(ValidationError, match=r"param 'parts': 2000 chunks for 1000"):
        project.run("reconstruct.particles", params={"parts": 2000},
                    inputs={"particles": f"{simulated}.particles"})  # fmt: skip
    with pytest.raises(EmforgeError, match="pad"):
        project.run("reconstruct.particles", params={"pad": 0.5},
                    inputs={"particles": f"{simulated}.particles"})  # fmt: skip
    with pytest.raises(EmforgeError, match="ctf"):
        project.run("reconstruct.particles", params={"ctf": "flip"},
                    inputs={"particles": f"{simulated}.particles"})  # fmt: skip


def test_reconstruct_refuses_missing_ctf_and_subsets(project, small_map):
    imp, _ = small_map
    proj = project.run("project.volume", params={"mode": "random", "n": 10},
                       inputs={"volume": f"{imp}.volume"})  # fmt: skip
    with pytest.raises(ValidationError) as exc:
        project.run("reconstruct.particles", params={"ctf": "wiener", "split": "random_subset"},
                    inputs={"particles": f"{proj}.particles"})  # fmt: skip
    lines = exc.value.lines()
    assert any(
        ln.startswith("param 'ctf': wiener needs the CTF columns; defocus_u") for ln in lines
    )
    assert any(ln.startswith("param 'split': random_subset needs subset 1 or 2") for ln in lines)


def test_project_refuses_views_without_orientation(project, small_map):
    imp, _ = small_map
    with pytest.raises(ValidationError, match=r"param 'symmetry'"):
        project.run("project.volume", params={"symmetry": "q2"},
                    inputs={"volume": f"{imp}.volume"})  # fmt: skip
