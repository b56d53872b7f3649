"""Start-up stays light: building the parser, ``--help`` and ``protocols list`` import none of
the heavy libraries (checked through ``sys.modules`` in a fresh interpreter, not timed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

HEAVY = ("numpy", "sqlalchemy", "pandas", "rich", "scipy", "pydantic")


def _imported_after(code: str) -> list[str]:
    probe = (
        "import contextlib, io, json, sys\n"
        f"{code}\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_parser_and_help_import_no_heavy_library():
    code = (
        "import emforge.cli as cli\n"
        "cli.build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'protocols' in buf.getvalue()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        cli.main(['run', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    assert _imported_after(code) == []


def test_protocols_list_imports_neither_the_database_nor_numpy():
    code = (
        "import emforge.cli as cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
        "    assert cli.main(['protocols', 'list']) == 0\n"
        "assert 'import.volume' in buf.getvalue()\n"
    )
    loaded = _imported_after(code)
    assert not {"numpy", "sqlalchemy", "pandas", "scipy", "rich"} & set(loaded)
    assert "pydantic" in loaded  # the manifests were read: the probe does see imports


def test_package_inits_are_lazy_and_keep_their_names():
    code = "import emforge, emforge.numerics, emforge.io\n"
    assert _imported_after(code) == []
    import emforge
    import emforge.numerics as numerics

    assert emforge.__version__ and "rfftn" in dir(numerics)
    for name in numerics.__all__:  # every public name still resolves
        assert getattr(numerics, name) is not None
    assert numerics.fft.rfftn is numerics.rfftn


def test_every_parser_command_names_an_existing_implementation():
    from emforge.cli import _commands, build_parser

    names = []

    def walk(parser: argparse.ArgumentParser) -> None:
        func = parser.get_default("func")
        if func is not None:
            names.append(func.__name__)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    assert len(names) > 20 and "protocols_list" in names
    missing = [n for n in names if not callable(getattr(_commands, n, None))]
    assert missing == []


def test_a_piped_trivial_run_loads_neither_rich_nor_a_process_pool(tmp_path):
    """``emforge run`` with its output piped (no progress bar to draw) does not import rich,
    and its one step runs inline, without multiprocessing; the messages are still printed
    and the run is recorded with its output."""
    from emforge.project import Project

    Project.init(tmp_path / "p")
    probe = (
        "import contextlib, io, json, sys\n"
        "import emforge.cli as cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as buf:\n"
        f"    rc = cli.main(['run', 'example.sleep', '-P', {str(tmp_path / 'p')!r},\n"
        "                 '-p', 'seconds=0', '-p', 'n_steps=1', '-p', 'register_output=true'])\n"
        "names = ['rich', 'sqlalchemy', 'multiprocessing', 'concurrent.futures.process']\n"
        "print(json.dumps([rc, buf.getvalue(), [m for m in names if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rc, text, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 0 and text.startswith("run 1 finished in ") and "outputs: 1.record" in text
    assert loaded == ["sqlalchemy"]  # the run reached the database, and loaded nothing else
    rows = Project.open(tmp_path / "p").list_objects(1)
    assert [r["name"] for r in rows] == ["record"]
