"""A corpus of bad input: every case is refused in one line, exit 2, nothing written.

The cases cover corrupt, truncated and non-finite maps, bad STAR and coordinate files, bad
params, bad input references, bad templates and bad paths. The bad files are generated in a
temporary folder; one project (with a map, a mask and particles imported by the module
fixture) serves every case, and each case compares the database dump (``sqlite3`` iterdump)
and the ``Runs/`` listing before and after. Most cases call the CLI in-process
(``emforge.cli.main``); a handful go through the real console script.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from projectstate import db_dump, runs_listing

from emforge.cli import main
from emforge.io import write_volume
from emforge.project import Project

PX = 2.0
N = 24


@dataclass
class Env:
    project: Project
    files: Path
    data: Path

    def f(self, name: str) -> str:
        return str(self.files / name)


def _blob(seed: int = 0, n: int = N) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    noise = 0.01 * np.random.default_rng(seed).normal(size=(n, n, n))
    return (np.exp(-(x * x + y * y + z * z) / 20.0) + noise).astype(np.float32)


def _mrc(path: Path, data: np.ndarray, px: float = PX) -> None:
    with np.errstate(invalid="ignore"):
        write_volume(path, np.asarray(data, np.float32), voxel_size=px)


def _patched_header(src: Path, dst: Path, offset: int, fmt: str, value) -> None:
    raw = bytearray(src.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    dst.write_bytes(bytes(raw))


def _star_rows(src: str, old: str, new: str) -> str:
    assert old in src
    return src.replace(old, new, 1)


def _write_files(d: Path, data: Path) -> None:
    good = d / "good.mrc"
    _mrc(good, _blob())
    raw = good.read_bytes()
    (d / "empty.mrc").write_bytes(b"")
    (d / "short_header.mrc").write_bytes(raw[:500])
    (d / "header_only.mrc").write_bytes(raw[:1024])
    (d / "truncated.mrc").write_bytes(raw[: 1024 + (len(raw) - 1024) // 2])
    (d / "text.mrc").write_text("not a map, only words\n" * 60)
    (d / "random.mrc").write_bytes(np.random.default_rng(1).bytes(5000))
    (d / "folder.mrc").mkdir()
    _patched_header(good, d / "mode99.mrc", 12, "<i", 99)
    _patched_header(good, d / "mapc5.mrc", 64, "<i", 5)
    _patched_header(good, d / "nx0.mrc", 0, "<i", 0)
    _patched_header(good, d / "nxneg.mrc", 0, "<i", -4)
    _patched_header(good, d / "nx_huge.mrc", 0, "<i", 100000)
    with mrcfile.new(d / "px0.mrc") as m:  # valid as a mask too: only the pixel size is bad
        m.set_data((_blob() > 0.3).astype(np.float32))
        m.voxel_size = 0.0
    nan = _blob()
    nan.reshape(-1)[[3, 77, 1000]] = np.nan
    _mrc(d / "nan.mrc", nan)
    inf = _blob()
    inf.reshape(-1)[[5, 50]] = [np.inf, -np.inf]
    _mrc(d / "inf.mrc", inf)
    _mrc(d / "zeros.mrc", np.zeros((N, N, N)))
    _mrc(d / "image2d.mrc", _blob()[:1])
    _mrc(d / "small.mrc", _blob(n=16))
    _mrc(d / "mask_range.mrc", 2.0 * (_blob() > 0.3))
    _mrc(d / "mask_negative.mrc", -1.0 * (_blob() > 0.3))
    (d / "text.tif").write_text("II*\0 this is no TIFF")
    (d / "text.em").write_bytes(b"\x06\x00\x00\x02" + b"\x00" * 40)
    for i in (1, 2):
        _mrc(d / f"h{i}.mrc", _blob(seed=i))
    shutil.copy(d / "h1.mrc", d / "half_copy.mrc")
    _mrc(d / "mask.mrc", (_blob() > 0.3).astype(np.float32))
    shutil.copy(d / "mask.mrc", d / "stack.mrcs")  # a valid mask too: only the suffix is bad
    _mrc(d / "mask_px.mrc", (_blob() > 0.3).astype(np.float32), px=3.0)
    _mrc(d / "mask_small.mrc", (_blob(n=16) > 0.3).astype(np.float32))

    # STAR files (relion31.star's stack is found next to the copy through a link)
    src = (data / "particles" / "relion31.star").read_text()
    (d / "relion31.mrcs").symlink_to(data / "particles" / "relion31.mrcs")
    row = next(line for line in src.splitlines() if "opticsGroup1" in line)
    stars = {
        "empty.star": "",
        "comments.star": "# only a comment\n\n",
        "binary.star": None,
        "no_loop.star": "data_particles\n\nloop_\n",
        "dup_optics.star": src.replace(row, row + "\n" + row.replace("opticsGroup1", "second")),
        "optics_group_missing.star": src.replace(
            row, row.replace(" 1 opticsGroup1", " 7 opticsGroup1")
        ),
        "bad_index.star": _star_rows(src, "000001@relion31.mrcs", "000099@relion31.mrcs"),
        "word_index.star": _star_rows(src, "000001@relion31.mrcs", "abc@relion31.mrcs"),
        "missing_stack.star": src.replace("@relion31.mrcs", "@nowhere.mrcs"),
        "text_coordinate.star": _star_rows(src, " 3277.000000 ", " PRIVATEWORD "),
        "no_optics_column.star": src.replace("_rlnOpticsGroup #1", "_rlnSomethingElse #1", 1),
        "pixel0.star": src.replace("     2.806000 ", "     0.000000 "),
    }
    for name, text in stars.items():
        if text is None:
            (d / name).write_bytes(b"\x00\x01\x02data_\x00")
        else:
            (d / name).write_text(text)
    lines = src.splitlines()
    start = lines.index("data_particles")
    labels = [i for i in range(start, len(lines)) if lines[i].startswith("_rln")]
    drop = next(k for k, i in enumerate(labels) if lines[i].split()[0] == "_rlnImageName")
    kept = lines[: labels[drop]] + lines[labels[drop] + 1 : labels[-1] + 1]
    for r in lines[labels[-1] + 1 :]:
        fields = r.split()
        kept.append(
            " ".join(fields[:drop] + fields[drop + 1 :]) if len(fields) == len(labels) else r
        )
    (d / "no_image_name.star").write_text("\n".join(kept) + "\n")
    (d / "other_box.mrcs").write_bytes(b"")
    with mrcfile.new(d / "other_box.mrcs", overwrite=True) as m:
        m.set_data(np.zeros((5, 64, 64), np.float32))
        m.voxel_size = 2.806

    # coordinate files
    (d / "coords_words.txt").write_text("SECRET 1 2\n3 4 5\n")
    (d / "coords_two.txt").write_text("1 2\n3 4\n")
    (d / "coords_binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (d / "info_bad.json").write_text("{ not json at all")
    (d / "info_noboxes.json").write_text(json.dumps({"class_list": {}}))
    (d / "coords_nocols.star").write_text("data_\nloop_\n_rlnAngleRot #1\n10\n")
    (d / "coords_text.star").write_text(
        "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\nHIDDEN 1 2\n"
    )

    # templates
    node = {"id": "imp", "protocol": "import.volume", "params": {"path": str(good)}}
    tpls = {
        "tpl_not_json.json": "{ nodes: [",
        "tpl_wrong_format.json": {"format": "something-else", "version": 1, "nodes": []},
        "tpl_no_nodes.json": {"format": "emforge-template", "version": 1},
        "tpl_bad_version.json": {"format": "emforge-template", "version": 7, "nodes": [node]},
        "tpl_extra_key.json": {"format": "emforge-template", "version": 1, "nodes": [node], "x": 1},
        "tpl_bad_node_id.json": {"format": "emforge-template", "version": 1, "nodes": [{**node, "id": "1 bad"}]},
        "tpl_dup_nodes.json": {"format": "emforge-template", "version": 1, "nodes": [node, node]},
        "tpl_unknown_ref.json": {"format": "emforge-template", "version": 1, "nodes": [
            {"id": "m", "protocol": "masks.volumes", "inputs": {"volume": "ghost.volume"}}]},
        "tpl_cycle.json": {"format": "emforge-template", "version": 1, "nodes": [
            {"id": "a", "protocol": "masks.volumes", "inputs": {"volume": "b.volume"}},
            {"id": "b", "protocol": "masks.volumes", "inputs": {"volume": "a.volume"}}]},
        "tpl_unknown_protocol.json": {"format": "emforge-template", "version": 1, "nodes": [
            {**node, "protocol": "nosuch.protocol"}]},
        "tpl_bad_param.json": {"format": "emforge-template", "version": 1, "nodes": [
            {**node, "params": {"path": str(good), "pixel_size": "NaN"}}]},
        "tpl_unknown_param.json": {"format": "emforge-template", "version": 1, "nodes": [
            {**node, "params": {"path": str(good), "colour": "red"}}]},
        "tpl_bad_file.json": {"format": "emforge-template", "version": 1, "nodes": [
            {**node, "params": {"path": str(d / "truncated.mrc")}}]},
        "tpl_list.json": [node],
    }  # fmt: skip
    for name, content in tpls.items():
        (d / name).write_text(content if isinstance(content, str) else json.dumps(content))
    (d / "a_file").write_text("not a project")


@pytest.fixture(scope="module")
def env(tmp_path_factory, data_dir) -> Env:
    """Runs 1: map with half maps; 2: mask; 3: particles; 4: map with identical halves;
    5: mask at another pixel size; 6: smaller mask; 7: map without half maps."""
    root = tmp_path_factory.mktemp("corpus")
    files = root / "files"
    files.mkdir()
    _write_files(files, data_dir)
    project = Project.init(root / "project")
    f = lambda n: str(files / n)  # noqa: E731
    project.run("import.volume", params={"path": f("good.mrc"), "half1": f("h1.mrc"), "half2": f("h2.mrc")}, executor="inline")  # fmt: skip
    project.run("import.mask", params={"path": f("mask.mrc")}, executor="inline")
    project.run("import.particles", params={"star": str(data_dir / "particles" / "relion31.star")}, executor="inline")  # fmt: skip
    project.run("import.volume", params={"path": f("good.mrc"), "half1": f("h1.mrc"), "half2": f("half_copy.mrc")}, executor="inline")  # fmt: skip
    project.run("import.mask", params={"path": f("mask_px.mrc")}, executor="inline")
    project.run("import.mask", params={"path": f("mask_small.mrc")}, executor="inline")
    project.run("import.volume", params={"path": f("good.mrc")}, executor="inline")
    return Env(project, files, data_dir)


def _imp(param: str = "path", protocol: str = "import.volume") -> Callable[[Env, str], list[str]]:
    return lambda e, name: ["run", protocol, "-p", f"{param}={e.f(name)}"]


V, MS, PT = "volume=1.volume", "mask=2.mask", "particles=3.particles"

# (case id, argv builder, words that the one error line must hold)
CASES: list[tuple[str, Callable[[Env], list[str]], tuple[str, ...]]] = []


def case(cid: str, say: tuple[str, ...] = ()):
    def add(fn):
        CASES.append((cid, fn, say))
        return fn

    return add


# -- corrupt maps, through every map import ------------------------------------------------
_BAD_MAPS = {
    "empty.mrc": "empty.mrc",
    "short_header.mrc": "short_header.mrc",
    "header_only.mrc": "truncated",
    "truncated.mrc": "truncated",
    "text.mrc": "text.mrc",
    "random.mrc": "random.mrc",
    "mode99.mrc": "mode",
    "mapc5.mrc": "MAPC",
    "nx0.mrc": "nx",
    "nxneg.mrc": "nx",
    "nx_huge.mrc": "truncated",
    "nan.mrc": "3 NaN/infinite",
    "inf.mrc": "2 NaN/infinite",
    "zeros.mrc": "all zeros",
    "missing.mrc": "no such file",
    "px0.mrc": "pixel size 0",
}
for _name, _word in _BAD_MAPS.items():
    for _proto in ("import.volume", "import.volumes", "import.mask", "import.tomograms"):
        CASES.append(
            (
                f"{_proto}:{_name}",
                lambda e, n=_name, p=_proto: _imp(protocol=p)(e, n),
                (_name, _word),
            )
        )

for _cid, _argv, _say in [
    ("volume:folder", lambda e: _imp()(e, "folder.mrc"), ("folder.mrc",)),
    ("volume:image2d", lambda e: _imp()(e, "image2d.mrc"), ("image2d.mrc", "2D image")),
    ("volume:stack", lambda e: _imp()(e, "stack.mrcs"), ("stack.mrcs", "stack_as_map")),
    ("volumes:stack", lambda e: _imp(protocol="import.volumes")(e, "stack.mrcs"), ("stack.mrcs", "stack_as_map")),
    ("mask:stack", lambda e: _imp(protocol="import.mask")(e, "stack.mrcs"), ("stack.mrcs", "stack_as_map")),
    ("volume:glob-nothing", lambda e: ["run", "import.volumes", "-p", f"path={e.f('zz*.mrc')}"], ("zz*.mrc", "no such file")),
    ("volume:glob-several", lambda e: ["run", "import.volume", "-p", f"path={e.f('h?.mrc')}"], ("h?.mrc", "2 files")),
    ("volume:tif", lambda e: _imp()(e, "text.tif"), ("text.tif",)),
    ("volume:em", lambda e: _imp()(e, "text.em"), ("text.em",)),
    ("volume:half1-only", lambda e: [*_imp()(e, "good.mrc"), "-p", f"half1={e.f('h1.mrc')}"], ("half1", "both")),
    ("volume:half-shape", lambda e: [*_imp()(e, "good.mrc"), "-p", f"half1={e.f('h1.mrc')}", "-p", f"half2={e.f('small.mrc')}"], ("half2", "small.mrc", "shape")),
    ("volume:half-nan", lambda e: [*_imp()(e, "good.mrc"), "-p", f"half1={e.f('h1.mrc')}", "-p", f"half2={e.f('nan.mrc')}"], ("half2", "nan.mrc", "NaN")),
    ("volume:half-missing", lambda e: [*_imp()(e, "good.mrc"), "-p", f"half1={e.f('h1.mrc')}", "-p", f"half2={e.f('gone.mrc')}"], ("half2", "gone.mrc")),
    ("mask:range", lambda e: _imp(protocol="import.mask")(e, "mask_range.mrc"), ("mask_range.mrc", "[0, 1]")),
    ("mask:negative", lambda e: _imp(protocol="import.mask")(e, "mask_negative.mrc"), ("mask_negative.mrc", "[0, 1]")),
    # -- STAR files
    ("star:empty", lambda e: _imp("star", "import.particles")(e, "empty.star"), ("empty.star",)),
    ("star:comments", lambda e: _imp("star", "import.particles")(e, "comments.star"), ("comments.star",)),
    ("star:binary", lambda e: _imp("star", "import.particles")(e, "binary.star"), ("binary.star", "binary")),
    ("star:no-loop", lambda e: _imp("star", "import.particles")(e, "no_loop.star"), ("no_loop.star",)),
    ("star:dup-optics", lambda e: _imp("star", "import.particles")(e, "dup_optics.star"), ("dup_optics.star", "defined twice", "second")),
    ("star:group-missing", lambda e: _imp("star", "import.particles")(e, "optics_group_missing.star"), ("optics_group_missing.star", "rlnOpticsGroup 1")),
    ("star:bad-index", lambda e: _imp("star", "import.particles")(e, "bad_index.star"), ("relion31.mrcs", "image 99")),
    ("star:word-index", lambda e: _imp("star", "import.particles")(e, "word_index.star"), ("word_index.star",)),
    ("star:missing-stack", lambda e: _imp("star", "import.particles")(e, "missing_stack.star"), ("nowhere.mrcs", "does not exist")),
    ("star:text-coordinate", lambda e: _imp("star", "import.particles")(e, "text_coordinate.star"), ("text_coordinate.star", "rlnCoordinateX")),
    ("star:no-optics-column", lambda e: _imp("star", "import.particles")(e, "no_optics_column.star"), ("no_optics_column.star", "rlnOpticsGroup")),
    ("star:no-image-name", lambda e: _imp("star", "import.particles")(e, "no_image_name.star"), ("no_image_name.star", "rlnImageName")),
    ("star:pixel0", lambda e: _imp("star", "import.particles")(e, "pixel0.star"), ("pixel0.star", "pixel")),
    ("star:missing", lambda e: _imp("star", "import.particles")(e, "gone.star"), ("gone.star", "no such file")),
    ("star:stack-box", lambda e: [*_imp("star", "import.particles")(e, "bad_index.star")[:4], "-p", f"stack={e.f('other_box.mrcs')}"], ("other_box.mrcs", "image 99")),
    ("particles:nothing", lambda e: ["run", "import.particles"], ("stack",)),
    ("particles:text-stack", lambda e: _imp("stack", "import.particles")(e, "text.mrc"), ("text.mrc",)),
    ("particles:px0-stack", lambda e: _imp("stack", "import.particles")(e, "px0.mrc"), ("px0.mrc", "pixel size 0")),
    # -- coordinate files
    ("coords:words", lambda e: _imp(protocol="import.coordinates3d")(e, "coords_words.txt"), ("coords_words.txt", "line 1")),
    ("coords:two-columns", lambda e: _imp(protocol="import.coordinates3d")(e, "coords_two.txt"), ("coords_two.txt", "3 columns")),
    ("coords:binary", lambda e: _imp(protocol="import.coordinates3d")(e, "coords_binary.txt"), ("coords_binary.txt",)),
    ("coords:bad-json", lambda e: _imp(protocol="import.coordinates3d")(e, "info_bad.json"), ("info_bad.json", "line 1")),
    ("coords:no-boxes", lambda e: _imp(protocol="import.coordinates3d")(e, "info_noboxes.json"), ("info_noboxes.json", "boxes_3d")),
    ("coords:star-no-columns", lambda e: _imp(protocol="import.coordinates3d")(e, "coords_nocols.star"), ("coords_nocols.star", "rlnCoordinateX")),
    ("coords:star-text", lambda e: _imp(protocol="import.coordinates3d")(e, "coords_text.star"), ("coords_text.star",)),
    ("coords:wrong-format", lambda e: [*_imp(protocol="import.coordinates3d")(e, "coords_words.txt"), "-p", "format=json"], ("format",)),
    # -- params
    ("param:unknown", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=1", "-p", "colour=red"], ("colour", "unknown")),
    ("param:not-a-number", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=abc"], ("pixel_size",)),
    ("param:nan", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=NaN"], ("pixel_size", "finite")),
    ("param:inf", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=Infinity"], ("pixel_size", "finite")),
    ("param:neg-inf-radius", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=1", "-p", "radius=-Infinity"], ("radius", "finite")),
    ("param:nan-in-list", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=1", "-p", "shift=[1, NaN, 0]"], ("shift", "finite")),
    ("param:px-zero", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=0"], ("pixel_size", "greater than 0")),
    ("param:px-negative", lambda e: [*_imp()(e, "good.mrc"), "-p", "pixel_size=-1"], ("pixel_size", "greater than 0")),
    ("param:px-list", lambda e: [*_imp()(e, "good.mrc"), "-p", "pixel_size=[1,2]"], ("pixel_size",)),
    ("param:choice", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=1", "-p", "geometry=cube"], ("geometry",)),
    ("param:size-memory", lambda e: ["run", "masks.create", "-p", "size=100000", "-p", "pixel_size=1"], ("size", "GiB")),
    ("param:size-memory-2d-ok-3d", lambda e: ["run", "masks.create", "-p", "size=60000", "-p", "pixel_size=1"], ("size", "GiB")),
    ("param:no-size", lambda e: ["run", "masks.create", "-p", "pixel_size=1"], ("size",)),
    ("param:radius-beyond", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=1", "-p", "radius=40"], ("radius",)),
    ("param:crown-order", lambda e: ["run", "masks.create", "-p", "size=16", "-p", "pixel_size=1", "-p", "geometry=crown", "-p", "inner_radius=6", "-p", "outer_radius=3"], ("inner_radius",)),
    ("param:int-as-float", lambda e: ["run", "masks.create", "-p", "size=16.5", "-p", "pixel_size=1"], ("size",)),
    ("param:parts", lambda e: ["run", "masks.particles", "-i", PT, "-p", "parts=10000000"], ("parts", "10000000")),
    ("param:parts-negative", lambda e: ["run", "masks.particles", "-i", PT, "-p", "parts=-1"], ("parts",)),
    ("param:fill-inf", lambda e: ["run", "masks.volumes", "-i", V, "-p", "fill_value=Infinity"], ("fill_value", "finite")),
    ("param:fill-choice", lambda e: ["run", "masks.volumes", "-i", V, "-p", "fill=median"], ("fill",)),
    ("param:fit-d-min-nan", lambda e: ["run", "sharpen.bfactor", "-i", V, "-p", "fit_d_min=NaN"], ("fit_d_min", "finite")),
    ("param:nyquist", lambda e: ["run", "sharpen.shells", "-i", V, "-p", "resolution=1.0"], ("resolution", "Nyquist")),
    ("param:b-range", lambda e: ["run", "sharpen.auto", "-i", V, "-p", "b_min=50", "-p", "b_max=10"], ("b_max",)),
    ("param:bad-kv", lambda e: ["run", "masks.create", "-p", "size16"], ("--param", "NAME=VALUE")),
    ("param:empty-name", lambda e: ["run", "masks.create", "-p", "=16"], ("--param",)),
    ("param:model-missing", lambda e: ["run", "sharpen.model", "-i", V, "-p", f"model={e.f('nope.pdb')}", "-p", "resolution=5"], ("model", "no such file")),
    ("param:model-not-pdb", lambda e: ["run", "sharpen.model", "-i", V, "-p", f"model={e.f('text.mrc')}", "-p", "resolution=5"], ("model", "text.mrc")),
    # the automatic box adapts to a small map (with a warning); a box the user gives does not
    ("param:local-box-over-map", lambda e: ["run", "sharpen.local", "-i", "volume=7.volume", "-p", "resolution=8", "-p", "box=64"], ("box", "larger than the map")),
    ("param:local-box", lambda e: ["run", "analysis.local_resolution", "-i", V, "-p", "box=200"], ("box",)),
    ("param:threshold-nan", lambda e: ["run", "automask.auto3d", "-i", V, "-p", "threshold=NaN"], ("threshold", "finite")),
    # -- inputs
    ("input:missing", lambda e: ["run", "masks.volumes"], ("volume", "required")),
    ("input:unknown-name", lambda e: ["run", "masks.volumes", "-i", V, "-i", "colour=1.volume"], ("colour",)),
    ("input:no-such-run", lambda e: ["run", "masks.volumes", "-i", "volume=99.volume"], ("99",)),
    ("input:no-such-output", lambda e: ["run", "masks.volumes", "-i", "volume=1.mask"], ("1.mask", "volume")),
    ("input:bare-number", lambda e: ["run", "masks.volumes", "-i", "volume=1"], ("RUN.output", "object:1")),
    ("input:no-such-object", lambda e: ["run", "masks.volumes", "-i", "volume=object:999"], ("999",)),
    ("input:wrong-kind", lambda e: ["run", "masks.volumes", "-i", "volume=2.mask"], ("VolumeMask", "Volume")),
    ("input:two-for-one", lambda e: ["run", "masks.volumes", "-i", V, "-i", "volume=4.volume"], ("takes one",)),
    ("input:garbage-ref", lambda e: ["run", "masks.volumes", "-i", "volume=hello"], ("hello",)),
    ("input:no-equals", lambda e: ["run", "masks.volumes", "-i", "volume"], ("--input",)),
    ("input:mask-ignored", lambda e: ["run", "masks.volumes", "-i", V, "-i", MS], ("mask", "source=mask")),
    ("input:mask-required", lambda e: ["run", "masks.volumes", "-i", V, "-p", "source=mask"], ("mask", "required")),
    ("input:mask-pixel-size", lambda e: ["run", "masks.volumes", "-i", V, "-i", "mask=5.mask", "-p", "source=mask"], ("mask", "pixel size")),
    ("input:mask-shape", lambda e: ["run", "masks.volumes", "-i", V, "-i", "mask=6.mask", "-p", "source=mask"], ("mask", "shape")),
    ("input:halfmaps-mask-px", lambda e: ["run", "sharpen.halfmaps", "-i", V, "-i", "mask=5.mask"], ("mask", "pixel size")),
    ("input:halfmaps-mask-shape", lambda e: ["run", "sharpen.halfmaps", "-i", V, "-i", "mask=6.mask"], ("mask", "shape")),
    ("input:locres-mask-px", lambda e: ["run", "analysis.local_resolution", "-i", V, "-i", "mask=5.mask"], ("mask", "pixel size")),
    ("input:identical-halves", lambda e: ["run", "sharpen.halfmaps", "-i", "volume=4.volume"], ("half2", "identical")),
    ("input:identical-halves-local", lambda e: ["run", "sharpen.local", "-i", "volume=4.volume", "-p", "resolution=8", "-p", "method=halfmap"], ("half2", "identical")),
    ("input:half2-alone", lambda e: ["run", "sharpen.halfmaps", "-i", "half2=1.volume"], ("half2",)),
    ("input:no-halves", lambda e: ["run", "sharpen.halfmaps", "-i", "volume=7.volume"], ("volume",)),
    ("input:particles-mask-ignored", lambda e: ["run", "masks.particles", "-i", PT, "-i", MS], ("mask", "Mask2D")),
    # -- templates
    *[
        (f"template:{n}", lambda e, n=n: ["template", "run", e.f(n), "--project", str(e.project.path)], (n,) if w is None else w)
        for n, w in [
            ("tpl_not_json.json", ("tpl_not_json.json", "JSON")),
            ("tpl_wrong_format.json", ("tpl_wrong_format.json", "format")),
            ("tpl_no_nodes.json", ("tpl_no_nodes.json", "nodes")),
            ("tpl_bad_version.json", ("tpl_bad_version.json", "version")),
            ("tpl_extra_key.json", ("tpl_extra_key.json",)),
            ("tpl_bad_node_id.json", ("tpl_bad_node_id.json", "id")),
            ("tpl_dup_nodes.json", ("imp", "two nodes")),
            ("tpl_unknown_ref.json", ("ghost",)),
            ("tpl_cycle.json", ("cycle",)),
            ("tpl_unknown_protocol.json", ("nosuch.protocol",)),
            ("tpl_bad_param.json", ("node imp", "pixel_size", "finite")),
            ("tpl_unknown_param.json", ("node imp", "colour")),
            ("tpl_bad_file.json", ("node imp", "truncated")),
            ("tpl_list.json", ("tpl_list.json",)),
            ("tpl_missing.json", ("tpl_missing.json", "no such template")),
        ]
    ],
    ("template:bad-set", lambda e: ["template", "run", str(Path(__file__).resolve().parents[2] / "templates" / "masks_pipeline.json"), "--project", str(e.project.path), "--set", "nonode.x=1"], ("--set",)),
    ("template:set-no-equals", lambda e: ["template", "run", str(Path(__file__).resolve().parents[2] / "templates" / "masks_pipeline.json"), "--project", str(e.project.path), "--set", "junk"], ("--set",)),
    # -- paths, runs and executors
    ("path:project-missing", lambda e: ["runs", "list", "--project", e.f("no_project_here")], ("not an emforge project",)),
    ("path:project-is-file", lambda e: ["runs", "list", "--project", e.f("a_file")], ("a_file",)),
    ("path:run-project-missing", lambda e: ["run", "masks.create", "-p", "size=8", "-p", "pixel_size=1", "--project", e.f("none")], ("not an emforge project",)),
    ("runs:show-999", lambda e: ["runs", "show", "999", "--project", str(e.project.path)], ("999",)),
    ("runs:why-999", lambda e: ["runs", "why", "999", "--project", str(e.project.path)], ("999",)),
    ("runs:log-999", lambda e: ["runs", "log", "999", "--project", str(e.project.path)], ("999",)),
    ("runs:resume-999", lambda e: ["runs", "resume", "999", "--project", str(e.project.path)], ("999",)),
    ("runs:rerun-999", lambda e: ["runs", "rerun", "999", "--project", str(e.project.path)], ("999",)),
    ("runs:delete-999", lambda e: ["runs", "delete", "999", "--project", str(e.project.path)], ("999",)),
    ("runs:edit-unknown", lambda e: ["runs", "edit", "2", "--project", str(e.project.path), "-p", "colour=red"], ("colour",)),
    ("runs:edit-nan", lambda e: ["runs", "edit", "1", "--project", str(e.project.path), "-p", "pixel_size=NaN"], ("pixel_size", "finite")),
    ("provenance:nothing", lambda e: ["provenance", "--project", str(e.project.path)], ("provenance",)),
    ("provenance:999", lambda e: ["provenance", "999", "--project", str(e.project.path)], ("999",)),
    ("export:no-object", lambda e: ["export", "object:999", e.f("out.mrc"), "--project", str(e.project.path)], ("999",)),
    ("export:bad-suffix", lambda e: ["export", "1.volume", e.f("out.xyz"), "--project", str(e.project.path)], ("out.xyz",)),
    ("export:no-folder", lambda e: ["export", "1.volume", e.f("nodir/out.mrc"), "--project", str(e.project.path)], ("nodir",)),
    ("protocol:unknown", lambda e: ["run", "nosuch.protocol"], ("nosuch.protocol",)),
    ("protocol:describe-unknown", lambda e: ["protocols", "describe", "masks.nothing"], ("masks.nothing",)),
    ("exec:workers-0", lambda e: ["run", "masks.create", "-p", "size=8", "-p", "pixel_size=1", "--workers", "0"], ("--workers",)),
    ("exec:workers-neg", lambda e: ["runs", "resume", "1", "--project", str(e.project.path), "--workers", "-2"], ("--workers",)),
    ("exec:scheduler-local", lambda e: ["run", "masks.create", "-p", "size=8", "-p", "pixel_size=1", "--scheduler", "tcp://127.0.0.1:1"], ("--scheduler", "dask")),
    ("exec:scheduler-template", lambda e: ["template", "run", e.f("tpl_cycle.json"), "--project", str(e.project.path), "--scheduler", "tcp://x:1"], ("--scheduler",)),
]:  # fmt: skip
    CASES.append((_cid, _argv, _say))


def _argv(env: Env, build) -> list[str]:
    argv = build(env)
    if argv[0] == "run" and "--project" not in argv:
        argv = [*argv, "--project", str(env.project.path)]
    return argv


def test_corpus_is_large_and_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("cid, build, say", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(env, capsys, cid, build, say):
    before = (db_dump(env.project.db_path), runs_listing(env.project.path))
    rc = main(_argv(env, build))
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert rc == 2, (cap.out, cap.err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("emforge: error: ") and "Traceback" not in cap.err
    for word in say:
        assert word in lines[0], (word, lines[0])
    assert (db_dump(env.project.db_path), runs_listing(env.project.path)) == before


def test_the_corpus_can_fail_a_good_run_changes_the_database(env, capsys):
    """Control: a good import run through the same path does change the dump."""
    before = db_dump(env.project.db_path)
    rc = main(
        [
            "run",
            "masks.create",
            "-p",
            "size=8",
            "-p",
            "pixel_size=1",
            "--project",
            str(env.project.path),
        ]
    )
    capsys.readouterr()
    assert rc == 0 and db_dump(env.project.db_path) != before


SUBPROCESS_CASES = ["volume:stack", "import.volume:nan.mrc", "star:dup-optics", "input:bare-number", "exec:workers-0", "template:tpl_not_json.json"]  # fmt: skip


@pytest.mark.parametrize("cid", SUBPROCESS_CASES)
def test_bad_input_through_the_console_script(env, cid):
    exe = Path(sys.executable).parent / "emforge"
    if not exe.exists():
        pytest.skip("the 'emforge' console script is not installed (pip install -e .)")
    _, build, say = next(c for c in CASES if c[0] == cid)
    before = (db_dump(env.project.db_path), runs_listing(env.project.path))
    proc = subprocess.run(
        [str(exe), *_argv(env, build)], capture_output=True, text=True, timeout=120
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and all(w in lines[0] for w in say), lines
    assert (db_dump(env.project.db_path), runs_listing(env.project.path)) == before
