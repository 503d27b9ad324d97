"""ResNet-18 image backbone in plain torch (no torchvision on these machines).

Parameter names and shapes are identical to torchvision's `resnet18` minus `fc` (conv1, bn1, layer1.0.conv1, ...,
layer4.1.bn2), so a torchvision state-dict file loads with `load_torchvision_weights`. The norm layers keep the
name `bn*` even when they are GroupNorm, as diffusion_policy's `replace_bn_with_gn` leaves them.

Shapes: B batch, C=3 channels, H/W pixels. forward: (B, C, H, W) float -> (B, 512) after global average pooling.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from postbc_core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

Norm = Literal["group", "batch"]
FEATURE_DIM = 512  # channels of layer4, the pooled feature size
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _norm_layer(norm: Norm, channels: int, groups_per_channel: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    # diffusion_policy's replace_bn_with_gn: num_groups = channels // features_per_group (16 -> 4..32 groups).
    return nn.GroupNorm(num_groups=channels // groups_per_channel, num_channels=channels)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (two 3x3 convs + identity/1x1-projection shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int, norm: Norm, groups_per_channel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm_layer(norm, planes, groups_per_channel)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm_layer(norm, planes, groups_per_channel)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                _norm_layer(norm, planes, groups_per_channel),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-18 trunk without the classifier: (B, C, H, W) -> (B, 512)."""

    def __init__(self, norm: Norm = "group", groups_per_channel: int = 16, in_channels: int = 3):
        super().__init__()
        if norm not in ("group", "batch"):
            raise ConfigError(f"resnet18: norm={norm!r} is not one of 'group', 'batch'")
        if norm == "group" and (groups_per_channel < 1 or 64 % groups_per_channel != 0):
            raise ConfigError(
                f"resnet18: groups_per_channel={groups_per_channel} must divide 64 (channels per GroupNorm group; "
                "diffusion_policy uses 16)")
        if in_channels < 1:
            raise ConfigError(f"resnet18: in_channels={in_channels} must be >= 1")
        self.norm = norm
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm_layer(norm, 64, groups_per_channel)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers = []
        inplanes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride, norm, groups_per_channel),
                                        BasicBlock(planes, planes, 1, norm, groups_per_channel)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # torchvision's initialisation, so training from scratch behaves like the reference.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) float -> (B, 512)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18(norm: Norm = "group", groups_per_channel: int = 16, in_channels: int = 3) -> ResNet:
    """ResNet-18 trunk; `norm="group"` uses GroupNorm with channels // groups_per_channel groups."""
    return ResNet(norm=norm, groups_per_channel=groups_per_channel, in_channels=in_channels)


def load_torchvision_weights(model: ResNet, path: str | Path) -> ResNet:
    """Loads a torchvision resnet18 state-dict file (.pth/.pt via torch.load(weights_only=True), or .safetensors).

    `fc.*` is dropped (the trunk has no classifier). Into a GroupNorm model the BatchNorm affine parameters
    (weight/bias) are loaded and the BN running statistics are dropped (GroupNorm has none); both are logged.
    Any missing key, shape mismatch or other unexpected key raises CheckpointError listing them.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"torchvision weights: {path} does not exist; pass the path of a resnet18 .pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means the file is not a usable state dict
        raise CheckpointError(f"torchvision weights: cannot read {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"torchvision weights: {path} holds a {type(state).__name__}, not a state dict")
    # Checkpoints saved from nn.DataParallel/DDP prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}

    own = model.state_dict()
    dropped = [k for k in state if k.startswith("fc.")]
    if model.norm == "group":
        dropped += [k for k in state if k.rsplit(".", 1)[-1] in _BN_BUFFERS and k not in own]
    if dropped:
        log.info("load_torchvision_weights(%s): dropping %d keys not used by the %s-norm trunk: %s",
                 path, len(dropped), model.norm, ", ".join(sorted(dropped)[:6]) + (" ..." if len(dropped) > 6 else ""))
    state = {k: v for k, v in state.items() if k not in set(dropped)}

    # Old torchvision files predate BN's num_batches_tracked; BatchNorm fills it in itself on load.
    problems = [f"missing: {k} {tuple(v.shape)}" for k, v in own.items()
                if k not in state and not k.endswith("num_batches_tracked")]
    problems += [f"unexpected: {k} {tuple(v.shape)}" for k, v in state.items() if k not in own]
    problems += [f"shape mismatch: {k} file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CheckpointError(
            f"torchvision weights: {path} does not match ResNet-18 ({len(problems)} problem(s)); is it a resnet18 "
            f"state dict with in_channels={model.conv1.in_channels}?\n  {shown}")
    model.load_state_dict(state, strict=True)
    return model
