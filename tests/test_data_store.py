"""EpisodeStore: round trips, schema and value checks, locking, crash recovery, zarr 2 compatibility."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from _data_helpers import assert_episodes_equal, random_steps, run_child, schemas, standard_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbc_core.data import EpisodeStore, validate_store
from postbc_core.data import store as store_mod
from postbc_core.data.layout import META_FIELDS
from postbc_core.data.zarr_compat import ZARR_MAJOR
from postbc_core.errors import StoreError, StoreValidationError

SRC = str(Path(store_mod.__file__).resolve().parents[2])  # .../postbc_core/src


def _fill(path, n_episodes=2, T=5, seed=0, schema=None):
    rng = np.random.default_rng(seed)
    schema = schema or standard_schema()
    eps = [random_steps(rng, schema, T + i) for i in range(n_episodes)]
    with EpisodeStore.create(path) as s:
        for i, ep in enumerate(eps):
            s.add_episode(ep, success=bool(i % 2), task="pick", source="teleop", operator="op")
    return eps


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas(), lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 2**31),
       per_step=st.booleans(), flush_bytes=st.sampled_from([1, 200, 1 << 20]), background=st.booleans())
def test_roundtrip_property(tmp_path_factory, schema, lengths, seed, per_step, flush_bytes, background):
    path = tmp_path_factory.mktemp("rt") / "s.zarr"
    rng = np.random.default_rng(seed)
    eps = [random_steps(rng, schema, T) for T in lengths]
    with EpisodeStore.create(path) as s:
        for i, ep in enumerate(eps):
            with s.episode_writer(task=f"t{i}", source="synthetic", flush_bytes=flush_bytes,
                                  background=background) as w:
                if per_step:
                    for t in range(lengths[i]):
                        w.append_step({k: v[t] for k, v in ep.items()})
                else:
                    w.extend(ep)
                assert w.n_steps == lengths[i]
    with EpisodeStore.open(path, "r") as s:
        assert s.recovery is None
        assert_episodes_equal(s, eps)
        np.testing.assert_array_equal(s.episode_ends, np.cumsum(lengths))
        np.testing.assert_array_equal(s.episode_lengths, lengths)
        assert s.keys == sorted(schema)
        everything = s.load()
        for k in schema:
            np.testing.assert_array_equal(everything[k], np.concatenate([e[k] for e in eps]))
        assert list(s.meta_table()["task"]) == [f"t{i}" for i in range(len(eps))]
        assert s.episode(-1).keys() == eps[-1].keys()
    assert validate_store(path).ok


def test_basic_api_and_metadata(tmp_path):
    path = tmp_path / "s.zarr"
    eps = _fill(path, n_episodes=3)
    with EpisodeStore.open(path, "a") as s:
        assert (s.n_episodes, s.n_steps) == (3, 5 + 6 + 7)
        assert s["joint_pos"].shape == (18, 6) and s.data("front_rgb").chunks == (1, 8, 8, 3)
        m = s.episode_meta(1)
        assert m["success"] is True and m["task"] == "pick" and m["source"] == "teleop" and m["operator"] == "op"
        assert (m["start"], m["end"], m["length"]) == (5, 11, 6)
        assert np.isnan(m["start_time"])  # add_episode without times: unknown
        s.set_label(0, True)
        s.set_label(1, None)
        table = s.meta_table()
        np.testing.assert_array_equal(table["success"], np.array([1, -1, 0], np.int8))
        assert table["source"].dtype.kind == "U" and table["start_time"].dtype == np.float64
        np.testing.assert_array_equal(s.episode(-1, keys=["reward"])["reward"], eps[2]["reward"])
        with pytest.raises(StoreError, match="no data key 'nope'"):
            s.episode(0, keys=["nope"])
        with pytest.raises(StoreError, match="out of range"):
            s.episode(3)
    # the writer times an episode it records live
    with EpisodeStore.open(path, "a") as s:
        t0 = time.time()
        with s.episode_writer(source="policy") as w:
            w.extend(random_steps(np.random.default_rng(1), standard_schema(), 2))
        m = s.episode_meta(-1)
        assert t0 - 1 <= m["start_time"] <= m["end_time"] <= time.time() + 1
        assert m["success"] is None
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs["format"] == "postbc-episodes" and attrs["format_version"] == 1
    assert attrs["created_by"].startswith("postbc_core")


def test_on_disk_layout_is_zarr_v2_with_compression(tmp_path):
    path = tmp_path / "s.zarr"
    _fill(path)
    for key in ("joint_pos", "front_rgb"):
        meta = json.loads((path / "data" / key / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["fill_value"] == 0
        assert meta["compressor"]["id"] == "blosc"
    assert json.loads((path / "data/front_rgb/.zarray").read_text())["compressor"]["cname"] == "lz4"
    assert json.loads((path / "data/joint_pos/.zarray").read_text())["compressor"]["cname"] == "zstd"
    ends = json.loads((path / "meta/episode_ends/.zarray").read_text())
    assert ends["dtype"] == "<i8"
    assert (path / ".zgroup").exists() and not (path / "zarr.json").exists()


def test_create_refuses_existing_and_overwrite(tmp_path):
    path = tmp_path / "s.zarr"
    _fill(path)
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(path)
    with EpisodeStore.create(path, overwrite=True) as s:
        assert s.n_episodes == 0 and s.keys == []
    with pytest.raises(StoreError, match="no episode store"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    with EpisodeStore.open(tmp_path / "new.zarr", "a") as s:  # "a" creates
        assert s.n_episodes == 0


# ----------------------------------------------------------------------------------------------
# schema, values, writer lifecycle
# ----------------------------------------------------------------------------------------------

def test_later_episodes_must_match_schema(tmp_path):
    path = tmp_path / "s.zarr"
    eps = _fill(path)
    rng = np.random.default_rng(3)
    with EpisodeStore.open(path, "a") as s:
        bad = random_steps(rng, standard_schema(), 3)
        bad["joint_pos"] = bad["joint_pos"].astype(np.float64)
        with pytest.raises(StoreError, match=r"key 'joint_pos': expected per-step shape \(6,\) dtype float32.*"
                                             r"got shape \(6,\) dtype float64"):
            s.add_episode(bad)
        bad = random_steps(rng, standard_schema(), 3)
        bad["front_rgb"] = np.zeros((3, 8, 9, 3), np.uint8)
        with pytest.raises(StoreError, match=r"front_rgb.*\(8, 8, 3\).*got shape \(8, 9, 3\)"):
            s.add_episode(bad)
        bad = random_steps(rng, standard_schema(), 3)
        del bad["reward"]
        bad["extra"] = np.zeros(3)
        with pytest.raises(StoreError, match=r"missing \['reward'\]; unexpected \['extra'\]"):
            s.add_episode(bad)
        with pytest.raises(StoreError, match="only numeric and bool"):
            EpisodeStore.create(tmp_path / "str.zarr").add_episode({"name": np.array(["a", "b"])})
        assert_episodes_equal(s, eps)
        # python scalars are cast to the recorded dtype; numpy values must match exactly
        step = {k: v[0] for k, v in random_steps(rng, standard_schema(), 1).items()}
        with s.episode_writer() as w:
            w.append_step({**step, "reward": 1.5, "done": True})
            with pytest.raises(StoreError, match="reward"):
                w.append_step({**step, "reward": np.float64(1.5)})
        assert s.episode(-1)["reward"].dtype == np.float32 and s.n_episodes == 3


def test_nonfinite_values_rejected_naming_key_and_step(tmp_path):
    path = tmp_path / "s.zarr"
    eps = _fill(path)
    step = {k: v[0] for k, v in random_steps(np.random.default_rng(4), standard_schema(), 1).items()}
    with EpisodeStore.open(path, "a") as s:
        w = s.episode_writer()
        w.append_step(step)
        w.append_step(step)
        with pytest.raises(StoreError, match=r"key 'joint_pos': step 2 holds NaN"):
            w.append_step({**step, "joint_pos": np.full(6, np.nan, np.float32)})
        assert w.n_steps == 2  # the bad step was not recorded
        block = random_steps(np.random.default_rng(5), standard_schema(), 4)
        block["timestamp"][3] = np.inf
        with pytest.raises(StoreError, match=r"key 'timestamp': step 5 holds NaN/inf"):
            w.extend(block)
        assert w.commit() == 2
        assert s.episode_lengths.tolist() == [5, 6, 2]
    with EpisodeStore.open(path, "r") as s:
        assert_episodes_equal(s, eps + [{k: np.stack([v, v]) for k, v in step.items()}])


def test_writer_context_discards_on_exception_and_truncates(tmp_path):
    path = tmp_path / "s.zarr"
    eps = _fill(path)
    with EpisodeStore.open(path, "a") as s:
        with pytest.raises(RuntimeError, match="operator abort"):
            with s.episode_writer(flush_bytes=1) as w:  # every step goes straight to disk
                w.extend(random_steps(np.random.default_rng(6), standard_schema(), 4))
                w.flush()
                assert s["joint_pos"].shape[0] == 11 + 4
                raise RuntimeError("operator abort")
        assert s["joint_pos"].shape[0] == 11 and s.n_episodes == 2
        w = s.episode_writer()
        with pytest.raises(StoreError, match="already open"):
            s.episode_writer()
        w.discard()
        with pytest.raises(StoreError, match="already discarded"):
            w.append_step({})
        with pytest.raises(StoreError, match="empty episode"):
            s.episode_writer().commit()
    with EpisodeStore.open(path, "r") as s:
        assert_episodes_equal(s, eps)
        with pytest.raises(StoreError, match="read-only"):
            s.episode_writer()
        with pytest.raises(StoreError, match="read-only"):
            s.set_label(0, True)


def test_first_episode_fixes_schema_even_after_discard(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr") as s:
        with s.episode_writer(flush_bytes=1) as w:
            w.append(a=np.zeros(3, np.float32))
            w.discard()
        s.add_episode({"b": np.ones((2, 2), np.int16)})  # discarded keys do not constrain the store
        assert s.keys == ["b"]


def test_rejects_unknown_source_and_long_strings(tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr") as s:
        with pytest.raises(StoreError, match="source 'robot' is not one of teleop, policy"):
            s.episode_writer(source="robot")
        with pytest.raises(StoreError, match="task is 300 characters long; the store keeps at most 256"):
            s.episode_writer(task="x" * 300)


# ----------------------------------------------------------------------------------------------
# locking
# ----------------------------------------------------------------------------------------------

def test_second_writer_refused_in_process(tmp_path):
    path = tmp_path / "s.zarr"
    _fill(path)
    with EpisodeStore.open(path, "a"):
        with pytest.raises(StoreError, match=rf"open for writing by pid {os.getpid()}.*only one writer"):
            EpisodeStore.open(path, "a")
        with EpisodeStore.open(path, "r") as r:  # readers are never blocked
            assert r.n_episodes == 2
    with EpisodeStore.open(path, "a"):  # released on close
        pass
    assert not Path(str(path) + ".lock").exists()


def test_second_writer_refused_across_processes(tmp_path):
    path = tmp_path / "s.zarr"
    _fill(path)
    child = subprocess.Popen(
        [sys.executable, "-c", f"from postbc_core.data import EpisodeStore\nimport time\n"
                               f"s = EpisodeStore.open({str(path)!r}, 'a')\nprint('READY', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "READY"
        with pytest.raises(StoreError, match=rf"pid {child.pid} .*If no writer is running, delete .*s\.zarr\.lock"):
            EpisodeStore.open(path, "a")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


# ----------------------------------------------------------------------------------------------
# crash recovery (SIGKILL in a child process)
# ----------------------------------------------------------------------------------------------

CHILD_PRELUDE = """
import os, signal
import numpy as np
from postbc_core.data import EpisodeStore
from postbc_core.data import store as store_mod
path = {path!r}
rng = np.random.default_rng(123)
schema = {schema!r}
def steps(T):
    return {{k: (rng.normal(size=(T, *shape)) * 5).astype(dt) for k, (shape, dt) in schema.items()}}
