"""Issue 20, item 3: no command writes inside a store or deletes what it did not write; locks and in-place rewrites
resolve symlinks; a reader open during an in-place rewrite gets a named error, never mixed data; leftovers of a killed
rewrite are cleaned by the next write and named until then. Plus the weak cases of the store and data tools (exact
drop indices, merge refusals that name the key, validate findings, empty episodes).

Concurrency cases run the other side in a real separate process and coordinate through its stdin/stdout or through
files, never through sleeps with tight bounds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from _data_helpers import run_child

from postbc_core.cli.main import main
from postbc_core.data import EpisodeStore, drop, merge, validate_store
from postbc_core.data.lock import lock_path_for
from postbc_core.data.recovery import backup_paths
from postbc_core.data.zarr_compat import ZARR_MAJOR
from postbc_core.errors import StoreError

T = 6  # steps per episode


def leftover_temporaries(path: Path) -> list[Path]:
    """The hidden temporaries a tool builds beside its destination (`.<name>.tmp-<pid>-<hex>`, their lock and zip)."""
    return sorted(path.parent.glob(f".{path.name}.tmp*"))


def write_store(path: Path, episodes: int = 3, image: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A small store whose episode i has state[:, 0] == 100 * seed + i (so a test sees which episode it read)."""
    rng = np.random.default_rng(seed)
    eps = []
    with EpisodeStore.create(path) as s:
        for i in range(episodes):
            state = rng.normal(size=(T, 2)).astype(np.float32)
            state[:, 0] = 100 * seed + i
            ep = {"state": state, "action": rng.normal(size=(T, 2)).astype(np.float32),
                  "img_rgb": rng.integers(0, 255, size=(T, image, image, 3), dtype=np.uint8)}
            s.add_episode(ep, success=True, task="t", source="synthetic")
            eps.append(ep)
    return eps


