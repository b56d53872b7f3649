"""Step functions of the refinement loop (they run on the executor: local, inline or Dask).

Every step reads and writes files in the run's ``extra/`` folder, named in its args; none
opens the database. Each iteration ``KK`` lives in ``extra/iter_KK/``; the files of one
iteration (half = ``even``, ``odd``, or ``all`` for the shared references without gold
standard):

=========================  =================================================================
``projections_H.mrcs``     reference projections; ``projections_H.npy`` their ZYZ angles
``simmask.mrc``            support of all projections (``simmask=auto``)
``simmx_H_CCC.npz``        similarity matrix of particle chunk CCC (angle, dx, dy, mirror, score)
``classify_H.npz``         classification (reference, alignment, score), (N_half, sep)
``classavg_H_CCC.npz``     class averages of class chunk CCC and their members' alignments
``threed_H_raw.mrc``       reconstruction of half H (make3d)
``threed_H.mrc``           Wiener-filtered, masked map of half H (postprocess; seeds KK+1)
``threed.mrc``, ``mask.mrc``, ``fsc.npz``   combined map, mask, FSCs (+ convergence)
=========================  =================================================================

Results do not depend on where a step ran: chunks are fixed by params and reductions
concatenate or add them in chunk order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emforge.engine import StepContext

from ._files import (  # noqa: F401  (re-exported for the other modules of the family)
    _load_npz,
    _read_map,
    _save_npz,
    _write_map,
    _write_stack,
    accepted,
    ctf_of,
    missing_options,
    read_rows,
    resolved_cmp,
    ring_snr,
)

__all__ = [
    "prepare_step",
    "start_maps_step",
    "project_step",
    "simmask_step",
    "simmx_step",
    "classify_step",
    "classavg_step",
    "make3d_step",
    "postprocess_step",
    "seed_map",
]


# -- before the loop ------------------------------------------------------------------------
def prepare_step(
    ctx: StepContext, *, sources: list[str], indices: np.ndarray, ctf_columns: dict | None,
    box: int, pixel_size: float, target: str, meta: str,
) -> dict:  # fmt: skip
    """Copy the particles into one stack, phase-flipped when they have a CTF (once, before the
    loop), and write their metadata (CTF columns, even/odd rows)."""
    from emforge.numerics import phase_flip_2d
    from emforge.protocols.reconstruct._common import read_images

    n = len(indices)
    images = read_images(sources, indices, (box, box))
    if ctf_columns is not None:
        cols = {k: np.asarray(v, np.float64) for k, v in ctf_columns.items()}
        for a in range(0, n, 512):
            b = min(n, a + 512)
            c = ctf_of(cols, np.arange(a, b), box, pixel_size)
            images[a:b] = phase_flip_2d(images[a:b], c)
            ctx.progress(b / n, f"{b}/{n} particles phase-flipped")
    _write_stack(target, images, pixel_size)
    arrays = dict(ctf_columns or {})
    _save_npz(meta, has_ctf=np.bool_(ctf_columns is not None), even=np.arange(0, n, 2),
              odd=np.arange(1, n, 2), all=np.arange(n), **arrays)  # fmt: skip
    return {"particles": n, "phase_flipped": ctf_columns is not None}


def start_maps_step(
    ctx: StepContext, *, model: str, model_pixel_size: float, box: int, pixel_size: float,
    targetres: float, goldstandard: bool, seed: int, out_dir: str,
) -> dict:  # fmt: skip
    """Iteration 0: the model on the particles' grid; with gold standard two independent
    random-phase copies beyond ``randomres`` (1.2/1.5/2 x targetres, EMAN2.1 rule)."""
    from emforge.numerics import fsc, phase_randomize
    from emforge.protocols.reconstruct.kernels import fourier_resize

    data = _read_map(model)
    m = data.shape[0]
    scaled = int(round(m * model_pixel_size / pixel_size))
    if scaled != m:
        data = fourier_resize(data, scaled)  # same physical extent at the particles' pixel
    data = _pad_or_crop(data, box)
    out = Path(out_dir)
    randomres = targetres * (1.2 if targetres > 20 else 1.5 if targetres > 12 else 2.0)
    result: dict[str, Any] = {"randomres": randomres}
    if goldstandard:
        maps = {}
        for k, half in enumerate(("even", "odd")):
            rng = np.random.default_rng([seed, 7, k])
            maps[half] = phase_randomize(data, from_resolution=randomres, pixel_size=pixel_size,
                                         rng=rng).astype(np.float32)  # fmt: skip
            _write_map(out / f"threed_{half}.mrc", maps[half], pixel_size)
        _write_map(out / "threed.mrc", 0.5 * (maps["even"] + maps["odd"]), pixel_size)
        s, f = fsc(maps["even"], maps["odd"], pixel_size=pixel_size)
        _save_npz(out / "fsc.npz", s=s, fsc_unmasked=f)
    else:
        for name in ("threed_even", "threed_odd", "threed"):
            _write_map(out / f"{name}.mrc", data, pixel_size)
    return result


def _pad_or_crop(v: np.ndarray, n: int) -> np.ndarray:
    m = v.shape[0]
    if m == n:
        return v.astype(np.float32)
    out = np.zeros((n, n, n), np.float32)
    a, b = (n - m) // 2, (m - n) // 2
    if m < n:
        out[a : a + m, a : a + m, a : a + m] = v
    else:
        out[:] = v[b : b + n, b : b + n, b : b + n]
    return out


# -- one iteration ------------------------------------------------------------------------------
def seed_map(prev_dir: str | Path, half: str) -> Path:
    """The map iteration k projects: iteration k-1's filtered map ``threed_H.mrc`` if present,
    else its raw reconstruction ``threed_H_raw.mrc``. (EMAN2's ``--startiter`` always named the
    filtered file, which exists only with ``--mass``; this is the fix.)"""
    prev = Path(prev_dir)
    name = "threed" if half == "all" else f"threed_{half}"
    filtered = prev / f"{name}.mrc"
    if filtered.exists():
        return filtered
    raw = prev / f"{name}_raw.mrc"
    if raw.exists():
        return raw
    from emforge.errors import InputFileError

    raise InputFileError(filtered, "is missing (neither the filtered nor the raw map exists)")


def project_step(
    ctx: StepContext, *, prev_dir: str, half: str, sym: str, delta: float, inc_mirror: bool,
    perturb: bool, seed: int, iteration: int, pixel_size: float, target: str, source: str = "",
) -> dict:  # fmt: skip
    """e2project3d: projections of the seed map (``source``, or :func:`seed_map`) over the
    asymmetric unit (eman orientgen)."""
    from emforge.numerics import (
        eman_orientations,
        eman_to_euler_zyz,
        euler_zyz_to_matrix,
        project_fourier,
    )

    src = Path(source) if source else seed_map(prev_dir, half)
    vol = _read_map(src)
    eman = eman_orientations(sym, delta, inc_mirror=inc_mirror, perturb=perturb,
                             seed=[seed, 11, iteration]).astype(np.float64)  # fmt: skip
    eulers = eman_to_euler_zyz(eman)
    proj = project_fourier(vol, euler_zyz_to_matrix(eulers))
    _write_stack(target, proj, pixel_size)
    _save_npz(Path(target).with_suffix(".npz"), eulers=eulers)
    ctx.progress(1.0, f"{len(eulers)} projections of {src.name}")
    return {"references": len(eulers), "seed": src.name}


def simmask_step(ctx: StepContext, *, projections: list[str], pixel_size: float, target: str):
    """EMAN2's simmask.hdf: max over all projections, then notzero (a 0/1 support)."""
    top = None
    for p in projections:
        from emforge.io import open_stack

        r = open_stack(p)
        try:
            m = np.asarray(r[np.arange(r.shape[0])], np.float32).max(axis=0)
        finally:
            r.close()
        top = m if top is None else np.maximum(top, m)
    mask = (np.abs(top) > 1e-6 * np.abs(top).max()).astype(np.float32)
    _write_map(target, mask[None], pixel_size)
    return {"support_fraction": float(mask.mean())}


