"""Peer side of the sharpening benchmark: run cctbx's map sharpening on given maps.

Runs INSIDE the private cctbx virtual environment (``cctbx-base==2025.11``), never in the
emforge environment. Usage::

    python cctbx_side.py auto    --out DIR --map M --resolution R
    python cctbx_side.py halfmap --out DIR --half1 A --half2 B --resolution R
    python cctbx_side.py model   --out DIR --map M --model P --resolution R
    python cctbx_side.py local   --out DIR --half1 A --half2 B --resolution R
    python cctbx_side.py locres  --out DIR --half1 A --half2 B [--resolution R]
    (every mode: [--repeat N] [--nproc P])

The last stdout line is ONE JSON object: ``mode``, ``seconds`` (wall time of the cctbx
sharpening call only: imports and map reading/writing excluded), ``output`` (MRC written by
cctbx's map_manager in the input map's original location), ``log`` (cctbx's own log), plus
the values cctbx reported. ``--repeat N`` runs the call N times in this one process (the
inputs are read once; the map_model_manager is rebuilt, untimed, before each call) and adds
``seconds_all`` / ``cpu_seconds_all`` (one entry per call; ``seconds`` is the first, cold in
this process); ``peak_rss_mb`` is this process's peak RSS. On failure the JSON has ``error``
and the exit status is 1.
cctbx output maps have MAPC/MAPR/MAPS = 3 2 1: ``mrcfile`` data is then (x, y, z) ordered and
NCSTART/NRSTART/NSSTART hold the z/y/x starts; see cctbx_README.md.
"""

import argparse
import contextlib
import json
import os
import re
import resource
import sys
import time
import traceback
import types

MODES = ("auto", "halfmap", "model", "local", "locres")


def _stub_wxgui2():
    """mmtbx.command_line.map_box imports Phenix's GUI module wxGUI2 at module level."""
    if "wxGUI2" not in sys.modules:
        pkg = types.ModuleType("wxGUI2")
        pkg.utils = types.ModuleType("wxGUI2.utils")
        sys.modules["wxGUI2"] = pkg
        sys.modules["wxGUI2.utils"] = pkg.utils


