"""The one conversion from a policy's / operator's action to joint targets, and back for the stored rows.

A 7-vector action is either absolute joint targets + gripper ("joint") or a Bridge-style end-effector delta
[dx dy dz (m), droll dpitch dyaw (rad)] + gripper ("ee_delta"), applied with `kinematics.apply_ee_delta` (base-frame
translation, extrinsic rpy pre-multiplied, damped-least-squares IK).

What an EE delta is relative to ("chained": data/layout.py EE_DELTA_CONVENTION, the meaning of every stored
`cmd_ee_delta`, recorded in stores and checkpoints): the PREVIOUS TARGET, not the measured pose. Step t's target is
target_{t-1} + delta_t; the chain starts at (and is cut back to) the measured joints when there is no previous target
or the previous target's EE leads the measured EE by more than a bound (blocked by an object, clamped by the safety
layer, reset, homed: `chained_reference`). Why: a delta recorded this way replays into the same targets whatever the
tracking lag and the latency between observation and command were when it was recorded (through the ROS graph the
measured joints are a command behind; in the twin they are not), and it is Bridge's convention (widowx_envs
RobotBaseEnv._next_qpos: the delta is pre-multiplied onto `_previous_target_qpos`, re-read from the arm only at reset;
VRTeleopPolicy records new target x previous target^-1) and the Interbotix SDK's (set_ee_cartesian_trajectory moves
from T_sb, the last COMMANDED pose; capture_joint_positions re-reads the encoders). `EEDeltaExecutor` holds that
chain: one per arm and episode, fed every action with the joints measured at its step. The twin's tasks, the scripted
demos (through the tasks), the policy node (one point per control tick), the finetune manager, teleop and the robot
backends' SafetyLayer all execute deltas through it.

`joint_targets` is the stateless conversion of a sequence chained from given joints (the executor's kernel, and
replays). `ee_delta_between` is the inverse used for stored rows: the delta that moves FK(q) to FK(q_target).
GRIPPER_CLOSED / GRIPPER_OPEN are the gripper targets of a binary gripper command.

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

# The chain is cut back to the measured joints when the previous target's EE leads the measured EE by more than one
# step's largest delta (EE_DELTA_MAX: 5 cm / 0.25 rad) or any joint by more than 0.5 rad (another IK branch). The
# twin tracks a target to ~1 mm within one control period (measured: lead median 0.6 mm, max 1.1 mm over scripted
# lift_cube demos at 10 Hz), so only a blocked, clamped, reset or homed arm crosses these.
CHAIN_MAX_LEAD_M = float(EE_DELTA_MAX[0])
CHAIN_MAX_LEAD_RAD = float(EE_DELTA_MAX[3])
CHAIN_MAX_JOINT_RAD = 0.5


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
    applies to q_ref (6,) rad, each later one to the previous target, never cut (an EEDeltaExecutor that is fed
    measured joints within the lead bounds gives the same targets)."""
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


class EEDeltaExecutor:
    """The chain of one arm's EE-delta commands (data.layout.EE_DELTA_CONVENTION, module docstring): `step(action, mode,
    q_meas)` converts the action of the current control step given the joints measured at that step; each delta
    applies to the previous step's target (`chained_reference`: the measured joints at the start, after `reset`, and
    whenever the previous target leads them by more than the max_lead_* bounds). Joint actions pass through and become
    the chain's previous target. Executors fed the same actions and the same measured joints give identical targets:
    the twin's task and the ROS policy node each hold one."""

    def __init__(self, max_lead_m: float = CHAIN_MAX_LEAD_M, max_lead_rad: float = CHAIN_MAX_LEAD_RAD,
                 max_joint_rad: float = CHAIN_MAX_JOINT_RAD):
        for name, v in (("max_lead_m", max_lead_m), ("max_lead_rad", max_lead_rad), ("max_joint_rad", max_joint_rad)):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"EEDeltaExecutor {name}={v!r}: give a positive bound")
        self.max_lead_m, self.max_lead_rad, self.max_joint_rad = float(max_lead_m), float(max_lead_rad), float(
            max_joint_rad)
        self.q_prev: np.ndarray | None = None
        """(6,) rad: the previous step's joint target (None: the next delta applies to the measured joints)."""
        self.cuts = 0
        """Times the chain was cut back to the measured joints with a previous target present (not counting starts)."""

    def reset(self) -> None:
        """Episode start (or the arm was moved by something else): the next delta applies to the measured joints."""
        self.q_prev = None

    def reference(self, q_meas) -> np.ndarray:
        """The joints (6,) rad the next delta applies to, given the measured joints q_meas (6,) rad."""
        q_meas = np.asarray(q_meas, np.float64).reshape(6)
        ref = chained_reference(self.q_prev, q_meas, self.max_lead_m, self.max_lead_rad, self.max_joint_rad)
        if self.q_prev is not None and ref is not self.q_prev:
            self.cuts += 1
        return ref

    def step(self, action, mode: ActionMode, q_meas) -> tuple[np.ndarray, float]:
        """One control step's action (7,) in `mode` -> (joint targets (6,) rad, gripper target m); q_meas (6,) rad:
        the joints measured at this step. The target becomes the chain's previous target."""
        a = check_action(action)
        if mode == "joint":
            q, g = a[:6].copy(), float(a[6])
        elif mode == "ee_delta":
            q, g = kinematics.apply_ee_delta(self.reference(q_meas), a[:6]), float(a[6])
        else:
            raise ConfigError(f"action mode {mode!r}: use 'joint' or 'ee_delta'")
        self.q_prev = q.copy()
        return q, g

    def hold(self, q_meas) -> np.ndarray:
        """The target (6,) rad of a zero delta this step (an idle operator): the chain's reference, kept as the
        previous target."""
        self.q_prev = self.reference(q_meas).copy()
        return self.q_prev.copy()
