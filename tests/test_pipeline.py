"""`postbc pipeline` (what `make demo` runs) at a tiny budget in a subprocess: demos -> BC and PostBC -> DSRL
finetuning of both -> report, figure, results JSON and a summary line that agree; and its config validation."""

import json
import os
import subprocess

import pytest
from _paths import BIN
from postbc_core.analysis.pipeline import PipelineConfig
from postbc_core.analysis.pipeline_report import LABELS
from postbc_core.errors import ConfigError

TINY = ["--demos", "2", "--ensemble-size", "2", "--ensemble-steps", "10", "--steps", "20", "--seeds", "0", "1",
        "--finetune-episodes", "3", "--eval-every", "2", "--eval-episodes", "2", "--max-steps", "12",
        "--dsrl.warmup-episodes", "1", "--dsrl.utd", "1", "--dsrl.batch-size", "8", "--dsrl.hidden", "16", "16",
        "--coverage-steps", "20", "--target-success", "0.5", "--paired-episodes", "3", "--recipe-rollouts", "2",
        "--best-of", "2", "3", "--bon.fit-steps", "5", "--bon.batch-size", "8", "--bon.hidden", "16", "16",
        "--device", "cpu"]


def _pct(x):
    return f"{x:.0%}"


def _rate(p):
    return f"{_pct(p['success_rate'])} [{_pct(p['ci95'][0])}, {_pct(p['ci95'][1])}]"


