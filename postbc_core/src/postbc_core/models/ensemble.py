"""The PostBC ensemble: K regressors f_1..f_K as ONE batched module (weights stacked over K).

Shapes: K members, B batch, To observation steps, Ds low-dim obs size, F feature size, D out_dim.
- Low-dim observations are flattened to (To * Ds) and fed to a batched MLP whose every layer is a single
  `torch.baddbmm` over K, so one forward/backward/optimizer step trains all members at once.
- RGB observations: every member owns a full image encoder (ObsEncoder: ResNet-18 or the small conv one). The K
  encoders' parameters are stacked into (K, ...) tensors once at construction and the encoder is run with
  `torch.func.vmap(functional_call)`: GroupNorm has no running statistics, so vmapping it is safe (BatchNorm's
  in-place buffer updates would not be).
- shared_encoder=True: one image encoder for all members, trained by every member's loss; the members are K heads
  on its features. An image step then costs one encoder pass instead of K. Inputs must be shared (one batch); each
  member's bootstrap becomes per-sample weights (`loss(..., weights)`: its resample's multiplicities).
Inputs may be shared by all members, nobs[key] (B, To, ...), or per member, (K, B, To, ...): bootstrap training
feeds each member its own resampled batch.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.models.obs_encoder import ObsEncoder, is_rgb_shape
from postbc_core.models.resnet import load_torchvision_weights, resnet18

log = logging.getLogger(__name__)

Head = Literal["mse", "gaussian"]

# Gaussian head: the log-variance is soft-clamped to [LOG_VAR_MIN, LOG_VAR_MAX] (in normalized target units,
# where targets live in about [-1, 1]). Why: a member fitted on a bootstrap resample of tens of demos can drive
# its variance towards 0 on the points it memorised, which sends the NLL to -inf and its gradients to overflow;
# an unbounded maximum lets it "explain away" every error with a huge variance. exp(-10) ~ std 0.007 is far
# finer than demonstration noise, exp(4) ~ std 7 far wider than the target range. The softplus form (PETS,
# Chua et al. 2018) keeps a non-zero gradient at the bounds, unlike a hard clamp.
LOG_VAR_MIN = -10.0
LOG_VAR_MAX = 4.0

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "mish": nn.Mish, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def make_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ConfigError(f"activation={name!r} is not one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class EnsembleOutput(NamedTuple):
    mean: torch.Tensor  # (K, B, D)
    log_var: torch.Tensor | None  # (K, B, D), Gaussian head only


class BatchedLinear(nn.Module):
    """K independent linear layers in one: weight (K, in, out), bias (K, 1, out).

    forward: x (K, B, in) per member, or (B, in) shared by all members -> (K, B, out).
    """

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        if num_members < 1 or in_features < 1 or out_features < 1:
            raise ConfigError(f"BatchedLinear: num_members={num_members}, in_features={in_features}, "
                              f"out_features={out_features} must all be >= 1")
        self.num_members, self.in_features, self.out_features = num_members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: kaiming_uniform_(a=sqrt(5)) on the weight is U(-1/sqrt(in), 1/sqrt(in)), the bias
        # uses the same bound. Every member gets its own independent draw (ensemble diversity starts here).
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_members, -1, -1)  # a view: no copy of the shared batch
        elif x.dim() != 3 or x.shape[0] != self.num_members:
            raise PostBCError(f"BatchedLinear: input shape {tuple(x.shape)} is neither (B, {self.in_features}) nor "
                              f"({self.num_members}, B, {self.in_features})")
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in_features={self.in_features}, out_features={self.out_features}"


class BatchedMLP(nn.Module):
    """K independent MLPs: (K, B, in) or (B, in) -> (K, B, out); activation between layers, none at the end."""

    def __init__(self, num_members: int, in_dim: int, hidden_dims: tuple[int, ...], out_dim: int,
                 activation: str = "relu"):
        super().__init__()
        dims = [in_dim, *hidden_dims, out_dim]
        self.layers = nn.ModuleList(BatchedLinear(num_members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x

    def member(self, k: int) -> nn.Sequential:
        """Member k as an ordinary nn.Sequential holding a copy of its weights (export, reference checks)."""
        layers: list[nn.Module] = []
        for i, bl in enumerate(self.layers):
            lin = nn.Linear(bl.in_features, bl.out_features)
            with torch.no_grad():
                lin.weight.copy_(bl.weight[k].T)
                lin.bias.copy_(bl.bias[k, 0])
            layers.append(lin)
            if i < len(self.layers) - 1:
                layers.append(copy.deepcopy(self.act))
        return nn.Sequential(*layers)


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, ntarget: torch.Tensor,
                 reduce: bool = True) -> torch.Tensor:
    """Per-member Gaussian NLL without the constant: (K, B, D) x3 -> (K,), or per sample (K, B) with reduce=False.

    Equals F.gaussian_nll_loss(mean[k], ntarget[k], log_var[k].exp(), full=False) for each k.
    """
    per = 0.5 * (log_var + (ntarget - mean).square() * torch.exp(-log_var)).mean(dim=2)
    return per.mean(dim=1) if reduce else per


def _stack_into_template(modules: list[nn.Module]) -> nn.Module:
    """Stacks the parameters of identical modules into (K, ...) Parameters installed on the first module.

    The returned module keeps the structure (and state-dict names) of one member but every parameter carries a
    leading K dim, so it may only be called through `vmap(functional_call)`; buffers are shared constants.
    """
    params, _ = stack_module_state(modules)
    template = modules[0]
    for name, p in params.items():
        owner, _, leaf = name.rpartition(".")
        template.get_submodule(owner).register_parameter(leaf, nn.Parameter(p.detach().clone()))
    return template


class EnsembleRegressor(nn.Module):
    """K regressors of the (normalized) action chunk from the observation, trained and run as one module."""

    def __init__(self, num_members: int, obs_shapes: dict[str, tuple[int, ...]], n_obs_steps: int, out_dim: int,
                 hidden_dims: tuple[int, ...] = (512, 512, 512), head: Head = "mse", activation: str = "relu",
                 rgb_feature_dim: int = 512, crop_ratio: float = 0.9, image_encoder: str = "resnet18",
                 shared_encoder: bool = False):
        super().__init__()
        if num_members < 1:
            raise ConfigError(f"EnsembleRegressor: num_members={num_members} must be >= 1 (paper: 5-100)")
        if n_obs_steps < 1:
            raise ConfigError(f"EnsembleRegressor: n_obs_steps={n_obs_steps} must be >= 1")
        if out_dim < 1:
            raise ConfigError(f"EnsembleRegressor: out_dim={out_dim} must be >= 1 (Ta * Da)")
        if head not in ("mse", "gaussian"):
            raise ConfigError(f"EnsembleRegressor: head={head!r} is not one of 'mse', 'gaussian'")
        if not obs_shapes:
            raise ConfigError("EnsembleRegressor: obs_shapes is empty; name at least one observation key")
        if any(h < 1 for h in hidden_dims):
            raise ConfigError(f"EnsembleRegressor: hidden_dims={tuple(hidden_dims)} must all be >= 1")
        self.num_members = num_members
        self.obs_shapes = {k: tuple(int(d) for d in obs_shapes[k]) for k in sorted(obs_shapes)}
        self.n_obs_steps = n_obs_steps
        self.out_dim = out_dim
        self.head_type: Head = head
        self.has_rgb = any(is_rgb_shape(s) for s in self.obs_shapes.values())
        self.image_encoder = image_encoder
        if shared_encoder and not self.has_rgb:
            raise ConfigError("EnsembleRegressor: shared_encoder applies to image observations; these keys "
                              f"{sorted(self.obs_shapes)} have no camera (each member is a plain MLP already)")
        self.shared_encoder = bool(shared_encoder)
        if self.has_rgb:
            def make():
                return ObsEncoder(self.obs_shapes, n_obs_steps, rgb_feature_dim=rgb_feature_dim,
                                  crop_ratio=crop_ratio, norm="group", image_encoder=image_encoder)

            if self.shared_encoder:
                self.encoder: nn.Module | None = make()
                feat_dim = self.encoder.output_dim
            else:
                # K independently initialised encoders (GroupNorm or no norm: vmap-safe), stacked into one module.
                encoders = [make() for _ in range(num_members)]
                feat_dim = encoders[0].output_dim
                self.encoder = _stack_into_template(encoders)
        else:
            self.encoder = None
            feat_dim = n_obs_steps * sum(math.prod(s) for s in self.obs_shapes.values())
        self.feature_dim = feat_dim
        n_out = out_dim * (2 if head == "gaussian" else 1)
        self.head = BatchedMLP(num_members, feat_dim, tuple(hidden_dims), n_out, activation)

    # ---- input handling ----
    def _member_axes(self, nobs: dict[str, torch.Tensor]) -> dict[str, bool]:
        """key -> True if nobs[key] is per member (K, B, To, ...), False if shared (B, To, ...)."""
        missing = [k for k in self.obs_shapes if k not in nobs]
        if missing:
            raise PostBCError(f"EnsembleRegressor: observation keys {missing} missing (got {sorted(nobs)})")
        per_member, batch = {}, set()
        for k, shape in self.obs_shapes.items():
            got = tuple(nobs[k].shape)
            step = (self.n_obs_steps, *shape)
            if len(got) == len(step) + 1 and got[1:] == step:
                per_member[k] = False
                batch.add(got[0])
            elif len(got) == len(step) + 2 and got[2:] == step and got[0] == self.num_members:
                per_member[k] = True
                batch.add(got[1])
            else:
                raise PostBCError(
                    f"EnsembleRegressor: nobs[{k!r}] has shape {got}; expected (B, {', '.join(map(str, step))}) "
                    f"shared or ({self.num_members}, B, {', '.join(map(str, step))}) per member")
        if len(batch) != 1:
            raise PostBCError(f"EnsembleRegressor: observation keys disagree on the batch size: {sorted(batch)}")
        return per_member

    def features(self, nobs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Observation features: (K, B, F), or (B, F) when every key is shared and low-dim."""
        per_member = self._member_axes(nobs)
        if self.encoder is not None and self.shared_encoder:
            if any(per_member.values()):
                raise PostBCError("EnsembleRegressor: a shared encoder takes one batch for all members (B, To, ...); "
                                  "give each member's bootstrap as loss weights instead of its own batch")
            return self.encoder({k: nobs[k] for k in self.obs_shapes})  # (B, F): the heads broadcast it over K
        if self.encoder is not None:
            params = dict(self.encoder.named_parameters())
            obs = {k: nobs[k] for k in self.obs_shapes}
            in_dims = {k: 0 if per_member[k] else None for k in self.obs_shapes}

            def encode(p: dict[str, torch.Tensor], o: dict[str, torch.Tensor]) -> torch.Tensor:
                return functional_call(self.encoder, p, (o,))

            # randomness="different": each member draws its own random crops (independent augmentation).
            return vmap(encode, in_dims=(0, in_dims), randomness="different")(params, obs)
        any_member = any(per_member.values())
        flats = []
        for k in self.obs_shapes:
            x = nobs[k].to(torch.float32)
            if per_member[k]:
                flats.append(x.reshape(x.shape[0], x.shape[1], -1))
            else:
                x = x.reshape(x.shape[0], -1)
                flats.append(x.unsqueeze(0).expand(self.num_members, -1, -1) if any_member else x)
        return flats[0] if len(flats) == 1 else torch.cat(flats, dim=-1)

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Initialises every member's ResNet-18 from one torchvision resnet18 state-dict file.

        All members then start from the same encoder weights (their heads still differ); see
        resnet.load_torchvision_weights for what is dropped and what raises.
        """
        if self.encoder is None:
            raise ConfigError("EnsembleRegressor: no RGB keys, so there is no ResNet to load weights into")
        if self.image_encoder != "resnet18":
            raise ConfigError(f"EnsembleRegressor: image_encoder={self.image_encoder!r} has no torchvision weights; "
                              "use image_encoder='resnet18' to start from a torchvision resnet18")
        for name, stacked in self.encoder.rgb_encoders.items():
            if self.shared_encoder:
                load_torchvision_weights(stacked, path)
                continue
            ref = resnet18(norm="group")
            load_torchvision_weights(ref, path)
            with torch.no_grad():
                for pname, p in ref.named_parameters():
                    stacked.get_parameter(pname).copy_(p.unsqueeze(0).expand_as(stacked.get_parameter(pname)))
            log.info("EnsembleRegressor: loaded %s into the %d members' %r encoders", path, self.num_members, name)

    # ---- public API ----
    def forward(self, nobs: dict[str, torch.Tensor]) -> EnsembleOutput:
        """nobs: key -> (B, To, ...) or (K, B, To, ...) -> EnsembleOutput(mean (K, B, D), log_var (K, B, D) | None)."""
        out = self.head(self.features(nobs))
        if self.head_type == "mse":
            return EnsembleOutput(out, None)
        mean, raw = out.split(self.out_dim, dim=-1)
        log_var = LOG_VAR_MAX - F.softplus(LOG_VAR_MAX - raw)
        log_var = LOG_VAR_MIN + F.softplus(log_var - LOG_VAR_MIN)
        return EnsembleOutput(mean, log_var)

    def loss(self, nobs: dict[str, torch.Tensor], ntarget: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-member mean MSE or Gaussian NLL, (K,); ntarget (K, B, D) per member or (B, D) shared.

        weights (K, B), optional: member k's loss is the weighted mean over the batch, sum_b w_kb l_kb / sum_b w_kb
        (a member's bootstrap multiplicities of a shared batch: in expectation its loss on its own resample; a
        member that drew none of the batch gets 0). Sum it (not mean) before backward so every member sees the
        gradient of its own mean loss.
        """
        out = self(nobs)
        k, b, d = out.mean.shape
        if tuple(ntarget.shape) not in ((k, b, d), (b, d)):
            raise PostBCError(f"EnsembleRegressor.loss: ntarget has shape {tuple(ntarget.shape)}, expected "
                              f"({k}, {b}, {d}) or ({b}, {d})")
        t = ntarget.to(out.mean.dtype)
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if out.log_var is None:
            per = (out.mean - t).square().mean(dim=2)  # (K, B)
        else:
            per = gaussian_nll(out.mean, out.log_var, t.expand_as(out.mean), reduce=False)
        if weights is None:
            return per.mean(dim=1)
        if tuple(weights.shape) != (k, b):
            raise PostBCError(f"EnsembleRegressor.loss: weights have shape {tuple(weights.shape)}, expected ({k}, {b})")
        w = weights.to(per.dtype)
        return (w * per).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)

    @torch.no_grad()
    def predict(self, nobs: dict[str, torch.Tensor], batch_size: int = 256) -> torch.Tensor:
        """Member means (K, B, D) in eval mode (center crops), chunked over B to bound memory.

        The module's train/eval mode is restored afterwards.
        """
        if batch_size < 1:
            raise ConfigError(f"EnsembleRegressor.predict: batch_size={batch_size} must be >= 1")
        per_member = self._member_axes(nobs)
        first = next(iter(self.obs_shapes))
        n = nobs[first].shape[1 if per_member[first] else 0]
        if n == 0:
            return torch.empty(self.num_members, 0, self.out_dim, device=self.head.layers[0].weight.device)
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for s in range(0, n, batch_size):
                part = {k: (nobs[k][:, s:s + batch_size] if per_member[k] else nobs[k][s:s + batch_size])
                        for k in self.obs_shapes}
                chunks.append(self(part).mean)
        finally:
            self.train(was_training)
        return torch.cat(chunks, dim=1)