def die(point=None):
    os.kill(os.getpid(), signal.SIGKILL)
"""
CRASH_SCHEMA = {"joint_pos": ((6,), "float32"), "front_rgb": ((8, 8, 3), "uint8"), "reward": ((), "float64")}


def _crash_child(path, body: str) -> subprocess.CompletedProcess:
    code = CHILD_PRELUDE.format(path=str(path), schema=CRASH_SCHEMA) + body
    res = run_child(code)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr)
    return res


def _crash_store(tmp_path):
    path = tmp_path / "s.zarr"
    schema = {k: (shape, np.dtype(dt)) for k, (shape, dt) in CRASH_SCHEMA.items()}
    eps = _fill(path, n_episodes=2, schema=schema)
    return path, eps, schema


def _check_recovered_store_accepts_new_episodes(path, eps, schema):
    assert validate_store(path).ok and not validate_store(path).warnings
    new = random_steps(np.random.default_rng(9), schema, 4)
    with EpisodeStore.open(path, "a") as s:
        assert s.recovery is None  # nothing left to recover
        assert s.add_episode(new, success=True) == len(eps)
    with EpisodeStore.open(path, "r") as s:
        assert_episodes_equal(s, eps + [new])
        assert s.episode_meta(-1)["success"] is True


def test_recovery_after_kill_mid_episode(tmp_path, caplog):
    path, eps, schema = _crash_store(tmp_path)
    _crash_child(path, """
