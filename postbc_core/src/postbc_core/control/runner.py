"""Closed-loop control of N parallel environments with a diffusion policy (receding-horizon action chunks).

`PolicyRunner` keeps each environment's observation history and chunk queue (control/history.py), asks the policy
for one action chunk per environment whenever that environment's queue is empty (all such environments in one
batched `predict_action` call) and executes the first `n_action_steps` actions of each chunk before replanning, as
diffusion_policy's env runners do. Used by the episode loop's policy actor (sim evaluation, chunk analysis) and by the
ROS policy node, so it imports no sim or ROS code. `TemporalEnsembler` is ACT's alternative execution (a chunk every
step, overlapping predictions averaged). `ChunkStepper` executes planned chunks one control tick at a time with the
twin's EE-delta reference rule (the ROS policy node).

Shape legend: N environments, To obs steps, Ta action steps (chunk), Da action dim (7 for the WidowX).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from postbc_core.control.history import ChunkQueue, ObsHistory
from postbc_core.control.loop import Actor
from postbc_core.control.spec import ControlSpec
from postbc_core.errors import ConfigError
from postbc_core.robots.actions import ActionMode, EEDeltaExecutor

logger = logging.getLogger(__name__)


class PolicyRunner:
    """Receding-horizon controller of `num_envs` environments around a policy with
    `predict_action(obs: {key: (B, To, *shape)}, noise=None) -> (B, Ta, Da)`, `.config` and `.action_key`.

    history: after `reset(ids)` the first observation of each of those environments is repeated To times, the same
    padding the training windows use at an episode start. n_action_steps (default Ta) actions of every chunk run
    before the next prediction. `spec` (ControlSpec) says what the policy reads and commands.
    """

    def __init__(self, policy, num_envs: int = 1, n_action_steps: int | None = None):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.policy = policy
        self.spec = spec = ControlSpec.from_policy(policy, n_action_steps)
        self.num_envs = int(num_envs)
        self.obs_shapes = spec.obs_shapes
        self.n_obs_steps, self.action_horizon, self.n_action_steps = (spec.n_obs_steps, spec.action_horizon,
                                                                      spec.n_action_steps)
        self.action_key, self.action_mode = spec.action_key, spec.action_mode
        self.history = ObsHistory(spec.obs_keys, spec.n_obs_steps, self.num_envs)
        self.queue = ChunkQueue(spec.n_action_steps, self.num_envs)
        self.replanned = np.zeros(self.num_envs, bool)
        """Which environments got a fresh chunk in the last `act` call (DSRL: its noise was consumed)."""
        self.last_chunks = np.zeros((self.num_envs, spec.action_horizon, spec.action_dim), np.float32)
        """(N, Ta, Da) the latest chunk predicted for each environment."""
        self.n_predict_calls = 0

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Forget history and planned actions of `env_ids` (all when None), e.g. at an episode start."""
        self.history.reset(env_ids)
        self.queue.reset(env_ids)

    def observe(self, obs: Mapping[str, np.ndarray], env_ids: Sequence[int] | None = None) -> list[int]:
        """Appends one observation per environment to its history without acting (the first observation after
        `reset` is repeated To times). obs[key]: (n, *shape) for `env_ids` (all N when None). Returns the ids.

        `act` calls this; an asynchronous caller (the ROS policy node) calls it every control tick and plans on
        its own schedule from `stacked_history`."""
        ids = self.history.ids(env_ids)
        self.spec.check_batch(obs, len(ids))
        for row, i in enumerate(ids):
            self.history.append(i, {k: np.asarray(obs[k][row]) for k in self.obs_shapes})
        return ids

    def stacked_history(self, env_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """The policy input of `env_ids`: {key: (n, To, *shape)} from their observation histories."""
        return self.history.stacked(env_ids)

    def act(self, obs: Mapping[str, np.ndarray], env_ids: Sequence[int] | None = None,
            noise: np.ndarray | None = None) -> np.ndarray:
        """One control step. obs[key]: (n, *shape) current observations of `env_ids` (all N when None; only the
        policy's keys are read). noise: (n, Ta, Da) initial DDIM noise per row (DSRL), used for the rows that replan.
        Returns (n, Da) float32 actions in the policy's action units (see `action_mode`)."""
        ids = self.history.ids(env_ids)
        n = len(ids)
        if noise is not None and tuple(np.shape(noise)) != (n, *self.spec.noise_shape):
            raise ConfigError(f"noise has shape {tuple(np.shape(noise))}, expected {(n, *self.spec.noise_shape)}")
        self.observe(obs, ids)
        self.replanned[:] = False
        rows = self.queue.due(ids)
        if rows:
            batch = self.stacked_history([ids[r] for r in rows])  # (b, To, *shape)
            chunks = self.policy.predict_action(batch, noise=None if noise is None else np.asarray(noise)[rows])
            self.n_predict_calls += 1
            for r, chunk in zip(rows, chunks):
                i = ids[r]
                self.last_chunks[i] = chunk
                self.queue.put(i, chunk)
                self.replanned[i] = True
        return self.queue.pop(ids)


class TemporalEnsembler:
    """ACT's temporal ensembling of overlapping action chunks (Zhao et al. 2023, "Learning Fine-Grained Bimanual
    Manipulation with Low-Cost Hardware", RSS, Sec. IV-B): a chunk is predicted every step, and the action executed at
    step n averages every stored prediction for step n with weights w_i = exp(-k * i), i = 0 for the OLDEST
    prediction (ACT's reference code: k = 0.01, so older predictions weigh slightly more and actions change smoothly).

    `add(start_step, chunk)` stores a chunk (Ta, Da) whose row j is the action for step start_step + j;
    `action(step)` returns the weighted mean (Da,) over the stored chunks covering `step` (None when none does).
    """

    def __init__(self, action_horizon: int, decay: float = 0.01):
        if action_horizon < 1 or not decay >= 0:
            raise ConfigError(f"TemporalEnsembler needs action_horizon >= 1 and decay >= 0, got {action_horizon}, "
                              f"{decay}")
        self.action_horizon = int(action_horizon)
        self.decay = float(decay)
        self._chunks: dict[int, np.ndarray] = {}

    def reset(self) -> None:
        self._chunks.clear()

    def add(self, start_step: int, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.action_horizon:
            raise ConfigError(f"chunk has shape {chunk.shape}, expected ({self.action_horizon}, Da)")
        self._chunks[int(start_step)] = chunk

    def action(self, step: int) -> np.ndarray | None:
        # Chunks that end before `step` can never contribute again.
        for s in [s for s in self._chunks if s + self.action_horizon <= step]:
            del self._chunks[s]
        preds = [self._chunks[s][step - s] for s in sorted(self._chunks) if s <= step]  # oldest first
        if not preds:
            return None
        w = np.exp(-self.decay * np.arange(len(preds)))
        return (w[:, None] * np.stack(preds)).sum(0) / w.sum()


class ChunkStepper:
    """Executes action chunks one control tick at a time with the twin task's reference rule: the chunk planned
    from the observation of tick T0 holds the actions of ticks T0, T0 + 1, ... (`plan`); `command(tick, q_meas)`
    converts the action of `tick` given the joints measured at that tick through one robots.actions.EEDeltaExecutor
    (EE deltas chain from the previous tick's target, cut back to q_meas as the task cuts them), so for the same
    actions and measured joints it gives exactly the targets the twin's `Task.step` computes. A newer plan replaces
    the older from its first tick on. The ROS policy node's EE-delta path (the node cannot convert a chunk ahead of
    time: a cut depends on the joints measured at each step)."""

    def __init__(self, mode: ActionMode):
        self.mode = mode
        self.executor = EEDeltaExecutor()
        self._start: int | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> None:
        """Episode start: no plan; the next delta applies to the measured joints."""
        self.executor.reset()
        self._start = self._actions = None

    def plan(self, start_tick: int, actions) -> None:
        """actions (n, Da): the actions of ticks start_tick .. start_tick + n - 1."""
        a = np.asarray(actions, np.float64)
        if a.ndim != 2 or len(a) == 0:
            raise ConfigError(f"a plan needs actions of shape (n >= 1, Da), got {a.shape}")
        self._start, self._actions = int(start_tick), a

    def action(self, tick: int) -> np.ndarray | None:
        """The planned action (Da,) of `tick`, or None (no plan covers it)."""
        if self._start is None or not 0 <= tick - self._start < len(self._actions):
            return None
        return self._actions[tick - self._start]

    def command(self, tick: int, q_meas, action=None) -> tuple[np.ndarray, float] | None:
        """(joint targets (6,) rad, gripper target m) of `tick` given the joints q_meas (6,) rad measured at it, or
        None when no action is planned for it. `action` (Da,): execute this one instead of the plan's (e.g. a
        temporal ensemble's)."""
        a = self.action(tick) if action is None else action
        if a is None:
            return None
        return self.executor.step(a, self.mode, q_meas)


class PolicyActor(Actor):
    """A policy as the episode loop's actor (control/loop.py), through one PolicyRunner over the loop's slots.

    Paired evaluations: each episode draws its diffusion noise from its own generator seeded with the episode's
    seed, one (Ta, Da) draw per step (used when that episode replans), so an episode's actions do not depend on the
    number of environments, on the slot that runs it, on the other episodes in the batch or on the caller's torch
    random state; two policies evaluated with the same seeds see the same initial states and the same noise."""

    action_row_key = "policy_action"

    def __init__(self, runner: PolicyRunner):
        self.runner = runner
        self._noise_rng: list[np.random.Generator | None] = [None] * runner.num_envs

    def start(self, slot: int, result, obs: dict, env) -> None:
        self.runner.reset([slot])
        self._noise_rng[slot] = np.random.default_rng(result.seed)

    def act(self, slots: list[int], obs: list[dict]) -> np.ndarray:
        spec = self.runner.spec
        noise = np.stack([self._noise_rng[j].standard_normal(spec.noise_shape) for j in slots]).astype(np.float32)
        # float64 for the environment (the actions as predicted; the store keeps policy_action as float32)
        return self.runner.act(spec.batch(obs), env_ids=slots, noise=noise).astype(np.float64)
