"""robot_driver: the one node that talks to the arm (MuJoCo twin or the real wx250s) and owns safety.

Publishes /joint_states at `state_hz`; executes /postbc/command trajectories (point i due at header.stamp +
time_from_start, the last due point held between points) once per control period through postbc_core's
SafetyLayer (joint limits, workspace box, max joint speed) relative to the measured joints; rejects NaN/inf and stale
commands; holds the measured position when commands stop (watchdog), on e-stop (latched, /postbc/estop) and when
disabled (~/enable false). Services ~/go_home, ~/enable, and in sim ~/reset. Status JSON on /postbc/driver/status.

Sim backend: owns a postbc_core sim Task, steps its physics in a thread (1 / state_hz s per tick, paced by
`real_time_factor` against the wall clock) and publishes /clock, object poses (every free body) and task success,
all stamped with sim time. Interbotix backend: postbc_core.robots.interbotix.InterbotixRobot sharing this node.
Units: radians, metres, seconds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from geometry_msgs.msg import PoseArray
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import JointAction
from postbc_core.robots.safety import MAX_JOINT_SPEED, SafetyLayer, SafetyLimits
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
IGNORED_LOG_GAP = 1.0  # s of wall time without ignored commands that ends a "burst" (one log line per burst)


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
    control_hz: float = 10.0
    """Rate (Hz) at which the due command passes the safety layer and is sent (sim tasks: 5..10 Hz)."""
    state_hz: float = 100.0
    """Rate (Hz) of /joint_states (sim: also the physics increment, 1 / state_hz s per tick)."""
    real_time_factor: float = 1.0
    """sim: sim seconds per wall second (1.0 = real time; tests use 2-4)."""
    command_timeout: float = 0.5
    """Watchdog (s): hold the measured position when the last trajectory's last point is this far in the past."""
    max_command_age: float = 0.5
    """A trajectory whose header stamp is older than this (s) on arrival is rejected: the stamp is the observation
    time its producer acted on, so this bounds perception-to-action latency (stricter than
    joint_trajectory_controller, which only rejects a trajectory that ends in the past). A zero stamp starts on
    receipt and is never stale."""
    max_command_lead: float = 5.0
    """A trajectory may start in the future (its points wait for stamp + time_from_start; the previous target is
    held until then), up to this many seconds ahead; farther is rejected as a clock mismatch."""
    joint_margin: float = 0.02
    """rad kept clear of each URDF joint limit."""
    workspace_min: tuple[float, float, float] = (0.05, -0.40, 0.01)
    """Lower corner (m, base frame) of the box the end effector must stay in."""
    workspace_max: tuple[float, float, float] = (0.60, 0.40, 0.55)
    """Upper corner (m, base frame) of the end-effector box."""
    max_joint_speed: float = MAX_JOINT_SPEED
    """Largest joint speed (rad/s): the safety layer's max step per control period is max_joint_speed / control_hz."""
    home_tolerance: float = 0.01
    """~/go_home succeeds once every joint is within this (rad) of kinematics.HOME_QPOS."""
    home_timeout: float = 10.0
    """~/go_home fails after this many seconds (robot time) without reaching home."""

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
        for name in ("command_timeout", "max_command_age", "max_command_lead", "max_joint_speed", "home_tolerance",
                     "home_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be a non-negative integer")
        self.limits()  # SafetyLimits validates the margin and the workspace box

    def limits(self) -> SafetyLimits:
        return SafetyLimits(joint_margin=self.joint_margin, workspace_min=tuple(self.workspace_min),
                            workspace_max=tuple(self.workspace_max),
                            max_joint_step=self.max_joint_speed / self.control_hz)


