"""Fit the PostBC bootstrap ensemble and predict with it over every training window.

All K members train at once as one batched module; member k draws its batches from its own bootstrap resample
(trajectory level: resample whole demonstrations; state-action level: resample windows); with a shared image
encoder (--ensemble-encoder shared) all members see one batch, weighted by their resamples. Under torchrun each rank
trains a contiguous block of members; resamples are drawn for all K from the run seed, so member k sees the same
data whatever the world size.

Shapes: K members (Kr on this rank), N training windows, B windows per member per step, D = Ta * Da.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from postbc_core.errors import ConfigError
from postbc_core.runlog import RunLogger
from postbc_core.training.batches import to_torch
from postbc_core.training.distributed import DistInfo, all_gather_cat, shard_range
from postbc_core.training.loop import LoopConfig, run_loop

log = logging.getLogger(__name__)


def bootstrap_counts(window_episode: np.ndarray, n_episodes: int, num_members: int, mode: str,
                     rng: np.random.Generator) -> np.ndarray:
    """(K, N) multiplicity of every training window in each member's bootstrap resample."""
    N = len(window_episode)
    counts = np.zeros((num_members, N), dtype=np.float32)
    episodes_present = np.unique(window_episode)
    for k in range(num_members):
        if mode == "trajectory":
            drawn = rng.choice(episodes_present, size=len(episodes_present), replace=True)
            per_episode = np.bincount(drawn, minlength=n_episodes)
            counts[k] = per_episode[window_episode]
        elif mode == "state_action":
            counts[k] = np.bincount(rng.integers(0, N, N), minlength=N)
        else:
            raise ConfigError(f"bootstrap must be 'trajectory' or 'state_action', got {mode!r}")
    return counts


def check_ensemble_encoder(mode: str, obs_keys, has_images: bool, world_size: int) -> None:
    """ConfigError when --ensemble-encoder `mode` cannot apply: "shared" needs camera keys (a state ensemble has no
    encoder to share) and one process (each rank would train its own encoder). `postbc train` checks this before it
    writes anything; fit_ensemble again for direct callers."""
    if mode != "shared":
        return
    if not has_images:
        raise ConfigError(f"--ensemble-encoder shared applies to image policies; these --obs-keys {' '.join(obs_keys)} "
                          "have no camera key (leave it at per_member)")
    if world_size > 1:
        raise ConfigError("--ensemble-encoder shared trains one encoder for all members in one process; run it "
                          f"without torchrun (world size {world_size}), or use --ensemble-encoder per_member")


def normalize_for_ensemble(policy, batch: dict) -> tuple[dict, torch.Tensor]:
    """Raw torch batch -> (normalized obs (B, To, ...), normalized flattened action (B, D)) via the policy's
    normalizer, so the ensemble's covariance lives in the same space as the diffusion targets."""
    nobs = policy.normalize_obs(batch["obs"])
    naction = policy.normalizer.normalize(policy.action_key, batch["action"]).flatten(1)
    return nobs, naction


def fit_ensemble(dataset, policy, cfg, dist: DistInfo, logger: RunLogger):
    """Trains this rank's block of members; returns (EnsembleRegressor for the block, members range)."""
    from postbc_core.models.ensemble import EnsembleRegressor

    K, B = cfg.ensemble_size, cfg.ensemble_batch_size
    shared = cfg.ensemble_encoder == "shared"
    check_ensemble_encoder(cfg.ensemble_encoder, policy.config.obs_shapes, bool(policy.config.rgb_keys),
                           dist.world_size)
    rng = np.random.default_rng(cfg.seed)
    counts = bootstrap_counts(dataset.episode_index, int(dataset.episode_index.max()) + 1, K, cfg.bootstrap, rng)
    members = shard_range(K, dist.rank, dist.world_size)
    if len(members) == 0:
        raise ConfigError(f"ensemble_size {K} is smaller than the number of ranks {dist.world_size}")
    torch.manual_seed(cfg.seed * 1000 + members.start)
    D = policy.config.action_horizon * policy.config.action_dim
    model = EnsembleRegressor(len(members), policy.config.obs_shapes, policy.config.n_obs_steps, D,
                              hidden_dims=cfg.ensemble_hidden, head=cfg.ensemble_head,
                              rgb_feature_dim=policy.config.rgb_feature_dim,
                              crop_ratio=policy.config.crop_ratio,
                              image_encoder=policy.config.image_encoder, shared_encoder=shared).to(dist.device)
    weights = torch.from_numpy(counts[members.start:members.stop])
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * (members.start + 1))
    Kr = len(members)
    # Shared encoder: one batch, uniform over the windows any member resampled, each member's loss weighted by its
    # multiplicities (the online bootstrap: in expectation each member's loss on its own resample).
    pool = torch.from_numpy(np.flatnonzero(counts.sum(axis=0) > 0))

    def shared_step(_: int) -> dict[str, torch.Tensor]:
        idx = pool[torch.randint(len(pool), (B,), generator=gen)]
        batch = to_torch(dataset.get_batch(idx.numpy()), dist.device)
        nobs, naction = normalize_for_ensemble(policy, batch)
        per_member = model.loss(nobs, naction, weights=weights[:, idx].to(dist.device))  # (Kr,)
        return {"loss": per_member.sum(), "member_loss_mean": per_member.mean().detach()}

    def step(_: int) -> dict[str, torch.Tensor]:
        idx = torch.multinomial(weights, B, replacement=True, generator=gen)  # (Kr, B)
        batch = to_torch(dataset.get_batch(idx.reshape(-1).numpy()), dist.device)
        nobs, naction = normalize_for_ensemble(policy, batch)
        nobs = {k: v.reshape(Kr, B, *v.shape[1:]) for k, v in nobs.items()}
        per_member = model.loss(nobs, naction.reshape(Kr, B, -1))  # (Kr,)
        # Summing keeps each member's gradient equal to that of its own mean loss.
        return {"loss": per_member.sum(), "member_loss_mean": per_member.mean().detach()}

    model.train()
    loop = LoopConfig(steps=cfg.ensemble_steps, lr=cfg.ensemble_lr, weight_decay=cfg.weight_decay,
                      warmup_steps=min(cfg.warmup_steps, cfg.ensemble_steps // 10), log_every=cfg.log_every,
                      fused_adam=model.has_rgb)
    run_loop(model.parameters(), shared_step if shared else step, loop, logger, tag="ensemble")
    return model.eval(), members


@torch.no_grad()
def predict_windows(model, dataset, policy, dist: DistInfo, batch_size: int = 1024) -> torch.Tensor:
    """Member means over all N training windows, gathered across ranks -> (K, N, D) float32 on CPU."""
    outs = []
    for s in range(0, len(dataset), batch_size):
        idx = np.arange(s, min(s + batch_size, len(dataset)))
        batch = to_torch(dataset.get_batch(idx), dist.device)
        nobs, _ = normalize_for_ensemble(policy, batch)
        outs.append(model(nobs).mean.float().cpu())
    preds = torch.cat(outs, dim=1)  # (Kr, N, D)
    return all_gather_cat(preds, dist, dim=0)


def gather_ensemble_state(model, dist: DistInfo) -> dict[str, torch.Tensor]:
    """Full K-member state dict: parameters are stacked over members on dim 0 and gathered across ranks;
    buffers (image statistics) are shared constants and taken as they are."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if not dist.enabled:
        return state
    stacked = {name for name, _ in model.named_parameters()}
    return {k: all_gather_cat(v, dist, dim=0) if k in stacked else v for k, v in state.items()}
