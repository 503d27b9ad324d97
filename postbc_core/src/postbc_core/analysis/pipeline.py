"""`postbc pipeline` (what `make demo` runs): the paper's experiment end to end in the MuJoCo twin.

For every seed s (matched across BC and PostBC: the same demos, the same training seed, the same finetuning seed):
    scripted demos -> BC (alpha 0) and PostBC (alpha > 0)           analysis/sim_demo.run_sim_demo, the one way
    -> finetuning of each with every algorithm of --algorithms       rl/finetune.run_finetune
       (DSRL by default; DPPO beside it with --algorithms dsrl_sac dppo), the same online episode budget and
       finetuning seed for every method and algorithm (a run's evaluation before its first episode is the
       pretrained success; later ones give the curve; one table and one curve per algorithm)
    -> the paper's Best-of-N recipe for BC, PostBC and sigma-BC        (PipelineConfig.recipe)
then the 1-D coverage experiment (analysis/coverage.py) and a report (analysis/pipeline_report.py): report.md,
success_vs_episodes.png, results.json and one summary line.

Statistics. Every evaluation point runs `eval_episodes` episodes per seed on a fixed set of initial states (seeds
1000000+, never trained on, identical for both methods). Rates are pooled over seeds (k successes of
n = seeds * eval_episodes) with a Wilson 95% score interval; that interval treats episodes as independent, so it does
not include the between-seed spread, which the report shows separately (per-seed rates, thin lines in the figure).
"Episodes to target" is the first evaluation point (training episodes done, warm-up included) whose pooled rate
reaches `target_success`; per seed likewise, or None when not reached within the budget.
The paired final evaluation (`paired_episodes` per seed, rl/finetune.evaluate_run = `postbc finetune-eval`) runs the
pretrained policy and the finetuned agent of each method on the same initial states and noise seeds, so "did
finetuning help" and "BC vs PostBC" are answered by McNemar's exact test on the pairs, with 3x the episodes of a
curve point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from postbc_core.analysis.pipeline_config import PipelineConfig
from postbc_core.analysis.pipeline_report import aggregate, plot_success, render_report, summary_line
from postbc_core.errors import ConfigError, check_seed, storage_errors
from postbc_core.policies.settings import PolicySettings
from postbc_core.rl.best_of_n import BestOfNConfig
from postbc_core.rl.dsrl import DSRLConfig

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------------------
def run_pipeline(cfg: PipelineConfig) -> dict:
    """Runs every seed, the coverage experiment and writes the report; returns the results (also results.json)."""
    from postbc_core.analysis.sim_demo import POLICIES

    prepare_out(cfg)
    with storage_errors(f"creating the pipeline's output directory {cfg.out}"):
        cfg.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    load_start = os.getloadavg()[0]
    timings: dict[str, float] = {}
    runs: dict[int, dict] = {seed: {} for seed in cfg.seeds}
    cpu = dict.fromkeys(cfg.seeds, 0.0)

    def take(seed: int, key: tuple[str, ...], run: dict, t: dict, cpu_s: float) -> None:
        # key: where run goes in runs[seed]: () pretraining, ("online", algorithm, method), ("recipe", method)
        d = runs[seed]
        for k in key:
            d = d.setdefault(k, {})
        d.update(run)
        timings.update(t)
        cpu[seed] += cpu_s

    # jobs: pretraining per seed, then finetuning (+ paired evaluation) per seed, algorithm and method, the recipe
    # per seed and method, and the coverage experiment; finer than a job per seed so that 3 seeds keep 2 workers
    # busy to the end
    online = [(algo, name) for algo in cfg.algorithms for name in POLICIES]
    workers = min(cfg.workers, (len(online) + len(cfg.recipe_methods)) * len(cfg.seeds) + int(cfg.coverage))
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a clean interpreter per worker (no forked torch / MuJoCo state); one torch thread each, so the
        # workers share the cores instead of oversubscribing them
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(cfg.device,)) as pool:
            pre_jobs = [pool.submit(pretrain_seed, cfg, seed) for seed in cfg.seeds]
            cov_job = pool.submit(_run_coverage, cfg) if cfg.coverage else None
            ft_jobs, recipe_jobs = [], []
            for job in as_completed(pre_jobs):
                seed, run, t, cpu_s = job.result()
                take(seed, (), run, t, cpu_s)
                ft_jobs += [pool.submit(finetune_method, cfg, seed, algo, name, run[name]["checkpoint"])
                            for algo, name in online]
                recipe_jobs += [pool.submit(recipe_method, cfg, seed, name, run[name]["checkpoint"])
                                for name in cfg.recipe_methods]
            for job in ft_jobs:
                seed, algo, name, run, t, cpu_s = job.result()
                take(seed, ("online", algo, name), run, t, cpu_s)
            for job in recipe_jobs:
                seed, name, run, t, cpu_s = job.result()
                take(seed, ("recipe", name), run, t, cpu_s)
            coverage, t = cov_job.result() if cov_job else (None, {})
            timings.update(t)
    else:
        for seed in cfg.seeds:
            _, run, t, cpu_s = pretrain_seed(cfg, seed)
            take(seed, (), run, t, cpu_s)
            for algo, name in online:
                _, _, _, ft, t, cpu_s = finetune_method(cfg, seed, algo, name, run[name]["checkpoint"])
                take(seed, ("online", algo, name), ft, t, cpu_s)
            for name in cfg.recipe_methods:
                _, _, rec, t, cpu_s = recipe_method(cfg, seed, name, run[name]["checkpoint"])
                take(seed, ("recipe", name), rec, t, cpu_s)
        coverage, t = _run_coverage(cfg) if cfg.coverage else (None, {})
        timings.update(t)
    # CPU seconds of each seed's jobs: unlike wall time, not inflated by other load on the machine
    timings = dict(sorted(timings.items())) | {f"seed_{seed}_cpu": round(cpu[seed], 1) for seed in cfg.seeds}
    timings["total"] = round(time.time() - t_start, 1)
    results = aggregate(cfg, runs)
    # other processes' load inflates wall times: record it next to them (1-min load average, start / end)
    machine = {"cpus": os.cpu_count(), "workers": workers, "load_avg_1min": [load_start, os.getloadavg()[0]]}
    results.update(coverage=coverage, timings_s=timings, machine=machine)
    results["summary_line"] = summary_line(results)
    plot_success(cfg.out / "success_vs_episodes.png", results)
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2))
    (cfg.out / "report.md").write_text(render_report(results))
    return results


PIPELINE_OUTPUTS = ("report.md", "success_vs_episodes.png", "results.json", "coverage")
"""What the pipeline writes directly under --out, besides a seed_<s>/ directory per seed (what --overwrite removes)."""


def _own_outputs(out: Path) -> list[Path]:
    return sorted([out / n for n in PIPELINE_OUTPUTS if (out / n).exists()] +
                  [p for p in out.glob("seed_*") if p.is_dir() and p.name[len("seed_"):].isdigit()])


def prepare_out(cfg: PipelineConfig) -> None:
    """Refuse a non-empty --out unless --overwrite (then remove the previous pipeline's outputs, nothing else): a
    re-run into the same directory would otherwise regenerate everything under it without a word."""
    from postbc_core.data.paths import prepare_output_dir

    prepare_output_dir(cfg.out, overwrite=cfg.overwrite, own_outputs=_own_outputs, owner="pipeline",
                       replaces="the pipeline's outputs there")


def _worker_init(device: str) -> None:
    import torch

    if device in ("auto", "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(1)
    logging.basicConfig(level=os.environ.get("POSTBC_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")


def pretrain_seed(cfg: PipelineConfig, seed: int) -> tuple[int, dict, dict, float]:
    """One seed's demos -> BC and PostBC with that seed (run_sim_demo).
    Returns (seed, {"demo_success_rate", <method>: {"checkpoint"}}, wall times, CPU seconds)."""
    from postbc_core.analysis.sim_demo import POLICIES, run_sim_demo

    from postbc_core.analysis.sim_demo import train_policy

    t0, c0 = time.time(), time.process_time()
    sd = cfg.sim_demo(seed)
    pre = run_sim_demo(sd)
    run = {"demo_success_rate": pre["demo_success_rate"],
           **{name: {"checkpoint": pre["policies"][name]["checkpoint"]} for name in POLICIES}}
    if "sigma_bc" in cfg.recipe_methods:  # the same demos, seed and average noise magnitude as PostBC, isotropic
        run["sigma_bc"] = {"checkpoint": str(train_policy(sd, sd.out / "demos.zarr", "sigma_bc", cfg.alpha,
                                                          perturbation="isotropic"))}
    return seed, run, {f"seed_{seed}_pretrain": round(time.time() - t0, 1)}, time.process_time() - c0


def recipe_method(cfg: PipelineConfig, seed: int, name: str, checkpoint: str) -> tuple[int, str, dict, dict, float]:
    """The paper's WidowX recipe for one method and seed (PipelineConfig.recipe), evaluated on the paired episodes:
    the pretrained policy and Best-of-N for every N. Returns (seed, name, its entry, wall times, CPU s)."""
    from postbc_core.rl.finetune import evaluate_run, run_finetune

    t0, c0 = time.time(), time.process_time()
    rc = cfg.recipe(seed, name, checkpoint)
    shutil.rmtree(rc.out, ignore_errors=True)  # the pipeline owns these dirs; a re-run starts afresh
    s = run_finetune(rc)
    pe = evaluate_run(rc.out, episodes=cfg.paired_episodes, device=cfg.device, best_of=cfg.best_of)
    run = {"checkpoint": checkpoint, "run": str(rc.out), "rollout_success_rate": s["train_success_rate"],
           "pretrained": pe["pretrained"]["successes"],
           "best_of": {n: e["eval"]["successes"] for n, e in pe["best_of"].items()}}
    log.info("seed %d %s recipe: rollouts %.0f%%, pretrained %d, %s", seed, name, 100 * s["train_success_rate"],
             sum(run["pretrained"]), {n: sum(v) for n, v in run["best_of"].items()})
    return seed, name, run, {f"seed_{seed}_recipe_{name}": round(time.time() - t0, 1)}, time.process_time() - c0


def finetune_method(cfg: PipelineConfig, seed: int, algorithm: str, name: str,
                    checkpoint: str) -> tuple[int, str, str, dict, dict, float]:
    """Finetuning of one method's policy with one algorithm of --algorithms, the seed's finetuning seed and the shared
    budget, then (when paired_episodes > 0) its paired final evaluation.
    Returns (seed, algorithm, name, the run's entry, wall times, CPU s)."""
    from postbc_core.rl.finetune import evaluate_run, run_finetune

    timings = {}
    t0, c0 = time.time(), time.process_time()
    ft_cfg = cfg.finetune(seed, algorithm, name, checkpoint)
    shutil.rmtree(ft_cfg.out, ignore_errors=True)  # the pipeline owns these dirs; a re-run starts afresh
    s = run_finetune(ft_cfg)
    job = f"{algorithm}_{name}"
    timings[f"seed_{seed}_finetune_{job}"] = round(time.time() - t0, 1)
    run = {"checkpoint": checkpoint, "finetune": str(ft_cfg.out),
           "evals": [{k: e[k] for k in ("after_episodes", "mode", "n_success", "episodes", "success_rate")}
                     for e in s["evals"]],
           "train_success_rate": s["train_success_rate"], "updates": s["counters"]["updates"]}
    log.info("seed %d %s %s: %s", seed, algorithm, name,
             [(e["after_episodes"], e["success_rate"]) for e in s["evals"]])
    if cfg.paired_episodes:
        t0 = time.time()
        pe = evaluate_run(ft_cfg.out, episodes=cfg.paired_episodes, device=cfg.device)  # also agent_eval.json
        timings[f"seed_{seed}_paired_{job}"] = round(time.time() - t0, 1)
        run["paired"] = {"pretrained": pe["pretrained"]["successes"], "agent": pe["agent"]["successes"]}
    return seed, algorithm, name, run, timings, time.process_time() - c0


def _run_coverage(cfg: PipelineConfig) -> tuple[dict, dict]:
    """The 1-D coverage experiment into OUT/coverage -> (its key metrics, wall time)."""
    from postbc_core.analysis.coverage import SAMPLE_STORE, CoverageConfig, run_coverage

    t0, c0 = time.time(), time.process_time()
    steps = {} if cfg.coverage_steps is None else {"steps": cfg.coverage_steps,
                                                   "ensemble_steps": max(1, cfg.coverage_steps // 2)}
    cov = CoverageConfig(out=cfg.out / "coverage", dataset=SAMPLE_STORE if SAMPLE_STORE.exists() else None,
                         device=cfg.device, seed=cfg.seeds[0], alpha=cfg.alpha, progress=cfg.progress, **steps)
    m = run_coverage(cov)
    regions = [r for r in ("dense", "one_demo", "two_demos") if r in m]
    summary = {"figure": "coverage/coverage.png", "json": "coverage/coverage.json",
               **{r: {k: m[r][k] for k in ("bc_std", "postbc_std", "spread_ratio")} for r in regions}}
    return summary, {"coverage": round(time.time() - t0, 1), "coverage_cpu": round(time.process_time() - c0, 1)}



def pipeline(cfg: Annotated[PipelineConfig, tyro.conf.arg(name="")]) -> int:
    """Scripted demos -> BC and PostBC (matched seeds) -> finetuning of both with each of --algorithms (default
    DSRL-SAC) for the same online budget, and the Best-of-N recipe -> OUT/report.md, OUT/success_vs_episodes.png,
    OUT/results.json (+ the coverage figure); prints one summary line."""
    r = run_pipeline(cfg)
    print(f"report: {cfg.out / 'report.md'}  figure: {cfg.out / 'success_vs_episodes.png'}  "
          f"results: {cfg.out / 'results.json'}")
    print(r["summary_line"], flush=True)
    return 0
