"""`postbc train`: episode store -> bootstrap ensemble -> posterior covariance -> (Post)BC diffusion policy.

Writes a run directory:
  policy.safetensors     the deployable policy (EMA weights, config, normalizer) - `postbc_core.load_policy(dir)`
  ensemble.safetensors   the K-member ensemble (PostBC only)
  posterior.json         summary of the posterior std over training states (PostBC only)
  train_config.json      the full TrainConfig
  metrics.jsonl, tb/     training curves (TensorBoard: `tensorboard --logdir <run>/tb`)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from postbc_core.data.normalizer import LinearNormalizer
from postbc_core.errors import ConfigError, storage_errors
from postbc_core.policies.checkpoint import ENSEMBLE_FILE, POLICY_FILE, save_checkpoint, save_policy
from postbc_core.models.obs_encoder import is_rgb_shape
from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
from postbc_core.policies.settings import PolicySettings
from postbc_core.robots.observation import check_frame, resize_image
from postbc_core.runlog import METRICS_FILE, TB_DIR, RunLogger
from postbc_core.training.config import TrainConfig
from postbc_core.training.diffusion_fit import fit_policy
from postbc_core.training.distributed import barrier, cleanup, init_distributed
from postbc_core.training.ensemble_fit import (check_ensemble_encoder, fit_ensemble, gather_ensemble_state,
                                                  predict_windows)
from postbc_core.training.posterior import isotropic_like, posterior_from_predictions

log = logging.getLogger(__name__)


def load_training_data(cfg: TrainConfig):
    """Loads the needed keys into memory (camera keys at --image-size, resized as they are read) and builds train/val
    window datasets (split by episode). Also returns the task names the store's per-episode metadata records (sorted;
    empty for stores without that metadata, e.g. a diffusion_policy ReplayBuffer store with only data/ and
    meta/episode_ends) and the camera keys' stored and trained sizes (image_sizes)."""
    from postbc_core.data import EpisodeStore, WindowDataset, get_val_mask

    with EpisodeStore.open(cfg.dataset, mode="r") as store:
        wanted = [*cfg.obs_keys, cfg.action_key]
        missing = [k for k in wanted if k not in store.keys]
        if missing:
            raise ConfigError(f"{cfg.dataset} has no data key(s) {missing}; available: {sorted(store.keys)} "
                              "(set --obs-keys / --action-key)")
        if store.n_episodes == 0:
            raise ConfigError(f"{cfg.dataset} holds no committed episodes")
        check_action_key(cfg, store.schema())
        if "cmd_ee_delta" in wanted:  # its deltas must mean what every executor does with them (data/layout.py)
            store.check_ee_delta_convention("training on")
        check_split(cfg, store.n_episodes)
        tasks = store_tasks(store)
        warn_uncovered_randomization(cfg, tasks)
        images = image_sizes(cfg, store.schema())
        data = store.load([k for k in wanted if k not in images])
        data.update({k: load_frames(store, k, tuple(sizes["trained"])) for k, sizes in images.items()})
        episode_ends = np.asarray(store.episode_ends)
    n_ep = len(episode_ends)
    val_mask = get_val_mask(n_ep, cfg.val_ratio, seed=cfg.seed) if cfg.val_ratio > 0 else np.zeros(n_ep, bool)
    check_window_fits(cfg, np.diff(episode_ends, prepend=0)[~val_mask])
    common = dict(obs_keys=list(cfg.obs_keys), action_key=cfg.action_key, n_obs_steps=cfg.policy.n_obs_steps,
                  action_horizon=cfg.policy.action_horizon)
    train_ds = WindowDataset(data, episode_ends, episode_mask=~val_mask, **common)
    val_ds = WindowDataset(data, episode_ends, episode_mask=val_mask, **common) if val_mask.any() else None
    if val_ds is not None and len(val_ds) == 0:
        raise ConfigError(f"--val-ratio {cfg.val_ratio}: the {int(val_mask.sum())} validation episode(s) of "
                          f"{cfg.dataset} are too short for one window (To={cfg.policy.n_obs_steps}, "
                          f"Ta={cfg.policy.action_horizon}),"
                          " so there would be no validation loss; raise --val-ratio or use --val-ratio 0")
    # Normalizer statistics from training episodes only.
    starts = np.concatenate([[0], episode_ends[:-1]])
    train_steps = np.concatenate([np.arange(s, e) for s, e, v in zip(starts, episode_ends, val_mask) if not v])
    return data, train_steps, train_ds, val_ds, tasks, images


