"""Every sharpening protocol on coarse real maps: it finishes with plausible numbers, or it is
refused at validation with a reason naming a parameter or input. Never a run-time failure.

* ``emd_1832.map``: 64³ at 5.7 Å/px (Nyquist 11.4 Å), a low-resolution map.
* ``EMD-3197.map``: 20³ at 11.4 Å/px (Nyquist 22.8 Å), a tiny subtomogram average.

Half maps are made from each map plus independent noise (so half-map protocols have input);
the model is 5ME2 (it lies inside both boxes, so sharpen.model has a model map).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

from emforge.engine.runs import run_row  # noqa: E402
from emforge.errors import ValidationError  # noqa: E402
from emforge.io import read_info, read_volume, write_volume  # noqa: E402
from emforge.project import Project  # noqa: E402
from emforge.protocols.sharpen.kernels.mapb import plausible_map_b  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / ".." / "shared" / "data"
MODEL = DATA / "models" / "5me2.pdb"
MAPS = {
    "emd_1832": (DATA / "maps" / "emd_1832.map", 25.0),
    "emd_3197": (DATA / "maps" / "EMD-3197.map", 30.0),
}

#: name -> (protocol, params (resolution filled in), input: "map" or "avg" (with halves))
PROTOCOLS = {
    "bfactor_b_sharpen": ("sharpen.bfactor", {"mode": "b_sharpen", "b_sharpen": 200.0}, "map"),
    "bfactor_b_iso": ("sharpen.bfactor", {"mode": "b_iso", "b_iso": 0.0}, "map"),
    "bfactor_b_iso_res": (
        "sharpen.bfactor",
        {"mode": "b_iso", "b_iso": 0.0, "fit_d_min": "RES"},
        "map",
    ),
    "bfactor_b_iso_fit_d_max": (
        "sharpen.bfactor",
        {"mode": "b_iso", "b_iso": 0.0, "fit_d_min": "RES", "fit_d_max": 120.0},
        "map",
    ),
    "bfactor_b_iso_to_d_cut": (
        "sharpen.bfactor",
        {"mode": "b_iso_to_d_cut", "b_iso": 0.0, "d_cut": "RES"},
        "map",
    ),
    "bfactor_resolution_dependent": (
        "sharpen.bfactor",
        {"mode": "resolution_dependent", "d_cut": "RES", "b0": 0.1, "b1": 0.3, "b2": 0.1},
        "map",
    ),
    "auto": ("sharpen.auto", {"resolution": "RES", "n_steps": 5}, "map"),
    "auto_no_resolution": ("sharpen.auto", {"n_steps": 5}, "map"),
    "halfmaps_relion": ("sharpen.halfmaps", {"method": "relion"}, "avg"),
    "halfmaps_phenix": ("sharpen.halfmaps", {"method": "phenix"}, "avg"),
    "model": ("sharpen.model", {"model": str(MODEL.resolve()), "resolution": "RES"}, "map"),
    "shells": ("sharpen.shells", {"resolution": "RES"}, "avg"),
    "shells_no_halves": ("sharpen.shells", {"resolution": "RES"}, "map"),
    "local_b_iso": ("sharpen.local", {"method": "b_iso", "resolution": "RES"}, "map"),
    "local_halfmap": ("sharpen.local", {"method": "halfmap", "resolution": "RES"}, "avg"),
}


@pytest.fixture(scope="module")
def coarse(tmp_path_factory) -> dict:
    """A project per coarse map with the map and a half-map pair imported."""
    if not MODEL.is_file() or not all(p.is_file() for p, _ in MAPS.values()):
        pytest.skip("real test data missing")
    out = {}
    for name, (path, res) in MAPS.items():
        folder = tmp_path_factory.mktemp(name)
        data, info = read_volume(path)[0], read_info(path)
        rng = np.random.default_rng(7)
        sd = 0.3 * float(data.std())
        halves = []
        for i in (1, 2):
            h = data + np.float32(sd) * rng.standard_normal(data.shape, dtype=np.float32)
            halves.append(folder / f"half{i}.mrc")
            write_volume(halves[-1], h, voxel_size=info.voxel_size, origin=info.origin)
        avg = folder / "avg.mrc"
        write_volume(
            avg,
            0.5 * (read_volume(halves[0])[0] + read_volume(halves[1])[0]),
            voxel_size=info.voxel_size,
            origin=info.origin,
        )
        proj = Project.init(folder / "P")
        ids = {
            "map": proj.run("import.volume", params={"path": str(path)}),
            "avg": proj.run(
                "import.volume",
                params={"path": str(avg), "half1": str(halves[0]), "half2": str(halves[1])},
            ),
        }
        out[name] = (proj, ids, res)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PROTOCOLS))
@pytest.mark.parametrize("mapname", list(MAPS))
def test_coarse_map_finishes_or_is_refused_at_validation(coarse, mapname, case):
    proj, ids, res = coarse[mapname]
    protocol, params, source = PROTOCOLS[case]
    params = {k: (res if v == "RES" else v) for k, v in params.items()}
    try:
        rid = proj.run(protocol, params=params, inputs={"volume": f"{ids[source]}.volume"})
    except ValidationError as exc:
        # a reason that names what is wrong; nothing recorded
        assert "param '" in str(exc) or "input '" in str(exc), str(exc)
        return
    row = run_row(proj, rid)
    assert row["status"] == "finished"
    out = read_volume(proj.outputs(rid)["volume"].path)[0]
    assert np.all(np.isfinite(out)) and float(out.std()) > 0
    summary = row["summary"]
    mb = [float(x) for x in re.findall(r"map B \(blur\) = ([+-][0-9.]+)", summary)]
    for b in mb:
        # plausible for the fit's fine end (at least the resolution or 2.5 px), or flagged
        px = proj.outputs(ids[source])["volume"].pixel_size
        has_res = any(k in params for k in ("resolution", "fit_d_min", "d_cut")) or protocol == (
            "sharpen.halfmaps"
        )
        lo, hi = plausible_map_b(max(res, 2.5 * px) if has_res else 3.0 * px)
        assert lo <= b <= hi or "warning: map B" in summary, summary