def digest(path: Path) -> str:
    """Every file under `path` (names and bytes), and the symlinks as links."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            h.update(f"{p.relative_to(path)} -> {os.readlink(p)}".encode())
        elif p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def episode_ids(path) -> list[int]:
    with EpisodeStore.open(path) as s:
        return [int(s.episode(i, ["state"])["state"][0, 0]) for i in range(s.n_episodes)]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


class Child:
    """A Python child process driven line by line: the parent writes a command, the child answers one JSON line."""

    def __init__(self, code: str):
        self.p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ask(self, command: str = "") -> dict:
        self.p.stdin.write(command + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, self.p.stderr.read()
        return json.loads(line)

    def close(self) -> None:
        self.p.kill()
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            f.close()


# ---------------------------------------------------------------------------------------------------------------
# symlinks: one store, one lock, one directory rewritten
# ---------------------------------------------------------------------------------------------------------------
def test_writer_through_a_symlink_and_one_through_the_real_path_share_the_lock(tmp_path):
    real = tmp_path / "real.zarr"
    write_store(real)
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    # What `sim demos --append --out LINK` does, in a separate process that holds the store open for appending.
    child = Child(f"""
        import json, sys
        from postbc_core.data import EpisodeStore
        s = EpisodeStore.open({str(link)!r}, "a")
        sys.stdin.readline(); print(json.dumps({{"held": True}}), flush=True)
        sys.stdin.readline()
    """)
    try:
        assert child.ask()["held"]
        for spelling in (real, link, tmp_path / "sub" / ".." / "real.zarr"):
            with pytest.raises(StoreError, match=rf"open for writing by pid {child.p.pid} .*only one writer"):
                EpisodeStore.open(spelling, "a")
        with pytest.raises(StoreError, match=rf"open for writing by pid {child.p.pid}"):
            drop(real, [0])
    finally:
        child.close()
    assert episode_ids(real) == [0, 1, 2]
    assert lock_path_for(link) == tmp_path / "real.zarr.lock"


def test_drop_through_a_symlink_rewrites_the_target_and_keeps_the_link(tmp_path, capsys):
    real = tmp_path / "store" / "real.zarr"
    real.parent.mkdir()
    write_store(real)
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    rc, out, err = cli(capsys, "data", "drop", link, "--episodes", "0")
    assert rc == 0, err
    assert "dropped 1 episode(s)" in out
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert episode_ids(real) == [1, 2]
    assert not backup_paths(real) and not backup_paths(link) and not leftover_temporaries(real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.zarr", "store"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.zarr"]
    assert validate_store(link).ok and not validate_store(link).warnings


# ---------------------------------------------------------------------------------------------------------------
# nothing is written inside a store
# ---------------------------------------------------------------------------------------------------------------
def _dp_store(path: Path) -> None:
    g = zarr.open_group(str(path), mode="w", **({"zarr_format": 2} if ZARR_MAJOR >= 3 else {}))
    g.create_group("data")
    g.create_group("meta")
    new = g["data"].create_array if ZARR_MAJOR >= 3 else g["data"].create_dataset
    new("x", shape=(4, 2), chunks=(4, 2), dtype="f4")[:] = np.ones((4, 2), np.float32)
    new = g["meta"].create_array if ZARR_MAJOR >= 3 else g["meta"].create_dataset
    new("episode_ends", shape=(2,), chunks=(2,), dtype="i8")[:] = np.array([2, 4])


INSIDE = {
    "merge": lambda s, d: ["data", "merge", s, "--out", s / "sub.zarr"],
    "drop_out": lambda s, d: ["data", "drop", s, "--episodes", "0", "--out", s / "sub.zarr"],
    "export": lambda s, d: ["data", "export", s, s / "dp.zarr"],
    "export_zip_deeper": lambda s, d: ["data", "export", s, s / "data" / "x" / "dp.zarr.zip"],
    "split_into_itself": lambda s, d: ["data", "split", s, s],
    "split_below": lambda s, d: ["data", "split", s, s / "parts"],
    "import": lambda s, d: ["data", "import", d, d / "imp.zarr"],
}


@pytest.mark.parametrize("verb", sorted(INSIDE))
def test_outputs_inside_an_input_store_are_refused_naming_both(verb, tmp_path, capsys):
    store, dp = tmp_path / "s.zarr", tmp_path / "dp.zarr"
    write_store(store)
    _dp_store(dp)
    before = {p: digest(p) for p in (store, dp)}
    argv = INSIDE[verb](store, dp)
    line = one_error_line(*cli(capsys, *argv)[::2])
    src = dp if verb == "import" else store
    assert "is inside the input store" in line and str(src) in line and str(argv[-1]).split("/")[-1] in line, line
    assert {p: digest(p) for p in (store, dp)} == before  # nothing created inside either store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dp.zarr", "s.zarr"]


def test_a_new_store_inside_any_store_is_refused(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(store)
    before = digest(store)
    with pytest.raises(StoreError, match=r"store .*s\.zarr/meta/new\.zarr is inside the zarr store .*s\.zarr: nothing "
                                         r"is written inside a store"):
        EpisodeStore.create(store / "meta" / "new.zarr")
    with pytest.raises(StoreError, match="is inside the zarr store"):
        EpisodeStore.open(store / "rec.zarr", "a")  # what a recorder or `sim demos --append` does
    with pytest.raises(StoreError, match="is inside the zarr store"):
        EpisodeStore.create(store / "runs" / "x" / "new.zarr")  # no directories (or lock files) made on the way
    assert not (store / "runs").exists()
    other = tmp_path / "other.zarr"
    write_store(other, episodes=2)
    line = one_error_line(*cli(capsys, "data", "merge", other, "--out", store / "m.zarr")[::2])
    assert f"output {store / 'm.zarr'} is inside the zarr store {store}" in line
    assert digest(store) == before


def test_in_place_drop_refuses_a_store_directory_holding_foreign_entries(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(store)
    write_store(tmp_path / "nested.zarr", episodes=2, seed=1)
    (tmp_path / "nested.zarr").rename(store / "nested.zarr")  # put there by hand (commands refuse to write there)
    (store / "README").write_text("mine")
    (store / "data" / "notes.txt").write_text("mine too")
    before = digest(store)
    line = one_error_line(*cli(capsys, "data", "drop", store, "--episodes", "0")[::2])
    assert line == (f"error: {store}: refusing to rewrite it in place: the store directory also holds README, "
                    "data/notes.txt, nested.zarr, which are not part of the episode store and would be deleted; move "
                    f"them out of {store} first")
    assert digest(store) == before
    # once they are moved out, the drop works and touches nothing else
    (store / "README").rename(tmp_path / "README")
    (store / "data" / "notes.txt").rename(tmp_path / "notes.txt")
    (store / "nested.zarr").rename(tmp_path / "nested.zarr")
    assert cli(capsys, "data", "drop", store, "--episodes", "0")[0] == 0
    assert episode_ids(store) == [1, 2] and episode_ids(tmp_path / "nested.zarr") == [100, 101]


def test_in_place_drop_refuses_to_lose_meta_arrays_it_does_not_carry_over(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(store)
    g = zarr.open_group(str(store), mode="r+")
    new = g["meta"].create_array if ZARR_MAJOR >= 3 else g["meta"].create_dataset
    new("camera_serial", shape=(3,), chunks=(3,), dtype="i8")[:] = np.arange(3)
    before = digest(store)
    line = one_error_line(*cli(capsys, "data", "drop", store, "--episodes", "0")[::2])
    assert line == (f"error: {store}: refusing to rewrite it in place: meta/camera_serial would not be carried over (only "
                    "the postbc episode metadata is); use --out to write the result to a new store and keep this one")
    assert digest(store) == before
    assert cli(capsys, "data", "drop", store, "--episodes", "0", "--out", tmp_path / "o.zarr")[0] == 0
    assert episode_ids(tmp_path / "o.zarr") == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# --overwrite replaces only an episode store
# ---------------------------------------------------------------------------------------------------------------
def _training_run(d: Path) -> Path:
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
    (d / "policy.safetensors").write_bytes(b"weights")
    return d


def test_sim_demos_overwrite_refuses_a_directory_that_is_not_an_episode_store(tmp_path, capsys):
    run = _training_run(tmp_path / "run")
    before = digest(run)
    line = one_error_line(*cli(capsys, "sim", "demos", "--task", "lift_cube", "--episodes", "1", "--overwrite",
                               "--out", run)[::2])
    assert line == (f"error: {run} is not an episode store (it holds metrics.jsonl, policy.safetensors): overwrite "
                    "replaces only an episode store; choose another path (or remove that directory yourself)")
    assert digest(run) == before


def test_overwrite_refuses_files_and_foreign_entries_and_replaces_a_store(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(StoreError, match=r"notes\.txt is a file, not an episode store"):
        EpisodeStore.create(f, overwrite=True)
    assert f.read_text() == "mine"
    store = tmp_path / "s.zarr"
    write_store(store)
    (store / "README").write_text("mine")
    with pytest.raises(StoreError, match=r"s\.zarr: refusing to overwrite it: the store directory also holds README, "
                                         r"which is not part of the episode store"):
        EpisodeStore.create(store, overwrite=True)
    assert episode_ids(store) == [0, 1, 2]
    (store / "README").unlink()
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    with EpisodeStore.create(link, overwrite=True) as s:  # an episode store (through a link: the target) is replaced
        assert s.n_episodes == 0
    assert link.is_symlink() and (store / ".zgroup").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with EpisodeStore.create(empty, overwrite=True) as s:
        assert s.n_episodes == 0


# ---------------------------------------------------------------------------------------------------------------
# a reader open while another process rewrites the store in place
# ---------------------------------------------------------------------------------------------------------------
READER = """
    import json, sys
    from postbc_core.data import EpisodeStore
    from postbc_core.errors import StoreError
    s = EpisodeStore.open({path!r}, "r")
    for line in sys.stdin:
        try:
            if line.strip() == "load":
                d = s.load(["state"])
                out = {{"rows": int(d["state"].shape[0]), "zero_rows": int((d["state"] == 0).all(axis=1).sum())}}
            else:
                out = {{"first": int(s.episode(0, ["state"])["state"][0, 0]), "n": s.n_episodes}}
        except StoreError as e:
            out = {{"error": str(e)}}
        print(json.dumps(out), flush=True)