s = EpisodeStore.open(path, "a")
w = s.episode_writer(flush_bytes=1 << 30)
w.extend(steps(30))
w.flush()                # 30 steps on disk, uncommitted
w.extend(steps(5))       # 5 more only in memory
die()
""")
    before = _tree_digest(path)
    with caplog.at_level(logging.WARNING):
        with EpisodeStore.open(path, "r") as s:  # read-only: report, do not touch
            assert_episodes_equal(s, eps)
            rep = s.recovery
            assert rep is not None and not rep.applied
            assert rep.dropped_steps == {"joint_pos": 30, "front_rgb": 30, "reward": 30}
            assert rep.dropped_meta_rows == {} and rep.dropped_episode_ends == 0
    assert "open in append mode to recover" in caplog.text
    assert _tree_digest(path) == before
    report = validate_store(path)
    assert report.ok and any("uncommitted tail" in w and "data/joint_pos: 30 steps" in w for w in report.warnings)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with EpisodeStore.open(path, "a") as s:
            rep = s.recovery
            assert rep.applied and rep.n_episodes == 2 and rep.n_steps == 11
            assert rep.dropped_steps == {"joint_pos": 30, "front_rgb": 30, "reward": 30}
            assert s["front_rgb"].shape[0] == 11
            assert_episodes_equal(s, eps)
    assert "taking over the stale writer lock" in caplog.text  # the child died holding it
    assert "dropped: uncommitted steps data/front_rgb: 30" in caplog.text
    _check_recovered_store_accepts_new_episodes(path, eps, schema)


@pytest.mark.parametrize("point", ["meta_written", "episode_ends_resized"])
def test_recovery_after_kill_during_commit(tmp_path, point):
    path, eps, schema = _crash_store(tmp_path)
    _crash_child(path, f"""
