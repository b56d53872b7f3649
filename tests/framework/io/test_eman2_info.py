"""EMAN2 info json: the refs example (EMAN2's writer layout, Part II §3.2 of the EMAN2 facts)
imports and exports byte for byte; coordinates survive binning changes without moving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emforge.coords3d import rebin
from emforge.errors import InputFileError
from emforge.io.eman2_info import columns_to_info, dumps_info, info_name, info_to_columns

EXAMPLE = """{
"ali_loss": [0.52,0.49],
"apix_unbin": 1.705,
"boxes_3d": [[-412.3,118.0,-35.2,"manual",0.0,0],
[230.0,-51.5,12.0,"tm",0.87,1,2211]
],
"class_list": {
"0": {
"boxsize": 96,
"name": "ribosome"
},
"1": {
"boxsize": 96,
"name": "tm_ribo"
}
},
"cs": 2.7,
"defocus": [3.91,3.88],
"phase": [0.0,0.0],
"tlt_file": "tiltseries/tomo01.hdf",
"tlt_params": [[1.2,-3.4,-86.1,-60.0,0.3],
[0.8,-2.9,-86.1,-57.0,0.3]
],
"voltage": 300
}"""


def test_writer_layout_matches_eman2_example() -> None:
    assert dumps_info(json.loads(EXAMPLE)) == EXAMPLE


def test_import_export_is_byte_identical() -> None:
    cols, attrs = info_to_columns(json.loads(EXAMPLE), "x.json", tomogram="tomo01")
    assert cols["tag"].tolist() == ["ribosome", "tm_ribo"]
    assert cols["method"].tolist() == ["manual", "tm"]
    assert cols["x"].tolist() == [-412.3, 230.0] and attrs["frame"] == "centred"
    assert cols["pixel_size"].tolist() == [1.705, 1.705]
    assert cols["boxsize"].tolist() == [96, 96] and cols["peak_volume"].tolist() == [-1, 2211]
    assert dumps_info(columns_to_info(cols, attrs)).encode() == EXAMPLE.encode()


def test_voxel_frame_at_bin4_and_back_keeps_floats() -> None:
    # the tomogram at bin 4: 1.705 × 4 = 6.82 Å, 250 × 250 × 100 voxels (x, y, z)
    shape4, ps4 = (100, 250, 250), 6.82
    cols, attrs = info_to_columns(
        json.loads(EXAMPLE), "x.json", tomogram="tomo01", shape_zyx=shape4, pixel_size=ps4
    )
    # -412.3 unbinned px from the centre = -103.075 bin-4 voxels from voxel 125
    assert cols["x"][0] == pytest.approx(125 - 103.075, abs=1e-9)
    assert cols["x"][0] != round(cols["x"][0])
    # to bin 2 and back to bin 4, then export: the boxes are unchanged to 1e-9 px
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
    shape2 = (200, 500, 500)
    back = rebin(rebin(xyz, shape4, ps4, shape2, 3.41), shape2, 3.41, shape4, ps4)
    cols.update(x=back[:, 0], y=back[:, 1], z=back[:, 2])
    out = columns_to_info(cols, attrs, shape_zyx=shape4)
    want = json.loads(EXAMPLE)["boxes_3d"]
    got = np.array([g[:3] for g in out["boxes_3d"]])
    dev = np.max(np.abs(got - np.array([w[:3] for w in want])))
    print(f"round-trip bin4 -> bin2 -> bin4 -> export: max deviation {dev:.3g} unbinned px")
    assert dev < 1e-9
    assert [g[3:] for g in out["boxes_3d"]] == [w[3:] for w in want]


def test_append_adds_tm_boxes_with_a_new_class() -> None:
    base = json.loads(EXAMPLE)
    n = 2
    cols = {
        "x": np.array([1.0, 2.0]),
        "y": np.zeros(n),
        "z": np.zeros(n),
        "pixel_size": np.full(n, 1.705),
        "tag": np.array(["tm_ribo", "tm_new"], dtype=object),
        "method": np.array(["tm", "tm"], dtype=object),
        "score": np.array([1.0, 0.5]),
        "boxsize": np.array([96, 48]),
    }
    out = columns_to_info(cols, {"frame": "centred"}, base=base, append=True)
    assert len(out["boxes_3d"]) == 4 and out["boxes_3d"][:2] == base["boxes_3d"]
    assert [b[5] for b in out["boxes_3d"][2:]] == [1, 2]
    assert out["class_list"]["2"] == {"boxsize": 48, "name": "tm_new"}
    assert out["tlt_params"] == base["tlt_params"]


def test_old_files_and_bad_boxes() -> None:
    old = {"boxes_3d": [[10, 20, 30], [1, 2, 3, "manual", 0.0, 3]], "class_list": {"0": "ribo"}}
    cols, attrs = info_to_columns(old, "o.json", tomogram="t")
    assert cols["tag"].tolist() == ["ribo", "particles_03"]
    assert cols["boxsize"].tolist() == [64, 64] and attrs["frame"] == "voxel"
    assert cols["x"].tolist() == [10.0, 1.0]
    with pytest.raises(InputFileError, match=r"boxes_3d\[0\]"):
        info_to_columns({"boxes_3d": [[1, "a", 3]]}, "b.json", tomogram="t")
    with pytest.raises(InputFileError, match="boxes_3d"):
        info_to_columns({"apix_unbin": 1.0}, "c.json", tomogram="t")


def test_info_name() -> None:
    assert info_name("tomograms/tomo01__bin4.hdf") == "tomo01_info.json"
    assert info_name("tomo01") == "tomo01_info.json"
