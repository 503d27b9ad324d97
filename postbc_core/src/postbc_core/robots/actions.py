"""The one conversion from a policy's / operator's action to joint targets, and back for the stored rows.

A 7-vector action is either absolute joint targets + gripper ("joint") or a Bridge-style end-effector delta
[dx dy dz (m), droll dpitch dyaw (rad)] + gripper ("ee_delta"), applied with `kinematics.apply_ee_delta` (base-frame
translation, extrinsic rpy pre-multiplied, damped-least-squares IK). `joint_targets` is that conversion for one action
or a sequence: the first delta applies to the reference joints `q_ref` (the measured joints: the twin, the finetune
manager, the policy node; teleop: `chained_reference`), each later one to the previous target (the points of one
chunk sent ahead, as the policy node does). The twin's tasks, the robot backends' SafetyLayer, the ROS nodes and the
scripted operators all convert here.

`ee_delta_between` is the inverse used for stored rows: the delta that moves FK(q) to FK(q_target).
`chained_reference` decides which joints an operator's next delta applies to when deltas chain from the previous
target (teleop); GRIPPER_CLOSED / GRIPPER_OPEN are the gripper targets of a binary gripper command.

Units: rad, m. Shape legend: T actions.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics

ActionMode = Literal["joint", "ee_delta"]
ACTION_MODES: tuple[ActionMode, ...] = ("joint", "ee_delta")
ENV_ACTION_DIM = 7  # 6 joint targets (or EE delta) + gripper

# ee_delta action bounds per control step: +-5 cm and +-0.25 rad (Bridge teleop deltas are ~1-2 cm per step).
EE_DELTA_MAX = np.array([0.05, 0.05, 0.05, 0.25, 0.25, 0.25])
# Gripper targets (m, the left finger's slide) of a binary open / close command: the ends of its range.
GRIPPER_CLOSED, GRIPPER_OPEN = (float(g) for g in kinematics.GRIPPER_LIMITS)


def action_bounds(mode: ActionMode) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the (7,) action in `mode`: the joint limits or +-EE_DELTA_MAX, and the gripper range (m)."""
    g = kinematics.GRIPPER_LIMITS
    if mode == "joint":
        lim = kinematics.JOINT_LIMITS
        return np.r_[lim[:, 0], g[0]], np.r_[lim[:, 1], g[1]]
    if mode == "ee_delta":
        return np.r_[-EE_DELTA_MAX, g[0]], np.r_[EE_DELTA_MAX, g[1]]
    raise ConfigError(f"action mode {mode!r}: use 'joint' or 'ee_delta'")


def check_action(action, what: str = "action") -> np.ndarray:
    """`action` as a finite (7,) float64 array, or PostBCError naming the shape or the values."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ENV_ACTION_DIM,):
        raise PostBCError(f"{what} must have shape ({ENV_ACTION_DIM},), got {np.shape(action)}")
    if not np.all(np.isfinite(a)):
        raise PostBCError(f"{what} contains non-finite values {a}")
    return a


def joint_targets(actions, mode: ActionMode, q_ref) -> tuple[np.ndarray, np.ndarray]:
    """Actions (T, 7) in `mode` -> joint targets (T, 6) rad and gripper targets (T,) m. "ee_delta": the first delta
    applies to q_ref (6,) rad, each later one to the previous target (see the module docstring)."""
    actions = np.asarray(actions, np.float64).reshape(-1, ENV_ACTION_DIM)
    if mode == "joint":
        return actions[:, :6].copy(), actions[:, 6].copy()
    if mode != "ee_delta":
        raise ConfigError(f"action mode {mode!r}: use 'joint' or 'ee_delta'")
    q, out = np.asarray(q_ref, np.float64), []
    for a in actions:
        q = kinematics.apply_ee_delta(q, a[:6])
        out.append(q)
    return np.stack(out), actions[:, 6].copy()


def joint_target(action, mode: ActionMode, q_ref) -> tuple[np.ndarray, float]:
    """One action (7,) -> (joint targets (6,) rad, gripper target m); see `joint_targets`."""
    q, g = joint_targets(action, mode, q_ref)
    return q[0], float(g[0])


def mat_to_rpy(R: np.ndarray) -> np.ndarray:
    """Inverse of kinematics.euler_to_mat: R = Rz(yaw) Ry(pitch) Rx(roll) -> (roll, pitch, yaw) rad."""
    return np.array([math.atan2(R[2, 1], R[2, 2]), -math.asin(np.clip(R[2, 0], -1.0, 1.0)),
                     math.atan2(R[1, 0], R[0, 0])])


def ee_delta_between(q, q_target) -> np.ndarray:
    """The EE delta (6,) [dx dy dz (m), droll dpitch dyaw (rad)] that moves FK(q) to FK(q_target), in the
    convention of kinematics.apply_ee_delta (base-frame translation, extrinsic rpy pre-multiplied)."""
    T0, T1 = kinematics.fk_matrix(np.asarray(q, float)), kinematics.fk_matrix(np.asarray(q_target, float))
    return np.concatenate([T1[:3, 3] - T0[:3, 3], mat_to_rpy(T1[:3, :3] @ T0[:3, :3].T)])


def chained_reference(q_prev, q_meas, max_lead_m: float, max_lead_rad: float, max_joint_rad: float) -> np.ndarray:
    """The joints (6,) rad the next EE delta applies to when deltas chain from the previous target: `q_prev` (6,)
    while its EE leads FK(q_meas) by at most max_lead_m (translation) and max_lead_rad (rotation angle) and no joint
    by more than max_joint_rad, else a copy of `q_meas` (6,) (the chain is cut: the arm is blocked, clamped, reset or
    homed, or the target is on another IK branch). q_prev None (no previous target): a copy of q_meas."""
    if q_prev is None:
        return q_meas.copy()
    T_prev, T_meas = kinematics.fk_matrix(q_prev), kinematics.fk_matrix(q_meas)
    lead_m = float(np.linalg.norm(T_prev[:3, 3] - T_meas[:3, 3]))
    lead_rad = float(np.linalg.norm(kinematics.rotation_error(T_prev[:3, :3], T_meas[:3, :3])))
    if lead_m > max_lead_m or lead_rad > max_lead_rad or float(np.max(np.abs(q_prev - q_meas))) > max_joint_rad:
        return q_meas.copy()
    return q_prev
