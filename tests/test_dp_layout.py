"""Stores in diffusion_policy's ReplayBuffer layout (data/<key>, meta/episode_ends, nothing else), written with plain
zarr as diffusion_policy writes them: every command their keys allow works on them (issue 20: `postbc train` died
with KeyError 'task' because it read per-episode metadata that such stores do not have)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from postbc_core import load_policy
from postbc_core.cli.main import main
from postbc_core.data import EpisodeStore
from postbc_core.robots.kinematics import HOME_QPOS

T = 16  # steps per episode
EPISODES = 3
# lift_cube's state keys (the shapes its observations have), so a policy trained on the store runs in the sim
OBS = ("joint_pos", "gripper_pos", "object_pose")
TRAIN = ["--obs-keys", *OBS, "--action-key", "cmd_joint_pos", "--alpha", "1", "--ensemble-size", "2",
         "--ensemble-steps", "2", "--ensemble-batch-size", "8", "--ensemble-hidden", "16", "--steps", "2",
         "--batch-size", "8", "--mlp-hidden", "16", "16", "--warmup-steps", "0", "--device", "cpu", "--no-progress",
         "--log-every", "1"]


def _array(group, name: str, values: np.ndarray) -> None:
    if int(zarr.__version__.split(".")[0]) >= 3:
        group.create_array(name, data=values)
    else:
        group.create_dataset(name, data=values)


def write_dp_store(path: Path) -> Path:
    """diffusion_policy's ReplayBuffer layout through zarr's own API: no root attributes, no meta/ but episode_ends."""
    rng = np.random.default_rng(0)
    n = T * EPISODES
    joints = np.asarray(HOME_QPOS, np.float32) + rng.normal(0, 0.05, (n, 6)).astype(np.float32)
    cube = np.tile(np.array([0.3, 0.0, 0.02, 1, 0, 0, 0], np.float32), (n, 1))
    data = {"joint_pos": joints, "gripper_pos": rng.uniform(0.02, 0.035, (n, 1)).astype(np.float32),
            "object_pose": cube + rng.normal(0, 0.01, (n, 7)).astype(np.float32),
            "cmd_joint_pos": np.concatenate([joints + 0.01, np.full((n, 1), 0.03, np.float32)], axis=1),
            "timestamp": np.arange(n, dtype=np.float64) * 0.1}
    kw = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
    root = zarr.open_group(str(path), mode="w", **kw)
    for k, v in data.items():
        _array(root.require_group("data"), k, v)
    _array(root.require_group("meta"), "episode_ends", np.arange(1, EPISODES + 1, dtype=np.int64) * T)
    return path


@pytest.fixture
def dp(tmp_path) -> Path:
    store = write_dp_store(tmp_path / "dp.zarr")
    assert sorted(zarr.open_group(str(store), mode="r")["meta"].array_keys()) == ["episode_ends"]
    return store


def test_dp_store_trains_evaluates_and_exports(dp, tmp_path, capsys):
    assert main(["data", "validate", str(dp)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dp), "--out", str(run), *TRAIN]) == 0
    policy = load_policy(run, device="cpu")
    assert policy.info["train"]["tasks"] == []  # the store names no task: nothing recorded, nothing to check
    # a task is given on the command line: the checkpoint runs in it
    ev = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run), "--task", "lift_cube", "--episodes", "1", "--num-envs", "1",
                 "--videos", "0", "--max-steps", "4", "--device", "cpu", "--out", str(ev)]) == 0
    rep = json.loads((ev / "eval.json").read_text())
    assert rep["task"] == "lift_cube" and rep["episodes"] == 1 and rep["lengths"] == [4]
    exported = tmp_path / "exported.zarr"
    assert main(["data", "export", str(dp), str(exported)]) == 0
    src, dst = zarr.open_group(str(dp), mode="r"), zarr.open_group(str(exported), mode="r")
    np.testing.assert_array_equal(dst["meta/episode_ends"][:], src["meta/episode_ends"][:])
    for k in src["data"].array_keys():
        np.testing.assert_array_equal(dst[f"data/{k}"][:], src[f"data/{k}"][:])
    assert "error" not in capsys.readouterr().err


def test_every_data_command_takes_a_dp_store(dp, tmp_path, capsys):
    assert main(["data", "info", str(dp)]) == 0
    assert f"episodes: {EPISODES}" in capsys.readouterr().out
    assert main(["data", "split", str(dp), str(tmp_path / "split"), "--val-fraction", "0.34"]) == 0
    assert main(["data", "drop", str(dp), "--episodes", "0", "--out", str(tmp_path / "dropped.zarr")]) == 0
    assert main(["data", "merge", str(dp), str(tmp_path / "dropped.zarr"), "--out", str(tmp_path / "m.zarr")]) == 0
    with EpisodeStore.open(tmp_path / "m.zarr") as s:
        assert s.n_episodes == 2 * EPISODES - 1
    # an import that names the sim task: the checkpoint records it (and `postbc eval` checks it)
    assert main(["data", "import", str(dp), str(tmp_path / "imp.zarr"), "--task", "lift_cube"]) == 0
    assert main(["train", "--dataset", str(tmp_path / "imp.zarr"), "--out", str(tmp_path / "run"), *TRAIN]) == 0
    assert load_policy(tmp_path / "run", device="cpu").info["train"]["tasks"] == ["lift_cube"]
