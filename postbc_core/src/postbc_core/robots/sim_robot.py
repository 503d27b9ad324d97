"""The Robot interface over a MuJoCo twin task (sim/registry.make), so teleop/recording/eval run unchanged in sim.

Observations are the task's: robot state (robots/base.py keys), privileged task state (`object_pose`, `success`,
task extras) and `<camera>_rgb` images for the cameras named in the task config. Every command passes the same
SafetyLayer as the hardware backend before `WidowXSim.step_control` holds it for one control period. With
`step_on_send=False` (the ROS driver, which steps the physics in its own thread at state_hz and publishes between
control steps) `send_action` and `hold` only set the actuator targets, as the real arm's servos take a goal and move
on their own time.
"""

from __future__ import annotations

import logging

import numpy as np

from postbc_core.errors import PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import (
    EEDeltaAction,
    JointAction,
    JointReading,
    Robot,
    SentCommand,
)
from postbc_core.robots.safety import SafetyLayer, SafetyLimits

logger = logging.getLogger(__name__)


class SimRobot(Robot):
    """`SimRobot("lift_cube", cameras=("front",))`; task overrides are TaskConfig fields."""

    def __init__(self, task: str = "lift_cube", *, limits: SafetyLimits | None = None, seed: int | None = 0,
                 step_on_send: bool = True, **task_overrides):
        """step_on_send: True = send_action runs one control period of physics (scripted loops, teleop, eval);
        False = it only sets the targets and the caller advances the physics (`sim.step_physics`)."""
        self.task_name = task
        self.step_on_send = step_on_send
        self.task_overrides = dict(task_overrides)
        self.safety = SafetyLayer(limits)
        self.seed = seed
        self.task = None
        self.control_hz = float(task_overrides.get("control_hz", 10.0))

    @property
    def is_connected(self) -> bool:
        return self.task is not None

    @property
    def sim(self):
        if self.task is None:
            raise PostBCError("SimRobot is not connected; call connect() or use `with robot:`")
        return self.task.sim

    def connect(self) -> None:
        if self.task is not None:
            return
        from postbc_core.sim.registry import (
            make,  # mujoco loads here, not at package import
        )

        self.task = make(self.task_name, **self.task_overrides)
        self.control_hz = float(self.task.config.control_hz)
        self.task.reset(seed=self.seed)

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start a new episode (task randomisation from `seed`); returns the first observation."""
        if self.task is None:
            self.connect()
        return self.task.reset(seed=seed)

    def get_observation(self) -> dict[str, np.ndarray]:
        if self.task is None:
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
        if self.task is not None:
            self.task.close()
            self.task = None
