"""Fixed-length windows over episodes, with diffusion_policy's sampler semantics.

Shape legend: B batch, L window (sequence) length, To obs steps, Ta action steps, Da action dim,
N windows. A window that reaches past an episode's start or end is padded by repeating the
episode's first or last frame (never by borrowing frames of a neighbouring episode).

`create_indices` / `get_val_mask` / `SequenceSampler.sample_sequence` reproduce
diffusion_policy.common.sampler; `sample_batch` is the vectorised equivalent used in training loops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from postbc_core.errors import ConfigError


def create_indices(episode_ends, sequence_length: int, pad_before: int = 0, pad_after: int = 0,
                   episode_mask=None) -> np.ndarray:
    """(N, 4) int64 rows [buffer_start, buffer_end, sample_start, sample_end]: window i copies
    buffer[buffer_start:buffer_end] into window[sample_start:sample_end] and edge-pads the rest.
    pad_before / pad_after are clipped to [0, sequence_length - 1] as in diffusion_policy."""
    episode_ends = np.asarray(episode_ends, dtype=np.int64)
    if sequence_length < 1:
        raise ConfigError(f"sequence_length={sequence_length} must be >= 1")
    if episode_mask is None:
        episode_mask = np.ones(episode_ends.shape, dtype=bool)
    episode_mask = np.asarray(episode_mask, dtype=bool)
    if episode_mask.shape != episode_ends.shape:
        raise ConfigError(f"episode_mask has shape {episode_mask.shape}, expected {episode_ends.shape} "
                          "(one flag per episode)")
    pad_before = min(max(int(pad_before), 0), sequence_length - 1)
    pad_after = min(max(int(pad_after), 0), sequence_length - 1)
    rows = []
    starts = np.concatenate([[0], episode_ends[:-1]]) if episode_ends.size else episode_ends
    for i in np.nonzero(episode_mask)[0]:
        start, end = int(starts[i]), int(episode_ends[i])
        length = end - start
        # window offsets relative to the episode start (negative = before it), as in diffusion_policy
        idx = np.arange(-pad_before, length - sequence_length + pad_after + 1, dtype=np.int64)
        if idx.size == 0:
            continue
        buf_start = np.maximum(idx, 0) + start
        buf_end = np.minimum(idx + sequence_length, length) + start
        sample_start = buf_start - (idx + start)
        sample_end = sequence_length - ((idx + sequence_length + start) - buf_end)
        rows.append(np.stack([buf_start, buf_end, sample_start, sample_end], axis=1))
    if not rows:
        return np.zeros((0, 4), dtype=np.int64)
    return np.concatenate(rows).astype(np.int64)


def get_val_mask(n_episodes: int, val_ratio: float, seed: int = 0) -> np.ndarray:
    """(n_episodes,) bool, True = validation episode (diffusion_policy semantics: at least one
    validation episode when val_ratio > 0, and at least one training episode)."""
    val_mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0:
        return val_mask
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    rng = np.random.default_rng(seed=seed)
    val_idxs = rng.choice(n_episodes, size=n_val, replace=False)
    val_mask[val_idxs] = True
    return val_mask


def _episode_of_rows(episode_ends: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.searchsorted(episode_ends, rows, side="right").astype(np.int64)


class SequenceSampler:
    """Windows of `sequence_length` steps over in-memory (or zarr) arrays.

    data: key -> (T_total, ...) array; episode_ends: (E,) cumulative ends. key_first_k: load only
    the first k frames of a window for that key; later positions are NaN (float) or 0 (other dtypes;
    diffusion_policy would fill NaN, which integer arrays cannot hold).
    """

    def __init__(self, data: Mapping[str, Any], episode_ends, sequence_length: int, pad_before: int = 0,
                 pad_after: int = 0, episode_mask=None, key_first_k: Mapping[str, int] | None = None):
        self.episode_ends = np.asarray(episode_ends, dtype=np.int64)
        total = int(self.episode_ends[-1]) if self.episode_ends.size else 0
        for k, v in data.items():
            if v.shape[0] < total:
                raise ConfigError(f"data[{k!r}] has {v.shape[0]} steps but episode_ends needs {total}")
        self.data = dict(data)
        self.keys = list(self.data)
        self.sequence_length = int(sequence_length)
        self.indices = create_indices(self.episode_ends, sequence_length, pad_before, pad_after, episode_mask)
        self.key_first_k = dict(key_first_k or {})
        for k in self.key_first_k:
            if k not in self.data:
                raise ConfigError(f"key_first_k names {k!r}, which is not a data key ({self.keys})")
        self.episode_index = _episode_of_rows(self.episode_ends, self.indices[:, 0]) if len(self.indices) else \
            np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def sample_sequence(self, idx: int) -> dict[str, np.ndarray]:
        """Window `idx`: key -> (L, ...) array (diffusion_policy's loop, kept literal)."""
        buffer_start, buffer_end, sample_start, sample_end = (int(v) for v in self.indices[idx])
        L = self.sequence_length
        out = {}
        for key in self.keys:
            arr = self.data[key]
            if key not in self.key_first_k:
                sample = np.asarray(arr[buffer_start:buffer_end])
            else:
                n_data = buffer_end - buffer_start
                k_data = min(self.key_first_k[key], n_data)
                sample = np.full((n_data,) + tuple(arr.shape[1:]), _fill_value(arr.dtype), dtype=arr.dtype)
                sample[:k_data] = arr[buffer_start: buffer_start + k_data]
            window = sample
            if sample_start > 0 or sample_end < L:
                window = np.zeros((L,) + tuple(arr.shape[1:]), dtype=arr.dtype)
                if sample_start > 0:
                    window[:sample_start] = sample[0]
                if sample_end < L:
                    window[sample_end:] = sample[-1]
                window[sample_start:sample_end] = sample
            out[key] = window
        return out

    def window_rows(self, idxs) -> np.ndarray:
        """(B, L) int64 buffer row of every window position (edge padding = clipping to the window's
        buffer range)."""
        ind = self.indices[np.asarray(idxs, dtype=np.int64)]
        j = np.arange(self.sequence_length, dtype=np.int64)[None, :]
        rows = ind[:, 0:1] + (j - ind[:, 2:3])
        return np.clip(rows, ind[:, 0:1], ind[:, 1:2] - 1)

    def sample_batch(self, idxs: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Windows `idxs`: key -> (B, L, ...) array, identical to stacking `sample_sequence`."""
        idxs = np.asarray(idxs, dtype=np.int64)
        rows = self.window_rows(idxs)
        out = {}
        for key in self.keys:
            arr = self.data[key]
            if isinstance(arr, np.ndarray):
                batch = arr[rows]
            else:  # zarr or other lazy arrays: contiguous reads per window
                batch = np.stack([self.sample_sequence(int(i))[key] for i in idxs]) if idxs.size else \
                    np.zeros((0, self.sequence_length) + tuple(arr.shape[1:]), dtype=arr.dtype)
                out[key] = batch
                continue
            k = self.key_first_k.get(key)
            if k is not None:
                offset = rows - self.indices[idxs, 0:1]
                batch[offset >= k] = _fill_value(arr.dtype)
            out[key] = batch
        return out


def _fill_value(dtype) -> Any:
    return np.nan if np.dtype(dtype).kind == "f" else 0


class WindowDataset(Dataset):
    """Observation/action windows for policy training (a torch Dataset; items are numpy arrays,
    which torch's default collate turns into tensors).

    Window length L = To + Ta - 1 with pad_before = To - 1 and pad_after = Ta - 1; obs = window[:To]
    (the current step is To - 1), action = window[To-1 : To-1+Ta] flattened to (Ta, Da) float32.
    """

    def __init__(self, data: Mapping[str, Any], episode_ends, obs_keys: Sequence[str], action_key: str,
                 n_obs_steps: int, action_horizon: int, episode_mask=None):
        if n_obs_steps < 1 or action_horizon < 1:
            raise ConfigError(f"n_obs_steps={n_obs_steps} and action_horizon={action_horizon} must both be >= 1")
        obs_keys = [obs_keys] if isinstance(obs_keys, str) else list(obs_keys)
        for k in [*obs_keys, action_key]:
            if k not in data:
                raise ConfigError(f"key {k!r} is not in the data (available: {sorted(data)})")
        self.obs_keys = obs_keys
        self.action_key = action_key
        self.n_obs_steps = int(n_obs_steps)
        self.action_horizon = int(action_horizon)
        keys = list(dict.fromkeys([*obs_keys, action_key]))
        self.sampler = SequenceSampler({k: data[k] for k in keys}, episode_ends,
                                       sequence_length=self.n_obs_steps + self.action_horizon - 1,
                                       pad_before=self.n_obs_steps - 1, pad_after=self.action_horizon - 1,
                                       episode_mask=episode_mask)
        self.episode_index = self.sampler.episode_index
        self.action_dim = int(np.prod(data[action_key].shape[1:], dtype=np.int64))

    @classmethod
    def from_store(cls, store, obs_keys: Sequence[str], action_key: str, n_obs_steps: int, action_horizon: int,
                   episode_mask=None) -> WindowDataset:
        """Load the needed keys of an EpisodeStore into memory and window them."""
        obs_keys = [obs_keys] if isinstance(obs_keys, str) else list(obs_keys)
        data = store.load(list(dict.fromkeys([*obs_keys, action_key])))
        return cls(data, store.episode_ends, obs_keys, action_key, n_obs_steps, action_horizon, episode_mask)

    def __len__(self) -> int:
        return len(self.sampler)

    def _split(self, win: dict[str, np.ndarray], lead: tuple[slice, ...]) -> dict[str, Any]:
        To, Ta = self.n_obs_steps, self.action_horizon
        obs = {k: win[k][lead + (slice(0, To),)] for k in self.obs_keys}
        act = win[self.action_key][lead + (slice(To - 1, To - 1 + Ta),)]
        act = act.reshape(act.shape[: len(lead) + 1] + (self.action_dim,)).astype(np.float32, copy=False)
        return {"obs": obs, "action": act}

    def __getitem__(self, i: int) -> dict[str, Any]:
        """{"obs": {key: (To, ...)}, "action": (Ta, Da) float32, "index": i}."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)} windows)")
        i %= len(self)
        out = self._split(self.sampler.sample_sequence(i), ())
        out["index"] = i
        return out

    def get_batch(self, idxs) -> dict[str, Any]:
        """{"obs": {key: (B, To, ...)}, "action": (B, Ta, Da) float32, "index": (B,)}."""
        idxs = np.asarray(idxs, dtype=np.int64)
        out = self._split(self.sampler.sample_batch(idxs), (slice(None),))
        out["index"] = idxs
        return out
