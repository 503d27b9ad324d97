"""Why PostBC pretrains below BC at 10 demos (issue 23): PostBC variants ("arms") against BC on the same demos, the
same seeds and the same evaluation episodes, each with the 1-D coverage experiment run at its settings.

The demos and the BC / PostBC checkpoints come from an earlier `postbc pipeline` run (`--pretrained`, e.g. the
`make demo` run: lift_cube, 10 scripted demos per seed, 10k diffusion steps, K = 10, alpha 0.5). Every other arm is
that PostBC run's train_config.json retrained with one setting changed (TrainConfig.from_dict), or its checkpoint
sampled differently. Per arm and seed the policy runs --episodes evaluation episodes on seeds EVAL_BASE + i (the
same initial states for every arm; torch seeded per seed before each evaluation); pooled over seeds, each arm is
compared with BC by McNemar's exact test on the paired (seed, episode) outcomes.

    python benchmarks/bench_postbc_arms.py --pretrained runs/demo --out runs/postbc_arms \
        [--seeds 0 1 2] [--episodes 100] [--arms bc postbc clip1 ...] [--arm NAME KEY=VALUE ...] [--workers 2]

Arms (--arms picks from these; --arm adds one: KEY=VALUE are TrainConfig fields, or clip=X to sample an existing
checkpoint with the DDIM x0 clip at +-X, or source=ARM to reuse that arm's checkpoint):
    bc            the pipeline's BC checkpoint
    postbc        the pipeline's PostBC checkpoint as trained (widened DDIM clip)
    clip1         the same PostBC checkpoint sampled with the DDIM x0 clip at +-1 (the data range)
    state_action  members resample individual windows (--bootstrap state_action)
    mix50         half of the targets perturbed, half clean (--posterior-mix 0.5)
    alpha025      alpha 0.25
    k32           K = 32 members


Resumable: a trained arm (policy.safetensors), an evaluation (eval_<arm>.json) or a coverage run (coverage.json)
already in --out is reused. Writes OUT/results.json, OUT/report.md and benchmarks/results/<json-name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from common import pool_map, write_result

os.environ.setdefault("MUJOCO_GL", "egl")

EVAL_BASE = 2_000_000  # evaluation episode seeds: disjoint from demo, training and finetuning-evaluation seeds
ARMS = {
    "bc": {"source": "bc"},
    "postbc": {"source": "postbc"},
    "clip1": {"source": "postbc", "clip": 1.0},
    "state_action": {"bootstrap": "state_action"},
    "mix50": {"posterior_mix": 0.5},
    "alpha025": {"alpha": 0.25},
    "k32": {"ensemble_size": 32},
}
COVERAGE_FIELDS = ("alpha", "ensemble_size", "bootstrap", "posterior_mix", "sample_clip")


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def arm_train_overrides(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in ("source", "clip")}


def checkpoint_of(out: Path, pretrained: Path, arm: str, spec: dict, seed: int) -> Path:
    """Where the arm's policy lives: its own run (trained, or a clip variant written by materialize_clip), or the
    pipeline's / another arm's run it reuses."""
    src = spec.get("source")
    if src is None or "clip" in spec:
        return out / f"seed_{seed}" / arm
    if src in ("bc", "postbc"):
        return pretrained / f"seed_{seed}" / src
    return out / f"seed_{seed}" / src


def materialize_clip(source: Path, run: Path, clip: float) -> None:
    """A clip arm as an ordinary checkpoint: the source policy with its DDIM x0 clip at +-clip, so `postbc eval`,
    finetuning and the policy node sample it exactly as evaluated here."""
    import shutil

    from postbc_core import load_policy
    from postbc_core.policies.checkpoint import save_policy

    if (run / "policy.safetensors").exists():
        return
    policy = load_policy(source, device="cpu")
    info = {k: v for k, v in policy.info.items() if k not in ("policy_config", "action_key", "normalizer_keys")}
    policy.set_sample_range(clip)
    run.mkdir(parents=True, exist_ok=True)
    info["train"] = {**info.get("train", {}), "sampled_with_clip": clip, "source": str(source)}
    save_policy(policy, run / "policy.safetensors", info)
    if (source / "posterior.json").exists():
        shutil.copy(source / "posterior.json", run / "posterior.json")


def train_job(args) -> tuple:
    """Retrains the pipeline's PostBC run of `seed` with the arm's overrides into OUT/seed_<s>/<arm>."""
    import torch

    torch.set_num_threads(1)
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import train

    pretrained, out, arm, overrides, seed = args
    run = out / f"seed_{seed}" / arm
    if (run / "policy.safetensors").exists():
        return arm, seed, 0.0
    base = json.loads((pretrained / f"seed_{seed}" / "postbc" / "train_config.json").read_text())
    t0 = time.time()
    train(TrainConfig.from_dict(base, **overrides, dataset=pretrained / f"seed_{seed}" / "demos.zarr", out=run,
                                overwrite=True, progress=False))
    return arm, seed, round(time.time() - t0, 1)


def coverage_job(args) -> tuple:
    """The bundled 1-D coverage experiment at the arm's PostBC settings into OUT/coverage/<arm>."""
    import torch

    torch.set_num_threads(1)
    from postbc_core.analysis.coverage import SAMPLE_STORE, CoverageConfig, run_coverage

    out, arm, settings, seed = args
    path = out / "coverage" / arm
    if (path / "coverage.json").exists():
        return arm, json.loads((path / "coverage.json").read_text()), 0.0
    t0 = time.time()
    m = run_coverage(CoverageConfig(out=path, dataset=SAMPLE_STORE if SAMPLE_STORE.exists() else None, seed=seed,
                                    device="cpu", progress=False, **settings))
    return arm, m, round(time.time() - t0, 1)


