"""RL finetuning in the MuJoCo twin: the noise wrapper's exactness, `run_finetune` end to end, the replay store
under the data tools, `postbc finetune` killed mid-episode and resumed, and bad inputs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import torch
from _data_helpers import read_until_stalled
from _paths import BIN
from _policies import LIFT_OBS_KEYS as OBS_KEYS
from postbc_core.data import EpisodeStore, validate_store
from postbc_core.errors import CheckpointError, ConfigError, PostBCError
from postbc_core.policies.checkpoint import load_policy, read_checkpoint, save_policy
from postbc_core.control.runner import PolicyRunner
from postbc_core.rl import DSRLConfig, FinetuneConfig, NoiseEnv, run_finetune
from postbc_core.sim.registry import make

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(checkpoint, out, **kw) -> FinetuneConfig:
    kw = {"task": "lift_cube", "max_steps": 12, "device": "cpu",
          "dsrl": DSRLConfig(warmup_episodes=1, utd=2, batch_size=32, hidden=(32, 32)), **kw}
    return FinetuneConfig(checkpoint=checkpoint, out=out, **kw)


def run_cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([str(BIN / "postbc"), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


# -- the noise wrapper ---------------------------------------------------------------------------------------------
def test_zero_noise_reproduces_the_pretrained_policy_exactly(lift_checkpoint):
    policy = load_policy(lift_checkpoint, device="cpu")
    env = NoiseEnv(make("lift_cube", max_steps=40), policy)
    ref_task = make("lift_cube", max_steps=40)
    runner = PolicyRunner(policy, num_envs=1)
    zeros = np.zeros((1, 4, 7), np.float32)
    feats = env.reset(seed=7)
    obs = ref_task.reset(seed=7)
    lo, hi = ref_task.action_bounds()
    n_actions = 0
    for _ in range(3):
        window = {k: np.asarray(obs[k], np.float32)[None] for k in OBS_KEYS}  # (To=1, *shape)
        assert np.array_equal(feats, policy.encode_obs({k: torch.as_tensor(v)[None] for k, v in window.items()})[0])
        feats, _, terminated, truncated, info = env.step(np.zeros(28, np.float32))
        assert np.array_equal(info["chunk"], policy.predict_action(window, noise=zeros[0]))
        for a in info["policy_actions"]:
            expected = runner.act({k: np.asarray(obs[k], np.float32)[None] for k in OBS_KEYS}, noise=zeros)[0]
            assert np.array_equal(a, expected)  # bit-for-bit, not approximately
            obs = ref_task.step(np.clip(expected, lo, hi))[0]
            n_actions += 1
        assert np.array_equal(env.obs["joint_pos"], obs["joint_pos"])
        assert not (terminated or truncated)
    assert n_actions == 12
    # ... and the noise does steer: another w gives another chunk
    env.reset(seed=7)
    other = env.step(np.full(28, 1.0, np.float32))[4]["chunk"]
    assert np.abs(other - policy.predict_action(window, noise=zeros[0])).max() > 1e-3


# -- run_finetune end to end ---------------------------------------------------------------------------------------
def test_finetune_on_the_sim_writes_a_valid_replay_store_metrics_and_checkpoint(lift_checkpoint, tmp_path):
    from postbc_core.sim.replay import replay_episode

    cfg = tiny_config(lift_checkpoint, tmp_path / "ft", episodes=3, eval_every=2, eval_episodes=1)
    s = run_finetune(cfg)
    assert s["episodes"] == 3 and len(s["train_success"]) == 3
    assert [(e["after_episodes"], e["mode"]) for e in s["evals"]] == [(0, "policy"), (2, "eval"), (3, "eval")]
    for e in s["evals"]:
        assert 0.0 <= e["ci_low"] <= e["success_rate"] <= e["ci_high"] <= 1.0
    c = s["counters"]
    # 12 steps = 3 chunks per episode; the last chunk of a time-limit end has no stored next state
    assert c["env_steps"] == 36 and c["decisions"] == 9 and c["replay_transitions"] == 6
    assert c["updates"] == 2 * 6  # utd 2 x every transition (updates start after the 1 warm-up episode)

    store_path = cfg.out / "replay.zarr"
    report = validate_store(store_path)
    assert report.ok, str(report)
    with EpisodeStore.open(store_path) as store:
        assert store.n_episodes == 3 and store.n_steps == 36
        meta = store.meta_table()
        assert set(meta["source"]) == {"finetune"} and set(meta["task"]) == {"lift_cube"}
        assert list(meta["success"]) == [int(v) for v in s["train_success"]]
        assert {"joint_pos", "gripper_pos", "object_pose", "cmd_joint_pos", "cmd_ee_delta", "policy_action", "noise",
                "decision", "reward", "done"} <= set(store.keys)
        ep = store.episode(1)
        assert np.flatnonzero(ep["decision"]).tolist() == [0, 4, 8]
        assert ep["noise"].shape == (12, 28) and not ep["noise"][~ep["decision"]].any()
        assert np.all(np.abs(ep["noise"]) <= 1.5)
        # cmd_joint_pos is the command executed: the bounded policy action, or its step scaled down to the safety
        # layer's limit (max_joint_speed / control_hz) from the measured joints
        task = make("lift_cube")
        lo, hi = task.action_bounds()
        bounded = np.clip(ep["policy_action"], lo, hi)
        same = np.all(np.abs(ep["cmd_joint_pos"] - bounded) < 1e-6, axis=1)
        step = np.abs(ep["cmd_joint_pos"][:, :6] - ep["joint_pos"]).max(axis=1)
        max_step = task.config.max_joint_speed / task.config.control_hz
        assert np.all(same | (np.abs(step - max_step) < 1e-5)), (same, step)
        assert np.all(step <= max_step + 1e-5)
    r = replay_episode(store_path, 1, out=tmp_path / "replay", video=False)
    assert r["steps"] == 12 and r["joint_error_rad"]["max"] < 1e-3

    tags = {json.loads(line)["tag"] for line in (cfg.out / "metrics.jsonl").read_text().splitlines()}
    assert tags == {"episode", "train", "eval"} and (cfg.out / "tb").is_dir()
    tensors, info = read_checkpoint(cfg.out / "finetune_state.safetensors", "finetune", "finetune_state.safetensors")
    state = json.loads(info["finetune"])
    assert state["counters"] == c and state["config"]["algorithm"] == "dsrl_sac"
    assert any(k.endswith("log_alpha") for k in tensors) and any("critic_opt" in k for k in tensors)
    assert json.loads((cfg.out / "summary.json").read_text()) == s


def test_finetune_eval_compares_a_runs_agent_with_its_policy_and_leaves_the_run_untouched(lift_checkpoint, tmp_path):
    from postbc_core.rl.finetune import evaluate_run
    from postbc_core.rl.finetuner import Finetuner

    cfg = tiny_config(lift_checkpoint, tmp_path / "ft", episodes=2, eval_episodes=0, reward_type="dense")
    run_finetune(cfg)
    files = {p: p.read_bytes() for p in cfg.out.rglob("*") if p.is_file()}
    r = run_cli("finetune-eval", "--run", str(cfg.out), "--episodes", "3", "--seed", "5")
    assert r.returncode == 0, r.stderr
    assert "pretrained: " in r.stdout and "agent     : " in r.stdout
    res = json.loads((cfg.out / "agent_eval.json").read_text())
    assert res["episodes_done"] == 2 and res["updates"] == 2 * 4 and res["eval_seed"] == 5
    for key, mode in (("pretrained", "policy"), ("agent", "eval")):
        e = res[key]
        assert e["mode"] == mode and e["episodes"] == 3 and 0 <= e["n_success"] <= 3
        assert e["mean_length"] == 12  # max_steps from the run's settings
    # Repeatable whatever the caller's random state (each episode's noise is seeded), which it leaves alone. The dense
    # return depends on the whole trajectory.
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    again = evaluate_run(cfg.out, episodes=3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key in ("pretrained", "agent"):
        assert again[key]["mean_return"] == res[key]["mean_return"] and again[key]["successes"] == res[key]["successes"]
    # The run is as it was (it could still be going): same files, same bytes, nothing trimmed or rewritten.
    assert {p: p.read_bytes() for p in cfg.out.rglob("*") if p.is_file() and p.name != "agent_eval.json"} == files
    ro = Finetuner(dataclasses.replace(cfg, resume=True), read_only=True)
    try:
        for call, what in ((ro.update, "update"), (ro.save, "save"), (ro.start_episode, "record")):
            with pytest.raises(PostBCError, match=f"cannot {what}.*read_only"):
                call()
    finally:
        ro.close()
    r = run_cli("finetune-eval", "--run", str(tmp_path))
    assert r.returncode == 2 and "no finetune_state.safetensors" in r.stderr


# -- kill and resume -----------------------------------------------------------------------------------------------
def assert_same_final_checkpoint(whole, cut, episodes: int) -> None:
    """Two runs' last checkpoints are the same run: counters, evaluations, history (but wall times), and every
    tensor (networks, optimizers, temperatures / reward statistics, RNG states)."""
    ta, ia = read_checkpoint(whole / "finetune_state.safetensors", "finetune", "")
    tb, ib = read_checkpoint(cut / "finetune_state.safetensors", "finetune", "")
    sa, sb = json.loads(ia["finetune"]), json.loads(ib["finetune"])
    assert sa["counters"] == sb["counters"] and sa["counters"]["episodes_done"] == episodes
    assert sa["evals"] == sb["evals"] and sa["state"] == sb["state"]
    strip = lambda h: [{k: v for k, v in e.items() if k != "wall_s"} for e in h]
    assert strip(sa["history"]) == strip(sb["history"])
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_finetune_killed_mid_episode_resumes_exactly_like_an_uninterrupted_run(lift_checkpoint, tmp_path):
    args = ["finetune", "--checkpoint", str(lift_checkpoint), "--task", "lift_cube", "--episodes", "4",
            "--max-steps", "12", "--eval-every", "2", "--eval-episodes", "1", "--seed", "3", "--device", "cpu",
            "--dsrl.warmup-episodes", "1", "--dsrl.utd", "2", "--dsrl.batch-size", "32", "--dsrl.hidden", "32", "32"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    # the uninterrupted reference runs in-process (same settings, one torch thread like the subprocesses)
    run_finetune(tiny_config(lift_checkpoint, whole, episodes=4, eval_every=2, eval_episodes=1, seed=3))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSTBC_FINETUNE_TEST_STALL": "2:5"}
    proc = subprocess.Popen([str(BIN / "postbc"), *args, "--out", str(cut)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        read_until_stalled(proc)
        proc.send_signal(signal.SIGKILL)  # mid-episode 2, five steps on disk but uncommitted
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with EpisodeStore.open(cut / "replay.zarr") as store:  # read-only: reports the uncommitted tail, keeps it
        assert store.n_episodes == 2 and store.recovery is not None and max(store.recovery.dropped_steps.values()) == 5

    r = run_cli(*args, "--out", str(cut), "--resume")
    assert r.returncode == 0, r.stderr
    episode_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("episode ")]
    assert [ln.split()[1] for ln in episode_lines] == ["2", "3"]

    with EpisodeStore.open(whole / "replay.zarr") as a, EpisodeStore.open(cut / "replay.zarr") as b:
        assert a.n_episodes == b.n_episodes == 4 and a.keys == b.keys
        assert np.array_equal(a.episode_ends, b.episode_ends)
        for i in range(4):
            ea, eb = a.episode(i), b.episode(i)
            for k in a.keys:
                assert np.array_equal(ea[k], eb[k]), (i, k)
        for k in ("success", "source", "task"):
            assert np.array_equal(a.meta_table()[k], b.meta_table()[k])
    assert_same_final_checkpoint(whole, cut, episodes=4)


# -- bad inputs ----------------------------------------------------------------------------------------------------
def test_cli_bad_inputs_exit_2_with_the_value_and_the_fix(tmp_path, capsys):
    from postbc_core.cli.main import main

    assert main(["finetune", "--checkpoint", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors does not exist" in err and "postbc train" in err
    assert main(["finetune", "--checkpoint", str(tmp_path / "x"), "--dsrl.utd", "0"]) == 2
    out = capsys.readouterr()
    assert out.err == "error: dsrl utd=0 must be >= 1 (default 20)\n" and not out.out


def test_checkpoint_task_mismatch_and_unknown_task_are_refused(lift_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="unknown sim task 'lift_cub'; available: lift_cube"):
        run_finetune(tiny_config(lift_checkpoint, tmp_path / "a", task="lift_cub", episodes=1))
    # a policy that reads a key the task does not have
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig

    cfg = PolicyConfig(obs_shapes={"puck_pose": (7,)}, action_dim=7, mlp_hidden=(8,))
    norm = LinearNormalizer().fit({"puck_pose": np.random.default_rng(0).normal(size=(10, 7))})
    norm.fit({"cmd_joint_pos": np.random.default_rng(1).normal(size=(10, 7))})
    other = DiffusionPolicy(cfg, norm)
    other.action_key = "cmd_joint_pos"
    path = save_policy(other, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="cannot provide: missing \\['puck_pose'\\]"):
        run_finetune(tiny_config(path, tmp_path / "b", episodes=1))
    with pytest.raises(CheckpointError, match="does not exist"):
        run_finetune(tiny_config(tmp_path / "missing", tmp_path / "c", episodes=1))


def test_every_algorithm_evaluates_the_same_pretrained_policy(lift_checkpoint, tmp_path):
    """"The pretrained policy" is one thing in every comparison (the DSRL and DPPO runs' and the Best-of-N recipe's
    baselines in one pipeline report, which states it once): w ~ N(0, I) as deployed, not DSRL's warm-up noise
    clipped to its box."""
    from postbc_core.rl.best_of_n import BestOfNConfig
    from postbc_core.rl.dppo import DPPOConfig
    from postbc_core.rl.finetune import evaluate_run

    runs = {}
    for algo in ("dsrl_sac", "best_of_n", "dppo"):
        cfg = tiny_config(lift_checkpoint, tmp_path / algo, episodes=1, eval_episodes=0, reward_type="dense",
                          algorithm=algo, dsrl=DSRLConfig(warmup_episodes=1, utd=1, batch_size=8, hidden=(16, 16),
                                                          noise_magnitude=0.3),
                          bon=BestOfNConfig(rollouts=1, fit_steps=1, batch_size=8, hidden=(16, 16)),
                          dppo=DPPOConfig(envs=1, episodes_per_iteration=1, update_epochs=1, batch_size=4,
                                          critic_hidden=(16,), critic_warmup_iterations=0, actor_lr=1e-2))
        run_finetune(cfg)
        runs[algo] = evaluate_run(cfg.out, episodes=3, seed=11)
    pre = {algo: r["pretrained"] for algo, r in runs.items()}
    assert {p["mode"] for p in pre.values()} == {"policy"}
    assert pre["dsrl_sac"]["mean_return"] == pre["best_of_n"]["mean_return"] == pre["dppo"]["mean_return"]
    assert pre["dsrl_sac"]["successes"] == pre["best_of_n"]["successes"] == pre["dppo"]["successes"]
    # DPPO changed the weights (a large step on purpose): its agent is not the pretrained policy it is compared to
    assert runs["dppo"]["agent"]["mean_return"] != pre["dppo"]["mean_return"]
    # (before, DSRL's baseline was its warm-up mode: the noise clipped to its box, 0.3 here, a different policy)


# -- DPPO ----------------------------------------------------------------------------------------------------------
DPPO_ARGS = ["--task", "lift_cube", "--algorithm", "dppo", "--episodes", "6", "--max-steps", "12", "--eval-every", "4",
             "--eval-episodes", "1", "--seed", "3", "--device", "cpu", "--dppo.envs", "2",
             "--dppo.episodes-per-iteration", "2", "--dppo.update-epochs", "2", "--dppo.batch-size", "4",
             "--dppo.critic-hidden", "16", "--dppo.critic-warmup-iterations", "1", "--dppo.actor-lr", "1e-3"]


def dppo_config(checkpoint, out, **kw) -> FinetuneConfig:
    from postbc_core.rl.dppo import DPPOConfig

    kw = {"episodes": 6, "eval_every": 4, "eval_episodes": 1, "seed": 3, **kw}
    return tiny_config(checkpoint, out, algorithm="dppo", **kw,
                       dppo=DPPOConfig(envs=2, episodes_per_iteration=2, update_epochs=2, batch_size=4,
                                       critic_hidden=(16,), critic_warmup_iterations=1, actor_lr=1e-3))


def test_dppo_killed_mid_iteration_resumes_exactly_like_an_uninterrupted_run(lift_checkpoint, tmp_path):
    """SIGKILL in the middle of DPPO's second iteration (episode 2, step 5), then --resume: the same final
    checkpoint (fine-tuned network, critic, optimizers, reward statistics, RNG states), history and evaluations
    as a run that was never interrupted, and the same exported policy."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_finetune(dppo_config(lift_checkpoint, whole))
    args = ["finetune", "--checkpoint", str(lift_checkpoint), *DPPO_ARGS, "--out", str(cut)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSTBC_FINETUNE_TEST_STALL": "2:5"}
    proc = subprocess.Popen([str(BIN / "postbc"), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        read_until_stalled(proc)
        proc.send_signal(signal.SIGKILL)  # mid-iteration 1: its episodes and update never reach the checkpoint
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, info = read_checkpoint(cut / "finetune_state.safetensors", "finetune", "")
    assert json.loads(info["finetune"])["counters"]["episodes_done"] == 2

    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("episode ")] == ["2", "3", "4", "5"]
    assert_same_final_checkpoint(whole, cut, episodes=6)
    pa, pb = load_policy(whole, device="cpu"), load_policy(cut, device="cpu")
    for k, v in pa.state_dict().items():
        assert torch.equal(v, pb.state_dict()[k]), k


def test_dppo_result_is_an_ordinary_policy_checkpoint_postbc_eval_loads(lift_checkpoint, tmp_path):
    """DPPO changes the policy's weights: <out>/policy.safetensors holds them as a `postbc train` checkpoint does
    (the run directory itself is a --checkpoint), its noise network is the fine-tuned one, the rest the pretrained
    policy's, and `postbc eval` runs it unchanged."""
    out = tmp_path / "ft"
    s = run_finetune(dppo_config(lift_checkpoint, out, episodes=4, eval_episodes=0))
    assert s["policy"] == str(out / "policy.safetensors")
    tuned, pre = load_policy(out, device="cpu"), load_policy(lift_checkpoint, device="cpu")
    tensors, _ = read_checkpoint(out / "finetune_state.safetensors", "finetune", "")
    net = {k.split("noise_net.", 1)[1]: v for k, v in tensors.items() if k.startswith("s.agent.noise_net.")}
    assert net and all(torch.equal(tuned.noise_net.state_dict()[k], v) for k, v in net.items())
    assert any(not torch.equal(v, pre.noise_net.state_dict()[k]) for k, v in tuned.noise_net.state_dict().items())
    for k, v in pre.state_dict().items():
        if not k.startswith("noise_net."):
            assert torch.equal(v, tuned.state_dict()[k]), k
    assert tuned.info["finetune"]["algorithm"] == "dppo" and tuned.info["finetune"]["episodes_done"] == 4
    assert tuned.info["train"] == pre.info["train"]  # the training record (task, data) travels on
    r = run_cli("eval", "--checkpoint", str(out), "--task", "lift_cube", "--episodes", "2", "--num-envs", "2",
                "--videos", "0", "--max-steps", "12", "--device", "cpu", "--out", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["episodes"] == 2
