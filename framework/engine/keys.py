"""Canonical hashing of params and step keys, and loading a run's protocol instance.

A step's key is the hash of (protocol id, protocol version, step name, canonical JSON of
the params the step uses, the data versions of the run's inputs, the keys of the steps it
depends on). Hashing fails loudly on a value it cannot serialise: a silent fallback would
make a changed argument invisible to resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from graphlib import CycleError, TopologicalSorter
from typing import Any

from ..errors import ParamError
from .protocol import ProtocolParams, Step

__all__ = ["canonical_json", "params_dict", "step_keys", "toposort"]


def _refuse(value: Any) -> Any:
    raise TypeError(
        f"cannot hash a value of type {type(value).__name__} ({value!r:.60}); params must be "
        "JSON-serialisable (numbers, strings, booleans, lists, dicts)"
    )


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON; raises TypeError on anything not JSON-serialisable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_refuse)


def params_dict(params: ProtocolParams) -> dict[str, Any]:
    """The params as plain JSON data (enums by value, paths as strings)."""
    return params.model_dump(mode="json")


def toposort(steps: Sequence[Step]) -> list[Step]:
    """Steps ordered so each comes after its deps; errors on unknown deps and cycles."""
    by_name = {}
    for s in steps:
        if s.name in by_name:
            raise ParamError("steps", f"two steps are named {s.name!r}")
        by_name[s.name] = s
    for s in steps:
        for d in s.deps:
            if d not in by_name:
                raise ParamError("steps", f"step {s.name!r} depends on unknown step {d!r}")
    sorter = TopologicalSorter({s.name: s.deps for s in steps})
    try:
        return [by_name[name] for name in sorter.static_order()]
    except CycleError as err:
        # err.args[1] lists each node before the one that depends on it: read it backwards
        trail = " -> ".join(reversed(err.args[1]))
        raise ParamError("steps", f"dependency cycle: {trail}") from None


def step_keys(
    protocol_id: str,
    version: str,
    params: dict[str, Any],
    input_versions: dict[str, Any],
    steps: Sequence[Step],
) -> dict[str, str]:
    """The key of every step (see module docstring)."""
    keys: dict[str, str] = {}
    inputs_json = canonical_json(input_versions)
    for s in toposort(steps):
        used = params if s.uses is None else {k: params[k] for k in s.uses}
        payload = canonical_json(
            {
                "protocol": protocol_id,
                "version": version,
                "step": s.name,
                "params": used,
                "inputs": inputs_json,
                "deps": sorted(keys[d] for d in s.deps),
            }
        )
        keys[s.name] = hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
    return keys