def eval_job(args) -> tuple:
    """`episodes` evaluation episodes of the arm's checkpoint -> OUT/seed_<s>/eval_<arm>.json."""
    import torch

    torch.set_num_threads(1)
    from postbc_core import load_policy
    from postbc_core.sim.evaluation import evaluate_policy

    run, path, task, seed, episodes = args
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    policy = load_policy(run, device="cpu")
    torch.manual_seed(seed)
    r = evaluate_policy(policy, task, episodes=episodes, num_envs=4, seed=EVAL_BASE)
    keep = {k: r[k] for k in ("success_rate", "n_success", "successes", "seeds", "mean_length", "wall_time_s")}
    keep.update(checkpoint=str(run), clip_sample_range=policy.config.clip_sample_range)
    post = Path(run) / "posterior.json"
    if post.exists():
        keep["posterior"] = json.loads(post.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keep, indent=2))
    return keep


def finetune_job(args) -> tuple:
    """DSRL (the pipeline's online comparison) and the paper's Best-of-N recipe from one arm's checkpoint, with the
    pipeline's own code and budgets -> OUT/seed_<s>/finetune_<arm>.json."""
    import torch

    torch.set_num_threads(1)
    from postbc_core.analysis.pipeline import finetune_method, recipe_method

    cfg, seed, arm, checkpoint, path = args
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.time()
    _, _, _, ft, _, _ = finetune_method(cfg, seed, cfg.algorithms[0], arm, checkpoint)
    _, _, rec, _, _ = recipe_method(cfg, seed, arm, checkpoint) if cfg.recipe_rollouts else (0, 0, None, 0, 0)
    text = json.dumps({"dsrl": ft, "recipe": rec, "wall_s": round(time.time() - t0, 1)}, indent=2)
    path.write_text(text)
    return json.loads(text)  # Best-of-N's N keys as strings, as when read back


