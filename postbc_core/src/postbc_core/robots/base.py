"""One robot interface for the MuJoCo twin and the real WidowX 250s (lerobot's `Robot` shape).

Teleop, recording, calibration, evaluation and the ROS driver run unchanged on either backend. Units: radians,
metres, seconds. Joint order: waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate; the gripper is a
separate scalar (finger opening in metres, as the sim and Interbotix's `gripper` joint state report it).

Observation (dict of numpy arrays, the episode store's conventional keys):
  joint_pos (6,) rad, joint_vel (6,) rad/s, joint_effort (6,) N m (hardware: as reported; sim: actuator force),
  gripper_pos (1,) m, ee_pose (7,) [x y z m, qw qx qy qz] from FK, timestamp () float64 s,
  plus backend extras (sim: `<camera>_rgb` images when cameras are enabled, `object_pose` (7,), `success` ()).
Actions (`send_action`): a JointAction (absolute targets) or an EEDeltaAction (Bridge-style end-effector delta);
every command passes the shared safety layer first (robots/safety.py) and the command actually sent is returned.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

JOINT_NAMES: tuple[str, ...] = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
N_JOINTS = len(JOINT_NAMES)


@dataclass(frozen=True)
class JointAction:
    """Absolute joint targets (6,) rad and gripper opening target (m)."""

    joint_pos: np.ndarray
    gripper: float


@dataclass(frozen=True)
class EEDeltaAction:
    """Bridge-style end-effector delta in the base frame: [dx dy dz] m, [droll dpitch dyaw] rad, gripper target."""

    delta: np.ndarray  # (6,)
    gripper: float


@dataclass(frozen=True)
class SentCommand:
    """What the robot was actually told after the safety layer (for recording and logging)."""

    joint_pos: np.ndarray  # (6,) rad
    gripper: float
    clamped: bool  # the safety layer changed the request (a log line says how)


class Robot(abc.ABC):
    """Lifecycle: connect() -> get_observation()/send_action() at the control rate -> close(); or `with robot:`."""

    control_hz: float

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def get_observation(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def send_action(self, action: JointAction | EEDeltaAction) -> SentCommand: ...

    @abc.abstractmethod
    def go_home(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> "Robot":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