def simmx_step(
    ctx: StepContext, *, particles: str, meta: str, half: str, start: int, stop: int,
    projections: str, mask: str, box: int, pixel_size: float, options: dict, target: str,
) -> dict:  # fmt: skip
    """e2simmx (or e2simmx2stage) for particles [start, stop) of one half."""
    from emforge.protocols.refine import kernels as K

    md = _load_npz(meta)
    rows = md[half][start:stop]
    imgs = read_rows(particles, rows)
    refs = read_rows(projections, np.arange(_count(projections)))
    name, cmp_opts = resolved_cmp(
        options["cmp"], meta=md, rows=rows, box=box, px=pixel_size, images=imgs
    )
    kw: dict[str, Any] = dict(
        align=options["align"]["name"],
        ralign=options["ralign"]["name"] if options["ralign"] else None,
        ralign_options={k: v for k, v in (options["ralign"] or {}).items() if k != "name"} or None,
        cmp=name,
        cmp_options=cmp_opts,
        maxshift=options["align"].get("maxshift"),
        mask=_read_map(mask)[0] if mask else None,
        shrink=max(1, options["shrink"]),
        aligncmp=options["aligncmp"]["name"],
        raligncmp=options["raligncmp"]["name"],
        prefilt=options["prefilt"],
        candidates=options.get("candidates", 0),
    )
    info: dict[str, Any] = {}
    if options["twostage"] > 0:
        kw = accepted(K.similarity_matrix, kw)
        sim, info = K.twostage_similarity(imgs, refs, shrink1=options["twostage"], **kw)
    else:
        sim = K.similarity_matrix(imgs, refs, **accepted(K.similarity_matrix, kw))
    _save_npz(target, angle=sim.angle, dx=sim.dx, dy=sim.dy, mirror=sim.mirror, score=sim.score)
    out = {"particles": int(len(rows)), "references": int(len(refs))}
    if "computed_fraction" in info:
        out["computed_fraction"] = float(info["computed_fraction"])
    return out


