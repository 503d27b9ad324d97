"""`postbc train`: episode store -> bootstrap ensemble -> posterior covariance -> (Post)BC diffusion policy.

Writes a run directory:
  policy.safetensors     the deployable policy (EMA weights, config, normalizer) - `postbc_core.load_policy(dir)`
  ensemble.safetensors   the K-member ensemble (PostBC only)
  posterior.json         summary of the posterior std over training states (PostBC only)
  train_config.json      the full TrainConfig
  metrics.jsonl, tb/     training curves (TensorBoard: `tensorboard --logdir <run>/tb`)
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from postbc_core.data.normalizer import LinearNormalizer
from postbc_core.errors import ConfigError
from postbc_core.policies.checkpoint import ENSEMBLE_FILE, POLICY_FILE, save_checkpoint, save_policy
from postbc_core.models.obs_encoder import is_rgb_shape
from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
from postbc_core.training.config import TrainConfig
from postbc_core.training.diffusion_fit import fit_policy
from postbc_core.training.distributed import barrier, cleanup, init_distributed
from postbc_core.training.ensemble_fit import fit_ensemble, gather_ensemble_state, predict_windows
from postbc_core.training.loop import RunLogger
from postbc_core.training.posterior import isotropic_like, posterior_from_predictions

log = logging.getLogger(__name__)


def load_training_data(cfg: TrainConfig):
    """Loads the needed keys into memory and builds train/val window datasets (split by episode)."""
    from postbc_core.data import EpisodeStore, WindowDataset, get_val_mask

    with EpisodeStore.open(cfg.dataset, mode="r") as store:
        wanted = [*cfg.obs_keys, cfg.action_key]
        missing = [k for k in wanted if k not in store.keys]
        if missing:
            raise ConfigError(f"{cfg.dataset} has no data key(s) {missing}; available: {sorted(store.keys)} "
                              "(set --obs-keys / --action-key)")
        if store.n_episodes == 0:
            raise ConfigError(f"{cfg.dataset} holds no committed episodes")
        data = store.load(wanted)
        episode_ends = np.asarray(store.episode_ends)
    for k in cfg.obs_keys:
        if is_rgb_shape(data[k].shape[1:]) and data[k].dtype != np.uint8:
            raise ConfigError(f"image key {k!r} has dtype {data[k].dtype}; RGB observations must be uint8")
    n_ep = len(episode_ends)
    val_mask = get_val_mask(n_ep, cfg.val_ratio, seed=cfg.seed) if cfg.val_ratio > 0 else np.zeros(n_ep, bool)
    common = dict(obs_keys=list(cfg.obs_keys), action_key=cfg.action_key, n_obs_steps=cfg.n_obs_steps,
                  action_horizon=cfg.action_horizon)
    train_ds = WindowDataset(data, episode_ends, episode_mask=~val_mask, **common)
    val_ds = WindowDataset(data, episode_ends, episode_mask=val_mask, **common) if val_mask.any() else None
    # Normalizer statistics from training episodes only.
    starts = np.concatenate([[0], episode_ends[:-1]])
    train_steps = np.concatenate([np.arange(s, e) for s, e, v in zip(starts, episode_ends, val_mask) if not v])
    return data, train_steps, train_ds, val_ds


def build_policy(cfg: TrainConfig, data: dict, train_steps: np.ndarray) -> DiffusionPolicy:
    obs_shapes = {k: tuple(data[k].shape[1:]) for k in cfg.obs_keys}
    action_shape = data[cfg.action_key].shape[1:]
    pcfg = PolicyConfig(obs_shapes=obs_shapes, action_dim=int(math.prod(action_shape)) if action_shape else 1,
                        n_obs_steps=cfg.n_obs_steps, action_horizon=cfg.action_horizon, noise_net=cfg.noise_net,
                        mlp_hidden=cfg.mlp_hidden, unet_down_dims=cfg.unet_down_dims,
                        unet_kernel_size=cfg.unet_kernel_size, num_train_timesteps=cfg.num_train_timesteps,
                        num_inference_steps=cfg.num_inference_steps)
    normalizer = LinearNormalizer()
    # Observations: zero mean / unit variance; actions: [-1, 1] (the range the DDIM sampler clips to).
    normalizer.fit({k: data[k][train_steps] for k in pcfg.lowdim_keys}, default_mode="gaussian")
    normalizer.fit({cfg.action_key: data[cfg.action_key][train_steps].reshape(len(train_steps), -1)},
                   default_mode="limits")
    policy = DiffusionPolicy(pcfg, normalizer)
    policy.action_key = cfg.action_key
    return policy


def train(cfg: TrainConfig) -> Path:
    """Runs the whole training; returns the run directory. Works single-process and under torchrun."""
    dist = init_distributed(cfg.device)
    try:
        return _train(cfg, dist)
    finally:
        cleanup(dist)


def _train(cfg: TrainConfig, dist) -> Path:
    t_start = time.time()
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.out
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    barrier(dist)
    logger = RunLogger(run_dir, dist, progress=cfg.progress)
    data, train_steps, train_ds, val_ds = load_training_data(cfg)
    if len(train_ds) == 0:
        raise ConfigError(f"{cfg.dataset}: no training windows (episodes too short for To={cfg.n_obs_steps}?)")
    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, data, train_steps).to(dist.device)
    log.info("training on %d windows from %d steps (%s)", len(train_ds), len(train_steps), cfg.dataset)

    posterior, ensemble_info = None, {}
    if cfg.is_bc:
        log.info("alpha = 0: plain BC, no ensemble trained")
    else:
        model, members = fit_ensemble(train_ds, policy, cfg, dist, logger)
        preds = predict_windows(model, train_ds, policy, dist)  # (K, N, D)
        posterior = posterior_from_predictions(preds, cfg.covariance, cfg.cov_jitter)
        if cfg.perturbation == "isotropic":
            posterior = isotropic_like(posterior)
        ensemble_info = {"ensemble_size": cfg.ensemble_size, "bootstrap": cfg.bootstrap, "head": cfg.ensemble_head,
                         "covariance": cfg.covariance, "posterior": posterior.summary()}
        full_state = gather_ensemble_state(model, dist)
        if dist.is_main:
            save_checkpoint(run_dir / ENSEMBLE_FILE, "ensemble", full_state, {
                "num_members": cfg.ensemble_size, "obs_shapes": {k: list(v) for k, v in
                                                                  policy.config.obs_shapes.items()},
                "n_obs_steps": cfg.n_obs_steps, "out_dim": cfg.action_horizon * policy.config.action_dim,
                "hidden_dims": list(cfg.ensemble_hidden), "head": cfg.ensemble_head, "bootstrap": cfg.bootstrap,
                "dataset": str(cfg.dataset)})
            (run_dir / "posterior.json").write_text(json.dumps(posterior.summary(), indent=2))
            log.info("posterior: mean std %.4f (normalized action units) over %d states", posterior.mean_std,
                     posterior.factor.shape[0])
        del model

    info = {"train": {"alpha": cfg.alpha, "perturbation": cfg.perturbation if not cfg.is_bc else "none",
                      "dataset": str(cfg.dataset), "seed": cfg.seed, "steps": cfg.steps,
                      "world_size": dist.world_size, **ensemble_info}}

    def save(ema_model, step_no: int) -> Path:
        return save_policy(ema_model, run_dir / "checkpoints" / f"step_{step_no:07d}.safetensors",
                           {**info, "step": step_no})

    ema = fit_policy(policy, train_ds, posterior, cfg, dist, logger, val_dataset=val_ds,
                     save_fn=save if dist.is_main else None)
    if dist.is_main:
        info["train"]["wall_time_s"] = round(time.time() - t_start, 1)
        save_policy(ema.model, run_dir / POLICY_FILE, {**info, "step": cfg.steps})
        log.info("wrote %s", run_dir / POLICY_FILE)
    logger.close()
    barrier(dist)
    return run_dir
