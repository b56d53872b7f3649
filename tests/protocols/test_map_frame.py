"""Maps keep their place: import, every map-writing protocol family, export and model fitting.

Two real maps. EMD-1832 (64³, 5.7 Å/px) carries its frame as deposited in NXSTART/NYSTART/
NZSTART = -32 (voxel (0, 0, 0) at -182.4 Å) with ORIGIN = 0. EMD-3488 (100³, 1.05 Å/px, frame 0,
model 5ME2 fits it) is moved here by NSTART = -50 voxels (-52.5 Å) together with 5ME2 (every
atom shifted by -52.5 Å), and written in three variants: the frame in ORIGIN, in NSTART, and
none. Ground truth: the frame is -52.5 Å on every axis for the first two, 0 for the third,
and the shifted model fits the first two only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

from emforge.engine.listing import export_object  # noqa: E402
from emforge.engine.runs import create_run, run_row  # noqa: E402
from emforge.errors import ValidationError  # noqa: E402
from emforge.io import read_info, read_volume  # noqa: E402
from emforge.project import Project  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EMD1832 = DATA / "maps" / "emd_1832.map"
EMD3488 = DATA / "maps" / "emd_3488.mrc"
MODEL = DATA / "models" / "5me2.pdb"
EMFORGE = Path(sys.executable).with_name("emforge")
FRAME_1832 = -32 * 5.7  # Å on every axis, as deposited (NSTART)
PX, NSTART = 1.05, -50
FRAME = NSTART * PX  # Å on every axis: where EMD-3488 is moved here


def _need(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            pytest.skip(f"real test data not found: {path}")


def _header(path) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(ORIGIN x, y, z) and (NXSTART, NYSTART, NZSTART), straight from mrcfile."""
    with mrcfile.open(path, header_only=True, permissive=True) as mrc:
        h = mrc.header
        return (
            (float(h.origin.x), float(h.origin.y), float(h.origin.z)),
            (int(h.nxstart), int(h.nystart), int(h.nzstart)),
        )


