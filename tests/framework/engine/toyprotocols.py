"""Test-only protocols for the engine tests, registered through an isolated registry.

* ``toy.chain`` — 5 chained steps ``s1 … s5``; step k writes ``extra/out{k}.mrc`` (16×64×64
  float32, ≈ 256 KB, a deterministic function of the params and step k-1's file), sleeps
  ``sleep`` seconds (half before writing, half after) and registers output ``out{k}``.
  ``s1`` uses ``seed``, ``s3`` uses ``gain``, ``s5`` uses ``tail``; ``s2``/``s4`` use no param.
  Every step start is appended to ``<workdir>/calls.log`` (outside ``extra/``), so a test can
  count real executions, including ones that were killed.
* ``toy.fan`` — three independent steps ``a``, ``b``, ``c`` (each uses its own param) and a
  ``merge`` step after them.
* ``toy.source`` / ``toy.consume`` — a Volume producer and a consumer with several params
  and an input, for chaining and validation tests.

The test directory is on ``sys.path`` (pytest's prepend import mode; child scripts insert it
themselves), so the classes load as ``toyprotocols:<Class>``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np

from emforge.engine import Input, Output, Protocol, ProtocolParams, Step, StepContext, param
from emforge.io import read_volume, write_volume
from emforge.objects import Volume
from emforge.plugins import PluginManifest, ProtocolEntry, Registry

__all__ = ["manifest", "make_registry", "ToyChain", "ToyFan", "ToySource", "ToyConsume", "N_CHAIN"]

N_CHAIN = 5
SHAPE = (16, 64, 64)
VOXEL = (2.0, 2.0, 2.0)


def _record_call(ctx: StepContext) -> None:
    with open(ctx.workdir / "calls.log", "a", encoding="utf-8") as fh:
        fh.write(f"{ctx.step}\n")


def _write(ctx: StepContext, name: str, data: np.ndarray) -> Volume:
    target = ctx.path(f"{name}.mrc")
    write_volume(target, data.astype(np.float32), voxel_size=VOXEL)
    return Volume(str(target), VOXEL[0], SHAPE, voxel_size=VOXEL)


def chain_step(
    ctx: StepContext, *, k: int, seed: int, gain: float, tail: float, sleep: float
) -> dict:
    """Step k of ``toy.chain``: out_k = f_k(out_{k-1}) (out_1 from the seed)."""
    _record_call(ctx)
    time.sleep(sleep / 2)
    if k == 1:
        data = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    else:
        prev, _ = read_volume(ctx.path(f"out{k - 1}.mrc"))
        if k == 3:
            data = prev * np.float32(gain)
        elif k == 5:
            data = prev + np.float32(tail)
        else:
            data = np.roll(prev, k, axis=2) * np.float32(0.9) + np.float32(k)
    ctx.output(f"out{k}", _write(ctx, f"out{k}", data))
    ctx.progress(1.0, f"s{k} written")
    time.sleep(sleep / 2)
    return {"k": k, "sum": float(data.sum(dtype=np.float64))}


class ToyChain(Protocol):
    id = "toy.chain"
    version = "1"
    label = "Five chained steps"

    class Params(ProtocolParams):
        seed: int = param(7, "Seed of the first step's random map")
        gain: float = param(0.5, "Factor applied by step 3")
        tail: float = param(1.0, "Offset added by step 5", unit="map units")
        sleep: float = param(
            0.0, "Seconds each step sleeps (does not change any output)", unit="s", ge=0
        )

    outputs = {
        f"out{k}": Output("Volume", f"map written by step {k}") for k in range(1, N_CHAIN + 1)
    }

    def steps(self) -> list[Step]:
        p = self.params
        uses = {1: ["seed"], 2: [], 3: ["gain"], 4: [], 5: ["tail"]}
        return [
            Step(
                f"s{k}",
                chain_step,
                deps=[f"s{k - 1}"] if k > 1 else [],
                uses=uses[k],
                outputs=[f"out{k}"],
                args=dict(k=k, seed=p.seed, gain=p.gain, tail=p.tail, sleep=p.sleep),
            )
            for k in range(1, N_CHAIN + 1)
        ]


def fan_step(ctx: StepContext, *, name: str, value: int) -> dict:
    _record_call(ctx)
    data = np.full(SHAPE, value, dtype=np.float32)
    ctx.output(name, _write(ctx, name, data))
    return {"value": value}


def merge_step(ctx: StepContext) -> dict:
    _record_call(ctx)
    total = sum(read_volume(ctx.path(f"{n}.mrc"))[0] for n in ("a", "b", "c"))
    ctx.output("merged", _write(ctx, "merged", total))
    return {}


class ToyFan(Protocol):
    id = "toy.fan"
    version = "1"

    class Params(ProtocolParams):
        a: int = param(1, "Value of map a")
        b: int = param(2, "Value of map b")
        c: int = param(3, "Value of map c")

    outputs = {n: Output("Volume", f"map {n}") for n in ("a", "b", "c", "merged")}

    def steps(self) -> list[Step]:
        p = self.params
        steps = [
            Step(n, fan_step, uses=[n], outputs=[n], args=dict(name=n, value=getattr(p, n)))
            for n in "abc"
        ]
        return steps + [
            Step("merge", merge_step, deps=["a", "b", "c"], uses=[], outputs=["merged"])
        ]


def source_step(ctx: StepContext, *, value: float) -> dict:
    ctx.output("volume", _write(ctx, "source", np.full(SHAPE, value, dtype=np.float32)))
    return {}


class ToySource(Protocol):
    id = "toy.source"
    version = "1"

    class Params(ProtocolParams):
        value: float = param(1.0, "Constant value of the map", unit="map units")

    outputs = {"volume": Output("Volume", "a constant map")}

    def steps(self) -> list[Step]:
        return [Step("make", source_step, outputs=["volume"], args=dict(value=self.params.value))]


def consume_step(ctx: StepContext, *, path: str, factor: float) -> dict:
    data, _ = read_volume(path)
    ctx.output("volume", _write(ctx, "scaled", data * np.float32(factor)))
    return {}


class ToyConsume(Protocol):
    id = "toy.consume"
    version = "1"

    class Params(ProtocolParams):
        factor: float = param(2.0, "Scale factor", gt=0)
        count: int = param(1, "A count", ge=1, le=10)
        mode: Literal["fast", "slow"] = param("fast", "A choice", choices=("fast", "slow"))
        note: str = param("", "Free text; must not be 'bad'")

    inputs = {"volume": Input("Volume", "the map to scale")}
    outputs = {"volume": Output("Volume", "the scaled map")}

    def validate(self) -> list[str]:
        problems = []
        if self.params.note == "bad":
            problems.append("param 'note': must not be 'bad'")
        if self.params.count > 5 and self.params.mode == "fast":
            problems.append("param 'count': more than 5 needs mode 'slow'")
        return problems

    def steps(self) -> list[Step]:
        return [
            Step(
                "scale",
                consume_step,
                outputs=["volume"],
                args=dict(path=self.input["volume"].path, factor=self.params.factor),
            )
        ]


manifest = PluginManifest(
    name="toy",
    version="0.0.1",
    description="Engine test protocols",
    protocols=[
        ProtocolEntry(id="toy.chain", python_name="toyprotocols:ToyChain"),
        ProtocolEntry(id="toy.fan", python_name="toyprotocols:ToyFan"),
        ProtocolEntry(id="toy.source", python_name="toyprotocols:ToySource"),
        ProtocolEntry(id="toy.consume", python_name="toyprotocols:ToyConsume"),
    ],
)


def make_registry() -> Registry:
    """The toy protocols plus the installed import protocols and the example plugin."""
    from emforge.protocols.imports import manifest as import_manifest
    from emforge_example import manifest as example_manifest

    return Registry.from_manifests(
        [manifest, import_manifest, example_manifest], distribution="tests"
    )


def output_bytes(workdir: str | Path) -> dict[str, bytes]:
    """Bytes of every file under a run's ``extra/`` folder, by relative path.

    Hidden files (``.name.<random>.tmp``, the atomic writer's temporaries that a SIGKILL in
    the middle of a write leaves behind) are not outputs and are left out.
    """
    extra = Path(workdir) / "extra"
    return {
        str(p.relative_to(extra)): p.read_bytes()
        for p in sorted(extra.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
