"""Pretraining in the sim, the one way: scripted demonstrations -> BC and PostBC with matched seeds -> (optionally)
evaluation of both in the MuJoCo twin -> a short markdown report.

`run_sim_demo` is the single demos -> train -> eval path; `postbc pipeline` (analysis/pipeline.py, what `make demo`
runs) calls it once per seed and then RL-finetunes both checkpoints. State-based policies (joint positions, gripper,
privileged object pose) keep a run within minutes on a 2-core CPU; image policies run the same code with camera keys
(`obs_keys=("front_rgb", "joint_pos", ...)`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from postbc_core.data.paths import make_output_dir
from postbc_core.errors import ConfigError
from postbc_core.policies.settings import PolicySettings
from postbc_core.training.config import TrainConfig

log = logging.getLogger(__name__)

POLICIES = ("bc", "postbc")  # BC is PostBC with alpha = 0: same code path, same seed
PRETRAIN_EVAL_SEED = 10_000  # evaluation episodes reset with seeds 10000+: unseen initial states (demos use 0..)


@dataclass
class SimDemoConfig:
    """Scripted demos -> BC and PostBC -> evaluation in the sim."""

    out: Path = Path("runs/demo/sim")
    """Output directory (demos.zarr, bc/, postbc/, eval_*/, report.md, summary.json)."""
    task: str = "lift_cube"
    """Sim task (lift_cube, put_in_bowl, push_to_target)."""
    demos: int = 10
    """Successful scripted demonstrations to record (paper, WidowX: 10)."""
    quality: float = 1.0
    """Scripted operator quality in [0, 1] (lower: noisier, more hesitant)."""
    obs_keys: tuple[str, ...] = ()
    """Policy observations (default: the task's recommended keys, `sim.registry.recommended_obs_keys`). Camera keys
    (`front_rgb`, `wrist_rgb`) make the demos render those cameras at `image_size`."""
    image_size: tuple[int, int] = (96, 128)
    """Camera keys: (height, width) px the demos are rendered at and the policy trains at (the cameras' 3:4 aspect,
    the README's real-robot training size)."""
    image_encoder: str = "conv"
    """Camera keys: the image encoder (conv: robomimic's small conv stack, trains on a CPU; resnet18: the paper's,
    for a GPU)."""
    action_key: str = "cmd_ee_delta"
    """Policy action: cmd_ee_delta (Bridge-style end-effector deltas + gripper, the WidowX community's convention) or
    cmd_joint_pos (absolute joint targets + gripper). With joint targets PostBC's perturbation is a position error
    the arm does not correct; on a per-step delta feedback corrects it (issue 15: 8-16/50 vs BC 28-37/50 with joint
    targets, 45 vs 43/50 with EE deltas)."""
    action_horizon: int = 4
    """Ta (paper, state-based: 4)."""
    alpha: float = TrainConfig.alpha
    """PostBC posterior noise weight (`postbc train`'s default)."""
    ensemble_size: int = 10
    """K."""
    ensemble_steps: int = 1500
    """Ensemble gradient steps."""
    steps: int = 10000
    """Diffusion gradient steps per policy: where BC's success stops improving on lift_cube with 20 demos (the
    learning curve in benchmarks/results/learning_curve_lift_cube.json: 2k 51 %, 5k 80 %, 10k 87 %, 20k 87 %)."""
    policy_hidden: tuple[int, ...] = PolicySettings.mlp_hidden
    """Widths of the diffusion policy's MLP noise net (paper, state-based: 3 x 512..1024; 3 x 256 is ~3x cheaper on
    a CPU and reaches the curve's plateau)."""
    eval_episodes: int = 20
    """Evaluation episodes per policy (0: train only; `postbc pipeline` evaluates inside finetuning)."""
    num_envs: int = 4
    """Parallel sim envs during evaluation."""
    videos: int = 1
    """Videos per evaluation."""
    seed: int = 0
    """Seed for demos, training and evaluation (matched across BC and PostBC)."""
    device: str = "auto"
    """Torch device."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        from postbc_core.sim.registry import recommended_obs_keys

        self.out = Path(self.out)
        self.obs_keys = tuple(self.obs_keys) or recommended_obs_keys(self.task)
        self.policy_hidden = tuple(int(h) for h in self.policy_hidden)
        self.image_size = tuple(int(v) for v in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(f"image_size={self.image_size}: give (height, width), each at least 8 px")
        from postbc_core.sim.base import OFFSCREEN_SIZE, check_render_size

        check_render_size(*self.image_size, OFFSCREEN_SIZE)  # before any demo is recorded: the twin's largest frame
        if not self.policy_hidden or min(self.policy_hidden) < 1:
            raise ConfigError(f"policy_hidden={self.policy_hidden}: give layer widths >= 1 (e.g. 512 512 512)")
        for name in ("demos", "ensemble_size", "ensemble_steps", "steps", "action_horizon", "num_envs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.ensemble_size < 2:
            raise ConfigError(f"ensemble_size={self.ensemble_size}: a posterior covariance needs K >= 2 (paper: 10)")
        if self.eval_episodes < 0 or self.videos < 0:
            raise ConfigError(f"eval_episodes={self.eval_episodes} and videos={self.videos} must be >= 0")
        if not 0.0 <= self.quality <= 1.0:
            raise ConfigError(f"quality={self.quality}: use a value in [0, 1] (1 = clean operator)")
        if self.alpha < 0:
            raise ConfigError(f"alpha={self.alpha}: the posterior noise weight must be >= 0 (paper: 0.25..4)")
        if self.action_key not in ("cmd_ee_delta", "cmd_joint_pos"):
            raise ConfigError(f"action_key={self.action_key!r}: the scripted demos record cmd_ee_delta (EE deltas) "
                              "and cmd_joint_pos (joint targets)")


def camera_names(obs_keys) -> tuple[str, ...]:
    """The cameras whose images `obs_keys` hold: ("front", "wrist") for front_rgb and wrist_rgb."""
    return tuple(k[: -len("_rgb")] for k in obs_keys if k.endswith("_rgb"))


def train_policy(cfg: SimDemoConfig, dataset: Path, name: str, alpha: float,
                 perturbation: str = "posterior", **overrides) -> Path:
    """One policy from the demos (alpha 0 = BC, > 0 = PostBC, or sigma-BC with perturbation "isotropic"; everything
    else identical). `overrides`: other TrainConfig fields (bootstrap=..., posterior_mix=...; the PostBC ablations).
    Returns the run dir."""
    from postbc_core.training.train import train

    # Images: diffusion_policy's image batch (64) and 32 windows per ensemble member (bench_image.py's setting);
    # state: the batches every state result in this project was measured with.
    images = bool(camera_names(cfg.obs_keys))
    return train(TrainConfig(
        dataset=dataset, out=cfg.out / name, obs_keys=cfg.obs_keys, action_key=cfg.action_key,
        policy=PolicySettings(action_horizon=cfg.action_horizon, mlp_hidden=cfg.policy_hidden,
                              image_encoder=cfg.image_encoder), alpha=alpha,
        perturbation=perturbation, ensemble_size=cfg.ensemble_size, ensemble_hidden=(256, 256),
        ensemble_steps=cfg.ensemble_steps, ensemble_batch_size=32 if images else 128, steps=cfg.steps,
        batch_size=64 if images else 256, lr=3e-4,
        warmup_steps=min(200, cfg.steps // 10), seed=cfg.seed, device=cfg.device, log_every=250,
        progress=cfg.progress, overwrite=True, **overrides))  # run_sim_demo owns cfg.out


def run_sim_demo(cfg: SimDemoConfig) -> dict:
    """Records the demos, trains BC and PostBC with the same seed, evaluates both (unless eval_episodes = 0).
    Writes summary.json + report.md into cfg.out and returns the summary: per policy its checkpoint dir and, when
    evaluated, success rate with a Wilson 95% interval, mean return and length."""
    from postbc_core import load_policy
    from postbc_core.sim.demos import record_demos
    from postbc_core.sim.evaluation import evaluate_policy

    make_output_dir(cfg.out)
    demos = cfg.out / "demos.zarr"
    cameras = camera_names(cfg.obs_keys)
    stats = record_demos(cfg.task, cfg.demos, demos, seed=cfg.seed, quality=cfg.quality, overwrite=True,
                         cameras=cameras, image_size=cfg.image_size)
    results = {"task": cfg.task, "demos": cfg.demos, "demo_success_rate": stats.success_rate,
               "eval_episodes": cfg.eval_episodes, "seed": cfg.seed, "alpha": cfg.alpha, "policies": {}}
    for name in POLICIES:
        run = train_policy(cfg, demos, name, 0.0 if name == "bc" else cfg.alpha)
        entry = {"checkpoint": str(run)}
        if cfg.eval_episodes:
            policy = load_policy(run, device=cfg.device)
            report = evaluate_policy(policy, cfg.task, episodes=cfg.eval_episodes, num_envs=cfg.num_envs,
                                     seed=PRETRAIN_EVAL_SEED, videos=cfg.videos, out=cfg.out / f"eval_{name}")
            entry.update({k: report[k] for k in ("success_rate", "success_ci95", "n_success", "mean_return",
                                                 "mean_length")})
        results["policies"][name] = entry
    (cfg.out / "summary.json").write_text(json.dumps(results, indent=2))
    if cfg.eval_episodes:
        (cfg.out / "report.md").write_text(render_report(results))
    return results


def render_report(r: dict) -> str:
    rows = "\n".join(
        f"| {name} | {p['n_success']}/{r['eval_episodes']} ({p['success_rate']:.0%}) | [{p['success_ci95'][0]:.0%}, {p['success_ci95'][1]:.0%}] | "
        f"{p['mean_return']:.2f} | {p['mean_length']:.1f} |"
        for name, p in r["policies"].items())
    return (f"# {r['task']}: BC vs PostBC before finetuning\n\n"
            f"{r['demos']} scripted demonstrations (scripted operator success rate {r['demo_success_rate']:.0%}), "
            f"seed {r['seed']}, PostBC alpha {r['alpha']}. Evaluation episodes use seeds {PRETRAIN_EVAL_SEED}+ "
            "(unseen initial states).\n\n| policy | success | Wilson 95% | mean return | mean length |\n"
            f"|---|---|---|---|---|\n{rows}\n\nThe paper's claim at this stage: PostBC is about as good as BC before "
            "finetuning; its benefit shows during RL finetuning (`postbc pipeline`).\n")


def summary_line(r: dict) -> str:
    parts = [f"{name} {p['success_rate']:.0%} [{p['success_ci95'][0]:.0%}, {p['success_ci95'][1]:.0%}]"
             for name, p in r["policies"].items()]
    return f"{r['task']} after {r['demos']} demos: " + ", ".join(parts)
