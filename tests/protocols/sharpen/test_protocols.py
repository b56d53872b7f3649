"""The sharpening protocols end to end, through the engine and the ``emforge`` CLI.

Ground truth from the real map EMD-3488 (see conftest.py): ``truth``, ``blurred`` (B = 100 Å²),
two noisy half maps with FSC 0.143 near 3.5 Å and their average, and a soft mask. They are
written as MRC files (1.05 Å/px, the real map's origin), imported into a project, and every
protocol is run with ``Project.run`` (validation and the template with the CLI). The outputs
are compared with the unblurred truth by masked real-space correlation, with the known blur B
and resolution, and with spectra and per-axis fall-offs measured here with plain numpy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# plan FFTs cheaply (also inherited by the CLI subprocesses); see conftest.py
os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

from emforge.engine.listing import run_rows  # noqa: E402
from emforge.engine.runs import run_row  # noqa: E402
from emforge.io import read_info, read_volume, write_volume  # noqa: E402
from emforge.objects import Volume  # noqa: E402
from emforge.project import Project  # noqa: E402
from emforge.protocols.sharpen.kernels import estimate_b_iso  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"
MODEL = DATA / "models" / "5me2.pdb"
EMFORGE = Path(sys.executable).with_name("emforge")
PX = 1.05
B_BLUR = 100.0
RES = 3.3  # about the masked FSC 0.143 resolution of the half maps (conftest: truth_resolution)
B_AXES = (60.0, 100.0, 160.0)  # anisotropic blur along x, y, z

#: name -> (protocol, params, input map: "blurred" or "avg" (the half maps' average, with halves))
CASES: dict[str, tuple[str, dict, str]] = {
    "bfactor_b_sharpen": ("sharpen.bfactor", {"mode": "b_sharpen", "b_sharpen": B_BLUR}, "blurred"),
    "bfactor_b_iso": ("sharpen.bfactor", {"mode": "b_iso", "b_iso": 0.0}, "blurred"),
    "bfactor_b_iso_to_d_cut": (
        "sharpen.bfactor",
        {"mode": "b_iso_to_d_cut", "b_iso": 0.0, "d_cut": RES},
        "avg",
    ),
    # log10 of exp(+100 s^2/4) at 2 d_cut, d_cut, 0.833 d_cut is about 0.2, 0.9, 0.9 + 0.4
    "bfactor_resolution_dependent": (
        "sharpen.bfactor",
        {"mode": "resolution_dependent", "d_cut": 3.5, "b0": 0.2, "b1": 0.9, "b2": 0.4},
        "blurred",
    ),
    "auto_adjusted_sa": ("sharpen.auto", {"method": "adjusted_sa", "resolution": RES}, "avg"),
    "auto_kurtosis": ("sharpen.auto", {"method": "kurtosis", "resolution": RES}, "avg"),
    "halfmaps_relion": ("sharpen.halfmaps", {"method": "relion"}, "avg"),
    "halfmaps_phenix": ("sharpen.halfmaps", {"method": "phenix"}, "avg"),
    "model": ("sharpen.model", {"model": str(MODEL.resolve()), "resolution": RES}, "avg"),
    "shells": ("sharpen.shells", {"resolution": RES}, "avg"),
    "local_b_iso": ("sharpen.local", {"method": "b_iso", "resolution": RES}, "avg"),
    "local_halfmap": ("sharpen.local", {"method": "halfmap", "resolution": RES}, "avg"),
    "local_resolution": ("analysis.local_resolution", {}, "avg"),
}
MASKED = {"sharpen.halfmaps", "analysis.local_resolution"}  # given the mask as an input
SHARPENERS = [k for k in CASES if CASES[k][0] != "analysis.local_resolution"]


# --------------------------------------------------------------------------- helpers
def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EMFORGE), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def read(path: str) -> np.ndarray:
    return read_volume(path)[0]


def radial_mean_amplitude(a: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean |F| per shell of width 1/(N px) (cubic box), with numpy only; s in 1/Å."""
    n = a.shape[0]
    f = np.abs(np.fft.rfftn(np.asarray(a, np.float64)))
    k = np.fft.fftfreq(n) * n
    kx = np.fft.rfftfreq(n) * n
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)
    idx = np.rint(r).astype(np.int64).ravel()
    mean = np.bincount(idx, f.ravel()) / np.maximum(np.bincount(idx), 1)
    return np.arange(mean.size) / (n * px), mean


