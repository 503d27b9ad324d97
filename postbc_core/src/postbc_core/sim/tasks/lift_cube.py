"""lift_cube: grasp a 3 cm cube placed at a random pose on the table and lift it `lift_height` above the table.

Reset randomizes the cube's position (x, y) and yaw (uniform in [-pi/4, pi/4): one period of its 90-deg symmetry).
Recommended state keys: joint_pos, gripper_pos, object_pos (3,), object_yaw_feat (2,) = [sin 4 yaw, cos 4 yaw].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postbc_core.errors import ConfigError
from postbc_core.robots import kinematics
from postbc_core.sim.base import RandomizedQuantity, Task, TaskConfig, yaw_quat

CUBE_HALF = 0.015  # m, lift_cube.xml
SPAWN_X = (0.22, 0.36)  # m, reachable with the gripper pointing down
SPAWN_Y = (-0.12, 0.12)


@dataclass
class LiftCubeConfig(TaskConfig):
    max_steps: int = 80
    """Episode time limit in control steps (8 s at 10 Hz)."""
    lift_height: float = 0.05
    """Success: cube bottom at least this far (m) above the table."""

    def __post_init__(self):
        super().__post_init__()
        if not 0.01 <= self.lift_height <= 0.2:
            raise ConfigError(f"lift_height={self.lift_height} m: use 0.01..0.2")


class LiftCube(Task):
    name = "lift_cube"
    xml = "lift_cube.xml"
    config_cls = LiftCubeConfig
    object_body = "cube"
    object_yaw_symmetry = 4  # faces every 90 deg
    recommended_obs_keys = ("joint_pos", "gripper_pos", "object_pos", "object_yaw_feat")
    randomized_keys = (
        RandomizedQuantity("cube position (x, y)", ("object_pos", "object_pose", "ee_to_object"), "cube", "pos"),
        RandomizedQuantity("cube yaw", ("object_yaw_feat", "object_pose"), "cube", "yaw"),
    )

    def _randomize(self, rng):
        pos = [rng.uniform(*SPAWN_X), rng.uniform(*SPAWN_Y), CUBE_HALF]
        self.sim.set_free_body_pose("cube", pos, yaw_quat(rng.uniform(-np.pi / 4, np.pi / 4)))

    @classmethod
    def object_yaw_of(cls, pose) -> float:
        """Heading (rad) of whichever of the cube's local x / y face normals is closer to horizontal at cube pose
        (7,): the same yaw mod pi/2 as the x axis for an upright cube, still defined when the cube has tipped onto a
        side."""
        R = kinematics.quat_to_mat(np.asarray(pose, np.float64)[3:])
        axis = R[:, 0] if abs(R[2, 0]) <= abs(R[2, 1]) else R[:, 1]
        return float(np.arctan2(axis[1], axis[0]))

    @staticmethod
    def height_of(cube_pose) -> float:
        """Cube bottom above the table (m) at cube world pose (7,)."""
        return float(cube_pose[2] - CUBE_HALF)

    def height(self) -> float:
        """Cube bottom above the table (m)."""
        return self.height_of(self.sim.body_pose("cube"))

    def success(self) -> bool:
        return self.height() >= self.config.lift_height

    def dense_reward(self) -> float:
        d = np.linalg.norm(self.ee_pos_world() - self.sim.body_pose("cube")[:3])
        reach = 1.0 - np.tanh(10.0 * d)
        lift = np.clip(self.height() / self.config.lift_height, 0.0, 1.0)
        return float(0.3 * reach + 0.2 * self.grasped() + 0.5 * lift)

    @classmethod
    def _scene_extras(cls, poses):
        return {"object_height": np.array([cls.height_of(poses["cube"])])}

    def _extras(self):
        return {"ee_to_object": self.sim.body_pose("cube")[:3] - self.ee_pos_world()}
