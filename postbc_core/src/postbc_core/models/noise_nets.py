"""Diffusion denoisers (noise-prediction networks) for action chunks.

Shapes: B batch, Ta action steps (the chunk / horizon), Da action dim.
Every net: forward(sample (B, Ta, Da), timestep (B,) int/float tensor or a scalar, global_cond (B, cond_dim))
-> (B, Ta, Da). `global_cond` is the observation feature (ObsEncoder output or flattened normalized state).
- MLPNoiseNet: residual MLP over the flattened chunk, cheap at batch 1 (state policies, DSRL's inner loop).
- ConditionalUnet1D: diffusion_policy's 1-D temporal U-Net with FiLM conditioning (image policies).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from postbc_core.errors import ConfigError, PostBCError

log = logging.getLogger(__name__)


def _timesteps(timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
    """Scalar / (1,) / (B,) timestep -> (B,) float32 on `device`."""
    if isinstance(timestep, (int, float)):  # the DDIM loop's common case: skip as_tensor/reshape/to (~8 us)
        return torch.full((batch,), float(timestep), device=device)
    t = torch.as_tensor(timestep, device=device)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1 or t.shape[0] not in (1, batch):
        raise PostBCError(f"noise net: timestep has shape {tuple(t.shape)}, expected a scalar or ({batch},)")
    return t.to(torch.float32).expand(batch)


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of the diffusion step: (B,) -> (B, dim) = [sin(t w_i), cos(t w_i)]."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ConfigError(f"SinusoidalPosEmb: dim={dim} must be even and >= 4")
        self.dim = dim
        half = dim // 2
        # Frequencies precomputed once (diffusion_policy recomputes them every call: needless ops at batch 1).
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class _ResidualBlock(nn.Module):
    """Pre-norm residual block: x + Linear(Mish(LayerNorm(x))), with a linear skip when the width changes."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.act = nn.Mish()
        self.linear = nn.Linear(d_in, d_out)
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.linear(self.act(self.norm(x)))


