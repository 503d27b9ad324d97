"""`postbc train` configuration: one flat dataclass (the CLI is generated from it by tyro)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from postbc_core.errors import ConfigError, check_seed


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
    n_obs_steps: int = 1
    """To: observation history length."""
    action_horizon: int = 4
    """Ta: action chunk length (paper: 4 state-based, 1 WidowX)."""

    obs_std_floor: float = 0.1
    """Normalizer floor: each low-dim observation feature's std is raised to at least this fraction of the largest std
    among its key's features, so features that barely vary in the demonstrations (a cube's tilt) are not amplified
    hundreds of times (0 = plain z-score)."""
    obs_clip: float = 5.0
    """The policy clips its normalized observations to +-this many training-data standard deviations, at training
    and at run time, and counts and logs every clipped observation at run time (0 = no clipping)."""

    # PostBC
    alpha: float = 1.0
    """Posterior noise weight: targets a + alpha * L(s) z (paper 0.25..4, default 1). 0 = plain BC (no ensemble)."""
    perturbation: Literal["posterior", "isotropic"] = "posterior"
    """'posterior' = PostBC; 'isotropic' = the sigma-BC baseline: the same average noise magnitude for every state."""
    ensemble_size: int = 10
    """K ensemble members (paper: 100 Robomimic, 10 WidowX, 5 Libero)."""
    ensemble_hidden: tuple[int, ...] = (512, 512, 512)
    """Ensemble MLP head widths (paper: 3 x 512)."""
    ensemble_head: Literal["mse", "gaussian"] = "mse"
    """Deterministic (MSE) or Gaussian (NLL) members; the covariance is over the members' means either way."""
    bootstrap: Literal["trajectory", "state_action"] = "trajectory"
    """Resample whole demonstrations (default) or individual windows for each member."""
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

    # Diffusion policy
    noise_net: Literal["mlp", "unet"] = "mlp"
    """Denoiser: 'mlp' (state policies) or 'unet' (diffusion_policy's 1-D U-Net; image policies)."""
    mlp_hidden: tuple[int, ...] = (256, 256, 256)
    """MLP denoiser widths (3 x 256 with lr 3e-4 is the measured lift_cube recipe: 87 % with 20 demos at 10k-20k
    steps; the same data at 3 x 512, lr 1e-4, 20k steps gave 78 vs 89 of 100 paired episodes, 2 seeds)."""
    unet_down_dims: tuple[int, ...] = (256, 512, 1024)
    """U-Net widths (paper, WidowX: 256, 512, 1024)."""
    unet_kernel_size: int = 5
    """U-Net kernel size."""
    num_train_timesteps: int = 100
    """DDPM training steps (paper: 100)."""
    num_inference_steps: int = 8
    """DDIM inference steps (paper: 8 state, 16 WidowX)."""
    steps: int = 20000
    """Gradient steps for the diffusion policy."""
    batch_size: int = 256
    """Windows per step (per rank under torchrun)."""
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
            self.lr = 3e-4 if self.noise_net == "mlp" else 1e-4
        # inf / nan pass every range check below ("inf > 0") and would only show up as a non-finite loss mid-run
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        check_seed(self.seed)
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        for name in ("n_obs_steps", "action_horizon", "ensemble_steps", "ensemble_batch_size", "steps", "batch_size",
                     "num_train_timesteps", "num_inference_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.obs_keys:
            raise ConfigError("--obs-keys is required (e.g. --obs-keys joint_pos gripper_pos); "
                              "`postbc data info DATASET` lists the keys")
        repeated = [k for k, n in Counter(self.obs_keys).items() if n > 1]
        if repeated:
            raise ConfigError(f"--obs-keys names {', '.join(map(repr, repeated))} more than once (the policy would "
                              "see the key twice); give each key once")
        if self.alpha < 0 or self.alpha != self.alpha:
            raise ConfigError(f"--alpha must be >= 0 (0 = BC; paper: 0.25..4), got {self.alpha}")
        if self.alpha > 0 and self.ensemble_size < 2:
            raise ConfigError(f"--ensemble-size must be >= 2 to estimate a covariance, got {self.ensemble_size}")
        if not 0.0 <= self.val_ratio < 1.0:
            raise ConfigError(f"--val-ratio must be in [0, 1), got {self.val_ratio}")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError(f"--num-inference-steps ({self.num_inference_steps}) cannot exceed "
                              f"--num-train-timesteps ({self.num_train_timesteps})")
        if not 0.0 <= self.ema_max_decay < 1.0:
            raise ConfigError(f"--ema-max-decay must be in [0, 1), got {self.ema_max_decay}")
        if not 0.0 <= self.obs_std_floor <= 1.0:
            raise ConfigError(f"--obs-std-floor must be in [0, 1] (a fraction of the key's largest std), got "
                              f"{self.obs_std_floor}")
        if not self.obs_clip >= 0:
            raise ConfigError(f"--obs-clip must be >= 0 (0 disables clipping), got {self.obs_clip}")
        if self.save_every < 0 or self.warmup_steps < 0 or self.cov_jitter <= 0:
            raise ConfigError("--save-every and --warmup-steps must be >= 0 and --cov-jitter > 0")

    @property
    def is_bc(self) -> bool:
        return self.alpha == 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
