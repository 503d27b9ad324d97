"""Policy evaluation, the receding-horizon PolicyRunner and episode replay in the MuJoCo twin."""

import json
import os
import subprocess

import numpy as np
import pytest
from _paths import BIN
from postbc_core.data import EpisodeStore, validate_store
from postbc_core.data.normalizer import LinearNormalizer
from postbc_core.errors import ConfigError, StoreError
from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
from postbc_core.control.runner import PolicyRunner
from postbc_core.robots import kinematics
from postbc_core.robots.actions import ee_delta_between
from postbc_core.sim.evaluation import evaluate_policy
from postbc_core.stats import wilson_interval

DEMO_KEYS = {"timestamp", "joint_pos", "joint_vel", "joint_effort", "gripper_pos", "ee_pose", "cmd_ee_delta",
             "cmd_joint_pos", "object_pose", "reward", "done"}


def run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "postbc"), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


# -- PolicyRunner on a real (tiny, untrained) diffusion policy ------------------------------------------------------
def tiny_policy(obs_shapes=None, action_key="cmd_joint_pos", n_obs_steps=2, action_horizon=4, action_dim=7):
    obs_shapes = obs_shapes or {"joint_pos": (6,)}
    cfg = PolicyConfig(obs_shapes=obs_shapes, action_dim=action_dim, n_obs_steps=n_obs_steps,
                       action_horizon=action_horizon, mlp_hidden=(16,), num_train_timesteps=10,
                       num_inference_steps=3)
    rng = np.random.default_rng(0)
    norm = LinearNormalizer()
    norm.fit({k: rng.normal(size=(64, *s)).astype(np.float32) for k, s in obs_shapes.items()},
             default_mode="gaussian")
    lo, hi = np.r_[kinematics.JOINT_LIMITS[:, 0], 0.015] / 4, np.r_[kinematics.JOINT_LIMITS[:, 1], 0.037] / 4
    norm.fit({action_key: rng.uniform(lo[:action_dim], hi[:action_dim], (64, action_dim)).astype(np.float32)},
             default_mode="limits")
    policy = DiffusionPolicy(cfg, norm).eval()
    policy.action_key = action_key
    return policy


class SpyPolicy:
    """Forwards to the real policy and records every predict_action call (inputs and outputs)."""

    def __init__(self, policy):
        self.policy, self.config, self.action_key, self.calls = policy, policy.config, policy.action_key, []

    def predict_action(self, obs, noise=None):
        out = self.policy.predict_action(obs, noise=noise)
        self.calls.append(({k: v.copy() for k, v in obs.items()}, out.copy()))
        return out


