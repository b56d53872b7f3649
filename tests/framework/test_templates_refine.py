"""The refinement template (templates/refine_pipeline.json) and the refinement demo template.

The chain: import particles (RELION STAR) + an initial model -> refine.projection_matching ->
automask.auto3d -> sharpen.halfmaps -> analysis.local_resolution. The end-to-end test refines
particles simulated from a synthetic phantom (known answer: the phantom) starting from its
30 Å low-pass, and checks that the refined map is closer to the truth than the start.
Tests that need the refinement family skip (one line) while it is not installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from emforge.cli import main
from emforge.engine.templates import load_template, validate_template
from emforge.project import Project

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "templates" / "refine_pipeline.json"
DEMO = REPO / "templates" / "demo_refine.json"
CHAIN = [
    "refine.projection_matching",
    "automask.auto3d",
    "sharpen.halfmaps",
    "analysis.local_resolution",
]


def _needs_refine() -> None:
    from emforge.demo import refine_installed

    if not refine_installed():
        pytest.skip("refine.projection_matching is not installed (refinement family, #12)")


def _wiring(path: Path) -> dict[str, object]:
    return {n.id: n for n in load_template(path).nodes}


def test_refine_pipeline_loads_and_wires_the_chain():
    nodes = _wiring(TEMPLATE)
    assert [n.protocol for n in nodes.values()] == [
        "import.particles",
        "import.volume",
        *CHAIN,
    ]
    assert nodes["particles"].params == {"star": ""}  # the user gives the STAR file
    assert nodes["refine"].inputs == {"particles": "particles.particles", "model": "model.volume"}
    assert nodes["automask"].inputs == {"volume": "refine.volume"}
    for post in ("postprocess", "local_resolution"):
        assert nodes[post].inputs == {"volume": "refine.volume", "mask": "automask.mask"}
    text = load_template(TEMPLATE).description
    for blank in ("--set particles.star=", "--set model.path="):
        assert blank in text


def test_demo_refine_template_simulates_then_runs_the_same_chain():
    nodes = _wiring(DEMO)
    protocols = [n.protocol for n in nodes.values()]
    assert protocols[protocols.index("refine.projection_matching") :] == CHAIN
    assert nodes["particles"].protocol == "simulate.particles"
    assert nodes["particles"].inputs == {"volume": "phantom.volume"}
    assert nodes["refine"].inputs == {"particles": "particles.particles", "model": "model.volume"}


@pytest.mark.parametrize("path", [TEMPLATE, DEMO], ids=["refine_pipeline", "demo_refine"])
def test_refine_templates_validate(project, path):
    _needs_refine()
    validate_template(project, load_template(path))  # raises ValidationError on any problem


def test_refine_pipeline_without_files_says_what_to_set(project, capsys):
    _needs_refine()
    rc = main(["template", "run", "refine_pipeline", "-P", str(project.path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "node particles" in err and "STAR file" in err  # nothing to import: one line


def _band(a: np.ndarray, b: np.ndarray, px: float, lo: float = 24.0, hi: float = 16.0) -> float:
    """Mean FSC(a, b) over the shells between ``lo`` and ``hi`` Å."""
    from emforge.numerics import fsc

    s, f = fsc(a, b, pixel_size=px)
    return float(f[(s >= 1 / lo) & (s <= 1 / hi)].mean())


def _fsc_05(a: np.ndarray, b: np.ndarray, px: float) -> float:
    from emforge.numerics import fsc, fsc_crossing

    s, f = fsc(a, b, pixel_size=px)
    return fsc_crossing(s, f, 0.5)


def test_refine_pipeline_runs_on_a_simulated_set(tmp_path, capsys):
    """200 particles of a 32³ phantom (4 Å/px, SNR 0.5), one iteration at δ = 15° from its
    30 Å low-pass (the truth's frame): the result is closer to the phantom (FSC 0.5 with the
    truth) than the start, the refined poses are within two angular steps of the true ones
    (median), and the chain finishes."""
    _needs_refine()
    from emforge.demo import phantom
    from emforge.io import read_volume, write_volume
    from emforge.numerics import euler_zyz_to_matrix, lowpass, rotation_angle_between

    box, px = 32, 4.0
    truth = phantom(box, seed=3)
    start = lowpass(truth, 30.0, pixel_size=px)
    write_volume(tmp_path / "truth.mrc", truth, voxel_size=px)
    write_volume(tmp_path / "start.mrc", start, voxel_size=px)
    proj = Project.init(tmp_path / "P")
    imported = proj.run("import.volume", params={"path": str(tmp_path / "truth.mrc")})
    sim = proj.run(
        "simulate.particles",
        params={"n": 200, "snr": 0.5, "max_shift": 1.0, "seed": 1},
        inputs={"volume": f"{imported}.volume"},
    )
    star = tmp_path / "particles.star"
    assert main(["export", f"{sim}.particles", str(star), "-P", str(proj.path)]) == 0
    rc = main(
        [
            "template", "run", "refine_pipeline", "-P", str(proj.path),
            "--set", f"particles.star={star}", "--set", f"model.path={tmp_path / 'start.mrc'}",
            "--set", "refine.iter=1", "--set", "refine.sym=c1", "--set", "refine.delta=15",
            "--set", "refine.targetres=10",
        ]
    )  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    done = [ln for ln in out.out.splitlines() if ln.startswith("template done")][-1]
    runs = {k: int(v) for k, v in re.findall(r"([\w-]+)=run (\d+)", done)}
    assert list(runs) == ["particles", "model", "refine", "automask", "postprocess",
                          "local_resolution"]  # fmt: skip
    refined = proj.outputs(runs["refine"])["volume"]
    assert refined.half1 and refined.half2
    result = read_volume(refined.path)[0]
    res_start, res_refined = _fsc_05(start, truth, px), _fsc_05(result, truth, px)
    band_start, band_refined = _band(start, truth, px), _band(result, truth, px)
    print(f"\nFSC with the truth: 0.5 at {res_start:.1f} Å (start) -> {res_refined:.1f} Å; "
          f"mean 24-16 Å {band_start:.2f} -> {band_refined:.2f}")  # fmt: skip
    # signal beyond the start's 30 Å low-pass: recovered from the particles, not the start
    assert band_refined > 0.25 and band_refined > band_start + 0.2
    assert res_refined < res_start
    cols = proj.outputs(runs["refine"])["particles"].read("rot", "tilt", "psi")
    true = proj.outputs(sim)["particles"].read("rot", "tilt", "psi")
    refined_m = euler_zyz_to_matrix(np.stack([cols[k] for k in ("rot", "tilt", "psi")], 1))
    true_m = euler_zyz_to_matrix(np.stack([true[k] for k in ("rot", "tilt", "psi")], 1))
    err = float(np.median(rotation_angle_between(refined_m, true_m)))
    print(f"median angular error {err:.1f}° (step 15°)")
    assert err < 2 * 15.0
    gold = proj.outputs(runs["postprocess"])["fsc"].crossings["0.143"]
    assert 2 * px <= gold < res_start


def test_demo_data_fill_every_placeholder_of_the_demo_template(tmp_path):
    """The refinement demo's files: the phantom and its 30 Å low-pass (the phantom's Fourier
    coefficients below 1/40 Å⁻¹, none above 1/20 Å⁻¹), at the demo's box and pixel size, and
    every '$name' of demo_refine.json filled with one of them."""
    import json

    from emforge import demo
    from emforge.io import read_volume

    files = demo.make_refine_demo_data(tmp_path / "data")
    truth, info = read_volume(files["phantom"])
    start = read_volume(files["model"])[0]
    assert truth.shape == start.shape == (demo.BOX,) * 3
    assert info.voxel_size[0] == pytest.approx(demo.PIXEL)
    k = np.fft.fftfreq(demo.BOX, d=demo.PIXEL)
    s = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    ft, fs = np.fft.fftn(truth), np.fft.fftn(start)
    low, high = s < 1 / 40, s > 1 / 20
    assert np.allclose(fs[low], ft[low], rtol=1e-3, atol=1e-3 * np.abs(ft).max())
    assert (np.abs(fs[high]) ** 2).sum() < 1e-6 * (np.abs(ft[high]) ** 2).sum()
    raw = demo._fill(json.loads(DEMO.read_text()), files)
    values = [v for n in raw["nodes"] for v in n.get("params", {}).values()]
    assert not [v for v in values if isinstance(v, str) and v.startswith("$")]
    assert {files["phantom"], files["model"]} <= {v for v in values if isinstance(v, str)}