def _write(path: Path, data: np.ndarray, variant: str, px: float, nstart: int) -> Path:
    """``data`` at ``px`` Å with the frame ``nstart`` × ``px`` in ORIGIN, in NSTART, or none."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        mrc.voxel_size = px
        if variant == "origin":
            mrc.header.origin.x = mrc.header.origin.y = mrc.header.origin.z = nstart * px
        elif variant == "nstart":
            mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = nstart
    return path


def _shifted_model(path: Path, shift: float) -> Path:
    """5ME2 with every atom moved by ``shift`` Å along x, y and z."""
    import gemmi

    st = gemmi.read_structure(str(MODEL))
    st.setup_entities()
    for model in st:
        for chain in model:
            for res in chain:
                for atom in res:
                    atom.pos = gemmi.Position(
                        atom.pos.x + shift, atom.pos.y + shift, atom.pos.z + shift
                    )
    st.write_pdb(str(path))
    return path


def _ball_model(path: Path, centre_xyz, radius: float = 60.0) -> Path:
    """A synthetic model: 300 carbon atoms inside a ball around ``centre_xyz`` (Å)."""
    import gemmi

    rng = np.random.default_rng(3)
    pts = rng.normal(size=(300, 3))
    pts *= radius * rng.random((300, 1)) ** (1 / 3) / np.linalg.norm(pts, axis=1, keepdims=True)
    st = gemmi.Structure()
    model, chain = gemmi.Model("1"), gemmi.Chain("A")
    for i, (x, y, z) in enumerate(pts + np.asarray(centre_xyz)):
        res = gemmi.Residue()
        res.name, res.seqid = "GLY", gemmi.SeqId(i + 1, " ")
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos = "CA", gemmi.Element("C"), gemmi.Position(x, y, z)
        atom.b_iso, atom.occ = 30.0, 1.0
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.write_pdb(str(path))
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    _need(EMD3488, MODEL)
    data = read_volume(EMD3488)[0]
    folder = tmp_path_factory.mktemp("frame_maps")
    out = {
        v: _write(folder / f"{v}.map", data, v, PX, NSTART) for v in ("origin", "nstart", "none")
    }
    rng = np.random.default_rng(0)
    for i in (1, 2):  # half maps: the map plus independent noise, in the NSTART frame
        half = data + rng.normal(scale=0.3 * float(data.std()), size=data.shape)
        out[f"half{i}"] = _write(folder / f"half{i}.map", half, "nstart", PX, NSTART)
    out["model"] = _shifted_model(folder / "5me2_shifted.pdb", FRAME)
    return out


@pytest.fixture(scope="module")
def proj(tmp_path_factory, maps) -> dict:
    p = Project.init(tmp_path_factory.mktemp("frame_project") / "P")
    ids = {v: p.run("import.volume", params={"path": str(maps[v])}) for v in ("origin", "none")}
    halves = {"half1": str(maps["half1"]), "half2": str(maps["half2"])}
    ids["nstart"] = p.run("import.volume", params={"path": str(maps["nstart"]), **halves})
    ids["mask"] = p.run("automask.auto3d", inputs={"volume": f"{ids['nstart']}.volume"})
    return {"project": p, "ids": ids}


def test_import_keeps_the_frame_whatever_field_holds_it(proj):
    p, ids = proj["project"], proj["ids"]
    vols = {v: p.outputs(ids[v])["volume"] for v in ("origin", "nstart", "none")}
    assert vols["origin"].origin == pytest.approx((FRAME,) * 3, abs=0.01)
    assert vols["nstart"].origin == pytest.approx(vols["origin"].origin, abs=0.01)
    assert vols["none"].origin == (0.0, 0.0, 0.0)
    assert (vols["origin"].origin_field, vols["nstart"].origin_field) == ("origin", "nstart")
    # the project copies are written the way their sources came
    assert _header(vols["nstart"].path) == ((0.0, 0.0, 0.0), (NSTART,) * 3)
    assert _header(vols["origin"].path) == (pytest.approx((FRAME,) * 3), (0, 0, 0))
    for half in (vols["nstart"].half1, vols["nstart"].half2):
        assert _header(half) == ((0.0, 0.0, 0.0), (NSTART,) * 3)


def test_real_emd1832_import_export_keeps_the_frame(project, tmp_path):
    _need(EMD1832)
    rid = project.run("import.volume", params={"path": str(EMD1832)})
    vol = project.outputs(rid)["volume"]
    assert vol.origin == pytest.approx((FRAME_1832,) * 3, abs=0.01)
    out = export_object(project, f"{rid}.volume", tmp_path / "exported.map")
    assert _header(out) == _header(EMD1832)  # NSTART -32, ORIGIN 0, as deposited
    assert read_info(out).origin == pytest.approx(read_info(EMD1832).origin, abs=0.01)


@pytest.mark.slow
def test_cli_export_writes_the_source_frame(proj, tmp_path):
    if not EMFORGE.is_file():
        pytest.skip(f"the emforge command is not installed next to {sys.executable}")
    p, ids = proj["project"], proj["ids"]
    for variant in ("origin", "nstart"):
        target = tmp_path / f"{variant}.mrc"
        cmd = [str(EMFORGE), "export", "--project", str(p.path), f"{ids[variant]}.volume"]
        done = subprocess.run([*cmd, str(target)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert read_info(target).origin == pytest.approx((FRAME,) * 3, abs=0.01)
        assert read_info(target).origin_field == variant


@pytest.mark.slow
def test_sharpen_model_places_the_model_in_the_map_frame(proj, maps):
    """5ME2 moved with the map fits both framed variants (and the model map lands on the
    map's density); the unframed copy is refused before any run is recorded."""
    p, ids = proj["project"], proj["ids"]
    params = {"model": str(maps["model"]), "resolution": 3.5}
    truth = read_volume(EMD3488)[0]
    for variant in ("origin", "nstart"):
        rid = p.run("sharpen.model", params=params, inputs={"volume": f"{ids[variant]}.volume"})
        out = p.outputs(rid)["volume"]
        for path in (out.path, Path(out.path).parent / "model_map.mrc"):  # as the map came
            assert read_info(path).origin == pytest.approx((FRAME,) * 3, abs=0.01)
            assert read_info(path).origin_field == variant
        assert out.origin == pytest.approx((FRAME,) * 3, abs=0.01)
        mm = read_volume(Path(out.path).parent / "model_map.mrc")[0]
        cc = np.corrcoef(mm.ravel(), truth.ravel())[0, 1]
        assert cc > 0.5, f"{variant}: model map vs map CC {cc:.2f}: the model is misplaced"
    before = len(proj["project"].outputs(ids["none"]))
    with pytest.raises(ValidationError, match="outside the map box"):
        p.run("sharpen.model", params=params, inputs={"volume": f"{ids['none']}.volume"})
    assert len(proj["project"].outputs(ids["none"])) == before


def test_sharpen_model_accepts_a_model_in_emd1832_deposited_frame(project, tmp_path):
    """A model around (0, 0, 0) Å sits in the middle of EMD-1832's deposited box
    (-182.4 … 176.7 Å); without the NSTART frame it would be 7/8 outside."""
    _need(EMD1832)
    rid = project.run("import.volume", params={"path": str(EMD1832)})
    model = _ball_model(tmp_path / "ball.pdb", (0.0, 0.0, 0.0))
    params = {"model": str(model), "resolution": 25.0}
    new = create_run(project, "sharpen.model", params, {"volume": f"{rid}.volume"})
    assert run_row(project, new)["status"] == "new"  # validated and recorded
    data = read_volume(EMD1832)[0]
    bare = _write(tmp_path / "bare.map", data, "none", 5.7, 0)
    bare_id = project.run("import.volume", params={"path": str(bare)})
    with pytest.raises(ValidationError, match=r"8\d% of atoms lie outside the map box"):
        create_run(project, "sharpen.model", params, {"volume": f"{bare_id}.volume"})


#: protocol -> (params, inputs by role) for every family that writes a map from an input map
FAMILIES = {
    "masks.create": ({"geometry": "sphere", "radius": 20}, {"reference": "volume"}),
    "masks.volumes": ({"geometry": "sphere", "radius": 20}, {"volume": "volume"}),
    "automask.auto3d": ({}, {"volume": "volume"}),
    "automask.soft": ({}, {"volume": "volume"}),
    "sharpen.bfactor": ({"mode": "b_sharpen", "b_sharpen": 50.0}, {"volume": "volume"}),
    "sharpen.auto": ({"method": "kurtosis", "resolution": 4.0}, {"volume": "volume"}),
    "sharpen.halfmaps": ({}, {"volume": "volume", "mask": "mask"}),
    "sharpen.shells": ({"resolution": 4.0}, {"volume": "volume"}),
    "sharpen.local": (
        {"method": "b_iso", "resolution": 4.0, "box": 40, "step": 20},
        {"volume": "volume"},
    ),
    "analysis.local_resolution": ({"step": 10}, {"volume": "volume", "mask": "mask"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", sorted(FAMILIES))
def test_every_map_written_from_an_input_keeps_its_frame(proj, protocol):
    """sharpen.model is checked in test_sharpen_model_places_the_model_in_the_map_frame."""
    p, ids = proj["project"], proj["ids"]
    params, roles = FAMILIES[protocol]
    refs = {"volume": f"{ids['nstart']}.volume", "mask": f"{ids['mask']}.mask"}
    rid = p.run(protocol, params=params, inputs={k: refs[v] for k, v in roles.items()})
    written = sorted((p.path / "Runs").glob(f"{rid:06d}_*/extra/*.mrc"))
    assert written, f"{protocol} wrote no map"
    for path in written:
        assert read_info(path).origin == pytest.approx((FRAME,) * 3, abs=0.01), path.name
        assert _header(path) == ((0.0, 0.0, 0.0), (NSTART,) * 3), path.name  # as it came
    for obj in p.outputs(rid).values():
        if hasattr(obj, "origin"):
            assert obj.origin == pytest.approx((FRAME,) * 3, abs=0.01)
            assert obj.origin_field == "nstart"


def test_non_orthogonal_cell_is_refused_at_import(project):
    path = DATA / "maps" / "EMD-3001.map"
    _need(path)
    with pytest.raises(ValidationError, match=r"EMD-3001\.map: non-orthogonal cell .*94\.33"):
        project.run("import.volume", params={"path": str(path)})


def test_anisotropic_voxels_are_refused_at_import_unless_pixel_size_is_given(project, tmp_path):
    """Never one number for a (z, y, x) = (2, 1.5, 1) Å voxel: a clear refusal naming the
    triple; a user-given pixel_size (the header was wrong) makes the voxels cubic."""
    path = tmp_path / "aniso.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.random.default_rng(1).normal(size=(8, 8, 8)).astype(np.float32))
        mrc.voxel_size = (1.0, 1.5, 2.0)  # x, y, z
    with pytest.raises(
        ValidationError, match=r"aniso\.mrc: anisotropic voxels \(z, y, x\) = \(2, 1\.5, 1\)"
    ):
        project.run("import.volume", params={"path": str(path)})
    rid = project.run("import.volume", params={"path": str(path), "pixel_size": 1.2})
    vol = project.outputs(rid)["volume"]
    assert vol.pixel_size == 1.2 and vol.voxel_size == (1.2, 1.2, 1.2)


def test_half_maps_in_another_frame_are_refused(project, maps, tmp_path):
    """Half maps must sit where the map sits: a half map without the frame is one line."""
    data = read_volume(maps["half2"])[0]
    bare = _write(tmp_path / "bare_half.map", data, "none", PX, 0)
    params = {"path": str(maps["nstart"]), "half1": str(maps["half1"]), "half2": str(bare)}
    with pytest.raises(
        ValidationError,
        match=r"param 'half2': .*bare_half\.map: frame \(0, 0, 0\) Å differs from the map's \(-52\.5, -52\.5, -52\.5\) Å",
    ):
        project.run("import.volume", params=params)
