"""The example plugin's protocols: manifest, params, validation and steps run by hand.

Steps are called directly with a real :class:`emforge.engine.context.StepContext`, the way
a plugin author tests them without a project; the engine tests run them end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError as PydanticValidationError

from emforge.engine.context import StepContext
from emforge.engine.protocol import Protocol
from emforge.io.mrc import read_info, read_volume, write_volume
from emforge.objects import Volume, VolumeMask
from emforge.plugins import Registry
from emforge_example import manifest

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _context(tmp_path: Path, step: str) -> StepContext:
    for sub in ("extra", "tmp", "logs"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    return StepContext(run_id=1, step=step, workdir=tmp_path)


def _run(protocol: Protocol, tmp_path: Path) -> tuple[dict, dict]:
    """Run every step in order; return (outputs by name, results by step name)."""
    outputs, results = {}, {}
    for step in protocol.steps():
        ctx = _context(tmp_path, step.name)
        results[step.name] = step.fn(ctx, **step.args) or {}
        outputs.update({r["name"]: r["object"] for r in ctx.registrations})
    return outputs, results


def _volume(tmp_path: Path, data: np.ndarray, pixel_size=1.5, origin=(3.0, -4.0, 5.0)) -> Volume:
    path = tmp_path / "input.mrc"
    write_volume(path, data, voxel_size=pixel_size, origin=origin)
    return Volume(path=str(path), pixel_size=pixel_size, shape=data.shape, origin=origin)


def test_manifest_lists_loadable_protocols():
    registry = Registry.from_manifests([manifest])
    assert set(registry.protocols) == {"example.normalize", "example.threshold", "example.sleep"}
    for protocol_id in registry.protocols:
        cls = registry.load(protocol_id)
        assert issubclass(cls, Protocol) and cls.id == protocol_id
        schema = cls.params_schema()
        assert all(field.get("description") for field in schema["properties"].values())
    assert not registry.problems


def test_params_are_frozen_and_strict():
    from emforge_example.protocols import Normalize, Threshold

    p = Normalize.Params(std=2.0)
    with pytest.raises(PydanticValidationError):
        p.std = 3.0
    with pytest.raises(PydanticValidationError, match="std"):
        Normalize.Params(std=0)
    with pytest.raises(PydanticValidationError, match="extra"):
        Threshold.Params(cutoff=1.0)
    with pytest.raises(PydanticValidationError, match="method"):
        Threshold.Params(method="median")


def test_normalize_then_threshold_chain(tmp_path):
    from emforge_example.protocols import Normalize, Threshold

    rng = np.random.default_rng(2)
    data = rng.normal(10.0, 4.0, size=(20, 24, 28)).astype(np.float32)
    vol = _volume(tmp_path, data)
    norm = Normalize(Normalize.Params(mean=0.0, std=1.0), {"volume": vol})
    assert norm.validate() == []
    outputs, results = _run(norm, tmp_path / "run1")
    out = outputs["volume"]
    assert type(out) is Volume and out.shape == data.shape
    assert out.pixel_size == 1.5 and out.origin == vol.origin
    arr, info = read_volume(out.path)
    assert info.voxel_size == pytest.approx((1.5, 1.5, 1.5)) and info.origin == pytest.approx(
        vol.origin
    )
    assert arr.mean(dtype=np.float64) == pytest.approx(0.0, abs=1e-5)
    assert arr.std(dtype=np.float64) == pytest.approx(1.0, rel=1e-5)
    assert results["normalize"]["input_mean"] == pytest.approx(10.0, abs=0.1)
    assert "mean 0" in norm.summary(outputs, results)

    thr = Threshold(Threshold.Params(method="value", threshold=1.0), {"volume": out})
    outputs2, results2 = _run(thr, tmp_path / "run2")
    mask = outputs2["mask"]
    assert type(mask) is VolumeMask and not mask.soft and mask.origin == vol.origin
    marr, _ = read_volume(mask.path)
    assert np.array_equal(marr, (arr > 1.0).astype(np.float32))
    expected = np.count_nonzero(arr > 1.0) / arr.size
    assert results2["threshold"]["fraction_inside"] == pytest.approx(expected)
    # a normal distribution has ~15.9% of its mass above mean + 1 sigma
    assert expected == pytest.approx(0.1587, abs=0.01)


def test_normalize_validate_names_the_param():
    from emforge_example.protocols import Normalize

    vol = Volume(path="unused.mrc", pixel_size=1.0, shape=(16, 16, 16))
    problems = Normalize(Normalize.Params(mask_radius=9.0), {"volume": vol}).validate()
    assert len(problems) == 1 and problems[0].startswith("mask_radius:")


def test_normalize_constant_map_is_a_file_error(tmp_path):
    from emforge.errors import InputFileError
    from emforge_example.protocols import Normalize

    vol = _volume(tmp_path, np.full((8, 8, 8), 2.0, dtype=np.float32))
    with pytest.raises(InputFileError, match="input.mrc: .*constant"):
        _run(Normalize(Normalize.Params(), {"volume": vol}), tmp_path / "run")


def test_sleep_steps_are_independent(tmp_path):
    from emforge_example.protocols import Sleep

    proto = Sleep(Sleep.Params(seconds=0.0, n_steps=3), {})
    steps = proto.steps()
    assert [s.name for s in steps] == ["sleep_1", "sleep_2", "sleep_3"]
    assert all(not s.deps for s in steps) and list(Sleep.outputs) == ["record"]
    assert Sleep.outputs["record"].optional and Sleep.inputs == {}
    outputs, results = _run(proto, tmp_path)
    assert outputs == {} and results["sleep_2"]["index"] == 1
    assert Sleep.Params().seconds == 1.0 and Sleep.Params().n_steps == 4
    # register_output: only the last step registers the record (what the benchmark's trivial
    # protocol does, as Scipion's registers its one output)
    proto = Sleep(Sleep.Params(seconds=0.25, n_steps=2, register_output=True), {})
    assert [list(s.outputs) for s in proto.steps()] == [[], ["record"]]
    outputs, _ = _run(proto, tmp_path / "rec")
    assert list(outputs) == ["record"] and outputs["record"].values == (0.25,)


def test_chain_on_a_real_map(tmp_path):
    from emforge_example.protocols import Normalize, Threshold

    path = DATA / "maps" / "emd_1832.map"
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    info = read_info(path)
    vol = Volume(path=str(path), pixel_size=info.pixel_size, shape=info.shape, origin=info.origin)
    norm = Normalize(Normalize.Params(mask_radius=20.0), {"volume": vol})
    outputs, _ = _run(norm, tmp_path / "run1")
    arr, out_info = read_volume(outputs["volume"].path)
    assert out_info.voxel_size == pytest.approx(info.voxel_size)
    assert out_info.origin == pytest.approx(info.origin)
    from emforge_example.kernels import sphere_mask

    inside = arr[sphere_mask(arr.shape, 20.0)]
    assert inside.mean(dtype=np.float64) == pytest.approx(0.0, abs=1e-4)
    assert inside.std(dtype=np.float64) == pytest.approx(1.0, rel=1e-4)
    thr = Threshold(Threshold.Params(sigma=3.0), {"volume": outputs["volume"]})
    _, results = _run(thr, tmp_path / "run2")
    assert 0.0 < results["threshold"]["fraction_inside"] < 0.2
