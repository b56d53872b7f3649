"""torch-projectors side of bench_projection.py (runs in its own venv; never imports emforge).

    python torchproj_side.py MODE --map MAP.npy --rotations ROT.npy [--images IMG.npy]
                             --pad 2 --threads 2 --repeats 5 --out OUT.npy

MODE ``project``: the real map (n, n, n) is padded ``pad`` times, fftshifted, rfftn'd
(``prepare``), sampled on the central slices of every rotation (``slices``,
``project_3d_to_2d_forw``, trilinear, ``oversampling = pad``) and brought back to n x n images
(irfft2 + ifftshift): ``project`` is the whole chain. MODE ``backproject``: images (N, n, n)
are padded to ``pad * n`` (the library's grid has the images' size), fftshifted, rfft2'd and
inserted with weights 1 (``backproject_2d_to_3d_forw``, ``oversampling = 1``, ``insert``), then divided by the weights (floor 1e-3 of the mean), inverse-transformed and
cropped to n^3 (``backproject`` is the whole chain). The first call of each is ``cold`` (this
process is fresh), then ``repeats`` warm calls. The JSON on the last line has the timings, the
threads, the library version and peak RSS; the images or map produced go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
import torch_projectors as tp


def _pad_shift(x: torch.Tensor, m: int, dims: int = 3) -> torch.Tensor:
    """Zero-pad the last ``dims`` axes to m (centred) and fftshift them."""
    n = x.shape[-1]
    before = (m - n) // 2
    x = torch.nn.functional.pad(x, (before, m - n - before) * dims)
    return torch.fft.fftshift(x, dim=tuple(range(-dims, 0)))


def _crop_unshift(x: torch.Tensor, n: int) -> torch.Tensor:
    x = torch.fft.ifftshift(x, dim=tuple(range(-3, 0)))
    m = x.shape[-1]
    s = (m - n) // 2
    return x[..., s : s + n, s : s + n, s : s + n]


def _timed(fn, repeats: int) -> dict:
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        warm.append(time.perf_counter() - t0)
    return {"cold": cold, "min": min(warm), "median": statistics.median(warm),
            "max": max(warm), "out": out}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("project", "backproject"))
    ap.add_argument("--map", required=True)
    ap.add_argument("--rotations", required=True)
    ap.add_argument("--images")
    ap.add_argument("--pad", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vol = torch.from_numpy(np.load(a.map).astype(np.float32))
    n = vol.shape[-1]
    m = int(round(n * a.pad))
    m += m % 2
    rots = torch.from_numpy(np.load(a.rotations).astype(np.float32))[None]
    res: dict = {"mode": a.mode, "threads": a.threads, "pad": a.pad,
                 "version": getattr(tp, "__version__", "0.13.1")}  # fmt: skip
    if a.mode == "project":

        def prepare():
            return torch.fft.rfftn(_pad_shift(vol, m), dim=(-3, -2, -1), norm="forward")[None]

        def slices(fv):
            return tp.project_3d_to_2d_forw(fv, rots, output_shape=(n, n), oversampling=a.pad)

        def project():
            p = slices(prepare())
            return torch.fft.ifftshift(
                torch.fft.irfft2(p[0], s=(n, n), norm="forward"), dim=(-2, -1)
            )

        res["prepare"] = _timed(prepare, a.repeats)
        fv = res["prepare"].pop("out")
        res["slices"] = _timed(lambda: slices(fv), a.repeats)
        res["slices"].pop("out")
        res["project"] = _timed(project, a.repeats)
        out = res["project"].pop("out").numpy()
    else:
        imgs = torch.from_numpy(np.load(a.images).astype(np.float32))

        def insert():
            # the library's grid has the images' size: padding means padded images (its README)
            spec = torch.fft.rfft2(
                _pad_shift(imgs, m, 2) if m != n else torch.fft.fftshift(imgs, dim=(-2, -1)),
                norm="forward",
            )[None]
            ones = torch.ones(spec.shape, dtype=torch.float32)
            return tp.backproject_2d_to_3d_forw(spec, rots, weights=ones, oversampling=1.0)

        def finish(data, wgt):
            w = torch.clamp(wgt, min=1e-3 * float(wgt.mean()))
            full = torch.fft.irfftn(data[0] / w[0], s=(m, m, m), dim=(-3, -2, -1), norm="forward")
            return _crop_unshift(full, n)

        def backproject():
            return finish(*insert())

        res["insert"] = _timed(insert, a.repeats)
        res["insert"].pop("out")
        res["backproject"] = _timed(backproject, a.repeats)
        out = res["backproject"].pop("out").numpy()
    np.save(a.out, out)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


if __name__ == "__main__":
    main()