def test_runner_pads_history_and_executes_chunk_prefix():
    spy = SpyPolicy(tiny_policy(n_obs_steps=2, action_horizon=4))
    runner = PolicyRunner(spy, num_envs=1, n_action_steps=2)
    assert runner.action_mode == "joint"
    obs = [np.full((1, 6), float(t), np.float32) for t in range(6)]  # o_t = t everywhere
    executed = [runner.act({"joint_pos": o}) for o in obs]
    assert len(spy.calls) == 3  # steps 0, 2, 4: every n_action_steps
    hist = [c[0]["joint_pos"][0, :, 0] for c in spy.calls]  # (To,) history per call
    np.testing.assert_array_equal(hist[0], [0, 0])  # episode start: first obs repeated
    np.testing.assert_array_equal(hist[1], [1, 2])
    np.testing.assert_array_equal(hist[2], [3, 4])
    for t, a in enumerate(executed):
        chunk = spy.calls[t // 2][1][0]  # (Ta, Da)
        np.testing.assert_array_equal(a[0], chunk[t % 2])  # the chunk's first two actions, in order
    assert not np.allclose(spy.calls[0][1][0, 0], spy.calls[1][1][0, 0])  # a fresh chunk, not a repeat


def test_runner_batches_envs_and_resets_a_subset():
    spy = SpyPolicy(tiny_policy(n_obs_steps=2, action_horizon=3))
    runner = PolicyRunner(spy, num_envs=2)  # n_action_steps = Ta = 3
    o = lambda a, b: {"joint_pos": np.array([[a] * 6, [b] * 6], np.float32)}
    runner.act(o(0, 10))
    assert len(spy.calls) == 1 and spy.calls[0][0]["joint_pos"].shape == (2, 2, 6)  # one batched call
    runner.act(o(1, 11))
    runner.reset([1])  # env 1 starts a new episode mid-chunk; env 0 keeps executing its chunk
    a = runner.act(o(2, 20))
    assert len(spy.calls) == 2
    last_obs, last_out = spy.calls[1]
    assert last_obs["joint_pos"].shape == (1, 2, 6)  # only env 1 replans
    np.testing.assert_array_equal(last_obs["joint_pos"][0, :, 0], [20, 20])  # padded with its first obs
    np.testing.assert_array_equal(a[0], spy.calls[0][1][0, 2])
    np.testing.assert_array_equal(a[1], last_out[0, 0])
    assert runner.replanned.tolist() == [False, True]


def test_runner_noise_passthrough_is_deterministic():
    policy = tiny_policy()
    noise = np.random.default_rng(1).normal(size=(2, 4, 7)).astype(np.float32)
    obs = {"joint_pos": np.zeros((2, 6), np.float32)}
    a1 = PolicyRunner(policy, num_envs=2).act(obs, noise=noise)
    a2 = PolicyRunner(policy, num_envs=2).act(obs, noise=noise)
    np.testing.assert_array_equal(a1, a2)
    direct = policy.predict_action({"joint_pos": np.zeros((2, 2, 6), np.float32)}, noise=noise)
    np.testing.assert_array_equal(a1, direct[:, 0])


def test_runner_errors_name_the_problem():
    with pytest.raises(ConfigError, match="'action'"):
        PolicyRunner(tiny_policy(action_key="action"))
    assert PolicyRunner(tiny_policy(action_key="cmd_ee_delta")).action_mode == "ee_delta"
    with pytest.raises(ConfigError, match="n_action_steps=5"):
        PolicyRunner(tiny_policy(), n_action_steps=5)
    with pytest.raises(ConfigError, match="3 dims"):
        PolicyRunner(tiny_policy(action_dim=3))
    runner = PolicyRunner(tiny_policy(), num_envs=2)
    with pytest.raises(ConfigError, match="missing keys \\['joint_pos'\\]"):
        runner.act({"gripper_pos": np.zeros((2, 1))})
    with pytest.raises(ConfigError, match="shape"):
        runner.act({"joint_pos": np.zeros((3, 6))})


# -- evaluation in-process (tiny untrained policy: mechanics, not skill) ------------------------------------------
def test_evaluate_policy_seeds_lengths_and_errors(tmp_path):
    policy = tiny_policy({"joint_pos": (6,), "object_pose": (7,)}, n_obs_steps=1, action_horizon=2)
    r = evaluate_policy(policy, "lift_cube", episodes=3, num_envs=2, seed=7, max_steps=6)
    assert r["seeds"] == [7, 8, 9] and r["lengths"] == [6, 6, 6] and r["n_steps"] == 18
    assert r["success_ci95"] == list(wilson_interval(r["n_success"], 3))
    # Seeds are per episode, not per env slot: one env runs the same episode seeds in the same order.
    r1 = evaluate_policy(policy, "lift_cube", episodes=3, num_envs=1, seed=7, max_steps=6)
    assert r1["seeds"] == r["seeds"] and r1["num_envs"] == 1 and r["num_envs"] == 2
    bad = tiny_policy({"joint_pos": (6,), "object_height": (1,)})
    with pytest.raises(ConfigError, match=r"missing \['object_height'\].*target_pos"):
        evaluate_policy(bad, "push_to_target", episodes=1)
    with pytest.raises(ConfigError, match="ee_to_object: policy \\(5,\\) vs task \\(3,\\)"):
        evaluate_policy(tiny_policy({"ee_to_object": (5,)}), "lift_cube", episodes=1)


def test_evaluate_policy_seeds_every_episodes_noise(tmp_path):
    """Episode i's actions depend on seed + i only: not on num_envs (which episodes share a batch), nor on the
    caller's torch random state. (Drawn from the global torch RNG, the same episode got other noise in each case.)"""
    import torch

    policy = tiny_policy({"joint_pos": (6,), "object_pose": (7,)}, n_obs_steps=1, action_horizon=2)
    runs = []
    for num_envs, torch_seed in ((1, 0), (3, 123), (2, 7)):
        torch.manual_seed(torch_seed)
        rec = tmp_path / f"r{num_envs}.zarr"
        evaluate_policy(policy, "lift_cube", episodes=3, num_envs=num_envs, seed=11, max_steps=8, record_to=rec)
        from postbc_core.data.store import EpisodeStore

        s = EpisodeStore.open(rec)
        runs.append([s.episode(i)["policy_action"] for i in range(3)])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_ee_delta_between_inverts_apply_ee_delta():
    q = kinematics.HOME_QPOS
    delta = np.array([0.01, -0.02, 0.015, 0.05, -0.04, 0.1])
    q1 = kinematics.apply_ee_delta(q, delta)
    np.testing.assert_allclose(ee_delta_between(q, q1), delta, atol=1e-4)


# -- end to end: demos -> postbc train -> postbc eval; replay --------------------------------------------------------
@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from postbc_core.sim.demos import record_demos

    path = tmp_path_factory.mktemp("demos") / "demos.zarr"
    stats = record_demos("lift_cube", 4, path, seed=0)
    assert stats.stored == 4
    return path


def test_train_then_eval_end_to_end(demos, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--dataset", str(demos), "--out", str(run), "--obs-keys", "joint_pos", "gripper_pos",
                "object_pose", "--action-key", "cmd_joint_pos", "--n-obs-steps", "2", "--action-horizon", "4",
                "--alpha", "0", "--mlp-hidden", "32", "32", "--steps", "30", "--batch-size", "16",
                "--log-every", "10", "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    out, rec = tmp_path / "eval", tmp_path / "rollouts.zarr"
    r = run_cli("eval", "--checkpoint", str(run), "--task", "lift_cube", "--episodes", "3", "--num-envs", "2",
                "--seed", "100", "--videos", "1", "--max-steps", "25", "--record-to", str(rec), "--out", str(out),
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "Wilson 95% CI" in r.stdout
    rep = json.loads((out / "eval.json").read_text())
    assert rep["episodes"] == 3 and rep["seeds"] == [100, 101, 102]
    assert len(rep["returns"]) == len(rep["lengths"]) == len(rep["successes"]) == 3
    assert all(1 <= n <= 25 for n in rep["lengths"])
    assert rep["success_rate"] == sum(rep["successes"]) / 3
    assert rep["success_ci95"] == pytest.approx(list(wilson_interval(rep["n_success"], 3)))
    assert rep["action_mode"] == "joint" and rep["n_action_steps"] == 4
    video = out / "videos" / "episode_000.mp4"
    assert video.stat().st_size > 1000 and len(rep["videos"]) == 1
    import cv2

    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == rep["lengths"][0] + 1  # reset frame + one per step
    cap.release()
    report = validate_store(rec)
    assert report.ok, report
    with EpisodeStore.open(rec) as store:
        assert store.n_episodes == 3 and store.episode_lengths.tolist() == rep["lengths"]
        assert DEMO_KEYS | {"policy_action"} <= set(store.keys)
        metas = [store.episode_meta(i) for i in range(3)]
        assert {m["source"] for m in metas} == {"policy"} and {m["task"] for m in metas} == {"lift_cube"}
        assert sorted(m["success"] for m in metas) == sorted(rep["successes"])
        with EpisodeStore.open(demos) as d:  # same per-step schema as the demos for the shared keys
            mine, theirs = store.schema(), d.schema()
            assert all(mine[k] == theirs[k] for k in DEMO_KEYS), {k: (mine[k], theirs[k]) for k in DEMO_KEYS}


def test_replay_reproduces_recorded_demo(demos, tmp_path):
    out = tmp_path / "replay"
    r = run_cli("replay", "--dataset", str(demos), "--episode", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "replay.json").read_text())
    with EpisodeStore.open(demos) as store:
        T = int(store.episode_lengths[1])
    assert rep["steps"] == T and len(rep["per_step"]["joint_error_rad"]) == T
    # Deterministic physics: only the float32 rounding of the recorded start state and actions separates them
    # (measured ~1e-7 rad, ~2e-5 m).
    assert rep["joint_error_rad"]["max"] < 1e-5, rep["joint_error_rad"]
    assert rep["object_pos_error_m"]["max"] < 1e-3, rep["object_pos_error_m"]
    assert rep["replay_success"] == rep["recorded_success"] is True
    assert (out / "replay.mp4").stat().st_size > 1000
    # The operator's EE deltas go through the teleop path again (IK from the measured joints, the safety layer's
    # speed limit): they reproduce the motion too.
    from postbc_core.sim.replay import replay_episode

    ee = replay_episode(demos, 1, out=tmp_path / "ee", action_key="cmd_ee_delta", video=False)
    assert ee["joint_error_rad"]["max"] < 1e-5, ee["joint_error_rad"]
    # The metric can see drift: the same episode with one joint command 0.02 rad off diverges by centiradians.
    with EpisodeStore.open(demos) as store:
        ep, meta = store.episode(1), store.episode_meta(1)
    ep["cmd_joint_pos"][5, 0] += 0.02
    with EpisodeStore.open(tmp_path / "bent.zarr", "a") as bent:
        bent.add_episode(ep, success=meta["success"], task=meta["task"], source="teleop")
    bent = replay_episode(tmp_path / "bent.zarr", 0, out=tmp_path / "bent", video=False)
    assert bent["joint_error_rad"]["max"] > 1e-3


def test_replay_errors_name_the_problem(demos, tmp_path, capsys):
    from postbc_core.cli.main import main

    assert main(["replay", "--dataset", str(demos), "--episode", "9", "--out", str(tmp_path)]) == 2
    assert "episode index 9 out of range (the store has 4 episodes" in capsys.readouterr().err
    assert main(["replay", "--dataset", str(demos), "--episode", "0", "--action-key", "action"]) == 2
    assert "'action'" in capsys.readouterr().err
    thin = tmp_path / "thin.zarr"
    with EpisodeStore.create(thin) as store:
        store.add_episode({"joint_pos": np.zeros((3, 6), np.float32), "cmd_joint_pos": np.zeros((3, 7), np.float32)},
                          task="lift_cube")
    from postbc_core.sim.replay import replay_episode

    with pytest.raises(StoreError, match=r"\['gripper_pos', 'object_pose'\]"):
        replay_episode(thin, 0, out=tmp_path / "x")


def test_eval_refuses_another_task_than_the_checkpoints(demos, tmp_path, capsys, caplog):
    """A lift_cube checkpoint on put_in_bowl reported 0 % without a word: checkpoints now record their store's task
    and `postbc eval` refuses another sim task unless --allow-other-task (then it warns)."""
    import logging

    from postbc_core.cli.main import main

    run = tmp_path / "run"
    assert main(["train", "--dataset", str(demos), "--out", str(run), "--obs-keys", "joint_pos", "gripper_pos",
                 "object_pose", "--action-key", "cmd_joint_pos", "--alpha", "0", "--mlp-hidden", "16", "16", "--steps",
                 "2", "--batch-size", "8", "--warmup-steps", "0", "--no-progress", "--device", "cpu"]) == 0
    args = ["eval", "--checkpoint", str(run), "--episodes", "1", "--num-envs", "1", "--videos", "0", "--max-steps",
            "3", "--device", "cpu", "--out", str(tmp_path / "ev")]
    capsys.readouterr()
    assert main([*args, "--task", "put_in_bowl"]) == 2
    assert "was trained on sim task 'lift_cube'" in capsys.readouterr().err and not (tmp_path / "ev").exists()
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--task", "put_in_bowl", "--allow-other-task"]) == 0
    assert "trained on sim task 'lift_cube' and runs in 'put_in_bowl'" in caplog.text
    assert main([*args, "--task", "lift_cube"]) == 0


def test_checkpoints_without_a_recorded_task_run_in_any_task():
    from postbc_core.sim.task_fit import check_checkpoint_task

    for info in ({}, {"train": {}}, {"train": {"tasks": []}}, {"train": {"tasks": ["pick the red cup"]}}):
        check_checkpoint_task(info, "put_in_bowl", "old.safetensors")  # older checkpoints, no or real-robot tasks
    with pytest.raises(ConfigError, match="trained on sim task 'lift_cube'"):
        check_checkpoint_task({"train": {"tasks": ["lift_cube"]}}, "put_in_bowl", "new.safetensors")
    check_checkpoint_task({"train": {"tasks": ["lift_cube", "put_in_bowl"]}}, "put_in_bowl", "multi.safetensors")