def run_finetuning(a, src: dict, specs: dict, timings: dict) -> dict:
    """Every --finetune-arms arm and seed through finetune_job; pooled per arm: DSRL pretrained -> finetuned on the
    paired episodes (McNemar) and Best-of-N per N against the pretrained policy on the same episodes."""
    from postbc_core.analysis.pipeline_config import PipelineConfig
    from postbc_core.stats import paired_comparison, pooled_rate

    s_cfg = src["config"]
    cfg = PipelineConfig(out=a.out, task=s_cfg["task"], seeds=tuple(a.seeds), demos=s_cfg["demos"],
                         alpha=s_cfg["alpha"], steps=s_cfg["steps"], action_key=s_cfg["action_key"],
                         finetune_episodes=a.finetune_episodes, eval_every=a.finetune_episodes,
                         eval_episodes=20, paired_episodes=a.paired_episodes, recipe_rollouts=a.recipe_rollouts,
                         coverage=False, device="cpu")
    jobs = [(cfg, seed, arm, str(checkpoint_of(a.out, a.pretrained, arm, s, seed)),
             str(a.out / f"seed_{seed}" / f"finetune_{arm}.json")) for arm, s in specs.items() for seed in a.seeds]
    t0 = time.time()
    per = {}
    for job, r in zip(jobs, pool_map(finetune_job, jobs, a.workers)):
        per.setdefault(job[2], {})[job[1]] = r
    timings["finetuning"] = round(time.time() - t0, 1)
    out = {"settings": {"algorithm": cfg.algorithms[0], "finetune_episodes": a.finetune_episodes,
                        "paired_episodes": a.paired_episodes, "recipe_rollouts": a.recipe_rollouts,
                        "best_of": list(cfg.best_of)}, "arms": {}}
    for arm, by_seed in per.items():
        pre = [x for seed in a.seeds for x in by_seed[seed]["dsrl"]["paired"]["pretrained"]]
        agent = [x for seed in a.seeds for x in by_seed[seed]["dsrl"]["paired"]["agent"]]
        row = {"dsrl": {"pretrained": pooled_rate(pre), "finetuned": pooled_rate(agent),
                        "vs_pretrained": paired_comparison(pre, agent)}}
        if a.recipe_rollouts:
            rpre = [x for seed in a.seeds for x in by_seed[seed]["recipe"]["pretrained"]]
            row["best_of"] = {"pretrained": pooled_rate(rpre)}
            for n in cfg.best_of:
                got = [x for seed in a.seeds for x in by_seed[seed]["recipe"]["best_of"][str(n)]]
                row["best_of"][str(n)] = {**pooled_rate(got), "vs_pretrained": paired_comparison(rpre, got)}
        out["arms"][arm] = row
    return out


def summarize(arms: dict, evals: dict, coverage: dict, seeds: list[int]) -> dict:
    """Per arm: pooled success with a Wilson interval, per-seed rates, McNemar against BC on the paired episodes."""
    from postbc_core.stats import paired_comparison, pooled_rate

    rows = {}
    bc = [s for seed in seeds for s in evals["bc"][seed]["successes"]] if "bc" in evals else None
    for arm in arms:
        succ = [s for seed in seeds for s in evals[arm][seed]["successes"]]
        row = {"pooled": pooled_rate(succ), "per_seed": {seed: evals[arm][seed]["success_rate"] for seed in seeds}}
        if bc is not None and arm != "bc":
            row["vs_bc"] = paired_comparison(bc, succ)
        first = evals[arm][seeds[0]]
        row["clip_sample_range"] = [evals[arm][seed]["clip_sample_range"] for seed in seeds]
        if "posterior" in first:
            row["posterior_mean_std"] = [evals[arm][seed]["posterior"]["mean_std"] for seed in seeds]
        if arm in coverage:
            row["coverage"] = {r: coverage[arm][r]["spread_ratio"] for r in ("dense", "one_demo", "two_demos")
                               if r in coverage[arm]}
        rows[arm] = row
    return rows


