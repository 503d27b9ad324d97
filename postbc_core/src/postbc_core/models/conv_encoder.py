"""Small image backbone that trains on a CPU: a shallow conv stack and a spatial-softmax keypoint pool.

What it is (facts from robomimic's `robomimic/models/base_nets.py`, written here in plain torch):
- `ShallowConv`, robomimic's small backbone after Finn et al. 2016, "Deep Spatial Autoencoders for Visuomotor
  Learning" (https://rll.berkeley.edu/dsae/dsae.pdf): conv 7x7 stride 2 to 64 channels, 1x1 to 32, then two 3x3
  convs at 32, ReLU between them. One change: the first 3x3 conv has stride 2 here (robomimic: 1), so the keypoint
  map is a quarter of the input's size, not half: forward + backward of 64 76x76 crops took 116 ms instead of 248 ms
  (one thread, this 2-core CPU; ResNet-18: 926 ms), and the soft-argmax still gives sub-pixel positions.
- `SpatialSoftmax`: a 1x1 conv to 32 keypoint maps, a softmax over each map's pixels (temperature 1), and the expected
  (x, y) of each map on a [-1, 1] grid: 64 numbers that say *where* things are. robomimic's VisualCore then flattens
  them and projects with a Linear; ObsEncoder's per-camera projection (`rgb_proj`) is that Linear here.
Why this one next to ResNet-18: manipulation needs object positions, which global average pooling discards and
keypoints keep; and it costs a fraction of ResNet-18 (benchmarks/bench_image.py measures how much). No norm layers,
so K members run under `torch.func.vmap` like the GroupNorm ResNet does.

Shapes: B batch, C channels, H/W pixels. forward: (B, C, H, W) float -> (B, 2 * num_keypoints).
"""

from __future__ import annotations

import torch
from torch import nn

from postbc_core.errors import ConfigError

NUM_KEYPOINTS = 32  # robomimic's SpatialSoftmax default


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) feature map -> (B, 2 * num_keypoints): expected (x, y) in [-1, 1] of each keypoint's softmax."""

    def __init__(self, in_channels: int, num_keypoints: int = NUM_KEYPOINTS, temperature: float = 1.0):
        super().__init__()
        if num_keypoints < 1 or not temperature > 0:
            raise ConfigError(f"SpatialSoftmax: num_keypoints={num_keypoints} must be >= 1 and "
                              f"temperature={temperature} > 0")
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        self.num_keypoints = num_keypoints
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        logits = self.keypoints(x).reshape(b, self.num_keypoints, h * w) / self.temperature
        att = torch.softmax(logits, dim=-1).reshape(b, self.num_keypoints, h, w)
        # The grid follows the map's size (the crop fixes it in practice): no buffer tied to one input size.
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=att.dtype)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=att.dtype)
        ex = (att.sum(dim=2) * xs).sum(dim=-1)  # marginal over rows, then E[x]: (B, K)
        ey = (att.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack((ex, ey), dim=-1).reshape(b, 2 * self.num_keypoints)  # (x, y) per keypoint


class ConvKeypointEncoder(nn.Module):
    """ShallowConv + SpatialSoftmax: (B, C, H, W) float -> (B, 2 * num_keypoints); `feature_dim` says how many."""

    def __init__(self, in_channels: int = 3, num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        if in_channels < 1:
            raise ConfigError(f"ConvKeypointEncoder: in_channels={in_channels} must be >= 1")
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(inplace=True),
            nn.Conv2d(64, 32, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
        )
        self.pool = SpatialSoftmax(32, num_keypoints)
        self.feature_dim = 2 * num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) float -> (B, 2 * num_keypoints) keypoint coordinates in [-1, 1]."""
        return self.pool(self.conv(x))
