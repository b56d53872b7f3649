"""Validation refuses bad input before any run row exists: one line, exit 2, nothing written.

One test per defect: NaN/Inf params, sizes beyond memory, non-positive pixel sizes, executor
options, NaN/zero maps and stacks at import, duplicated optics groups, an ignored mask input,
identical half maps, pixel-size mismatches, bare object ids, file content in messages,
symlinks in run folders and reserved plugin names.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path

import numpy as np
import pytest
from projectstate import db_dump, runs_listing

from emforge.cli import main
from emforge.engine.checks import grid_problems, memory_problems
from emforge.io import write_volume
from emforge.project import Project

PX = 2.0


def refused(capsys, project: Project, *argv: str, say: tuple[str, ...] = ()) -> str:
    """Run the CLI in-process; assert exit 2, one stderr line, no traceback, nothing written."""
    before = (db_dump(project.db_path), runs_listing(project.path))
    rc = main([*argv, "--project", str(project.path)] if argv[0] == "run" else list(argv))
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert rc == 2, cap.err + cap.out
    assert len(lines) == 1, lines
    assert lines[0].startswith("emforge: error: ") and "Traceback" not in cap.err
    for word in say:
        assert word in lines[0], (word, lines[0])
    assert (db_dump(project.db_path), runs_listing(project.path)) == before
    return lines[0]


def ok(capsys, project: Project, *argv: str) -> None:
    rc = main([*argv, "--project", str(project.path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err + cap.out


def _map(tmp_path: Path, name: str, data: np.ndarray, px: float = PX) -> Path:
    path = tmp_path / name
    with np.errstate(invalid="ignore"):  # header statistics of a map with NaN/Inf
        write_volume(path, data.astype(np.float32), voxel_size=px)
    return path


def _blob(n: int = 24, seed: int = 0) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    rng = np.random.default_rng(seed)
    return np.exp(-(x * x + y * y + z * z) / 20.0) + 0.01 * rng.normal(size=(n, n, n))


def _import_map_and_mask(project, tmp_path, capsys, *, mask_px: float = PX) -> Project:
    """Run 1: a map with two (different) half maps; run 2: a mask of the same box whose pixel
    size is ``mask_px``."""
    m = _map(tmp_path, "map.mrc", _blob())
    h1 = _map(tmp_path, "h1.mrc", _blob(seed=1))
    h2 = _map(tmp_path, "h2.mrc", _blob(seed=2))
    mask = _map(tmp_path, "mask.mrc", (_blob() > 0.3).astype(np.float32), px=mask_px)
    ok(
        capsys,
        project,
        "run",
        "import.volume",
        "-p",
        f"path={m}",
        "-p",
        f"half1={h1}",
        "-p",
        f"half2={h2}",
    )
    ok(capsys, project, "run", "import.mask", "-p", f"path={mask}")
    return project


@pytest.fixture
def imported(project, tmp_path, capsys):
    """Run 1: a map with two (different) half maps; run 2: a mask of the same grid."""
    return _import_map_and_mask(project, tmp_path, capsys)


# --------------------------------------------------------------------------- 13: params


@pytest.mark.parametrize(
    "argv, name",
    [
        (["masks.volumes", "-i", "volume=1.volume", "-p", "fill_value=Infinity"], "fill_value"),
        (["masks.volumes", "-i", "volume=1.volume", "-p", "radius=NaN"], "radius"),
        (["sharpen.bfactor", "-i", "volume=1.volume", "-p", "fit_d_min=NaN"], "fit_d_min"),
        (["sharpen.bfactor", "-i", "volume=1.volume", "-p", "b_sharpen=-Infinity"], "b_sharpen"),
        (["masks.create", "-p", "size=16", "-p", "pixel_size=Infinity"], "pixel_size"),
    ],
)
def test_float_params_refuse_nan_and_inf(imported, capsys, argv, name):
    refused(capsys, imported, "run", *argv, say=(name, "finite"))


def test_mask_size_beyond_memory_is_refused_with_the_estimate(project, capsys):
    line = refused(
        capsys, project, "run", "masks.create", "-p", "size=100000", "-p", "pixel_size=1",
        say=("size", "GiB", "memory"),
    )  # fmt: skip
    # the mask and its written copy: 2 × 100000³ float32 = 8e15 bytes = 7,450,581 GiB
    assert f"{2 * 4 * 100000**3 / 2**30:,.0f} GiB" in line


def test_memory_helper_compares_with_available_memory():
    assert memory_problems("size", 1 << 20) == []
    (line,) = memory_problems("size", 1 << 62)
    assert line.startswith("param 'size'") and "GiB" in line


def test_more_parts_than_particles_is_refused(project, data_dir, capsys):
    ok(
        capsys,
        project,
        "run",
        "import.particles",
        "-p",
        f"star={data_dir / 'particles' / 'relion31.star'}",
    )
    refused(
        capsys, project, "run", "masks.particles", "-i", "particles=1.particles",
        "-p", "parts=10000000", say=("parts", "10000000", "5 particle"),
    )  # fmt: skip


@pytest.mark.parametrize("value", ["0", "-1", "-0.5"])
@pytest.mark.parametrize("protocol", ["import.volume", "import.particles", "masks.create"])
def test_non_positive_pixel_size_is_refused(project, data_dir, tmp_path, capsys, protocol, value):
    given = {
        "import.volume": f"path={_map(tmp_path, 'map.mrc', _blob())}",
        "import.particles": f"star={data_dir / 'particles' / 'relion31.star'}",
        "masks.create": "size=16",
    }[protocol]
    refused(
        capsys, project, "run", protocol, "-p", given, "-p", f"pixel_size={value}",
        say=("pixel_size", "greater than 0"),
    )  # fmt: skip


def test_absent_pixel_size_means_from_the_header(project, tmp_path, capsys):
    m = _map(tmp_path, "map.mrc", _blob(), px=1.7)
    ok(capsys, project, "run", "import.volume", "-p", f"path={m}")
    assert project.outputs(1)["volume"].pixel_size == pytest.approx(1.7)


@pytest.mark.parametrize(
    "extra, say",
    [
        (["--workers", "0"], ("--workers", "at least 1")),
        (["--workers", "-3"], ("--workers", "at least 1")),
        (["--scheduler", "tcp://127.0.0.1:8786"], ("--scheduler", "--executor dask")),
        (["--executor", "local", "--scheduler", "tcp://x:1"], ("--scheduler", "--executor dask")),
    ],
)
def test_executor_options_are_checked(project, tmp_path, capsys, extra, say):
    m = _map(tmp_path, "map.mrc", _blob())
    refused(capsys, project, "run", "import.volume", "-p", f"path={m}", *extra, say=say)


# --------------------------------------------------------------------------- 14: import


@pytest.mark.parametrize("kind, count", [("nan", 3), ("inf", 5), ("zeros", None)])
@pytest.mark.parametrize("protocol", ["import.volume", "import.volumes", "import.tomograms"])
def test_maps_with_non_finite_values_or_all_zeros_are_refused(
    project, tmp_path, capsys, protocol, kind, count
):
    data = _blob()
    if kind == "zeros":
        data = np.zeros_like(data)
    else:
        data.reshape(-1)[[7, 900, 4000, 5000, 6000][:count]] = np.nan if kind == "nan" else np.inf
    m = _map(tmp_path, f"{kind}.mrc", data)
    say = (str(m), f"{count} NaN/infinite") if count else (str(m), "all zeros")
    refused(capsys, project, "run", protocol, "-p", f"path={m}", say=say)


def test_a_particle_stack_is_refused_as_a_map_unless_asked(project, data_dir, tmp_path, capsys):
    stack = data_dir / "particles" / "relion31.mrcs"
    refused(
        capsys, project, "run", "import.volume", "-p", f"path={stack}",
        "-p", "pixel_size=2.8", say=(str(stack), "stack", "stack_as_map"),
    )  # fmt: skip
    ok(capsys, project, "run", "import.volume", "-p", f"path={stack}", "-p", "pixel_size=2.8",
       "-p", "stack_as_map=true")  # fmt: skip
    assert project.outputs(1)["volume"].shape == (5, 256, 256)


def test_duplicated_optics_group_is_refused_naming_both(project, data_dir, tmp_path, capsys):
    src = (data_dir / "particles" / "relion31.star").read_text()
    row = next(line for line in src.splitlines() if "opticsGroup1" in line)
    star = tmp_path / "dup.star"
    star.write_text(src.replace(row, row + "\n" + row.replace("opticsGroup1", "opticsGroupB")))
    (tmp_path / "relion31.mrcs").symlink_to(data_dir / "particles" / "relion31.mrcs")
    refused(
        capsys, project, "run", "import.particles", "-p", f"star={star}",
        say=(str(star), "rlnOpticsGroup 1", "defined twice", "opticsGroup1", "opticsGroupB"),
    )  # fmt: skip


# --------------------------------------------------------------------------- 15: wrong results


def test_mask_input_without_source_mask_is_refused(imported, capsys):
    refused(
        capsys, imported, "run", "masks.volumes", "-i", "volume=1.volume", "-i", "mask=2.mask",
        say=("mask", "source=mask"),
    )  # fmt: skip


def test_identical_half_maps_are_refused(project, tmp_path, capsys):
    m = _map(tmp_path, "map.mrc", _blob())
    h = _map(tmp_path, "h.mrc", _blob(seed=3))
    hcopy = _map(tmp_path, "hcopy.mrc", _blob(seed=3))
    ok(
        capsys,
        project,
        "run",
        "import.volume",
        "-p",
        f"path={m}",
        "-p",
        f"half1={h}",
        "-p",
        f"half2={hcopy}",
    )
    for protocol in ("sharpen.halfmaps", "analysis.local_resolution"):
        refused(
            capsys, project, "run", protocol, "-i", "volume=1.volume", say=("half2", "identical")
        )


def test_pixel_size_of_a_mask_is_checked_by_every_protocol(project, tmp_path, capsys):
    _import_map_and_mask(project, tmp_path, capsys, mask_px=PX * 1.5)
    for argv in (
        ["masks.volumes", "-i", "volume=1.volume", "-i", "mask=2.mask", "-p", "source=mask"],
        ["sharpen.halfmaps", "-i", "volume=1.volume", "-i", "mask=2.mask"],
        ["analysis.local_resolution", "-i", "volume=1.volume", "-i", "mask=2.mask"],
    ):
        refused(capsys, project, "run", *argv, say=("input 'mask'", "pixel size", "3 Å", "2 Å"))


def test_grid_helper_names_shape_and_pixel_size():
    class Obj:
        def __init__(self, shape, px):
            self.shape, self.pixel_size = shape, px

    assert grid_problems("mask", Obj((8, 8, 8), 1.0), Obj((8, 8, 8), 1.005), "map") == []
    lines = grid_problems("mask", Obj((8, 8, 9), 1.2), Obj((8, 8, 8), 1.0), "map")
    assert len(lines) == 2 and all(x.startswith("input 'mask'") for x in lines)


def test_a_bare_number_is_not_an_input_reference(imported, capsys):
    refused(
        capsys, imported, "run", "masks.volumes", "-i", "volume=1",
        say=("input 'volume'", "RUN.output", "object:1"),
    )  # fmt: skip
    ok(capsys, imported, "run", "masks.volumes", "-i", "volume=object:1", "-p", "radius=5")


# --------------------------------------------------------------------------- 16: safety


def test_errors_never_echo_file_content(project, tmp_path, capsys):
    text = tmp_path / "coords.txt"
    text.write_text("SECRETTOKEN 1 2\nanother line\n")
    line = refused(capsys, project, "run", "import.coordinates3d", "-p", f"path={text}",
                   say=(str(text), "line 1"))  # fmt: skip
    assert "SECRETTOKEN" not in line
    star = tmp_path / "bad.star"
    star.write_text("data_particles\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\nPASSWORD1 x\n")
    line = refused(
        capsys, project, "run", "import.coordinates3d", "-p", f"path={star}", say=(str(star),)
    )
    assert "PASSWORD1" not in line


def _new_run(project: Project, tmp_path: Path) -> tuple[int, Path]:
    from emforge.engine import create_run
    from emforge.engine.runs import run_row

    rid = create_run(project, "import.volume", {"path": str(_map(tmp_path, "map.mrc", _blob()))})
    return rid, Path(run_row(project, rid)["workdir"])


def test_writes_never_follow_a_symlink_out_of_the_project(project, tmp_path):
    from emforge.engine import execute_run

    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.log"
    victim.write_text("keep me\n")
    rid, workdir = _new_run(project, tmp_path)
    (workdir / "logs" / "run.log").unlink(missing_ok=True)
    os.symlink(victim, workdir / "logs" / "run.log")  # a link at a file the run writes
    os.symlink(victim, workdir / "extra" / "volume.mrc")
    assert execute_run(project, rid, workers=1, executor="inline") == "finished"
    assert victim.read_text() == "keep me\n"
    assert not (workdir / "logs" / "run.log").is_symlink()
    assert "[engine]" in (workdir / "logs" / "run.log").read_text()
    assert not (workdir / "extra" / "volume.mrc").is_symlink()


def test_a_run_folder_linked_out_of_the_project_is_refused(project, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    rid, workdir = _new_run(project, tmp_path)
    (workdir / "extra").rmdir()
    os.symlink(outside, workdir / "extra")
    line = refused(capsys, project, "runs", "resume", str(rid), "--project", str(project.path),
                   say=(str(workdir / "extra"), "symbolic link"))  # fmt: skip
    assert list(outside.iterdir()) == []
    assert str(outside) in line


def _fake_ep(name: str, value: str, dist: str):
    class Dist:
        def __init__(self, n):
            self.name, self.version = n, "9.9"

    ep = md.EntryPoint(name, value, "emforge.plugins")
    return type("EP", (), {"name": name, "value": value, "dist": Dist(dist), "load": ep.load})()


def test_builtin_plugin_names_are_reserved():
    from emforge.plugins import discover

    eps = [ep for ep in md.entry_points(group="emforge.plugins") if ep.name in ("import", "masks")]
    assert len(eps) == 2
    rogue = _fake_ep("import", "emforge.protocols.imports:manifest", "rogue-plugin")
    reg = discover([*eps, rogue])
    assert "import.volume" in reg and "masks.create" in reg
    (prob,) = [p for p in reg.problems if p.plugin == "import"]
    assert "rogue-plugin" in prob.error and "emforge" in prob.error and "reserved" in prob.error
