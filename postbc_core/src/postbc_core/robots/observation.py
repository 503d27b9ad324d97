"""The one assembly of the robot's observation keys, for every backend: the twin, the Interbotix SDK backend and the
ROS nodes (policy, finetune manager, recorder) build them here from a joint reading.

Keys (robots/robot.py, data/README.md): joint_pos / joint_vel / joint_effort (6,) rad, rad/s, N m; gripper_pos (1,)
m (the left finger's slide); ee_pose (7,) [x y z m, qw qx qy qz] in the base frame, from forward kinematics of
joint_pos unless the backend measures it (the twin reads its EE site); timestamp () float64 s. Object keys come from
the sim task's `scene_observation` (sim/base.py; over ROS through observation.object_keys), images from the
cameras, resized for the policy or the store with `resize_image`.
"""

from __future__ import annotations

import numpy as np

from postbc_core.robots import kinematics


def ee_pose_of(joint_pos) -> np.ndarray:
    """FK of joint_pos (6,) rad -> (7,) [x y z m, qw qx qy qz] in the base frame."""
    pos, quat = kinematics.fk(np.asarray(joint_pos, np.float64))
    return np.concatenate([pos, quat])


def robot_observation(joint_pos, joint_vel, joint_effort, gripper_pos, timestamp: float,
                      ee_pose=None) -> dict[str, np.ndarray]:
    """The robot keys of one reading (float64; callers keep store dtypes with control.spec.store_dtype).
    gripper_pos: m, a scalar or (1,); ee_pose: None = FK of joint_pos."""
    q = np.asarray(joint_pos, np.float64)
    return {"joint_pos": q, "joint_vel": np.asarray(joint_vel, np.float64),
            "joint_effort": np.asarray(joint_effort, np.float64),
            "gripper_pos": np.asarray(gripper_pos, np.float64).reshape(1),
            "ee_pose": ee_pose_of(q) if ee_pose is None else np.asarray(ee_pose, np.float64),
            "timestamp": np.float64(timestamp)}


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) image -> (H, W, C) with cv2.INTER_AREA (the anti-aliased choice for shrinking); size (H, W);
    (0, 0) or the same size = as is."""
    H, W = size
    if not H or img.shape[:2] == (H, W):
        return img
    import cv2

    return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
