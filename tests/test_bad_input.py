"""Bad input and damaged storage (issue 14): every case gives a named error that says what is wrong and how to fix
it, exits non-zero without a traceback, and loses nothing that was committed.

The CLI cases form one table (`CASES`): each builds its fault in a temporary directory, runs `postbc` in-process and
checks the exit status, the message and what is left on disk. Library-level faults (typed actions, checkpoints,
finetune resume, the in-place drop killed between its renames) follow the table. Faults of the disk (full,
read-only) are injected by raising the OSError from the writer, so they need neither root nor a small filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from _data_helpers import run_child
from _paths import BIN
from postbc_core.cli.main import main
from postbc_core.data import EpisodeStore
from postbc_core.data.recovery import backup_name, backup_paths
from postbc_core.errors import ActionError, CheckpointError, StoreError

T = 12  # steps per episode of the small stores


# ---------------------------------------------------------------------------------------------------------------
# fixtures: a small store and a tiny trained run (built once, copied by the cases that damage them)
# ---------------------------------------------------------------------------------------------------------------
def write_store(path: Path, episodes: int = 3, task: str = "") -> Path:
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path) as s:
        for _ in range(episodes):
            s.add_episode({"state": rng.normal(size=(T, 2)).astype(np.float32),
                           "action": rng.normal(size=(T, 2)).astype(np.float32),
                           "img_rgb": rng.integers(0, 255, size=(T, 8, 8, 3), dtype=np.uint8)},
                          success=True, task=task, source="synthetic")
    return path


def tree_digest(path: Path) -> str:
    """sha256 over every file's relative name and bytes (the lock file beside a store is not inside it)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


TRAIN = ["--obs-keys", "state", "--action-key", "action", "--alpha", "0", "--steps", "2", "--batch-size", "8",
         "--mlp-hidden", "16", "16", "--warmup-steps", "0", "--device", "cpu", "--no-progress", "--log-every", "1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_input_base")
    store = write_store(root / "demos.zarr")
    write_store(root / "one.zarr", episodes=1)
    assert main(["train", "--dataset", str(store), "--out", str(root / "run"), *TRAIN]) == 0
    return {"store": store, "one": root / "one.zarr", "run": root / "run"}


@pytest.fixture
def work(base, tmp_path) -> dict[str, Path]:
    """Fresh copies of the base store and run (cases damage them)."""
    shutil.copytree(base["store"], tmp_path / "demos.zarr")
    shutil.copytree(base["run"], tmp_path / "run")
    return {"store": tmp_path / "demos.zarr", "one": base["one"], "run": tmp_path / "run", "tmp": tmp_path}


