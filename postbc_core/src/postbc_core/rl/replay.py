"""The finetuning replay buffer: the zarr EpisodeStore on disk plus an in-memory index of macro transitions.

Every finetuning episode is one store episode (source "finetune", success label, task), so `postbc data validate`,
`postbc replay`, `postbc data ...` and training on it work unchanged. Per step (row t = the observation before
action t, the store's convention) the keys are:

    <obs keys>      everything the task / robot observes (joint_pos, gripper_pos, object_pose, ..., images)
    cmd_joint_pos   the executed (bound-clipped) command; cmd_ee_delta too in the sim (as `postbc eval` records)
    policy_action   (Da,) the frozen policy's action before clipping
    noise           (D,) = (Ta * Da,) the initial DDIM noise of the chunk *started at this step*; zeros on the other
                    steps of the chunk (the store refuses NaN, so "no noise here" is spelled by `decision`)
    decision        bool, True where a new chunk was decoded (its noise consumed)
    reward          float32 per-step reward
    done            bool, True on the terminal step (success termination); a time-limit end is not terminal

Macro transitions (s, w, a, r, s', done) are derived from an episode by `episode_transitions`: one per decision row
d_j; s = the policy features at d_j, w = noise[d_j], a = the normalized executed chunk decoded from (s, w) (the first
n steps; recomputing it avoids storing Ta*Da more floats per step and is exact up to float batch effects), r = the
plain sum of rewards over rows d_j .. d_{j+1} - 1, s' = features at d_{j+1}, done = done of its last row, steps =
d_{j+1} - d_j (control steps in the chunk). The last
chunk of an episode has no stored next observation (the store keeps observations *before* actions): when it ended
by termination s' is irrelevant (masked by done); when it ended by the time limit it is left out of the index.

The index is rebuilt from the store on resume by the same function, episode by episode, so a resumed run samples from
exactly the transitions an uninterrupted run has.

Shape legend: T steps of an episode, M macro transitions, F features, D noise size, n executed steps, Da action dim.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from postbc_core.control.history import windows_from_rows
from postbc_core.data.store import EpisodeStore
from postbc_core.data.writer import EpisodeWriter
from postbc_core.errors import StoreError
from postbc_core.rl.noise_env import NoisePolicy

log = logging.getLogger(__name__)

RL_KEYS = ("policy_action", "noise", "decision", "reward", "done")
TRANSITION_FIELDS = ("obs", "noise", "action", "reward", "next_obs", "done", "steps")


def episode_transitions(ep: dict[str, np.ndarray], noise_policy: NoisePolicy) -> dict[str, torch.Tensor]:
    """Macro transitions of one episode (arrays key -> (T, ...)) -> field -> (M, ...) tensors (see module doc)."""
    npol = noise_policy
    missing = [k for k in (*RL_KEYS, *npol.obs_keys) if k not in ep]
    if missing:
        raise StoreError(f"finetuning episode lacks keys {missing}; was it written by postbc finetune?")
    T = len(ep["reward"])
    dec = np.flatnonzero(np.asarray(ep["decision"], bool))
    if len(dec) == 0 or dec[0] != 0:
        raise StoreError("finetuning episode does not start with a decision step (decision[0] must be True)")
    ends = np.r_[dec[1:], T]  # exclusive end row of each chunk
    feats = npol.features(windows_from_rows(ep, dec, npol.obs_keys, npol.n_obs_steps))  # (M, F)
    rew = np.asarray(ep["reward"], np.float64)
    reward = np.array([rew[a:b].sum() for a, b in zip(dec, ends)], np.float32)
    done = np.asarray(ep["done"], bool)[ends - 1]
    keep = np.ones(len(dec), bool)
    keep[-1] = bool(done[-1])  # last chunk: kept only when terminal (no stored s' after a time-limit end)
    noise = torch.as_tensor(np.asarray(ep["noise"], np.float32)[dec])
    naction, _ = npol.decode(feats, noise)
    action = naction[:, : npol.n_action_steps].reshape(len(dec), -1)
    next_feats = torch.cat([feats[1:], feats[-1:]])  # the terminal chunk's s' is masked by done
    steps = (ends - dec).astype(np.float32)
    dev = feats.device
    out = {"obs": feats, "noise": noise.to(dev), "action": action, "reward": torch.as_tensor(reward, device=dev),
           "next_obs": next_feats, "done": torch.as_tensor(done.astype(np.float32), device=dev),
           "steps": torch.as_tensor(steps, device=dev)}
    idx = torch.as_tensor(np.flatnonzero(keep), device=feats.device)
    return {k: v.index_select(0, idx).float() for k, v in out.items()}


class ReplayBuffer:
    """EpisodeStore-backed replay: `begin_episode` / `append` / `commit` write one episode; `sample` draws macro
    transitions uniformly. Opening an existing store recovers it (uncommitted steps are dropped) and rebuilds the
    index."""

    def __init__(self, path: str | Path, noise_policy: NoisePolicy, *, task: str, device: torch.device | str = "cpu",
                 codecs: str | None = None):
        self.path = Path(path)
        self.noise_policy = noise_policy
        self.task = task
        self.device = torch.device(device)
        self.store = EpisodeStore.open(self.path, "a", codecs=codecs)  # codecs: camera keys (data/codecs.py)
        if self.store.recovery is not None:
            log.warning("replay store %s was interrupted mid-episode; recovered: %s", self.path, self.store.recovery)
        self._writer: EpisodeWriter | None = None
        self._parts: list[dict[str, torch.Tensor]] = []
        self._cat: dict[str, torch.Tensor] | None = None
        for i in range(self.store.n_episodes):
            self._parts.append(self._transitions(i))

    # -- index ---------------------------------------------------------------------------------------------------
    def _transitions(self, i: int) -> dict[str, torch.Tensor]:
        keys = [*RL_KEYS, *self.noise_policy.obs_keys]
        rows = episode_transitions(self.store.episode(i, keys), self.noise_policy)
        return {k: v.to(self.device) for k, v in rows.items()}

    @property
    def n_episodes(self) -> int:
        return self.store.n_episodes

    def __len__(self) -> int:
        return sum(len(p["reward"]) for p in self._parts)

    def transitions(self) -> dict[str, torch.Tensor]:
        """All indexed transitions, field -> (M_total, ...)."""
        if self._cat is None:
            if not self._parts:
                raise StoreError(f"{self.path}: the replay buffer holds no transitions yet")
            self._cat = {k: torch.cat([p[k] for p in self._parts]) for k in TRANSITION_FIELDS}
        return self._cat

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Uniform batch with replacement (`rng` is the finetuner's numpy Generator, saved in checkpoints)."""
        data = self.transitions()
        idx = torch.as_tensor(rng.integers(0, len(data["reward"]), size=batch_size), device=self.device)
        return {k: v.index_select(0, idx) for k, v in data.items()}

    # -- writing -------------------------------------------------------------------------------------------------
    def begin_episode(self, start_time: float | None = None) -> None:
        if self._writer is not None and self._writer.is_open:
            raise StoreError(f"{self.path}: an episode is already being recorded; commit or discard it first")
        self._writer = self.store.episode_writer(task=self.task, source="finetune", start_time=start_time)

    def append(self, row: dict[str, np.ndarray]) -> None:
        self._writer.append_step(row)

    def flush(self) -> None:
        """Write the recorded steps of the open episode to disk now (still uncommitted)."""
        self._writer.flush()

    def commit(self, success: bool | None) -> int:
        """Commit the open episode (the store's atomic commit point) and index its transitions; returns
        the number of new transitions."""
        i = self._writer.commit(success)
        self._writer = None
        part = self._transitions(i)
        self._parts.append(part)
        self._cat = None
        return len(part["reward"])

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    def close(self) -> None:
        self.discard()
        self.store.close()


def trim_store(path: str | Path, n_episodes: int) -> int:
    """Drops committed episodes past the first `n_episodes` (an episode committed after the last checkpoint was
    written); returns how many were dropped."""
    from postbc_core.data.tools import drop

    with EpisodeStore.open(path, "a") as store:  # recovers an uncommitted tail first
        n = store.n_episodes
    if n < n_episodes:
        raise StoreError(f"{path} holds {n} finetuning episodes but the checkpoint expects {n_episodes}: the store "
                         "was edited or replaced; restore it or start a new run with another --out")
    if n > n_episodes:
        log.warning("%s: dropping %d episode(s) committed after the last checkpoint", path, n - n_episodes)
        if n_episodes == 0:  # all of them (drop keeps at least one): the run's store goes, as a new run has none
            import shutil

            from postbc_core.data.lock import WriterLock
            from postbc_core.data.paths import real_path

            with WriterLock(path):
                shutil.rmtree(real_path(path))
        else:
            drop(path, range(n_episodes, n))
    return n - n_episodes