store_mod._TEST_HOOK = lambda p: die() if p == {point!r} else None
s = EpisodeStore.open(path, "a")
s.add_episode(steps(7), success=True, task="doomed")
""")
    with EpisodeStore.open(path, "r") as s:
        assert_episodes_equal(s, eps)
        assert s.recovery.dropped_steps == {"joint_pos": 7, "front_rgb": 7, "reward": 7}
        assert s.recovery.dropped_episode_ends == (1 if point == "episode_ends_resized" else 0)
        assert s.recovery.dropped_meta_rows == {k: 1 for k in META_FIELDS}
    with EpisodeStore.open(path, "a") as s:
        assert s.recovery.applied and s.n_episodes == 2
        assert s.meta_table()["task"].tolist() == ["pick", "pick"]
    _check_recovered_store_accepts_new_episodes(path, eps, schema)


def test_recovery_after_kill_in_background_flush(tmp_path):
    path, eps, schema = _crash_store(tmp_path)
    _crash_child(path, """
store_mod._TEST_HOOK = lambda p: die() if p == "flushed" else None
s = EpisodeStore.open(path, "a")
w = s.episode_writer(flush_bytes=2000)   # the block write happens in the worker thread
for t in range(100):
    w.append_step({k: v[0] for k, v in steps(1).items()})