"""

DROPPER = """
    import os, pathlib, time
    import postbc_core.data.tools as tools
    pause, resume = pathlib.Path({pause!r}), pathlib.Path({resume!r})
    def hook(point):
        pause.touch()
        while not resume.exists():  # the parent lets it go on by creating the file
            time.sleep(0.01)
    tools._DROP_TEST_HOOK = hook
    tools.drop({path!r}, [0])
"""


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    import time

    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)


@pytest.mark.parametrize("written_before_store_ids", [False, True])
def test_reader_during_an_in_place_drop_gets_a_named_error_never_mixed_rows(written_before_store_ids, tmp_path):
    store = tmp_path / "s.zarr"
    write_store(store)
    if written_before_store_ids:  # a store from before store_id existed (or a foreign one): the rewrite still shows
        attrs = json.loads((store / ".zattrs").read_text())
        del attrs["store_id"]
        (store / ".zattrs").write_text(json.dumps(attrs))
    reader = Child(READER.format(path=str(store)))
    try:
        assert reader.ask("episode") == {"first": 0, "n": 3}
        # another process appends: the store is the same store, the reader keeps working (committed rows unchanged)
        r = run_child(f"""
            import numpy as np
            from postbc_core.data import EpisodeStore
            with EpisodeStore.open({str(store)!r}, "a") as s:
                s.add_episode({{"state": np.full((3, 2), 7, np.float32), "action": np.zeros((3, 2), np.float32),
                               "img_rgb": np.zeros((3, 4, 4, 3), np.uint8)}})
        """)
        assert r.returncode == 0, r.stderr
        assert reader.ask("episode") == {"first": 0, "n": 3}
        # a separate process drops episode 0 in place and stops between its two renames
        pause, resume = tmp_path / "paused", tmp_path / "resume"
        dropper = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DROPPER.format(
            path=str(store), pause=str(pause), resume=str(resume)))], stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(pause, dropper)
            for what in ("episode", "load"):  # the store is gone for now: reads would be zero fill
                got = reader.ask(what)
                assert "vanished while open here" in got.get("error", ""), got
            # opening it now neither restores the backup under the running rewrite nor blames a "writer"
            busy = rf"s\.zarr is being rewritten in place right now by pid {dropper.pid} .*try again when"
            with pytest.raises(StoreError, match=busy):
                EpisodeStore.open(store)
            assert re.search(busy, "\n".join(validate_store(store).errors))
            resume.touch()
            assert dropper.wait(timeout=120) == 0, dropper.stderr.read()
        finally:
            if dropper.poll() is None:
                dropper.kill()
                dropper.wait()
            dropper.stderr.close()
        for what in ("episode", "load"):  # the old episode 1 under index 0, 4 steps of zero fill: never returned
            got = reader.ask(what)
            assert got.get("error", "").startswith(f"{store} was rewritten in place by another process while open "
                                                   "here (e.g. `postbc data drop`)"), got
    finally:
        reader.close()
    assert episode_ids(store) == [1, 2, 7]  # reopened: the new store, consistent


# ---------------------------------------------------------------------------------------------------------------
# leftovers of a killed rewrite: named until the next write, which removes them
# ---------------------------------------------------------------------------------------------------------------
def test_killed_merge_leftovers_are_removed_by_the_next_run(tmp_path, capsys, caplog):
    a, out = tmp_path / "a.zarr", tmp_path / "m.zarr"
    write_store(a)
    r = run_child(f"""
        import os, signal
        import postbc_core.data.tools as tools
        from postbc_core.data import store as store_mod
        # die while the merged store is being built (its first episode is being committed)
        store_mod._TEST_HOOK = lambda p: os.kill(os.getpid(), signal.SIGKILL) if p == "meta_written" else None
        tools.merge([{str(a)!r}], {str(out)!r})
    """)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = leftover_temporaries(out)
    assert left and any(p.is_dir() for p in left) and not out.exists()  # the hidden store (and its lock)
    with caplog.at_level(logging.WARNING):
        rc, stdout, err = cli(capsys, "data", "merge", a, "--out", out)
    assert rc == 0, err
    assert "removed" in caplog.text and "left by an interrupted run" in caplog.text and str(left[0]) in caplog.text
    assert not leftover_temporaries(out) and episode_ids(out) == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "m.zarr"]


def test_killed_in_place_rewrite_leftovers_are_named_on_open_and_removed_by_the_next_writer(tmp_path, capsys, caplog):
    store = tmp_path / "s.zarr"
    write_store(store)
    r = run_child(f"""
        import os, signal
        import postbc_core.data.tools as tools
        from postbc_core.data import store as store_mod
        # die while the result is being built beside the store (after its first committed episode)
        store_mod._TEST_HOOK = lambda p: os.kill(os.getpid(), signal.SIGKILL) if p == "episode_ends_resized" else None
        tools.drop({str(store)!r}, [0])
    """)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = leftover_temporaries(store)
    assert left and episode_ids(store) == [0, 1, 2]
    with caplog.at_level(logging.WARNING):
        with EpisodeStore.open(store) as s:  # read-only: named, not touched
            assert s.n_episodes == 3
    assert f"temporary file(s) {left[0]}" in caplog.text and "remain from an interrupted write" in caplog.text
    assert leftover_temporaries(store) == left
    rc, out, err = cli(capsys, "data", "validate", store)
    assert rc == 0 and "warning: temporary file(s)" in out
    with EpisodeStore.open(store, "a"):
        pass
    assert not leftover_temporaries(store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_a_live_writers_temporaries_are_left_alone(tmp_path):
    a, out = tmp_path / "a.zarr", tmp_path / "m.zarr"
    write_store(a)
    pause, resume = tmp_path / "paused", tmp_path / "resume"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pathlib, time
        import postbc_core.data.tools as tools
        from postbc_core.data import store as store_mod
        pause, resume = pathlib.Path({str(pause)!r}), pathlib.Path({str(resume)!r})
        def hook(point):  # stop in the first commit of the merged store until the parent lets it go on
            if point == "meta_written" and not pause.exists():
                pause.touch()
                while not resume.exists():
                    time.sleep(0.01)
        store_mod._TEST_HOOK = hook
        tools.merge([{str(a)!r}], {str(out)!r})
    """)], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(pause, child)
        left = leftover_temporaries(out)
        assert left
        with pytest.raises(StoreError, match=rf"m\.zarr is open for writing by pid {child.pid}"):
            merge([a], out)
        assert validate_store(a).ok and not any("temporary" in w for w in validate_store(a).warnings)
        assert leftover_temporaries(out) == left
        resume.touch()
        assert child.wait(timeout=120) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert episode_ids(out) == [0, 1, 2] and not leftover_temporaries(out)


