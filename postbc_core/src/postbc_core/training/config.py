"""`postbc train` configuration: the run's dataclass, composing the policy's settings (the CLI is generated from it
by tyro, the policy's flags unprefixed, so each flag and default is declared once, in the dataclass that owns it)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from postbc_core.errors import ConfigError, check_seed
from postbc_core.policies.settings import PolicySettings


@dataclass
class TrainConfig:
    """Train the bootstrap ensemble, its posterior covariance, and a (Post)BC diffusion policy from an episode store."""

    dataset: Path
    """Episode store (.zarr) to train on."""
    out: Path = Path("runs/train")
    """Run directory: policy.safetensors, ensemble.safetensors, train_config.json, tb/ (TensorBoard), metrics.jsonl.
    Must be empty or absent unless --overwrite."""
    overwrite: bool = False
    """Replace the run in a non-empty --out (its checkpoints, metrics, tb/ are removed first; other files stay)."""
    obs_keys: tuple[str, ...] = ()
    """Observation keys from data/ (low-dim vectors and/or (H, W, 3) uint8 RGB). Required."""
    action_key: str = "action"
    """Action key from data/."""
    image_size: tuple[int, int] | None = None
    """(H, W) px every camera key (<camera>_rgb) is trained at: frames are resized as the store is read (INTER_AREA,
    robots.observation.resize_image, what `postbc eval` and the ROS nodes apply too), so RAM holds the training
    resolution; the checkpoint records both sizes. Keep the store's aspect ratio (640x480 -> --image-size 96 128 or
    120 160; a squash is refused). Default: the stored resolution."""

    obs_std_floor: float = 0.1
    """Normalizer floor: each low-dim observation feature's std is raised to at least this fraction of the largest std
    among its key's features, so features that barely vary in the demonstrations (a cube's tilt) are not amplified
    hundreds of times (0 = plain z-score)."""

    # PostBC
    alpha: float = 0.5
    """Posterior noise weight: targets a + alpha * L(s) z (paper: 0.25..4). 0 = plain BC (no ensemble). 0.5: on
    lift_cube it pretrains at BC's level from ~20 demos and keeps the coverage property, which at 0.25 is nearly gone;
    with 10 demos it pretrains well below BC, the paper's 1 further (lift_cube: 58 % and 42 % vs BC 81 %; README
    "PostBC at 10 demos")."""
    perturbation: Literal["posterior", "isotropic"] = "posterior"
    """'posterior' = PostBC; 'isotropic' = the sigma-BC baseline: the same average noise magnitude for every state."""
    posterior_mix: float = 1.0
    """Fraction of training targets that get the posterior perturbation; the others stay the demonstrated action, so
    the policy fits the mixture (1 - mix) BC + mix posterior (the paper's App. B.3 form). 1 = every target."""
    sample_clip: Literal["data", "posterior"] = "posterior"
    """DDIM x0 clip of a PostBC checkpoint: 'data' = +-1, the demonstrated action range, as BC and the reference DSRL /
    DPPO samplers clip; 'posterior' = widened to 1 + 3 alpha x the largest posterior std, so no perturbed target is
    cut off."""
    ensemble_size: int = 10
    """K ensemble members (paper: 100 Robomimic, 10 WidowX, 5 Libero)."""
    ensemble_hidden: tuple[int, ...] = (512, 512, 512)
    """Ensemble MLP head widths (paper: 3 x 512)."""
    ensemble_head: Literal["mse", "gaussian"] = "mse"
    """Deterministic (MSE) or Gaussian (NLL) members; the covariance is over the members' means either way."""
    bootstrap: Literal["trajectory", "state_action"] = "trajectory"
    """Each member resamples whole demonstrations (default, the paper's) or individual windows. Whole demonstrations
    are what gives the posterior its coverage property: at a state seen by few demos, the members that left them out
    disagree. With few demos that is nearly every state, so the perturbation is large everywhere; windows halve it
    and pretrain higher but lose the coverage property (README "PostBC at 10 demos")."""
    covariance: Literal["full", "diagonal"] = "full"
    """Full covariance of the action chunk (default) or its diagonal."""
    cov_jitter: float = 1e-6
    """Diagonal jitter for the Cholesky factorization (raised x10 per retry where needed, with a log line)."""
    ensemble_steps: int = 3000
    """Gradient steps for the ensemble."""
    ensemble_batch_size: int = 256
    """Windows per member per step."""
    ensemble_lr: float = 1e-3
    """Ensemble learning rate (AdamW)."""
    ensemble_encoder: Literal["per_member", "shared"] = "per_member"
    """Image policies: every member owns an image encoder (the paper's ensemble: K encoders trained) or all members
    share one, trained by every member's loss, each member a head on its features (one encoder pass per step instead
    of K). Shared: each step draws one batch of --ensemble-batch-size windows and weights it by each member's
    bootstrap multiplicities; single process only."""

    # Diffusion policy
    policy: Annotated[PolicySettings, tyro.conf.OmitArgPrefixes] = field(default_factory=PolicySettings)
    """The policy's settings, recorded in its checkpoint (their flags carry no prefix: --n-obs-steps, --mlp-hidden)."""
    steps: int = 20000
    """Gradient steps for the diffusion policy."""
    batch_size: int = 256
    """Windows per step (per rank under torchrun). Image policies: diffusion_policy trains them at 64; at 64 on a
    2-core CPU one step with two 84 px cameras and the MLP denoiser took 2.2 s with ResNet-18 and 0.33 s with
    --image-encoder conv (benchmarks/results/image_training_cpu.json); the time grows about linearly with the batch."""
    lr: float | None = None
    """Diffusion policy learning rate (AdamW). Default: 3e-4 for the MLP denoiser (measured, see --mlp-hidden), 1e-4
    for the U-Net (diffusion_policy's image-policy default)."""
    weight_decay: float = 1e-6
    """AdamW weight decay (diffusion_policy's default)."""
    warmup_steps: int = 500
    """Linear learning-rate warm-up, then cosine decay."""
    ema_power: float = 0.75
    """EMA warm-up power (diffusion_policy's EMAModel)."""
    ema_max_decay: float = 0.9999
    """EMA decay ceiling."""

    # Run
    val_ratio: float = 0.0
    """Fraction of episodes held out for validation loss (split by episode; at least one when > 0)."""
    seed: int = 0
    """Seeds data order, bootstrap resamples, initialisation and target noise."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'."""
    log_every: int = 100
    """Steps between log lines / TensorBoard points."""
    save_every: int = 0
    """Steps between intermediate policy checkpoints (0 = only the final one)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        self.dataset = Path(self.dataset)
        self.out = Path(self.out)
        self.obs_keys = tuple(self.obs_keys)
        if self.lr is None:
            self.lr = 3e-4 if self.policy.noise_net == "mlp" else 1e-4
        # inf / nan pass every range check below ("inf > 0") and would only show up as a non-finite loss mid-run
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        check_seed(self.seed)
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        self.policy.check(as_flags=True)
        for name in ("ensemble_steps", "ensemble_batch_size", "steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.obs_keys:
            raise ConfigError("--obs-keys is required (e.g. --obs-keys joint_pos gripper_pos); "
                              "`postbc data info DATASET` lists the keys")
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
            if len(self.image_size) != 2 or min(self.image_size) < 8:
                raise ConfigError(f"--image-size {' '.join(map(str, self.image_size))}: give H W, each at least 8 px "
                                  "(e.g. --image-size 96 128 for 640x480 cameras)")
        repeated = [k for k, n in Counter(self.obs_keys).items() if n > 1]
        if repeated:
            raise ConfigError(f"--obs-keys names {', '.join(map(repr, repeated))} more than once (the policy would "
                              "see the key twice); give each key once")
        if self.alpha < 0 or self.alpha != self.alpha:
            raise ConfigError(f"--alpha must be >= 0 (0 = BC; paper: 0.25..4), got {self.alpha}")
        if not 0.0 < self.posterior_mix <= 1.0:
            raise ConfigError(f"--posterior-mix must be in (0, 1] (the fraction of perturbed targets; --alpha 0 is "
                              f"plain BC), got {self.posterior_mix}")
        if self.alpha > 0 and self.ensemble_size < 2:
            raise ConfigError(f"--ensemble-size must be >= 2 to estimate a covariance, got {self.ensemble_size}")
        if self.ensemble_encoder not in ("per_member", "shared"):
            raise ConfigError(f"--ensemble-encoder {self.ensemble_encoder!r}: choose per_member or shared")
        if not 0.0 <= self.val_ratio < 1.0:
            raise ConfigError(f"--val-ratio must be in [0, 1), got {self.val_ratio}")
        if not 0.0 <= self.ema_max_decay < 1.0:
            raise ConfigError(f"--ema-max-decay must be in [0, 1), got {self.ema_max_decay}")
        if not 0.0 <= self.obs_std_floor <= 1.0:
            raise ConfigError(f"--obs-std-floor must be in [0, 1] (a fraction of the key's largest std), got "
                              f"{self.obs_std_floor}")
        if self.save_every < 0 or self.warmup_steps < 0 or self.cov_jitter <= 0:
            raise ConfigError("--save-every and --warmup-steps must be >= 0 and --cov-jitter > 0")

    @property
    def is_bc(self) -> bool:
        return self.alpha == 0.0

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "TrainConfig":
        """The inverse of to_dict (a run's train_config.json), with `overrides` applied: retrain a run with one
        setting changed. Fields this version does not know are refused, not dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"train_config.json names settings this version does not have: {', '.join(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in {**d, **overrides}.items()}
        if isinstance(kw.get("policy"), dict):
            kw["policy"] = PolicySettings(**{k: tuple(v) if isinstance(v, list) else v
                                             for k, v in kw["policy"].items()})
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-ready (train_config.json): paths as strings; the policy settings nested under "policy"."""
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