import time; time.sleep(30)
""")
    with EpisodeStore.open(path, "a") as s:
        assert s.recovery.applied and sum(s.recovery.dropped_steps.values()) > 0
        assert_episodes_equal(s, eps)
    _check_recovered_store_accepts_new_episodes(path, eps, schema)


def test_stale_episode_ends_value_is_not_resurrected(tmp_path):
    """A truncated episode_ends entry must not reappear as 'committed' when the array grows again."""
    path, eps, schema = _crash_store(tmp_path)
    _crash_child(path, """
store_mod._TEST_HOOK = lambda p: die() if p == "flushed" else None
s = EpisodeStore.open(path, "a")
g = s._root
g["meta"]["episode_ends"].resize((3,))
g["meta"]["episode_ends"][2] = 10**6          # an invalid (past data length) last entry
s.add_episode(steps(3))
""")
    with EpisodeStore.open(path, "a") as s:
        assert s.recovery.dropped_episode_ends == 1 and s.n_episodes == 2
        ends = s._ends_arr
        ends.resize((3,))  # grow without writing: the old value must be gone
        assert int(ends[2]) == 0
        ends.resize((2,))
    _check_recovered_store_accepts_new_episodes(path, eps, schema)


def test_corrupt_episode_ends_is_an_error_not_a_silent_drop(tmp_path):
    path, eps, _ = _crash_store(tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    g["meta/episode_ends"].resize((3,))
    g["meta/episode_ends"][:] = [5, 3, 11]  # a decrease in the middle is damage, not an interrupted commit
    before = _tree_digest(path)
    with pytest.raises(StoreValidationError, match=r"not strictly increasing at episode 1 \(5 -> 3\)"):
        EpisodeStore.open(path, "a")
    assert _tree_digest(path) == before


# ----------------------------------------------------------------------------------------------
# zarr-python 2 compatibility (installs zarr 2.18 into a temporary directory, ~45 s; under zarr 2 itself, as in the
# robot-environment run, the installed one)
# ----------------------------------------------------------------------------------------------

# Pinned: what zarr 2.18 needs at run time (installed --no-deps next to the venv's numpy).
ZARR2_PACKAGES = ["zarr==2.18.7", "numcodecs==0.15.1", "asciitree==1.0.0", "fasteners==0.20", "deprecated==1.3.1",
                  "wrapt==2.5.2"]


@pytest.fixture(scope="session")
def zarr2_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("zarr2")
    if ZARR_MAJOR == 2:  # already zarr-python 2 (the robot's Python 3.10 run): use it as installed
        return target  # empty: nothing on PYTHONPATH shadows it
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                          "--target", str(target), *ZARR2_PACKAGES], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        text = res.stdout + res.stderr
        if any(s in text for s in ("No matching distribution", "Could not find a version", "connection",
                                   "Connection", "Network is unreachable", "Temporary failure")):
            pytest.skip(f"zarr 2.18 could not be downloaded (package registry unreachable): {text.strip()[-300:]}")
        raise AssertionError(f"pip install of zarr 2.18 failed:\n{text}")
    return target


def test_zarr2_reads_store_written_with_zarr3(tmp_path, zarr2_dir):
    path = tmp_path / "s.zarr"
    _fill(path, n_episodes=3)
    out = tmp_path / "z2.npz"
    res = run_child(f"""
