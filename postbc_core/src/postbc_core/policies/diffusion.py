"""Diffusion policy shared by BC and PostBC (they differ only in the training targets).

Two verbs (diffusion_policy's convention): `compute_loss(batch)` for training and `predict_action(obs)` for acting.
The normalizer is a submodule, so its statistics travel with the weights.

PostBC (arXiv 2512.16911): every time a training target is drawn it is perturbed,
    a~ = a + alpha * L(s) z,   z ~ N(0, I),   L(s) L(s)^T = Sigma(s),
where Sigma(s) is the ensemble's posterior covariance of the action chunk at that training state. Scaling convention
(the paper's exact one was not recoverable): alpha multiplies the posterior *standard deviation*, i.e.
a~ ~ N(a, alpha^2 Sigma(s)); the perturbation is applied in the policy's normalized action space, which is the same
as perturbing raw actions with the raw-space covariance because the normalizer is affine per dimension. alpha = 0 is
plain BC through the same code path.

Shape legend: B batch, S samples per observation, To obs steps, Ta action steps, Da action dim, D = Ta * Da.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from postbc_core.data.normalizer import LinearNormalizer
from postbc_core.errors import ConfigError
from postbc_core.models.noise_nets import ConditionalUnet1D, MLPNoiseNet
from postbc_core.models.obs_encoder import ObsEncoder, is_rgb_shape
from postbc_core.policies.schedulers import BETA_SCHEDULES, NoiseSchedule
from postbc_core.policies.settings import PolicySettings

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PolicyConfig(PolicySettings):
    """Architecture of a diffusion policy (everything needed to rebuild it from a checkpoint): the settings a training
    run chooses (`PolicySettings`, the one home of their defaults) plus what the data determine and what `postbc
    train` fixes or derives. Stored flat in the checkpoint (`to_dict`)."""

    obs_shapes: dict[str, tuple[int, ...]]
    """Per-step shape of every observation key; (H, W, 3) uint8 keys are RGB images."""
    action_dim: int
    """Da: flattened per-step action size."""
    rgb_feature_dim: int = 512
    """Feature size of each camera's image encoder (`image_encoder`)."""
    crop_ratio: float = 0.9
    """Random-crop fraction for image augmentation during training (center crop at inference)."""
    beta_schedule: str = "squaredcos_cap_v2"
    """Noise schedule (diffusion_policy's default)."""
    clip_sample_range: float = 1.0
    """DDIM clips its x0 estimate to +-this in normalized action units: 1 (the data range) for BC; PostBC widens it
    to cover its perturbed targets (training/train.py, `sample_range_for`), so the posterior noise it was trained on
    is not cut off when sampling."""

    def __post_init__(self):
        super().__post_init__()
        self.obs_shapes = {k: tuple(int(d) for d in v) for k, v in self.obs_shapes.items()}
        if not self.obs_shapes:
            raise ConfigError("obs_shapes is empty: pass at least one observation key (e.g. --obs-keys joint_pos)")
        self.check()
        if self.action_dim < 1:
            raise ConfigError(f"action_dim must be >= 1, got {self.action_dim}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if not 0.1 <= self.crop_ratio <= 1.0:
            raise ConfigError(f"crop_ratio must be in [0.1, 1], got {self.crop_ratio}")
        if not self.clip_sample_range >= 1.0:
            raise ConfigError(f"clip_sample_range must be >= 1 (the normalized data range), got "
                              f"{self.clip_sample_range}")

    @property
    def rgb_keys(self) -> list[str]:
        return [k for k, s in self.obs_shapes.items() if is_rgb_shape(s)]

    @property
    def lowdim_keys(self) -> list[str]:
        return [k for k, s in self.obs_shapes.items() if not is_rgb_shape(s)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["obs_shapes"] = {k: list(v) for k, v in self.obs_shapes.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"policy config has unknown fields {sorted(unknown)}; the checkpoint was written by a "
                              "newer postbc_core: upgrade it")
        return cls(**dict(d))


@dataclass
class TargetNoise:
    """Per-sample PostBC perturbation of the flattened normalized action chunk.

    chol: (B, D, D) lower-triangular factor of Sigma(s) (full covariance), or (B, D) standard deviations (diagonal).
    """

    chol: torch.Tensor
    alpha: float = 1.0
    mix: float = 1.0
    """Probability that a target is perturbed; the rest stay the demonstrated action, so the policy fits the mixture
    (1 - mix) pi_BC + mix pi_post (the paper's App. B.3 form of the PostBC policy). 1 = every target perturbed."""

    def sample(self, naction_flat: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Returns a~ = a + alpha * m * L z with a fresh z (B, D) and m ~ Bernoulli(mix) per sample (B,)."""
        z = torch.randn(naction_flat.shape, device=naction_flat.device, dtype=naction_flat.dtype,
                        generator=generator)
        if self.chol.dim() == 3:
            delta = torch.einsum("bij,bj->bi", self.chol, z)
        else:
            delta = self.chol * z
        if self.mix < 1.0:
            keep = torch.rand(naction_flat.shape[0], device=naction_flat.device, generator=generator) < self.mix
            delta = delta * keep.to(delta.dtype).unsqueeze(-1)
        return naction_flat + self.alpha * delta


class DiffusionPolicy(nn.Module):
    """Observation-conditioned DDPM over normalized action chunks (B, Ta, Da)."""

    def __init__(self, config: PolicyConfig, normalizer: LinearNormalizer | None = None):
        super().__init__()
        self.config = config
        self.normalizer = normalizer if normalizer is not None else LinearNormalizer()
        self.obs_encoder = ObsEncoder(config.obs_shapes, config.n_obs_steps, rgb_feature_dim=config.rgb_feature_dim,
                                      crop_ratio=config.crop_ratio, image_encoder=config.image_encoder)
        cond_dim = self.obs_encoder.output_dim
        if config.noise_net == "mlp":
            self.noise_net = MLPNoiseNet(config.action_dim, config.action_horizon, cond_dim,
                                         hidden_dims=config.mlp_hidden)
        else:
            self.noise_net = ConditionalUnet1D(config.action_dim, cond_dim, down_dims=config.unet_down_dims,
                                               kernel_size=config.unet_kernel_size)
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.beta_schedule,
                                      clip_sample_range=config.clip_sample_range)
        self.action_key = "action"  # normalizer key of the action; set by the trainer when fitting
        self.obs_clip_counts: dict[str, int] = {}
        """Per low-dim key: observations (batch rows) that had at least one feature clipped at inference."""
        self.obs_count = 0
        """Observations (batch rows) the policy acted on (inference only)."""

    # -- helpers ---------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return self.config.action_horizon, self.config.action_dim

    def set_sample_range(self, clip_sample_range: float) -> None:
        """The DDIM clip range (normalized action units, >= 1); recorded in the config so checkpoints keep it."""
        self.config.clip_sample_range = float(clip_sample_range)
        self.config.__post_init__()
        self.schedule.clip_sample_range = self.config.clip_sample_range

    def normalize_obs(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Low-dim keys through the normalizer, then clipped to +-obs_clip; RGB keys pass through (the encoder
        scales uint8 images). Outside training every clipped observation is counted and logged, because it means
        the robot sees a state its demonstrations never showed."""
        out = {}
        clip = self.config.obs_clip
        rgb = self.config.rgb_keys
        counting = not self.training
        for k in self.config.obs_shapes:
            x = obs[k]
            if k in rgb:
                out[k] = x
                continue
            nx = self.normalizer.normalize(k, x.float())
            if clip > 0:
                if counting:
                    self._count_clipped(k, nx, clip)
                nx = nx.clamp(-clip, clip)
            out[k] = nx
        if counting:
            self.obs_count += int(next(iter(obs.values())).shape[0])
        return out

    def _count_clipped(self, key: str, nx: torch.Tensor, clip: float) -> None:
        over = nx.abs() > clip  # (B, To, *shape)
        rows = over.flatten(1).any(1)
        n = int(rows.sum())
        if not n:
            return
        before = self.obs_clip_counts.get(key, 0)
        self.obs_clip_counts[key] = before + n
        # The first clipped observation per key, then every 100th: enough to see it in a log without flooding it.
        if before == 0 or (before + n) // 100 > before // 100:
            worst = nx.abs().flatten(1)[rows].max(1)
            flat = worst.values.argmax()
            feature = int(worst.indices[flat])
            log.warning("policy input %r feature %d is %.1f training-data standard deviations out (clipped to %g; %d "
                        "clipped observation(s) of %r so far): the robot is in a state its demonstrations never "
                        "showed", key, feature, float(worst.values[flat]), clip, before + n, key)

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """obs[key] (B, To, *shape) raw -> conditioning features (B, F)."""
        return self.obs_encoder(self.normalize_obs(obs))

    # -- training --------------------------------------------------------------------------------------------------
    def compute_loss(self, batch: Mapping, target_noise: TargetNoise | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising loss. batch = {"obs": {key: (B, To, ...)}, "action": (B, Ta, Da)} in raw units."""
        naction = self.normalizer.normalize(self.action_key, batch["action"].float())
        B = naction.shape[0]
        if target_noise is not None and target_noise.alpha != 0.0:
            naction = target_noise.sample(naction.reshape(B, -1), generator).reshape(naction.shape)
        cond = self.encode_obs(batch["obs"])
        noise = torch.randn(naction.shape, device=naction.device, generator=generator)
        t = self.schedule.sample_timesteps(B, naction.device, generator)
        noisy = self.schedule.add_noise(naction, noise, t)
        pred = self.noise_net(noisy, t, cond)
        return torch.nn.functional.mse_loss(pred, noise)

    # -- inference -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_normalized(self, cond: torch.Tensor, noise: torch.Tensor,
                          num_inference_steps: int | None = None) -> torch.Tensor:
        """Deterministic DDIM from initial noise (B, Ta, Da) given features (B, F) -> normalized chunk (B, Ta, Da)."""
        steps = num_inference_steps or self.config.num_inference_steps
        return self.schedule.ddim_sample(lambda x, t: self.noise_net(x, t, cond), noise, steps)

    @torch.no_grad()
    def predict_action_torch(self, obs: Mapping[str, torch.Tensor], noise: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """obs[key] (B, To, *shape) tensors -> action chunk (B, Ta, Da) in raw units. noise: (B, Ta, Da) or None."""
        cond = self.encode_obs(obs)
        B = cond.shape[0]
        if noise is None:
            noise = torch.randn((B, *self.chunk_shape), device=cond.device, generator=generator)
        naction = self.sample_normalized(cond, noise.to(cond.device, torch.float32))
        return self.normalizer.unnormalize(self.action_key, naction)

    # inference_mode (not no_grad): ~30% less per-op overhead at batch 1, and the result leaves as numpy, so no
    # inference tensor can leak into a later autograd graph.
    @torch.inference_mode()
    def predict_action(self, obs: Mapping[str, np.ndarray], noise: np.ndarray | torch.Tensor | None = None,
                       num_samples: int = 1) -> np.ndarray:
        """Samples action chunks for one observation or a batch.

        obs[key]: (To, *shape) for one observation or (B, To, *shape) for a batch (RGB: uint8 (..., H, W, 3)).
        noise: initial DDIM noise in the normalized action space, shaped like the output; given the same noise the
            result is deterministic (DSRL steers the policy through it). None draws N(0, I).
        Returns float32 (Ta, Da) | (S, Ta, Da) for one observation, (B, Ta, Da) | (B, S, Ta, Da) for a batch
        (S = num_samples, only present when > 1).
        """
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        tobs, batched = self._obs_to_tensors(obs)
        B = next(iter(tobs.values())).shape[0]
        S = num_samples
        if S > 1:  # (B, ...) -> (B*S, ...): each sample gets its own noise
            tobs = {k: v.repeat_interleave(S, dim=0) for k, v in tobs.items()}
        # The caller's shape: batch and sample axes only where present.
        user_shape = (B,) * batched + (S,) * (S > 1) + self.chunk_shape
        tnoise = None
        if noise is not None:
            tnoise = noise if torch.is_tensor(noise) else torch.as_tensor(np.asarray(noise))
            tnoise = tnoise.to(torch.float32)
            if tuple(tnoise.shape) != user_shape:
                raise ConfigError(f"noise has shape {tuple(tnoise.shape)}, expected {user_shape} "
                                  f"([batch], [samples], Ta={self.config.action_horizon}, Da={self.config.action_dim})")
            if not torch.isfinite(tnoise).all():
                raise ConfigError("noise contains NaN/inf")
            tnoise = tnoise.reshape(B * S, *self.chunk_shape).to(self.device)
        actions = self.predict_action_torch(tobs, noise=tnoise).reshape(user_shape)
        return actions.cpu().numpy().astype(np.float32)

    def _obs_to_tensors(self, obs: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], bool]:
        cfg = self.config
        missing = [k for k in cfg.obs_shapes if k not in obs]
        if missing:
            raise ConfigError(f"observation is missing keys {missing}; the policy expects {list(cfg.obs_shapes)}")
        out, batched = {}, None
        for k, shape in cfg.obs_shapes.items():
            x = obs[k]
            x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
            full = (cfg.n_obs_steps, *shape)
            if tuple(x.shape) == full:
                b = False
                x = x.unsqueeze(0)
            elif x.dim() == len(full) + 1 and tuple(x.shape[1:]) == full:
                b = True
            else:
                raise ConfigError(f"observation {k!r} has shape {tuple(x.shape)}; expected {full} "
                                  f"(To={cfg.n_obs_steps}, per-step {shape}) or (B, *{full})")
            if batched is not None and b != batched:
                raise ConfigError("observation keys mix batched and unbatched shapes")
            batched = b
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise ConfigError(f"observation {k!r} contains NaN/inf; refusing to act on it")
            out[k] = x.to(self.device)
        return out, bool(batched)
