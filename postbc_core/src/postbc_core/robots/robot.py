"""One robot interface for the MuJoCo twin and the real WidowX 250s (lerobot's `Robot` shape).

Teleop, recording, calibration, evaluation and the ROS driver run unchanged on either backend. Units: radians,
metres, seconds; the joint names and the action / reading types are in robots/base.py.

Observation (dict of numpy arrays, the episode store's conventional keys):
  joint_pos (6,) rad, joint_vel (6,) rad/s, joint_effort (6,) N m (hardware: as reported; sim: actuator force),
  gripper_pos (1,) m, ee_pose (7,) [x y z m, qw qx qy qz] from FK, timestamp () float64 s,
  plus backend extras (sim: `<camera>_rgb` images when cameras are enabled, `object_pose` (7,), `success` ()).
Actions (`send_action`): a JointAction (absolute targets) or an EEDeltaAction (Bridge-style end-effector delta);
every command passes the robot's one safety layer (`safety`, built by robots/safety.make_safety_layer) first and the
command actually sent is returned.
`measure()` reads the joints without commanding or rendering anything and `hold()` stops the arm where it is: the
two verbs the ROS driver (robots/controller.py) needs besides `send_action` to run either backend at its own rates.
"""

from __future__ import annotations

import abc

import numpy as np

from postbc_core.robots.base import EEDeltaAction, JointAction, JointReading, SentCommand
from postbc_core.robots.safety import SafetyLayer


class Robot(abc.ABC):
    """Lifecycle: connect() -> get_observation()/send_action() at the control rate -> close(); or `with robot:`."""

    control_hz: float
    safety: SafetyLayer
    """The one layer every command passes (its `stats` count what it changed): the backend's own (InterbotixRobot)
    or its task's (SimRobot), built by make_safety_layer from the control rate and the speed limit."""

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def get_observation(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def send_action(self, action: JointAction | EEDeltaAction) -> SentCommand: ...

    @abc.abstractmethod
    def measure(self) -> JointReading:
        """The joints now, without commanding anything or rendering images (cheap enough for 100 Hz)."""

    @abc.abstractmethod
    def hold(self, gripper: float) -> np.ndarray:
        """Stop the arm where it is: command the measured joints (no safety step needed: the arm is there) and the
        gripper target `gripper` (m, clamped to the gripper range). Returns the held joints (6,) rad."""

    @abc.abstractmethod
    def go_home(self) -> None:
        """Move to kinematics.HOME_QPOS with the gripper open; raises PostBCError when the arm did not get there."""

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
