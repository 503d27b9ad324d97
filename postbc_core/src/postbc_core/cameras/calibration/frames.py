"""Frame conventions of camera calibration and the 4x4 rigid-transform helpers its modules share.

Frames (4x4 homogeneous transforms, `T_a_b` maps points in frame b to frame a; metres):
  base    wx250s/base_link (robots/kinematics.py)
  gripper wx250s/ee_gripper_link (kinematics.fk_matrix)
  camera  OpenCV optical frame: x right, y down, z forward (ROS `*_optical_frame`)
  board   OpenCV ChArUco frame: origin at the board's outer top-left corner, x along the columns, y along the
          rows, z into the board (away from the viewer)
"""

from __future__ import annotations

import cv2
import numpy as np


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) transform from a rotation R (3, 3) and a translation t (3,) in metres."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.asarray(t).reshape(3)
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: T_a_b -> T_b_a."""
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (deg) of a rotation matrix."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def rotvec(v) -> np.ndarray:
    """Rotation matrix (3, 3) of a rotation vector v (3,): axis times angle in radians."""
    return cv2.Rodrigues(np.asarray(v, np.float64).reshape(3, 1))[0]
