"""subtomo.export_info: write coordinates as EMAN2 ``info/<tomogram>_info.json`` files, one per
tomogram, in EMAN2's writer layout; optionally appending to files already there (template
matching appends its ``tm`` boxes this way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emforge.engine import Input, Protocol, ProtocolParams, Step, StepContext, param
from emforge.errors import ParamError


def export_info_step(
    ctx: StepContext,
    *,
    cols: dict[str, np.ndarray],
    attrs: dict,
    folder: str,
    append: bool,
    apix_unbin: float | None,
    shape_zyx: list[int] | None,
) -> dict:
    from emforge.io.eman2_info import columns_to_info, dumps_info, info_name, read_info

    out = Path(folder) / "info"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tomos = cols["tomogram"].astype(str)
    for t in sorted(set(tomos.tolist())):
        sel = tomos == t
        target = out / info_name(t)
        base = read_info(target) if target.exists() else None
        info = columns_to_info(
            {k: v[sel] for k, v in cols.items()},
            attrs,
            base=base,
            append=append,
            apix_unbin=apix_unbin,
            shape_zyx=shape_zyx,
        )
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(dumps_info(info), encoding="utf-8")
        tmp.replace(target)
        written.append(str(target))
    return {"files": written}


class ExportInfo(Protocol):
    id = "subtomo.export_info"
    version = "1"
    label = "Export EMAN2 info json"
    help = (
        "Write 3D coordinates as EMAN2 info/<tomogram>_info.json (boxes_3d, class_list; "
        "unbinned pixels from the centre when apix_unbin is known), replacing or appending boxes."
    )

    class Params(ProtocolParams):
        folder: str = param(
            "", "Folder of the EMAN2 project; files go to <folder>/info/", section="Output"
        )
        append: bool = param(
            False, "Keep the boxes already in the files and add these", section="Output"
        )
        apix_unbin: float | None = param(
            None,
            "Unbinned tilt-series pixel size; absent: from the file or the imported set",
            unit="Å",
            section="Output",
            gt=0,
        )
        shape: list[int] = param(
            [],
            "Tomogram size x y z in voxels (needed for voxel-frame coordinates with apix_unbin)",
            unit="px",
            section="Output",
        )

    inputs = {"coordinates": Input(("SetOfCoordinates3D",), "the coordinates to write")}
    outputs: dict = {}

    def validate(self) -> list[str]:
        p, problems = self.params, []
        if not p.folder:
            problems.append(str(ParamError("folder", "give the EMAN2 project folder")))
        if p.shape and (len(p.shape) != 3 or min(p.shape) < 1):
            problems.append(str(ParamError("shape", "three positive sizes x y z")))
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        src = self.input["coordinates"]
        return [
            Step(
                "export",
                export_info_step,
                args=dict(
                    cols=src.read(),
                    attrs=dict(src.attrs),
                    folder=str(Path(p.folder).resolve()),
                    append=p.append,
                    apix_unbin=p.apix_unbin,
                    shape_zyx=list(reversed(p.shape)) if p.shape else None,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        return f"wrote {len(results.get('export', {}).get('files', []))} info file(s)"