def _count(stack: str) -> int:
    from emforge.io import read_info

    return int(read_info(stack).shape[0])


def classify_step(ctx: StepContext, *, simmx: list[str], sep: int, target: str) -> dict:
    """e2classify: each particle's ``sep`` best references, from the chunks in order."""
    from emforge.numerics import Alignment2D
    from emforge.protocols.refine import kernels as K

    parts = [_load_npz(p) for p in simmx]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sim = Alignment2D(cat["angle"], cat["dx"], cat["dy"], cat["mirror"], cat["score"])
    c = K.classify(sim, sep=sep)
    _save_npz(target, reference=c.reference, angle=c.angle, dx=c.dx, dy=c.dy, mirror=c.mirror,
              score=c.score)  # fmt: skip
    counts = np.bincount(c.reference[:, 0], minlength=cat["score"].shape[1])
    return {"particles": int(len(c.reference)), "classes_used": int(np.sum(counts > 0))}


def classavg_step(
    ctx: StepContext, *, particles: str, meta: str, half: str, classify: str, projections: str,
    lo: int, hi: int, box: int, pixel_size: float, options: dict, target: str,
) -> dict:  # fmt: skip
    """e2classaverage for the classes [lo, hi) of one half."""
    from emforge.protocols.refine import kernels as K

    md = _load_npz(meta)
    cls = _load_npz(classify)["reference"]
    inside = (cls >= lo) & (cls < hi)
    members = np.flatnonzero(inside.any(axis=1))
    classes = np.where(inside[members], cls[members], -1).astype(np.int64)
    rows = md[half][members]
    refs = read_rows(projections, np.arange(_count(projections)))
    imgs = read_rows(particles, rows)
    name, cmp_opts = resolved_cmp(
        options["cmp"], meta=md, rows=rows, box=box, px=pixel_size, images=imgs
    )
    if "snr" in cmp_opts:  # the class-averaging comparator takes one ring SNR curve: the mean
        cmp_opts["snr"] = cmp_opts["snr"].mean(axis=0)
    kw = dict(
        ctf=ctf_of(md, rows, box, pixel_size) if bool(md["has_ctf"]) else None,
        niter=options["classiter"],
        keep=options["keep"],
        keepsig=options["keepsig"],
        align=options["align"]["name"],
        aligncmp=options["aligncmp"]["name"],
        aligncmp_options=_plain_cmp(options["aligncmp"], pixel_size),
        ralign=options["ralign"]["name"] if options["ralign"] else None,
        raligncmp=options["raligncmp"]["name"],
        raligncmp_options=_plain_cmp(options["raligncmp"], pixel_size),
        cmp=name,
        cmp_options=cmp_opts,
        averager=options["averager"],
        normproc=options["normproc"],
        automask=options["automask"],
        setsfref=options["refsf"],
        maxshift=options["align"].get("maxshift"),
        pixel_size=pixel_size,
    )
    if not len(members):
        n = box
        res = dict(averages=np.zeros((hi - lo, n, n), np.float32), counts=np.zeros(hi - lo, int),
                   quality=np.full(hi - lo, np.nan))  # fmt: skip
        _save_npz(target, **res, members=members, included=np.zeros((0, 1), bool),
                  angle=np.zeros((0, 1)), dx=np.zeros((0, 1)), dy=np.zeros((0, 1)),
                  mirror=np.zeros((0, 1), bool), score=np.zeros((0, 1)))  # fmt: skip
        return {"classes": hi - lo, "members": 0}
    ca = K.class_averages(imgs, classes, refs, **accepted(K.class_averages, kw))
    al = ca.alignment
    _save_npz(
        target, averages=ca.averages[lo:hi], counts=ca.counts[lo:hi], quality=ca.quality[lo:hi],
        members=members, included=ca.included, angle=al.angle, dx=al.dx, dy=al.dy,
        mirror=al.mirror, score=al.score,
    )  # fmt: skip
    return {"classes": hi - lo, "members": int(len(members)), "used": int(ca.counts[lo:hi].sum())}


