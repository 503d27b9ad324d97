"""`postbc pipeline` (what `make demo` runs) at a tiny budget in a subprocess: demos -> BC and PostBC -> DSRL and DPPO
finetuning of both -> report, figure, results JSON and a summary line that agree; the report rendered from results
with several algorithms and from results.json written before them; and its config validation."""

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
# DPPO at the same tiny budget: one-episode iterations on two lockstep envs, a critic warm-up of one iteration
TINY_DPPO = ["--dppo.envs", "2", "--dppo.episodes-per-iteration", "1", "--dppo.update-epochs", "1",
             "--dppo.batch-size", "4", "--dppo.critic-hidden", "16", "--dppo.critic-warmup-iterations", "1"]


def _pct(x):
    return f"{x:.0%}"


def _rate(p):
    return f"{_pct(p['success_rate'])} [{_pct(p['ci95'][0])}, {_pct(p['ci95'][1])}]"


def test_pipeline_tiny_end_to_end(tmp_path):
    """--algorithms dsrl_sac dppo: both algorithms finetune both methods with the same budget and seeds, each gets its
    own pooled statistics, table and figure panel, and the Best-of-N recipe sits beside them on the same episodes."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", POSTBC_LOG="WARNING")
    r = subprocess.run([str(BIN / "postbc"), "pipeline", "--out", str(out), *TINY, "--algorithms", "dsrl_sac", "dppo",
                        *TINY_DPPO], check=False, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in ("report.md", "success_vs_episodes.png", "results.json", "coverage/coverage.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / "success_vs_episodes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    line = r.stdout.strip().splitlines()[-1]
    assert line == res["summary_line"]
    assert res["seeds"] == [0, 1] and res["finetune_episodes"] == 3 and res["eval_episodes"] == 2
    assert res["algorithms"] == ["dsrl_sac", "dppo"] and set(res["online"]) == {"dsrl_sac", "dppo"}
    report = (out / "report.md").read_text()
    pooled = {}
    for algo in ("dsrl_sac", "dppo"):
        o = res["online"][algo]
        # the summary's numbers are the JSON's numbers, one part per algorithm
        pre, fin = o["pretrained"], o["final"]
        assert f"pretrained BC {_rate(pre['bc'])} vs PostBC {_rate(pre['postbc'])}" in line
        part = f"after 3 online episodes ({algo}) BC {_rate(fin['bc'])} vs PostBC {_rate(fin['postbc'])}"
        assert part in line
        for name, label in (("bc", "BC"), ("postbc", "PostBC")):
            x = o["episodes_to_target"][name]["pooled"]
            assert f"{label} {'not reached within 3' if x is None else x}" in line
            c = o["curves"][name]
            # evaluation points: before finetuning, every 2 episodes, after the last one
            assert c["after_episodes"] == [0, 2, 3]
            assert c["n"] == [4, 4, 4]  # 2 seeds x 2 episodes, pooled
            for k, n, p, lo, hi in zip(c["n_success"], c["n"], c["success_rate"], c["ci_low"], c["ci_high"]):
                assert p == k / n and 0.0 <= lo <= p <= hi <= 1.0
            # pooled rate = mean of the per-seed rates (equal episodes per seed)
            for i, p in enumerate(c["success_rate"]):
                assert p == pytest.approx(sum(v[i] for v in c["per_seed"].values()) / 2)
            first = next((x for x, p in zip(c["after_episodes"], c["success_rate"]) if p >= 0.5), None)
            assert o["episodes_to_target"][name]["pooled"] == first
            assert pre[name]["success_rate"] == c["success_rate"][0]
            assert fin[name]["success_rate"] == c["success_rate"][-1]
            for s in ("0", "1"):
                run = res["runs"][s]["online"][algo][name]
                assert run["evals"][0]["mode"] == "policy" and run["updates"] > 0
                summary = json.loads((out / f"seed_{s}" / f"finetune_{algo}_{name}" / "summary.json").read_text())
                assert summary["algorithm"] == algo and summary["checkpoint"] == str(out / f"seed_{s}" / name)
                assert summary["counters"]["episodes_done"] == 3  # the same online budget for every algorithm
        # the paired final evaluation: each run's agent_eval.json (postbc finetune-eval's file) pooled over the seeds
        pr = o["paired"]
        assert pr["episodes_per_seed"] == 3
        pooled[algo] = {}
        for name in ("bc", "postbc"):
            evals = [json.loads((out / f"seed_{s}" / f"finetune_{algo}_{name}" / "agent_eval.json").read_text())
                     for s in ("0", "1")]
            assert all(e["episodes_done"] == 3 and len(e["agent"]["successes"]) == 3 for e in evals)
            pl = pooled[algo][name] = {st: [x for e in evals for x in e[st]["successes"]]
                                       for st in ("pretrained", "agent")}
            for st in ("pretrained", "agent"):
                assert pr[name][st]["n"] == 6 and pr[name][st]["n_success"] == sum(pl[st])
            c = pr[name]["agent_vs_pretrained"]
            assert c["gained"] == sum(a and not b for b, a in zip(pl["pretrained"], pl["agent"]))
            assert c["lost"] == sum(b and not a for b, a in zip(pl["pretrained"], pl["agent"]))
            # the paired pretrained episodes start with the curve's first point's episodes (same seeds, same noise)
            for s, e in zip(("0", "1"), evals):
                assert sum(e["pretrained"]["successes"][:2]) == res["runs"][s]["online"][algo][name]["evals"][0][
                    "n_success"]
        paired_text = (f"({algo}) BC {_rate(fin['bc'])} vs PostBC {_rate(fin['postbc'])}; episodes to 50% success: "
                       f"BC {_reach(o, 'bc')}, PostBC {_reach(o, 'postbc')}; paired final evaluation, successes of 6 "
                       f"episodes: BC {pr['bc']['pretrained']['n_success']} -> {pr['bc']['agent']['n_success']}")
        assert paired_text in line
        for st in ("pretrained", "agent"):
            c = pr["postbc_vs_bc"][st]
            assert c["gained"] == sum(p and not b for b, p in zip(pooled[algo]["bc"][st], pooled[algo]["postbc"][st]))
        # its own section: the table of pretrained -> finetuned with the paired test and episodes to target
        label = {"dsrl_sac": "DSRL-SAC", "dppo": "DPPO"}[algo]
        start = report.index(f"## {label}: 3 online episodes per method and seed")
        section = report[start:report.index("\n## ", start)]
        assert f"### {label}: success vs online episodes" in section
        for name in ("bc", "postbc"):
            c = pr[name]["agent_vs_pretrained"]
            row = (f"| {LABELS[name]} | {_rate(pre[name])} | {_rate(fin[name])} | {_rate(pr[name]['pretrained'])} -> "
                   f"{_rate(pr[name]['agent'])} | {c['gained']} / {c['lost']} | ")
            assert section.count(row) == 1, row
    # the same checkpoints on the same evaluation episodes: every algorithm starts from the same pretrained numbers
    assert res["online"]["dsrl_sac"]["pretrained"] == res["online"]["dppo"]["pretrained"]
    assert pooled["dsrl_sac"]["bc"]["pretrained"] == pooled["dppo"]["bc"]["pretrained"]
    # the paper's WidowX recipe: rollouts -> offline IQL -> best of N, for BC, PostBC and sigma-BC, on the paired
    # episodes (the same initial states and noise seeds as the online comparisons)
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
    # the pretrained policy of the recipe is the online comparisons' (same checkpoint, same episodes)
    assert rc["bc"]["pretrained"]["n_success"] == res["online"]["dsrl_sac"]["paired"]["bc"]["pretrained"]["n_success"]
    assert "paper's WidowX recipe (2 rollouts, offline IQL, best of 3)" in line
    assert (out / "seed_0" / "sigma_bc" / "policy.safetensors").exists()
    # matched seeds: both methods were trained on the same demos, only PostBC has an ensemble
    assert (out / "seed_1" / "postbc" / "ensemble.safetensors").exists()
    assert not (out / "seed_1" / "bc" / "ensemble.safetensors").exists()
    assert res["summary_line"] in report
    assert "](success_vs_episodes.png)" in report and "](coverage/coverage.png)" in report
    assert "Wilson 95%" in report and "## How the current defaults were chosen" in report
    assert "## Finetuning methods side by side" in report
    for row in ("| DSRL-SAC, 3 online episodes | ", "| DPPO, 3 online episodes | ", "| Best-of-2 (2 rollouts",
                "| Best-of-3 (2 rollouts"):
        assert report.count(row) == 1, row
    assert "## The paper's WidowX recipe" in report and "| sigma-BC |" in report
    # `postbc demo` is the same job (its own default output directory)
    h = subprocess.run([str(BIN / "postbc"), "demo", "--help"], check=False, capture_output=True, text=True,
                       timeout=120)
    assert h.returncode == 0 and "--finetune-episodes" in h.stdout and "--full" in h.stdout
    assert "--algorithms" in h.stdout and "--algorithm" in h.stdout


def _reach(o, name):
    x = o["episodes_to_target"][name]["pooled"]
    return "not reached within 3" if x is None else str(x)


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
        with EpisodeStore.open(out / "seed_0" / f"finetune_dsrl_sac_{name}" / "replay.zarr") as s:
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

    cfg = PipelineConfig(out=tmp_path, algorithms=("dsrl_sac", "dppo"), dppo=DPPOConfig(actor_lr=3e-4, envs=4))
    runs = [cfg.finetune(1, "dppo", name, tmp_path / name) for name in ("bc", "postbc")]
    assert all(r.algorithm == "dppo" and r.dppo == DPPOConfig(actor_lr=3e-4, envs=4) for r in runs)
    assert runs[0].dppo is not runs[1].dppo  # each run its own copy
    assert {r.episodes for r in runs} == {cfg.finetune_episodes} and {r.seed for r in runs} == {1}
    # every algorithm the same budget and seed, each run in its own directory
    dsrl = cfg.finetune(1, "dsrl_sac", "bc", tmp_path / "bc")
    assert dsrl.algorithm == "dsrl_sac" and (dsrl.episodes, dsrl.seed) == (runs[0].episodes, runs[0].seed)
    assert dsrl.out != runs[0].out and dsrl.out.parent == runs[0].out.parent
    with pytest.raises(ConfigError, match="'dsrl_na' is not among this pipeline's --algorithms"):
        cfg.finetune(1, "dsrl_na", "bc", tmp_path / "bc")


def test_pipeline_cli_takes_several_algorithms_and_the_old_single_flag():
    import tyro

    assert PipelineConfig().algorithms == ("dsrl_sac",)  # `make demo` stays DSRL only
    assert tyro.cli(PipelineConfig, args=["--algorithms", "dsrl_sac", "dppo"]).algorithms == ("dsrl_sac", "dppo")
    assert tyro.cli(PipelineConfig, args=["--algorithm", "dppo"]).algorithms == ("dppo",)
    assert PipelineConfig(algorithms="dppo").algorithms == ("dppo",)  # from Python: a name is one algorithm


@pytest.mark.parametrize("kwargs, message", [
    ({"algorithms": ("ppo",)}, "algorithms: 'ppo' is not an online finetuning algorithm; choose from dsrl_sac, "
                                "dsrl_na, dppo"),
    ({"algorithms": ("dsrl_sac", "best_of_n")}, "'best_of_n' is not an online finetuning algorithm"),
    ({"algorithms": ()}, "algorithms is empty"),
    ({"algorithms": ("dppo", "dppo")}, "algorithms=dppo dppo repeats an algorithm"),
    ({"algorithms": ("dsrl_sac", "dppo"), "finetune_episodes": 32}, "finetune_episodes=32 with DPPO: its first 2 "
                                                                    "iterations x 16 episodes train only the critic"),
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


def _fake_runs(algorithms: dict[str, dict[str, tuple]]) -> dict:
    """Runs as pipeline.run_pipeline collects them, for two seeds, without simulating anything: algorithms maps
    algorithm -> method -> (successes of 10 episodes at points 0 / 2 / 4, paired pretrained, paired agent
    successes of 5 episodes), the same for both seeds."""
    runs = {}
    for s in (0, 1):
        runs[s] = {"demo_success_rate": 1.0, "bc": {"checkpoint": "bc"}, "postbc": {"checkpoint": "postbc"},
                   "online": {}}
        for algo, methods in algorithms.items():
            for name, (curve, pre, agent) in methods.items():
                evals = [{"after_episodes": x, "mode": "policy" if x == 0 else "eval", "n_success": k,
                          "episodes": 10, "success_rate": k / 10} for x, k in zip((0, 2, 4), curve)]
                runs[s]["online"].setdefault(algo, {})[name] = {
                    "evals": evals, "paired": {"pretrained": [i < pre for i in range(5)],
                                               "agent": [i < agent for i in range(5)]}}
    return runs


def _results(tmp_path, algorithms: dict) -> dict:
    """aggregate -> what run_pipeline adds -> a round trip through results.json."""
    from postbc_core.analysis.pipeline_report import aggregate, summary_line
    from postbc_core.rl.dppo import DPPOConfig

    cfg = PipelineConfig(out=tmp_path, seeds=(0, 1), algorithms=tuple(algorithms), finetune_episodes=4, eval_every=2,
                         eval_episodes=10, paired_episodes=5, recipe_rollouts=0, coverage=False,
                         target_success=0.8, dppo=DPPOConfig(episodes_per_iteration=2, critic_warmup_iterations=1))
    r = aggregate(cfg, _fake_runs(algorithms))
    r.update(coverage=None, timings_s={"total": 1.0}, machine={"cpus": 2, "workers": 1, "load_avg_1min": [0, 0]})
    r["summary_line"] = summary_line(r)
    (tmp_path / "results.json").write_text(json.dumps(r))
    return json.loads((tmp_path / "results.json").read_text())


def _png_width(path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_report_renders_one_table_and_one_curve_per_algorithm(tmp_path):
    """A results.json with DSRL-SAC and DPPO (different numbers on purpose) -> the summary line, report.md's side by
    side table and each algorithm's own table and curve show that algorithm's numbers; the figure has a panel each."""
    from postbc_core.analysis.pipeline_report import plot_success, render_report, summary_line

    both = {"dsrl_sac": {"bc": ((6, 7, 8), 3, 4), "postbc": ((4, 6, 9), 2, 5)},
            "dppo": {"bc": ((6, 6, 7), 3, 3), "postbc": ((4, 5, 5), 2, 2)}}
    r = _results(tmp_path, both)
    assert r["algorithms"] == ["dsrl_sac", "dppo"] and set(r["online"]) == {"dsrl_sac", "dppo"}
    assert r["online"]["dppo"]["final"]["postbc"]["n_success"] == 10  # 5 of 10 episodes x 2 seeds
    line = summary_line(r)
    assert line == r["summary_line"] and line.count("pretrained BC 60% [") == 1
    assert line.index("(dsrl_sac) BC 80% [") < line.index("(dppo) BC 70% [")
    assert ("episodes to 80% success: BC 4, PostBC 4; paired final evaluation, successes of 10 episodes: BC 6 -> 8"
            in line)
    assert "episodes to 80% success: BC not reached within 4, PostBC not reached within 4; paired final evaluation, " \
           "successes of 10 episodes: BC 6 -> 6 (McNemar p = 1.000), PostBC 4 -> 4" in line
    report = render_report(r)
    assert report.startswith("# PostBC vs BC: pretraining and DSRL-SAC / DPPO finetuning on lift_cube")
    dsrl, dppo = report.index("## DSRL-SAC: 4 online episodes"), report.index("## DPPO: 4 online episodes")
    recipe = report.index("## The paper's WidowX recipe")
    assert dsrl < dppo < recipe
    # each algorithm's table: pretrained -> finetuned (Wilson), paired test, per seed, episodes to target per seed
    assert "| PostBC | 40% [" in report[dsrl:dppo] and "| 90% [" in report[dsrl:dppo]
    assert "| 6 / 0 | 0.031 | 2->5 2->5 | 4 | 4 4 |" in report[dsrl:dppo]  # PostBC under DSRL: +3 per seed
    assert "| 0 / 0 | 1.000 | 2->2 2->2 | not reached within 4 | - - |" in report[dppo:recipe]
    assert "Settings: 5 warm-up episodes" in report[dsrl:dppo] and "lockstep environments" in report[dppo:recipe]
    # each algorithm's curve: one row per evaluation point, its own rates
    assert "| 4 | 80% [" in report[dsrl:dppo] and "| 4 | 70% [" in report[dppo:recipe]
    assert "| 4 | 70% [" not in report[dsrl:dppo]
    side = report[report.index("## Finetuning methods side by side"):dsrl]
    assert "| DSRL-SAC, 4 online episodes | 6 -> 8 of 10 (60% -> 80%; +2 / -0, p = 0.500) | 4 -> 10 of 10" in side
    assert "| DPPO, 4 online episodes | 6 -> 6 of 10 (60% -> 60%; +0 / -0, p = 1.000) | 4 -> 4 of 10" in side
    plot_success(tmp_path / "two.png", r)
    one = _results(tmp_path, {"dppo": both["dppo"]})
    plot_success(tmp_path / "one.png", one)
    assert _png_width(tmp_path / "two.png") > _png_width(tmp_path / "one.png")  # a panel per algorithm
    # one algorithm: the summary line has one part, the report one section
    assert one["summary_line"].count("online episodes (") == 1 and "(dppo) BC 70% [" in one["summary_line"]
    assert render_report(one).count("online episodes per method and seed") == 1


def test_report_renders_results_written_before_several_algorithms():
    """The committed --full run's results.json (one "algorithm", its tables at the top level) renders with the same
    summary line it was written with, and its DSRL table in the new layout."""
    from pathlib import Path

    from postbc_core.analysis.pipeline_report import by_algorithm, render_report, summary_line

    old = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "pipeline_lift_cube_full" /
                      "results.json").read_text())
    assert "online" not in old and old["algorithm"] == "dsrl_sac"
    assert summary_line(old) == old["summary_line"]
    new = by_algorithm(old)
    assert new["algorithms"] == ["dsrl_sac"] and new["online"]["dsrl_sac"]["paired"] == old["paired"]
    report = render_report(old)
    assert "## DSRL-SAC: 150 online episodes per method and seed" in report
    assert "| DSRL-SAC, 150 online episodes | 373 -> 405 of 500" in report
    assert "| Best-of-16 (100 rollouts, offline IQL) | 373 -> 418 of 500" in report


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