# -- backends: measure, send, hold --------------------------------------------------------------------------------
class _SimBackend:
    """A postbc_core sim Task; physics is stepped by the driver's thread (RobotDriver._physics_loop)."""

    name = "sim"

    def __init__(self, p: Params):
        from postbc_core.sim.registry import make

        self.task = make(p.task, action_mode="joint", control_hz=p.control_hz)
        self.sim = self.task.sim
        self.safety = SafetyLayer(p.limits())
        # Every free / mocap body (what the camera node needs to mirror the scene), task object first.
        self.bodies = self.sim.scene_bodies(first=self.task.object_body)

    def measure(self):
        """(joint_pos (6,), joint_vel (6,), joint_effort (6,), gripper opening m)."""
        o = self.sim.observation()
        return o["joint_pos"], o["joint_vel"], o["joint_effort"], float(o["gripper_pos"][0])

    def send(self, q, g, cur):
        sent = self.safety.filter(q, g, cur)
        self.sim.set_targets(sent.joint_pos, sent.gripper)
        return sent

    def hold(self, q, g):
        self.sim.set_targets(q, g)

    def close(self):
        self.task.close()


class _InterbotixBackend:
    """postbc_core InterbotixRobot (its send_action passes its own SafetyLayer built from our limits)."""

    name = "interbotix"

    def __init__(self, p: Params, node):
        from postbc_core.robots.interbotix import InterbotixConfig, InterbotixRobot

        cfg = InterbotixConfig(robot_model=p.robot_model, robot_name=p.robot_name or None, control_hz=p.control_hz,
                               limits=p.limits())
        self.robot = InterbotixRobot(cfg, node=node)
        self.robot.connect()
        self.safety = self.robot.safety

    def measure(self):
        o = self.robot.get_observation()
        return o["joint_pos"], o["joint_vel"], o["joint_effort"], float(o["gripper_pos"][0])

    def send(self, q, g, cur):
        return self.robot.send_action(JointAction(joint_pos=np.asarray(q, float), gripper=float(g)))

    def hold(self, q, g):
        # The xs_sdk keeps moving toward its last goal: command the measured position once, then stop writing.
        self.robot.send_action(JointAction(joint_pos=np.asarray(q, float), gripper=float(g)))

    def close(self):
        self.robot.close()


