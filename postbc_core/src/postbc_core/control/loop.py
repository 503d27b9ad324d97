"""The one episode loop: N environments stepped in lockstep by an actor, every step through the same code.

Sim evaluation, finetuning (training and evaluation episodes), chunk-jump analysis and the scripted demonstrations
all run `run_episodes`; they differ only in the `Actor` they plug in (a policy with its history and chunk queue, the
finetuner, a scripted operator) and in the `Watcher`s that look on (videos, an episode store). Per step and
environment the loop:

1. asks the actor for the actions of every running environment at once (one batched policy call per replan);
2. clips each action to the environment's action bounds when `clip_actions` (counted; the action keeps the dtype the
   actor gave it) and steps the environment, whose one SafetyLayer filters the command;
3. builds the stored row (control/rows.step_row: observation before the command, the command sent in both
   conventions, reward, done, and the actor's action before clipping under the actor's `action_row_key`:
   `policy_action` for a policy) when `record` and the environment reports the command it sent
   (info["joint_target"], info["gripper_target"]);
4. hands the step to the actor and the watchers, and at an episode's end its `EpisodeResult`; a free slot takes the
   next pending episode at once.

Episode i runs with seed seeds[i] whichever slot runs it, so results do not depend on the number of environments.
Environments follow the sim Task interface: reset(seed) -> obs; step(action) -> (obs, reward, terminated, truncated,
info); action_bounds() and config.action_mode when actions are clipped or rows recorded.

Shape legend: N environments, n running environments, Da action dim (7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from postbc_core.control.rows import step_row
from postbc_core.control.spec import stack_rows
from postbc_core.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class Step:
    """One control step of one environment."""

    obs: dict
    """The observation before the action (raw, the environment's keys)."""
    action: np.ndarray
    """(Da,) the actor's action."""
    executed: np.ndarray
    """(Da,) what the environment was given (the action clipped to its bounds when the loop clips)."""
    reward: float
    terminated: bool
    truncated: bool
    info: dict
    next_obs: dict
    row: dict | None
    """The store row of this step (when recording), which an actor may complete before it is kept."""


@dataclass
class EpisodeResult:
    """The outcome of one episode."""

    episode: int
    seed: int
    success: bool = False
    ret: float = 0.0
    length: int = 0
    safety_altered: int = 0
    """Steps whose command the safety layer changed."""
    clipped: int = 0
    """Steps whose action was outside the action bounds (clipped)."""
    rows: list[dict] | None = None
    start_time: float = field(default_factory=time.time)
    end_time: float = 0.0

    def episode_data(self) -> dict[str, np.ndarray]:
        """The recorded rows as one episode's arrays key -> (T, *shape) in store dtypes."""
        if not self.rows:
            raise ConfigError(f"episode {self.episode} recorded no rows (run_episodes(record=True))")
        return stack_rows(self.rows)

    def summary(self) -> dict:
        return {"episode": self.episode, "seed": self.seed, "success": self.success, "return": round(self.ret, 6),
                "length": self.length}


class Watcher:
    """Looks on at episodes: start(slot, episode, env) after the reset, observe(slot, step) after every step,
    end(slot, result, env) when the episode is over. Every method is optional (no-ops here)."""

    def start(self, slot: int, result: EpisodeResult, obs: dict, env) -> None:
        pass

    def observe(self, slot: int, step: Step, env) -> None:
        pass

    def end(self, slot: int, result: EpisodeResult, env) -> None:
        pass

    def abort(self, slot: int) -> None:
        """The loop is stopping (an exception) with this slot's episode unfinished."""


class Actor(Watcher):
    """Chooses the actions. act(slots, obs) -> (n, Da): one action per running slot, for their current
    observations (one call per loop step, so a policy can batch its inference)."""

    action_row_key: str | None = None
    """The key under which each recorded row keeps the actor's action as chosen (float32, before clipping):
    "policy_action" for a policy (PolicyActor: its actions are data). None (an actor whose action the row already
    holds: a scripted operator's EE delta is the row's cmd_ee_delta; or one that completes the row itself, the
    finetuner) adds no key."""

    def act(self, slots: list[int], obs: list[dict]) -> np.ndarray:
        raise NotImplementedError


def run_episodes(envs: Sequence, actor: Actor, seeds: Sequence[int], *, record: bool = False,
                 clip_actions: bool = True, watchers: Sequence[Watcher] = ()) -> list[EpisodeResult]:
    """Runs len(seeds) episodes over the environments `envs` (see the module docstring). Returns the results in
    episode order. record: build each step's store row (kept in EpisodeResult.rows)."""
    if not envs:
        raise ConfigError("run_episodes needs at least one environment")
    lookers: list[Watcher] = [actor, *watchers]
    n_slots = min(len(envs), len(seeds))
    bounds = [e.action_bounds() if clip_actions else None for e in envs[:n_slots]]
    pending = list(range(len(seeds)))
    running: list[EpisodeResult | None] = [None] * n_slots
    obs: list[dict | None] = [None] * n_slots
    results: list[EpisodeResult | None] = [None] * len(seeds)

    def start(j: int) -> None:
        ep = pending.pop(0)
        res = running[j] = EpisodeResult(episode=ep, seed=int(seeds[ep]), rows=[] if record else None)
        obs[j] = envs[j].reset(seed=res.seed)
        for w in lookers:
            w.start(j, res, obs[j], envs[j])

    for j in range(n_slots):
        start(j)
    try:
        while True:
            active = [j for j in range(n_slots) if running[j] is not None]
            if not active:
                break
            actions = actor.act(active, [obs[j] for j in active])
            for a, j in zip(actions, active):
                res, env = running[j], envs[j]
                executed = a
                if bounds[j] is not None:
                    executed = np.clip(a, *bounds[j]).astype(np.asarray(a).dtype)
                    if np.any(executed != a):
                        res.clipped += 1
                        logger.debug("episode %d step %d: action %s clipped to the action bounds", res.episode,
                                     res.length, np.round(np.asarray(a, np.float64), 4))
                prev = obs[j]
                obs[j], reward, terminated, truncated, info = env.step(executed)
                res.ret += reward
                res.length += 1
                res.success |= bool(info.get("success", False))
                res.safety_altered += bool(info.get("safety_altered", False))
                row = None
                if record and "joint_target" in info:
                    # cmd_ee_delta: the task's chained delta of this step (data.layout.EE_DELTA_CONVENTION)
                    row = step_row(prev, info["joint_target"], info["gripper_target"], ee_delta=info.get("ee_delta"),
                                   reward=reward, done=terminated)  # a time-limit truncation is not terminal
                    if actor.action_row_key is not None:
                        row[actor.action_row_key] = np.asarray(a, np.float32)
                step = Step(prev, a, executed, float(reward), bool(terminated), bool(truncated), info, obs[j], row)
                for w in lookers:
                    w.observe(j, step, env)
                if row is not None and res.rows is not None:
                    res.rows.append(row)
                if terminated or truncated:
                    res.end_time = time.time()
                    results[res.episode] = res
                    running[j] = None
                    for w in lookers:
                        w.end(j, res, env)
                    if pending:
                        start(j)
    except BaseException:
        for j in range(n_slots):
            if running[j] is not None:
                for w in lookers:
                    w.abort(j)
        raise
    return results