class MLPNoiseNet(nn.Module):
    """Residual MLP denoiser over the flattened chunk: cat(sample, time embedding, global_cond) -> eps."""

    def __init__(self, action_dim: int, horizon: int, cond_dim: int, hidden_dims: tuple[int, ...] = (512, 512, 512),
                 time_embed_dim: int = 128):
        super().__init__()
        if action_dim < 1 or horizon < 1 or cond_dim < 0:
            raise ConfigError(f"MLPNoiseNet: action_dim={action_dim}, horizon={horizon} must be >= 1 and "
                              f"cond_dim={cond_dim} >= 0")
        if not hidden_dims or any(h < 1 for h in hidden_dims):
            raise ConfigError(f"MLPNoiseNet: hidden_dims={tuple(hidden_dims)} must be non-empty and all >= 1")
        self.action_dim, self.horizon, self.cond_dim = action_dim, horizon, cond_dim
        # Sinusoidal -> Linear -> Mish. The usual second Linear of the time MLP is left out on purpose: it would
        # feed straight into self.input (also linear), so it adds parameters and latency but no expressiveness.
        self.time_embed = nn.Sequential(
            SinusoidalPosEmb(time_embed_dim), nn.Linear(time_embed_dim, time_embed_dim * 2), nn.Mish())
        self.input = nn.Linear(horizon * action_dim + time_embed_dim * 2 + cond_dim, hidden_dims[0])
        self.blocks = nn.ModuleList(_ResidualBlock(a, b) for a, b in zip(hidden_dims[:-1], hidden_dims[1:]))
        self.out_norm = nn.LayerNorm(hidden_dims[-1])
        self.output = nn.Linear(hidden_dims[-1], horizon * action_dim)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, Ta, Da), timestep (B,) or scalar, global_cond (B, cond_dim) -> (B, Ta, Da)."""
        b = sample.shape[0]
        if tuple(sample.shape[1:]) != (self.horizon, self.action_dim):
            raise PostBCError(f"MLPNoiseNet: sample has shape {tuple(sample.shape)}, expected "
                              f"(B, {self.horizon}, {self.action_dim})")
        # Functional calls instead of submodule __call__s: at batch 1 the per-call overhead is a sizeable share of
        # the ~0.2 ms forward (the 512x512 mat-vecs are memory-bound at ~30 us each), and DDIM calls this 8-16 times.
        pos, lin, _ = self.time_embed
        arg = _timesteps(timestep, b, sample.device)[:, None] * pos.freqs
        temb = F.mish(F.linear(torch.cat((arg.sin(), arg.cos()), dim=-1), lin.weight, lin.bias))
        parts = [sample.reshape(b, -1), temb]
        if self.cond_dim:
            if global_cond is None or tuple(global_cond.shape) != (b, self.cond_dim):
                got = None if global_cond is None else tuple(global_cond.shape)
                raise PostBCError(f"MLPNoiseNet: global_cond has shape {got}, expected ({b}, {self.cond_dim})")
            parts.append(global_cond)
        x = F.linear(torch.cat(parts, dim=-1), self.input.weight, self.input.bias)
        for blk in self.blocks:
            h = F.linear(F.mish(F.layer_norm(x, blk.norm.normalized_shape, blk.norm.weight, blk.norm.bias,
                                             blk.norm.eps)), blk.linear.weight, blk.linear.bias)
            x = (x if isinstance(blk.skip, nn.Identity) else blk.skip(x)) + h
        on = self.out_norm
        x = F.mish(F.layer_norm(x, on.normalized_shape, on.weight, on.bias, on.eps))
        return F.linear(x, self.output.weight, self.output.bias).reshape(b, self.horizon, self.action_dim)


# ---------------- diffusion_policy's ConditionalUnet1D (module names kept for familiarity) ----------------

class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, 'same' padding: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, inp_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(inp_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Downsample1d(nn.Module):
    """Strided conv halving the time axis: (B, C, T) -> (B, C, ceil(T / 2))."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Transposed conv doubling the time axis: (B, C, T) -> (B, C, 2T)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM (per-channel scale and bias from the condition) in between, plus a residual."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int = 3, n_groups: int = 8,
                 cond_predict_scale: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList([
            Conv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups),
            Conv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups)])
        self.cond_predict_scale = cond_predict_scale
        self.out_channels = out_channels
        cond_channels = out_channels * 2 if cond_predict_scale else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cond_channels))
        self.residual_conv = (nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels
                              else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), cond (B, cond_dim) -> (B, C_out, T)."""
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond).unsqueeze(-1)
        if self.cond_predict_scale:
            scale, bias = embed.reshape(embed.shape[0], 2, self.out_channels, 1).unbind(1)
            out = scale * out + bias
        else:
            out = out + embed
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """diffusion_policy's 1-D temporal U-Net; any horizon >= 1.

    The down/up path halves/doubles the time axis len(down_dims)-1 times, so the horizon is padded internally to a
    multiple of 2**(len(down_dims)-1) by repeating the last step (replicate) and the output cropped back.
    """

    def __init__(self, input_dim: int, global_cond_dim: int, down_dims: tuple[int, ...] = (256, 512, 1024),
                 kernel_size: int = 5, n_groups: int = 8, diffusion_step_embed_dim: int = 256,
                 cond_predict_scale: bool = True):
        super().__init__()
        if input_dim < 1 or global_cond_dim < 0:
            raise ConfigError(f"ConditionalUnet1D: input_dim={input_dim} must be >= 1, "
                              f"global_cond_dim={global_cond_dim} >= 0")
        if not down_dims or any(d < 1 or d % n_groups for d in down_dims):
            raise ConfigError(f"ConditionalUnet1D: down_dims={tuple(down_dims)} must be non-empty and each a "
                              f"multiple of n_groups={n_groups} (GroupNorm)")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"ConditionalUnet1D: kernel_size={kernel_size} must be odd ('same' padding)")
        self.input_dim, self.global_cond_dim = input_dim, global_cond_dim
        self.time_multiple = 2 ** (len(down_dims) - 1)
        all_dims = [input_dim, *down_dims]
        start_dim = down_dims[0]
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed))
        cond_dim = dsed + global_cond_dim

        def block(a: int, b: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(a, b, cond_dim, kernel_size=kernel_size, n_groups=n_groups,
                                              cond_predict_scale=cond_predict_scale)

        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        mid_dim = all_dims[-1]
        self.mid_modules = nn.ModuleList([block(mid_dim, mid_dim), block(mid_dim, mid_dim)])
        self.down_modules = nn.ModuleList()
        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= len(in_out) - 1
            self.down_modules.append(nn.ModuleList([
                block(dim_in, dim_out), block(dim_out, dim_out),
                Downsample1d(dim_out) if not is_last else nn.Identity()]))
        self.up_modules = nn.ModuleList()
        for dim_in, dim_out in reversed(in_out[1:]):
            self.up_modules.append(nn.ModuleList([
                block(dim_out * 2, dim_in), block(dim_in, dim_in),
                Upsample1d(dim_in)]))
        self.final_conv = nn.Sequential(
            Conv1dBlock(start_dim, start_dim, kernel_size=kernel_size, n_groups=n_groups),
            nn.Conv1d(start_dim, input_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, Ta, Da), timestep (B,) or scalar, global_cond (B, global_cond_dim) -> (B, Ta, Da)."""
        b, horizon = sample.shape[0], sample.shape[1]
        if sample.dim() != 3 or sample.shape[2] != self.input_dim or horizon < 1:
            raise PostBCError(f"ConditionalUnet1D: sample has shape {tuple(sample.shape)}, expected "
                              f"(B, Ta >= 1, {self.input_dim})")
        feature = self.diffusion_step_encoder(_timesteps(timestep, b, sample.device))
        if self.global_cond_dim:
            if global_cond is None or tuple(global_cond.shape) != (b, self.global_cond_dim):
                got = None if global_cond is None else tuple(global_cond.shape)
                raise PostBCError(f"ConditionalUnet1D: global_cond has shape {got}, expected "
                                  f"({b}, {self.global_cond_dim})")
            feature = torch.cat((feature, global_cond), dim=-1)
        x = sample.transpose(1, 2)  # (B, Da, Ta): channels are action dims, convolution runs over time
        pad = (-horizon) % self.time_multiple
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")
        skips = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet2(resnet(x, feature), feature)
            skips.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid(x, feature)
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = upsample(resnet2(resnet(x, feature), feature))
        x = self.final_conv(x)
        return x[:, :, :horizon].transpose(1, 2)
