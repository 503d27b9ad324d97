"""Real WidowX 250s through Interbotix's Python SDK (`interbotix_xs_modules`, ROS 2 Humble).

The SDK is imported lazily in `connect()` (it exists only on the robot, installed by Interbotix's installer), so
this module imports anywhere. Commands stream without blocking: `bot.core.robot_write_commands("arm", q)` publishes
a JointGroupCommand that the xs_sdk executes with the time-based profile set once by `arm.set_trajectory_time`
(the blocking `set_joint_positions(..., blocking=True)` path sleeps `moving_time` per call and is used only for
`go_home`). Every command passes the shared SafetyLayer first. Units: rad, m, s, N·m.

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
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import (
    JOINT_NAMES,
    EEDeltaAction,
    JointAction,
    Robot,
    SentCommand,
)
from postbc_core.robots.safety import SafetyLayer, SafetyLimits

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
    control_hz: float = 10.0
    """rate send_action is called at (WidowX Bridge data: 5-10 Hz)."""
    stream_moving_time: float | None = None
    """Profile time (s) of each streamed command; None = 2 / control_hz so consecutive moves blend."""
    gripper_pressure: float = 0.5
    """fraction of the SDK's PWM range used to grip (0..1)."""
    home_moving_time: float = 2.0
    """duration (s) of the blocking move in go_home."""
    sleep_on_close: bool = True
    """park the arm in the SDK's sleep pose before disconnecting."""
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    """the safety limits applied to every command."""
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
        if self.stream_moving_time is not None and not self.stream_moving_time > 0:
            raise ConfigError(f"stream_moving_time={self.stream_moving_time} must be > 0 s (or None)")

    @property
    def moving_time(self) -> float:
        return self.stream_moving_time if self.stream_moving_time is not None else 2.0 / self.control_hz


def _import_sdk():
    try:
        return importlib.import_module("interbotix_xs_modules.xs_robot.arm")
    except ModuleNotFoundError as e:
        raise PostBCError(f"{INSTALL_HINT} (import error: {e})") from e


def _optional_startup():
    """robot_startup/robot_shutdown exist in the 2024+ Humble SDK (node= API); older SDKs spin on their own."""
    try:
        mod = importlib.import_module("interbotix_common_modules.common_robot.robot")
        return getattr(mod, "robot_startup", None), getattr(mod, "robot_shutdown", None)
    except ModuleNotFoundError:
        return None, None


