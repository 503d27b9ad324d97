"""Success vs training budget: how many diffusion gradient steps a sim policy needs (`postbc sim curve`).

For every seed s: record `demos` scripted demonstrations (seed s, exactly as `postbc pipeline` does), then for every
budget in `steps` and every method train a policy through the pipeline's own training path (analysis/sim_demo
.train_policy: the same network, batch, learning rate and schedule) and evaluate it on `episodes` fixed initial
states (seeds 1000000+, the pipeline's evaluation states, never trained on). Every policy is evaluated on the same
states with the same per-episode noise seeds, so methods and budgets are compared pairwise (McNemar's exact test).

Methods: "bc" (alpha 0), "postbc" (alpha > 0, posterior perturbation), "sigma_bc" (the same average noise magnitude
for every state: the paper's sigma-BC baseline). Rates are pooled over seeds with a Wilson 95 % interval (episodes
treated as independent; the per-seed counts are kept for the between-seed spread).

Writes out/curve.json (and --json PATH, e.g. benchmarks/results/) and prints a markdown table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from postbc_core.data.paths import make_output_dir
from postbc_core.errors import ConfigError, check_seed
from postbc_core.policies.settings import PolicySettings
from postbc_core.training.config import TrainConfig
from postbc_core.stats import paired_comparison, wilson_interval

log = logging.getLogger(__name__)

METHODS = {"bc": ("posterior", 0.0), "postbc": ("posterior", None), "sigma_bc": ("isotropic", None)}
"""method -> (perturbation, alpha; None = the config's alpha)."""


@dataclass
class CurveConfig:
    """Success vs diffusion training steps (and BC vs PostBC vs sigma-BC at each budget) on fixed evaluation states."""

    out: Path = Path("runs/learning_curve")
    """Output directory: seed_<s>/demos.zarr, seed_<s>/<method>_<steps>/ (run + eval.json), curve.json."""
    task: str = "lift_cube"
    """Sim task."""
    demos: int = 20
    """Successful scripted demonstrations per seed."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (demos, training and initialisation)."""
    steps: tuple[int, ...] = (2000, 5000, 10000, 20000)
    """Diffusion training budgets (gradient steps, each trained from scratch with its own cosine schedule)."""
    methods: tuple[str, ...] = ("bc",)
    """Any of bc, postbc, sigma_bc."""
    alpha: float = TrainConfig.alpha
    """PostBC / sigma-BC noise weight (`postbc train`'s default)."""
    episodes: int = 50
    """Evaluation episodes per policy (fixed initial states 1000000+ and noise seeds, shared by all policies)."""
    obs_keys: tuple[str, ...] = ()
    """Policy observations (default: the task's recommended keys)."""
    action_key: str = "cmd_ee_delta"
    """Policy action: cmd_ee_delta (EE deltas, the default) or cmd_joint_pos (absolute joint targets)."""
    policy_hidden: tuple[int, ...] = PolicySettings.mlp_hidden
    """MLP denoiser widths."""
    ensemble_size: int = 10
    """K ensemble members of the PostBC / sigma-BC posterior."""
    ensemble_steps: int = 1000
    """Ensemble gradient steps (as `postbc pipeline`)."""
    workers: int = 2
    """Parallel processes (one torch thread each)."""
    json: Path | None = None
    """Also write the results here (e.g. benchmarks/results/learning_curve_lift_cube.json)."""
    device: str = "cpu"
    """Torch device."""

    def __post_init__(self):
        self.out = Path(self.out)
        self.seeds, self.steps, self.methods = tuple(self.seeds), tuple(sorted(self.steps)), tuple(self.methods)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"methods {list(self.methods)}: choose from {', '.join(METHODS)}")
        if not self.seeds or not self.steps or min(self.steps) < 1:
            raise ConfigError(f"give at least one seed and budgets >= 1 (seeds {self.seeds}, steps {self.steps})")
        for seed in self.seeds:
            check_seed(seed, "--seeds")
        if self.episodes < 1 or self.demos < 1 or self.workers < 1:
            raise ConfigError(f"episodes ({self.episodes}), demos ({self.demos}) and workers ({self.workers}) must "
                              "be >= 1")
        if self.alpha <= 0 and set(self.methods) - {"bc"}:
            raise ConfigError(f"alpha={self.alpha}: postbc / sigma_bc need a noise weight > 0")

    def sim_demo(self, seed: int):
        from postbc_core.analysis.sim_demo import SimDemoConfig

        return SimDemoConfig(out=self.out / f"seed_{seed}", task=self.task, demos=self.demos, obs_keys=self.obs_keys,
                             action_key=self.action_key, alpha=self.alpha, policy_hidden=self.policy_hidden,
                             ensemble_size=self.ensemble_size, ensemble_steps=self.ensemble_steps,
                             eval_episodes=0, videos=0, seed=seed, device=self.device, progress=False)


