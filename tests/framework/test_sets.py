"""Columnar sets in the project database: create, read, iterate, select, copy, append, delete.

Ground truth is the numpy data the test itself wrote: whatever goes in must come back exactly
(bit for bit, strings equal, NaN defaults where a column was not given). Most tests shrink the
chunk size so that every operation crosses several chunks; one uses the real chunk size.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from emforge import sets as _sets
from emforge.columns import PARTICLE_COLUMNS
from emforge.errors import NotFoundError, ParamError
from emforge.objects import Particle
from emforge.project import EMSet, Project

N = 100
EXTRAS = ("ex_int", "ex_str", "ex_float")


def particle_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard particle columns (without score, voltage, cs, ...) plus int, str and float extras."""
    rng = np.random.default_rng(seed)
    mics = np.array([f"mic_{i:03d}.mrc" for i in range(7)], dtype=object)
    return {
        # stacks outside the project: stored (and read back) exactly as given
        "image_path": np.array(["/data/stack_a.mrcs", "/data/stack_b.mrcs"], dtype=object)[
            rng.integers(0, 2, n)
        ],
        "image_index": rng.integers(0, 10_000, n),
        "pixel_size": np.full(n, 1.05),
        "rot": rng.uniform(-180, 180, n),
        "tilt": rng.uniform(0, 180, n),
        "psi": rng.uniform(-180, 180, n),
        "shift_x": rng.normal(0, 3, n),
        "shift_y": rng.normal(0, 3, n),
        "defocus_u": rng.uniform(5_000, 30_000, n),
        "defocus_v": rng.uniform(5_000, 30_000, n),
        "defocus_angle": rng.uniform(0, 180, n),
        "micrograph": mics[rng.integers(0, len(mics), n)],
        "coord_x": rng.uniform(0, 4096, n),
        "coord_y": rng.uniform(0, 4096, n),
        "subset": rng.integers(1, 3, n),
        "class_id": rng.integers(0, 5, n),
        "ex_int": rng.integers(-(2**40), 2**40, n),
        "ex_str": np.array(["a", "b", "c", "ünï"], dtype=object)[rng.integers(0, 4, n)],
        "ex_float": rng.normal(0, 1, n),
    }


def assert_columns_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, values in want.items():
        assert name in got, f"column {name} missing"
        assert len(got[name]) == len(values), name
        if np.asarray(values).dtype.kind == "f":
            assert np.array_equal(got[name], values, equal_nan=True), name
        else:
            assert np.array_equal(got[name], values), name


