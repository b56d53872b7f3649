"""One map B: the same map gives the same map B (within 2 Å²) from every protocol that reports
one, on a synthetic map blurred by a known B and on the EMD-3488 ground-truth case; the fit
range rule, the shell minimum and the warnings of :mod:`...kernels.mapb`."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

from emforge.engine.listing import show_lines  # noqa: E402
from emforge.engine.runs import run_row  # noqa: E402
from emforge.io import write_volume  # noqa: E402
from emforge.numerics import bfactor_filter  # noqa: E402
from emforge.project import Project  # noqa: E402
from emforge.protocols.sharpen.kernels.mapb import (  # noqa: E402
    fit_map_b,
    map_b,
    map_b_fit_range,
)

EMFORGE = Path(sys.executable).with_name("emforge")
DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"
MODEL = DATA / "models" / "5me2.pdb"
B_KNOWN = 80.0


def white_map(n: int = 64, seed: int = 3) -> np.ndarray:
    """Random phases, every Fourier amplitude 1: a flat spectrum, i.e. map B = 0 exactly."""
    f = np.fft.rfftn(np.random.default_rng(seed).standard_normal((n, n, n)))
    return np.fft.irfftn(f / np.abs(f), s=(n, n, n), axes=(0, 1, 2)).astype(np.float32)


# --------------------------------------------------------------------------- the rule
def test_fit_range_rule_from_resolution_nyquist_and_box():
    # atomic resolution: 10 Å to the resolution
    assert map_b_fit_range((100,) * 3, pixel_size=1.05, resolution=3.2) == (10.0, 3.2)
    # no resolution: 3 pixels; a resolution is never taken finer than 2.5 pixels
    assert map_b_fit_range((100,) * 3, pixel_size=1.05)[1] == pytest.approx(3.15)
    assert map_b_fit_range((100,) * 3, pixel_size=1.05, resolution=2.1)[1] == pytest.approx(2.625)
    # a 25 Å map: an octave of its own signal, 50-25 Å (not 10 Å, which is finer than it)
    assert map_b_fit_range((64,) * 3, pixel_size=5.7, resolution=25.0) == (50.0, 25.0)
    # 20^3 at 11.4 Å/px, 30 Å: shells are 1/228 Å^-1 apart, 60-30 Å holds only shells 4..7,
    # so d_max moves out to shell 3 (76 Å) to reach 5 shells
    d_max, d_min = map_b_fit_range((20,) * 3, pixel_size=11.4, resolution=30.0)
    assert d_min == 30.0 and d_max == pytest.approx(228.0 / 3)


def test_fit_range_refuses_a_box_with_too_few_shells():
    with pytest.raises(ValueError, match="resolution: .* only 2 Fourier shells"):
        map_b_fit_range((8,) * 3, pixel_size=10.0, resolution=30.0)


def test_map_b_of_a_map_blurred_by_a_known_b():
    m = bfactor_filter(white_map(), B_KNOWN, pixel_size=1.0)
    for res in (None, 3.0, 4.0):
        fit = map_b(m, pixel_size=1.0, resolution=res)
        assert fit.b == pytest.approx(B_KNOWN, abs=2.0), res
        assert fit.warnings == []
    # sign: an over-sharpened map has a negative map B
    assert map_b(bfactor_filter(white_map(), -40.0, pixel_size=1.0), pixel_size=1.0).b == (
        pytest.approx(-40.0, abs=2.0)
    )


def test_map_b_warns_on_a_short_fit_and_an_implausible_b():
    s = np.arange(12) / 24.0
    amp = np.exp(-1500.0 * s**2 / 4)  # plausible up to 16 x 6^2 = 576 at d_min 6 Å
    fit = fit_map_b(s, amp, d_min=1 / s[4], d_max=1 / s[1], min_shells=5)
    assert fit.n_shells == 4 and fit.b == pytest.approx(1500.0)
    assert any("only 4 Fourier shells" in w for w in fit.warnings)
    assert any("outside the plausible range" in w for w in fit.warnings)


# --------------------------------------------------------------------------- every protocol
#: protocol -> (params, input): "avg" is the map with its half maps
PROTOCOLS = {
    "bfactor": ("sharpen.bfactor", {"mode": "b_sharpen", "b_sharpen": 50.0, "fit_d_min": "RES"}),
    "bfactor_b_iso": ("sharpen.bfactor", {"mode": "b_iso", "b_iso": 0.0, "fit_d_min": "RES"}),
    "auto": ("sharpen.auto", {"resolution": "RES", "n_steps": 5}),
    "halfmaps_relion": ("sharpen.halfmaps", {"method": "relion"}),
    "halfmaps_phenix": ("sharpen.halfmaps", {"method": "phenix"}),
    "shells": ("sharpen.shells", {"resolution": "RES"}),
    "local_b_iso": ("sharpen.local", {"method": "b_iso", "resolution": "RES"}),
    "local_halfmap": ("sharpen.local", {"method": "halfmap", "resolution": "RES"}),
}


def _map_b_from_every_protocol(
    tmp: Path, halves, px: float, origin=None, extra: dict | None = None
) -> dict[str, float]:
    """Import the halves' average (with its halves), run every protocol (and those of
    ``extra``); map B per protocol, read from the summary sentence "map B (blur) = +X Å²"."""
    folder = tmp / "maps"
    folder.mkdir()
    paths = {}
    for name, data in (
        ("h1", halves[0]),
        ("h2", halves[1]),
        ("avg", 0.5 * (halves[0] + halves[1])),
    ):
        paths[name] = str(folder / f"{name}.mrc")
        write_volume(paths[name], np.asarray(data, np.float32), voxel_size=px, origin=origin)
    proj = Project.init(tmp / "P")
    vid = proj.run(
        "import.volume", params={"path": paths["avg"], "half1": paths["h1"], "half2": paths["h2"]}
    )
    inputs = {"volume": f"{vid}.volume"}
    first = proj.run("sharpen.halfmaps", params={"method": "relion"}, inputs=inputs)
    res = float(re.search(r"resolution ([0-9.]+) Å", run_row(proj, first)["summary"]).group(1))
    out = {}
    for name, (protocol, params) in {**PROTOCOLS, **(extra or {})}.items():
        params = {k: (res if v == "RES" else v) for k, v in params.items()}
        rid = (
            first if name == "halfmaps_relion" else proj.run(protocol, params=params, inputs=inputs)
        )
        summary = run_row(proj, rid)["summary"]
        found = re.findall(r"map B \(blur\) = ([+-][0-9.]+) Å²", summary)
        assert found, f"{name}: no map B sentence in the summary:\n{summary}"
        out[name] = float(found[0])
    report = Path(run_row(proj, first)["workdir"]) / "extra" / "report.html"
    out["_show"] = "\n".join(  # type: ignore[assignment]
        [*show_lines(proj, first), report.read_text(encoding="utf-8")]
    )
    return out


@pytest.mark.slow
def test_every_protocol_gives_the_known_map_b_of_a_synthetic_map(tmp_path):
    if not EMFORGE.is_file():
        pytest.skip("the emforge command is not installed")
    m = bfactor_filter(white_map(), B_KNOWN, pixel_size=1.0)
    rng = np.random.default_rng(5)
    sd = 0.01 * float(m.std())  # nearly noise-free halves: FSC ~ 1 to Nyquist
    halves = [m + np.float32(sd) * rng.standard_normal(m.shape, dtype=np.float32) for _ in (1, 2)]
    got = _map_b_from_every_protocol(tmp_path, halves, 1.0)
    show = got.pop("_show")
    for name, b in got.items():
        assert b == pytest.approx(B_KNOWN, abs=2.0), (name, got)
    # the FSC never falls below 0.143: recorded as a warning and shown by `runs show`
    # (in the summary, which `runs show` prints, on its own line, and in the report)
    assert "warning (postprocess): the FSC never falls below 0.143" in show
    assert "    warning: the FSC never falls below 0.143" in show
    assert "<th>warning</th><td>the FSC never falls below 0.143" in show


@pytest.mark.slow
def test_every_protocol_gives_the_same_map_b_on_emd_3488(tmp_path, halves):
    got = _map_b_from_every_protocol(tmp_path, halves, 1.05, extra=_model_protocol())
    got.pop("_show")
    assert "model" in got
    values = np.array(list(got.values()))
    assert np.ptp(values) <= 2.0, got
    # the halves' average carries the deposited map's B (about +10 at 3.2-3.5 Å) + 100, less
    # what the noise flattens: a clearly blurred map
    assert 40.0 < values.mean() < 130.0, got


def _model_protocol() -> dict:
    """sharpen.model with 5ME2, which fits EMD-3488 in its own frame."""
    if not MODEL.is_file():
        pytest.skip(f"real test data missing: {MODEL}")
    return {"model": ("sharpen.model", {"model": str(MODEL.resolve()), "resolution": "RES"})}


@pytest.mark.slow
def test_every_single_map_protocol_gives_the_same_map_b_on_the_deposited_emd_3488(tmp_path):
    """The deposited (already sharpened) EMD-3488 map alone, at its 3.2 Å: sharpen.bfactor,
    sharpen.auto, sharpen.shells, sharpen.local and sharpen.model report one map B."""
    from emforge.io import read_info

    if not MAP.is_file():
        pytest.skip(f"real test data missing: {MAP}")
    proj = Project.init(tmp_path / "P")
    vid = proj.run("import.volume", params={"path": str(MAP)})
    assert read_info(MAP).voxel_size[0] == pytest.approx(1.05)
    single = {k: v for k, v in PROTOCOLS.items() if k in ("bfactor", "bfactor_b_iso", "auto")}
    single |= {"shells": ("sharpen.shells", {"resolution": "RES"})}
    single |= {"local_b_iso": ("sharpen.local", {"method": "b_iso", "resolution": "RES"})}
    got = {}
    for name, (protocol, params) in {**single, **_model_protocol()}.items():
        params = {k: (3.2 if v == "RES" else v) for k, v in params.items()}
        rid = proj.run(protocol, params=params, inputs={"volume": f"{vid}.volume"})
        summary = run_row(proj, rid)["summary"]
        found = re.findall(r"map B \(blur\) = ([+-][0-9.]+) Å²", summary)
        assert found, f"{name}: no map B sentence in the summary:\n{summary}"
        got[name] = float(found[0])
    assert np.ptp(list(got.values())) <= 2.0, got
    # the deposited map is already sharpened: a small map B (the data README: about -8 Å²
    # over a wider range; +10 at 10-3.2 Å)
    assert -20.0 < np.mean(list(got.values())) < 25.0, got


def test_flat_auto_sharpen_score_keeps_the_smallest_change():
    from emforge.protocols.sharpen.kernels.auto import _pick_best

    b_sharpen = np.linspace(110.0, -290.0, 21)  # b_iso -100 ... 300 for a map B of 10
    flat = 3.0 + 0.01 * np.sin(np.arange(21))  # spread 0.02: 0.7% of the score
    i, note = _pick_best(flat, b_sharpen)
    assert b_sharpen[i] == pytest.approx(10.0) and "flat auto-sharpen score" in note
    peaked = 3.0 - 0.002 * (np.arange(21) - 4) ** 2  # a real optimum at b_sharpen 30
    i, note = _pick_best(peaked, b_sharpen)
    assert b_sharpen[i] == pytest.approx(30.0) and note == ""


def test_auto_sharpen_keeps_the_map_when_every_trial_scores_alike():
    """EMD-3197 (20³ at 11.4 Å/px): every b_iso trial gives the same adjusted surface area, so
    the map's B is left as it is (b_sharpen 0) and the note says so."""
    from emforge.io import read_volume
    from emforge.protocols.sharpen.kernels import auto_sharpen

    path = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "maps" / "EMD-3197.map"
    if not path.is_file():
        pytest.skip(f"real test data missing: {path}")
    a = read_volume(path)[0]
    r = auto_sharpen(a, pixel_size=11.4, n_steps=5)
    assert np.ptp(r.scan["score"]) <= 0.02 * np.median(np.abs(r.scan["score"]))
    assert r.b_sharpen == 0.0 and r.b_iso == pytest.approx(r.b_iso_original)
    assert any("flat auto-sharpen score" in n for n in r.notes)
    np.testing.assert_allclose(r.map, a, atol=1e-5 * float(np.abs(a).max()))


def test_plausible_high_end_leaves_room_for_a_proteins_own_fall_off_on_coarse_maps():
    """At 20-40 Å an unblurred protein (the reference spectrum) has a map B of 5-6.5 d² over
    the family's fit range 2d … d; the plausible high end 16 d² is above it by about 10 d²
    (a further blur that leaves ~8% of the amplitude at d), and below it by no more."""
    from emforge.protocols.sharpen.kernels.mapb import plausible_map_b
    from emforge.protocols.sharpen.kernels.refspec import protein_ln_amplitude

    for d in (20.0, 24.0, 30.0, 40.0):
        s = np.linspace(1 / (2 * d), 1 / d, 12)
        b_protein = -4.0 * np.polyfit(s**2, protein_ln_amplitude(s), 1)[0]
        hi = plausible_map_b(d)[1]
        assert 5.0 * d * d <= b_protein <= 6.5 * d * d
        assert 9.0 * d * d <= hi - b_protein <= 11.0 * d * d
