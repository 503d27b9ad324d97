"""`postbc pipeline` (what `make demo` runs): the paper's experiment end to end in the MuJoCo twin.

For every seed s (matched across BC and PostBC: the same demos, the same training seed, the same finetuning seed):
    scripted demos -> BC (alpha 0) and PostBC (alpha > 0)           analysis/sim_demo.run_sim_demo, the one way
    -> DSRL finetuning of each for the same online episode budget     rl/finetune.run_finetune
       (its evaluation before the first episode is the pretrained success; later ones give the curve)
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

from postbc_core.analysis.pipeline_report import RECIPE_METHODS, aggregate, plot_success, render_report, summary_line
from postbc_core.errors import ConfigError, check_seed, storage_errors
from postbc_core.policies.settings import PolicySettings
from postbc_core.rl.best_of_n import BestOfNConfig
from postbc_core.rl.dsrl import DSRLConfig

log = logging.getLogger(__name__)

# Budgets. The full run (--full: 5 seeds, 150 online episodes, points every 10 x 30 episodes, 100 paired episodes,
# the paper's 100 rollouts for the Best-of-N recipe) is the convincing one: ~2 CPU-hours, so `make demo` runs a
# reduced version (3 seeds, 40 online episodes, 30 paired episodes, 30 rollouts) and says so in its summary line; the
# full run's report is committed under benchmarks/results/ (pipeline_report.FULL_REPORT) with its command.
DEFAULT = {"seeds": (0, 1, 2), "finetune_episodes": 40, "eval_every": 20, "eval_episodes": 20, "paired_episodes": 30,
           "recipe_rollouts": 30}
FULL = {"seeds": (0, 1, 2, 3, 4), "finetune_episodes": 150, "eval_every": 10, "eval_episodes": 30,
        "paired_episodes": 100, "recipe_rollouts": 100}


def _default_dsrl() -> DSRLConfig:
    # DSRLConfig's networks and batch (3 x 256, batch 256) at UTD 4 instead of DSRL's 20: UTD 20 costs ~20 s of
    # updates per 80-step episode on one CPU core. The smaller 2 x 256 / batch 128 that earlier sessions used here
    # stopped improving lift_cube once the twin applied the arm's speed limit (pipeline_notes.md).
    return DSRLConfig(utd=4)


@dataclass
class PipelineConfig:
    """Scripted demos -> BC and PostBC (matched seeds) -> evaluate -> DSRL-finetune both -> report."""

    out: Path = Path("runs/pipeline")
    """Output directory: report.md, success_vs_episodes.png, results.json, coverage/, seed_<s>/ (demos, runs).
    Must be empty or absent unless --overwrite."""
    overwrite: bool = False
    """Replace the pipeline's outputs in a non-empty --out (those listed under --out are removed first; other files
    stay)."""
    task: str = "lift_cube"
    """Sim task (lift_cube, put_in_bowl, push_to_target)."""
    full: bool = False
    """The convincing run (~2 CPU-hours): 5 seeds, 150 online episodes, points every 10 with 30 evaluation episodes,
    100 paired episodes, 100 rollouts for the Best-of-N recipe (default, the reduced run `make demo` does: 3 seeds,
    40, every 20 with 20, 30, 30). Explicit --seeds / --finetune-episodes / --eval-every / --eval-episodes /
    --paired-episodes / --recipe-rollouts still win."""
    seeds: tuple[int, ...] | None = None
    """Seeds; each runs demos, training and finetuning of both methods with that seed (default 0 1 2; full 0..4)."""
    demos: int = 10
    """Successful scripted demonstrations per seed (paper, WidowX: 10). The low-data regime where pretrained success
    is moderate, chosen from the measured demos curve (lift_cube, 10k steps, 3 seeds x 50 paired episodes, BC /
    PostBC alpha 0.5): 5 demos 15 % / 15 %, 7: 69 % / 47 %, 10: 75 % / 66 %, 20: 87 % / 82 % (pipeline_notes.md)."""
    quality: float = 1.0
    """Scripted operator quality in [0, 1] (lower: noisier, more hesitant demonstrations)."""
    obs_keys: tuple[str, ...] = ()
    """Policy observations (default: the task's recommended keys, `sim.registry.recommended_obs_keys`)."""
    action_key: str = "cmd_ee_delta"
    """Policy action: cmd_ee_delta (end-effector deltas, the Bridge/WidowX convention) or cmd_joint_pos."""
    alpha: float = 0.5
    """PostBC posterior noise weight (paper: 0.25..4, default 1; BC is alpha 0). 0.5 here: with 10 demos and K = 10
    the posterior std is ~0.19 of the normalized action range and alpha 1 pretrained at 0%; with 20 demos alpha 0.5
    pretrains at BC's level (pipeline_notes.md)."""
    ensemble_size: int = 10
    """K ensemble members for the PostBC posterior (paper, WidowX: 10)."""
    ensemble_steps: int = 1000
    """Ensemble gradient steps."""
    steps: int = 10000
    """Diffusion gradient steps per policy: the measured plateau of BC's learning curve on lift_cube (2k 51 %, 5k 80 %,
    10k 87 %, 20k 87 % over 3 seeds x 50 episodes; `postbc sim curve`, benchmarks/results/)."""
    policy_hidden: tuple[int, ...] = PolicySettings.mlp_hidden
    """Widths of the diffusion policy's MLP noise net (paper: 3 x 512..1024; 3 x 256 is ~3x cheaper on a CPU)."""
    algorithm: Literal["dsrl_sac", "dsrl_na"] = "dsrl_sac"
    """Finetuning algorithm: DSRL-SAC or DSRL-NA (noise aliasing)."""
    finetune_episodes: int | None = None
    """Online (training) episodes per method and seed, warm-up included (default 40; full 150)."""
    eval_every: int | None = None
    """Evaluate every this-many online episodes (default 20; full 10)."""
    eval_episodes: int | None = None
    """Evaluation episodes per point and seed, fixed initial states (default 20; full 30)."""
    paired_episodes: int | None = None
    """Episodes per seed of the paired final evaluation: the pretrained policy and the finetuned agent of each method
    on the same initial states and noise seeds, McNemar's exact test on the pairs (default 30; full 100; 0 skips)."""
    target_success: float = 0.9
    """Success rate whose first crossing defines "online episodes to target" (pretrained with 10 demos: BC 75 %,
    PostBC 66 %)."""
    max_steps: int | None = None
    """Override the task's episode time limit in control steps during finetuning and evaluation (None: task's)."""
    recipe_rollouts: int | None = None
    """The paper's WidowX recipe (App. D), after the DSRL comparison: this many labelled (0/1) rollouts of each
    pretrained policy (BC, PostBC, sigma-BC), an IQL critic fitted offline on them (discount 0.97), then Best-of-N at
    run time for every N in --best-of, evaluated on the paired episodes (default 30; full 100 as in the paper; 0
    skips it)."""
    best_of: tuple[int, ...] = (4, 16)
    """N of the Best-of-N evaluations (paper, WidowX: 4 and 16)."""
    bon: BestOfNConfig = field(default_factory=BestOfNConfig)
    """IQL hyperparameters of the recipe (--bon.fit-steps, --bon.expectile, ...); its rollouts, N and the absence of
    further collection follow --recipe-rollouts and --best-of."""
    dsrl: DSRLConfig = field(default_factory=_default_dsrl)
    """DSRL hyperparameters (--dsrl.utd, --dsrl.warmup-episodes, ...); the variant follows --algorithm."""
    coverage: bool = True
    """Also run the 1-D coverage experiment (analysis/coverage.py) and put its figure in the report."""
    coverage_steps: int | None = None
    """Diffusion steps of the coverage experiment (ensemble: half of it); None: its defaults (3000 / 1500)."""
    workers: int = 2
    """Seeds run in parallel processes (one torch thread each on a CPU); 1 runs them in this process."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda, cuda:N."""
    progress: bool = False
    """Show training progress bars."""

    def __post_init__(self):
        self.out = Path(self.out)
        if isinstance(self.dsrl, dict):
            self.dsrl = DSRLConfig(**self.dsrl)
        if isinstance(self.bon, dict):
            self.bon = BestOfNConfig(**self.bon)
        preset = FULL if self.full else DEFAULT
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ConfigError("seeds is empty: give at least one seed (e.g. --seeds 0 1 2)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds={self.seeds} repeats a seed; give distinct seeds")
        for seed in self.seeds:
            check_seed(seed, "--seeds")
        if self.finetune_episodes < 1:
            raise ConfigError(f"finetune_episodes={self.finetune_episodes}: give an online budget of at least 1 "
                              "episode")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every={self.eval_every} must be >= 1 (the success curve needs points)")
        self.best_of = tuple(int(n) for n in self.best_of)
        if self.recipe_rollouts < 0 or (self.recipe_rollouts and (not self.best_of or min(self.best_of) < 1)):
            raise ConfigError(f"recipe_rollouts={self.recipe_rollouts} (>= 0; 0 skips the Best-of-N recipe) needs "
                              f"--best-of N values >= 1, got {self.best_of}")
        if self.recipe_rollouts and not self.paired_episodes:
            raise ConfigError("the Best-of-N recipe is evaluated on the paired episodes: give --paired-episodes > 0 "
                              "or --recipe-rollouts 0")
        if self.paired_episodes < 0:
            raise ConfigError(f"paired_episodes={self.paired_episodes} must be >= 0 (0 skips the paired final "
                              "evaluation)")
        if self.eval_episodes < 1:
            raise ConfigError(f"eval_episodes={self.eval_episodes} must be >= 1 (pretrained and finetuned success "
                              "are measured by evaluation)")
        if not 0.0 < self.target_success <= 1.0:
            raise ConfigError(f"target_success={self.target_success}: use a success rate in (0, 1], e.g. 0.7")
        if self.algorithm not in ("dsrl_sac", "dsrl_na"):
            raise ConfigError(f"algorithm={self.algorithm!r}: choose dsrl_sac or dsrl_na")
        if self.alpha <= 0:
            raise ConfigError(f"alpha={self.alpha}: PostBC needs a posterior noise weight > 0 (BC is run as alpha 0 "
                              "anyway; paper: 0.25..4)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 1 (or unset for the task's limit)")
        if self.workers < 1:
            raise ConfigError(f"workers={self.workers} must be >= 1")
        if self.coverage_steps is not None and self.coverage_steps < 2:
            raise ConfigError(f"coverage_steps={self.coverage_steps} must be >= 2 (or unset for the defaults)")
        from postbc_core.sim.registry import list_tasks

        if self.task not in list_tasks():
            raise ConfigError(f"unknown sim task {self.task!r}; available: {', '.join(list_tasks())}")
        self.sim_demo(self.seeds[0])  # validates the pretraining settings (demos, quality, ensemble, ...)

    def sim_demo(self, seed: int):
        """The pretraining settings for one seed (analysis/sim_demo.py; evaluation happens in finetuning)."""
        from postbc_core.analysis.sim_demo import SimDemoConfig

        return SimDemoConfig(out=self.out / f"seed_{seed}", task=self.task, demos=self.demos, quality=self.quality,
                             obs_keys=self.obs_keys, action_key=self.action_key, alpha=self.alpha,
                             ensemble_size=self.ensemble_size, ensemble_steps=self.ensemble_steps, steps=self.steps,
                             policy_hidden=self.policy_hidden, eval_episodes=0, videos=0, seed=seed,
                             device=self.device, progress=self.progress)

    def finetune(self, seed: int, name: str, checkpoint: str | Path):
        """The finetuning run of one method and seed (the same budget and seed for both methods)."""
        from postbc_core.rl.finetune import FinetuneConfig

        return FinetuneConfig(checkpoint=Path(checkpoint), task=self.task, algorithm=self.algorithm,
                              episodes=self.finetune_episodes, out=self.out / f"seed_{seed}" / f"finetune_{name}",
                              seed=seed, eval_every=self.eval_every, eval_episodes=self.eval_episodes,
                              device=self.device, max_steps=self.max_steps, dsrl=dataclasses.replace(self.dsrl))

    def recipe(self, seed: int, name: str, checkpoint: str | Path):
        """The paper's WidowX recipe for one method: `recipe_rollouts` rollouts of the pretrained policy, one offline
        IQL fit on them (no further collection), the critic then picks the best of N candidate chunks."""
        from postbc_core.rl.finetune import FinetuneConfig

        bon = dataclasses.replace(self.bon, n_candidates=max(self.best_of), rollouts=self.recipe_rollouts,
                                  steps_per_episode=0)
        return FinetuneConfig(checkpoint=Path(checkpoint), task=self.task, algorithm="best_of_n",
                              episodes=self.recipe_rollouts, out=self.out / f"seed_{seed}" / f"recipe_{name}",
                              seed=seed, eval_episodes=0, device=self.device, max_steps=self.max_steps, bon=bon)

    @property
    def recipe_methods(self) -> tuple[str, ...]:
        """The methods the Best-of-N recipe runs (none with --recipe-rollouts 0)."""
        return RECIPE_METHODS if self.recipe_rollouts else ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d


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

    def take(seed: int, key: str | None, run: dict, t: dict, cpu_s: float) -> None:
        (runs[seed] if key is None else runs[seed].setdefault(key, {})).update(run)
        timings.update(t)
        cpu[seed] += cpu_s

    # jobs: pretraining per seed, then finetuning (+ paired evaluation) per seed and method, and the coverage
    # experiment; finer than a job per seed so that 3 seeds keep 2 workers busy to the end
    workers = min(cfg.workers, (2 + len(cfg.recipe_methods)) * len(cfg.seeds) + int(cfg.coverage))
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
                take(seed, None, run, t, cpu_s)
                ft_jobs += [pool.submit(finetune_method, cfg, seed, name, run[name]["checkpoint"])
                            for name in POLICIES]
                recipe_jobs += [pool.submit(recipe_method, cfg, seed, name, run[name]["checkpoint"])
                                for name in cfg.recipe_methods]
            for job in ft_jobs:
                seed, name, run, t, cpu_s = job.result()
                take(seed, name, run, t, cpu_s)
            for job in recipe_jobs:
                seed, name, run, t, cpu_s = job.result()
                take(seed, "recipe", {name: run}, t, cpu_s)
            coverage, t = cov_job.result() if cov_job else (None, {})
            timings.update(t)
    else:
        for seed in cfg.seeds:
            _, run, t, cpu_s = pretrain_seed(cfg, seed)
            take(seed, None, run, t, cpu_s)
            for name in POLICIES:
                take(seed, *finetune_method(cfg, seed, name, run[name]["checkpoint"])[1:])
            for name in cfg.recipe_methods:
                _, _, rec, t, cpu_s = recipe_method(cfg, seed, name, run[name]["checkpoint"])
                take(seed, "recipe", {name: rec}, t, cpu_s)
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


def finetune_method(cfg: PipelineConfig, seed: int, name: str, checkpoint: str) -> tuple[int, str, dict, dict, float]:
    """DSRL finetuning of one method's policy with the seed's finetuning seed and the shared budget, then (when
    paired_episodes > 0) its paired final evaluation. Returns (seed, name, the run's entry, wall times, CPU s)."""
    from postbc_core.rl.finetune import evaluate_run, run_finetune

    timings = {}
    t0, c0 = time.time(), time.process_time()
    ft_cfg = cfg.finetune(seed, name, checkpoint)
    shutil.rmtree(ft_cfg.out, ignore_errors=True)  # the pipeline owns these dirs; a re-run starts afresh
    s = run_finetune(ft_cfg)
    timings[f"seed_{seed}_finetune_{name}"] = round(time.time() - t0, 1)
    run = {"checkpoint": checkpoint, "finetune": str(ft_cfg.out),
           "evals": [{k: e[k] for k in ("after_episodes", "mode", "n_success", "episodes", "success_rate")}
                     for e in s["evals"]],
           "train_success_rate": s["train_success_rate"], "updates": s["counters"]["updates"]}
    log.info("seed %d %s: %s", seed, name, [(e["after_episodes"], e["success_rate"]) for e in s["evals"]])
    if cfg.paired_episodes:
        t0 = time.time()
        pe = evaluate_run(ft_cfg.out, episodes=cfg.paired_episodes, device=cfg.device)  # also agent_eval.json
        timings[f"seed_{seed}_paired_{name}"] = round(time.time() - t0, 1)
        run["paired"] = {"pretrained": pe["pretrained"]["successes"], "agent": pe["agent"]["successes"]}
    return seed, name, run, timings, time.process_time() - c0


def _run_coverage(cfg: PipelineConfig) -> tuple[dict, dict]:
    """The 1-D coverage experiment into OUT/coverage -> (its key metrics, wall time)."""
    from postbc_core.analysis.coverage import CoverageConfig, run_coverage

    t0, c0 = time.time(), time.process_time()
    sample = Path(__file__).resolve().parents[4] / "data" / "sample_coverage.zarr"
    steps = {} if cfg.coverage_steps is None else {"steps": cfg.coverage_steps,
                                                   "ensemble_steps": max(1, cfg.coverage_steps // 2)}
    cov = CoverageConfig(out=cfg.out / "coverage", dataset=sample if sample.exists() else None, device=cfg.device,
                         seed=cfg.seeds[0], alpha=cfg.alpha, progress=cfg.progress, **steps)
    m = run_coverage(cov)
    regions = [r for r in ("dense", "one_demo", "two_demos") if r in m]
    summary = {"figure": "coverage/coverage.png", "json": "coverage/coverage.json",
               **{r: {k: m[r][k] for k in ("bc_std", "postbc_std", "spread_ratio")} for r in regions}}
    return summary, {"coverage": round(time.time() - t0, 1), "coverage_cpu": round(time.process_time() - c0, 1)}



def pipeline(cfg: Annotated[PipelineConfig, tyro.conf.arg(name="")]) -> int:
    """Scripted demos -> BC and PostBC (matched seeds) -> DSRL finetuning of both for the same online budget ->
    OUT/report.md, OUT/success_vs_episodes.png, OUT/results.json (+ the coverage figure); prints one summary line."""
    r = run_pipeline(cfg)
    print(f"report: {cfg.out / 'report.md'}  figure: {cfg.out / 'success_vs_episodes.png'}  "
          f"results: {cfg.out / 'results.json'}")
    print(r["summary_line"], flush=True)
    return 0