def object_ids_in_set_columns(project: Project) -> set[int]:
    with sqlite3.connect(project.db_path) as con:
        return {r[0] for r in con.execute("SELECT DISTINCT object_id FROM set_columns")}


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 16 items, so that a set of 100 spans 7 chunks with a partial last one."""
    monkeypatch.setattr(_sets, "CHUNK", 16)
    return 16


@pytest.fixture
def cols() -> dict[str, np.ndarray]:
    return particle_columns(N)


@pytest.fixture
def parts(project: Project, cols: dict[str, np.ndarray], small_chunks: int) -> EMSet:
    return project.create_set("SetOfParticles", cols, name="particles", attrs={"box": [64, 64]})


# -- create / read / count / iterate --------------------------------------------------
def test_create_reads_back_every_column_exactly(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    back = parts.read()
    assert np.array_equal(back["id"], np.arange(1, N + 1))
    assert_columns_equal(back, cols)
    # standard columns not given are filled with their schema default
    given = set(cols)
    for col in PARTICLE_COLUMNS:
        if col.name not in given:
            assert np.array_equal(
                back[col.name], np.full(N, col.default, dtype=col.dtype), equal_nan=True
            )
    assert back["ex_int"].dtype == np.int64
    assert back["ex_float"].dtype == np.float64
    assert back["ex_str"].dtype == object and isinstance(back["ex_str"][0], str)
    assert set(parts.column_names()) == {"id", *(c.name for c in PARTICLE_COLUMNS), *EXTRAS}


def test_read_selected_columns(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    back = parts.read("ex_str", "rot", "micrograph")
    assert list(back) == ["ex_str", "rot", "micrograph"]
    assert_columns_equal(back, {k: cols[k] for k in back})
    with pytest.raises(ParamError, match="no_such_column"):
        parts.read("rot", "no_such_column")


def test_count(project: Project, parts: EMSet) -> None:
    assert len(parts) == N
    assert parts.count == N
    assert project.object_row(parts.id)["count"] == N
    assert len(project.get(parts.id)) == N


def test_iterate_items(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    items = list(parts)
    assert len(items) == N
    assert all(type(it) is Particle for it in items)
    for i in (0, 17, N - 1):
        it = items[i]
        assert it.id == i + 1
        assert it.rot == cols["rot"][i] and it.defocus_v == cols["defocus_v"][i]
        assert it.micrograph == cols["micrograph"][i] and it.image_index == cols["image_index"][i]
        assert it.extra == {
            "ex_int": int(cols["ex_int"][i]),
            "ex_str": cols["ex_str"][i],
            "ex_float": float(cols["ex_float"][i]),
        }
        assert type(it.extra["ex_int"]) is int and type(it.extra["ex_str"]) is str
        assert np.isnan(it.score) and it.phase_shift == 0.0


# -- select ------------------------------------------------------------------------------
def test_select_by_ids(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    got = parts.select(ids=[77, 5, 1, 9999])
    rows = np.array([0, 4, 76])  # stored order; unknown id 9999 ignored
    assert np.array_equal(got["id"], rows + 1)
    assert_columns_equal(got, {k: v[rows] for k, v in cols.items()})
    few = parts.select(ids=np.array([3, 4]), columns=["ex_str"])
    assert set(few) == {"id", "ex_str"}
    assert np.array_equal(few["ex_str"], cols["ex_str"][[2, 3]])


@pytest.mark.parametrize(
    "where",
    [
        [("defocus_u", ">", 20_000.0)],
        [("defocus_u", "<=", 12_000.0), ("subset", "==", 2)],
        [("ex_str", "in", ["b", "ünï"]), ("class_id", "!=", 0)],
        [("micrograph", "==", "mic_003.mrc")],
        [("ex_int", ">=", 0), ("rot", "<", 0.0), ("tilt", ">", 30.0)],
    ],
)
def test_select_where(parts: EMSet, cols: dict[str, np.ndarray], where: list[tuple]) -> None:
    ops = {
        ">": np.greater,
        ">=": np.greater_equal,
        "<": np.less,
        "<=": np.less_equal,
        "==": np.equal,
        "!=": np.not_equal,
    }
    keep = np.ones(N, dtype=bool)
    for name, op, value in where:
        keep &= (
            np.isin(cols[name], value) if op == "in" else ops[op](cols[name], value).astype(bool)
        )
    assert 0 < keep.sum() < N  # the condition really selects
    got = parts.select(where=where)
    assert np.array_equal(got["id"], np.flatnonzero(keep) + 1)
    assert_columns_equal(got, {k: v[keep] for k, v in cols.items()})


def test_select_ids_and_where_combined(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    ids = np.arange(1, N + 1, 2)
    got = parts.select(ids=ids, where=[("subset", "==", 1)], columns=["subset"])
    want = np.flatnonzero((cols["subset"] == 1) & (np.arange(N) % 2 == 0)) + 1
    assert np.array_equal(got["id"], want)
    assert set(got) == {"id", "subset"}


# -- copy --------------------------------------------------------------------------------
def test_copy_with_changed_columns(
    project: Project, parts: EMSet, cols: dict[str, np.ndarray]
) -> None:
    before = parts.read()
    new_paths = np.array(
        [str(project.path / f"Runs/000002_x/extra/p_{i}.mrcs") for i in range(N)], dtype=object
    )
    new_index = np.arange(N)[::-1].copy()
    copy = parts.copy(
        {"image_path": new_paths, "image_index": new_index, "ex_float": np.zeros(N)},
        name="rewritten",
        attrs={"box": [32, 32]},
    )
    assert copy.id != parts.id and len(copy) == N
    got = copy.read()
    assert set(got) == set(before)
    assert np.array_equal(got["image_path"], new_paths)
    assert np.array_equal(got["image_index"], new_index)
    assert np.array_equal(got["ex_float"], np.zeros(N))
    unchanged = {
        k: v for k, v in before.items() if k not in ("image_path", "image_index", "ex_float")
    }
    assert_columns_equal(got, unchanged)  # ids, pose, CTF, ex_int and ex_str survive
    assert copy.data_version and copy.data_version != parts.data_version
    assert copy.attrs == {"box": [32, 32]} and project.get(copy.id).attrs == {"box": [32, 32]}
    assert_columns_equal(parts.read(), before)  # the source is untouched
    same = parts.copy()
    assert_columns_equal(same.read(), before)


def test_copy_with_new_extra_column(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    copy = parts.copy({"new_score": np.linspace(0, 1, N)})
    got = copy.read()
    assert np.array_equal(got["new_score"], np.linspace(0, 1, N))
    assert_columns_equal(got, cols)


def test_copy_change_of_wrong_length_is_refused(project: Project, parts: EMSet) -> None:
    with pytest.raises(ParamError, match="^rot: has 3 values for a set of 100 items"):
        parts.copy({"rot": [1.0, 2.0, 3.0]})
    assert [o["id"] for o in project.list_objects()] == [parts.id]


def test_copy_of_a_selection(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    keep = cols["defocus_u"] > 15_000.0
    sub = parts.copy(where=[("defocus_u", ">", 15_000.0)])
    assert len(sub) == keep.sum()
    got = sub.read()
    assert np.array_equal(got["id"], np.flatnonzero(keep) + 1)  # the original ids are kept
    assert_columns_equal(got, {k: v[keep] for k, v in cols.items()})
    assert sub.data_version != parts.data_version

    ids = [2, 3, 50]
    relabelled = parts.copy({"class_id": [7, 8, 9]}, ids=ids)
    got = relabelled.read()
    assert np.array_equal(got["id"], ids)
    assert np.array_equal(got["class_id"], [7, 8, 9])
    assert np.array_equal(got["ex_str"], cols["ex_str"][[1, 2, 49]])


# -- append ------------------------------------------------------------------------------
def test_append_continues_ids_and_merges_string_dictionaries(
    parts: EMSet, cols: dict[str, np.ndarray]
) -> None:
    v0 = parts.data_version
    more = particle_columns(21, seed=1)
    more["micrograph"] = np.array(["mic_new.mrc", "mic_001.mrc", "mic_other.mrc"] * 7, dtype=object)
    more["ex_str"] = np.array(["zz", "a", "ünï"] * 7, dtype=object)
    parts.append(more)
    assert len(parts) == N + 21
    v1 = parts.data_version
    assert v1 != v0
    again = particle_columns(40, seed=2)
    again["ex_str"] = np.array(["yy"] * 40, dtype=object)
    parts.append(again)
    assert len(parts) == N + 61 and parts.data_version not in (v0, v1)
    got = parts.read()
    assert np.array_equal(got["id"], np.arange(1, N + 62))
    want = {k: np.concatenate([cols[k], more[k], again[k]]) for k in cols}
    assert_columns_equal(got, want)
    assert [it.extra["ex_str"] for it in list(parts)[N : N + 3]] == ["zz", "a", "ünï"]


def test_append_with_other_columns_is_refused(parts: EMSet) -> None:
    more = particle_columns(5, seed=1)
    del more["ex_int"]
    with pytest.raises(ParamError, match=r"missing \['ex_int'\]"):
        parts.append(more)
    assert len(parts) == N


def test_append_with_another_dtype_is_refused(parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    more = particle_columns(5, seed=1)
    more["ex_int"] = np.array(["one", "two", "three", "four", "five"], dtype=object)
    with pytest.raises(ParamError, match="^ex_int: "):
        parts.append(more)
    assert len(parts) == N
    assert_columns_equal(parts.read(), cols)  # nothing half-appended
    more = particle_columns(5, seed=1)
    more["ex_float"] = np.arange(5)  # ints into a float column are widened
    parts.append(more)
    assert np.array_equal(parts.read("ex_float")["ex_float"][N:], np.arange(5.0))


# -- delete ------------------------------------------------------------------------------
def test_delete(project: Project, parts: EMSet, cols: dict[str, np.ndarray]) -> None:
    other = parts.copy({"rot": np.zeros(N)})
    assert object_ids_in_set_columns(project) == {parts.id, other.id}
    parts.delete()
    with pytest.raises(NotFoundError):
        project.object_row(parts.id)
    assert object_ids_in_set_columns(project) == {other.id}
    got = other.read()
    assert_columns_equal(got, {k: v for k, v in cols.items() if k != "rot"})


# -- edge cases ----------------------------------------------------------------------------
def test_empty_set(project: Project, parts: EMSet) -> None:
    empty = project.create_set(
        "SetOfParticles", {"rot": np.zeros(0), "ex_str": np.array([], dtype=object)}
    )
    assert len(empty) == 0 and list(empty) == []
    got = empty.read()
    assert len(got["id"]) == 0 and len(got["rot"]) == 0 and len(got["ex_str"]) == 0
    none = parts.copy(where=[("defocus_u", ">", 1e9)])
    assert len(none) == 0 and len(none.read("ex_int")["ex_int"]) == 0
    empty.append({"rot": [1.5, 2.5], "ex_str": ["p", "q"]})
    got = empty.read("id", "rot", "ex_str")
    assert np.array_equal(got["id"], [1, 2]) and np.array_equal(got["ex_str"], ["p", "q"])


def test_real_chunk_boundary(project: Project) -> None:
    n = _sets.CHUNK + 3
    cols = particle_columns(n, seed=3)
    s = project.create_set("SetOfParticles", cols)
    with sqlite3.connect(project.db_path) as con:
        chunks = con.execute(
            "SELECT chunk, n FROM set_columns WHERE object_id=? AND column='rot' ORDER BY chunk",
            (s.id,),
        ).fetchall()
    assert chunks == [(0, _sets.CHUNK), (1, 3)]
    assert_columns_equal(s.read(), cols)
    s.append(particle_columns(_sets.CHUNK, seed=4))
    got = s.read("id", "ex_str")
    assert np.array_equal(got["id"], np.arange(1, 2 * _sets.CHUNK + 4))
    assert np.array_equal(got["ex_str"][:n], cols["ex_str"])
    sel = s.select(ids=[_sets.CHUNK, _sets.CHUNK + 1, _sets.CHUNK + 4])
    assert np.array_equal(sel["rot"][:2], cols["rot"][[_sets.CHUNK - 1, _sets.CHUNK]])


def test_create_is_all_or_nothing(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(_sets, "set_count", fail)  # after every column has been inserted
    with pytest.raises(RuntimeError, match="disk full"):
        project.create_set("SetOfParticles", particle_columns(50))
    assert project.list_objects() == []
    assert object_ids_in_set_columns(project) == set()


@pytest.mark.parametrize(
    ("kind", "columns", "where", "pattern"),
    [
        (
            "SetOfParticles",
            {"rot": [1.0, 2.0], "tilt": [1.0, 2.0, 3.0]},
            None,
            r"^columns: columns have different lengths: .*'rot': 2.*'tilt': 3",
        ),
        ("SetOfWidgets", {"rot": [1.0]}, None, r"^kind: unknown set kind 'SetOfWidgets'"),
        (
            "SetOfParticles",
            {"rot": [1.0, 2.0], "ex_2d": [[1, 2], [3, 4]]},
            None,
            r"^ex_2d: columns must be one-dimensional",
        ),
        (
            "SetOfParticles",
            {"id": [4, 5, 4], "rot": [1.0, 2.0, 3.0]},
            None,
            r"^id: item ids must be unique",
        ),
        ("SetOfParticles", {"rot": ["a", "b"]}, None, r"^rot: cannot store"),
        (
            "SetOfParticles",
            {"rot": [1.0, 2.0], "ex_c": [1j, 2j]},
            None,
            r"^ex_c: extra columns must be",
        ),
        (
            "SetOfParticles",
            {"rot": [1.0, 2.0]},
            [("rot", "~=", 1.0)],
            r"^where: unknown operator '~='",
        ),
        (
            "SetOfParticles",
            {"rot": [1.0, 2.0]},
            [("rot", ">")],
            r"^where: a condition is \(column, op, value\)",
        ),
    ],
    ids=[
        "ragged",
        "unknown-kind",
        "2d-column",
        "duplicate-ids",
        "str-in-float",
        "complex-extra",
        "unknown-op",
        "short-condition",
    ],
)
def test_bad_inputs_raise_param_error(
    project: Project, kind: str, columns: dict, where: list | None, pattern: str
) -> None:
    with pytest.raises(ParamError, match=pattern) as info:
        s = project.create_set(kind, columns)
        s.select(where=where or ())
    assert "\n" not in str(info.value)
    if where is None:
        assert project.list_objects() == []


# -- scale -------------------------------------------------------------------------------
@pytest.mark.slow
def test_million_particles_round_trip(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    n = 1_000_000
    rng = np.random.default_rng(42)
    mics = np.array([f"MotionCorr/job002/mic_{i:05d}.mrc" for i in range(2_000)], dtype=object)
    cols = {
        "rot": rng.uniform(-180, 180, n),
        "tilt": rng.uniform(0, 180, n),
        "psi": rng.uniform(-180, 180, n),
        "shift_x": rng.normal(0, 4, n),
        "shift_y": rng.normal(0, 4, n),
        "defocus_u": rng.uniform(5e3, 3e4, n),
        "defocus_v": rng.uniform(5e3, 3e4, n),
        "defocus_angle": rng.uniform(0, 180, n),
        "voltage": np.full(n, 300.0),
        "cs": np.full(n, 2.7),
        "amplitude_contrast": np.full(n, 0.1),
        "phase_shift": rng.uniform(0, 90, n),
        "micrograph": mics[rng.integers(0, len(mics), n)],
        "coord_x": rng.uniform(0, 4096, n),
        "coord_y": rng.uniform(0, 4096, n),
        "ex_group": rng.integers(0, 2**62, n),
        "ex_norm": rng.normal(1, 0.1, n),
    }
    t0 = time.perf_counter()
    s = project.create_set("SetOfParticles", cols)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = s.read(*cols, "id")
    t_read = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\n[sets] 1,000,000 particles x {len(cols)} given columns: write {t_write:.2f} s, "
            f"read {t_read:.2f} s"
        )
    assert len(s) == n
    assert np.array_equal(back["id"], np.arange(1, n + 1))
    for name, values in cols.items():
        assert back[name].dtype == values.dtype, name
        assert np.array_equal(back[name], values), name
