"""The refinement loop as steps: SIGKILL mid-iteration then resume gives identical outputs,
a Dask LocalCluster gives the same outputs as the engine's own process, a changed param
redoes only the stages that use it, raising ``iter`` runs only the new iterations and
``startiter`` re-enters at an iteration from the previous one's maps (raw when the filtered
ones are gone: EMAN2's startiter quirk, fixed).

Data: 160 particles simulated from EMD-3488 at 32³, a 20 Å low-pass start (as in
test_protocols.py); c2, delta 15, 2 iterations.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emforge.engine import create_run, effective_status, execute_run
from emforge.engine.listing import edit_params
from emforge.engine.runs import run_row
from emforge.errors import EmforgeError
from emforge.io import read_volume, write_volume
from emforge.numerics import lowpass
from emforge.project import Project

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "framework" / "numerics"))
from _recon_data import fourier_crop  # noqa: E402

os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"
BOX, N = 32, 160
PX = 1.05 * 100 / BOX
PARAMS = dict(iter=2, delta=15.0, sym="c2", targetres=12.0, simcmp={"name": "ccc"},
              classcmp={"name": "ccc"}, chunk=40, classes_per_step=20)  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    if not MAP.exists():
        pytest.skip(f"real test data missing: {MAP.resolve()} (expected ../shared/data)")
    folder = tmp_path_factory.mktemp("loop")
    project = Project.init(folder / "P")
    truth = fourier_crop(read_volume(MAP)[0], BOX)
    start = folder / "start.mrc"
    write_volume(start, lowpass(truth, 20.0, pixel_size=PX).astype(np.float32), voxel_size=PX)
    emd = project.run("import.volume", params={"path": str(MAP)})
    model = project.run("import.volume", params={"path": str(start)})
    sim = project.run("simulate.particles", inputs={"volume": f"{emd}.volume"},
                      params=dict(n=N, box=BOX, snr=0.5, max_shift=2, seed=1))  # fmt: skip
    inputs = {"particles": f"{sim}.particles", "model": f"{model}.volume"}
    return {"project": project, "inputs": inputs}


def _outputs(project: Project, rid: int) -> dict:
    """Every output's content: map and half-map bytes, set columns."""
    out = project.outputs(rid)
    got = {}
    for name in ("volume", "filtered"):
        v = out[name]
        got[name] = [Path(p).read_bytes() for p in (v.path, v.half1, v.half2)]
    got["fsc"] = (out["fsc"].values, out["fsc"].crossings)
    for name in ("particles", "classes"):
        cols = out[name].read()
        got[name] = {k: v for k, v in cols.items() if k != "image_path"}
    return got


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in ("volume", "filtered", "fsc"):
        assert a[k] == b[k], k
    for k in ("particles", "classes"):
        for col in a[k]:
            np.testing.assert_array_equal(a[k][col], b[k][col], err_msg=f"{k}.{col}")


def _steps(project: Project, rid: int) -> dict[str, tuple[str, int, str]]:
    con = sqlite3.connect(project.db_path)
    try:
        rows = con.execute(
            "SELECT name, status, executions, result_json FROM steps WHERE run_id = ?", (rid,)
        ).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.fixture(scope="module")
def reference(setup) -> dict:
    p = setup["project"]
    rid = p.run("refine.projection_matching", params=PARAMS, inputs=setup["inputs"], workers=1)
    return _outputs(p, rid)


def _child(path: str, rid: int) -> None:
    execute_run(Project.open(path), rid, workers=1)


def test_sigkill_mid_iteration_resumes_inside_it(setup, reference):
    p = setup["project"]
    rid = create_run(p, "refine.projection_matching", PARAMS, setup["inputs"])
    proc = mp.get_context("fork").Process(target=_child, args=(str(p.path), rid))
    proc.start()
    deadline = time.monotonic() + 60
    try:  # kill while iteration 2 is averaging its classes
        while _steps(p, rid).get("i02_classavg_even_002", ("new",))[0] != "running":
            assert proc.is_alive(), "the run ended before iteration 2's class averages"
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert effective_status(run_row(p, rid)) == "interrupted"
    before = _steps(p, rid)
    done = {n for n, s in before.items() if s[0] == "finished"}
    assert "i02_simmx_even_001" in done and "i02_make3d_even" not in done
    assert execute_run(p, rid, workers=1) == "finished"
    after = _steps(p, rid)
    for name, (status, executions, _) in after.items():
        # finished steps (all of iteration 1, part of 2) are not redone
        assert status == ("skipped" if name in done else "finished"), name
        assert executions == 1, name
    _same(_outputs(p, rid), reference)


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_outputs(setup):
    pytest.importorskip("distributed")
    p = setup["project"]
    rid = p.run("refine.projection_matching", params=PARAMS, inputs=setup["inputs"], workers=2,
                executor="dask")  # fmt: skip
    # two local worker processes: like Dask's two single-threaded workers, one thread per step
    # (the workers=1 reference runs inline with every core, see engine/executors._pin_threads)
    pool = p.run("refine.projection_matching", params=PARAMS, inputs=setup["inputs"], workers=2)
    _same(_outputs(p, rid), _outputs(p, pool))