def render(res: dict) -> str:
    from postbc_core.stats import format_p

    lines = [f"Command: `{res['command']}`", "",
             f"{res['task']}, {res['demos']} demos, seeds {' '.join(map(str, res['seeds']))}, {res['episodes']} "
             "evaluation episodes per seed (the same initial states for every arm); McNemar exact against BC on the "
             "pooled paired episodes. Coverage: the 1-D coverage experiment at the arm's settings, median PostBC/BC "
             "sample-spread ratio where demos are dense / one demo / two demos (> 1 where sparse = the coverage "
             "property).", "",
             "| arm | settings | success (pooled) | 95 % CI | per seed | gained / lost vs BC | p vs BC | "
             "posterior std | DDIM clip | coverage dense / one / two |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, row in res["arms"].items():
        p = row["pooled"]
        vs = row.get("vs_bc")
        cov = row.get("coverage")
        lines.append(
            f"| {arm} | {res['arm_specs'][arm]} | {p['n_success']}/{p['n']} ({p['success_rate']:.0%}) | "
            f"[{p['ci95'][0]:.0%}, {p['ci95'][1]:.0%}] | "
            + " ".join(f"{v:.0%}" for v in row["per_seed"].values()) + " | "
            + (f"+{vs['gained']} / -{vs['lost']} | {format_p(vs['mcnemar_exact_p'])}" if vs else "- | -") + " | "
            + (" ".join(f"{v:.2f}" for v in row["posterior_mean_std"]) if "posterior_mean_std" in row else "-")
            + " | " + " ".join(f"{v:.2f}" for v in row["clip_sample_range"]) + " | "
            + (" / ".join(f"{cov[r]:.2f}" for r in ("dense", "one_demo", "two_demos") if r in cov) if cov else "-")
            + " |")
    ft = res.get("finetuned") or {}
    if ft:
        st = ft["settings"]
        lines += ["", f"Finetuning from each arm's checkpoints (the pipeline's code): {st['algorithm']} for "
                  f"{st['finetune_episodes']} online episodes, paired final test {st['paired_episodes']} episodes "
                  f"per seed; Best-of-N recipe from {st['recipe_rollouts']} rollouts, N in "
                  f"{' '.join(map(str, st['best_of']))}, on the same paired episodes.", "",
                  "| arm | DSRL pretrained | DSRL finetuned | p | "
                  + " | ".join(f"Best-of-{n}" for n in st["best_of"]) + " |",
                  "|---|---|---|---|" + "---|" * len(st["best_of"])]
        for arm, row in ft["arms"].items():
            d = row["dsrl"]
            cells = [f"{d['pretrained']['success_rate']:.0%}", f"{d['finetuned']['success_rate']:.0%} "
                     f"[{d['finetuned']['ci95'][0]:.0%}, {d['finetuned']['ci95'][1]:.0%}]",
                     format_p(d["vs_pretrained"]["mcnemar_exact_p"])]
            for n in st["best_of"]:
                b = row.get("best_of", {}).get(str(n))
                cells.append(f"{b['success_rate']:.0%} (p {format_p(b['vs_pretrained']['mcnemar_exact_p'])})"
                             if b else "-")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", type=Path, required=True,
                    help="a `postbc pipeline` output directory with seed_<s>/{demos.zarr,bc,postbc}")
    ap.add_argument("--out", type=Path, default=Path("runs/postbc_arms"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--arms", nargs="+", default=list(ARMS))
    ap.add_argument("--arm", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                    help="an extra arm: NAME then TrainConfig overrides (bootstrap=state_action ...), clip=X, "
                         "source=ARM")
    ap.add_argument("--no-coverage", action="store_true")
    ap.add_argument("--finetune-arms", nargs="*", default=[],
                    help="arms to finetune with the pipeline's DSRL and Best-of-N recipe (item 3's ablations)")
    ap.add_argument("--finetune-episodes", type=int, default=40, help="DSRL online episodes (make demo: 40)")
    ap.add_argument("--paired-episodes", type=int, default=30, help="paired final test per seed (make demo: 30)")
    ap.add_argument("--recipe-rollouts", type=int, default=30, help="Best-of-N recipe rollouts (make demo: 30)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json-name", default="postbc_arms_lift_cube")
    a = ap.parse_args()

    specs = {name: ARMS[name] for name in a.arms}
    for extra in a.arm:
        specs[extra[0]] = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in extra[1:])}
    src = json.loads((a.pretrained / "results.json").read_text())
    base = json.loads((a.pretrained / f"seed_{a.seeds[0]}" / "postbc" / "train_config.json").read_text())
    t_start, load_start = time.time(), os.getloadavg()[0]
    timings = {}

    train_jobs = [(a.pretrained, a.out, arm, arm_train_overrides(s), seed) for arm, s in specs.items()
                  if "source" not in s for seed in a.seeds]
    cov_jobs = []
    if not a.no_coverage:
        for arm, s in specs.items():
            if s.get("source") == "bc" or arm == "bc":
                continue
            trained = specs.get(s.get("source"), {})  # an arm sampled from another arm's checkpoint
            eff = {**{k: base.get(k) for k in COVERAGE_FIELDS if k in base}, **arm_train_overrides(trained),
                   **arm_train_overrides(s)}
            if "clip" in s:
                eff["sample_clip"] = "data" if s["clip"] == 1.0 else "posterior"
            cov_jobs.append((a.out, arm, {k: eff[k] for k in COVERAGE_FIELDS if k in eff}, a.seeds[0]))
    for job, r in zip(train_jobs, pool_map(train_job, train_jobs, a.workers)):
        timings[f"train_{job[2]}_seed_{job[4]}"] = r[-1]

    for arm, s in specs.items():
        if "clip" in s:
            for seed in a.seeds:
                name = s.get("source", "postbc")
                source = a.pretrained / f"seed_{seed}" / name if name in ("bc", "postbc") else \
                    a.out / f"seed_{seed}" / name
                materialize_clip(source, checkpoint_of(a.out, a.pretrained, arm, s, seed), float(s["clip"]))
    eval_jobs = [(str(checkpoint_of(a.out, a.pretrained, arm, s, seed)),
                  str(a.out / f"seed_{seed}" / f"eval_{arm}.json"), src["task"], seed, a.episodes)
                 for arm, s in specs.items() for seed in a.seeds]
    evals: dict = {arm: {} for arm in specs}
    for job, r in zip(eval_jobs, pool_map(eval_job, eval_jobs, a.workers)):
        arm = Path(job[1]).stem[len("eval_"):]
        evals[arm][job[3]] = r
    for job, r in zip(cov_jobs, pool_map(coverage_job, cov_jobs, a.workers)):
        timings[f"coverage_{job[1]}"] = r[-1]
    coverage = {j[1]: json.loads((a.out / "coverage" / j[1] / "coverage.json").read_text()) for j in cov_jobs}
    finetuned = {}
    if a.finetune_arms:
        finetuned = run_finetuning(a, src, {arm: specs[arm] for arm in a.finetune_arms}, timings)
    timings["total"] = round(time.time() - t_start, 1)
    cmd = "python benchmarks/bench_postbc_arms.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    res = {"command": cmd, "task": src["task"], "demos": src["demos"], "seeds": a.seeds, "episodes": a.episodes,
           "pretrained_from": str(a.pretrained), "base_postbc": {k: base[k] for k in
                                                                  ("alpha", "ensemble_size", "bootstrap", "steps")},
           "arm_specs": {k: (", ".join(f"{kk}={vv}" for kk, vv in v.items()) or "-") for k, v in specs.items()},
           "arms": summarize(specs, evals, coverage, a.seeds), "coverage": coverage, "finetuned": finetuned,
           "timings_s": timings,
           "machine_load": [load_start, os.getloadavg()[0]]}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    (a.out / "report.md").write_text(render(res))
    write_result(a.json_name, res)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
