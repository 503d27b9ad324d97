"""The Robot interface over a MuJoCo twin task, so teleop/recording/eval and the ROS driver run unchanged in sim.

`SimRobot(make("lift_cube", cameras=("front",)))` (postbc_core.sim.make): the robot takes the task object it drives,
so this backend needs nothing of the sim package but the task's own methods (`TwinTask`). Observations are the
task's: robot state (robots/robot.py keys), privileged task state (`object_pose`, `success`, task extras) and
`<camera>_rgb` images for the cameras named in the task config. Every command passes the task's SafetyLayer (the
one the task's own `step` uses, built by robots/safety.make_safety_layer like the hardware backend's) before
`WidowXSim.step_control` holds it for one control period. With `step_on_send=False` (the ROS driver, which steps
the physics in its own thread at state_hz and publishes between control steps) `send_action` and `hold` only set the
actuator targets, as the real arm's servos take a goal and move on their own time.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import (
    EEDeltaAction,
    JointAction,
    JointReading,
    SentCommand,
)
from postbc_core.robots.robot import Robot
from postbc_core.robots.safety import SafetyLayer

logger = logging.getLogger(__name__)


class TwinTask(Protocol):
    """What SimRobot needs of a task (postbc_core.sim.base.Task provides it)."""

    sim: Any  # postbc_core.sim.base.WidowXSim
    safety: SafetyLayer | None
    config: Any  # a TaskConfig: control_hz
    steps: int

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]: ...

    def observation(self, render: bool = True) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class SimRobot(Robot):
    """`SimRobot(make("lift_cube", cameras=("front",)))`: the robot owns the task from then on (close() closes it)."""

    def __init__(self, task: TwinTask, *, seed: int | None = 0, step_on_send: bool = True):
        """task: a sim task object (postbc_core.sim.make(name, **TaskConfig overrides, limits=SafetyLimits)), built
        with its safety layer on. seed: the episode seed connect() resets it with. step_on_send: True = send_action
        runs one control period of physics (scripted loops, teleop, eval); False = it only sets the targets and the
        caller advances the physics (`sim.step_physics`)."""
        if isinstance(task, str):
            raise ConfigError(f"SimRobot takes a task object, not the name {task!r}: "
                              f"SimRobot(postbc_core.sim.make({task!r}, ...))")
        if task.safety is None:
            raise ConfigError("the task was built with safety=False; a SimRobot executes commands as the arm's "
                              "driver would, through the task's safety layer: build the task with safety on")
        self.task = task
        # A robot executes commands for an operator: each alteration is logged (WARNING, as InterbotixRobot's layer
        # does), where the task's own rollouts only count them (SafetyLayer's log_level).
        task.safety.log_level = logging.WARNING
        self.step_on_send = step_on_send
        self.seed = seed
        self.control_hz = float(task.config.control_hz)
        self._connected = False

    @property
    def safety(self) -> SafetyLayer:
        """The task's safety layer: the only one commands to the twin pass."""
        return self.task.safety

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def sim(self):
        if not self._connected:
            raise PostBCError("SimRobot is not connected; call connect() or use `with robot:`")
        return self.task.sim

    def connect(self) -> None:
        if self._connected:
            return
        self.task.reset(seed=self.seed)
        self._connected = True

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start a new episode (task randomisation from `seed`); returns the first observation."""
        if not self._connected:
            self.connect()
        self.safety.ee_executor.reset()
        return self.task.reset(seed=seed)

    def get_observation(self) -> dict[str, np.ndarray]:
        if not self._connected:
            raise PostBCError("SimRobot is not connected; call connect() or use `with robot:`")
        return self.task.observation()

    def measure(self) -> JointReading:
        o = self.sim.observation()
        return JointReading(o["joint_pos"], o["joint_vel"], o["joint_effort"], float(o["gripper_pos"][0]))

    def send_action(self, action: JointAction | EEDeltaAction) -> SentCommand:
        cur = self.sim.joint_pos()
        sent = self.safety.command(action, cur)
        if self.step_on_send:
            self.sim.step_control(sent.joint_pos, sent.gripper)
            self.task.steps += 1
        else:
            self.sim.set_targets(sent.joint_pos, sent.gripper)
        return sent

    def hold(self, gripper: float) -> np.ndarray:
        q = self.sim.joint_pos()
        self.sim.set_targets(q, self.safety.check_gripper(gripper))
        if self.step_on_send:
            self.sim.step_physics(self.sim.n_substeps)
        return q

    def go_home(self, tol: float = 0.01, max_steps: int = 100) -> None:
        """Drive to kinematics.HOME_QPOS through the safety layer (like the arm would), gripper open. Needs
        step_on_send (the ROS driver homes through its own control loop instead)."""
        if not self.step_on_send:
            raise PostBCError("SimRobot.go_home steps the physics itself; with step_on_send=False send HOME_QPOS "
                              "targets from the loop that steps the physics (the driver's ~/go_home does)")
        home = kinematics.HOME_QPOS
        g_open = self.safety.limits.gripper_limits[1]
        for _ in range(max_steps):
            if np.max(np.abs(self.sim.joint_pos() - home)) < tol:
                return
            self.send_action(JointAction(joint_pos=home, gripper=g_open))
        err = float(np.max(np.abs(self.sim.joint_pos() - home)))
        if err >= tol:
            raise PostBCError(f"go_home: still {err:.4f} rad from HOME_QPOS after {max_steps} steps "
                              "(blocked by an object or the workspace box?)")

    def close(self) -> None:
        if self._connected:
            self.task.close()
            self._connected = False
