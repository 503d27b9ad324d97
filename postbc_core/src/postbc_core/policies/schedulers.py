"""DDPM training noise and deterministic DDIM sampling.

Semantics follow diffusers' `DDPMScheduler`/`DDIMScheduler` as configured by diffusion_policy
(beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", clip_sample=True, set_alpha_to_one=True,
steps_offset=0, "leading" timestep spacing, eta=0); tests check the numbers against diffusers itself.
We keep our own copy because the sampler must be stateless and tensor-only: DSRL maps a given initial noise
deterministically to an action chunk many thousand times per second, and the loop must be capturable by CUDA
graphs / torch.compile, which diffusers' stateful `set_timesteps`/`step` objects are not.

Shapes: B batch, Ta action steps, Da action dim. Actions live in the normalized space [-1, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from postbc_core.errors import ConfigError

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")


def make_betas(num_train_timesteps: int, schedule: str = "squaredcos_cap_v2",
               beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Variance schedule (T,) float64."""
    if schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021 cosine schedule, betas capped at 0.999 (diffusers' betas_for_alpha_bar).
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_timesteps
        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float64)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    raise ConfigError(f"unknown beta_schedule {schedule!r}; choose one of {BETA_SCHEDULES}")


class NoiseSchedule:
    """Forward process q(x_t | x_0) and the DDIM reverse process for an epsilon-predicting network."""

    def __init__(self, num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                 clip_sample: bool = True, clip_sample_range: float = 1.0):
        if num_train_timesteps < 1:
            raise ConfigError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        betas = make_betas(num_train_timesteps, beta_schedule)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (T,) float64
        self._ddim_cache: dict[int, list[tuple[int, float, float, float, float]]] = {}

    # -- training -----------------------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise (B, ...), t (B,) long."""
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
        abar = abar.view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def sample_timesteps(self, batch_size: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch_size,), device=device, generator=generator)

    # -- inference ------------------------------------------------------------------------------------------------
    def ddim_timesteps(self, num_inference_steps: int) -> list[int]:
        """diffusers' "leading" spacing: e.g. T=100, 8 steps -> [84, 72, ..., 0]."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ConfigError(f"num_inference_steps must be in [1, {self.num_train_timesteps}] "
                              f"(num_train_timesteps), got {num_inference_steps}")
        ratio = self.num_train_timesteps // num_inference_steps
        return [i * ratio for i in reversed(range(num_inference_steps))]

    def ddim_coefficients(self, num_inference_steps: int) -> list[tuple[int, float, float, float, float]]:
        """Per step (t, sqrt(abar_t), sqrt(1-abar_t), sqrt(abar_prev), sqrt(1-abar_prev)) as Python floats."""
        if num_inference_steps in self._ddim_cache:
            return self._ddim_cache[num_inference_steps]
        ratio = self.num_train_timesteps // num_inference_steps
        out = []
        for t in self.ddim_timesteps(num_inference_steps):
            abar_t = float(self.alphas_cumprod[t])
            prev = t - ratio
            abar_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else 1.0  # set_alpha_to_one
            out.append((t, math.sqrt(abar_t), math.sqrt(1 - abar_t), math.sqrt(abar_prev), math.sqrt(1 - abar_prev)))
        self._ddim_cache[num_inference_steps] = out
        return out

    def ddim_sample(self, eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_T: torch.Tensor,
                    num_inference_steps: int) -> torch.Tensor:
        """Deterministic DDIM (eta = 0): the same x_T always gives the same x_0.

        eps_fn(x_t (B, Ta, Da), t (B,) long) -> predicted noise (B, Ta, Da).
        """
        x = x_T
        B = x.shape[0]
        for t, a_t, s_t, a_prev, s_prev in self.ddim_coefficients(num_inference_steps):
            tt = torch.full((B,), t, dtype=torch.long, device=x.device)
            eps = eps_fn(x, tt)
            x0 = (x - s_t * eps) / a_t
            if self.clip_sample:
                x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
            # diffusers' DDIM keeps the network's epsilon for the direction term (use_clipped_model_output=False).
            x = a_prev * x0 + s_prev * eps
        return x
