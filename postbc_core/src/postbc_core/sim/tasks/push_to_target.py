"""push_to_target: push a puck across the table onto a target disc.

Reset randomizes the puck's position (x, y) and the target's (x, y) (direction from the puck uniform over the circle,
distance TARGET_DIST). The puck is round and spawns at yaw 0: no yaw key. Recommended state keys: joint_pos,
gripper_pos, object_pos, target_pos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postbc_core.errors import ConfigError
from postbc_core.sim.base import RandomizedQuantity, Task, TaskConfig

PUCK_HALF_HEIGHT = 0.015  # m, push_to_target.xml
REGION_X = (0.22, 0.38)
REGION_Y = (-0.15, 0.15)
TARGET_DIST = (0.08, 0.16)  # m, initial puck-target distance (never starts inside the success radius)


@dataclass
class PushToTargetConfig(TaskConfig):
    max_steps: int = 80
    """Episode time limit in control steps (8 s at 10 Hz)."""
    success_radius: float = 0.03
    """Success: puck centre within this horizontal distance (m) of the target centre."""

    def __post_init__(self):
        super().__post_init__()
        if not 0.005 <= self.success_radius < TARGET_DIST[0]:
            raise ConfigError(f"success_radius={self.success_radius} m: use 0.005..{TARGET_DIST[0]}")


class PushToTarget(Task):
    name = "push_to_target"
    xml = "push_to_target.xml"
    config_cls = PushToTargetConfig
    object_body = "puck"
    recommended_obs_keys = ("joint_pos", "gripper_pos", "object_pos", "target_pos")
    randomized_keys = (
        RandomizedQuantity("puck position (x, y)", ("object_pos", "object_pose", "ee_to_object"), "puck", "pos"),
        RandomizedQuantity("target position (x, y)", ("target_pos", "object_to_target"), "target", "pos"),
    )

    def _randomize(self, rng):
        mocap = self.sim.model.body("target").mocapid[0]
        while True:
            puck = np.array([rng.uniform(*REGION_X), rng.uniform(*REGION_Y)])
            ang, dist = rng.uniform(-np.pi, np.pi), rng.uniform(*TARGET_DIST)
            target = puck + dist * np.array([np.cos(ang), np.sin(ang)])
            if REGION_X[0] <= target[0] <= REGION_X[1] and REGION_Y[0] <= target[1] <= REGION_Y[1]:
                break
        self.sim.data.mocap_pos[mocap] = [*target, 0.0]
        self.sim.set_free_body_pose("puck", [*puck, PUCK_HALF_HEIGHT])

    def target_pos(self) -> np.ndarray:
        """Target disc centre (3,) m, world (its mocap position; the `target_pos` key reads the same value from the
        target body's pose, which MuJoCo copies from it)."""
        return self.sim.data.mocap_pos[self.sim.model.body("target").mocapid[0]].copy()

    def distance(self) -> float:
        return float(np.linalg.norm(self.sim.body_pose("puck")[:2] - self.target_pos()[:2]))

    def success(self) -> bool:
        return self.distance() < self.config.success_radius

    def dense_reward(self) -> float:
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(self.ee_pos_world() - self.sim.body_pose("puck")[:3]))
        return float(0.3 * reach + 0.7 * (1.0 - np.tanh(10.0 * self.distance())))

    @classmethod
    def _scene_extras(cls, poses):
        # The target is a mocap body: its published pose is its mocap position (scene_bodies lists mocap bodies).
        t = poses["target"][:3].copy()
        return {"target_pos": t, "object_to_target": t - poses["puck"][:3]}

    def _extras(self):
        return {"ee_to_object": self.sim.body_pose("puck")[:3] - self.ee_pos_world()}
