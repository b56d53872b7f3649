"""subtomo.buildsets: one set per tag (EMAN2 e2spt_buildsets), with an optional spatial
even/odd split and EMAN2 ``.lst`` files for subtomogram sets."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from emforge.engine import Input, Output, Protocol, ProtocolParams, Step, StepContext, param

from .kernels.sets import spatial_halves


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", tag) or "untagged"


def write_lst(path: str, files: list[str], indices: list[int]) -> None:
    """An EMAN2 LSX file: ``#LSX``, a comment, ``# <L>``, then fixed-length records."""
    recs = [f"{i}\t{f}" for i, f in zip(indices, files, strict=True)]
    width = max((len(r) for r in recs), default=0) + 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("#LSX\n# written by emforge subtomo.buildsets\n")
        fh.write(f"# {width + 1}\n")  # record length including the newline
        for r in recs:
            fh.write(r.ljust(width) + "\n")


def buildsets_step(
    ctx: StepContext,
    *,
    cols: dict[str, np.ndarray],
    attrs: dict,
    kind: str,
    tags: list[str],
    spliteo: bool,
    seed: int,
) -> dict:
    tag = cols["tag"].astype(str)
    chosen = tags or sorted(set(tag.tolist()))
    counts = {}
    for t in chosen:
        sel = tag == t
        if not sel.any():
            continue
        sub = {k: v[sel] for k, v in cols.items() if k != "id"}
        if spliteo:
            x = sub["coord_x"] if kind == "SetOfSubTomograms" else sub["x"]
            sub["subset"] = spatial_halves(x, sub["tomogram"], seed)
        name = _safe(t)
        ctx.output_set(name, kind, sub, attrs={**attrs, "tag": t}, label=t)
        if kind == "SetOfSubTomograms":
            write_lst(
                str(ctx.path(f"{name}.lst")),
                sub["image_path"].tolist(),
                sub["image_index"].tolist(),
            )
        counts[t] = int(sel.sum())
    return {"counts": counts}


class BuildSets(Protocol):
    id = "subtomo.buildsets"
    version = "1"
    label = "Build sets by tag"
    help = (
        "Split coordinates or subtomograms into one set per tag (or the chosen tags), each an "
        "output named after its tag; optional spatial even/odd split as e2spt_buildsets "
        "--spliteo (subset 1 where x < the tomogram's median x, else 2)."
    )

    class Params(ProtocolParams):
        tags: list[str] = param(
            [], "Tags to keep; empty: every tag gets its own set", section="Sets"
        )
        spliteo: bool = param(False, "Spatial even/odd split into subset 1/2", section="Sets")
        seed: int = param(0, "Seed of the median jitter of the split", section="Sets")

    inputs = {
        "particles": Input(
            ("SetOfCoordinates3D", "SetOfSubTomograms"), "tagged coordinates or subtomograms"
        )
    }
    outputs: dict[str, Output] = {}

    def validate(self) -> list[str]:
        src = self.input["particles"]
        have = set(src.read("tag")["tag"].astype(str).tolist())
        missing = [t for t in self.params.tags if t not in have]
        return [f"tags: {t!r} is not a tag of the input (tags: {sorted(have)})" for t in missing]

    def steps(self) -> list[Step]:
        p = self.params
        return [
            Step(
                "buildsets",
                buildsets_step,
                args=dict(
                    cols=self.input["particles"].read(),
                    attrs=dict(self.input["particles"].attrs),
                    kind=self.input["particles"].kind,
                    tags=list(p.tags),
                    spliteo=p.spliteo,
                    seed=p.seed,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        c = results.get("buildsets", {}).get("counts", {})
        return ", ".join(f"{k}: {v}" for k, v in c.items()) or "no sets"
