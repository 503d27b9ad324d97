"""The one observation history and action-chunk queue of a receding-horizon policy, for N environments.

`ObsHistory` keeps the last To observations of each environment; after `reset` the first observation is repeated To
times, the same padding the training windows use at an episode start (`windows_from_rows` builds those windows from
stored rows, so a window recomputed from the store equals the live one). `ChunkQueue` holds the actions still to run
of each environment's current chunk: a new chunk is due when its queue is empty, and only its first n_action_steps
actions are queued (diffusion_policy's env runners, lerobot's action queue). PolicyRunner, the finetuner and DSRL's
noise view of a policy all keep their state here.

Shape legend: N environments, To obs steps, Ta action steps, Da action dim.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from postbc_core.errors import ConfigError


def _check_ids(ids: Sequence[int] | None, n: int) -> list[int]:
    ids = list(range(n)) if ids is None else [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise ConfigError(f"env ids {bad} out of range for {n} environments")
    return ids


class ObsHistory:
    """Last `n_obs_steps` step observations ({key: per-step array}) of each of `num_envs` environments."""

    def __init__(self, keys: Sequence[str], n_obs_steps: int, num_envs: int = 1):
        if n_obs_steps < 1 or num_envs < 1:
            raise ConfigError(f"n_obs_steps ({n_obs_steps}) and num_envs ({num_envs}) must be >= 1")
        self.keys = list(keys)
        self.n_obs_steps = int(n_obs_steps)
        self.num_envs = int(num_envs)
        self._hist: list[deque] = [deque(maxlen=self.n_obs_steps) for _ in range(self.num_envs)]

    def ids(self, env_ids: Sequence[int] | None = None) -> list[int]:
        """`env_ids` checked (all environments when None)."""
        return _check_ids(env_ids, self.num_envs)

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Forget the history of `env_ids` (all when None): the next observation starts an episode."""
        for i in self.ids(env_ids):
            self._hist[i].clear()

    def append(self, env_id: int, step: Mapping[str, np.ndarray]) -> None:
        """One step observation of environment `env_id` (the first after a reset is repeated To times)."""
        hist = self._hist[self.ids([env_id])[0]]
        if not hist:
            hist.extend(step for _ in range(self.n_obs_steps))
        else:
            hist.append(step)

    def stacked(self, env_ids: Sequence[int] | None = None, extra: Mapping[int, Mapping] | None = None
                ) -> dict[str, np.ndarray]:
        """The policy input of `env_ids`: {key: (n, To, *shape)}, oldest first. extra[env_id]: one more step
        observation appended to that environment's window without storing it (the window after a final step)."""
        ids = self.ids(env_ids)
        empty = [i for i in ids if not self._hist[i]]
        if empty:
            raise ConfigError(f"environments {empty} have no observation yet; call observe() or act() first")
        wins = []
        for i in ids:
            hist = list(self._hist[i])
            if extra and i in extra:
                hist = (hist + [extra[i]])[-self.n_obs_steps:]
            wins.append(hist)
        return {k: np.stack([np.stack([h[k] for h in win]) for win in wins]) for k in self.keys}


def windows_from_rows(rows: Mapping[str, np.ndarray], idx, keys: Sequence[str], n_obs_steps: int
                      ) -> dict[str, np.ndarray]:
    """Windows ending at rows `idx` of one episode's arrays (key: (T, *shape)) -> key: (len(idx), To, *shape),
    padded with row 0 at the episode start (ObsHistory's padding)."""
    idx = np.asarray(idx, np.int64)
    offsets = np.arange(-n_obs_steps + 1, 1)
    take = np.clip(idx[:, None] + offsets[None], 0, None)  # (n, To)
    return {k: np.asarray(rows[k])[take] for k in keys}


class ChunkQueue:
    """Actions still to execute from each environment's current chunk (n_action_steps of each chunk)."""

    def __init__(self, n_action_steps: int, num_envs: int = 1):
        self.n_action_steps = int(n_action_steps)
        self.num_envs = int(num_envs)
        self._queue: list[deque] = [deque() for _ in range(self.num_envs)]

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        for i in _check_ids(env_ids, self.num_envs):
            self._queue[i].clear()

    def due(self, env_ids: Sequence[int]) -> list[int]:
        """The positions in `env_ids` whose queue is empty: those environments need a new chunk now."""
        return [row for row, i in enumerate(env_ids) if not self._queue[i]]

    def put(self, env_id: int, chunk) -> None:
        """Queue the first n_action_steps actions of `chunk` (Ta, Da) for `env_id`."""
        self._queue[env_id].extend(np.asarray(chunk, np.float32)[: self.n_action_steps])

    def pop(self, env_ids: Sequence[int]) -> np.ndarray:
        """The next action of each of `env_ids`: (n, Da) float32."""
        return np.stack([self._queue[i].popleft() for i in env_ids]).astype(np.float32)
