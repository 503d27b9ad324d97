"""The settings that shape a diffusion policy and that a training run chooses: the one home of their defaults.

`PolicyConfig` (policies/diffusion.py) extends `PolicySettings` with what the data determine (observation shapes,
action size) and what `postbc train` fixes or derives; `TrainConfig` (training/config.py) composes `PolicySettings`,
so `postbc train --mlp-hidden ...` and a policy built in code share one declaration and one default per value.
Kept free of torch so that building the CLI (`postbc train --help`) does not import it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, get_args

from postbc_core.errors import ConfigError

ImageEncoder = Literal["resnet18", "conv"]


@dataclass(kw_only=True)
class PolicySettings:
    """Observation history, action chunk, input clipping, denoiser and diffusion steps of a (Post)BC policy."""

    n_obs_steps: int = 1
    """To: observation history length."""
    action_horizon: int = 4
    """Ta: action chunk length (paper: 4 state-based, 1 WidowX)."""
    obs_clip: float = 5.0
    """The policy clips its normalized observations to +-this many training-data standard deviations, at training
    and at run time, and counts and logs every clipped observation at run time (0 = no clipping)."""
    noise_net: Literal["mlp", "unet"] = "mlp"
    """Denoiser: 'mlp' (state policies) or 'unet' (diffusion_policy's 1-D U-Net; image policies)."""
    mlp_hidden: tuple[int, ...] = (256, 256, 256)
    """MLP denoiser widths (3 x 256 with lr 3e-4 is the measured lift_cube recipe: 87 % with 20 demos at 10k-20k
    steps; the same data at 3 x 512, lr 1e-4, 20k steps gave 78 vs 89 of 100 paired episodes, 2 seeds)."""
    unet_down_dims: tuple[int, ...] = (256, 512, 1024)
    """U-Net widths (paper, WidowX: 256, 512, 1024)."""
    unet_kernel_size: int = 5
    """U-Net kernel size."""
    image_encoder: ImageEncoder = "resnet18"
    """Per-camera image backbone: 'resnet18' (the paper's; for a GPU) or 'conv' (robomimic's shallow conv stack with
    spatial-softmax keypoints, after Finn et al.'s deep spatial autoencoder: trains on a CPU, see
    benchmarks/results/image_training_cpu.json). Recorded in the checkpoint; the ensemble uses the same."""
    num_train_timesteps: int = 100
    """DDPM training steps (paper: 100)."""
    num_inference_steps: int = 8
    """DDIM inference steps (paper: 8 state, 16 WidowX)."""

    def __post_init__(self):
        self.mlp_hidden = tuple(self.mlp_hidden)
        self.unet_down_dims = tuple(self.unet_down_dims)

    def check(self, as_flags: bool = False) -> None:
        """Raises ConfigError for settings no policy can have. Checked by its users rather than at construction, so
        that each names the value its own way: PolicyConfig by field (`n_obs_steps`), TrainConfig by its
        `postbc train` flag (`--n-obs-steps`; tyro builds this dataclass before TrainConfig could rename an error).
        Covers every float field of `self`, a PolicyConfig's own included."""

        def name(field: str) -> str:
            return f"--{field.replace('_', '-')}" if as_flags else field

        for f in dataclasses.fields(self):  # inf passes the range checks below and surfaces as a non-finite loss
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name(f.name)} must be a finite number, got {value}")
        for field in ("n_obs_steps", "action_horizon", "num_train_timesteps", "num_inference_steps"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{name(field)} must be >= 1, got {getattr(self, field)}")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError(f"{name('num_inference_steps')} ({self.num_inference_steps}) cannot exceed "
                              f"{name('num_train_timesteps')} ({self.num_train_timesteps})")
        if self.noise_net not in ("mlp", "unet"):
            raise ConfigError(f"{name('noise_net')} must be 'mlp' or 'unet', got {self.noise_net!r}")
        if self.image_encoder not in get_args(ImageEncoder):
            raise ConfigError(f"{name('image_encoder')} must be one of {get_args(ImageEncoder)}, got "
                              f"{self.image_encoder!r}")
        if not self.obs_clip >= 0:  # (also refuses NaN)
            raise ConfigError(f"{name('obs_clip')} must be >= 0 (0 disables clipping), got {self.obs_clip}")