class InterbotixRobot(Robot):
    """WidowX 250s over interbotix_xs_modules; `node` is an optional rclpy node the SDK should share."""

    def __init__(self, config: InterbotixConfig | None = None, node=None):
        self.config = config or InterbotixConfig()
        self.control_hz = self.config.control_hz
        self.safety = SafetyLayer(self.config.limits)
        self._effort_scale = effort_scale(self.config.servos)
        self._node = node
        self._bot = None
        self._shutdown_fn = None
        self._gripper_closed: bool | None = None
        self._lock = threading.Lock()

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
        arm_mod = _import_sdk()
        c = self.config
        kwargs = {"robot_model": c.robot_model, "group_name": c.group_name, "gripper_name": c.gripper_name,
                  "gripper_pressure": c.gripper_pressure}
        if c.robot_name is not None:
            kwargs["robot_name"] = c.robot_name
        if self._node is not None:
            kwargs["node"] = self._node  # share the driver's node instead of the SDK creating its own
        try:
            bot = arm_mod.InterbotixManipulatorXS(**kwargs)
        except Exception as e:  # the SDK raises plain exceptions when the xs_sdk node is not running
            raise PostBCError(f"could not reach the {c.robot_model} through interbotix_xs_modules ({e!r}); is "
                              f"`ros2 launch interbotix_xsarm_control xsarm_control.launch.py robot_model:="
                              f"{c.robot_model}` running and the arm powered?") from e
        startup, self._shutdown_fn = _optional_startup()
        if startup is not None:
            startup(self._node) if self._node is not None else startup()
        self._bot = bot
        bot.core.robot_torque_enable("group", c.group_name, True)
        bot.core.robot_torque_enable("single", c.gripper_name, True)
        # Streaming: every JointGroupCommand moves over `moving_time` with a quarter of it accelerating.
        bot.arm.set_trajectory_time(moving_time=c.moving_time, accel_time=c.moving_time / 4)
        bot.gripper.set_pressure(c.gripper_pressure)
        logger.info("connected to %s (group %s, gripper %s), streaming with moving_time %.3f s",
                    c.robot_model, c.group_name, c.gripper_name, c.moving_time)

    def _joint_state(self):
        core = self.bot.core
        lock = getattr(core, "js_mutex", None)
        if lock is not None:
            with lock:
                js = core.joint_states
                return (list(js.position), list(js.velocity), list(js.effort), dict(core.js_index_map),
                        getattr(js, "header", None))
        js = core.joint_states
        return list(js.position), list(js.velocity), list(js.effort), dict(core.js_index_map), None

    def get_observation(self) -> dict[str, np.ndarray]:
        pos, vel, eff, idx, header = self._joint_state()
        ids = [idx[n] for n in JOINT_NAMES]

        def pick(values):
            # xs_sdk may publish empty velocity/effort lists depending on the motor config
            return np.array([values[i] for i in ids], dtype=np.float64) if len(values) == len(pos) else np.zeros(6)

        q = np.array([pos[i] for i in ids], dtype=np.float64)
        # left_finger is the finger slide in metres (what the sim reports); `gripper` is the motor angle in rad.
        finger = pos[idx["left_finger"]] if "left_finger" in idx else np.nan
        p, quat = kinematics.fk(q)
        stamp = time.time()
        if header is not None and getattr(header.stamp, "sec", 0):
            stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        return {
            "joint_pos": q, "joint_vel": pick(vel), "joint_effort": pick(eff) * self._effort_scale,  # N·m
            "gripper_pos": np.array([finger], dtype=np.float64),
            "ee_pose": np.concatenate([p, quat]), "timestamp": np.float64(stamp),
        }

    def send_action(self, action: JointAction | EEDeltaAction) -> SentCommand:
        with self._lock:
            cur = self.get_observation()["joint_pos"]
            sent = self.safety.command(action, cur)
            self.bot.core.robot_write_commands(self.config.group_name, [float(v) for v in sent.joint_pos])
            self._command_gripper(sent.gripper)
            return sent

    def _command_gripper(self, opening: float) -> None:
        """The xs gripper runs in PWM mode: grasp/release, so the opening target is thresholded at mid-range."""
        lo, hi = self.config.limits.gripper_limits
        close = opening < 0.5 * (lo + hi)
        if close == self._gripper_closed:
            return  # re-sending the same PWM command every step only spams the bus
        if close:
            self.bot.gripper.grasp(delay=0.0)
        else:
            self.bot.gripper.release(delay=0.0)
        self._gripper_closed = close

    def go_home(self) -> None:
        """Blocking time-profiled move to kinematics.HOME_QPOS (gripper down above the table), gripper open."""
        home = self.safety.check_finite(kinematics.HOME_QPOS, "home pose")
        c = self.config
        self.bot.arm.set_joint_positions([float(v) for v in home], moving_time=c.home_moving_time,
                                         accel_time=c.home_moving_time / 4, blocking=True)
        self.bot.arm.set_trajectory_time(moving_time=c.moving_time, accel_time=c.moving_time / 4)
        self._command_gripper(c.limits.gripper_limits[1])

    def set_torque(self, enable: bool) -> None:
        """Torque the arm and gripper on/off (off = the operator can move the arm by hand)."""
        self.bot.core.robot_torque_enable("group", self.config.group_name, bool(enable))
        self.bot.core.robot_torque_enable("single", self.config.gripper_name, bool(enable))

    def close(self) -> None:
        if self._bot is None:
            return
        bot, self._bot = self._bot, None
        try:
            if self.config.sleep_on_close:
                bot.arm.go_to_sleep_pose(moving_time=self.config.home_moving_time, blocking=True)
        finally:
            if self._node is None:
                # we own the SDK's node: stop its spin thread
                if self._shutdown_fn is not None:
                    self._shutdown_fn()
                elif hasattr(bot, "shutdown"):
                    bot.shutdown()
            logger.info("disconnected from %s", self.config.robot_model)
