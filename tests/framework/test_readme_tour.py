"""README.md works as written: every command of "A tour" and the Python snippet after it run
on the real data, in a temporary folder laid out as the tour says (a map ``emd_3488.mrc`` and
``particles.star`` with its stack), with ``~`` in that folder.

Commands go through ``emforge.cli.main`` in-process (the console script's code, without an
interpreter start per line); ``~`` is expanded as the shell would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import starfile

from emforge.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def tour_commands() -> list[list[str]]:
    """The tour's command lines, split as the shell would (comments dropped)."""
    (block,) = _blocks(_section(README.read_text(encoding="utf-8"), "A tour"), "bash")
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_tour_is_parsed():
    commands = tour_commands()
    assert len(commands) >= 12 and all(c[0] == "emforge" for c in commands)
    assert any(c[1:3] == ["template", "run"] for c in commands)


@pytest.fixture
def tour_folder(data_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "emd_3488.mrc").symlink_to(data_dir / "maps" / "emd_3488.mrc")
    shutil.copy(data_dir / "particles" / "sample_particles_relion31.star", work / "particles.star")
    (work / "sample.mrcs").symlink_to(data_dir / "particles" / "sample.mrcs")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    return work


@pytest.mark.slow
def test_readme_tour_runs_as_written(tour_folder, capsys):
    outputs = []
    for argv in tour_commands():
        argv = [os.path.expanduser(a) if a.startswith("~") else a for a in argv]
        rc = main(argv[1:])
        cap = capsys.readouterr()
        assert rc == 0, f"{shlex.join(argv)}: exit {rc}: {cap.err}"
        assert "Traceback" not in cap.err
        outputs.append((argv, cap.out))
    project = Path(os.path.expanduser("~/projects/hemoglobin"))
    assert (project / "project.sqlite").is_file()
    why = next(out for argv, out in outputs if argv[1:3] == ["runs", "why"])
    assert "FRESH" in why
    template = next(out for argv, out in outputs if argv[1:3] == ["template", "run"])
    assert "template done" in template and "masked=run" in template
    exported = next(argv[3] for argv, _ in outputs if argv[1] == "export")
    optics = starfile.read(tour_folder / exported, always_dict=True)["optics"]
    assert list(optics["rlnImageSize"]) == [200, 200]  # sample.mrcs: 200 px, two groups
    assert (tour_folder / "emforge-myplug").is_dir()

    # the Python snippet that follows the tour, on the project the tour made
    text = README.read_text(encoding="utf-8")
    snippet = _blocks(text[text.index("The same from Python:") :], "python")[0]
    names: dict = {}
    exec(compile(snippet, "README.md", "exec"), names)
    assert names["volume"].pixel_size == pytest.approx(1.05, abs=1e-4)
    assert set(names["cols"]) >= {"rot", "tilt", "psi", "defocus_u"}
    assert len(names["cols"]["rot"]) == 17


def test_demo_template_names_the_blanks_to_set(project, capsys):
    rc = main(["template", "run", "demo", "-P", str(project.path), "--set", "map.pixel_size=1.05"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    for node, param, blank in [
        ("map", "path", "$map"),
        ("map", "half1", "$half1"),
        ("map", "half2", "$half2"),
        ("particles", "star", "$star"),
    ]:
        assert any(blank in line and f"--set {node}.{param}=" in line for line in lines), err
    assert main(["runs", "list", "-P", str(project.path)]) == 0
    assert "import.volume" not in capsys.readouterr().out  # nothing ran


def test_every_argument_has_help():
    from emforge.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            sub = getattr(action, "choices", None)
            if isinstance(sub, dict) and action.__class__.__name__ == "_SubParsersAction":
                for name, child in sub.items():
                    walk(child, f"{path} {name}")
            elif action.help is None and action.dest != "help":
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "emforge")
    assert not missing, missing


def _documented_commands() -> list[tuple[str, list[str]]]:
    root = README.parent
    found = []
    for path in [README, *sorted((root / "docs").glob("*.md"))]:
        for block in _blocks(path.read_text(encoding="utf-8"), "bash"):
            for line in block.splitlines():
                if line.startswith("emforge "):
                    argv = shlex.split(line.split(" | ")[0], comments=True)
                    # "[--cascade]" marks an optional flag in the guide
                    argv = [a.strip("[]") if a.startswith("[") else a for a in argv]
                    found.append((path.name, argv))
    return found


def test_every_documented_command_is_valid():
    """Each `emforge ...` line of README.md and docs/ parses, names an installed protocol with
    params and inputs it has, and a template that exists (the scaffold's myplug.* aside)."""
    from emforge.cli import build_parser
    from emforge.cli._commands import _template_file
    from emforge.plugins import default_registry

    parser, registry = build_parser(), default_registry()
    commands = _documented_commands()
    assert len(commands) > 50
    for where, argv in commands:
        line = f"{where}: {shlex.join(argv)}"
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"does not parse: {line}")
        if argv[1] == "run" and not args.protocol.startswith("myplug."):
            assert args.protocol in registry, line
            cls = registry.load(args.protocol)
            for item in args.param:
                assert item.partition("=")[0] in cls.Params.model_fields, line
            for item in args.input:
                assert item.partition("=")[0] in cls.inputs, line
        if argv[1:3] == ["template", "run"]:
            assert (
                Path(_template_file(str(README.parent / args.file))).is_file()
                or Path(_template_file(args.file)).is_file()
            ), line
