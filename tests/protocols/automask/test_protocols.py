"""automask.auto3d and automask.soft end to end through the ``emforge`` CLI on real maps.

One ``emforge template run`` (one process) imports EMD-3488, EMD-1832 and EMD-5625 and runs
every scenario; the outputs are checked against independent numpy/scipy evaluations (EMAN2
formulas, 6-connected morphology) and against the kernels applied to the imported maps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from emforge.engine.listing import run_rows
from emforge.engine.runs import run_row
from emforge.io import read_volume
from emforge.project import Project
from emforge.protocols.automask.kernels import auto3d, auto_mask, robust_auto_mask

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / ".." / "shared" / "data"
EMFORGE = Path(sys.executable).with_name("emforge")
MAPS = {"m3488": "emd_3488.mrc", "m1832": "emd_1832.map", "m5625": "emd_5625.map"}
CROSS = ndimage.generate_binary_structure(3, 1)
SOFT = {"inner_radius": 6.0, "outer_radius": 18.0, "width": 3.0, "value": 1.0}
THRESH = {"threshold": 2.0, "keep_largest": True, "dilate": 2, "erode": 1, "soft_edge": 3.0}
MANUAL = {"sigma": 2.0, "nmaxseed": 50, "nshells": 2, "nshellsgauss": 4}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EMFORGE), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def node(nid: str, protocol: str, params: dict | None = None, **inputs: str) -> dict:
    return {"id": nid, "protocol": protocol, "params": params or {}, "inputs": inputs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA.resolve()} (expected ../shared/data)")
    if not EMFORGE.is_file():
        pytest.skip(f"the emforge command is not installed next to {sys.executable}")
    folder = tmp_path_factory.mktemp("automask")
    proj = folder / "P"
    assert cli("project", "init", proj).returncode == 0
    nodes = []
    for name, file in MAPS.items():
        nodes.append(node(name, "import.volume", {"path": str((DATA / "maps" / file).resolve())}))
        nodes.append(node(f"auto_{name}", "automask.auto3d", volume=f"{name}.volume"))
    dirty = _write_dirty_map(folder / "dirty.mrc")
    nodes += [
        node("dirty", "import.volume", {"path": str(dirty)}),
        node("auto_dirty", "automask.auto3d", volume="dirty.volume"),
        node("eman2", "automask.auto3d", {"auto_rule": "eman2"}, volume="m5625.volume"),
        node("manual", "automask.auto3d", MANUAL, volume="m1832.volume"),
        node("soft", "automask.soft", {"mode": "soft", **SOFT}, volume="m1832.volume"),
        node("thresh", "automask.soft", {"mode": "threshold", **THRESH}, volume="m5625.volume"),
    ]
    tpl = folder / "automask.json"
    tpl.write_text(
        json.dumps(
            {"format": "emforge-template", "version": 1, "description": "automask", "nodes": nodes}
        )
    )
    res = cli("template", "run", tpl, "-P", proj)
    assert res.returncode == 0, res.stdout + res.stderr
    done = [ln for ln in res.stdout.splitlines() if ln.startswith("template done")][-1]
    return {"project": proj, "ids": {k: int(v) for k, v in re.findall(r"([\w-]+)=run (\d+)", done)}}


def _write_dirty_map(path: Path) -> Path:
    """EMD-3488 with a planted contaminant (see test_robust.plant_contaminant)."""
    import importlib.util

    import mrcfile

    spec = importlib.util.spec_from_file_location(
        "_robust_tests", Path(__file__).with_name("test_robust.py")
    )
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)

    with mrcfile.open(DATA / "maps" / "emd_3488.mrc", permissive=True) as mrc:
        vol = np.asarray(mrc.data, dtype=np.float32).copy()
        apix = float(mrc.voxel_size.x)
    dirty, _ = helpers.plant_contaminant(vol, apix, 1.0 / 5.0)
    with mrcfile.new(path) as out:
        out.set_data(dirty)
        out.voxel_size = apix
    return path


def _outputs(runs: dict, nid: str) -> tuple[Project, dict]:
    proj = Project.open(runs["project"])
    return proj, proj.outputs(runs["ids"][nid])


def _map(runs: dict, name: str):
    _, outs = _outputs(runs, name)
    vol = outs["volume"]
    return read_volume(vol.path)[0], vol


def _check_outputs(runs: dict, nid: str, source: str) -> np.ndarray:
    """The mask is registered, and the masked map is the map times the mask; returns the mask."""
    data, src = _map(runs, source)
    _, outs = _outputs(runs, nid)
    mobj, vobj = outs["mask"], outs["volume"]
    assert type(mobj).__name__ == "VolumeMask" and tuple(mobj.shape) == src.shape
    assert mobj.pixel_size == pytest.approx(src.pixel_size)
    mask = read_volume(mobj.path)[0]
    assert mask.min() >= 0 and mask.max() <= 1
    np.testing.assert_array_equal(read_volume(vobj.path)[0], data * mask)
    return mask


def _same_mask(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to FFT rounding: two FFT plans of one shape may differ in the last bit, so a
    voxel lying exactly at a threshold may flip; no more than 1 in 10^4 voxels may differ."""
    assert got.shape == want.shape
    assert (np.abs(got - want) > 1e-4).mean() < 1e-4


