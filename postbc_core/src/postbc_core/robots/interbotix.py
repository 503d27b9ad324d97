"""Real WidowX 250s through Interbotix's Python SDK (`interbotix_xs_modules`, ROS 2 Humble).

The SDK is imported lazily in `connect()` (it exists only on the robot, installed by Interbotix's installer), so
this module imports anywhere. Commands stream without blocking through the SDK's `arm.set_joint_positions(...,
blocking=False)`: a JointGroupCommand that the xs_sdk executes with the time-based profile `moving_time`, and the
SDK's record of the last command (which its speed check measures from) stays true. The SDK refuses a command it
finds outside its joint limits or too fast by returning False; every such refusal is a PostBCError here, never
ignored. `go_home` is one blocking move whose arrival is measured. Every command passes the shared SafetyLayer
first. Node ownership and shutdown: see `InterbotixRobot`. Units: rad, m, s, N·m.

Efforts: xs_sdk's JointState.effort is not a torque. Its driver (interbotix_xs_driver, `read_joint_states`) reports
the raw register at address 126 times 2.69 for every X-series servo (DynamixelWorkbench::convertValue2Current): on
the current-sensing XM servos that register is Present_Current (2.69 mA per unit), so effort is milliamps; on the
XL430-W250 it is Present_Load (0.1 % of the maximum torque per unit), so effort is load x 2.69, not milliamps. And
it publishes the master motor of a dual-motor joint only. `get_observation` converts every joint to N·m at the
joint (`effort_to_torque`), the unit the MuJoCo twin reports (actuator force), so `joint_effort` means one thing in
the store whatever the backend (data/README.md). The servo of each joint comes from `InterbotixConfig.servos`,
by default Trossen's published table for the robot model (`ARM_SERVOS`).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from postbc_core.robots.observation import robot_observation
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import (
    JOINT_NAMES,
    EEDeltaAction,
    JointAction,
    JointReading,
    SentCommand,
)
from postbc_core.robots.robot import Robot
from postbc_core.robots.safety import CONTROL_HZ, MAX_JOINT_SPEED, SafetyLimits, make_safety_layer

logger = logging.getLogger(__name__)

# -- joint_effort: xs_sdk effort -> N·m ---------------------------------------------------------------------------
# xs_driver's effort per unit of the servo's register 126 (DynamixelWorkbench::convertValue2Current's CURRENT_UNIT).
XS_EFFORT_PER_UNIT = 2.69

# N·m at the servo horn per unit of xs_sdk effort, by Dynamixel model, at the arms' 12 V supply (ROBOTIS e-manual,
# "Stall Torque" at 12.0 V). Current-sensing servos: stall torque / stall current, effort in mA. The XL430 reports
# Present_Load in 0.1 % of its maximum (stall) torque, which xs_driver multiplies by 2.69.
NM_PER_EFFORT = {
    "XM430-W350": 4.1 / 2.3 / 1000.0,  # 4.1 N·m at 2.3 A -> 1.783 N·m/A
    "XM540-W270": 2.409 / 1000.0,  # 10.6 N·m at 4.4 A; the e-manual gives 2.409 N·m/A
    "XL430-W250": 1.5 * 0.001 / XS_EFFORT_PER_UNIT,  # 1.5 N·m stall torque; 1 unit = 0.1 %
}

# Servo model and number of motors driving each arm joint. wx250s: Trossen's servo table
# (TrossenRobotics/interbotix_xsarms_docs docs/_data/servos_wx250s.csv: IDs 1-7 XM430-W350, wrist_rotate and gripper
# XL430-W250) and the motor config's shadows (interbotix_xsarm_control config/wx250s.yaml: shoulder_shadow and
# elbow_shadow drive shoulder and elbow with their master). xs_sdk publishes the master's effort; the joint's torque
# is the motors' sum, taken as equal shares.
ARM_SERVOS: dict[str, dict[str, tuple[str, int]]] = {
    "wx250s": {"waist": ("XM430-W350", 1), "shoulder": ("XM430-W350", 2), "elbow": ("XM430-W350", 2),
               "forearm_roll": ("XM430-W350", 1), "wrist_angle": ("XM430-W350", 1),
               "wrist_rotate": ("XL430-W250", 1)},
}


def check_servos(servos: dict[str, tuple[str, int]], where: str = "servos") -> None:
    """Raise ConfigError unless `servos` maps every arm joint to (a model in NM_PER_EFFORT, motors >= 1)."""
    if not isinstance(servos, dict) or set(servos) != set(JOINT_NAMES):
        raise ConfigError(f"{where}={servos!r}: give {{joint: (servo model, motors)}} for exactly the joints "
                          f"{list(JOINT_NAMES)}")
    for joint, entry in servos.items():
        model, n = entry if isinstance(entry, (tuple, list)) and len(entry) == 2 else (entry, None)
        if model not in NM_PER_EFFORT:
            raise ConfigError(f"{where}[{joint!r}]: servo model {model!r} has no effort conversion; known models: "
                              f"{sorted(NM_PER_EFFORT)} (add its torque constant to NM_PER_EFFORT)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}[{joint!r}]: motors={n!r} must be an integer >= 1 (2 for a joint with a "
                              "shadow motor)")


def effort_scale(servos: dict[str, tuple[str, int]]) -> np.ndarray:
    """(6,) N·m per unit of xs_sdk effort for the arm joints in JOINT_NAMES order."""
    check_servos(servos)
    return np.array([NM_PER_EFFORT[servos[j][0]] * servos[j][1] for j in JOINT_NAMES], dtype=np.float64)


def effort_to_torque(effort, servos: dict[str, tuple[str, int]]) -> np.ndarray:
    """xs_sdk JointState.effort of the arm joints (6,) in JOINT_NAMES order -> joint torque (6,) N·m."""
    effort = np.asarray(effort, dtype=np.float64)
    if effort.shape != (len(JOINT_NAMES),):
        raise PostBCError(f"effort has shape {effort.shape}; expected ({len(JOINT_NAMES)},) in the order "
                          f"{list(JOINT_NAMES)}")
    return effort * effort_scale(servos)

INSTALL_HINT = (
    "interbotix_xs_modules is not importable. It ships with Interbotix's ROS 2 Humble arm software: run their "
    "installer (xsarm_amd64_install.sh -d humble, see docs.trossenrobotics.com 'ROS 2 Interface > Software Setup'), "
    "then `source /opt/ros/humble/setup.bash && source ~/interbotix_ws/install/setup.bash` before starting Python. "
    "On a machine without the arm use the sim backend (postbc_core.robots.SimRobot)."
)


@dataclass
class InterbotixConfig:
    """How to talk to the arm."""

    robot_model: str = "wx250s"
    """Interbotix model name."""
    robot_name: str | None = None
    """namespace of the xs_sdk node (None = robot_model)."""
    group_name: str = "arm"
    """joint group in the motor config."""
    gripper_name: str = "gripper"
    """gripper joint in the motor config."""
    control_hz: float = CONTROL_HZ
    """rate send_action is called at (WidowX Bridge data: 5-10 Hz)."""
    stream_moving_time: float | None = None
    """Profile time (s) of each streamed command; None = 2 / control_hz so consecutive moves blend."""
    gripper_pressure: float = 0.5
    """fraction of the SDK's PWM range used to grip (0..1)."""
    home_moving_time: float = 2.0
    """duration (s) of the blocking moves of go_home and of parking in the sleep pose on close."""
    home_tolerance: float = 0.02
    """rad: go_home fails unless every joint ends this close to kinematics.HOME_QPOS."""
    settle_timeout: float = 3.0
    """s to wait after a blocking move's moving_time for the measured joints to arrive (go_home, close)."""
    gripper_tolerance: float = 0.002
    """m: a gripper target this close to the limits means fully open / closed (grasp with gripper_pressure); a
    target in between is reached by moving the fingers and stopping them (the xs gripper runs in PWM mode)."""
    connect_timeout: float = 30.0
    """s to wait for the xs_sdk's services under /<robot_name> before failing with that cause (the real xs_sdk
    takes several seconds to start when it writes the motor configs; a bringup may start both at once)."""
    sdk_node_name: str = "interbotix_robot_manipulation"
    """name of the SDK's own InterbotixRobotNode (upstream's default)."""
    sleep_on_close: bool = True
    """park the arm in the SDK's sleep pose before disconnecting."""
    max_joint_speed: float = MAX_JOINT_SPEED
    """rad/s: the safety layer moves a joint at most max_joint_speed / control_hz rad per command."""
    limits: SafetyLimits | None = None
    """the safety limits applied to every command; None = the defaults at max_joint_speed / control_hz
    (robot_driver passes its own, built with SafetyLimits.for_rate)."""
    servos: dict[str, tuple[str, int]] | None = None
    """per arm joint (Dynamixel model, motors driving it), to convert xs_sdk's effort to N·m; None = ARM_SERVOS of
    robot_model (Trossen's published table). Set it for an arm whose servos differ."""

    def __post_init__(self):
        if self.servos is None:
            if self.robot_model not in ARM_SERVOS:
                raise ConfigError(f"robot_model={self.robot_model!r} has no published servo table here "
                                  f"({sorted(ARM_SERVOS)}); give InterbotixConfig.servos={{joint: (model, motors)}} "
                                  "so joint_effort can be converted to N·m")
            self.servos = dict(ARM_SERVOS[self.robot_model])
        check_servos(self.servos, "InterbotixConfig.servos")
        if not self.control_hz > 0:
            raise ConfigError(f"control_hz={self.control_hz} must be > 0")
        if not 0.0 <= self.gripper_pressure <= 1.0:
            raise ConfigError(f"gripper_pressure={self.gripper_pressure} must be in [0, 1]")
        for name in ("max_joint_speed", "home_moving_time", "home_tolerance", "settle_timeout", "gripper_tolerance",
                     "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if self.stream_moving_time is not None and not self.stream_moving_time > 0:
            raise ConfigError(f"stream_moving_time={self.stream_moving_time} must be > 0 s (or None)")

    @property
    def moving_time(self) -> float:
        return self.stream_moving_time if self.stream_moving_time is not None else 2.0 / self.control_hz


def _import_sdk():
    """(interbotix_xs_modules.xs_robot.arm, interbotix_common_modules.common_robot.robot), or a PostBCError naming
    the missing module and how to install it."""
    try:
        arm = importlib.import_module("interbotix_xs_modules.xs_robot.arm")
        common = importlib.import_module("interbotix_common_modules.common_robot.robot")
    except ModuleNotFoundError as e:
        if (e.name or "").startswith(("interbotix", "tf_transformations")):
            raise PostBCError(f"{INSTALL_HINT} (import error: {e})") from e
        # The SDK's own Python dependencies: Interbotix's installer pip-installs modern_robotics and transforms3d.
        raise PostBCError(f"interbotix_xs_modules is installed but imports {e.name!r}, which is not: "
                          f"`python3 -m pip install {PIP_NAMES.get(e.name, e.name)}` (Interbotix's installer "
                          "xsarm_amd64_install.sh does this step; the Docker image does too)") from e
    return arm, common


def joint_reading(js, index_map: dict[str, int], scale: np.ndarray) -> JointReading:
    """An xs_sdk JointState (`js`: position/velocity/effort by `index_map`, the SDK's js_index_map) -> JointReading
    in JOINT_NAMES order; effort times `scale` (effort_scale: N·m per xs_sdk unit), the gripper as the left finger's
    slide (m; the `gripper` entry is the servo angle in rad)."""
    pos = js.position
    ids = [index_map[n] for n in JOINT_NAMES]

    def pick(values):
        # xs_sdk publishes empty velocity/effort lists depending on the motor config (xs_sdk_sim always does)
        return np.array([values[i] for i in ids], dtype=np.float64) if len(values) == len(pos) else np.zeros(6)

    q = np.array([pos[i] for i in ids], dtype=np.float64)
    finger = float(pos[index_map["left_finger"]]) if "left_finger" in index_map else float("nan")
    return JointReading(q, pick(js.velocity), pick(js.effort) * scale, finger)


PIP_NAMES = {"modern_robotics": "modern_robotics", "transforms3d": "transforms3d",
             "urdf_parser_py": "urdfdom-py"}


class InterbotixRobot(Robot):
    """WidowX 250s over interbotix_xs_modules (Humble).

    Node ownership follows the SDK: it gets its own `InterbotixRobotNode` and runs it the way upstream's
    `robot_startup` does (its executor in its own thread): before startup the SDK spins that node itself through
    rclpy's global executor, and after it, it waits for service responses by polling while that thread spins, so
    the node must not be added to any other executor. The SDK uses the default ROS context (`rclpy.ok()`): inside a
    ROS process (the driver) that context is the process's; standalone, connect() initializes it (without rclpy's
    signal handlers, so Ctrl-C raises KeyboardInterrupt and `with robot:` still parks the arm) and close() shuts it
    down. `robot_shutdown()` is never called: it shuts down the whole process's ROS context. close() parks the arm
    while the context is valid, then takes the SDK's node out of its executor; the SDK's thread ends with the
    context. Humble's SDK starts once per process (`robot_startup` raises when called again), so an
    InterbotixRobot connects once per process."""

    def __init__(self, config: InterbotixConfig | None = None):
        self.config = config or InterbotixConfig()
        self.control_hz = self.config.control_hz
        self.safety = make_safety_layer(self.config.control_hz, self.config.max_joint_speed, self.config.limits)
        self._effort_scale = effort_scale(self.config.servos)
        self._bot = None
        self._node = None
        self._owns_context = False
        self._grip_goal: float | None = None  # the gripper target being executed (m)
        self._grip_cmd: str | None = None  # the PWM command in force: "open" | "close" | "stop"
        self._lock = threading.RLock()

    @property
    def namespace(self) -> str:
        name = self.config.robot_model if self.config.robot_name is None else self.config.robot_name
        return f"/{name}" if name else ""

    @property
    def is_connected(self) -> bool:
        return self._bot is not None

    @property
    def bot(self):
        if self._bot is None:
            raise PostBCError("InterbotixRobot is not connected; call connect() or use `with robot:`")
        return self._bot

    def connect(self) -> None:
        if self._bot is not None:
            return
        arm_mod, common = _import_sdk()
        import rclpy
        from interbotix_xs_msgs.srv import OperatingModes
        from rclpy.signals import SignalHandlerOptions

        c, ns = self.config, self.namespace
        if common.interbotix_is_up():
            raise PostBCError("the Interbotix SDK was already started in this process (robot_startup runs once per "
                              "process in Humble's SDK and cannot be restarted); connect one InterbotixRobot per "
                              "process")
        if not rclpy.ok():
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
            self._owns_context = True
        node = common.InterbotixRobotNode(node_name=c.sdk_node_name)
        try:
            # The SDK waits for the xs_sdk forever (logging every 5 s); fail after connect_timeout with the cause.
            client = node.create_client(OperatingModes, f"{ns}/set_operating_modes")
            found = client.wait_for_service(timeout_sec=c.connect_timeout)
            node.destroy_client(client)
            if not found:
                raise PostBCError(
                    f"no xs_sdk under {ns or '/'}: service {ns}/set_operating_modes did not appear within "
                    f"{c.connect_timeout} s. Start the arm's driver first: `ros2 launch interbotix_xsarm_control "
                    f"xsarm_control.launch.py robot_model:={c.robot_model}` (use_sim:=true runs Interbotix's "
                    "simulated xs_sdk without the arm); if it runs under another namespace set robot_name to it; "
                    "check ROS_DOMAIN_ID matches")
            kwargs = {"robot_model": c.robot_model, "group_name": c.group_name, "gripper_name": c.gripper_name,
                      "gripper_pressure": c.gripper_pressure, "node": node}
            if c.robot_name is not None:
                kwargs["robot_name"] = c.robot_name
            try:
                bot = arm_mod.InterbotixManipulatorXS(**kwargs)
            except SystemExit as e:
                # InterbotixArmXSInterface calls sys.exit(1) when the group's joints do not match the model.
                raise PostBCError(f"interbotix_xs_modules exited ({e.code}) while setting up group "
                                  f"{c.group_name!r} of robot_model={c.robot_model!r} under {ns}: its log line above "
                                  "says why (e.g. the motor config's joints do not match the model)") from e
            except Exception as e:
                raise PostBCError(f"interbotix_xs_modules failed while connecting to the {c.robot_model} under {ns} "
                                  f"(the xs_sdk is running there): {type(e).__name__}: {e}") from e
            common.robot_startup(node)
        except BaseException:
            self._release(node)
            raise
        self._bot, self._node = bot, node
        bot.core.robot_torque_enable("group", c.group_name, True)
        bot.core.robot_torque_enable("single", c.gripper_name, True)
        # Streaming: every command moves over `moving_time` with a quarter of it accelerating (Profile_Velocity /
        # Profile_Acceleration registers; modes.yaml starts them at 2 s, which would make each command a 2 s move).
        bot.arm.set_trajectory_time(moving_time=c.moving_time, accel_time=c.moving_time / 4)
        bot.gripper.set_pressure(c.gripper_pressure)
        logger.info("connected to %s under %s (group %s, gripper %s), streaming with moving_time %.3f s",
                    c.robot_model, ns, c.group_name, c.gripper_name, c.moving_time)

    # -- reading ----------------------------------------------------------------------------------------------
    def _joint_state(self):
        js = self.bot.core.robot_get_joint_states()  # a copy taken under the SDK's mutex
        return js, dict(self.bot.core.js_index_map)

    def measure(self) -> JointReading:
        js, idx = self._joint_state()
        return joint_reading(js, idx, self._effort_scale)

    def get_observation(self) -> dict[str, np.ndarray]:
        js, idx = self._joint_state()
        r = joint_reading(js, idx, self._effort_scale)
        stamp = js.header.stamp.sec + js.header.stamp.nanosec * 1e-9 if js.header.stamp.sec else time.time()
        return robot_observation(r.joint_pos, r.joint_vel, r.joint_effort, r.gripper, stamp)

    # -- commanding ---------------------------------------------------------------------------------------------
    def send_action(self, action: JointAction | EEDeltaAction) -> SentCommand:
        with self._lock:
            r = self.measure()
            sent = self.safety.command(action, r.joint_pos)
            self._write_arm(sent.joint_pos, self.config.moving_time)
            self._command_gripper(sent.gripper, r.gripper)
            return sent

    def hold(self, gripper: float) -> np.ndarray:
        with self._lock:
            r = self.measure()
            self._write_arm(r.joint_pos, self.config.moving_time)
            self._command_gripper(self.safety.check_gripper(gripper), r.gripper)
            return r.joint_pos

    def _write_arm(self, q, moving_time: float, blocking: bool = False) -> None:
        """Through the SDK's set_joint_positions, so its own record of the last command (arm.joint_commands, which
        its speed check measures from) stays true; it returns False instead of moving when it refuses."""
        q = [float(v) for v in q]
        if not self.bot.arm.set_joint_positions(q, moving_time=moving_time, accel_time=moving_time / 4,
                                                blocking=blocking):
            raise PostBCError(self._refusal(q))

    def _refusal(self, q) -> str:
        """Why the SDK's _check_joint_limits refused `q` (the SDK returns only False): its joint limits, or a move
        faster than a joint's velocity limit over its current moving_time from its last command."""
        arm = self.bot.arm
        info, mt = arm.group_info, float(arm.moving_time)
        why = []
        for k, name in enumerate(info.joint_names):
            theta = int(q[k] * 1000) / 1000.0  # the SDK compares the target truncated to mrad
            lo, hi, vmax = info.joint_lower_limits[k], info.joint_upper_limits[k], info.joint_velocity_limits[k]
            speed = abs(theta - arm.joint_commands[k]) / mt
            if not lo <= theta <= hi:
                why.append(f"{name}={q[k]:.4f} rad outside the SDK's limits [{lo:.4f}, {hi:.4f}]")
            elif speed > vmax:
                why.append(f"{name} would move {abs(theta - arm.joint_commands[k]):.3f} rad in moving_time {mt:.3f} s "
                           f"({speed:.2f} rad/s > its velocity limit {vmax:.2f} rad/s)")
        return (f"the Interbotix SDK refused the arm command {np.round(q, 4).tolist()}: "
                f"{'; '.join(why) or 'no reason found'}; the arm was not commanded")

    def _command_gripper(self, target: float, finger: float) -> None:
        """The xs gripper runs in PWM mode (modes.yaml): it moves while a PWM is applied and the SDK stops it at the
        finger limits. A target at a limit (within gripper_tolerance) is a full open / grasp (the grasp keeps
        squeezing at gripper_pressure); a target in between opens or closes the fingers toward it and stops them
        (PWM 0) once they reach it, measured each control period. A command goes out only when it changes."""
        lo, hi = self.safety.limits.gripper_limits
        tol = self.config.gripper_tolerance
        want = self._grip_cmd
        if self._grip_goal is None or abs(target - self._grip_goal) > tol:
            self._grip_goal = target
            if target >= hi - tol:
                want = "open"
            elif target <= lo + tol:
                want = "close"
            elif np.isfinite(finger) and abs(finger - target) <= tol:
                want = "stop"
            else:
                want = "open" if finger < target else "close"
        elif lo + tol < self._grip_goal < hi - tol and (
                (want == "open" and finger >= self._grip_goal - tol)
                or (want == "close" and finger <= self._grip_goal + tol)):
            want = "stop"
        if want == self._grip_cmd:
            return  # re-sending the same PWM command every step only spams the bus
        if want == "open":
            self.bot.gripper.release(delay=0.0)
        elif want == "close":
            self.bot.gripper.grasp(delay=0.0)
        else:
            self.bot.core.robot_write_joint_command(self.config.gripper_name, 0.0)
        self._grip_cmd = want

    def go_home(self) -> None:
        """Blocking time-profiled move to kinematics.HOME_QPOS (gripper down above the table), gripper open. Raises
        PostBCError when the SDK refuses the move or the arm does not arrive within home_tolerance."""
        home = self.safety.check_finite(kinematics.HOME_QPOS, "home pose")
        c = self.config
        self.safety.ee_executor.reset()  # the next EE delta applies to the joints measured at home
        with self._lock:
            # The SDK checks a move's speed over its *current* moving_time before applying the new one: after
            # streaming (moving_time 2 / control_hz) a move home would be refused as too fast. Set the timing first.
            self.bot.arm.set_trajectory_time(moving_time=c.home_moving_time, accel_time=c.home_moving_time / 4)
            try:
                self._write_arm(home, c.home_moving_time, blocking=True)
                self._command_gripper(self.safety.limits.gripper_limits[1], self.measure().gripper)
                self._wait_at(home, "go_home")
            finally:
                self.bot.arm.set_trajectory_time(moving_time=c.moving_time, accel_time=c.moving_time / 4)

    def _wait_at(self, q, what: str) -> None:
        deadline = time.monotonic() + self.config.settle_timeout
        while True:
            err = float(np.max(np.abs(self.measure().joint_pos - np.asarray(q))))
            if err <= self.config.home_tolerance:
                return
            if time.monotonic() > deadline:
                raise PostBCError(f"{what}: the arm is still {err:.4f} rad from {np.round(q, 4).tolist()} "
                                  f"{self.config.settle_timeout} s after the move should have ended (blocked, torque "
                                  "off, or a servo in an error state? see the xs_sdk log)")
            time.sleep(0.02)

    def set_torque(self, enable: bool) -> None:
        """Torque the arm and gripper on/off (off = the operator can move the arm by hand)."""
        self.bot.core.robot_torque_enable("group", self.config.group_name, bool(enable))
        self.bot.core.robot_torque_enable("single", self.config.gripper_name, bool(enable))

    def close(self) -> None:
        """Park the arm in the SDK's sleep pose (sleep_on_close) while the ROS context is valid, then release the
        SDK's node; shuts the context down only when connect() started it."""
        if self._bot is None:
            return
        bot, node = self._bot, self._node
        self._bot = None
        try:
            if self.config.sleep_on_close:
                if not node.context.ok():
                    logger.error("the ROS context was shut down before close(): the arm was NOT parked in the sleep "
                                 "pose (shut the context down after closing the robot)")
                else:
                    with self._lock:
                        sleep = list(bot.arm.group_info.joint_sleep_positions)
                        bot.arm.go_to_sleep_pose(moving_time=self.config.home_moving_time,
                                                 accel_time=self.config.home_moving_time / 4, blocking=True)
                        self._bot = bot  # measure() for the arrival check
                        try:
                            self._wait_at(sleep, "parking in the sleep pose")
                        finally:
                            self._bot = None
                    logger.info("%s parked in the sleep pose", self.config.robot_model)
        finally:
            self._release(node)
            self._node = None
            logger.info("disconnected from %s", self.config.robot_model)

    def _release(self, node) -> None:
        """Take the SDK's node out of its executor and destroy it (never robot_shutdown, see the class doc)."""
        import rclpy

        executor = node.executor
        if executor is not None:
            executor.remove_node(node)
        node.destroy_node()
        if self._owns_context:
            rclpy.try_shutdown()  # the SDK's spin thread ends with the context
            self._owns_context = False
            # ... and is waited for: that thread is a daemon, and one still inside its executor when the interpreter
            # exits aborts the process ("terminate called without an active exception", exit -6, seen after close()
            # on a loaded machine). The SDK keeps it in a module global (common_robot.robot.__start).
            thread = getattr(sys.modules.get("interbotix_common_modules.common_robot.robot"),
                             "__interbotix_execution_thread", None)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
                if thread.is_alive():
                    logger.warning("the Interbotix SDK's spin thread did not end within 5 s of the ROS shutdown")
