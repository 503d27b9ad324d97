"""robot_driver: the one node that talks to the arm (MuJoCo twin or the real wx250s) and owns safety.

A thin shell over postbc_core: the arm is a `postbc_core.robots.Robot` (SimRobot or InterbotixRobot, the same
classes teleop, recording, calibration and evaluation use) and the command scheduling and holds are
`postbc_core.robots.controller.TrajectoryExecutor` (tested without ROS). This node publishes /joint_states at
`state_hz`, hands /postbc/command trajectories to the executor (point i at header.stamp + time_from_start; NaN/inf,
stale and far-future commands rejected), steps it once per control period (the trajectory sampled at now as
joint_trajectory_controller samples it, each target through the robot's SafetyLayer relative to the measured joints;
holds on watchdog, e-stop (latched, /postbc/estop) and ~/enable false), and serves ~/go_home, ~/enable, and in sim
~/reset. Status JSON on /postbc/driver/status (`target`: the last command sent; `sampled_target`: the trajectory at
the last tick before the safety layer).

Sim backend: SimRobot(step_on_send=False); this node steps its physics in a thread (1 / state_hz s per tick, paced
by `real_time_factor` against the wall clock) and publishes /clock, object poses (every free and mocap body, task
object first: postbc_core.sim.registry.scene_bodies order) and task success, all stamped with sim time. Interbotix
backend: InterbotixRobot, whose SDK runs its own node (InterbotixRobotNode, spun by the SDK's thread as upstream's
robot_startup does) in this process; on shutdown (Ctrl-C, SIGTERM) `destroy_node` parks the arm in the sleep pose
while the ROS context is still valid (postbc.node_main's shutdown order). Units: radians, metres, seconds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, fields

import numpy as np
from geometry_msgs.msg import PoseArray
from postbc_core.robots.actions import GRIPPER_OPEN
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots.controller import ExecutorConfig, TrajectoryExecutor
from postbc_core.robots.safety import CONTROL_HZ, MAX_JOINT_SPEED, SafetyLimits
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from postbc import topics
from postbc.conversions import (
    ConversionError,
    joint_state_msg,
    pose_array_msg,
    to_time,
    trajectory_chunk,
)
from postbc.node_main import main as node_main
from postbc.params import declare

BACKENDS = ("sim", "interbotix")
ROBOT_MODELS = ("wx250s",)  # postbc_core.robots.kinematics models the wx250s only
PHYSICS_DT = 0.002  # s, postbc_core.sim.base.PHYSICS_DT (kept here so the interbotix path never imports mujoco)


# The defaults of the executor's and the safety layer's settings are theirs (ExecutorConfig, SafetyLimits): one home
# per value. The docstrings stay here, one line per field, for `--show-args` and the params-file docs (postbc.params).
@dataclass
class Params:
    backend: str = "sim"
    """"sim" (MuJoCo twin, postbc_core sim task) or "interbotix" (real arm through interbotix_xs_modules)."""
    robot_model: str = "wx250s"
    """Interbotix robot model (the kinematics and safety limits are the wx250s')."""
    robot_name: str = ""
    """interbotix: namespace of the xs_sdk node ("" = robot_model)."""
    task: str = "lift_cube"
    """sim: task name from postbc_core.sim.registry (lift_cube, put_in_bowl, push_to_target)."""
    seed: int = 0
    """sim: episode seeds; the scene at startup and the first ~/reset use `seed`, later resets seed+1, seed+2, ..."""
    control_hz: float = CONTROL_HZ
    """Rate (Hz) at which the trajectory is sampled and the target passes the safety layer and is sent (sim tasks:
    5..10 Hz)."""
    state_hz: float = 100.0
    """Rate (Hz) of /joint_states (sim: also the physics increment, 1 / state_hz s per tick)."""
    real_time_factor: float = 1.0
    """sim: sim seconds per wall second (1.0 = real time; tests use 2-4)."""
    command_timeout: float = ExecutorConfig.command_timeout
    """Watchdog (s): hold the measured position when the last trajectory's last point is this far in the past."""
    max_command_age: float = ExecutorConfig.max_command_age
    """A trajectory whose header stamp is older than this (s) on arrival is rejected: the stamp is the observation
    time its producer acted on, so this bounds perception-to-action latency (stricter than
    joint_trajectory_controller, which only rejects a trajectory that ends in the past). A zero stamp starts on
    receipt and is never stale."""
    max_command_lead: float = ExecutorConfig.max_command_lead
    """A trajectory may start in the future (as joint_trajectory_controller does, it replaces the running one at
    once and the arm moves so as to reach the first point at stamp + time_from_start), up to this many seconds
    ahead; farther is rejected as a clock mismatch."""
    joint_margin: float = SafetyLimits.joint_margin
    """rad kept clear of each URDF joint limit."""
    workspace_min: tuple[float, float, float] = SafetyLimits.workspace_min
    """Lower corner (m, base frame) of the box the end effector must stay in."""
    workspace_max: tuple[float, float, float] = SafetyLimits.workspace_max
    """Upper corner (m, base frame) of the end-effector box."""
    max_joint_speed: float = MAX_JOINT_SPEED
    """Largest joint speed (rad/s): the safety layer's max step per control period is max_joint_speed / control_hz."""
    home_tolerance: float = ExecutorConfig.home_tolerance
    """~/go_home succeeds once every joint is within this (rad) of kinematics.HOME_QPOS."""
    home_timeout: float = ExecutorConfig.home_timeout
    """~/go_home fails after this many seconds (robot time) without reaching home."""
    connect_timeout: float = 30.0
    """interbotix: seconds to wait for the xs_sdk's services under /<robot_name> before failing with the cause."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
        if self.robot_model not in ROBOT_MODELS:
            raise ConfigError(f"robot_model={self.robot_model!r} is unsupported; choose one of "
                              f"{', '.join(ROBOT_MODELS)} (the kinematics and limits are the wx250s')")
        if self.backend == "sim":
            # mujoco loads here, only for the sim backend
            from postbc_core.sim.registry import list_tasks

            if self.task not in list_tasks():
                raise ConfigError(f"task={self.task!r} is not a sim task; available: {', '.join(list_tasks())}")
        if not self.control_hz > 0:
            raise ConfigError(f"control_hz={self.control_hz} must be > 0 Hz (the WidowX runs at 5-10 Hz)")
        if not self.control_hz <= self.state_hz <= 1.0 / PHYSICS_DT:
            raise ConfigError(f"state_hz={self.state_hz} must be in [control_hz={self.control_hz}, "
                              f"{1.0 / PHYSICS_DT:.0f}] Hz")
        if not self.real_time_factor > 0:
            raise ConfigError(f"real_time_factor={self.real_time_factor} must be > 0 (1.0 = real time)")
        if not self.connect_timeout > 0:
            raise ConfigError(f"connect_timeout={self.connect_timeout} must be > 0")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be a non-negative integer")
        self.executor_config()  # ExecutorConfig checks its timeouts and tolerances
        self.limits()  # SafetyLimits checks the speed, the margin and the workspace box

    def limits(self) -> SafetyLimits:
        """The safety layer's limits: max_joint_speed / control_hz rad per step, this node's margin and box."""
        return SafetyLimits.for_rate(self.control_hz, self.max_joint_speed, joint_margin=self.joint_margin,
                                     workspace_min=tuple(self.workspace_min), workspace_max=tuple(self.workspace_max))

    def executor_config(self) -> ExecutorConfig:
        """Every ExecutorConfig field from the parameter of the same name."""
        return ExecutorConfig(**{f.name: getattr(self, f.name) for f in fields(ExecutorConfig)})

    def make_robot(self):
        """The connected Robot of this backend."""
        if self.backend == "sim":
            from postbc_core.robots.sim_robot import SimRobot
            from postbc_core.sim.registry import make

            task = make(self.task, action_mode="joint", control_hz=self.control_hz,
                        max_joint_speed=self.max_joint_speed, limits=self.limits())
            robot = SimRobot(task, seed=self.seed, step_on_send=False)
        else:
            from postbc_core.robots.interbotix import InterbotixConfig, InterbotixRobot

            robot = InterbotixRobot(InterbotixConfig(
                robot_model=self.robot_model, robot_name=self.robot_name or None, control_hz=self.control_hz,
                max_joint_speed=self.max_joint_speed, limits=self.limits(), connect_timeout=self.connect_timeout))
        robot.connect()
        return robot


# -- the node -----------------------------------------------------------------------------------------------------
class RobotDriver(Node):
    def __init__(self, node_name: str = "robot_driver", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.robot = None
        self.executor_core: TrajectoryExecutor | None = None
        try:
            self._setup()
        except BaseException:
            # A half-built node must not linger: its eventual garbage collection would unregister the /rosout
            # publisher of the next node with the same name in this process.
            self.destroy_node()
            raise

    def _setup(self):
        self.params = p = declare(self, Params)
        # sim clock and pacing
        self._sim_time = 0.0  # s; = _physics_steps * PHYSICS_DT (an integer count: no drift over long runs)
        self._physics_steps = 0
        self._rtf = 0.0
        self._next_seed = p.seed
        self._episode_seed = p.seed

        self._srv_group = ReentrantCallbackGroup()  # go_home blocks until reached while the loops keep running
        self._loop_group = MutuallyExclusiveCallbackGroup()
        steady = Clock(clock_type=ClockType.STEADY_TIME)

        self.robot = p.make_robot()  # start-up errors (no SDK, no xs_sdk, bad task) name their cause here
        self.executor_core = ex = TrajectoryExecutor(self.robot, p.executor_config(), log=self._log)
        self._js_pub = self.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
        self._status_pub = self.create_publisher(String, topics.DRIVER_STATUS, topics.STATUS_QOS)
        self.create_subscription(JointTrajectory, topics.COMMAND, self._on_command, topics.COMMAND_QOS)
        self.create_subscription(Bool, topics.ESTOP, lambda m: ex.estop(bool(m.data)), topics.LATCHED_QOS)
        self.create_service(Trigger, "~/go_home", self._srv_go_home, callback_group=self._srv_group)
        self.create_service(SetBool, "~/enable", self._srv_enable, callback_group=self._srv_group)

        if p.backend == "sim":
            # Every free / mocap body (what the camera node needs to mirror the scene and what the task's state keys
            # are computed from: postbc_core.sim.registry.task_state_keys), task object first.
            self._bodies = self.robot.task.scene_body_names()
            self._clock_pub = self.create_publisher(ClockMsg, topics.CLOCK, 10)
            self._poses_pub = self.create_publisher(PoseArray, topics.OBJECT_POSES, topics.STATE_QOS)
            self._success_pub = self.create_publisher(Bool, topics.SUCCESS, topics.STATE_QOS)
            self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._srv_group)
            self._n_sub = max(1, round(1.0 / (p.state_hz * PHYSICS_DT)))
            self._ticks_per_control = max(1, round(p.state_hz / p.control_hz))
            self._thread = threading.Thread(target=self._physics_loop, name="robot_driver_physics", daemon=True)
            self._thread.start()
        else:
            self.create_timer(1.0 / p.state_hz, self._publish_state_hw, callback_group=self._loop_group, clock=steady)
            self.create_timer(1.0 / p.control_hz, lambda: ex.step(self.now()), callback_group=self._loop_group,
                              clock=steady)
        self.create_timer(0.5, self._publish_status, callback_group=self._loop_group, clock=steady)
        self.get_logger().info(
            f"robot_driver up: backend={p.backend} "
            + (f"task={p.task} seed={p.seed} rtf={p.real_time_factor} " if p.backend == "sim" else "")
            + f"control {p.control_hz} Hz, state {p.state_hz} Hz, max joint speed {p.max_joint_speed} rad/s")

    def _log(self, severity: str, text: str) -> None:
        # One call site per severity: rclpy's logger refuses a call site whose severity changes
        # ("Logger severity cannot be changed between calls", Humble through Kilted).
        if severity == "info":
            self.get_logger().info(text)
        elif severity == "warning":
            self.get_logger().warning(text)
        else:
            self.get_logger().error(text)

    # -- time ---------------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Robot time (s): sim time in sim (what /clock says), the node clock on hardware."""
        if self.params.backend == "sim":
            return self._sim_time
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs -------------------------------------------------------------------------------------------------
    def _on_command(self, msg: JointTrajectory):
        ex = self.executor_core
        now = self.now()
        try:
            chunk = trajectory_chunk(msg)
        except ConversionError as e:
            ex.reject(f"command rejected: {e}")
            return
        # Checked on the message: in the chunk a NaN gripper (or velocity row) means "not in this trajectory".
        bad = [(k, f, n, v) for k, pt in enumerate(msg.points) for f in ("positions", "velocities", "accelerations")
               for n, v in zip(msg.joint_names, getattr(pt, f)) if not np.isfinite(v)]
        if bad:
            k, f, n, v = bad[0]
            what = {"positions": "", "velocities": "velocity of ", "accelerations": "acceleration of "}[f]
            ex.reject(f"command rejected: {len(bad)} non-finite value(s), first {what}{n}={v} at point {k}; "
                      "nothing moves. Check the policy output / normalizer for NaNs.")
            return
        ex.submit(chunk.joint_pos, chunk.gripper, chunk.times, chunk.stamp, now, velocities=chunk.velocities,
                  accelerations=chunk.accelerations)

    # -- sim loop -----------------------------------------------------------------------------------------------
    def _physics_loop(self):
        p, robot, ex = self.params, self.robot, self.executor_core
        tick = 0
        anchor_wall, anchor_sim = time.monotonic(), self._sim_time
        win_wall, win_sim = anchor_wall, self._sim_time
        while not self._stop.is_set():
            control = tick % self._ticks_per_control == 0
            try:
                with ex.lock:
                    if control:
                        ex.step(self._sim_time)
                    robot.sim.step_physics(self._n_sub)
                    self._physics_steps += self._n_sub
                    self._sim_time = self._physics_steps * PHYSICS_DT
                    t = self._sim_time
                    r = robot.measure()
                    ex.last_measured = r.joint_pos
                    poses = [robot.sim.body_pose(b) for b in self._bodies]
                    success = bool(robot.task.success()) if control else None
                self._clock_pub.publish(ClockMsg(clock=to_time(t)))
                self._js_pub.publish(joint_state_msg(r.joint_pos, r.gripper, t, r.joint_vel, r.joint_effort))
                self._poses_pub.publish(pose_array_msg(poses, t))
                if success is not None:
                    self._success_pub.publish(Bool(data=success))
            except Exception as exc:  # noqa: BLE001 - keep the arm held and say why, never die silently
                if self._stop.is_set() or not self.context.ok():
                    return
                self.get_logger().error(f"physics loop: {exc!r}")
                time.sleep(0.1)
            tick += 1
            wall = time.monotonic()
            if wall - win_wall >= 1.0:
                self._rtf = (self._sim_time - win_sim) / (wall - win_wall)
                win_wall, win_sim = wall, self._sim_time
            lag = wall - (anchor_wall + (self._sim_time - anchor_sim) / p.real_time_factor)
            if lag < 0:
                self._stop.wait(-lag)
            elif lag > 0.25:  # fell behind (loaded machine): run on from here instead of bursting to catch up
                anchor_wall, anchor_sim = wall, self._sim_time

    # -- hardware loop ------------------------------------------------------------------------------------------
    def _publish_state_hw(self):
        try:
            r = self.robot.measure()
        except PostBCError as exc:
            self.get_logger().error(f"joint states unavailable: {exc}")
            return
        self.executor_core.last_measured = r.joint_pos
        self._js_pub.publish(joint_state_msg(r.joint_pos, r.gripper, self.now(), r.joint_vel, r.joint_effort))

    # -- services -----------------------------------------------------------------------------------------------
    def _srv_enable(self, req, resp):
        resp.success, resp.message = self.executor_core.enable(bool(req.data))
        self.get_logger().info(f"~/enable {req.data}: {resp.message}")
        return resp

    def _srv_go_home(self, req, resp):
        p = self.params
        wall_limit = p.home_timeout / (p.real_time_factor if p.backend == "sim" else 1.0) + 5.0
        resp.success, resp.message = self.executor_core.go_home(self.now(), wall_limit)
        if resp.success:
            self.get_logger().info(resp.message)
        else:
            self.get_logger().error(resp.message)
        return resp

    def _srv_reset(self, req, resp):
        ex = self.executor_core
        with ex.lock:
            seed = self._next_seed
            self._next_seed += 1
            self.robot.reset(seed=seed)  # arm at home, gripper open, objects from the seed
            self._episode_seed = seed
            ex.hold_now("reset", gripper=GRIPPER_OPEN)
        resp.success, resp.message = True, f"seed={seed}"
        self.get_logger().info(f"~/reset: new episode, seed={seed}")
        return resp

    # -- status -------------------------------------------------------------------------------------------------
    def status(self) -> dict:
        s = {"backend": self.params.backend, **self.executor_core.status()}
        if self.params.backend == "sim":
            s.update(task=self.params.task, seed=self._episode_seed, sim_time=round(self._sim_time, 4),
                     real_time_factor=round(self._rtf, 3), real_time_factor_set=self.params.real_time_factor)
        return s

    def _publish_status(self):
        self._status_pub.publish(String(data=json.dumps(self.status())))

    def destroy_node(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self.executor_core is not None:
            self.executor_core.close("driver shutting down")
        if self.robot is not None:
            # InterbotixRobot.close parks the arm (sleep pose) through the SDK; postbc.node_main calls this before
            # it shuts the ROS context down, so that still works after Ctrl-C / SIGTERM.
            try:
                self.robot.close()
            except Exception as e:  # noqa: BLE001 - shutting down anyway; say what failed
                self.get_logger().error(f"closing the {self.params.backend} robot: {e!r}")
            self.robot = None
        super().destroy_node()


def main(args=None):
    node_main(RobotDriver, args)