def _png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


@pytest.mark.parametrize("name", list(MAPS))
def test_auto3d_automatic_on_real_maps(runs, name):
    data, src = _map(runs, name)
    mask = _check_outputs(runs, f"auto_{name}", name)
    n = data.shape[0]
    c = n // 8
    ends = (slice(0, c), slice(n - c, n))
    for a in ends:
        for b in ends:
            for d in ends:
                assert mask[a, b, d].max() == 0, (name, a, b, d)
    strong = data > np.percentile(data, 99)
    assert (mask[strong] >= 0.5).mean() >= 0.999
    assert 0.03 < (mask >= 0.5).mean() < 0.6
    # the report exists (central slices with the mask outline) and the summary names the values
    proj = Project.open(runs["project"])
    row = run_row(proj, runs["ids"][f"auto_{name}"])
    w, h = _png_size(Path(row["workdir"]) / "extra" / "report.png")
    assert w > 600 and h > 200
    _, chosen = robust_auto_mask(data, pixel_size=src.pixel_size)
    _same_mask(mask, robust_auto_mask(data, pixel_size=src.pixel_size)[0])
    summary = row["summary"]
    assert summary.startswith("automatic parameters")
    for word in (
        f"threshold={chosen['threshold']:.4g}",
        f"nshellsgauss={chosen['nshellsgauss']}",
        f"molecule peak={chosen['molecule_peak']:.4g}",
        f"kept {chosen['kept']} of {chosen['components']} components",
    ):
        assert word in summary, (word, summary)
    assert "warning" not in summary


def test_contaminant_warning_is_recorded_and_shown(runs):
    data, src = _map(runs, "dirty")
    mask = _check_outputs(runs, "auto_dirty", "dirty")
    clean = read_volume(DATA / "maps" / "emd_3488.mrc")[0]
    high = clean > clean.mean() + 2 * clean.std()
    assert (mask[high] >= 0.5).mean() >= 0.98
    rid = runs["ids"]["auto_dirty"]
    row = run_row(Project.open(runs["project"]), rid)
    assert "warning: a density brighter than the masked one was left out" in row["summary"]
    shown = cli("runs", "show", rid, "-P", runs["project"])
    assert shown.returncode == 0 and "warning: a density brighter" in shown.stdout, shown.stdout
    log = (Path(row["workdir"]) / "logs" / "run.log").read_text()
    assert "warning: a density brighter" in log


def test_eman2_rule_equals_the_eman2_kernel(runs):
    data, src = _map(runs, "m5625")
    mask = _check_outputs(runs, "eman2", "m5625")
    ref, chosen = auto_mask(data, pixel_size=src.pixel_size)
    _same_mask(mask, ref)
    summary = run_row(Project.open(runs["project"]), runs["ids"]["eman2"])["summary"]
    for word in ("nmaxseed=24", f"nshells={chosen['nshells']}", f"vmax={chosen['vmax']:.4g}"):
        assert word in summary, (word, summary)


