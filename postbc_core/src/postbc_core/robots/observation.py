"""The one assembly of the robot's observation keys, for every backend: the twin, the Interbotix SDK backend and the
ROS nodes (policy, finetune manager, recorder) build them here from a joint reading.

Keys (robots/robot.py, data/README.md): joint_pos / joint_vel / joint_effort (6,) rad, rad/s, N m; gripper_pos (1,)
m (the left finger's slide); ee_pose (7,) [x y z m, qw qx qy qz] in the base frame, from forward kinematics of
joint_pos unless the backend measures it (the twin reads its EE site); timestamp () float64 s. Object keys come from
the sim task's `scene_observation` (sim/base.py; over ROS through observation.object_keys), images from the
cameras, resized for the policy (training's load-time resize, the ROS nodes' incoming frames) or the store with
`resize_image`, which holds the one rule for what a policy accepts (check_frame: RGB, the policy's aspect ratio).
"""

from __future__ import annotations

import numpy as np

from postbc_core.errors import ConfigError
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


def resize_image(img: np.ndarray, size: tuple[int, ...], camera: str | None = None) -> np.ndarray:
    """(h, w, C) uint8 frame -> (H, W, C) with cv2.INTER_AREA (the anti-aliased choice for shrinking); size (H, W) or
    a policy's per-step shape (H, W, 3); (0, 0) or the frame's own size = as is.

    With `camera` (the policy's `<camera>_rgb` key: training's load-time resize, the ROS nodes' incoming frames) the
    frame must fit the policy first (check_frame: 3 channels, the same aspect ratio), so the policy sees the same
    picture everywhere; without it (the recorder's storage size) the frame is resized as asked."""
    if camera is not None:
        check_frame(img.shape, size, camera)
    H, W = size[:2]
    if not H or img.shape[:2] == (H, W):
        return img
    import cv2

    return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)


def check_frame(frame_shape: tuple[int, ...], size: tuple[int, ...], camera: str) -> None:
    """ConfigError unless a frame of `frame_shape` (h, w, C) can become the policy's `size` (H, W[, 3]) image of key
    `camera` without distortion: RGB (3 channels, not grayscale (h, w) / (h, w, 1) or RGBA), and the same aspect
    ratio within a pixel (|H w - W h| < max(h, w): H within one pixel of W h / w, or W of H w / h).

    One rule for training, `postbc eval` and the ROS nodes. Squashing (640x480 into 96x96) is refused rather than
    done: the twin renders a policy's own size with the camera's vertical field of view, so a 96x96 render is the
    centre square of a 640x480 one, not the squashed frame the policy would have trained on; shrink keeping the
    aspect instead (640x480 -> 96x128, 120x160, 240x320)."""
    H, W = size[:2]
    channels = frame_shape[2] if len(frame_shape) == 3 else 1
    if len(frame_shape) not in (2, 3) or channels != 3:
        kind = {1: "grayscale", 4: "RGBA"}.get(channels, f"{channels}-channel")
        raise ConfigError(f"{camera}: frames of shape {tuple(frame_shape)} are {kind}, the policy takes RGB "
                          f"{(H, W, 3) if H else '(H, W, 3)'}; publish / record rgb8 (or bgr8) frames for this camera")
    h, w = frame_shape[:2]
    if not H or (h, w) == (H, W):
        return
    if abs(H * w - W * h) >= max(h, w):
        keep = f"--image-size {H} {max(1, round(H * w / h))} or --image-size {max(1, round(W * h / w))} {W}"
        raise ConfigError(f"{camera}: frame {h}x{w} (HxW) and the policy's {H}x{W} image have different aspect "
                          f"ratios, so resizing would squash it; use a policy trained at the frame's aspect "
                          f"(postbc train {keep}) or frames of the policy's aspect")