def _plain_cmp(cmp: dict, px: float) -> dict[str, Any]:
    """Options of an aligner's comparator (no per-particle SNR weights)."""
    return resolved_cmp(cmp, meta=None, rows=None, box=0, px=px, images=None)[1]


def gather_classes(files: list[str]) -> dict[str, np.ndarray]:
    """The class-average chunks of one half joined in class order."""
    parts = [_load_npz(f) for f in files]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("averages", "counts", "quality")}


def make3d_step(
    ctx: StepContext, *, classavg: list[str], projections: str, itermask: str, box: int,
    pixel_size: float, sym: str, options: dict, target: str,
) -> dict:  # fmt: skip
    """e2make3dpar from the class averages of one half (weights = member counts)."""
    from emforge.numerics import lowpass
    from emforge.protocols.refine import kernels as K

    g = gather_classes(classavg)
    avg = g["averages"].astype(np.float32)
    if options["preprocess"] == "edgemean":
        avg = avg - _edge_mean(avg)[:, None, None]
    eulers = _load_npz(Path(projections).with_suffix(".npz"))["eulers"]
    kw = dict(
        quality=g["quality"],
        keep=options["keep"],
        keepsig=options["keepsig"],
        pad=options["pad"] or None,
        symmetry=sym,
        iterations=options["iter"],
        mask=_read_map(itermask) if itermask else None,
        pixel_size=pixel_size,
    )
    rec = K.make3d(avg, eulers, g["counts"].astype(np.float64), **accepted(K.make3d, kw))
    vol = rec.volume
    post = options["postprocess"]
    if post:
        vol = lowpass(vol, post["resolution"], pixel_size=pixel_size)
    _write_map(target, vol, pixel_size)
    return {"classes_used": int(np.sum(rec.used)), "particles": int(g["counts"].sum())}


def _edge_mean(images: np.ndarray) -> np.ndarray:
    e = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], 1)
    return e.mean(axis=1)


def normalize_by_mass(volume: np.ndarray, *, mass_kda: float, pixel_size: float) -> np.ndarray:
    """EMAN2 ``normalize.bymass``: scale so the threshold enclosing ``mass`` (1.21 Å³/Da,
    protein density) is 1."""
    nvox = int(round(mass_kda * 1000 * 1.21 / pixel_size**3))
    flat = np.sort(volume.ravel())[::-1]
    t = flat[min(max(nvox, 1), flat.size) - 1]
    return volume / t if t > 0 else volume


def postprocess_step(
    ctx: StepContext, *, even: str, odd: str, prev_dir: str, out_dir: str, pixel_size: float,
    targetres: float, automask: dict | None, mass: float, sym: str, goldstandard: bool,
) -> dict:  # fmt: skip
    """e2refine_postprocess: FSCs, Wiener filter, mask; filtered halves seed the next iteration;
    convergence = FSC of each half with the previous iteration's."""
    from emforge.numerics import fsc
    from emforge.protocols.refine import kernels as K

    e, o = _read_map(even), _read_map(odd)
    kw = dict(pixel_size=pixel_size, target_resolution=targetres, automask=automask,
              symmetry=sym)  # fmt: skip
    gs = K.gold_standard_postprocess(e, o, **accepted(K.gold_standard_postprocess, kw))
    maps = {"even": gs.even, "odd": gs.odd, "": gs.combined}
    if mass > 0:
        maps = {k: normalize_by_mass(v, mass_kda=mass, pixel_size=pixel_size)
                for k, v in maps.items()}  # fmt: skip
    out = Path(out_dir)
    for k, v in maps.items():
        _write_map(out / (f"threed_{k}.mrc" if k else "threed.mrc"), v, pixel_size)
    _write_map(out / "mask.mrc", gs.mask, pixel_size)
    conv = {}
    prev = Path(prev_dir)
    for h in ("even", "odd"):
        p = prev / f"threed_{h}.mrc"
        if p.exists():
            conv[f"converge_{h}"] = fsc(maps[h], _read_map(p), pixel_size=pixel_size)[1]
    _save_npz(out / "fsc.npz", s=gs.s, fsc_unmasked=gs.fsc_unmasked, fsc_masked=gs.fsc_masked,
              **conv)  # fmt: skip
    res = {"resolution": float(gs.resolution), "resolution_unmasked": float(gs.resolution_unmasked)}
    if goldstandard and res["resolution"] > 0.9 * _randomres(targetres):
        ctx.warn(
            f"gold-standard resolution {res['resolution']:.3g} Å is not better than 0.9 x the "
            f"random-phase limit ({_randomres(targetres):.3g} Å): the refinement did not improve "
            "the start"
        )
    return res


def _randomres(t: float) -> float:
    return t * (1.2 if t > 20 else 1.5 if t > 12 else 2.0)