def axis_b_factors(a: np.ndarray, px: float, d_max: float = 10.0, d_min: float = 3.8) -> np.ndarray:
    """Per-axis B (x, y, z): Guinier slope of ln mean |F| in 25° cones around each axis.

    Independent of the kernels: numpy FFT, cone selection, least squares of ln A = a - B s^2/4.
    """
    n = a.shape[0]
    f = np.abs(np.fft.rfftn(np.asarray(a, np.float64)))
    sz = np.fft.fftfreq(n, d=px)[:, None, None]
    sy = np.fft.fftfreq(n, d=px)[None, :, None]
    sx = np.fft.rfftfreq(n, d=px)[None, None, :]
    s = np.sqrt(sz**2 + sy**2 + sx**2)
    s_safe = np.where(s > 0, s, 1.0)
    shell = np.rint(s * n * px).astype(np.int64)
    out = []
    for comp in (sx, sy, sz):
        cone = (np.abs(comp) / s_safe > np.cos(np.radians(25))) & (s > 0)
        cone = np.broadcast_to(cone, f.shape)
        idx = shell[cone]
        mean = np.bincount(idx, f[cone]) / np.maximum(np.bincount(idx), 1)
        k = np.arange(mean.size)
        sel = (k / (n * px) >= 1 / d_max) & (k / (n * px) <= 1 / d_min) & (mean > 0)
        s2 = (k[sel] / (n * px)) ** 2
        slope = np.polyfit(s2, np.log(mean[sel]), 1)[0]
        out.append(-4.0 * slope)
    return np.array(out)


def png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def run_count(project: Path) -> int:
    return len(run_rows(Project.open(project)))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def files(tmp_path_factory, truth, blurred, halves, average, mask) -> dict[str, Path]:
    """The ground-truth maps as MRC files at 1.05 Å/px with the real map's origin."""
    if not MODEL.is_file():
        pytest.skip(f"real test data missing: {MODEL}")
    if not EMFORGE.is_file():
        pytest.skip(f"the emforge command is not installed next to {sys.executable}")
    folder = tmp_path_factory.mktemp("sharpen_maps")
    origin = read_info(MAP).origin
    maps = {
        "truth": truth,
        "blurred": blurred,
        "half1": halves[0],
        "half2": halves[1],
        "avg": average,
        "mask": mask,
    }
    out = {}
    for name, data in maps.items():
        out[name] = folder / f"{name}.mrc"
        write_volume(out[name], np.asarray(data, np.float32), voxel_size=PX, origin=origin)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory, files) -> dict:
    """A project with the blurred map, the average (with its halves) and the mask imported."""
    proj = Project.init(tmp_path_factory.mktemp("sharpen_project") / "P")
    f = {k: str(v) for k, v in files.items()}
    ids = {
        "blurred": proj.run("import.volume", params={"path": f["blurred"]}),
        "avg": proj.run(
            "import.volume", params={"path": f["avg"], "half1": f["half1"], "half2": f["half2"]}
        ),
        "mask": proj.run("import.mask", params={"path": f["mask"]}),
    }
    return {"project": proj, "ids": ids, "runs": {}}


@pytest.fixture(scope="module")
def case(env):
    """``case(name)`` runs CASES[name] once (cached) and returns its run id."""

    def get(name: str) -> int:
        if name not in env["runs"]:
            protocol, params, source = CASES[name]
            inputs = {"volume": f"{env['ids'][source]}.volume"}
            if protocol in MASKED:
                inputs["mask"] = f"{env['ids']['mask']}.mask"
            env["runs"][name] = env["project"].run(protocol, params=params, inputs=inputs)
        return env["runs"][name]

    return get


def outputs(env: dict, rid: int) -> dict:
    return env["project"].outputs(rid)


def summary(env: dict, rid: int) -> str:
    return run_row(env["project"], rid)["summary"]


# --------------------------------------------------------------------------- 1. every protocol
@pytest.mark.parametrize(
    "name",
    list(SHARPENERS),
)
def test_protocol_improves_masked_correlation_with_truth(
    name, case, env, truth, blurred, halves, average, mask, masked_cc
):
    rid = case(name)
    source = CASES[name][2]
    start = blurred if source == "blurred" else average
    vol = outputs(env, rid)["volume"]
    out = read(vol.path)
    assert out.shape == truth.shape and out.dtype == np.float32
    assert vol.pixel_size == pytest.approx(PX)
    before, after = masked_cc(start, truth, mask), masked_cc(out, truth, mask)
    print(f"\n{name}: masked CC with the truth {before:.3f} ({source}) -> {after:.3f}")
    assert after > before + 0.03, (name, before, after)
    if source == "avg" and CASES[name][0] != "sharpen.local":  # sharpen.local: map only
        # a map with half maps gets sharpened half maps, registered with the volume, each
        # closer to the truth than the half it came from
        assert vol.has_halves, name
        for raw, path in zip(halves, (vol.half1, vol.half2), strict=True):
            assert masked_cc(read(path), truth, mask) > masked_cc(raw, truth, mask) + 0.03, name


