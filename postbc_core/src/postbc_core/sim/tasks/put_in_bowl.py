"""put_in_bowl: pick the corn and place it in the bowl (the PostBC paper's WidowX "put corn in pot" analogue).

Reset randomizes the corn's position (x, y) and yaw (uniform in [-pi, pi); the capsule looks the same every 180 deg)
and the bowl's position (x, y) and yaw (cosmetic: 12 wall segments, the task does not depend on it).
Recommended state keys: joint_pos, gripper_pos, object_pos, object_yaw_feat = [sin 2 yaw, cos 2 yaw], bowl_pos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postbc_core.sim.base import RandomizedQuantity, Task, TaskConfig, yaw_quat

CORN_RADIUS = 0.012  # m, put_in_bowl.xml
BOWL_INNER_RADIUS = 0.054  # m, wall centre radius 0.06 minus half thickness and the wall's chord sag
BOWL_RIM = 0.04  # m, wall height above the bowl base
REGION_X = (0.2, 0.38)
REGION_Y = (-0.16, 0.16)
MIN_SEPARATION = 0.13  # m between corn and bowl centres, so the corn never spawns in or on the bowl


@dataclass
class PutInBowlConfig(TaskConfig):
    max_steps: int = 100
    """Episode time limit in control steps (10 s at 10 Hz)."""


class PutInBowl(Task):
    name = "put_in_bowl"
    xml = "put_in_bowl.xml"
    config_cls = PutInBowlConfig
    object_body = "corn"
    object_yaw_symmetry = 2  # capsule along its local x: symmetric end to end
    recommended_obs_keys = ("joint_pos", "gripper_pos", "object_pos", "object_yaw_feat", "bowl_pos")
    randomized_keys = (
        RandomizedQuantity("corn position (x, y)", ("object_pos", "object_pose", "ee_to_object"), "corn", "pos"),
        RandomizedQuantity("corn yaw", ("object_yaw_feat", "object_pose"), "corn", "yaw"),
        RandomizedQuantity("bowl position (x, y)", ("bowl_pos", "bowl_pose", "object_to_bowl"), "bowl", "pos"),
        RandomizedQuantity("bowl yaw", ("bowl_pose",), "bowl", "yaw", needed=False),
    )

    def _randomize(self, rng):
        while True:  # rejection sampling; the region is large enough that this ends in a few draws
            corn = np.array([rng.uniform(*REGION_X), rng.uniform(*REGION_Y)])
            bowl = np.array([rng.uniform(*REGION_X), rng.uniform(*REGION_Y)])
            if np.linalg.norm(corn - bowl) >= MIN_SEPARATION:
                break
        self.sim.set_free_body_pose("bowl", [*bowl, 0.0], yaw_quat(rng.uniform(-np.pi, np.pi)))
        self.sim.set_free_body_pose("corn", [*corn, CORN_RADIUS], yaw_quat(rng.uniform(-np.pi, np.pi)))

    def corn_in_bowl(self) -> bool:
        corn, bowl = self.sim.body_pose("corn")[:3], self.sim.body_pose("bowl")[:3]
        inside = np.linalg.norm(corn[:2] - bowl[:2]) < BOWL_INNER_RADIUS - CORN_RADIUS
        return bool(inside and corn[2] - bowl[2] < BOWL_RIM)

    def success(self) -> bool:
        # Placed, not held: a corn still pinched by both fingers above the bowl floor does not count.
        return self.corn_in_bowl() and not self.grasped()

    def dense_reward(self) -> float:
        corn, bowl = self.sim.body_pose("corn")[:3], self.sim.body_pose("bowl")[:3]
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(self.ee_pos_world() - corn))
        place = 1.0 - np.tanh(5.0 * np.linalg.norm(corn[:2] - bowl[:2]))
        return float(0.2 * reach + 0.2 * self.grasped() + 0.5 * place + 0.1 * self.corn_in_bowl())

    @classmethod
    def _scene_extras(cls, poses):
        bowl, corn = poses["bowl"], poses["corn"][:3]
        # bowl_pos: the bowl's position alone (its yaw is cosmetic), the recommended key.
        return {"bowl_pose": bowl.copy(), "bowl_pos": bowl[:3].copy(), "object_to_bowl": bowl[:3] - corn}

    def _extras(self):
        return {"ee_to_object": self.sim.body_pose("corn")[:3] - self.ee_pos_world()}