import numpy as np, zarr
assert zarr.__version__.startswith("2."), zarr.__version__
g = zarr.open_group({str(path)!r}, mode="r")
arrays = {{"data__" + k: g["data"][k][:] for k in g["data"].array_keys()}}
arrays.update({{"meta__" + k: g["meta"][k][:] for k in g["meta"].array_keys()}})
np.savez({str(out)!r}, **arrays)
print(dict(g.attrs))
""", env={"PYTHONPATH": str(zarr2_dir)})
    assert res.returncode == 0, res.stderr
    assert "postbc-episodes" in res.stdout
    got = np.load(out)
    with EpisodeStore.open(path) as s:
        for k, v in s.load().items():
            np.testing.assert_array_equal(got["data__" + k], v)
            assert got["data__" + k].dtype == v.dtype
        np.testing.assert_array_equal(got["meta__episode_ends"], s.episode_ends)
        for k, v in s.meta_table().items():
            np.testing.assert_array_equal(got["meta__" + k], v)
            assert got["meta__" + k].dtype == v.dtype


def test_store_code_runs_on_zarr2_and_zarr3_reads_it(tmp_path, zarr2_dir):
    """The robot (ROS Humble, Python 3.10) gets zarr 2: the store itself must work there too."""
    path = tmp_path / "s.zarr"
    res = run_child(f"""
import numpy as np, zarr, os, signal
assert zarr.__version__.startswith("2."), zarr.__version__
from postbc_core.data import EpisodeStore, validate_store
from postbc_core.data import store as store_mod
rng = np.random.default_rng(0)
with EpisodeStore.create({str(path)!r}) as s:
    for T in (3, 4):
        s.add_episode({{"joint_pos": rng.normal(size=(T, 6)).astype(np.float32),
                        "front_rgb": rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8)}}, task="z2", source="teleop")
    s.set_label(1, True)
assert validate_store({str(path)!r}).ok
store_mod._TEST_HOOK = lambda p: os.kill(os.getpid(), signal.SIGKILL) if p == "episode_ends_resized" else None
s = EpisodeStore.open({str(path)!r}, "a")
s.add_episode({{"joint_pos": np.zeros((5, 6), np.float32), "front_rgb": np.zeros((5, 8, 8, 3), np.uint8)}})
""", env={"PYTHONPATH": f"{zarr2_dir}{os.pathsep}{SRC}"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    with EpisodeStore.open(path, "a") as s:
        assert s.recovery.applied and s.recovery.dropped_episode_ends == 1
        assert s.n_episodes == 2 and s.episode_lengths.tolist() == [3, 4]
        assert s.episode_meta(1)["success"] is True and s.episode_meta(0)["task"] == "z2"
        rng = np.random.default_rng(0)
        np.testing.assert_array_equal(s.episode(0)["joint_pos"], rng.normal(size=(3, 6)).astype(np.float32))
    assert validate_store(path).ok


def test_background_writes_queue_in_order_and_a_failed_one_reraises(tmp_path):
    """Up to MAX_IN_FLIGHT blocks wait for the writer thread, written in order; a failed block write re-raises on
    the writer's next call, and discarding leaves the committed episodes as they were."""
    from postbc_core.data import writer as writer_mod

    path = tmp_path / "s.zarr"
    eps = _fill(path, n_episodes=1)
    rng = np.random.default_rng(3)
    with EpisodeStore.open(path, "a") as s:
        steps = random_steps(rng, standard_schema(), 40)
        row_bytes = sum(v[0].nbytes for v in steps.values())
        calls = []
        orig = s._write_rows

        def slow_then_fail(blocks, at, n):
            calls.append((at, n))
            time.sleep(0.05)  # queued blocks pile up behind a slow disk
            if len(calls) == 3:
                raise StoreError("disk went away")
            orig(blocks, at, n)

        s._write_rows = slow_then_fail
        w = s.episode_writer(flush_bytes=4 * row_bytes)
        with pytest.raises(StoreError, match="disk went away"):
            for t in range(40):
                w.append_step({k: v[t] for k, v in steps.items()})
        assert [a for a, _ in calls] == sorted(a for a, _ in calls)  # in order, contiguous
        assert all(a2 == a1 + n1 for (a1, n1), (a2, _) in zip(calls, calls[1:]))
        assert len(w._pending) <= writer_mod.MAX_IN_FLIGHT
        w.discard()
        assert_episodes_equal(s, eps)
    assert validate_store(path).ok