def test_local_resolution_median_matches_global_fsc(case, env, mask, truth_resolution):
    rid = case("local_resolution")
    fsc = outputs(env, case("halfmaps_relion"))["fsc"]
    glob = fsc.crossings["0.143"]
    locmap = read(outputs(env, rid)["local_resolution"].path)
    assert locmap.shape == mask.shape and np.isfinite(locmap).all()
    inside = locmap[mask > 0.5]
    median = float(np.median(inside))
    print(f"\nlocal resolution inside the mask: median {median:.2f} Å, global FSC {glob:.2f} Å")
    assert median == pytest.approx(glob, abs=0.5)
    assert median == pytest.approx(truth_resolution, abs=0.5)
    assert 2 * PX <= inside.min() <= median <= inside.max()
    text = summary(env, rid)
    assert f"median {median:.2f}" in text and f"min {inside.min():.2f}" in text, text


# --------------------------------------------------------------------------- 2. half maps
def test_halfmaps_recovers_b_and_resolution(case, env, truth, truth_resolution, mask, masked_cc):
    rid = case("halfmaps_relion")
    outs = outputs(env, rid)
    fsc = outs["fsc"]
    res = fsc.crossings["0.143"]
    assert res == pytest.approx(truth_resolution, abs=0.2)
    # the FSC curve itself crosses 0.143 there (linear interpolation between shells)
    s, v = np.asarray(fsc.frequencies), np.asarray(fsc.values)
    i = int(np.argmax((v < 0.143) & (s > 0.1)))
    s_cross = s[i - 1] + (v[i - 1] - 0.143) / (v[i - 1] - v[i]) * (s[i] - s[i - 1])
    assert 1 / s_cross == pytest.approx(res, abs=0.05)
    # B: RELION sign (negative sharpens). The deposited map has its own Guinier B over the same
    # range (10 Å to the resolution); the halves carry that plus the 100 Å² blur.
    text = summary(env, rid)
    # the applied sharpening B (positive sharpens) is minus RELION's B
    b = -float(re.search(r"applied sharpening B = ([+-][\d.]+) Å²", text).group(1))
    b_truth = estimate_b_iso(truth, pixel_size=PX, d_min=res, d_max=10.0)
    print(
        f"\nhalfmaps: resolution {res:.2f} Å (truth {truth_resolution:.2f}), B {b:.1f} Å², own B {b_truth:.1f}"
    )
    assert b + b_truth == pytest.approx(-B_BLUR, abs=10.0)
    assert f"resolution {res:.2f} Å" in text
    # sharpened half maps registered with the volume; the map is their average
    vol = outs["volume"]
    assert vol.has_halves and Path(vol.half1).is_file() and Path(vol.half2).is_file()
    h1, h2, m = read(vol.half1), read(vol.half2), read(vol.path)
    np.testing.assert_allclose(0.5 * (h1 + h2), m, atol=1e-5 * float(np.abs(m).max()))
    assert not np.allclose(h1, h2)
    # the Phenix route finds the same resolution from the same masked FSC
    ph = outputs(env, case("halfmaps_phenix"))["fsc"].crossings["0.143"]
    assert ph == pytest.approx(res, abs=0.05)


# --------------------------------------------------------------------------- 3. spectrum
def test_bfactor_b_sharpen_restores_the_spectrum(case, env, truth, blurred, truth_resolution):
    out = read(outputs(env, case("bfactor_b_sharpen"))["volume"].path)
    s, amp = radial_mean_amplitude(out, PX)
    _, amp_truth = radial_mean_amplitude(truth, PX)
    _, amp_in = radial_mean_amplitude(blurred, PX)
    upto = (s > 0) & (s <= 1 / min(3.5, truth_resolution))
    err = np.abs(amp[upto] / amp_truth[upto] - 1)
    print(
        f"\nb_sharpen=100: worst shell amplitude error {err.max():.4f} up to {1 / s[upto].max():.2f} Å"
    )
    assert err.max() < 0.10
    assert np.abs(amp_in[upto] / amp_truth[upto] - 1).max() > 0.5  # the input was far off