def test_auto3d_with_given_parameters_equals_the_kernel(runs):
    data, _ = _map(runs, "m1832")
    mask = _check_outputs(runs, "manual", "m1832")
    _same_mask(mask, auto3d(data, **MANUAL))
    # flood fill from the 50 highest voxels through value > mean + 2 std: every such voxel
    # 6-connected to a seed is inside (before the shells and the soft edge)
    thr = data.mean(dtype=np.float64) + 2 * data.std(dtype=np.float64)
    seeds = np.zeros(data.shape, bool)
    seeds.ravel()[np.argsort(data, axis=None)[-50:]] = True
    core = ndimage.binary_propagation(seeds, structure=CROSS, mask=data > thr)
    assert mask[core].min() > 0.9
    summary = run_row(Project.open(runs["project"]), runs["ids"]["manual"])["summary"]
    assert summary.startswith("parameters: ") and f"threshold={thr:.4g}" in summary, summary


def test_soft_mode_is_eman2_mask_soft(runs):
    data, _ = _map(runs, "m1832")
    mask = _check_outputs(runs, "soft", "m1832")
    axes = np.meshgrid(
        *[np.arange(n, dtype=np.float64) - n // 2 for n in data.shape], indexing="ij"
    )
    r = np.sqrt(sum(a * a for a in axes))
    r1, r2, w = SOFT["inner_radius"], SOFT["outer_radius"], SOFT["width"]
    ref = np.ones_like(r)
    ref[r > r2] = np.exp(-(((r[r > r2] - r2) / w) ** 2))
    ref[r < r1] = np.exp(-(((r1 - r[r < r1]) / w) ** 2))
    np.testing.assert_allclose(mask, ref, atol=1e-6)


def test_threshold_mode_morphology(runs):
    data, _ = _map(runs, "m5625")
    mask = _check_outputs(runs, "thresh", "m5625")
    binary = data > THRESH["threshold"]
    labels, count = ndimage.label(binary, CROSS)
    assert count > 1  # keep_largest matters here
    sizes = np.bincount(labels.ravel())[1:]
    binary = labels == 1 + int(np.argmax(sizes))
    binary = ndimage.binary_dilation(binary, CROSS, iterations=THRESH["dilate"])
    binary = ndimage.binary_erosion(binary, CROSS, iterations=THRESH["erode"], border_value=0)
    d = ndimage.distance_transform_edt(~binary)
    w = THRESH["soft_edge"]
    ref = np.where(d < w, 0.5 * (1 + np.cos(np.pi * d / w)), 0.0)
    np.testing.assert_allclose(mask, ref, atol=1e-5)


def test_validation_one_line_exit_2_nothing_recorded(runs):
    proj = runs["project"]
    m = runs["ids"]["m3488"]
    n0 = len(run_rows(Project.open(proj)))
    cases = {  # arguments of `emforge run` -> words the one error line must contain
        "sigma": (["automask.auto3d", "-p", "sigma=-1", "-p", "nmaxseed=24"], ["sigma", "-1"]),
        "nmaxseed": (
            ["automask.auto3d", "-p", "threshold=0.01", "-p", "nmaxseed=1000001"],
            ["nmaxseed", "1000001", "1000000"],
        ),
        "soft": (
            ["automask.soft", "-p", "inner_radius=30", "-p", "outer_radius=20"],
            ["inner_radius", "outer_radius"],
        ),
        "soft_outer": (["automask.soft", "-p", "outer_radius=-5"], ["outer_radius", "-5"]),
    }
    procs = {
        k: subprocess.Popen(
            [str(EMFORGE), "run", *a, "-i", f"volume={m}.volume", "-P", str(proj)],
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
    assert len(run_rows(Project.open(proj))) == n0