# ---------------------------------------------------------------------------------------------------------------
# damage helpers
# ---------------------------------------------------------------------------------------------------------------
def truncate(path: Path, size: int = 7) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def flip_tensor_byte(ckpt: Path) -> None:
    """Flip one byte in the tensor data (past the safetensors header): the file still parses."""
    raw = bytearray(ckpt.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    raw[8 + header_len + 5] ^= 0xFF
    ckpt.write_bytes(bytes(raw))


def rewrite_header(ckpt: Path, postbc: str) -> None:
    """Replace the checkpoint's 'postbc' metadata string, keeping the tensors."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt))
    save_file(tensors, str(ckpt), metadata={"postbc": postbc})


def inject_oserror(monkeypatch, err: int) -> None:
    """Every file put into place by rename fails with OSError(err), as on a full disk or a read-only mount: every
    store chunk and metadata write (zarr 2's DirectoryStore and our zarr 3 store both write a temporary file and
    os.replace it), whatever the zarr version."""
    def fail(src, dst, *a, **kw):
        raise OSError(err, os.strerror(err), str(dst))

    monkeypatch.setattr(os, "replace", fail)


# ---------------------------------------------------------------------------------------------------------------
# the CLI table
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    setup: Callable[[dict, pytest.MonkeyPatch], list[str]]  # builds the fault, returns the argv
    match: str  # regex the stderr message must match
    rc: int = 2
    check: Callable[[dict], None] = field(default=lambda w: None)  # what must still be (or not be) on disk
    stream: str = "err"


def _train_out_not_empty(w, mp):
    w["before"] = tree_digest(w["run"])
    return ["train", "--dataset", str(w["store"]), "--out", str(w["run"]), *TRAIN]


def _unchanged_run(w):
    assert tree_digest(w["run"]) == w["before"]  # nothing overwritten, nothing appended to metrics.jsonl


def _action_key_image(w, mp):
    return ["train", "--dataset", str(w["store"]), "--out", str(w["tmp"] / "img_run"),
            *[a if a != "action" else "img_rgb" for a in TRAIN]]


def _no_run(name):
    def check(w):
        assert not (w["tmp"] / name / "policy.safetensors").exists()
        assert not (w["tmp"] / name / "ensemble.safetensors").exists()
    return check


def _val_ratio_one_episode(w, mp):
    return ["train", "--dataset", str(w["one"]), "--out", str(w["tmp"] / "val_run"), *TRAIN, "--val-ratio", "0.2"]


def _bootstrap_one_episode(w, mp):
    args = [a for a in TRAIN]
    args[args.index("--alpha") + 1] = "1"
    return ["train", "--dataset", str(w["one"]), "--out", str(w["tmp"] / "boot_run"), *args]


def _flipped_checkpoint(w, mp):
    flip_tensor_byte(w["run"] / "policy.safetensors")
    return ["eval", "--checkpoint", str(w["run"]), "--task", "lift_cube", "--episodes", "1", "--videos", "0",
            "--out", str(w["tmp"] / "eval")]


def _header_not_json(w, mp):
    rewrite_header(w["run"] / "policy.safetensors", "{not json")
    return ["eval", "--checkpoint", str(w["run"]), "--task", "lift_cube", "--episodes", "1", "--videos", "0",
            "--out", str(w["tmp"] / "eval")]


def _validate_damaged(w, mp):
    s = w["store"]
    truncate(s / "data" / "state" / "0.0")
    truncate(s / "data" / "img_rgb" / "4.0.0.0")
    truncate(s / "data" / "img_rgb" / "20.0.0.0")
    (s / "meta" / "task" / ".zarray").write_text("{")
    return ["data", "validate", str(s)]


def _validate_lists_all(w):
    out = w["captured"]
    for what in ("data/state: damaged chunk at rows 0..35", "data/img_rgb: damaged chunk at rows 4..4",
                 "data/img_rgb: damaged chunk at rows 20..20", "meta/task has unreadable array metadata"):
        assert what in out, what


def _info_truncated_ends(w, mp):
    truncate(w["store"] / "meta" / "episode_ends" / "0")
    return ["data", "info", str(w["store"])]


def _merge_malformed_zarray(w, mp):
    (w["store"] / "data" / "action" / ".zarray").write_text('{"shape": [36, 2], "chunks": ')
    return ["data", "merge", str(w["store"]), "--out", str(w["tmp"] / "merged.zarr")]


def _absent(name):
    def check(w):
        assert not (w["tmp"] / name).exists()
        assert not list(w["tmp"].glob(f".{name}.*"))  # no temporary leftovers either
    return check


def _train_truncated_chunk(w, mp):
    truncate(w["store"] / "data" / "state" / "0.0")
    return ["train", "--dataset", str(w["store"]), "--out", str(w["tmp"] / "t_run"), *TRAIN]


def _drop_damaged(w, mp):
    truncate(w["store"] / "data" / "img_rgb" / "3.0.0.0")
    w["before"] = tree_digest(w["store"])
    return ["data", "drop", str(w["store"]), "--episodes", "0"]


def _unchanged_store(w):
    assert tree_digest(w["store"]) == w["before"]


def _merge_damaged(w, mp):
    truncate(w["store"] / "data" / "state" / "0.0")
    return ["data", "merge", str(w["store"]), "--out", str(w["tmp"] / "m.zarr")]


def _disk_full(w, mp):
    inject_oserror(mp, errno.ENOSPC)
    return ["data", "merge", str(w["store"]), "--out", str(w["tmp"] / "full.zarr")]


def _read_only(w, mp):
    inject_oserror(mp, errno.EROFS)
    return ["data", "split", str(w["store"]), str(w["tmp"] / "split")]


def _no_split(w):
    assert not (w["tmp"] / "split").exists()  # not even the output directory the split created (issue 20)


def _checkpoint_disk_full(w, mp):
    import postbc_core.policies.checkpoint as ck

    def fail(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    mp.setattr(ck, "save_file", fail)
    return ["train", "--dataset", str(w["store"]), "--out", str(w["tmp"] / "full_run"), *TRAIN]


def _no_tmp_checkpoint(w):
    assert not list((w["tmp"] / "full_run").rglob("*.tmp"))
    assert not (w["tmp"] / "full_run" / "policy.safetensors").exists()


def _bad_quality(w, mp):
    return ["sim", "demos", "--task", "lift_cube", "--episodes", "1", "--out", str(w["tmp"] / "q.zarr"),
            "--quality", "1.5"]


def _replay_other_task(w, mp):
    p = w["tmp"] / "lift.zarr"
    with EpisodeStore.create(p) as s:
        s.add_episode({"joint_pos": np.zeros((4, 6), np.float32), "gripper_pos": np.zeros((4, 1), np.float32),
                       "object_pose": np.zeros((4, 7), np.float32), "cmd_joint_pos": np.zeros((4, 7), np.float32)},
                      task="lift_cube", source="scripted")
    return ["replay", "--dataset", str(p), "--episode", "0", "--task", "put_in_bowl", "--out", str(w["tmp"] / "rp")]


def _create_over_backup(w, mp):
    os.rename(w["store"], backup_name(w["store"]))
    return ["data", "import", str(w["one"]), str(w["store"])]


def _backup_kept(w):
    assert not w["store"].exists() and len(backup_paths(w["store"])) == 1


def _debug_env(w, mp):
    mp.setenv("POSTBC_DEBUG", "1")
    return ["data", "info", str(w["tmp"] / "missing.zarr")]


CASES = [
    Case("train_out_not_empty", _train_out_not_empty, r"--out .*run is not empty \(.*\); pass --overwrite",
         check=_unchanged_run),
    Case("train_action_key_image", _action_key_image,
         r"--action-key 'img_rgb' has per-step shape \(8, 8, 3\) dtype uint8 .* an action must be a numeric "
         r"vector \(D,\) .*Vector keys in this store: \['action', 'state'\]", check=_no_run("img_run")),
    Case("train_val_ratio_leaves_no_validation_episode", _val_ratio_one_episode,
         r"--val-ratio 0.2: .*one.zarr has 1 episode, so no episode is left for validation", check=_no_run("val_run")),
    Case("train_bootstrap_one_episode", _bootstrap_one_episode,
         r"--bootstrap trajectory needs at least 2 training episodes, .* leaves 1: every ensemble member would "
         r"resample the same demonstration", check=_no_run("boot_run")),
    Case("load_flipped_tensor_bytes", _flipped_checkpoint,
         r"policy.safetensors: the weights do not match the checkpoint's content hash \(recorded sha256 [0-9a-f]{64}, "
         r"found [0-9a-f]{64}\)"),
    Case("checkpoint_header_not_json", _header_not_json,
         r"policy.safetensors: the checkpoint's 'postbc' header is not valid JSON"),
    Case("validate_lists_every_damaged_array", _validate_damaged, r"INVALID", rc=1, check=_validate_lists_all,
         stream="out"),
    Case("info_truncated_episode_ends", _info_truncated_ends,
         r"meta/episode_ends: damaged chunk at rows 0..2 cannot be read"),
    Case("merge_malformed_zarray", _merge_malformed_zarray,
         r"data/action has unreadable array metadata \(.zarray: JSONDecodeError", check=_absent("merged.zarr")),
    Case("train_truncated_chunk", _train_truncated_chunk,
         r"data/state: damaged chunk at rows 0..35 cannot be read", check=_no_run("t_run")),
    Case("drop_damaged_store", _drop_damaged, r"data/img_rgb: damaged chunk at rows 3..3", check=_unchanged_store),
    Case("merge_truncated_chunk", _merge_damaged, r"data/state: damaged chunk", check=_absent("m.zarr")),
    Case("disk_full", _disk_full, r"writing .*full.zarr: No space left on device \(.*\); free some space",
         check=_absent("full.zarr")),
    Case("read_only_directory", _read_only, r"Read-only file system \(.*\); the filesystem is mounted read-only: "
         r"choose a writable output path", check=_no_split),
    Case("checkpoint_disk_full", _checkpoint_disk_full,
         r"writing checkpoint .*: No space left on device", check=_no_tmp_checkpoint),
    Case("sim_demos_bad_quality", _bad_quality, r"quality=1.5: use a value in \[0, 1\]", check=_absent("q.zarr")),
    Case("replay_task_differs_from_recorded", _replay_other_task,
         r"--task 'put_in_bowl': episode 0 of .* was recorded in sim task 'lift_cube'"),
    Case("create_over_a_backup", _create_over_backup,
         r"refusing to create a new store at .*demos.zarr: .* is missing but its backup .* holds it",
         check=_backup_kept),
    Case("debug_env_shows_traceback", _debug_env, r"(?s)Traceback .*error: .*missing.zarr: no such store"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_fault(case: Case, work, monkeypatch, capsys):
    argv = case.setup(work, monkeypatch)
    rc = main(argv)
    out, err = capsys.readouterr()
    text = out if case.stream == "out" else err
    work["captured"] = text
    assert rc == case.rc, (out, err)
    assert __import__("re").search(case.match, text), text
    if case.id != "debug_env_shows_traceback":
        assert "Traceback" not in err
    case.check(work)


# ---------------------------------------------------------------------------------------------------------------
# the same faults as a user meets them: a separate process, nothing but one line on stderr
# ---------------------------------------------------------------------------------------------------------------
def test_process_prints_one_error_line_and_debug_adds_the_traceback(work):
    truncate(work["store"] / "data" / "img_rgb" / "7.0.0.0")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSTBC_LOG": "WARNING"}
    env.pop("POSTBC_DEBUG", None)
    argv = [str(BIN / "postbc"), "train", "--dataset", str(work["store"]), "--out", str(work["tmp"] / "p_run"),
            *[a if a != "state" else "img_rgb" for a in TRAIN]]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [l for l in r.stderr.strip().splitlines() if l.startswith("error: ")]
    assert "data/img_rgb: damaged chunk at rows 7..7" in r.stderr
    assert not (work["tmp"] / "p_run").exists()  # bad input leaves no half run that would block the rerun
    r = subprocess.run([str(BIN / "postbc"), "--debug", *argv[1:]], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 2 and "Traceback" in r.stderr and "damaged chunk" in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# train --overwrite replaces the run (nothing of the old run is mixed in)
# ---------------------------------------------------------------------------------------------------------------
def test_train_overwrite_replaces_the_run(work, capsys):
    old_lines = (work["run"] / "metrics.jsonl").read_text().splitlines()
    (work["run"] / "notes.txt").write_text("mine")
    assert main(["train", "--dataset", str(work["store"]), "--out", str(work["run"]), *TRAIN, "--overwrite"]) == 0
    new_lines = (work["run"] / "metrics.jsonl").read_text().splitlines()
    assert len(new_lines) == len(old_lines)  # a fresh log, not the old one with a second run appended
    assert (work["run"] / "notes.txt").read_text() == "mine"  # only the run's own outputs are replaced


# ---------------------------------------------------------------------------------------------------------------
# the in-place drop killed between its two renames: nothing is lost
# ---------------------------------------------------------------------------------------------------------------
def test_drop_killed_between_renames_is_restored_on_open(work, capsys):
    store = work["store"]
    before = tree_digest(store)
    r = run_child(f"""
        import os
        import postbc_core.data.tools as tools
        tools._DROP_TEST_HOOK = lambda point: os._exit(9)
        tools.drop({str(store)!r}, [0])
    """)
    assert r.returncode == 9, r.stderr
    assert not store.exists() and len(backup_paths(store)) == 1  # the state the issue found
    # validate (read-only) reports it with the fix; it changes nothing
    assert main(["data", "validate", str(store)]) == 1
    assert "is missing but its backup" in capsys.readouterr().out and not store.exists()
    # appending (what `sim demos --append` does) restores the store instead of creating an empty one
    with EpisodeStore.open(store, "a") as s:
        assert s.n_episodes == 3
    assert tree_digest(store) == before and not backup_paths(store)
    # and the drop can simply be run again
    assert main(["data", "drop", str(store), "--episodes", "0"]) == 0
    with EpisodeStore.open(store) as s:
        assert s.n_episodes == 2


def test_info_restores_a_backup_and_a_leftover_backup_is_reported(work, capsys, caplog):
    store = work["store"]
    os.rename(store, backup_name(store))
    assert main(["data", "info", str(store)]) == 0
    assert "episodes: 3" in capsys.readouterr().out and "restored the store from its backup" in caplog.text
    shutil.copytree(store, backup_name(store))  # killed after the second rename: the result is in place
    assert main(["data", "validate", str(store)]) == 0
    assert "remain from an interrupted in-place rewrite" in capsys.readouterr().out


def test_appending_onto_a_damaged_chunk_names_it_and_keeps_the_committed_episodes(work):
    truncate(work["store"] / "data" / "state" / "0.0")  # the partial chunk a new episode extends
    rng = np.random.default_rng(1)
    with EpisodeStore.open(work["store"], "a") as s:
        with pytest.raises(StoreError, match=r"cannot append to data/state at rows 36..47: .*damaged"):
            s.add_episode({"state": rng.normal(size=(T, 2)).astype(np.float32),
                           "action": rng.normal(size=(T, 2)).astype(np.float32),
                           "img_rgb": np.zeros((T, 8, 8, 3), np.uint8)})
        assert s.n_episodes == 3
    with EpisodeStore.open(work["store"]) as s:
        assert s.n_episodes == 3 and s.n_steps == 3 * T


def test_nothing_creates_a_store_over_a_backup(work):
    store = work["store"]
    os.rename(store, backup_name(store))
    with pytest.raises(StoreError, match="refusing to create a new store"):
        EpisodeStore.create(store)
    with pytest.raises(StoreError, match="refusing to create a new store"):
        EpisodeStore.create(store, overwrite=True)
    from postbc_core.sim.demos import record_demos

    with pytest.raises(StoreError, match="refusing to create a new store"):
        record_demos("lift_cube", 1, store)
    assert not store.exists() and len(backup_paths(store)) == 1


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: content hash, shapes
# ---------------------------------------------------------------------------------------------------------------
def test_checkpoint_records_a_hash_that_names_the_weights(work):
    from postbc_core import load_policy
    from postbc_core.policies.checkpoint import tensors_sha256

    policy = load_policy(work["run"], device="cpu")
    header = json.loads(__import__("safetensors").safe_open(str(work["run"] / "policy.safetensors"), "pt").metadata()
                        ["postbc"])
    assert header["content_sha256"] == policy.info["content_sha256"] == tensors_sha256(policy.state_dict())


def test_weights_of_another_shape_than_the_config_are_refused(work):
    from postbc_core import load_policy
    from postbc_core.policies.checkpoint import save_checkpoint
    from safetensors import safe_open
    from safetensors.torch import load_file

    ckpt = work["run"] / "policy.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        info = json.loads(f.metadata()["postbc"])
    tensors = load_file(str(ckpt))
    name = next(k for k, v in tensors.items() if v.ndim == 2 and not k.startswith("normalizer"))
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    info.pop("content_sha256")
    save_checkpoint(ckpt, "policy", tensors, {k: v for k, v in info.items() if k not in (
        "format", "format_version", "postbc_core_version", "torch_version", "created")})
    with pytest.raises(CheckpointError, match=rf"weights have other shapes than the architecture .*{name}"):
        load_policy(ckpt, device="cpu")


# ---------------------------------------------------------------------------------------------------------------
# finetune --resume onto other weights at the same path
# ---------------------------------------------------------------------------------------------------------------
def _tiny_policy(seed: int, hidden=(16, 16)):
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig

    torch.manual_seed(seed)
    x = np.random.default_rng(seed).normal(size=(64, 2)).astype(np.float32)
    norm = LinearNormalizer().fit({"pos": x}, default_mode="limits")
    norm.fit({"action": x}, default_mode="limits")
    return DiffusionPolicy(PolicyConfig(obs_shapes={"pos": (2,)}, action_dim=2, action_horizon=4, mlp_hidden=hidden,
                                        num_inference_steps=2), norm)


@pytest.mark.parametrize("replacement", ["other_weights", "other_shape"])
def test_finetune_resume_refuses_other_weights_and_names_both_hashes(tmp_path, replacement):
    from postbc_core.policies.checkpoint import save_policy, tensors_sha256
    from postbc_core.rl.dsrl import DSRLConfig
    from postbc_core.rl.finetune_config import FinetuneConfig
    from postbc_core.rl.finetuner import Finetuner

    ckpt = tmp_path / "policy.safetensors"
    first = _tiny_policy(0)
    first.action_key = "action"
    save_policy(first, ckpt)
    cfg = FinetuneConfig(checkpoint=ckpt, task="fork", algorithm="dsrl_sac", episodes=2, out=tmp_path / "ft",
                         device="cpu", dsrl=DSRLConfig(warmup_episodes=1, batch_size=8, hidden=(16, 16)))
    Finetuner(cfg).close()
    other = _tiny_policy(1) if replacement == "other_weights" else _tiny_policy(0, hidden=(32, 32))
    other.action_key = "action"
    save_policy(other, ckpt)
    cfg.resume = True
    with pytest.raises(CheckpointError) as e:
        Finetuner(cfg)
    msg = str(e.value)
    assert f"started from sha256 {tensors_sha256(first.state_dict())}" in msg
    assert f"now {tensors_sha256(other.state_dict())}" in msg and "restore the original checkpoint" in msg
    save_policy(first, ckpt)  # the original weights back: the run resumes
    Finetuner(cfg).close()


# ---------------------------------------------------------------------------------------------------------------
# typed actions and the clamp flag
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda A, E: A(joint_pos=np.zeros(5), gripper=0.02),
     r"joint_pos \(rad\) must have shape \(6,\) .*got shape \(5,\)"),
    (lambda A, E: A(joint_pos=np.zeros((6, 1)), gripper=0.02), r"must have shape \(6,\).*got shape \(6, 1\)"),
    (lambda A, E: A(joint_pos=np.zeros(6) + 1j, gripper=0.02), r"dtype complex128; it must hold real numbers"),
    (lambda A, E: A(joint_pos=np.array(["0"] * 6), gripper=0.02), r"dtype <U1; it must hold real numbers"),
    (lambda A, E: A(joint_pos=np.zeros(6, bool), gripper=0.02), r"dtype bool; it must hold real numbers"),
    (lambda A, E: A(joint_pos=np.array([0, 0, 0, 0, np.nan, 0]), gripper=0.02),
     r"non-finite values \(wrist_angle=nan\)"),
    (lambda A, E: A(joint_pos=np.zeros(6), gripper=float("inf")), r"gripper \(m\) has non-finite values"),
    (lambda A, E: A(joint_pos=np.zeros(6), gripper=np.array([0.01, 0.02])),
     r"gripper \(m\) must have shape \(\) \(a scalar\), got shape \(2,\)"),
    (lambda A, E: A(joint_pos=np.zeros(6), gripper=0.02 + 0j), r"gripper \(m\) has dtype complex128"),
    (lambda A, E: E(delta=np.zeros(7), gripper=0.02), r"delta \(m, rad\) must have shape \(6,\) \(dx, dy, dz"),
    (lambda A, E: E(delta=np.array([0, 0, np.inf, 0, 0, 0]), gripper=0.02), r"non-finite values \(dz=inf\)"),
    (lambda A, E: E(delta=[0, 0, 0, 0, 0, 1j], gripper=0.02), r"dtype complex128"),
])
def test_typed_actions_validate_on_construction(make, match):
    from postbc_core.robots.base import EEDeltaAction, JointAction

    with pytest.raises(ActionError, match=match):
        make(JointAction, EEDeltaAction)


def test_typed_actions_keep_a_private_float_copy():
    from postbc_core.robots.base import JointAction

    q = np.zeros(6, np.float32)
    a = JointAction(joint_pos=q, gripper=np.float32(0.02))
    q[0] = 1.0
    assert a.joint_pos.dtype == np.float64 and a.joint_pos[0] == 0.0 and isinstance(a.gripper, float)
    with pytest.raises(ValueError):
        a.joint_pos[0] = 2.0


@pytest.mark.parametrize("gripper, clamped", [(0.02, False), (0.5, True), (-0.1, True)])
def test_every_clamp_sets_the_flag_gripper_included(gripper, clamped):
    from postbc_core.robots.kinematics import GRIPPER_LIMITS, HOME_QPOS
    from postbc_core.robots.safety import SafetyLayer

    sent = SafetyLayer().filter(HOME_QPOS, gripper, HOME_QPOS)  # joints in range, not moving: only the gripper
    assert sent.clamped is clamped
    assert GRIPPER_LIMITS[0] <= sent.gripper <= GRIPPER_LIMITS[1]
