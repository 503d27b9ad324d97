"""Per-key affine normalizer owned by the policy, so its statistics travel inside the checkpoint.

`nx = x * scale + offset` per feature. Two modes (diffusion_policy's `LinearNormalizer` conventions):
- "limits": maps the data range to [-1, 1] (default for actions: the diffusion target lives in [-1, 1]);
- "gaussian": zero mean, unit variance (default for low-dimensional observations), with a floor on the standard
  deviation (`std_floor`, relative to the key's largest per-feature std; LeRobot's mean/std `eps` and
  diffusion_policy's `range_eps` play the same role with absolute values). Without a floor a feature that barely
  varies in the demonstrations (a cube's tilt: std ~0.002) is multiplied by hundreds, and the first time the scene
  leaves the demonstrations (the fingers nudge the cube) the policy sees inputs hundreds of standard deviations out.
Features whose range is (near) constant (< 1e-4) get scale 1 and are only shifted, so they never blow up.
RGB images are not normalized here: the image encoder owns their scaling.

Shapes: statistics are per feature over the trailing dims of a key: for a key of per-step shape (D,) the buffers
are (D,); any leading dims (B, To, ...) broadcast.
"""

from __future__ import annotations

import logging
from typing import Literal, Mapping

import numpy as np
import torch
from torch import nn

from postbc_core.errors import ConfigError

log = logging.getLogger(__name__)

Mode = Literal["limits", "gaussian"]
# Ranges narrower than this are treated as constant features (avoids dividing by ~0).
_RANGE_EPS = 1e-4


class LinearNormalizer(nn.Module):
    """Affine per-key normalizer with `normalize`/`unnormalize`, fitted from numpy arrays."""

    def __init__(self) -> None:
        super().__init__()
        self.params = nn.ParameterDict()  # key -> ParameterList would lose names; we store flat "<key>__scale"
        self._keys: list[str] = []

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def fit(self, data: Mapping[str, np.ndarray], modes: Mapping[str, Mode] | None = None,
            default_mode: Mode = "limits", output_max: float = 1.0, std_floor: float = 0.0) -> "LinearNormalizer":
        """Fits statistics; `data[key]` is (N, *shape) over all training steps.

        std_floor ("gaussian" only): a feature's std is raised to at least std_floor x the largest std among the
        key's features, so its scale is at most 1 / (std_floor x that std) (0 = no floor)."""
        if not 0.0 <= std_floor <= 1.0:  # (also refuses NaN)
            raise ConfigError(f"normalizer: std_floor={std_floor} must be in [0, 1] (a fraction of the key's largest "
                              "std; 0 disables it)")
        modes = dict(modes or {})
        for key, x in data.items():
            x = np.asarray(x, dtype=np.float64)
            if x.ndim < 1 or x.shape[0] == 0:
                raise ConfigError(f"normalizer: key {key!r} has no samples (shape {x.shape}); check the dataset")
            if not np.isfinite(x).all():
                raise ConfigError(f"normalizer: key {key!r} contains NaN/inf; run `postbc data validate`")
            flat = x.reshape(x.shape[0], -1)
            mode = modes.get(key, default_mode)
            if mode == "limits":
                lo, hi = flat.min(0), flat.max(0)
                rng = hi - lo
                const = rng < _RANGE_EPS
                scale = np.where(const, 1.0, 2.0 * output_max / np.where(const, 1.0, rng))
                offset = np.where(const, -lo, -output_max - lo * scale)
            elif mode == "gaussian":
                mean, std = flat.mean(0), flat.std(0)
                const = std < _RANGE_EPS
                floor = std_floor * std.max()
                floored = ~const & (std < floor)
                if floored.any():
                    log.info("normalizer: %d feature(s) of %r vary less than %.3g x the key's largest std (std %s "
                             "raised to %.3g)", int(floored.sum()), key, std_floor,
                             np.array2string(std[floored], precision=4, threshold=8), floor)
                std = np.maximum(std, floor)
                scale = np.where(const, 1.0, 1.0 / np.where(const, 1.0, std))
                offset = -mean * scale
            else:
                raise ConfigError(f"normalizer: unknown mode {mode!r} for key {key!r}; use 'limits' or 'gaussian'")
            if const.any():
                log.info("normalizer: %d constant feature(s) in %r left unscaled", int(const.sum()), key)
            self.set_params(key, scale.reshape(x.shape[1:]), offset.reshape(x.shape[1:]))
        return self

    def set_params(self, key: str, scale, offset) -> None:
        scale_t = torch.as_tensor(np.asarray(scale), dtype=torch.float32)
        offset_t = torch.as_tensor(np.asarray(offset), dtype=torch.float32)
        self.params[f"{key}__scale"] = nn.Parameter(scale_t, requires_grad=False)
        self.params[f"{key}__offset"] = nn.Parameter(offset_t, requires_grad=False)
        if key not in self._keys:
            self._keys.append(key)

    def _get(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self.params[f"{key}__scale"], self.params[f"{key}__offset"]
        except KeyError:
            raise ConfigError(f"normalizer has no statistics for key {key!r} (known: {self._keys})") from None

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._get(key)
        return x * scale + offset

    def unnormalize(self, key: str, nx: torch.Tensor) -> torch.Tensor:
        scale, offset = self._get(key)
        return (nx - offset) / scale

    def scale_of(self, key: str) -> torch.Tensor:
        return self._get(key)[0]

    # The key list is not a tensor; it is rebuilt from parameter names when loading a state dict.
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        names = [k[len(prefix) + len("params."):] for k in state_dict if k.startswith(prefix + "params.")]
        for name in names:
            if name.endswith("__scale"):
                key = name[: -len("__scale")]
                shape = state_dict[prefix + "params." + name].shape
                if f"{key}__scale" not in self.params:
                    self.set_params(key, np.ones(shape), np.zeros(shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
