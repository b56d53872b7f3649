"""Checks shared by every protocol's ``validate()``: memory estimates and matching grids.

Each returns a list of problem lines (empty when all is well), in the form ``validate()``
returns, so a protocol adds them to its own list and the user sees every problem at once.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["available_memory", "memory_problems", "grid_problems", "PIXEL_SIZE_TOLERANCE"]

#: relative difference of two pixel sizes above which two grids do not match (1%)
PIXEL_SIZE_TOLERANCE = 0.01

_GIB = float(1 << 30)


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (``MemAvailable`` on Linux).

    Falls back to the free physical pages where ``/proc/meminfo`` does not exist; returns 0
    when neither can be read (callers then skip the check).
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def memory_problems(name: str, nbytes: float, *, available: int | None = None) -> list[str]:
    """A problem line when an allocation of ``nbytes`` cannot fit the available memory.

    Parameters
    ----------
    name : str
        The param whose value sets the size (named in the message).
    nbytes : float
        The estimated peak memory of the step, in bytes.
    available : int, optional
        Bytes available (default: :func:`available_memory`); 0 skips the check.

    Returns
    -------
    list of str
        ``["param 'size': needs about 7,450,581 GiB of memory, 19.5 GiB available"]`` or ``[]``.
    """
    avail = available_memory() if available is None else available
    if avail <= 0 or nbytes <= avail:
        return []
    return [
        f"param '{name}': needs about {nbytes / _GIB:,.0f} GiB of memory, "
        f"{avail / _GIB:.1f} GiB available"
    ]


def grid_problems(
    name: str,
    obj: Any,
    reference: Any,
    what: str,
    *,
    check_shape: bool = True,
    tolerance: float = PIXEL_SIZE_TOLERANCE,
) -> list[str]:
    """Problems when ``obj`` (input ``name``) is not on the grid of ``reference``.

    Both have ``shape`` and ``pixel_size`` (Å); a pixel size of 0 or less (unknown) is not
    compared. Pixel sizes match within ``tolerance`` (relative, default 1%).

    Parameters
    ----------
    name : str
        The input being checked (a mask, a half map, a reference), named in the message.
    obj, reference
        Objects with ``shape`` ((z, y, x) or (y, x)) and ``pixel_size``.
    what : str
        What ``reference`` is, for the message ("map", "half maps", "particle images").
    check_shape : bool
        Compare the shapes too (off where the caller reports shapes itself).
    tolerance : float
        Largest relative pixel-size difference accepted.

    Returns
    -------
    list of str
        One line per mismatch, each starting with ``input '<name>'``.
    """
    problems = []
    shape, ref_shape = tuple(obj.shape), tuple(reference.shape)
    if check_shape and shape != ref_shape:
        xyz = "x×y×z" if len(ref_shape) == 3 else "x×y"
        problems.append(
            f"input '{name}': shape {'×'.join(map(str, shape[::-1]))} px ({xyz}) does not match "
            f"the {what} ({'×'.join(map(str, ref_shape[::-1]))} px)"
        )
    px, ref_px = float(obj.pixel_size or 0), float(reference.pixel_size or 0)
    if px > 0 and ref_px > 0 and abs(px - ref_px) > tolerance * ref_px:
        problems.append(
            f"input '{name}': pixel size {px:.4g} Å differs from the {what} "
            f"({ref_px:.4g} Å) by more than {tolerance:.1%}"
        )
    return problems