# --------------------------------------------------------------------------- 4. anisotropy
def test_shells_removes_anisotropy(env, files, truth, mask, masked_cc):
    n = truth.shape[0]
    sz = np.fft.fftfreq(n, d=PX)[:, None, None]
    sy = np.fft.fftfreq(n, d=PX)[None, :, None]
    sx = np.fft.rfftfreq(n, d=PX)[None, None, :]
    bx, by, bz = B_AXES
    filt = np.exp(-(bx * sx**2 + by * sy**2 + bz * sz**2) / 4)
    aniso = np.fft.irfftn(
        np.fft.rfftn(truth.astype(np.float64)) * filt, s=truth.shape, axes=(0, 1, 2)
    )
    rng = np.random.default_rng(31)
    aniso = (aniso + 0.003 * rng.standard_normal(aniso.shape)).astype(np.float32)
    path = files["truth"].with_name("aniso.mrc")
    write_volume(path, aniso, voxel_size=PX, origin=read_info(MAP).origin)
    proj = env["project"]
    imp = proj.run("import.volume", params={"path": str(path)})
    rid = proj.run("sharpen.shells", params={"resolution": 3.5}, inputs={"volume": f"{imp}.volume"})
    text = summary(env, rid)
    assert "Overall anisotropy (U" in text and "Anisotropy of data" in text, text
    u = [float(x) for x in text.splitlines()[2].split()]
    b_line = re.search(r"B along X, Y, Z \(8 pi\^2 U, A\^2\):\s+(\S+)\s+(\S+)\s+(\S+)", text)
    b_sum = np.array([float(x) for x in b_line.groups()])
    assert u[0] < u[1] < u[2] and b_sum[0] < b_sum[1] < b_sum[2], text
    np.testing.assert_allclose(b_sum, 8 * np.pi**2 * np.array(u[:3]), atol=0.1)
    # the reported B minus the deposited map's own fall-off (same range: 10 Å to 3.5 Å) is the blur
    own = axis_b_factors(truth, PX, d_min=3.5)
    np.testing.assert_allclose(b_sum - own, B_AXES, rtol=0.25)
    out = read(outputs(env, rid)["volume"].path)
    b_in, b_out = axis_b_factors(aniso, PX), axis_b_factors(out, PX)
    drop = 1 - np.ptp(b_out) / np.ptp(b_in)
    print(
        f"\nshells: per-axis B in {np.round(b_in, 1)}, out {np.round(b_out, 1)}, spread drop {drop:.0%}"
    )
    print(
        f"shells (anisotropic): masked CC {masked_cc(aniso, truth, mask):.3f} -> {masked_cc(out, truth, mask):.3f}"
    )
    assert b_in[0] < b_in[1] < b_in[2]
    assert drop >= 0.70
    assert masked_cc(out, truth, mask) > masked_cc(aniso, truth, mask) + 0.03


# --------------------------------------------------------------------------- 5. reports
@pytest.mark.parametrize("name", list(CASES))
def test_report_written(name, case, env):
    rid = case(name)
    extra = Path(run_row(env["project"], rid)["workdir"]) / "extra"
    png = extra / "report.png"
    w, h = png_size(png)
    assert w >= 600 and h >= 300 and png.stat().st_size > 30_000, (name, w, h)
    if CASES[name][0].startswith("sharpen."):
        page = (extra / "report.html").read_text(encoding="utf-8")
        assert "<img src='report.png'" in page and CASES[name][0] in page