def image_sizes(cfg: TrainConfig, schema: dict) -> dict[str, dict[str, list[int]]]:
    """{camera key: {"stored": [h, w], "trained": [H, W]}} for the policy's camera keys (<camera>_rgb, or any (h, w, C)
    key), the record the checkpoint keeps; trained = --image-size or the stored size. Refused before any frame is
    read: a key that is not uint8 RGB, or whose aspect ratio --image-size would change (resize_image's one rule)."""
    out = {}
    for k in cfg.obs_keys:
        shape, dtype = schema[k]
        if not (k.endswith("_rgb") or is_rgb_shape(shape)):
            continue
        size = cfg.image_size or tuple(shape[:2])
        check_frame(shape, (*size, 3), camera=k)
        if dtype != np.uint8:
            raise ConfigError(f"image key {k!r} has dtype {dtype}; RGB observations must be uint8")
        out[k] = {"stored": [int(v) for v in shape[:2]], "trained": [int(v) for v in size]}
    if cfg.image_size and not out:
        log.warning("--image-size %d %d has nothing to resize: --obs-keys %s name no camera key", *cfg.image_size,
                    " ".join(cfg.obs_keys))
    return out


FRAME_CHUNK_BYTES = 64 << 20
"""Stored frames read at once while resizing at load time: RAM holds the training resolution plus this."""


