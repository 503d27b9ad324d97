"""Fit the diffusion policy with the denoising loss on (optionally) posterior-perturbed targets.

Under torchrun the policy is wrapped in DistributedDataParallel (gradients all-reduced; each rank draws its own
batches), so every rank holds identical weights and EMA weights; the main rank writes checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from postbc_core.policies.diffusion import TargetNoise
from postbc_core.runlog import RunLogger
from postbc_core.training.batches import to_torch
from postbc_core.training.distributed import DistInfo
from postbc_core.training.ema import EMA
from postbc_core.training.loop import LoopConfig, run_loop
from postbc_core.training.posterior import Posterior

VAL_EVERY = 1000  # steps between validation losses (each is a full pass over the held-out windows)


class _LossModule(nn.Module):
    """DDP hooks gradient sync into forward(); compute_loss is routed through it."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, batch, target_noise, generator=None):
        return self.policy.compute_loss(batch, target_noise, generator)


@torch.no_grad()
def validation_loss(policy, dataset, device, batch_size: int = 256, seed: int = 0) -> float:
    """Unperturbed denoising loss on held-out windows (fixed noise draws, so values are comparable over time)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for s in range(0, len(dataset), batch_size):
        idx = np.arange(s, min(s + batch_size, len(dataset)))
        batch = to_torch(dataset.get_batch(idx), device)
        total += float(policy.compute_loss(batch, None, gen)) * len(idx)
        n += len(idx)
    return total / max(n, 1)


def fit_policy(policy, dataset, posterior: Posterior | None, cfg, dist: DistInfo, logger: RunLogger,
               val_dataset=None, save_fn: Callable[[object, int], Path] | None = None) -> EMA:
    """Trains `policy` in place; returns the EMA (its `.model` is what gets deployed)."""
    policy.to(dist.device).train()
    ema = EMA(policy, power=cfg.ema_power, max_value=cfg.ema_max_decay)
    module: nn.Module = _LossModule(policy)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    rng = np.random.default_rng(cfg.seed + 1 + dist.rank)
    gen = torch.Generator(device=dist.device).manual_seed(cfg.seed + 2 + dist.rank)
    factor = posterior.factor.to(dist.device) if posterior is not None else None
    alpha = cfg.alpha

    def step(_: int) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, len(dataset), cfg.batch_size)
        batch = to_torch(dataset.get_batch(idx), dist.device)
        noise = (TargetNoise(factor[torch.from_numpy(idx).to(dist.device)], alpha, cfg.posterior_mix)
                 if factor is not None else None)
        return {"loss": module(batch, noise, gen)}

    def after_step(step_no: int) -> None:
        ema.update(policy)
        # Validation every VAL_EVERY steps and at the end; intermediate checkpoints every save_every steps.
        if val_dataset is not None and len(val_dataset) and dist.is_main and (
                step_no % VAL_EVERY == 0 or step_no == cfg.steps):
            logger.scalars("policy_val", step_no, {"loss": validation_loss(ema.model, val_dataset, dist.device)})
        if save_fn is not None and cfg.save_every and step_no % cfg.save_every == 0 and step_no < cfg.steps:
            save_fn(ema.model, step_no)

    loop = LoopConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      warmup_steps=min(cfg.warmup_steps, cfg.steps // 10), log_every=cfg.log_every,
                      fused_adam=bool(policy.config.rgb_keys))
    run_loop(policy.parameters(), step, loop, logger, tag="policy", after_step=after_step)
    return ema
