"""The joint names and the values that cross the Robot interface (robots/robot.py): the two action kinds, the
command actually sent and a joint reading. Below robots/safety.py and robots/robot.py, which both use them.

Units: radians, metres, seconds. Joint order: waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate; the
gripper is a separate scalar (finger opening in metres, as the sim and Interbotix's `gripper` joint state report it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postbc_core.errors import ActionError

JOINT_NAMES: tuple[str, ...] = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
N_JOINTS = len(JOINT_NAMES)
EE_DELTA_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw")


def _real(what: str, value, names: tuple[str, ...] | None) -> np.ndarray:
    """`value` as a read-only float64 array of shape (len(names),) (or () when names is None); refuses another
    shape, a non-real dtype (complex, bool, object, strings) and NaN/inf, naming the offending entries."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise ActionError(f"{what} has dtype {arr.dtype}; it must hold real numbers (float or int)"
                          + ("; complex values have no physical meaning here" if arr.dtype.kind == "c" else "")
                          + "; command rejected, nothing sent")
    shape = (len(names),) if names is not None else ()
    if arr.shape != shape:
        expect = f"({len(names)},) ({', '.join(names)})" if names is not None else "() (a scalar)"
        raise ActionError(f"{what} must have shape {expect}, got shape {arr.shape}; command rejected, nothing sent")
    arr = arr.astype(np.float64)  # a copy: later changes to the caller's array do not change the action
    bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
    if bad.size:
        shown = ", ".join(f"{names[i]}={arr[i]}" for i in bad) if names is not None else f"{float(arr)}"
        raise ActionError(f"{what} has non-finite values ({shown}); command rejected, nothing sent. Check the policy "
                          "output / normalizer for NaNs.")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class JointAction:
    """Absolute joint targets (6,) rad and gripper opening target (m). Validated on construction: real, finite,
    shape (6,) (limits are the safety layer's job: out-of-range targets are clamped, with SentCommand.clamped)."""

    joint_pos: np.ndarray
    gripper: float

    def __post_init__(self):
        object.__setattr__(self, "joint_pos", _real("JointAction.joint_pos (rad)", self.joint_pos, JOINT_NAMES))
        object.__setattr__(self, "gripper", float(_real("JointAction.gripper (m)", self.gripper, None)))


@dataclass(frozen=True)
class EEDeltaAction:
    """Bridge-style end-effector delta in the base frame: [dx dy dz] m, [droll dpitch dyaw] rad, gripper target (m).
    Validated on construction like JointAction."""

    delta: np.ndarray  # (6,)
    gripper: float

    def __post_init__(self):
        object.__setattr__(self, "delta", _real("EEDeltaAction.delta (m, rad)", self.delta, EE_DELTA_NAMES))
        object.__setattr__(self, "gripper", float(_real("EEDeltaAction.gripper (m)", self.gripper, None)))


@dataclass(frozen=True)
class SentCommand:
    """What the robot was actually told after the safety layer (for recording and logging)."""

    joint_pos: np.ndarray  # (6,) rad
    gripper: float
    clamped: bool  # the safety layer changed the request (a log line says how)


@dataclass(frozen=True)
class JointReading:
    """The arm's measured joints (Robot.measure): no command sent, no image rendered."""

    joint_pos: np.ndarray  # (6,) rad
    joint_vel: np.ndarray  # (6,) rad/s
    joint_effort: np.ndarray  # (6,) N m
    gripper: float  # finger opening, m
