"""One protocol per EMAN2 program of the refinement chain, for users who run one piece:
refine.project (e2project3d), refine.simmx (e2simmx), refine.classify (e2classify),
refine.classaverage (e2classaverage) and refine.make3d (e2make3dpar).

They run the same step functions as refine.projection_matching on one ``all`` half. The
similarity matrix and the classification are files in the run folder; the output particle
rows point at them (extra columns ``simmx_file``/``simmx_row``, ``classmx_file``/
``classmx_row``), so refine.classify and refine.classaverage can continue from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emforge.engine import Input, Output, Protocol, Step, StepContext, param

from . import _steps as S
from ._loop import chunks, classavg_options, make3d_options, simmx_options
from ._params import ClassAverageParams, ClassifyParams, Make3DParams, ProjectParams, SimmxParams
from ._protocols import common_problems, particle_problems

__all__ = ["Project", "Simmx", "Classify", "ClassAverage", "Make3D"]

_EULER = ("rot", "tilt", "psi")


def _dir(proto: Protocol) -> Path:
    return Path(proto.workdir or "<run>") / "extra"


def _image_args(parts: Any) -> dict[str, Any]:
    cols = parts.read("image_path", "image_index")
    return {"sources": cols["image_path"].tolist(), "indices": cols["image_index"]}


def _eulers(parts: Any) -> np.ndarray:
    c = parts.read(*_EULER)
    return np.stack([c[k] for k in _EULER], axis=1)


def _prepare(proto: Protocol, info: dict, *, references: Any = None) -> Step:
    from emforge.protocols.reconstruct._common import CTF_COLUMNS

    parts = proto.input["particles"]
    ctf = None
    if info["has_ctf"]:
        cols = parts.read(*CTF_COLUMNS)
        ctf = {c: np.nan_to_num(np.asarray(cols[c], np.float64)) for c in CTF_COLUMNS}
    ex = _dir(proto)
    refs = None
    if references is not None:
        refs = {**_image_args(references), "eulers": _eulers(references)}
    return Step("prepare", prepare_stage_step, args=dict(
        **_image_args(parts), ctf_columns=ctf, box=info["box"], pixel_size=info["pixel_size"],
        target=str(ex / "prep" / "particles.mrcs"), meta=str(ex / "prep" / "meta.npz"),
        references=refs, ref_target=str(ex / "prep" / "references.mrcs"),
    ))  # fmt: skip


def prepare_stage_step(ctx: StepContext, *, references: dict | None, ref_target: str, **kw):
    out = S.prepare_step(ctx, **kw)
    if references is not None:
        from emforge.protocols.reconstruct._common import read_images

        box = kw["box"]
        imgs = read_images(references["sources"], references["indices"], (box, box))
        S._write_stack(ref_target, imgs, kw["pixel_size"])
        S._save_npz(Path(ref_target).with_suffix(".npz"), eulers=references["eulers"])
    return out


def _pose_columns(eulers_ref, sim: dict, best: np.ndarray, px: float) -> dict[str, np.ndarray]:
    from emforge.protocols.refine import kernels as K

    rows = np.arange(len(best))
    pick = [sim[k][rows, 0] if sim[k].ndim == 2 and sim[k].shape[1] != 0 else sim[k]
            for k in ("angle", "dx", "dy", "mirror")]  # fmt: skip
    eul, sh = K.poses_from_alignment(eulers_ref[best], *pick)
    return {"rot": eul[:, 0], "tilt": eul[:, 1], "psi": eul[:, 2], "shift_x": sh[:, 0] * px,
            "shift_y": sh[:, 1] * px, "class_id": (best + 1).astype(np.int64)}  # fmt: skip


# -- refine.project ---------------------------------------------------------------------
class Project(Protocol):
    id = "refine.project"
    version = "1"
    label = "Reference projections over the asymmetric unit (e2project3d)"
    help = ("Projections of a map over the asymmetric unit of `sym` with EMAN2's eman "
            "orientation generator (angular step delta, optional perturbation).")  # fmt: skip
    Params = ProjectParams
    inputs = {"volume": Input(("Volume",), "the map to project")}
    outputs = {"projections": Output("SetOfParticles", "projections with their angles")}

    def validate(self) -> list[str]:
        v = self.input["volume"]
        out = common_problems(self.params, {}, n_refs=None)
        if len(set(v.shape)) != 1 or v.shape[0] % 2:
            out.append(f"input 'volume': must be a cubic map with an even side, got {v.shape}")
        return out

    def steps(self) -> list[Step]:
        p, v = self.params, self.input["volume"]
        return [Step("project", project_stage_step, outputs=["projections"], args=dict(
            path=v.path, sym=p.sym, delta=p.delta, inc_mirror=p.inc_mirror, perturb=p.perturb,
            seed=p.seed, pixel_size=v.pixel_size, box=v.shape[0],
        ))]  # fmt: skip


def project_stage_step(ctx: StepContext, *, path: str, pixel_size: float, box: int, **kw):
    target = str(ctx.path("projections.mrcs"))
    r = S.project_step(ctx, prev_dir=str(Path(path).parent), half="all", iteration=0,
                       pixel_size=pixel_size, target=target, source=path, **kw)  # fmt: skip
    eul = S._load_npz(Path(target).with_suffix(".npz"))["eulers"]
    n = len(eul)
    ctx.output_set("projections", "SetOfParticles", {
        "image_path": np.full(n, target, dtype=object), "image_index": np.arange(n),
        "pixel_size": np.full(n, pixel_size), "rot": eul[:, 0], "tilt": eul[:, 1],
        "psi": eul[:, 2], "class_id": np.arange(1, n + 1),
    }, attrs={"box": [box, box], "pixel_size": pixel_size, "symmetry": kw["sym"]})  # fmt: skip
    return r


# -- refine.simmx -----------------------------------------------------------------------
class _TwoInputs(Protocol):
    inputs = {
        "particles": Input(("SetOfParticles",), "particles (CTF from the rows, if any)"),
        "references": Input(
            ("SetOfParticles",), "reference projections with their angles (refine.project)"
        ),  # fmt: skip
    }

    def _info(self) -> tuple[list[str], dict]:
        problems, info = particle_problems(self.input["particles"])
        if info:
            from emforge.protocols.reconstruct._common import set_box

            rb = set_box(self.input["references"])
            if rb[1] != info["box"]:
                problems.append(f"input 'references': box {rb[1]} px differs from the "
                                f"particles' {info['box']} px")  # fmt: skip
        return problems, info

    def validate(self) -> list[str]:
        problems, info = self._info()
        if info:
            problems += common_problems(self.params, info, n_refs=len(self.input["references"]))
        return problems


class Simmx(_TwoInputs):
    id = "refine.simmx"
    version = "1"
    label = "Similarity matrix of particles against references (e2simmx)"
    help = ("Align every particle to every reference and score the pair (e2simmx, or "
            "e2simmx2stage with twostage). Output rows: the best reference's pose, class and "
            "score; the matrix is extra/simmx.npz.")  # fmt: skip
    Params = SimmxParams
    outputs = {"particles": Output("SetOfParticles", "input rows with the best reference")}

    def steps(self) -> list[Step]:
        p, (_, info) = self.params, self._info()
        ex, n = _dir(self), len(self.input["particles"])
        steps, sims = [_prepare(self, info, references=self.input["references"])], []
        refs = str(ex / "prep" / "references.mrcs")
        for c, (a, b) in enumerate(chunks(n, p.chunk), 1):
            sims.append(str(ex / f"simmx_all_{c:03d}.npz"))
            steps.append(Step(f"simmx_{c:03d}", S.simmx_step, deps=["prepare"], args=dict(
                particles=str(ex / "prep" / "particles.mrcs"), meta=str(ex / "prep" / "meta.npz"),
                half="all", start=a, stop=b, projections=refs, mask="", box=info["box"],
                pixel_size=info["pixel_size"], options=simmx_options(p), target=sims[-1])))  # fmt: skip
        steps.append(Step("gather", simmx_gather_step, deps=[s.name for s in steps[1:]],
                          outputs=["particles"], args=dict(
                              files=sims, refs=refs, pixel_size=info["pixel_size"],
                              source_id=int(self.input_ids.get("particles") or 0))))  # fmt: skip
        return steps


def simmx_gather_step(ctx, *, files, refs, pixel_size, source_id):
    parts = [S._load_npz(f) for f in files]
    sim = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    target = ctx.path("simmx.npz")
    S._save_npz(target, **sim)
    best = np.argmin(sim["score"], axis=1)
    r = np.arange(len(best))
    one = {k: sim[k][r, best][:, None] for k in ("angle", "dx", "dy", "mirror")}
    cols = _pose_columns(S._load_npz(Path(refs).with_suffix(".npz"))["eulers"], one, best,
                         pixel_size)  # fmt: skip
    cols.update(score=sim["score"][r, best].astype(np.float64),
                simmx_file=np.full(len(best), str(target), dtype=object), simmx_row=r)  # fmt: skip
    ctx.output_set_copy("particles", source_id, cols)
    return {"particles": int(len(best)), "references": int(sim["score"].shape[1])}


# -- refine.classify --------------------------------------------------------------------
class Classify(_TwoInputs):
    id = "refine.classify"
    version = "1"
    label = "Classify particles from their similarity matrix (e2classify)"
    help = ("Each particle goes to its `sep` best references (the rows of refine.simmx's "
            "matrix). Output rows: best class, its pose and score; the classification is "
            "extra/classify.npz.")  # fmt: skip
    Params = ClassifyParams
    inputs = {
        "particles": Input(("SetOfParticles",), "output particles of refine.simmx"),
        "references": Input(("SetOfParticles",), "the references of that similarity matrix"),
    }
    outputs = {"particles": Output("SetOfParticles", "input rows with their class")}

    def validate(self) -> list[str]:
        parts = self.input["particles"]
        if not {"simmx_file", "simmx_row"} <= set(parts.column_names()):
            return ["input 'particles': has no similarity matrix (give refine.simmx's output)"]
        return common_problems(self.params, {}, n_refs=len(self.input["references"]))

    def steps(self) -> list[Step]:
        c = self.input["particles"].read("simmx_file", "simmx_row")
        ref = self.input["references"]
        ex = _dir(self)
        return [Step("classify", classify_stage_step, outputs=["particles"], args=dict(
            files=c["simmx_file"].tolist(), rows=c["simmx_row"], sep=self.params.sep,
            eulers=_eulers(ref), pixel_size=float(np.median(ref.read("pixel_size")["pixel_size"])),
            target=str(ex / "classify.npz"), source_id=int(self.input_ids.get("particles") or 0),
        ))]  # fmt: skip


def classify_stage_step(ctx, *, files, rows, sep, eulers, pixel_size, target, source_id):
    from emforge.numerics import Alignment2D
    from emforge.protocols.refine import kernels as K

    mats = {f: S._load_npz(f) for f in dict.fromkeys(files)}
    src = np.asarray(files, dtype=object)
    sim = {k: np.stack([mats[f][k][r] for f, r in zip(src, rows, strict=True)])
           for k in ("angle", "dx", "dy", "mirror", "score")}  # fmt: skip
    c = K.classify(Alignment2D(sim["angle"], sim["dx"], sim["dy"], sim["mirror"], sim["score"]),
                   sep=sep)  # fmt: skip
    S._save_npz(target, reference=c.reference, angle=c.angle, dx=c.dx, dy=c.dy, mirror=c.mirror,
                score=c.score)  # fmt: skip
    best = c.reference[:, 0]
    cols = _pose_columns(eulers, {"angle": c.angle, "dx": c.dx, "dy": c.dy, "mirror": c.mirror},
                         best, pixel_size)  # fmt: skip
    n = len(best)
    cols.update(score=c.score[:, 0].astype(np.float64), classmx_row=np.arange(n),
                classmx_file=np.full(n, str(target), dtype=object))  # fmt: skip
    ctx.output_set_copy("particles", source_id, cols)
    return {"particles": n, "classes_used": int(len(np.unique(best)))}


# -- refine.classaverage ---------------------------------------------------------------
class ClassAverage(_TwoInputs):
    id = "refine.classaverage"
    version = "1"
    label = "Iterative class averages (e2classaverage)"
    help = ("Average the particles of each class after aligning them to its reference and "
            "then to the average (classiter passes, keeping the best classkeep). Classes come "
            "from the rows' class_id (1-based), or all sep classes of refine.classify's output.")  # fmt: skip
    Params = ClassAverageParams
    inputs = {
        "particles": Input(("SetOfParticles",), "classified particles (class_id >= 1)"),
        "references": Input(("SetOfParticles",), "the references the classes refer to"),
    }
    outputs = {"classes": Output("SetOfParticles", "class averages with their references' "
                                 "angles, member counts (count) and quality")}  # fmt: skip

    def validate(self) -> list[str]:
        out = super().validate()
        if not out:
            cid = self.input["particles"].read("class_id")["class_id"]
            if np.any(cid > len(self.input["references"])):
                out.append("input 'particles': class_id beyond the number of references")
            if not np.any(cid >= 1):
                out.append("input 'particles': no particle has a class (class_id >= 1)")
        return out

    def steps(self) -> list[Step]:
        p, (_, info) = self.params, self._info()
        parts, refs = self.input["particles"], self.input["references"]
        ex, m = _dir(self), len(refs)
        names = parts.column_names()
        files, rows = None, None
        if {"classmx_file", "classmx_row"} <= set(names):
            c = parts.read("classmx_file", "classmx_row")
            files, rows = c["classmx_file"].tolist(), c["classmx_row"]
        cls = str(ex / "classify_all.npz")
        steps = [_prepare(self, info, references=refs),
                 Step("classes", classes_stage_step, args=dict(
                     class_id=parts.read("class_id")["class_id"], files=files, rows=rows,
                     target=cls))]  # fmt: skip
        avgs = []
        for c, (lo, hi) in enumerate(chunks(m, p.classes_per_step), 1):
            avgs.append(str(ex / f"classavg_all_{c:03d}.npz"))
            steps.append(Step(f"classavg_{c:03d}", S.classavg_step, deps=["prepare", "classes"],
                              args=dict(particles=str(ex / "prep" / "particles.mrcs"),
                                        meta=str(ex / "prep" / "meta.npz"), half="all",
                                        classify=cls, projections=str(ex / "prep" / "references.mrcs"),
                                        lo=lo, hi=hi, box=info["box"], pixel_size=info["pixel_size"],
                                        options=classavg_options(p), target=avgs[-1])))  # fmt: skip
        steps.append(Step("gather", classes_gather_step, outputs=["classes"],
                          deps=[s.name for s in steps[2:]],
                          args=dict(files=avgs, refs=str(ex / "prep" / "references.mrcs"),
                                    box=info["box"], pixel_size=info["pixel_size"])))  # fmt: skip
        return steps


def classes_stage_step(ctx, *, class_id, files, rows, target):
    if files is not None:
        mats = {f: S._load_npz(f)["reference"] for f in dict.fromkeys(files)}
        ref = np.stack([mats[f][r] for f, r in zip(files, rows, strict=True)])
    else:
        ref = (np.asarray(class_id, np.int64) - 1)[:, None]
    S._save_npz(target, reference=ref.astype(np.int64))
    return {"particles": int(len(ref)), "sep": int(ref.shape[1])}


def classes_gather_step(ctx, *, files, refs, box, pixel_size):
    g = S.gather_classes(files)
    used = np.flatnonzero(g["counts"] > 0)
    eul = S._load_npz(Path(refs).with_suffix(".npz"))["eulers"]
    path = ctx.path("classes.mrcs")
    S._write_stack(path, g["averages"][used], pixel_size)
    k = len(used)
    ctx.output_set("classes", "SetOfParticles", {
        "image_path": np.full(k, str(path), dtype=object), "image_index": np.arange(k),
        "pixel_size": np.full(k, pixel_size), "rot": eul[used, 0], "tilt": eul[used, 1],
        "psi": eul[used, 2], "class_id": used + 1, "count": g["counts"][used].astype(np.int64),
        "quality": g["quality"][used].astype(np.float64),
    }, attrs={"box": [box, box], "pixel_size": pixel_size})  # fmt: skip
    return {"classes": k, "particles": int(g["counts"].sum())}


# -- refine.make3d ----------------------------------------------------------------------
class _Make3DParams(Make3DParams):
    sym: str = param("c1", "Point group (EMAN2 axes) applied during insertion",
                     section="Reconstruction")  # fmt: skip


class Make3D(Protocol):
    id = "refine.make3d"
    version = "1"
    label = "Reconstruct a map from class averages (e2make3dpar)"
    help = ("Direct Fourier reconstruction of class averages at their projection directions, "
            "weighted by their member counts (column count; 1 when absent), keeping the best "
            "m3dkeep by quality, with m3diter passes.")  # fmt: skip
    Params = _Make3DParams
    inputs = {"classes": Input(("SetOfParticles",), "class averages with angles "
                               "(refine.classaverage)")}  # fmt: skip
    outputs = {"volume": Output("Volume", "the reconstruction")}

    def validate(self) -> list[str]:
        problems, info = particle_problems(self.input["classes"])
        return [ln.replace("'particles'", "'classes'") for ln in problems] + common_problems(
            self.params, info, n_refs=None
        )

    def steps(self) -> list[Step]:
        c, p = self.input["classes"], self.params
        _, info = particle_problems(c)
        names = set(c.column_names())
        weights = c.read("count")["count"] if "count" in names else np.ones(len(c))
        quality = c.read("quality")["quality"] if "quality" in names else np.zeros(len(c))
        return [Step("make3d", make3d_stage_step, outputs=["volume"], args=dict(
            **_image_args(c), eulers=_eulers(c), weights=np.asarray(weights, np.float64),
            quality=np.asarray(quality, np.float64), box=info["box"],
            pixel_size=info["pixel_size"], sym=p.sym, options=make3d_options(p),
        ))]  # fmt: skip


def make3d_stage_step(ctx, *, sources, indices, eulers, weights, quality, box, pixel_size, sym,
                      options):  # fmt: skip
    from emforge.objects import Volume
    from emforge.protocols.reconstruct._common import read_images

    imgs = read_images(sources, indices, (box, box))
    tmp = ctx.extra / "classes_in.npz"
    S._save_npz(tmp, averages=imgs, counts=weights, quality=quality)
    ref = ctx.extra / "angles.npz"
    S._save_npz(ref, eulers=eulers)
    target = ctx.path("volume.mrc")
    r = S.make3d_step(ctx, classavg=[str(tmp)], projections=str(ref.with_suffix(".mrcs")),
                      itermask="", box=box, pixel_size=pixel_size, sym=sym, options=options,
                      target=str(target))  # fmt: skip
    ctx.output("volume", Volume(str(target), pixel_size, (box, box, box)))
    return r
