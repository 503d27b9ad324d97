"""Exponential moving average of weights with diffusion_policy's warm-up schedule
(`EMAModel`: decay = 1 - (1 + step / inv_gamma) ** -power, clipped to [min_value, max_value])."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, power: float = 0.75, inv_gamma: float = 1.0, max_value: float = 0.9999,
                 min_value: float = 0.0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma, self.max_value, self.min_value = power, inv_gamma, max_value, min_value
        self.step = 0

    def decay(self) -> float:
        value = 1 - (1 + self.step / self.inv_gamma) ** -self.power
        return 0.0 if self.step <= 0 else min(max(value, self.min_value), self.max_value)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        ema_p = [p for p in self.model.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        # lerp towards the live weights by (1 - decay); buffers (normalizer stats, schedules) are copied.
        torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.step += 1