class _Stopwatch:
    """Wall and CPU (this process) seconds of the block; cctbx runs single-threaded."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        return False


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=MODES)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--map")
    p.add_argument("--half1")
    p.add_argument("--half2")
    p.add_argument("--model")
    p.add_argument("--resolution", type=float)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="timed calls in this process")
    a = p.parse_args(argv)
    need = {
        "auto": ("map", "resolution"),
        "halfmap": ("half1", "half2", "resolution"),
        "model": ("map", "model", "resolution"),
        "local": ("half1", "half2", "resolution"),
        "locres": ("half1", "half2"),
    }[a.mode]
    missing = [f"--{k}" for k in need if getattr(a, k) is None]
    if missing:
        p.error(f"mode {a.mode} needs {' '.join(missing)}")
    return a


def _read_inputs(a, dm):
    """The input map managers and model, read once (deep-copied for each call)."""
    kw = {}
    if a.map:
        kw["map_manager"] = dm.get_real_map(a.map)
    if a.half1:
        kw["map_manager_1"] = dm.get_real_map(a.half1)
        kw["map_manager_2"] = dm.get_real_map(a.half2)
    if a.model:
        kw["model"] = dm.get_model(a.model)
    return kw


def _build_mmm(a, inputs, log):
    """map_model_manager on copies of the inputs; it shifts the origin to (0,0,0) and
    remembers the shift."""
    from iotbx.map_model_manager import map_model_manager

    kw = {k: v.deep_copy() for k, v in inputs.items()}
    mmm = map_model_manager(log=log, **kw)
    if a.resolution:
        mmm.set_resolution(a.resolution)
    return mmm


def _run_auto(a, mmm, log):
    from cctbx.maptbx import auto_sharpen, segment_and_split_map

    mm = mmm.map_manager()
    params = auto_sharpen.get_params(
        [f"resolution={a.resolution}", f"nproc={a.nproc}", f"output_directory={a.out}"],
        out=log,
    )
    core = {}
    # the undecorated entry point, also when an earlier repeat wrapped it already
    inner = getattr(segment_and_split_map, "_bench_inner", None)
    if inner is None:
        inner = segment_and_split_map._bench_inner = (
            segment_and_split_map.auto_sharpen_map_or_map_coeffs
        )

    def timed(*args, **kwargs):  # time the documented entry point itself as well
        t = time.perf_counter()
        r = inner(*args, **kwargs)
        core["s"] = time.perf_counter() - t
        return r

    segment_and_split_map.auto_sharpen_map_or_map_coeffs = timed
    with _Stopwatch() as sw:
        new_map, _, _, si = auto_sharpen.run(
            params=params,
            map_data=mm.map_data(),
            crystal_symmetry=mm.crystal_symmetry(),
            write_output_files=False,
            out=log,
        )
    out_mm = mm.customized_copy(map_data=new_map)
    info = {
        "seconds_core": core.get("s"),
        "sharpening_method": si.sharpening_method,
        "b_sharpen": si.b_sharpen,
        "b_iso": si.b_iso,
        "d_cut": si.input_d_cut or si.resolution,
        "k_sharpen": si.k_sharpen,
        "solvent_fraction": si.solvent_fraction,
        "adjusted_sa": getattr(si, "adjusted_sa", None),
        "kurtosis": getattr(si, "kurtosis", None),
        "auto_sharpen_methods": list(params.map_modification.auto_sharpen_methods),
        "nproc": params.control.nproc,
    }
    return sw, out_mm, info


def _run_scaled(a, mmm, log):
    """halfmap / local / model: the sharpened map lands in 'map_manager_scaled'."""
    kw = {"resolution": a.resolution, "nproc": a.nproc}
    with _Stopwatch() as sw:
        if a.mode == "model":
            mmm.model_sharpen(**kw)
        else:
            mmm.half_map_sharpen(local_sharpen=(a.mode == "local"), **kw)
    out_mm = mmm.get_map_manager_by_id("map_manager_scaled")
    if out_mm is None:
        raise RuntimeError(f"cctbx produced no sharpened map for mode {a.mode}; see log")
    info = {"nproc": a.nproc, "local_sharpen": a.mode == "local"}
    if a.mode == "model":
        info["map_model_cc_before"] = mmm.map_model_cc(map_id="map_manager")
        info["map_model_cc_after"] = mmm.map_model_cc(map_id="map_manager_scaled")
    return sw, out_mm, info


def _run_locres(a, mmm, log):
    import numpy as np

    fsc_res = mmm.resolution()  # given --resolution, else FSC(0.143) of the half maps
    with _Stopwatch() as sw:
        out_mm = mmm.local_resolution_map()
    v = out_mm.map_data().as_numpy_array()
    info = {
        "resolution": fsc_res,
        "locres_min": float(v.min()),
        "locres_median": float(np.median(v)),
        "locres_max": float(v.max()),
        "fsc_cutoff": 0.143,
    }
    return sw, out_mm, info


# Values cctbx only prints: (json key, regex on its log); the LAST match is kept.
_LOG_VALUES = {
    "halfmap": (
        ("effective_b_sharpen", r"Effective average B-sharpen:\s*(-?[\d.]+)"),
        ("average_cc", r"^Average CC:\s*(-?[\d.]+)"),
        ("b_eff_for_cc_star", r"Effective B value for CC\*:\s*(-?[\d.]+)"),
    ),
    "model": (
        ("effective_b_sharpen", r"Effective average B-sharpen:\s*(-?[\d.]+)"),
        ("average_cc", r"^Average CC:\s*(-?[\d.]+)"),
        ("k_sol", r"Optimized k_sol=\s*(-?[\d.]+)"),
        ("b_sol", r"Optimized k_sol=.*b_sol=\s*(-?[\d.]+)"),
    ),
    "local": (
        ("effective_b_sharpen", r"Effective average B-sharpen:\s*(-?[\d.]+)"),
        ("n_boxes", r"Total of (\d+) boxes considered"),
    ),
}


def _values_from_log(mode, text):
    out = {}
    for key, pattern in _LOG_VALUES.get(mode, ()):
        hits = re.findall(pattern, text, flags=re.MULTILINE)
        if hits:
            out[key] = float(hits[-1])
    return out


def main(argv=None):
    a = _parse(sys.argv[1:] if argv is None else argv)
    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.abspath(os.path.join(a.out, f"cctbx_{a.mode}.log"))
    result = {"mode": a.mode, "log": log_path}
    real_stdout = sys.stdout
    try:
        with open(log_path, "w") as log, contextlib.redirect_stdout(log):
            _stub_wxgui2()
            import iotbx.map_model_manager  # noqa: F401  (import outside the timing)
            from iotbx.data_manager import DataManager

            if a.resolution is None and a.mode != "locres":
                raise ValueError("--resolution is required")
            inputs = _read_inputs(a, DataManager())
            run = {"auto": _run_auto, "locres": _run_locres}.get(a.mode, _run_scaled)
            walls, cpus = [], []
            for _ in range(max(1, a.repeat)):
                mmm = _build_mmm(a, inputs, log)
                sw, out_mm, info = run(a, mmm, log)
                walls.append(sw.wall)
                cpus.append(sw.cpu)
            sw.wall, sw.cpu = walls[0], cpus[0]
            result.update(seconds_all=walls, cpu_seconds_all=cpus)
            out_path = os.path.abspath(os.path.join(a.out, f"cctbx_{a.mode}.mrc"))
            out_mm.write_map(out_path)  # back in the input's original location
            result.update(seconds=sw.wall, cpu_seconds=sw.cpu, output=out_path, **info)
            log.flush()
            with open(log_path) as fh:
                result.update(_values_from_log(a.mode, fh.read()))
            result["resolution_input"] = a.resolution
            result["origin_shift_grid_units"] = list(mmm.map_manager().origin_shift_grid_units)
            result["axis_order_written"] = [3, 2, 1]
            result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception as exc:  # report, never fake a number
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=5)
        print(json.dumps(result, default=float), file=real_stdout)
        print(f"cctbx_side {a.mode}: {result['error']} (log: {log_path})", file=sys.stderr)
        return 1
    print(json.dumps(result, default=float), file=real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
