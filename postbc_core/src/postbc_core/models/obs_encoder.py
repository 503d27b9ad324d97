"""Observation encoder: RGB cameras through an image backbone, low-dim keys flattened, everything concatenated.

Backbones (`image_encoder`, the policy's setting): "resnet18", the paper's (models/resnet.py), or "conv", a shallow
conv stack with spatial-softmax keypoints that trains on a CPU (models/conv_encoder.py).

Shapes: B batch, To observation steps, H/W pixels. Per-step shapes come from `obs_shapes`: a 3-dim shape
(H, W, 3) is an RGB camera (channel-last, as stored in the episode store), anything else is low-dim.
- RGB input (B, To, H, W, 3), uint8 0..255 or float 0..255 (not normalized: this module owns image scaling).
- Low-dim input `n*` (B, To, *shape), already normalized float.
Output (B, output_dim), keys in sorted order so the layout does not depend on dict construction order.

Images follow diffusion_policy's CropRandomizer: an independent random crop per image in train mode, the center
crop in eval mode, then ImageNet mean/std (what pretrained ResNet weights expect; the conv backbone gets the same
scaling, so both see inputs of about unit scale).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.models import resnet as resnet_mod
from postbc_core.models.conv_encoder import ConvKeypointEncoder

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SHARED = "shared"
IMAGE_ENCODERS = ("resnet18", "conv")
"""The backbones `make_backbone` builds (PolicySettings.image_encoder declares the same names; a test checks)."""


def make_backbone(image_encoder: str, norm: str = "group") -> tuple[nn.Module, int]:
    """(backbone, its feature size) for one camera: (B, 3, H, W) float -> (B, feature size).

    image_encoder: "resnet18" (the paper's; `norm` picks GroupNorm or BatchNorm) or "conv" (ConvKeypointEncoder, no
    norm layers). The policy setting `PolicySettings.image_encoder` names the same choices."""
    if image_encoder == "resnet18":
        return resnet_mod.resnet18(norm=norm), resnet_mod.FEATURE_DIM
    if image_encoder == "conv":
        enc = ConvKeypointEncoder()
        return enc, enc.feature_dim
    raise ConfigError(f"image_encoder={image_encoder!r} is not one of {IMAGE_ENCODERS}")


def is_rgb_shape(shape: tuple[int, ...]) -> bool:
    """True for per-step shapes (H, W, 3) that the encoders treat as RGB images."""
    return len(shape) == 3


def crop_size(hw: tuple[int, int], crop_ratio: float) -> tuple[int, int]:
    """(h, w) of the crop for an (H, W) image: round(H * ratio), at least 1 pixel."""
    return max(1, int(round(hw[0] * crop_ratio))), max(1, int(round(hw[1] * crop_ratio)))


def crop_images(x: torch.Tensor, size: tuple[int, int], random: bool) -> torch.Tensor:
    """(N, H, W, C) -> (N, h, w, C): one independent random crop per image, or the center crop."""
    n, h_img, w_img = x.shape[0], x.shape[1], x.shape[2]
    ch, cw = size
    if not random or (ch == h_img and cw == w_img):
        top, left = (h_img - ch) // 2, (w_img - cw) // 2
        return x[:, top:top + ch, left:left + cw]
    tops = torch.randint(0, h_img - ch + 1, (n,), device=x.device)
    lefts = torch.randint(0, w_img - cw + 1, (n,), device=x.device)
    rows = tops[:, None] + torch.arange(ch, device=x.device)  # (N, h)
    cols = lefts[:, None] + torch.arange(cw, device=x.device)  # (N, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return x[idx, rows[:, :, None], cols[:, None, :]]


class ObsEncoder(nn.Module):
    """Encodes an observation dict into one feature vector per sample: (B, output_dim)."""

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], n_obs_steps: int, *, rgb_feature_dim: int = 512,
                 crop_ratio: float = 0.9, norm: str = "group", share_rgb_encoder: bool = False,
                 image_encoder: str = "resnet18"):
        super().__init__()
        if not obs_shapes:
            raise ConfigError("ObsEncoder: obs_shapes is empty; name at least one observation key")
        if n_obs_steps < 1:
            raise ConfigError(f"ObsEncoder: n_obs_steps={n_obs_steps} must be >= 1")
        if not 0.0 < crop_ratio <= 1.0:
            raise ConfigError(f"ObsEncoder: crop_ratio={crop_ratio} must be in (0, 1] (1 disables cropping)")
        if rgb_feature_dim < 1:
            raise ConfigError(f"ObsEncoder: rgb_feature_dim={rgb_feature_dim} must be >= 1")
        if image_encoder not in IMAGE_ENCODERS:
            raise ConfigError(f"ObsEncoder: image_encoder={image_encoder!r} is not one of {IMAGE_ENCODERS}")
        self.obs_shapes = {k: tuple(int(d) for d in obs_shapes[k]) for k in sorted(obs_shapes)}
        self.n_obs_steps = n_obs_steps
        self.crop_ratio = crop_ratio
        self.rgb_feature_dim = rgb_feature_dim
        self.share_rgb_encoder = share_rgb_encoder
        self.image_encoder = image_encoder
        self.rgb_keys = [k for k, s in self.obs_shapes.items() if is_rgb_shape(s)]
        self.lowdim_keys = [k for k in self.obs_shapes if k not in self.rgb_keys]
        for k in self.rgb_keys:
            if self.obs_shapes[k][2] != 3:
                raise ConfigError(
                    f"ObsEncoder: key {k!r} has per-step shape {self.obs_shapes[k]}; 3-dim observations are RGB "
                    "images stored channel-last (H, W, 3): transpose channel-first images when recording")
            if "." in k:
                raise ConfigError(f"ObsEncoder: camera key {k!r} contains '.', which torch module names forbid; "
                                  "rename the key (e.g. replace '.' with '_')")
        names = ([_SHARED] if share_rgb_encoder else self.rgb_keys) if self.rgb_keys else []
        backbones = {n: make_backbone(image_encoder, norm) for n in names}
        self.rgb_encoders = nn.ModuleDict({n: b for n, (b, _) in backbones.items()})
        # A projection only when asked for a feature size other than the backbone's (ResNet: 512, so torchvision's
        # names stay intact; the conv backbone's 64 keypoint coordinates always go through it, as robomimic's
        # VisualCore projects them with a Linear).
        self.rgb_proj = nn.ModuleDict(
            {n: nn.Linear(dim, rgb_feature_dim) for n, (_, dim) in backbones.items() if dim != rgb_feature_dim})
        # Fold /255 and ImageNet mean/std into one affine map; non-persistent: constants, not state.
        std = torch.tensor(IMAGENET_STD)
        self.register_buffer("_img_scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_img_shift", (-torch.tensor(IMAGENET_MEAN) / std).view(1, 3, 1, 1),
                             persistent=False)
        self.output_dim = n_obs_steps * (
            len(self.rgb_keys) * rgb_feature_dim
            + sum(math.prod(s) for k, s in self.obs_shapes.items() if k in self.lowdim_keys))

    def _check(self, nobs: dict[str, torch.Tensor]) -> None:
        missing = [k for k in self.obs_shapes if k not in nobs]
        if missing:
            raise PostBCError(f"ObsEncoder: observation keys {missing} missing (got {sorted(nobs)}); the model "
                              f"was built for {list(self.obs_shapes)}")
        for k, shape in self.obs_shapes.items():
            got = tuple(nobs[k].shape)
            if got[1:] != (self.n_obs_steps, *shape):
                raise PostBCError(f"ObsEncoder: nobs[{k!r}] has shape {got}, expected (B, {self.n_obs_steps}, "
                                  f"{', '.join(map(str, shape))}) (B, To, *per-step shape)")

    def encode_rgb(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """x: (B, To, H, W, 3) 0..255 -> (B, To * rgb_feature_dim)."""
        b, to = x.shape[0], x.shape[1]
        img = x.reshape(b * to, *x.shape[2:])
        img = crop_images(img, crop_size(img.shape[1:3], self.crop_ratio), random=self.training)
        # Crop before the float conversion: 4x fewer bytes converted for uint8 input.
        # contiguous NCHW: channel-last strides would make conv emit channels_last tensors, which GroupNorm cannot
        # handle under vmap (the ensemble's batched encoders).
        img = img.to(torch.float32).permute(0, 3, 1, 2).contiguous() * self._img_scale + self._img_shift
        name = _SHARED if self.share_rgb_encoder else key
        feat = self.rgb_encoders[name](img)
        if name in self.rgb_proj:
            feat = self.rgb_proj[name](feat)
        return feat.reshape(b, to * feat.shape[-1])

    def forward(self, nobs: dict[str, torch.Tensor]) -> torch.Tensor:
        """nobs: key -> (B, To, *shape) -> (B, output_dim)."""
        self._check(nobs)
        feats = []
        for k in self.obs_shapes:
            x = nobs[k]
            if k in self.rgb_keys:
                feats.append(self.encode_rgb(k, x))
            else:
                feats.append(x.reshape(x.shape[0], -1).to(torch.float32))
        return torch.cat(feats, dim=-1)

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Loads a torchvision resnet18 state-dict file into every RGB encoder (see resnet.load_torchvision_weights)."""
        if not self.rgb_encoders:
            raise ConfigError("ObsEncoder: no RGB keys, so there is no ResNet to load weights into")
        if self.image_encoder != "resnet18":
            raise ConfigError(f"ObsEncoder: image_encoder={self.image_encoder!r} has no torchvision weights; "
                              "use image_encoder='resnet18' to start from a torchvision resnet18")
        for enc in self.rgb_encoders.values():
            resnet_mod.load_torchvision_weights(enc, path)
