"""The pipeline's settings (`postbc pipeline` / `make demo`): budgets, seeds, methods, the training and finetuning
recipes every seed runs. analysis/pipeline.py runs them; analysis/pipeline_report.py reads them to aggregate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from postbc_core.errors import ConfigError, check_seed
from postbc_core.policies.settings import PolicySettings
from postbc_core.rl.best_of_n import BestOfNConfig
from postbc_core.rl.dppo import DPPOConfig
from postbc_core.rl.dsrl import DSRLConfig
from postbc_core.training.config import TrainConfig

ONLINE_ALGORITHMS = ("dsrl_sac", "dsrl_na", "dppo")  # what --algorithms accepts (Best-of-N is the separate recipe)
RECIPE_METHODS = ("bc", "postbc", "sigma_bc")  # the paper's WidowX recipe also runs the sigma-BC baseline
# --obs images: what a real WidowX gives a policy (the README's real-robot recipe), no object state.
IMAGE_OBS_KEYS = ("front_rgb", "wrist_rgb", "joint_pos", "gripper_pos")

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
    """Scripted demos -> BC and PostBC (matched seeds) -> evaluate -> finetune both with each of --algorithms (and the
    Best-of-N recipe) -> report."""

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
    obs: Literal["state", "images"] = "state"
    """What the policies see by default: "state" (the task's recommended keys, `sim.registry.recommended_obs_keys`,
    object state included) or "images" (front_rgb wrist_rgb joint_pos gripper_pos, as on the real arm: the demos
    render both cameras at --image-size, the policies train with --image-encoder). --obs-keys overrides the keys."""
    obs_keys: tuple[str, ...] = ()
    """Policy observations (default: per --obs)."""
    image_size: tuple[int, int] = (96, 128)
    """Camera keys: (height, width) px the demos are rendered and the policies trained at."""
    image_encoder: Literal["conv", "resnet18"] = "conv"
    """Camera keys: conv (robomimic's small conv stack, trains on a CPU) or resnet18 (the paper's, for a GPU)."""
    action_key: str = "cmd_ee_delta"
    """Policy action: cmd_ee_delta (end-effector deltas, the Bridge/WidowX convention) or cmd_joint_pos."""
    alpha: float = TrainConfig.alpha
    """PostBC posterior noise weight (paper: 0.25..4; BC is alpha 0): `postbc train`'s default (README "PostBC at 10
    demos": what lower alphas and other variants trade between pretrained success and coverage)."""
    ensemble_size: int = 10
    """K ensemble members for the PostBC posterior (paper, WidowX: 10)."""
    ensemble_steps: int = 1000
    """Ensemble gradient steps."""
    steps: int = 10000
    """Diffusion gradient steps per policy: the measured plateau of BC's learning curve on lift_cube (2k 51 %, 5k 80 %,
    10k 87 %, 20k 87 % over 3 seeds x 50 episodes; `postbc sim curve`, benchmarks/results/)."""
    policy_hidden: tuple[int, ...] = PolicySettings.mlp_hidden
    """Widths of the diffusion policy's MLP noise net (paper: 3 x 512..1024; 3 x 256 is ~3x cheaper on a CPU)."""
    # --algorithm (one value) is the same option, kept so that `--algorithm dppo` commands stay valid
    algorithms: Annotated[tuple[Literal["dsrl_sac", "dsrl_na", "dppo"], ...],
                          tyro.conf.arg(aliases=("--algorithm",))] = ("dsrl_sac",)
    """Finetuning algorithms of the online comparison, each run for BC and PostBC with the same budget and seeds and
    reported in its own table and curve: DSRL-SAC, DSRL-NA (noise aliasing), DPPO (fine-tunes the policy's weights),
    e.g. --algorithms dsrl_sac dppo. The Best-of-N recipe runs beside them."""
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
    """DSRL hyperparameters (--dsrl.utd, --dsrl.warmup-episodes, ...); the variant follows the algorithm run."""
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    """DPPO hyperparameters (--algorithms ... dppo: --dppo.actor-lr, --dppo.episodes-per-iteration, ...)."""
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
        if isinstance(self.dppo, dict):
            self.dppo = DPPOConfig(**self.dppo)
        preset = FULL if self.full else DEFAULT
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.seeds = tuple(int(s) for s in self.seeds)
        if self.obs not in ("state", "images"):
            raise ConfigError(f"obs={self.obs!r}: choose state or images")
        self.obs_keys = tuple(self.obs_keys)
        if self.obs == "images":
            self.obs_keys = self.obs_keys or IMAGE_OBS_KEYS
            if not any(k.endswith("_rgb") for k in self.obs_keys):
                raise ConfigError(f"--obs images with --obs-keys {' '.join(self.obs_keys)}: give at least one camera "
                                  "key (front_rgb, wrist_rgb), or leave --obs-keys out for "
                                  f"{' '.join(IMAGE_OBS_KEYS)}")
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
        self._check_algorithms()
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

    def _check_algorithms(self) -> None:
        if isinstance(self.algorithms, str):  # PipelineConfig(algorithms="dppo") from Python: one algorithm
            self.algorithms = (self.algorithms,)
        self.algorithms = tuple(self.algorithms)
        choices = ", ".join(ONLINE_ALGORITHMS)
        if not self.algorithms:
            raise ConfigError(f"algorithms is empty: give at least one of {choices} (e.g. --algorithms dsrl_sac dppo)")
        for a in self.algorithms:
            if a not in ONLINE_ALGORITHMS:
                raise ConfigError(f"algorithms: {a!r} is not an online finetuning algorithm; choose from {choices} "
                                  "(Best-of-N runs as the recipe, --recipe-rollouts)")
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ConfigError(f"algorithms={' '.join(self.algorithms)} repeats an algorithm; give each once")
        critic_only = self.dppo.critic_warmup_iterations * self.dppo.episodes_per_iteration
        if "dppo" in self.algorithms and self.finetune_episodes <= critic_only:
            # its table would show a policy DPPO never changed
            raise ConfigError(f"finetune_episodes={self.finetune_episodes} with DPPO: its first "
                              f"{self.dppo.critic_warmup_iterations} iterations x {self.dppo.episodes_per_iteration} "
                              f"episodes train only the critic, so the policy would never change; give "
                              f"--finetune-episodes above {critic_only}, or lower --dppo.critic-warmup-iterations or "
                              "--dppo.episodes-per-iteration")

    def sim_demo(self, seed: int):
        """The pretraining settings for one seed (analysis/sim_demo.py; evaluation happens in finetuning)."""
        from postbc_core.analysis.sim_demo import SimDemoConfig

        return SimDemoConfig(out=self.out / f"seed_{seed}", task=self.task, demos=self.demos, quality=self.quality,
                             obs_keys=self.obs_keys, image_size=self.image_size, image_encoder=self.image_encoder,
                             action_key=self.action_key, alpha=self.alpha,
                             ensemble_size=self.ensemble_size, ensemble_steps=self.ensemble_steps, steps=self.steps,
                             policy_hidden=self.policy_hidden, eval_episodes=0, videos=0, seed=seed,
                             device=self.device, progress=self.progress)

    def finetune(self, seed: int, algorithm: str, name: str, checkpoint: str | Path):
        """The finetuning run of one algorithm, method and seed (the same budget and seed for every method and
        algorithm), in OUT/seed_<seed>/finetune_<algorithm>_<name>."""
        from postbc_core.rl.finetune_config import FinetuneConfig

        if algorithm not in self.algorithms:  # a run the report would not show
            raise ConfigError(f"algorithm {algorithm!r} is not among this pipeline's --algorithms "
                              f"({' '.join(self.algorithms)})")
        return FinetuneConfig(checkpoint=Path(checkpoint), task=self.task, algorithm=algorithm,
                              episodes=self.finetune_episodes,
                              out=self.out / f"seed_{seed}" / f"finetune_{algorithm}_{name}",
                              seed=seed, eval_every=self.eval_every, eval_episodes=self.eval_episodes,
                              device=self.device, max_steps=self.max_steps, dsrl=dataclasses.replace(self.dsrl),
                              dppo=dataclasses.replace(self.dppo))

    def recipe(self, seed: int, name: str, checkpoint: str | Path):
        """The paper's WidowX recipe for one method: `recipe_rollouts` rollouts of the pretrained policy, one offline
        IQL fit on them (no further collection), the critic then picks the best of N candidate chunks."""
        from postbc_core.rl.finetune_config import FinetuneConfig

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
