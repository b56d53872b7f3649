"""Benchmark-private virtual environments for peer frameworks (Scipion, ...).

``ensure_venv`` builds ``benchmarks/.envs/<name>/`` once (``python -m venv`` + ``pip install``
of pinned requirements) and reuses it while its marker file matches the requested requirements.
``run_in_venv`` runs a script with that interpreter and returns the JSON object printed on the
last line of its standard output.

Only the standard library is used here, so this module can be imported from any interpreter.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ENVS_ROOT", "ensure_venv", "run_in_venv", "PeerError"]

ENVS_ROOT = Path(__file__).resolve().parents[1] / ".envs"
_MARKER = "emforge-peer-env.json"


class PeerError(RuntimeError):
    """A peer environment could not be built, or a peer script failed."""


def _say(msg: str) -> None:
    print(f"[peers] {msg}", flush=True)


def _venv_python(root: Path) -> Path:
    return root / "bin" / "python"


def _wanted_marker(requirements: list[str]) -> dict:
    return {
        "requirements": list(requirements),
        "python": ".".join(map(str, sys.version_info[:3])),
        "base": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
    }


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(key, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _check_call(cmd: list[str], what: str, timeout: float) -> None:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=_clean_env(), check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise PeerError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _build(root: Path, requirements: list[str], timeout: float) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    t0 = time.perf_counter()
    _say(f"creating venv {root} with {base}")
    _check_call([base, "-m", "venv", "--clear", str(root)], "python -m venv", timeout)
    if requirements:
        _say(
            f"pip install {len(requirements)} pinned requirements into {root.name} (may take minutes)"
        )
        cmd = [str(_venv_python(root)), "-m", "pip", "install", "-q", "--no-input", *requirements]
        _check_call(cmd, "pip install", timeout)
    marker = _wanted_marker(requirements)
    marker["built_in_s"] = round(time.perf_counter() - t0, 1)
    (root / _MARKER).write_text(json.dumps(marker, indent=1))
    _say(f"venv {root.name} ready in {marker['built_in_s']} s")


def ensure_venv(name: str, requirements: list[str], *, timeout: float = 1200.0) -> Path:
    """Create (once) and return the python of ``benchmarks/.envs/<name>``.

    Parameters
    ----------
    name : str
        Folder name of the environment under ``benchmarks/.envs``.
    requirements : list of str
        pip requirement specifiers, normally pinned (``pkg==1.2.3``). The environment is
        rebuilt from scratch when this list (or the base Python version) differs from the one
        recorded in its marker file.
    timeout : float, keyword-only
        Seconds allowed for each of ``venv`` creation and ``pip install``.

    Returns
    -------
    pathlib.Path
        Path of the environment's ``bin/python``.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad environment name {name!r}")
    root = ENVS_ROOT / name
    ENVS_ROOT.mkdir(parents=True, exist_ok=True)
    with open(ENVS_ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmarks started at once build it only once
        marker = _read_marker(root)
        python = _venv_python(root)
        wanted = _wanted_marker(requirements)
        if marker is not None and python.exists():
            if all(marker.get(k) == v for k, v in wanted.items()):
                return python
            _say(f"venv {name}: requirements changed, rebuilding")
        if root.exists():
            shutil.rmtree(root)
        try:
            _build(root, requirements, timeout)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return python


def run_in_venv(
    python: Path | str, script: Path | str, args: list[str] | tuple = (), timeout: float = 600.0
) -> dict:
    """Run ``python script *args`` and return the JSON object on its last stdout line.

    Parameters
    ----------
    python : path
        Interpreter to use (as returned by :func:`ensure_venv`).
    script : path
        Script to run.
    args : sequence of str
        Command-line arguments for the script.
    timeout : float
        Seconds before the script is killed (raises :class:`PeerError`).

    Returns
    -------
    dict
        The JSON object printed as the last non-empty line of standard output.
    """
    cmd = [str(python), str(script), *map(str, args)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{' '.join(cmd)} ran past {timeout:.0f} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise PeerError(f"{' '.join(cmd)} exited {proc.returncode}\n{tail}")
    try:
        result = json.loads(lines[-1])
    except ValueError as exc:
        raise PeerError(
            f"{' '.join(cmd)}: last stdout line is not JSON: {lines[-1][:200]}"
        ) from exc
    if not isinstance(result, dict):
        raise PeerError(f"{' '.join(cmd)}: last stdout line is JSON but not an object")
    return result