# --------------------------------------------------------------------------- 6. validation
def test_validation_one_line_exit_2_nothing_recorded(env, files, tmp_path):
    import gemmi

    proj, ids = env["project"], env["ids"]
    h2 = read(files["half2"])
    bad = {
        "crop": h2[:96, :96, :96],
        "zeros": np.zeros((64, 64, 64), np.float32),
        "nan": np.where(np.arange(h2.size).reshape(h2.shape) == 12345, np.nan, h2),
    }
    imp = {}
    for key, data in bad.items():
        path = tmp_path / f"{key}.mrc"
        with np.errstate(invalid="ignore"):
            write_volume(path, np.asarray(data, np.float32), voxel_size=PX)
        if key == "crop":
            imp[key] = proj.run("import.volume", params={"path": str(path)})
        else:  # import refuses such maps: register them as if another protocol made them
            imp[key] = proj.add(Volume(str(path), PX, tuple(data.shape)), name="volume")
    imp["px"] = proj.run("import.volume", params={"path": str(files["half2"]), "pixel_size": 1.2})
    imp["h1"] = proj.run("import.volume", params={"path": str(files["half1"])})
    st = gemmi.read_structure(str(MODEL))
    for model in st:
        for chain in model:
            for residue in chain:
                for atom in residue:
                    p = atom.pos
                    atom.pos = gemmi.Position(p.x + 500, p.y + 500, p.z + 500)
    st.write_pdb(str(tmp_path / "shifted.pdb"))
    blur, avg = f"volume={ids['blurred']}.volume", f"volume={ids['avg']}.volume"
    half1 = f"half1={imp['h1']}.volume"
    cases = {
        "shape": (
            ["sharpen.halfmaps", "-i", half1, "-i", f"half2={imp['crop']}.volume"],
            ["half2", "shape"],
        ),
        "pixel": (
            ["sharpen.halfmaps", "-i", half1, "-i", f"half2={imp['px']}.volume"],
            ["half2", "pixel size"],
        ),
        "model": (
            [
                "sharpen.model",
                "-i",
                blur,
                "-p",
                f"model={tmp_path / 'shifted.pdb'}",
                "-p",
                "resolution=3.3",
            ],
            ["model", "outside the map box"],
        ),
        "zeros": (
            ["sharpen.bfactor", "-i", f"volume=object:{imp['zeros']}", "-p", "b_sharpen=100"],
            ["volume", "all zeros"],
        ),
        "nan": (
            ["sharpen.halfmaps", "-i", half1, "-i", f"half2=object:{imp['nan']}"],
            ["half2", "NaN"],
        ),
        "nyquist_shells": (
            ["sharpen.shells", "-i", avg, "-p", "resolution=1.0"],
            ["resolution", "Nyquist"],
        ),
        "nyquist_model": (
            ["sharpen.model", "-i", blur, "-p", f"model={MODEL.resolve()}", "-p", "resolution=1.0"],
            ["resolution", "Nyquist"],
        ),
        "nyquist_dcut": (
            ["sharpen.bfactor", "-i", blur, "-p", "mode=b_iso_to_d_cut", "-p", "d_cut=1.0"],
            ["d_cut", "Nyquist"],
        ),
    }
    n0 = run_count(proj.path)
    procs = {
        k: subprocess.Popen(
            [str(EMFORGE), "run", *a, "-P", str(proj.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (a, _) in cases.items()
    }
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert p.returncode == 2, (name, stdout, stderr)
        assert len(lines) == 1, (name, lines)
        for word in cases[name][1]:
            assert word in lines[0], (name, word, lines[0])
    assert run_count(proj.path) == n0


# --------------------------------------------------------------------------- 7. template
def test_postprocess_pipeline_template(files, tmp_path, truth, mask, average, masked_cc):
    import json

    tpl = REPO / "templates" / "postprocess_pipeline.json"
    nodes = json.loads(tpl.read_text())["nodes"]
    assert [n["protocol"] for n in nodes] == [
        "import.volume",
        "automask.auto3d",
        "sharpen.halfmaps",
        "analysis.local_resolution",
    ]
    proj = tmp_path / "P"
    assert cli("project", "init", proj).returncode == 0
    sets = [
        x
        for key in ("path", "half1", "half2")
        for x in ("--set", f"map.{key}={files['avg' if key == 'path' else key]}")
    ]
    first = cli("template", "run", tpl, "-P", proj, *sets)
    assert first.returncode == 0, first.stdout + first.stderr
    done = [ln for ln in first.stdout.splitlines() if ln.startswith("template done")][-1]
    runs = {k: int(v) for k, v in re.findall(r"([\w-]+)=run (\d+)", done)}
    assert list(runs) == [n["id"] for n in nodes]
    p = Project.open(proj)
    post = p.outputs(runs["postprocess"])
    res = post["fsc"].crossings["0.143"]
    sharpened = read(post["volume"].path)
    automask = read(p.outputs(runs["automask"])["mask"].path)
    locmap = read(p.outputs(runs["local_resolution"])["local_resolution"].path)
    median = float(np.median(locmap[automask > 0.5]))
    print(
        f"\ntemplate: resolution {res:.2f} Å, local median {median:.2f} Å, masked CC "
        f"{masked_cc(average, truth, mask):.3f} -> {masked_cc(sharpened, truth, mask):.3f}"
    )
    assert 2.9 < res < 3.6 and median == pytest.approx(res, abs=0.5)
    assert masked_cc(sharpened, truth, mask) > masked_cc(average, truth, mask) + 0.05
    n_runs = run_count(proj)
    again = cli("template", "run", tpl, "-P", proj, *sets)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("skipped (fresh)") == 4, again.stdout
    assert run_count(proj) == n_runs
