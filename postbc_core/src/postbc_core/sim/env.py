"""gymnasium wrappers of the sim tasks: `WidowXEnv(task, **overrides)`, registered as "postbc/<TaskName>-v0".

Observation: Dict of the task's state keys (float32; `timestamp` float64) plus `<camera>_rgb` (H, W, 3) uint8 and
`<camera>_depth` (H, W) uint16 mm when enabled. `success` is reported in info, not in the observation.
Action: Box (7,) float32; "joint" = 6 absolute joint targets (rad) + gripper opening (m), "ee_delta" =
[dx dy dz (m) droll dpitch dyaw (rad)] + gripper (m), converted by robots.actions from the measured joints.
Out-of-range actions are clamped to the Box and logged. Works in gymnasium.vector.SyncVectorEnv/AsyncVectorEnv.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from postbc_core.errors import PostBCError
from postbc_core.sim.base import Task
from postbc_core.sim.registry import TASKS, make

logger = logging.getLogger(__name__)

GYM_IDS = {name: "postbc/" + "".join(p.capitalize() for p in name.split("_")) + "-v0" for name in TASKS}


class WidowXEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str | Task = "lift_cube", render_mode: str | None = None, **overrides):
        self.task = make(task, **overrides) if isinstance(task, str) else task
        if render_mode not in (None, "rgb_array"):
            raise PostBCError(f"render_mode={render_mode!r}: only 'rgb_array' is supported")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.task.config.control_hz}
        low, high = self.task.action_bounds()
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._low, self._high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        self.task.reset(seed=0)
        self.observation_space = spaces.Dict(
            {k: self._space_for(k, v) for k, v in self._convert(self.task.observation()).items()})

    @staticmethod
    def _space_for(key: str, value: np.ndarray) -> spaces.Space:
        if value.dtype == np.uint8:
            return spaces.Box(0, 255, value.shape, np.uint8)
        if value.dtype == np.uint16:
            return spaces.Box(0, 65535, value.shape, np.uint16)
        if key == "timestamp":
            return spaces.Box(0.0, np.inf, value.shape, np.float64)
        return spaces.Box(-np.inf, np.inf, value.shape, np.float32)

    @staticmethod
    def _convert(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in obs.items():
            if k == "success":
                continue
            if k == "timestamp":
                out[k] = np.asarray(v, dtype=np.float64)
            elif v.dtype in (np.uint8, np.uint16):
                out[k] = v
            else:
                out[k] = np.asarray(v, dtype=np.float32)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            obs = self.task.reset(seed=seed)
        else:
            # Draw the task seed from gymnasium's generator so a seeded first reset fixes all later episodes.
            obs = self.task.reset(seed=int(self.np_random.integers(2**31)))
        return self._convert(obs), {"success": bool(obs["success"])}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise PostBCError(f"action shape {a.shape} != {self.action_space.shape}")
        if not np.all(np.isfinite(a)):
            raise PostBCError(f"action contains non-finite values {a}")
        clipped = np.clip(a, self._low, self._high)
        if np.any(clipped != a):
            logger.warning("action %s outside the action space, clamped to %s", np.round(a, 4), np.round(clipped, 4))
        obs, reward, terminated, truncated, info = self.task.step(clipped)
        return self._convert(obs), reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        h, w = self.task.config.image_size
        return self.task.sim.render("front", w, h)[0]

    def close(self):
        self.task.close()


def register_envs() -> None:
    """Register every task under GYM_IDS (idempotent)."""
    for name, env_id in GYM_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="postbc_core.sim.env:WidowXEnv", kwargs={"task": name},
                         disable_env_checker=True)


register_envs()