# -- the node -----------------------------------------------------------------------------------------------------
class RobotDriver(Node):
    def __init__(self, node_name: str = "robot_driver", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._home_event: threading.Event | None = None
        self.backend = None
        try:
            self._setup()
        except BaseException:
            # A half-built node must not linger: its eventual garbage collection would unregister the /rosout
            # publisher of the next node with the same name in this process.
            self.destroy_node()
            raise

    def _setup(self):
        self.params = p = declare(self, Params)
        # command state (guarded by _lock)
        self._mode = "hold"  # "hold" | "traj" | "home"
        self._traj = None  # conversions.Chunk
        self._due = None  # (T,) absolute due times (s)
        self._req_q = None  # the requested (pre-safety) joint target being executed, None = keep the last sent
        self._grip = float(kinematics.GRIPPER_LIMITS[1])  # gripper target (m); hold keeps it (a grasp stays closed)
        self._estop = False
        self._estop_topic = False
        self._enabled = True
        self._home_result = (False, "")
        self._home_start = 0.0
        self._counts = {"accepted": 0, "rejected": 0, "ignored": 0, "clamped": 0, "watchdog_holds": 0}
        self._last_ignored_log = -1e9
        self._last_sent = None
        self._last_measured = None

        # sim clock and pacing
        self._sim_time = 0.0  # s; = _physics_steps * PHYSICS_DT (an integer count: no drift over long runs)
        self._physics_steps = 0
        self._rtf = 0.0
        self._seed = p.seed
        self._next_seed = p.seed
        self._episode_seed = p.seed

        self._srv_group = ReentrantCallbackGroup()  # go_home blocks until reached while the loops keep running
        self._loop_group = MutuallyExclusiveCallbackGroup()
        steady = Clock(clock_type=ClockType.STEADY_TIME)

        self._js_pub = self.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
        self._status_pub = self.create_publisher(String, topics.DRIVER_STATUS, topics.STATUS_QOS)
        self.create_subscription(JointTrajectory, topics.COMMAND, self._on_command, topics.COMMAND_QOS)
        self.create_subscription(Bool, topics.ESTOP, self._on_estop, topics.LATCHED_QOS)
        self.create_service(Trigger, "~/go_home", self._srv_go_home, callback_group=self._srv_group)
        self.create_service(SetBool, "~/enable", self._srv_enable, callback_group=self._srv_group)

        if p.backend == "sim":
            self.backend = _SimBackend(p)
            self.backend.task.reset(seed=p.seed)
            self._clock_pub = self.create_publisher(ClockMsg, topics.CLOCK, 10)
            self._poses_pub = self.create_publisher(PoseArray, topics.OBJECT_POSES, topics.STATE_QOS)
            self._success_pub = self.create_publisher(Bool, topics.SUCCESS, topics.STATE_QOS)
            self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._srv_group)
            self._n_sub = max(1, round(1.0 / (p.state_hz * PHYSICS_DT)))
            self._ticks_per_control = max(1, round(p.state_hz / p.control_hz))
            self._thread = threading.Thread(target=self._physics_loop, name="robot_driver_physics", daemon=True)
            self._thread.start()
        else:
            self.backend = _InterbotixBackend(p, self)
            self.create_timer(1.0 / p.state_hz, self._publish_state_hw, callback_group=self._loop_group, clock=steady)
            self.create_timer(1.0 / p.control_hz, self._control_hw, callback_group=self._loop_group, clock=steady)
        with self._lock:
            self._last_measured = self.backend.measure()[0]
        self.create_timer(0.5, self._publish_status, callback_group=self._loop_group, clock=steady)
        self.get_logger().info(
            f"robot_driver up: backend={p.backend} "
            + (f"task={p.task} seed={p.seed} rtf={p.real_time_factor} " if p.backend == "sim" else "")
            + f"control {p.control_hz} Hz, state {p.state_hz} Hz, max joint speed {p.max_joint_speed} rad/s")

    # -- time ---------------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Robot time (s): sim time in sim (what /clock says), the node clock on hardware."""
        if self.params.backend == "sim":
            return self._sim_time
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs -------------------------------------------------------------------------------------------------
    def _on_command(self, msg: JointTrajectory):
        log = self.get_logger()
        now = self.now()
        try:
            chunk = trajectory_chunk(msg)
        except ConversionError as e:
            self._reject(f"command rejected: {e}")
            return
        bad = [(k, n, v) for k, pt in enumerate(msg.points) for n, v in zip(msg.joint_names, pt.positions)
               if not np.isfinite(v)]
        if bad:
            k, n, v = bad[0]
            self._reject(f"command rejected: {len(bad)} non-finite value(s), first {n}={v} at point {k}; nothing "
                         "moves. Check the policy output / normalizer for NaNs.")
            return
        if chunk.stamp == 0.0:  # joint_trajectory_controller's convention: a zero stamp starts on receipt
            chunk = replace(chunk, stamp=now)
        age = now - chunk.stamp
        if age > self.params.max_command_age:
            self._reject(f"command rejected: header stamp {chunk.stamp:.3f} s is {age:.3f} s old (> max_command_age "
                         f"{self.params.max_command_age} s); stamp commands with the observation time on the node "
                         "clock (use_sim_time=True in sim) and keep inference latency below max_command_age")
            return
        if age < -self.params.max_command_lead:
            self._reject(f"command rejected: header stamp {chunk.stamp:.3f} s is {-age:.3f} s in the future of the "
                         f"driver's clock ({now:.3f} s; max_command_lead {self.params.max_command_lead} s): a clock "
                         "mismatch? In sim run the producer with use_sim_time=True, or stamp 0 to start on receipt")
            return
        with self._lock:
            reason = ("e-stop is latched (publish false on /postbc/estop, then call ~/enable true)" if self._estop
                      else "driver is disabled (call ~/enable true)" if not self._enabled
                      else "going home (~/go_home in progress)" if self._mode == "home" else None)
            if reason is not None:
                self._counts["ignored"] += 1
                wall = time.monotonic()
                if wall - self._last_ignored_log > IGNORED_LOG_GAP:
                    log.warning(f"command ignored: {reason}")
                self._last_ignored_log = wall
                return
            self._traj = chunk
            self._due = chunk.stamp + chunk.times
            self._mode = "traj"
            self._counts["accepted"] += 1

    def _reject(self, text: str):
        with self._lock:
            self._counts["rejected"] += 1
        self.get_logger().error(text)

    def _on_estop(self, msg: Bool):
        with self._lock:
            self._estop_topic = bool(msg.data)
            if msg.data and not self._estop:
                self._estop = True
                self._hold_now("e-stop")
                self.get_logger().error("E-STOP latched: holding the measured position, ignoring commands; publish "
                                        "false on /postbc/estop and call ~/enable true to resume")

    # -- control (called with _lock held) ----------------------------------------------------------------------
    def _hold_now(self, why: str):
        """Target := the measured joints (the arm stops where it is); the gripper keeps its target."""
        q, _, _, _ = self.backend.measure()
        self._mode, self._traj, self._due, self._req_q = "hold", None, None, None
        self._finish_home(False, f"go_home interrupted: {why}")
        try:
            self.backend.hold(q, self._grip)
        except PostBCError as e:
            self.get_logger().error(f"hold ({why}) failed: {e}")
        self._last_sent = q

    def _finish_home(self, ok: bool, message: str):
        if self._home_event is not None:
            self._home_result = (ok, message)
            self._home_event.set()
            self._home_event = None

    def _control_step(self, now: float):
        """Once per control period: pick the due target, pass it through the safety layer, send it."""
        if self._estop or not self._enabled:
            return
        p = self.params
        q_meas, _, _, _ = self.backend.measure()
        self._last_measured = q_meas
        if self._mode == "home":
            if float(np.max(np.abs(q_meas - kinematics.HOME_QPOS))) < p.home_tolerance:
                self._mode = "hold"
                self._req_q = None
                self._finish_home(True, "home reached")
                return
            if now - self._home_start > p.home_timeout:
                err = float(np.max(np.abs(q_meas - kinematics.HOME_QPOS)))
                self._finish_home(False, f"go_home: still {err:.4f} rad from home after {p.home_timeout} s "
                                         "(blocked by an object or the workspace box?); holding")
                self._hold_now("go_home timeout")
                return
            self._req_q = kinematics.HOME_QPOS.copy()
        elif self._mode == "traj":
            due = self._due
            if now - due[-1] > p.command_timeout:
                self._counts["watchdog_holds"] += 1
                self.get_logger().warning(f"watchdog: no command for {now - due[-1]:.2f} s "
                                          f"(command_timeout {p.command_timeout} s), holding")
                self._hold_now("watchdog")
                return
            k = int(np.searchsorted(due, now, side="right")) - 1
            if k >= 0:
                self._req_q = self._traj.joint_pos[k].copy()
                if np.isfinite(self._traj.gripper[k]):
                    self._grip = float(self._traj.gripper[k])
        if self._req_q is None:
            return  # holding: the last target stays
        stats = self.backend.safety.stats
        before = (stats.joint_clamps, stats.workspace_limited, stats.gripper_clamps)
        requested_g = self._grip
        try:
            sent = self.backend.send(self._req_q, self._grip, q_meas)
        except PostBCError as e:
            self.get_logger().error(f"command not sent: {e}")
            self._hold_now("send failed")
            return
        self._grip = float(sent.gripper)
        self._last_sent = sent.joint_pos
        if sent.clamped:
            self._counts["clamped"] += 1
            # The safety layer logs each alteration through Python logging; say it on the node's log (/rosout) too.
            # Step limiting alone is how a far target is approached (every period), so only limits and the box
            # are reported, at most once a second.
            what = [w for w, b, a in zip(("joint limits", "workspace box", "gripper range"), before,
                                         (stats.joint_clamps, stats.workspace_limited, stats.gripper_clamps))
                    if a > b]
            if what:
                self.get_logger().warning(
                    f"safety: target {np.round(self._req_q, 4).tolist()} (gripper {requested_g:.4f} m) altered by "
                    f"the {' and '.join(what)} to {np.round(sent.joint_pos, 4).tolist()} (gripper "
                    f"{sent.gripper:.4f} m); command targets inside the limits", throttle_duration_sec=1.0)

    # -- sim loop -----------------------------------------------------------------------------------------------
    def _physics_loop(self):
        p, be = self.params, self.backend
        tick = 0
        anchor_wall, anchor_sim = time.monotonic(), self._sim_time
        win_wall, win_sim = anchor_wall, self._sim_time
        while not self._stop.is_set():
            control = tick % self._ticks_per_control == 0
            try:
                with self._lock:
                    if control:
                        self._control_step(self._sim_time)
                    be.sim.step_physics(self._n_sub)
                    self._physics_steps += self._n_sub
                    self._sim_time = self._physics_steps * PHYSICS_DT
                    t = self._sim_time
                    q, v, e, g = be.measure()
                    self._last_measured = q
                    poses = [be.sim.body_pose(b) for b in be.bodies]
                    success = bool(be.task.success()) if control else None
                self._clock_pub.publish(ClockMsg(clock=to_time(t)))
                self._js_pub.publish(joint_state_msg(q, g, t, v, e))
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

    # -- hardware loops -----------------------------------------------------------------------------------------
    def _publish_state_hw(self):
        try:
            with self._lock:
                q, v, e, g = self.backend.measure()
                self._last_measured = q
        except PostBCError as exc:
            self.get_logger().error(f"joint states unavailable: {exc}")
            return
        self._js_pub.publish(joint_state_msg(q, g, self.now(), v, e))

    def _control_hw(self):
        with self._lock:
            self._control_step(self.now())

    # -- services -----------------------------------------------------------------------------------------------
    def _srv_enable(self, req, resp):
        with self._lock:
            if req.data:
                if self._estop_topic:
                    resp.success = False
                    resp.message = ("e-stop topic /postbc/estop is still True; publish false there first, then "
                                    "call ~/enable true")
                    return resp
                if self._estop or not self._enabled:
                    was = "e-stop cleared" if self._estop else "enabled"
                    self._estop, self._enabled = False, True
                    self._hold_now("enable")  # resume from where the arm is, never toward a pre-stop target
                else:
                    was = "already enabled"
                resp.success, resp.message = True, was
            else:
                self._enabled = False
                self._hold_now("disabled")
                resp.success, resp.message = True, "disabled: holding, commands ignored"
        self.get_logger().info(f"~/enable {req.data}: {resp.message}")
        return resp

    def _srv_go_home(self, req, resp):
        p = self.params
        with self._lock:
            if self._estop or not self._enabled:
                resp.success = False
                resp.message = ("e-stop is latched; clear it first" if self._estop
                                else "driver is disabled; call ~/enable true first")
                return resp
            self._finish_home(False, "go_home superseded by a new request")
            event = self._home_event = threading.Event()
            self._mode, self._traj, self._due = "home", None, None
            self._grip = float(self.backend.safety.limits.gripper_limits[1])
            self._home_start = self.now()
        wall_limit = p.home_timeout / (p.real_time_factor if p.backend == "sim" else 1.0) + 5.0
        if not event.wait(wall_limit):
            with self._lock:
                self._home_event = None
                self._hold_now("no progress")
            resp.success, resp.message = False, f"go_home: no result after {wall_limit:.1f} s of wall time"
            return resp
        resp.success, resp.message = self._home_result
        # One call site per severity: rclpy's logger refuses a call site whose severity changes
        # ("Logger severity cannot be changed between calls", Humble through Kilted).
        if resp.success:
            self.get_logger().info(resp.message)
        else:
            self.get_logger().error(resp.message)
        return resp

    def _srv_reset(self, req, resp):
        with self._lock:
            seed = self._next_seed
            self._next_seed += 1
            self.backend.task.reset(seed=seed)  # arm at home, gripper open, objects from the seed
            self._episode_seed = seed
            self._grip = float(kinematics.GRIPPER_LIMITS[1])
            self._hold_now("reset")
        resp.success, resp.message = True, f"seed={seed}"
        self.get_logger().info(f"~/reset: new episode, seed={seed}")
        return resp

    # -- status -------------------------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            s = {
                "backend": self.params.backend, "enabled": self._enabled, "estop": self._estop,
                "holding": self._mode == "hold", "mode": self._mode, "commands": dict(self._counts),
                "safety": asdict(self.backend.safety.stats),
                "target": None if self._last_sent is None else [round(float(v), 5) for v in self._last_sent],
                "gripper_target": self._grip,
            }
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
        with self._lock:
            self._finish_home(False, "driver shutting down")
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as e:  # noqa: BLE001 - shutting down anyway; say what failed
                self.get_logger().error(f"closing the {self.backend.name} backend: {e!r}")
            self.backend = None
        super().destroy_node()


def main(args=None):
    node_main(RobotDriver, args)