def _job(cfg: CurveConfig, seed: int, steps: int, method: str) -> dict:
    """Trains one policy and evaluates it; returns its record."""
    import torch

    from postbc_core import load_policy
    from postbc_core.analysis.sim_demo import train_policy
    from postbc_core.rl.finetune_config import EVAL_SEED
    from postbc_core.sim.evaluation import evaluate_policy

    torch.set_num_threads(1)
    perturbation, alpha = METHODS[method]
    sd = dataclasses.replace(cfg.sim_demo(seed), steps=steps)
    t0, c0 = time.time(), time.process_time()
    run = train_policy(sd, sd.out / "demos.zarr", f"{method}_{steps}", cfg.alpha if alpha is None else alpha,
                       perturbation=perturbation)
    train_s = time.process_time() - c0
    policy = load_policy(run, device=cfg.device)
    report = evaluate_policy(policy, cfg.task, episodes=cfg.episodes, num_envs=4, seed=EVAL_SEED, out=run)
    (run / "eval.json").write_text(json.dumps(report, indent=2))
    return {"seed": seed, "steps": steps, "method": method, "n_success": report["n_success"],
            "successes": report["successes"], "obs_clipped": report["obs_clipped"],
            "train_cpu_s": round(train_s, 1), "wall_s": round(time.time() - t0, 1)}


def run_curve(cfg: CurveConfig) -> dict:
    from postbc_core.sim.demos import record_demos

    make_output_dir(cfg.out)
    t0 = time.time()
    for seed in cfg.seeds:
        record_demos(cfg.task, cfg.demos, cfg.out / f"seed_{seed}" / "demos.zarr", seed=seed, overwrite=True)
    jobs = [(seed, steps, m) for steps in reversed(cfg.steps) for seed in cfg.seeds for m in cfg.methods]
    records = []
    if cfg.workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as pool:
            records = list(pool.map(_job, *zip(*[(cfg, *j) for j in jobs])))
    else:
        records = [_job(cfg, *j) for j in jobs]
    result = summarize(cfg, records)
    result["wall_s"] = round(time.time() - t0, 1)
    result["load_avg_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    (cfg.out / "curve.json").write_text(text)
    if cfg.json is not None:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(text)
    return result


def summarize(cfg: CurveConfig, records: list[dict]) -> dict:
    """Pooled rates per (method, steps) with Wilson intervals, per-seed counts, and paired tests: every method
    against BC at the same budget, and every budget against the previous one of the same method."""
    by = {(r["method"], r["steps"], r["seed"]): r for r in records}
    table = []
    for m in cfg.methods:
        for steps in cfg.steps:
            rs = [by[(m, steps, s)] for s in cfg.seeds if (m, steps, s) in by]
            if not rs:
                continue
            k, n = sum(r["n_success"] for r in rs), sum(len(r["successes"]) for r in rs)
            row = {"method": m, "steps": steps, "n_success": k, "n": n, "rate": k / n,
                   "ci95": list(wilson_interval(k, n)), "per_seed": [r["n_success"] for r in rs],
                   "obs_clipped": sum(sum(r["obs_clipped"].values()) for r in rs)}
            outcomes = [x for r in rs for x in r["successes"]]
            if m != "bc" and all(("bc", steps, s) in by for s in cfg.seeds):
                bc = [x for s in cfg.seeds for x in by[("bc", steps, s)]["successes"]]
                row["vs_bc"] = paired_comparison(bc, outcomes)
            prev = [s for s in cfg.steps if s < steps]
            if prev and all((m, prev[-1], s) in by for s in cfg.seeds):
                before = [x for s in cfg.seeds for x in by[(m, prev[-1], s)]["successes"]]
                row["vs_previous_budget"] = paired_comparison(before, outcomes)
            table.append(row)
    return {"task": cfg.task, "demos": cfg.demos, "seeds": list(cfg.seeds), "episodes": cfg.episodes,
            "action_key": cfg.action_key, "obs_keys": list(cfg.sim_demo(cfg.seeds[0]).obs_keys),
            "policy_hidden": list(cfg.policy_hidden), "alpha": cfg.alpha, "table": table, "records": records,
            "command": ("postbc sim curve " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                for k, v in _cli_args(cfg).items())).strip()}


def _cli_args(cfg: CurveConfig) -> dict:
    defaults = CurveConfig()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(defaults, f.name) and f.name not in ("out", "json", "device")}


def render_table(result: dict) -> str:
    lines = ["| method | steps | success (pooled) | Wilson 95 % | per seed | paired vs BC (gained/lost, p) | "
             "vs previous budget (p) |", "|---|---|---|---|---|---|---|"]
    for r in result["table"]:
        vs = r.get("vs_bc")
        prev = r.get("vs_previous_budget")
        lines.append(f"| {r['method']} | {r['steps']} | {r['n_success']}/{r['n']} ({r['rate']:.0%}) | "
                     f"[{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] | {' / '.join(map(str, r['per_seed']))} | "
                     + (f"+{vs['gained']}/-{vs['lost']}, p = {vs['mcnemar_exact_p']:.3g}" if vs else "-") + " | "
                     + (f"+{prev['gained']}/-{prev['lost']}, p = {prev['mcnemar_exact_p']:.3g}" if prev else "-")
                     + " |")
    return "\n".join(lines)