def load_frames(store, key: str, size: tuple[int, int]) -> np.ndarray:
    """(T_total, H, W, 3) uint8 frames of image key `key` at `size` (H, W): read a chunk of stored frames at a time
    (whole zarr chunks, about FRAME_CHUNK_BYTES) and resized with resize_image, so the full-resolution store is never
    in memory at once. At the stored size, read as is."""
    shape = store.schema()[key][0]
    n = store.n_steps
    if tuple(shape[:2]) == tuple(size):
        return store.rows(key, 0, n)
    zarr_rows = max(1, int(store.data(key).chunks[0]))
    rows = max(1, FRAME_CHUNK_BYTES // (math.prod(shape) * zarr_rows)) * zarr_rows
    out = np.empty((n, *size, 3), np.uint8)
    for start in range(0, n, rows):
        for i, frame in enumerate(store.rows(key, start, min(n, start + rows)), start):
            out[i] = resize_image(frame, size)
    return out


def store_tasks(store) -> list[str]:
    """The distinct task names in a store's per-episode metadata (sorted); [] when it records none: stores without
    our metadata (diffusion_policy's layout, imports and merges of such) have no meta/task at all."""
    return sorted({str(t) for t in store.meta_table().get("task", ()) if str(t)})


def check_window_fits(cfg: TrainConfig, lengths: np.ndarray) -> None:
    """A training window spans To + Ta - 1 steps; windows reaching past an episode's ends are padded with its
    first / last step (diffusion_policy's sampler). Refuse when no training episode holds one unpadded window (every
    action chunk would be made up); say how many episodes are that short otherwise."""
    To, Ta = cfg.policy.n_obs_steps, cfg.policy.action_horizon
    need = To + Ta - 1
    short = lengths < need
    if not short.any():
        return
    sizes = f"--n-obs-steps {To} + --action-horizon {Ta} - 1 = {need} steps"
    if short.all():
        raise ConfigError(f"{cfg.dataset}: every training episode is shorter than one window ({sizes}; the longest "
                          f"has {int(lengths.max())}), so every action chunk would be padding; lower --action-horizon "
                          f"or --n-obs-steps so that To + Ta - 1 <= {int(lengths.max())}")
    log.warning("%d of %d training episodes of %s are shorter than one window (%s; the shortest has %d): their "
                "windows are padded by repeating their first / last step", int(short.sum()), len(lengths),
                cfg.dataset, sizes, int(lengths.min()))


NOT_ACTIONS = ("timestamp", "reward", "done")
"""Per-step bookkeeping keys (data/README.md), never an action: when a step happened (also every `<stream>_stamp`)
and how it went."""


def is_bookkeeping_key(key: str) -> bool:
    return key in NOT_ACTIONS or key.endswith("_stamp")


def check_action_key(cfg: TrainConfig, schema: dict) -> None:
    """One rule for actions: a numeric (not bool) vector (D,) or scalar per step that is not a bookkeeping key. The
    rest is refused before any training (flattened, a 128x128x3 image becomes a 49152-dim action chunk and the
    ensemble covariance explodes; a timestamp trains a policy that outputs clock readings)."""
    shape, dtype = schema[cfg.action_key]
    others = sorted(k for k, (sh, dt) in schema.items()
                    if len(sh) <= 1 and np.dtype(dt).kind == "f" and not is_bookkeeping_key(k))
    if is_bookkeeping_key(cfg.action_key):
        raise ConfigError(f"--action-key {cfg.action_key!r} is a bookkeeping key of {cfg.dataset} (timestamp, "
                          f"*_stamp, reward and done record when a step happened and how it went), not a command a "
                          f"policy can output. Vector keys in this store: {others}")
    if len(shape) > 1 or np.dtype(dtype).kind not in "fiu":
        raise ConfigError(f"--action-key {cfg.action_key!r} has per-step shape {tuple(shape)} dtype {np.dtype(dtype)} "
                          f"in {cfg.dataset}; an action must be a numeric vector (D,) or scalar per step (an image, a "
                          f"matrix or a bool flag is not an action). Vector keys in this store: {others}")
    if cfg.action_key in cfg.obs_keys:
        raise ConfigError(f"--action-key {cfg.action_key!r} is also in --obs-keys: the policy would see its own target")


def warn_uncovered_randomization(cfg: TrainConfig, tasks: list[str]) -> None:
    """Sim stores: warn when --obs-keys leave out what the task's reset randomizes (put_in_bowl without the bowl's
    position: the policy cannot know where to go). A warning, not an error: a deliberate ablation is legitimate.
    Only the sim tasks the store's metadata names count (none for a store without task metadata)."""
    from postbc_core.sim.registry import missing_randomized_keys, recommended_obs_keys

    for task in sorted(tasks):
        missing = missing_randomized_keys(task, cfg.obs_keys)
        if missing:
            log.warning("--obs-keys %s leave out what the sim task %r randomizes at every reset: %s; the policy cannot "
                        "see it. The task's recommended keys: --obs-keys %s", " ".join(cfg.obs_keys), task,
                        "; ".join(missing), " ".join(recommended_obs_keys(task)))


def check_split(cfg: TrainConfig, n_episodes: int) -> None:
    """Refuse a --val-ratio that leaves no validation episode and a PostBC bootstrap over one demonstration."""
    if cfg.val_ratio > 0 and n_episodes < 2:
        raise ConfigError(f"--val-ratio {cfg.val_ratio}: {cfg.dataset} has {n_episodes} episode, so no episode is "
                          "left for validation (the split is by episode and keeps one for training); record more "
                          "episodes or use --val-ratio 0")
    n_train = n_episodes - (get_val_mask_count(n_episodes, cfg.val_ratio) if cfg.val_ratio > 0 else 0)
    if not cfg.is_bc and cfg.bootstrap == "trajectory" and n_train < 2:
        raise ConfigError(f"PostBC (--alpha {cfg.alpha}) with --bootstrap trajectory needs at least 2 training "
                          f"episodes, {cfg.dataset} leaves {n_train}: every ensemble member would resample the same "
                          "demonstration and the posterior would be zero. Record more episodes, use --bootstrap "
                          "state_action, or --alpha 0 (plain BC)")


def get_val_mask_count(n_episodes: int, val_ratio: float) -> int:
    from postbc_core.data import get_val_mask

    return int(get_val_mask(n_episodes, val_ratio).sum())


def prepare_run_dir(cfg: TrainConfig) -> None:
    """Refuse a non-empty --out unless --overwrite (then remove the previous run's outputs, nothing else), so two runs
    never mix in one directory. Runs before any rank writes (torchrun: every rank checks, rank 0 removes)."""
    from postbc_core.data.paths import prepare_output_dir

    prepare_output_dir(cfg.out, overwrite=cfg.overwrite, owner="run", replaces="that run", kind="run directory",
                       inputs=[cfg.dataset], remove=int(os.environ.get("RANK", "0")) == 0,
                       own_outputs=lambda out: [out / n for n in RUN_OUTPUTS if (out / n).exists()])


RUN_OUTPUTS = (POLICY_FILE, ENSEMBLE_FILE, "posterior.json", "train_config.json", METRICS_FILE, TB_DIR, "checkpoints")
"""What `postbc train` writes into its run directory (what --overwrite removes)."""


def build_policy(cfg: TrainConfig, data: dict, train_steps: np.ndarray) -> DiffusionPolicy:
    obs_shapes = {k: tuple(data[k].shape[1:]) for k in cfg.obs_keys}
    action_shape = data[cfg.action_key].shape[1:]
    # The run's policy settings as they are; rgb_feature_dim, crop_ratio and beta_schedule keep PolicyConfig's
    # defaults; clip_sample_range is widened after the posterior (PostBC).
    pcfg = PolicyConfig(obs_shapes=obs_shapes, action_dim=int(math.prod(action_shape)) if action_shape else 1,
                        **{f.name: getattr(cfg.policy, f.name) for f in dataclasses.fields(PolicySettings)})
    normalizer = LinearNormalizer()
    # Observations: zero mean / unit variance with a floor on the std; actions: [-1, 1] (the range the DDIM sampler
    # clips to for BC; PostBC widens it after computing its posterior).
    normalizer.fit({k: data[k][train_steps] for k in pcfg.lowdim_keys}, default_mode="gaussian",
                   std_floor=cfg.obs_std_floor)
    normalizer.fit({cfg.action_key: data[cfg.action_key][train_steps].reshape(len(train_steps), -1)},
                   default_mode="limits")
    policy = DiffusionPolicy(pcfg, normalizer)
    policy.action_key = cfg.action_key
    return policy


def train(cfg: TrainConfig) -> Path:
    """Runs the whole training; returns the run directory. Works single-process and under torchrun."""
    prepare_run_dir(cfg)
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
    # The data is loaded and checked before anything is written, so bad input leaves no half run behind.
    data, train_steps, train_ds, val_ds, tasks, images = load_training_data(cfg)
    if len(train_ds) == 0:
        raise ConfigError(f"{cfg.dataset}: no training windows (episodes too short for To={cfg.policy.n_obs_steps}?)")
    if not cfg.is_bc:
        check_ensemble_encoder(cfg.ensemble_encoder, cfg.obs_keys, bool(images), dist.world_size)
    if dist.is_main:
        with storage_errors(f"writing the run directory {run_dir}"):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    barrier(dist)
    with storage_errors(f"writing the run directory {run_dir}"):
        logger = RunLogger(run_dir, is_main=dist.is_main, progress=cfg.progress)
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
        if cfg.sample_clip == "posterior":
            policy.set_sample_range(posterior.sample_range(cfg.alpha))
            log.info("DDIM clip range widened to +-%.3f (normalized action units) to cover the perturbed targets",
                     policy.config.clip_sample_range)
        ensemble_info = {"ensemble_size": cfg.ensemble_size, "bootstrap": cfg.bootstrap, "head": cfg.ensemble_head,
                         "posterior_mix": cfg.posterior_mix, "sample_clip": cfg.sample_clip,
                         "ensemble_encoder": cfg.ensemble_encoder if images else "none",
                         "covariance": cfg.covariance, "posterior": posterior.summary()}
        full_state = gather_ensemble_state(model, dist)
        if dist.is_main:
            save_checkpoint(run_dir / ENSEMBLE_FILE, "ensemble", full_state, {
                "num_members": cfg.ensemble_size, "obs_shapes": {k: list(v) for k, v in
                                                                  policy.config.obs_shapes.items()},
                "n_obs_steps": policy.config.n_obs_steps, "image_encoder": policy.config.image_encoder,
                "out_dim": policy.config.action_horizon * policy.config.action_dim,
                "hidden_dims": list(cfg.ensemble_hidden), "head": cfg.ensemble_head, "bootstrap": cfg.bootstrap,
                "shared_encoder": cfg.ensemble_encoder == "shared",
                "dataset": str(cfg.dataset)})
            with storage_errors(f"writing {run_dir / 'posterior.json'}"):
                (run_dir / "posterior.json").write_text(json.dumps(posterior.summary(), indent=2))
            log.info("posterior: mean std %.4f (normalized action units) over %d states", posterior.mean_std,
                     posterior.factor.shape[0])
        del model

    # tasks: what the training store's metadata names (postbc eval refuses another sim task)
    info = {"train": {"alpha": cfg.alpha, "perturbation": cfg.perturbation if not cfg.is_bc else "none",
                      "dataset": str(cfg.dataset), "tasks": tasks, "seed": cfg.seed, "steps": cfg.steps,
                      "world_size": dist.world_size, **ensemble_info}}
    if images:  # the resolution the store holds and the one the policy sees (its obs_shapes)
        info["train"]["image_size"] = images

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