# ---------------------------------------------------------------------------------------------------------------
# weak cases: drop indices, merge refusals, validate findings, empty episodes
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("episodes, message", [
    (["0", "-3"], "0 and -3 both name episode 0 of {s} (3 episodes): give each episode once"),
    (["1", "1"], "1 and 1 both name episode 1 of {s} (3 episodes): give each episode once"),
    (["2", "-1", "-1"], "2 and -1 and -1 all name episode 2 of {s} (3 episodes): give each episode once"),
    (["0", "1", "2"], "that is every episode of {s} (3): dropping them all would leave an empty store with no keys"),
    (["-1", "-2", "0"], "that is every episode of {s} (3)"),
    (["3"], r"episode index(es) [3] out of range: {s} has 3 episodes (indices 0..2, or -3..-1 from the end)"),
])
@pytest.mark.parametrize("to_out", [False, True])
def test_drop_indices_are_exact(episodes, message, to_out, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(store)
    before = digest(store)
    extra = ["--out", tmp_path / "o.zarr"] if to_out else []
    line = one_error_line(*cli(capsys, "data", "drop", store, "--episodes", *episodes, *extra)[::2])
    assert message.format(s=store) in line, line
    assert digest(store) == before and not (tmp_path / "o.zarr").exists()


def test_drop_reports_the_count_it_dropped(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(store, episodes=4)
    rc, out, err = cli(capsys, "data", "drop", store, "--episodes", "0", "-1")
    assert rc == 0, err
    assert out.strip() == f"dropped 2 episode(s): {store} now has 2 episodes"
    assert episode_ids(store) == [1, 2]


def test_merge_of_different_image_sizes_names_the_key(tmp_path, capsys):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    write_store(a, image=4)
    write_store(b, image=8)
    line = one_error_line(*cli(capsys, "data", "merge", a, b, "--out", tmp_path / "m.zarr")[::2])
    assert line.startswith(f"error: cannot merge {b} into {a}: data/img_rgb is (4, 4, 3) uint8 per step in {a} but "
                           f"(8, 8, 3) uint8 in {b}; every source needs"), line
    assert "state" not in line and "action" not in line  # only the key that differs, not both schemas
    assert not (tmp_path / "m.zarr").exists()


def test_merge_of_one_store_twice_is_refused_unless_asked(tmp_path, capsys):
    a = tmp_path / "a.zarr"
    write_store(a)
    link = tmp_path / "l.zarr"
    link.symlink_to(a)
    line = one_error_line(*cli(capsys, "data", "merge", a, a, "--out", tmp_path / "m.zarr")[::2])
    assert line == (f"error: {a} is the same store, given twice: merging would copy its episodes twice; give each store "
                    "once (or pass --allow-repeats to duplicate them on purpose)")
    line = one_error_line(*cli(capsys, "data", "merge", a, link, "--out", tmp_path / "m.zarr")[::2])
    assert line.startswith(f"error: {link} and {a} are the same store, given twice"), line
    assert not (tmp_path / "m.zarr").exists()
    assert cli(capsys, "data", "merge", a, link, "--out", tmp_path / "m.zarr", "--allow-repeats")[0] == 0
    assert episode_ids(tmp_path / "m.zarr") == [0, 1, 2, 0, 1, 2]


def test_validate_refuses_a_dp_store_whose_episode_ends_overrun_its_rows(tmp_path, capsys):
    dp = tmp_path / "dp.zarr"
    _dp_store(dp)
    g = zarr.open_group(str(dp), mode="r+")
    g["meta"]["episode_ends"][:] = np.array([2, 9])  # 4 rows of data
    rc, out, err = cli(capsys, "data", "validate", dp)
    assert rc == 1 and "INVALID" in out
    assert "meta/episode_ends[-1] = 9 is invalid (previous end 2, longest data array 4 steps)" in out
    with pytest.raises(StoreError, match=r"meta/episode_ends\[-1\] = 9 is invalid"):
        EpisodeStore.open(dp)  # what train opens: no silent training on the first episode only
    # a postbc store's last unwritten entry is still an interrupted commit (a warning, recovered on append)
    store = tmp_path / "s.zarr"
    write_store(store)
    g = zarr.open_group(str(store), mode="r+")
    g["meta"]["episode_ends"].resize((4,))
    g["meta"]["episode_ends"][3] = 99
    rep = validate_store(store)
    assert rep.ok and any("uncommitted tail" in w for w in rep.warnings)


def test_validate_names_an_array_rewritten_as_zarr_v3(tmp_path, capsys):
    if ZARR_MAJOR < 3:
        pytest.skip("writing a zarr format 3 array needs zarr-python 3")
    store = tmp_path / "s.zarr"
    write_store(store)
    import shutil

    shutil.rmtree(store / "data" / "action")
    zarr.create_array(store=str(store / "data" / "action"), shape=(18, 2), dtype="f4", zarr_format=3)[:] = 0
    rc, out, err = cli(capsys, "data", "validate", store)
    assert rc == 1, out
    assert ("data/action is a zarr format 3 array (zarr.json) inside this zarr format 2 store, so zarr does not see "
            "it") in out
    with pytest.raises(StoreError, match=r"data/action is a zarr format 3 array"):
        EpisodeStore.open(store)  # train names the array instead of saying "no data key 'action'"


@pytest.mark.parametrize("data", [
    {"x": np.zeros((0, 3), np.float32)},
    {"x": np.zeros((0,), np.float32)},
    {"x": np.zeros((0, 3), np.float32), "y": np.zeros((0, 2, 2), np.float64)},
])
def test_an_empty_episode_through_the_api_is_a_named_error(data, tmp_path):
    with EpisodeStore.create(tmp_path / "s.zarr") as s:
        with pytest.raises(StoreError, match=r"add_episode\(\) got an episode with 0 steps .*needs at least one step"):
            s.add_episode(data)
        w = s.episode_writer()
        w.extend(data)  # nothing to record: no numpy reshape error either
        assert w.n_steps == 0
        w.discard()
        assert s.n_episodes == 0


# ---------------------------------------------------------------------------------------------------------------
# the robot's zarr-python 2: the same mechanisms (its DirectoryStore, its metadata files)
# ---------------------------------------------------------------------------------------------------------------
from test_data_store import zarr2_dir  # noqa: E402,F401  (the session fixture that provides zarr 2.18)


def test_symlinks_nesting_foreign_entries_and_rewritten_readers_under_zarr2(tmp_path, zarr2_dir):
    r = run_child(f"""
        import pathlib
        import numpy as np, zarr
        assert zarr.__version__.startswith("2."), zarr.__version__
        from postbc_core.data import EpisodeStore, drop, merge
        from postbc_core.errors import ConfigError, StoreError
        d = pathlib.Path({str(tmp_path)!r})
        def make(p, img=4):
            with EpisodeStore.create(p) as s:
                for i in range(3):
                    s.add_episode({{"state": np.full((5, 2), i, np.float32),
                                   "img_rgb": np.zeros((5, img, img, 3), np.uint8)}}, source="synthetic")
        def refused(f, kind, text):
            try:
                f()
            except kind as e:
                assert text in str(e), str(e)
            else:
                raise AssertionError("accepted: " + text)
        make(d / "real.zarr")
        (d / "link.zarr").symlink_to(d / "real.zarr")
        reader = EpisodeStore.open(d / "real.zarr")
        assert reader.episode(0)["state"][0, 0] == 0
        with EpisodeStore.open(d / "link.zarr", "a"):
            refused(lambda: EpisodeStore.open(d / "real.zarr", "a"), StoreError, "only one writer")
        drop(d / "link.zarr", [0])
        assert (d / "link.zarr").is_symlink()
        refused(lambda: reader.episode(0), StoreError, "was rewritten in place by another process")
        with EpisodeStore.open(d / "link.zarr") as s:
            assert [s.episode(i)["state"][0, 0] for i in range(s.n_episodes)] == [1, 2]
        refused(lambda: EpisodeStore.create(d / "real.zarr" / "x.zarr"), StoreError, "is inside the zarr store")
        refused(lambda: merge([d / "link.zarr"], d / "real.zarr" / "m.zarr"), StoreError, "is inside the input store")
        refused(lambda: merge([d / "real.zarr", d / "link.zarr"], d / "m.zarr"), ConfigError, "given twice")
        (d / "real.zarr" / "README").write_text("mine")
        refused(lambda: drop(d / "real.zarr", [0]), StoreError, "also holds README")
        refused(lambda: EpisodeStore.create(d / "link.zarr", overwrite=True), StoreError, "also holds README")
        make(d / "b.zarr", img=8)
        refused(lambda: merge([d / "b.zarr", d / "link.zarr"], d / "m.zarr"), StoreError,
                "data/img_rgb is (8, 8, 3) uint8 per step in")
        print("OK")
    """, env={"PYTHONPATH": os.pathsep.join(p for p in (str(zarr2_dir), os.environ.get("PYTHONPATH", "")) if p)})
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr[-3000:]
