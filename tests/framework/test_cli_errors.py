"""Bad input through the real ``emforge`` console script: one clear line, exit 2, nothing written.

Every case runs in its own project; all cases run as parallel subprocesses (a module fixture),
and each test checks one of them: exit status 2, one stderr line naming the file (or param)
and the problem, no traceback, and the project unchanged — the database file's bytes, the rows
of every table and the ``Runs/`` folder. The mask case (``emd_3488_contour_mask.mrc``, 100x91x91,
against ``emd_3488.mrc``, 100^3) imports both in-process first, then asks ``masks.volumes``. A control case (the same pixel-size-0 map with an
explicit pixel size) must succeed and change the database, so the "unchanged" check can fail.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from emforge.project import DB_NAME, Project

TABLES = ("meta", "runs", "steps", "objects", "edges", "set_columns")


def emforge_exe() -> str:
    """The installed console script next to this interpreter (else on PATH)."""
    here = Path(sys.executable).parent / "emforge"
    found = str(here) if here.exists() else shutil.which("emforge")
    if not found:
        pytest.skip("the 'emforge' console script is not installed (pip install -e .)")
    return found


def snapshot(project: Path) -> tuple[str, dict[str, list], list[str]]:
    """(sha256 of project.sqlite, rows of every table, files under Runs/)."""
    digest = hashlib.sha256((project / DB_NAME).read_bytes()).hexdigest()
    con = sqlite3.connect(f"{(project / DB_NAME).as_uri()}?mode=ro", uri=True)
    try:
        rows = {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        con.close()
    files = sorted(str(p.relative_to(project)) for p in (project / "Runs").rglob("*"))
    return digest, rows, files


@dataclass
class Case:
    args: list[str]
    must_say: tuple[str, ...]  # every one of these appears in the error line
    returncode: int = -1
    stdout: str = ""
    stderr: str = ""
    before: tuple = ()
    after: tuple = ()


def _write_bad_files(tmp: Path, data: Path) -> dict[str, Path]:
    good = data / "maps" / "emd_3488.mrc"
    files = {
        "truncated": tmp / "emd_3488_truncated.mrc",
        "text": tmp / "notes_not_a_map.mrc",
        "px0": tmp / "pixel_size_zero.mrc",
        "star": tmp / "no_image_name.star",
    }
    raw = good.read_bytes()
    files["truncated"].write_bytes(
        raw[: 1024 + (len(raw) - 1024) // 3]
    )  # header intact, data cut short
    files["text"].write_text("This is a text file, not a map.\n" * 50)
    with mrcfile.new(files["px0"]) as m:
        m.set_data(np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32))
        m.voxel_size = 0.0
    lines = (data / "particles" / "relion31.star").read_text().splitlines()
    files["star"].write_text("\n".join(_drop_star_column(lines, "_rlnImageName")) + "\n")
    return files


def _drop_star_column(lines: list[str], label: str) -> list[str]:
    """Remove one column (header line and the field of every row) from the particles loop."""
    start = lines.index("data_particles")
    labels = [i for i in range(start, len(lines)) if lines[i].startswith("_rln")]
    drop = next(k for k, i in enumerate(labels) if lines[i].split()[0] == label)
    out = lines[: labels[drop]] + lines[labels[drop] + 1 : labels[-1] + 1]
    for row in lines[labels[-1] + 1 :]:
        fields = row.split()
        out.append(
            " ".join(fields[:drop] + fields[drop + 1 :]) if len(fields) == len(labels) else row
        )
    return out


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Case]:
    tmp = tmp_path_factory.mktemp("cli")
    f = _write_bad_files(tmp, data_dir)
    missing = tmp / "nowhere" / "missing_map.mrc"
    cases = {
        "truncated-mrc": Case(
            ["import.volume", "-p", f"path={f['truncated']}"], (f["truncated"].name, "truncated")
        ),
        "not-mrc": Case(
            ["import.volume", "-p", f"path={f['text']}"], (f["text"].name, "not an MRC file")
        ),
        "missing-file": Case(
            ["import.volume", "-p", f"path={missing}"], ("missing_map.mrc", "no such file")
        ),
        "truncated-mask": Case(
            ["import.mask", "-p", f"path={f['truncated']}"], (f["truncated"].name, "truncated")
        ),
        "star-missing-column": Case(
            ["import.particles", "-p", f"star={f['star']}"], (f["star"].name, "rlnImageName")
        ),
        "pixel-size-0": Case(
            ["import.volume", "-p", f"path={f['px0']}"],
            (f["px0"].name, "pixel_size", "pixel size 0"),
        ),
        "mask-shape-mismatch": Case(
            ["masks.volumes", "-i", "volume=1.volume", "-i", "mask=2.mask", "-p", "source=mask"],
            ("input 'mask'", "91×91×100", "100×100×100", "does not match"),
        ),
        "control-pixel-size-given": Case(
            ["import.volume", "-p", f"path={f['px0']}", "-p", "pixel_size=1.5"], ()
        ),
    }
    exe = emforge_exe()
    procs = {}
    for name, case in cases.items():
        project = Project.init(tmp / f"proj_{name}")
        if (
            name == "mask-shape-mismatch"
        ):  # run 1: the map (100^3), run 2: its contour mask (100x91x91)
            project.run(
                "import.volume",
                params={"path": str(data_dir / "maps" / "emd_3488.mrc")},
                executor="inline",
            )
            project.run(
                "import.mask",
                params={"path": str(data_dir / "maps" / "emd_3488_contour_mask.mrc")},
                executor="inline",
            )
        proj = project.path
        case.before = snapshot(proj)
        procs[name] = (
            proj,
            subprocess.Popen(
                [exe, "run", *case.args, "-P", str(proj)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp,
            ),
        )
    for name, (proj, p) in procs.items():
        case = cases[name]
        case.stdout, case.stderr = p.communicate(timeout=120)
        case.returncode = p.returncode
        case.after = snapshot(proj)
    return cases


BAD = [
    "truncated-mrc",
    "not-mrc",
    "missing-file",
    "truncated-mask",
    "star-missing-column",
    "pixel-size-0",
    "mask-shape-mismatch",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_one_line_exit_2_database_unchanged(
    cli_results: dict[str, Case], name: str
) -> None:
    case = cli_results[name]
    report = f"exit {case.returncode}; stderr: {case.stderr!r}; stdout: {case.stdout!r}"
    assert case.returncode == 2, report
    assert "Traceback" not in case.stderr + case.stdout, report
    lines = case.stderr.splitlines()
    assert len(lines) == 1, report
    line = lines[0]
    assert line.startswith("emforge: error: "), report
    for word in case.must_say:
        assert word in line, f"{word!r} not in {line!r}"
    assert case.after[0] == case.before[0], "project.sqlite bytes changed"
    assert case.after[1] == case.before[1], "database rows changed"
    assert case.after[2] == case.before[2], "files under Runs/ changed"


def test_control_same_map_with_pixel_size_is_imported(cli_results: dict[str, Case]) -> None:
    case = cli_results["control-pixel-size-given"]
    assert case.returncode == 0, case.stderr
    assert case.after[1]["runs"] != case.before[1]["runs"]
    assert len(case.after[1]["objects"]) == 1 and case.after[2]