def test_pipeline_tiny_end_to_end(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", POSTBC_LOG="WARNING")
    r = subprocess.run([str(BIN / "postbc"), "pipeline", "--out", str(out), *TINY], check=False, capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in ("report.md", "success_vs_episodes.png", "results.json", "coverage/coverage.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / "success_vs_episodes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    line = r.stdout.strip().splitlines()[-1]
    assert line == res["summary_line"]
    assert res["seeds"] == [0, 1] and res["finetune_episodes"] == 3 and res["eval_episodes"] == 2
    # the summary's numbers are the JSON's numbers
    pre, fin = res["pretrained"], res["final"]
    assert f"pretrained BC {_rate(pre['bc'])} vs PostBC {_rate(pre['postbc'])}" in line
    assert f"BC {_rate(fin['bc'])} vs PostBC {_rate(fin['postbc'])}" in line
    for name, label in (("bc", "BC"), ("postbc", "PostBC")):
        x = res["episodes_to_target"][name]["pooled"]
        assert f"{label} {'not reached within 3' if x is None else x}" in line
        c = res["curves"][name]
        # evaluation points: before finetuning, every 2 episodes, after the last one
        assert c["after_episodes"] == [0, 2, 3]
        assert c["n"] == [4, 4, 4]  # 2 seeds x 2 episodes, pooled
        for k, n, p, lo, hi in zip(c["n_success"], c["n"], c["success_rate"], c["ci_low"], c["ci_high"]):
            assert p == k / n and 0.0 <= lo <= p <= hi <= 1.0
        # pooled rate = mean of the per-seed rates (equal episodes per seed)
        for i, p in enumerate(c["success_rate"]):
            assert p == pytest.approx(sum(v[i] for v in c["per_seed"].values()) / 2)
        first = next((x for x, p in zip(c["after_episodes"], c["success_rate"]) if p >= 0.5), None)
        assert res["episodes_to_target"][name]["pooled"] == first
        assert pre[name]["success_rate"] == c["success_rate"][0] and fin[name]["success_rate"] == c["success_rate"][-1]
        for s in ("0", "1"):
            run = res["runs"][s][name]
            assert run["evals"][0]["mode"] == "policy" and run["updates"] > 0
            assert (out / f"seed_{s}" / f"finetune_{name}" / "summary.json").is_file()
    # the paired final evaluation: each run's agent_eval.json (postbc finetune-eval's file) pooled over the seeds
    pr = res["paired"]
    assert pr["episodes_per_seed"] == 3
    pooled = {}
    for name in ("bc", "postbc"):
        evals = [json.loads((out / f"seed_{s}" / f"finetune_{name}" / "agent_eval.json").read_text())
                 for s in ("0", "1")]
        assert all(e["episodes_done"] == 3 and len(e["agent"]["successes"]) == 3 for e in evals)
        pooled[name] = {st: [x for e in evals for x in e[st]["successes"]] for st in ("pretrained", "agent")}
        for st in ("pretrained", "agent"):
            assert pr[name][st]["n"] == 6 and pr[name][st]["n_success"] == sum(pooled[name][st])
        c = pr[name]["agent_vs_pretrained"]
        assert c["gained"] == sum(a and not b for b, a in zip(pooled[name]["pretrained"], pooled[name]["agent"]))
        assert c["lost"] == sum(b and not a for b, a in zip(pooled[name]["pretrained"], pooled[name]["agent"]))
        assert f"{LABELS[name]} {sum(pooled[name]['pretrained'])} -> {sum(pooled[name]['agent'])}" in line
        # the paired pretrained episodes start with the curve's first point's episodes (same seeds, same noise)
        for s, e in zip(("0", "1"), evals):
            assert sum(e["pretrained"]["successes"][:2]) == res["runs"][s][name]["evals"][0]["n_success"]
    for st in ("pretrained", "agent"):
        c = pr["postbc_vs_bc"][st]
        assert c["gained"] == sum(p and not b for b, p in zip(pooled["bc"][st], pooled["postbc"][st]))
    # the paper's WidowX recipe: rollouts -> offline IQL -> best of N, for BC, PostBC and sigma-BC, on the paired
    # episodes (the same initial states and noise seeds as the DSRL comparison)
    rc = res["recipe"]
    assert rc["rollouts"] == 2 and rc["best_of"] == [2, 3]
    for name in ("bc", "postbc", "sigma_bc"):
        evals = [json.loads((out / f"seed_{s}" / f"recipe_{name}" / "agent_eval.json").read_text())
                 for s in ("0", "1")]
        assert all(e["algorithm"] == "best_of_n" and e["episodes_done"] == 2 and e["updates"] == 5 for e in evals)
        for n in ("2", "3"):
            got = [x for e in evals for x in e["best_of"][n]["eval"]["successes"]]
            assert rc[name][f"best_of_{n}"]["n"] == 6 and rc[name][f"best_of_{n}"]["n_success"] == sum(got)
        if name != "bc":
            assert set(rc[f"{name}_vs_bc"]) == {"pretrained", "best_of_2", "best_of_3"}
    # the pretrained policy of the recipe is the DSRL comparison's (same checkpoint, same episodes)
    assert rc["bc"]["pretrained"]["n_success"] == pr["bc"]["pretrained"]["n_success"]
    assert "paper's WidowX recipe (2 rollouts, offline IQL, best of 3)" in line
    assert (out / "seed_0" / "sigma_bc" / "policy.safetensors").exists()
    # matched seeds: both methods were trained on the same demos, only PostBC has an ensemble
    assert (out / "seed_1" / "postbc" / "ensemble.safetensors").exists()
    assert not (out / "seed_1" / "bc" / "ensemble.safetensors").exists()
    report = (out / "report.md").read_text()
    assert res["summary_line"] in report
    assert "](success_vs_episodes.png)" in report and "](coverage/coverage.png)" in report
    assert "Wilson 95%" in report and "## How the current defaults were chosen" in report and "## Paired final evaluation" in report
    assert "## The paper's WidowX recipe" in report and "| sigma-BC |" in report
    # `postbc demo` is the same job (its own default output directory)
    h = subprocess.run([str(BIN / "postbc"), "demo", "--help"], check=False, capture_output=True, text=True,
                       timeout=120)
    assert h.returncode == 0 and "--finetune-episodes" in h.stdout and "--full" in h.stdout


def test_pipeline_from_images_tiny(tmp_path):
    """`--obs images`: the same pipeline on what a real WidowX gives a policy (two cameras + the arm's state, no object
    state): the demos render both cameras at --image-size, both methods train the conv encoder on them, DSRL and the
    Best-of-N recipe finetune from pixels, and the summary line says what the policies saw."""
    from postbc_core import load_policy
    from postbc_core.analysis.pipeline_config import IMAGE_OBS_KEYS
    from postbc_core.data.store import EpisodeStore

    out = tmp_path / "run"
    i = TINY.index("--seeds")
    args = [*TINY[:i], "--seeds", "0", *TINY[i + 3:]]  # one seed
    assert TINY[i + 1:i + 3] == ["0", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", POSTBC_LOG="WARNING")
    r = subprocess.run([str(BIN / "postbc"), "pipeline", "--out", str(out), "--obs", "images", "--image-size", "24",
                        "32", "--no-coverage", *args], check=False, capture_output=True, text=True, timeout=900,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    line = r.stdout.strip().splitlines()[-1]
    assert line == res["summary_line"]
    assert ("lift_cube from images (front_rgb wrist_rgb joint_pos gripper_pos at 24x32, conv encoder), 2 demos, "
            "seeds 0 x 2 eval episodes") in line
    with EpisodeStore.open(out / "seed_0" / "demos.zarr") as s:
        ep = s.episode(0)
        assert ep["front_rgb"].shape[1:] == (24, 32, 3) and ep["wrist_rgb"].shape[1:] == (24, 32, 3)
    for name in ("bc", "postbc"):
        policy = load_policy(out / "seed_0" / name, device="cpu")
        assert tuple(policy.config.obs_shapes) == IMAGE_OBS_KEYS and policy.config.image_encoder == "conv"
        assert policy.config.obs_shapes["front_rgb"] == (24, 32, 3)
        with EpisodeStore.open(out / "seed_0" / f"finetune_{name}" / "replay.zarr") as s:
            assert s.episode(0)["wrist_rgb"].shape[1:] == (24, 32, 3)
    assert res["recipe"]["postbc"]["best_of_3"]["n"] == 3

def test_training_budget_defaults_reach_the_measured_plateau():
    """Under-training was the main cause of weak pretrained policies (2k steps: 3-7 / 50 with the old inputs). The
    pipeline's, `postbc sim curve`'s and `postbc train`'s defaults must reach the budget where the committed learning
    curve (benchmarks/results/learning_curve_lift_cube.json, `postbc sim curve`) stops improving: the smallest budget
    whose pooled success is within 3 points of the best."""
    from pathlib import Path

    from postbc_core.analysis.learning_curve import CurveConfig
    from postbc_core.analysis.sim_demo import SimDemoConfig
    from postbc_core.policies.settings import PolicySettings
    from postbc_core.training.config import TrainConfig

    curve = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" /
                        "learning_curve_lift_cube.json").read_text())
    rows = sorted((r["steps"], r["rate"]) for r in curve["table"] if r["method"] == "bc")
    best = max(rate for _, rate in rows)
    plateau = min(steps for steps, rate in rows if rate >= best - 0.03)
    assert len(curve["seeds"]) >= 3 and all(r["n"] >= 150 for r in curve["table"])
    assert PipelineConfig().steps >= plateau and SimDemoConfig().steps >= plateau
    tc = TrainConfig(dataset="d.zarr", obs_keys=("s",))
    assert tc.steps >= plateau and tc.policy.mlp_hidden == tuple(curve["policy_hidden"]) and tc.lr == 3e-4
    assert TrainConfig(dataset="d.zarr", obs_keys=("s",), policy=PolicySettings(noise_net="unet")).lr == 1e-4
    # ... and the curve was measured in the configuration those defaults train
    d = PipelineConfig()
    assert curve["action_key"] == d.action_key == SimDemoConfig().action_key == "cmd_ee_delta"
    assert curve["obs_keys"] == list(SimDemoConfig(task=d.task).obs_keys)
    assert tuple(curve["policy_hidden"]) == d.policy_hidden == CurveConfig().policy_hidden


def test_pipeline_full_switches_budget():
    d, f = PipelineConfig(), PipelineConfig(full=True)
    assert len(f.seeds) > len(d.seeds) and f.finetune_episodes > d.finetune_episodes
    assert f.paired_episodes > d.paired_episodes > 0 and f.eval_every < d.eval_every
    assert PipelineConfig(full=True, seeds=(7,)).seeds == (7,)  # explicit values win over the preset


def test_pipeline_dppo_runs_every_method_with_the_same_dppo_settings(tmp_path):
    from postbc_core.rl.dppo import DPPOConfig

    cfg = PipelineConfig(out=tmp_path, algorithm="dppo", dppo=DPPOConfig(actor_lr=3e-4, envs=4))
    runs = [cfg.finetune(1, name, tmp_path / name) for name in ("bc", "postbc")]
    assert all(r.algorithm == "dppo" and r.dppo == DPPOConfig(actor_lr=3e-4, envs=4) for r in runs)
    assert runs[0].dppo is not runs[1].dppo  # each run its own copy
    assert {r.episodes for r in runs} == {cfg.finetune_episodes} and {r.seed for r in runs} == {1}


@pytest.mark.parametrize("kwargs, message", [
    ({"algorithm": "ppo"}, "algorithm='ppo': choose dsrl_sac, dsrl_na or dppo"),
    ({"seeds": ()}, "seeds is empty"),
    ({"seeds": (1, 1)}, "repeats a seed"),
    ({"finetune_episodes": 0}, "finetune_episodes=0"),
    ({"eval_episodes": 0}, "eval_episodes=0"),
    ({"paired_episodes": -1}, "paired_episodes=-1"),
    ({"target_success": 1.5}, "target_success=1.5"),
    ({"alpha": 0.0}, "alpha=0.0"),
    ({"task": "fly"}, "unknown sim task 'fly'"),
    ({"demos": 0}, "demos=0"),
    ({"ensemble_size": 1}, "ensemble_size=1"),
    ({"quality": 2.0}, "quality=2.0"),
    ({"obs": "images", "obs_keys": ("joint_pos",)}, "give at least one camera key"),
    ({"obs": "pixels"}, "obs='pixels': choose state or images"),
    ({"obs": "images", "image_size": (4, 4)}, "each at least 8 px"),
    ({"obs": "images", "image_size": (600, 800)}, "600"),
])
def test_pipeline_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        PipelineConfig(**kwargs)


def test_pipeline_cli_rejects_bad_values_with_exit_2(tmp_path):
    r = subprocess.run([str(BIN / "postbc"), "pipeline", "--out", str(tmp_path), "--target-success", "0"],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "target_success=0.0" in r.stderr


def test_chunk_jumps_counts_every_chunk_boundary_and_the_demos_obey_the_speed_limit(tmp_path):
    """The chunk-boundary diagnostic (pipeline_notes.md): one jump per boundary, repeatable, and the reference (the
    demonstrations' largest per-step target) within the driver's 0.15 rad per step."""
    from _policies import weak_lift_policy
    from postbc_core import load_policy
    from postbc_core.analysis.chunk_jumps import chunk_jumps, demo_max_step, main

    policy = load_policy(weak_lift_policy(tmp_path, steps=30), device="cpu")
    r = chunk_jumps(policy, "lift_cube", episodes=2, seed=7)
    assert r["n_action_steps"] == 4 and r["successes"] == 0  # 30 training steps: no lift
    assert r["boundaries"] == 2 * (80 // 4 - 1)  # 80-step episodes, 20 chunks each
    for j in r["joints"].values():
        assert 0.0 <= j["frac_above_1.0"] <= j["frac_above_0.5"] <= 1.0 and j["median"] >= 0.0
    assert chunk_jumps(policy, "lift_cube", episodes=2, seed=7) == r  # noise seeded per episode
    steps = demo_max_step(tmp_path / "demos.zarr")
    assert max(steps.values()) <= 0.15 + 1e-6 and steps["wrist_rotate"] > 0.0
    out = tmp_path / "jumps.json"
    assert main([str(tmp_path / "bc"), "--episodes", "1", "--demos", str(tmp_path / "demos.zarr"),
                 "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {str(tmp_path / "bc"), "demos_max_step"}