def test_param_change_iter_and_startiter(setup):
    p = setup["project"]
    params = {**PARAMS, "iter": 1}
    rid = p.run("refine.projection_matching", params=params, inputs=setup["inputs"], workers=1)
    # a reconstruction param redoes make3d and what follows, never the stages before it
    edit_params(p, rid, {"m3dkeep": 0.7})
    assert execute_run(p, rid, workers=1) == "finished"
    st = _steps(p, rid)
    assert st["i01_simmx_even_001"][0] == "skipped" and st["i01_classavg_odd_001"][0] == "skipped"
    assert st["i01_make3d_even"][0] == "finished" and st["i01_make3d_even"][1] == 2
    # one more iteration: only iteration 2 (and finish) runs
    edit_params(p, rid, {"iter": 2})
    assert execute_run(p, rid, workers=1) == "finished"
    st = _steps(p, rid)
    assert all(s[0] == "skipped" for n, s in st.items() if n.startswith("i01_")), st
    assert all(s[0] == "finished" for n, s in st.items() if n.startswith("i02_")), st
    seed = json.loads(st["i02_project_even"][2])["seed"]
    assert seed == "threed_even.mrc"  # the filtered map of iteration 1
    # startiter 2 with iteration 1's filtered maps gone: re-seeded from its raw maps
    extra = Path(run_row(p, rid)["workdir"]) / "extra"
    for h in ("even", "odd"):
        (extra / "iter_01" / f"threed_{h}.mrc").unlink()
    edit_params(p, rid, {"startiter": 2})
    assert execute_run(p, rid, workers=1) == "finished"
    st = _steps(p, rid)
    assert not any(n.startswith("i01_") or n == "start" for n in st), sorted(st)
    assert json.loads(st["i02_project_odd"][2])["seed"] == "threed_odd_raw.mrc"
    assert st["i02_project_odd"][1] == 2 and st["prepare"][0] == "skipped"


def test_startiter_on_a_new_run_names_the_missing_map(setup):
    p = setup["project"]
    with pytest.raises(EmforgeError, match=r"iter_01/threed_even\.mrc: is missing"):
        p.run("refine.projection_matching", params={**PARAMS, "startiter": 2},
              inputs=setup["inputs"], workers=1)  # fmt: skip


def test_eman2_options_without_gold_standard(setup):
    """goldstandard off (one reference set from the combined map), sep 2, simmask auto,
    ctf.weight averager, automask3d's five values and mass normalisation, in one iteration."""
    p = setup["project"]
    params = {**PARAMS, "iter": 1, "goldstandard": False, "sep": 2, "simmask": "auto",
              "classaverager": "ctf.weight", "automask3d": [0.5, 0, 2, 3, 3], "mass": 64.0}  # fmt: skip
    rid = p.run("refine.projection_matching", params=params, inputs=setup["inputs"], workers=1)
    st = _steps(p, rid)
    assert "i01_project_all" in st and "i01_project_even" not in st and "i01_simmask" in st
    assert json.loads(st["i01_project_all"][2])["seed"] == "threed.mrc"
    assert "not independent" in run_row(p, rid)["summary"]
    # mass 64 kDa at 1.21 Å³/Da: the filtered map is 1 at the threshold enclosing that volume
    filtered = read_volume(p.outputs(rid)["filtered"].path)[0]
    nvox = round(64_000 * 1.21 / PX**3)
    assert abs(int(np.sum(filtered >= 1.0 - 1e-6)) - nvox) <= 1, nvox
    classes = p.outputs(rid)["classes"].read()
    assert classes["count"].sum() > N  # sep 2: particles count in two classes
