"""The lower bounds in setup.cfg are releases that have what emforge uses.

``FIRST`` records, for the dependencies whose bound is set by an API or a packaging fact, the
first release that has it (found by reading each release of the library). The whole suite was
run in a virtual environment holding exactly the lower bound of every dependency
(numpy 1.26.0, scipy 1.11.1, pyfftw 0.13.1, mrcfile 1.5.0, starfile 0.5.10, pandas 2.1.1,
pydantic 2.5.0, SQLAlchemy 2.0.0, rich 13.0.0, matplotlib 3.7.0, gemmi 0.6.0,
tifffile 2023.1.23, dask/distributed 2024.1.0). This test keeps the bounds from sliding
back below those releases and checks the installed libraries still offer the APIs.
"""

from __future__ import annotations

import configparser
import inspect
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"

#: package -> (first release that works, why)
FIRST = {
    "starfile": ("0.5.10", "starfile.to_string (0.5.10; read(parse_as_string=) since 0.5.6)"),
    "pandas": ("2.1.1", "starfile 0.5.10 itself requires pandas>=2.1.1"),
    "pyfftw": ("0.13.1", "first release with CPython 3.11 wheels (python_requires >= 3.11)"),
    "numpy": ("1.26", "the lowest release tested with the suite"),
    "scipy": ("1.11", "the lowest release tested with the suite"),
    "mrcfile": ("1.5", "the lowest release tested with the suite"),
    "pydantic": ("2.5", "the lowest release tested with the suite"),
    "sqlalchemy": ("2.0", "Connection/Engine 2.0 API"),
    "gemmi": ("0.6", "DensityCalculatorE, read_structure; the lowest release tested"),
    "numba": ("0.59", "first release for numpy 1.26 (it requires numpy<1.27,>=1.22)"),
}


def _lower_bounds() -> dict[str, Version]:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG, encoding="utf-8")
    bounds = {}
    for line in cfg["options"]["install_requires"].strip().splitlines():
        req = Requirement(line.strip())
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        assert lows, f"setup.cfg: {req.name} has no lower bound"
        bounds[req.name.lower()] = max(lows)
    return bounds


@pytest.mark.parametrize("package", sorted(FIRST))
def test_lower_bound_is_a_release_that_works(package):
    bounds = _lower_bounds()
    first, why = FIRST[package]
    assert package in bounds, f"setup.cfg does not list {package}"
    assert bounds[package] >= Version(first), f"{package}>={bounds[package]}: needs {first} ({why})"


def test_installed_starfile_has_the_api_used():
    import starfile

    assert callable(starfile.to_string)
    assert "parse_as_string" in inspect.signature(starfile.read).parameters
    assert {"float_format", "na_rep"} <= set(inspect.signature(starfile.to_string).parameters)
