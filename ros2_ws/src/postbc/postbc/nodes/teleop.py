"""teleop: an operator's keyboard, gamepad (sensor_msgs/Joy) or SpaceMouse (geometry_msgs/Twist) -> EE velocity ->
per-step EE delta -> joint target (postbc_core.robots.actions) -> /postbc/command.

Every control tick (control_hz, node clock, so sim time in sim): velocity (6,) [vx vy vz (m/s), wroll wpitch wyaw
(rad/s)] from the latest input (zero when the input is older than `input_timeout`) times dt is this step's EE delta
[dx dy dz droll dpitch dyaw] in the arm's base frame; postbc_core.robots.actions.joint_target([delta, gripper],
"ee_delta", q_ref) gives the joint target (the same conversion as the policy node, the scripted operators in
postbc_core.sim.demos and SafetyLayer.command), published as a single-point JointTrajectory (due now, header.stamp =
the /joint_states stamp it acted on) with the gripper target from the toggle (robots.actions.GRIPPER_OPEN /
GRIPPER_CLOSED), and the delta itself as TwistStamped on
/postbc/teleop/ee_delta (per step, what the recorder stores as cmd_ee_delta). The driver owns safety; teleop only
refuses non-finite input (log line) and publishes nothing before the first /joint_states.

q_ref, the joints the delta is applied to: the joint target teleop commanded on the previous tick while that is
close to the measured joints, else the measured joints (robots.actions.EEDeltaExecutor: the convention every stored
cmd_ee_delta follows, the twin's tasks, scripted operators and policies included). Why not always the measured
joints? Through the graph a command reaches the driver after its control step at that observation's time, so the
measured joints are one command behind, and re-applying each delta to them moves the EE at about half the commanded
speed (measured: 0.047 m for 0.11 m commanded), and a recorded delta would not replay into the same motion. Chaining
from the pending target makes the EE move speed * time; the chain is cut (q_ref := measured) whenever the target's EE
leads the measured EE by more than five steps of full-speed motion (blocked by an object, clamped by the driver's
workspace box, reset, homed, e-stopped), so commands never wind up far ahead.

Idle (no fresh input): with `hold_when_idle` (default) teleop keeps publishing the hold target (q_ref with a zero EE
delta) every tick, so the driver's watchdog never fires mid-episode, the arm does not creep under gravity and the
recorder gets one command per step. With hold_when_idle false nothing is published while idle and the driver's
watchdog holds the arm.

Devices (parameter `device`):
  keyboard    the `~/keys` std_msgs/String topic (each character one key press), fed by `ros2 run postbc keyboard`
              in a terminal of its own (a launched node has no terminal), remote keyboards and tests; and the
              terminal itself when this node's stdin is a TTY (`postbc ros run record_demos` in a terminal). A motion
              key commands its axis at full speed for `input_timeout` s after the press; a held key's terminal
              autorepeat keeps it going, release stops it. KEY_BINDINGS below:
                w / s  +x / -x (forward / back)      a / d  +y / -y (left / right)     r / f  +z / -z (up / down)
                i / k  pitch + / -                   j / l  yaw + / -                  u / o  roll + / -
                arrow keys (terminal only): up/down = i/k, left/right = j/l
                space  gripper toggle (open <-> closed)            x  stop (zero velocity now)
                Enter  episode start / stop (toggles)   Backspace  discard   1  success   0  failure
                h      home (the driver's go_home service)
  joy         sensor_msgs/Joy on `joy_topic` (the `joy` package). Defaults are for an Xbox-style pad as reported by
              joy's game_controller_node (SDL2 GameController order, the same for every supported pad):
                axes    0 left stick X (left +)  1 left stick Y (up +)  2 right stick X  3 right stick Y
                        4 left trigger  5 right trigger
                buttons 0 A  1 B  2 X  3 Y  4 BACK  5 GUIDE  6 START  7 L-stick  8 R-stick  9 LB  10 RB
                        11 D-pad up  12 down  13 left  14 right
              Default mapping: left stick up/left -> +x / +y, right stick up -> +z, right stick left -> +yaw,
              D-pad up/down -> pitch + / -, D-pad left/right -> roll + / -; A gripper toggle, START episode
              start/stop, BACK discard, Y success, B failure, X home. joy_node (SDL_Joystick order, device
              dependent) works too with `joy_axes` / `joy_buttons` set for the pad.
  spacemouse  spacenav's /spacenav/twist (geometry_msgs/Twist, ~[-1, 1] per axis at full deflection): linear ->
              x y z, angular -> roll pitch yaw; /spacenav/joy (sensor_msgs/Joy): button 0 (left) gripper toggle,
              button 1 (right) episode start / stop.
Episode keys publish "start", "stop", "discard", "success", "failure" on /postbc/episode.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from postbc_core.robots.actions import GRIPPER_CLOSED, GRIPPER_OPEN, EEDeltaExecutor
from postbc_core.errors import ConfigError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from postbc import topics
from postbc.conversions import (
    ConversionError,
    joint_state_arrays,
    trajectory_msg,
    twist_array,
    twist_stamped_msg,
)
from postbc.node_main import main as node_main
from postbc.params import declare

DEVICES = ("keyboard", "joy", "spacemouse")
EPISODE_EVENTS = ("start", "stop", "discard", "success", "failure")
AXES = ("x", "y", "z", "roll", "pitch", "yaw")
# A previous target whose EE leads the measured EE by more than RESYNC_STEPS steps of full-speed motion (at least
# 1 cm / 0.05 rad) is stale: the arm is blocked, clamped, reset or homed. Normal lead is 1-3 steps (the command in
# flight plus executor jitter of sim-time timers). RESYNC_RAD catches a target on another IK branch.
RESYNC_STEPS = 5.0
RESYNC_RAD = 0.5

# key -> (EE axis index, sign) for motion keys; other keys -> action name.
KEY_BINDINGS: dict[str, tuple[int, float] | str] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0),
    "up": (4, 1.0), "down": (4, -1.0), "left": (5, 1.0), "right": (5, -1.0),
    " ": "gripper", "x": "zero", "\r": "start_stop", "\n": "start_stop", "\x7f": "discard", "\b": "discard",
    "1": "success", "0": "failure", "h": "home",
}
ARROWS = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left"}


@dataclass
class Params:
    device: str = "keyboard"
    """Input device: "keyboard" (terminal + ~/keys topic), "joy" (sensor_msgs/Joy) or "spacemouse" (spacenav)."""
    control_hz: float = 10.0
    """Command rate (Hz): one EE delta / joint target per tick (the driver's control rate)."""
    linear_speed: float = 0.1
    """EE speed (m/s) at full input (1 cm per step at 10 Hz, Bridge-like teleop deltas)."""
    angular_speed: float = 0.5
    """EE angular speed (rad/s) at full input."""
    deadzone: float = 0.1
    """Joy / SpaceMouse axis values with |v| below this are 0; above it the range is rescaled to reach 1."""
    input_timeout: float = 0.5
    """Input older than this (s, node clock) counts as released: zero velocity. Keys: covers the terminal's
    autorepeat delay; joy: its autorepeat_rate (20 Hz default) refreshes a held stick."""
    hold_when_idle: bool = True
    """Idle: keep publishing the hold target (driver watchdog stays quiet, one command per recorded step);
    false: publish nothing while idle (the driver's watchdog holds)."""
    joy_topic: str = "/joy"
    """sensor_msgs/Joy topic of the gamepad (device "joy")."""
    joy_axes: tuple[int, int, int, int, int, int] = (1, 0, 3, -1, -1, 2)
    """Joy axis index driving x, y, z, roll, pitch, yaw (-1 = none); defaults: Xbox pad, game_controller_node."""
    joy_axis_scale: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """Per EE axis multiplier of the joy axis (-1 flips a direction)."""
    joy_axis_buttons: tuple[int, int, int, int, int, int, int, int, int, int, int, int] = (
        -1, -1, -1, -1, -1, -1, 13, 14, 12, 11, -1, -1)
    """(negative, positive) button pairs for x, y, z, roll, pitch, yaw (-1 = none): D-pad left/right roll,
    down/up pitch."""
    joy_buttons: tuple[int, int, int, int, int, int] = (0, 6, 4, 3, 1, 2)
    """Buttons for gripper toggle, episode start/stop, discard, success, failure, home (-1 = none): A, START,
    BACK, Y, B, X."""
    spacenav_twist_topic: str = "/spacenav/twist"
    """spacenav's geometry_msgs/Twist topic (device "spacemouse")."""
    spacenav_joy_topic: str = "/spacenav/joy"
    """spacenav's sensor_msgs/Joy topic (its two buttons: 0 gripper toggle, 1 episode start/stop)."""
    home_service: str = "/robot_driver/go_home"
    """std_srvs/Trigger called by the home key / button."""
    terminal: bool = True
    """device "keyboard": read the terminal when stdin is a TTY (false: only the ~/keys topic)."""

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ConfigError(f"device={self.device!r} is unknown; choose one of {', '.join(DEVICES)}")
        for name in ("control_hz", "linear_speed", "angular_speed", "input_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        if not 0.0 <= self.deadzone < 1.0:
            raise ConfigError(f"deadzone={self.deadzone} must be in [0, 1)")
        for name, n in (("joy_axes", 6), ("joy_axis_scale", 6), ("joy_axis_buttons", 12), ("joy_buttons", 6)):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{name} needs {n} values, got {list(getattr(self, name))}")
        if any(not np.isfinite(s) for s in self.joy_axis_scale):
            raise ConfigError(f"joy_axis_scale={list(self.joy_axis_scale)} must be finite")


# -- input -> velocity (pure functions, no ROS) -------------------------------------------------------------------
def apply_deadzone(v: np.ndarray, deadzone: float) -> np.ndarray:
    """|v| < deadzone -> 0; beyond it rescaled so that |v| = 1 still gives 1 (no jump at the edge)."""
    v = np.clip(np.asarray(v, np.float64), -1.0, 1.0)
    mag = np.clip((np.abs(v) - deadzone) / (1.0 - deadzone), 0.0, None)
    return np.sign(v) * mag


def joy_to_unit(axes, buttons, p: Params) -> np.ndarray:
    """sensor_msgs/Joy axes/buttons -> (6,) unit-less EE command in [-1, 1] per axis (x y z roll pitch yaw)."""
    out = np.zeros(6)
    for i, (idx, scale) in enumerate(zip(p.joy_axes, p.joy_axis_scale)):
        if 0 <= idx < len(axes):
            out[i] = scale * float(axes[idx])
    out = apply_deadzone(out, p.deadzone)
    for i in range(6):
        neg, pos = p.joy_axis_buttons[2 * i], p.joy_axis_buttons[2 * i + 1]
        press = (1.0 if 0 <= pos < len(buttons) and buttons[pos] else 0.0) - \
                (1.0 if 0 <= neg < len(buttons) and buttons[neg] else 0.0)
        if press:
            out[i] = np.clip(out[i] + press, -1.0, 1.0)
    return out


def unit_to_velocity(unit: np.ndarray, p: Params) -> np.ndarray:
    """(6,) in [-1, 1] -> (6,) [m/s x3, rad/s x3]."""
    return np.asarray(unit, np.float64) * np.r_[[p.linear_speed] * 3, [p.angular_speed] * 3]


class TerminalReader:
    """Raw-mode (cbreak) reader of a TTY stdin on a thread; restores the terminal settings when stopped.
    `on_key(key)` gets each key: a character, or "up" / "down" / "left" / "right" for the arrow keys."""

    def __init__(self, on_key):
        import termios
        import tty

        self._fd = sys.stdin.fileno()
        self._old = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)  # keys arrive unbuffered; Ctrl-C still raises SIGINT
        self._on_key = on_key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="teleop_keyboard", daemon=True)
        self._thread.start()

    def _run(self):
        buf = ""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                buf = ""
                continue
            ch = os.read(self._fd, 1).decode(errors="ignore")
            buf = buf + ch if buf or ch == "\x1b" else ch
            if buf.startswith("\x1b"):
                if buf in ARROWS:
                    self._on_key(ARROWS[buf])
                    buf = ""
                elif len(buf) >= 3:
                    buf = ""  # some other escape sequence: ignore
                continue
            self._on_key(buf)
            buf = ""

    def close(self):
        import termios

        self._stop.set()
        self._thread.join(timeout=1.0)
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._old)


# -- the node -----------------------------------------------------------------------------------------------------
class Teleop(Node):
    def __init__(self, node_name: str = "teleop", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self.params = p = declare(self, Params)
        self.dt = 1.0 / p.control_hz
        self._lock = threading.Lock()
        self._js = None  # latest conversions.JointStateArrays
        self._unit = np.zeros(6)  # joy / spacemouse: latest unit command
        self._unit_time = -np.inf  # node-clock time (s) of the latest input
        self._keys_time = np.full(6, -np.inf)  # keyboard: per-axis time of the last motion key press
        self._keys_sign = np.zeros(6)
        self._gripper_closed: bool | None = None  # initialised from the first /joint_states
        # The chain of EE-delta targets (data.layout.EE_DELTA_CONVENTION: what the published and recorded delta is
        # relative to), cut when the target's EE leads the measured EE by RESYNC_STEPS steps of full-speed motion.
        self._ee = EEDeltaExecutor(max(0.01, RESYNC_STEPS * self.params.linear_speed * self.dt),
                                   max(0.05, RESYNC_STEPS * self.params.angular_speed * self.dt), RESYNC_RAD)
        self._episode_running = False
        self._prev_buttons: dict[str, list[int]] = {}
        self._homing = False
        self._warned_no_state = False
        self.n_commands = 0
        self._terminal = None

        self._cmd_pub = self.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
        self._delta_pub = self.create_publisher(TwistStamped, topics.TELEOP_EE_DELTA, topics.COMMAND_QOS)
        self._episode_pub = self.create_publisher(String, topics.EPISODE_EVENTS, 10)
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, topics.STATE_QOS)
        self._home_client = self.create_client(Trigger, p.home_service)
        if p.device == "keyboard":
            self.create_subscription(String, "~/keys", self._on_keys_msg, 10)
            if p.terminal and sys.stdin is not None and sys.stdin.isatty():
                self._terminal = TerminalReader(self.handle_key)  # `postbc ros run` in a terminal
            else:
                self.get_logger().info(f"keyboard: no terminal on this node's stdin (ros2 launch gives nodes a "
                                       f"pipe): run `ros2 run postbc keyboard` in a terminal of its own; keys "
                                       f"arrive on {self.resolve_topic_name('~/keys')}")
        elif p.device == "joy":
            self.create_subscription(Joy, p.joy_topic, self._on_joy, 10)
        else:
            self.create_subscription(Twist, p.spacenav_twist_topic, self._on_spacenav_twist, 10)
            self.create_subscription(Joy, p.spacenav_joy_topic, self._on_spacenav_joy, 10)
        self.create_timer(self.dt, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"teleop up: device={p.device}, {p.control_hz} Hz, {p.linear_speed} m/s, {p.angular_speed} rad/s at "
            f"full input" + (", reading the terminal" if self._terminal else ""))

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs -------------------------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState):
        try:
            js = joint_state_arrays(msg)
        except ConversionError as e:
            self.get_logger().error(f"/joint_states ignored: {e}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._js = js
            if self._gripper_closed is None:
                self._gripper_closed = bool(js.gripper_pos[0] < 0.5 * (GRIPPER_CLOSED + GRIPPER_OPEN))

    def _set_unit(self, unit: np.ndarray, source: str) -> bool:
        if not np.all(np.isfinite(unit)):
            self.get_logger().error(f"{source} input {np.round(unit, 3).tolist()} has non-finite values; ignored "
                                    "(check the device driver)", throttle_duration_sec=1.0)
            return False
        with self._lock:
            self._unit = unit
            self._unit_time = self.now()
        return True

    def _on_joy(self, msg: Joy):
        axes, buttons = np.asarray(msg.axes, np.float64), list(msg.buttons)
        if not np.all(np.isfinite(axes)):
            self.get_logger().error(f"Joy axes {axes.tolist()} have non-finite values; message ignored",
                                    throttle_duration_sec=1.0)
            return
        self._set_unit(joy_to_unit(axes, buttons, self.params), "joy")
        names = ("gripper", "start_stop", "discard", "success", "failure", "home")
        self._buttons("joy", buttons, dict(zip(names, self.params.joy_buttons)))

    def _on_spacenav_twist(self, msg: Twist):
        v = twist_array(msg)
        if np.all(np.isfinite(v)):
            v = apply_deadzone(v, self.params.deadzone)
        self._set_unit(v, "spacenav twist")

    def _on_spacenav_joy(self, msg: Joy):
        self._buttons("spacenav", list(msg.buttons), {"gripper": 0, "start_stop": 1})

    def _buttons(self, source: str, buttons: list[int], mapping: dict[str, int]):
        """Edge-triggered: an action fires when its button goes from released to pressed."""
        prev = self._prev_buttons.get(source, [0] * len(buttons))
        self._prev_buttons[source] = buttons
        for action, idx in mapping.items():
            if 0 <= idx < len(buttons) and buttons[idx] and not (idx < len(prev) and prev[idx]):
                self._action(action)

    def _on_keys_msg(self, msg: String):
        for ch in msg.data:
            self.handle_key(ch)

    def handle_key(self, key: str):
        """One key press (a character, or "up"/"down"/"left"/"right" from the terminal's arrow keys)."""
        b = KEY_BINDINGS.get(key if len(key) > 1 else key.lower() if key.isalpha() else key)
        if b is None:
            self.get_logger().info(f"key {key!r} is not bound (see the teleop module docstring for the bindings)",
                                   throttle_duration_sec=2.0)
            return
        if isinstance(b, tuple):
            axis, sign = b
            with self._lock:
                self._keys_sign[axis] = sign
                self._keys_time[axis] = self.now()
        else:
            self._action(b)

    def _action(self, action: str):
        log = self.get_logger()
        if action == "gripper":
            with self._lock:
                self._gripper_closed = not bool(self._gripper_closed)
                state = "closed" if self._gripper_closed else "open"
            log.info(f"gripper -> {state}")
        elif action == "zero":
            with self._lock:
                self._keys_time[:] = -np.inf
                self._unit_time = -np.inf
        elif action == "start_stop":
            with self._lock:
                self._episode_running = not self._episode_running
                event = "start" if self._episode_running else "stop"
            self._episode(event)
        elif action == "discard":
            with self._lock:
                self._episode_running = False
            self._episode("discard")
        elif action in ("success", "failure"):
            self._episode(action)
        elif action == "home":
            self._home()

    def _episode(self, event: str):
        self._episode_pub.publish(String(data=event))
        self.get_logger().info(f"episode: {event}")

    def _home(self):
        if not self._home_client.service_is_ready():
            self.get_logger().error(f"home: service {self.params.home_service} is not available; is the "
                                    "robot_driver running (or set home_service)?")
            return
        with self._lock:
            self._homing = True  # no commands while the driver homes, or teleop would fight it
        fut = self._home_client.call_async(Trigger.Request())

        def done(f):
            r = f.result()
            with self._lock:
                self._homing = False
                self._ee.reset()  # re-anchor to wherever the arm ended up
            # One call site per severity: rclpy's logger refuses a call site whose severity changes
            # ("Logger severity cannot be changed between calls", Humble through Kilted).
            if r is not None and r.success:
                self.get_logger().info(f"home: {r.message}")
            else:
                self.get_logger().error(f"home: {r.message if r is not None else 'no response'}")

        fut.add_done_callback(done)

    # -- control tick -------------------------------------------------------------------------------------------
    def velocity(self, now: float) -> np.ndarray:
        """(6,) EE velocity [m/s, rad/s] from the latest input; zero for input older than input_timeout."""
        p = self.params
        with self._lock:
            if p.device == "keyboard":
                unit = np.where(now - self._keys_time <= p.input_timeout, self._keys_sign, 0.0)
            else:
                unit = self._unit if now - self._unit_time <= p.input_timeout else np.zeros(6)
        return unit_to_velocity(unit, p)

    def reference_joints(self, q_meas: np.ndarray) -> np.ndarray:
        """q_ref: the previous tick's target while it is close to the measured joints, else the measured joints."""
        return self._ee.reference(q_meas)

    def _tick(self):
        p, log = self.params, self.get_logger()
        with self._lock:
            js, homing, closed = self._js, self._homing, bool(self._gripper_closed)
        if js is None:
            if not self._warned_no_state:
                log.info("waiting for /joint_states before commanding")
                self._warned_no_state = True
            return
        if homing:
            return
        delta = self.velocity(self.now()) * self.dt
        gripper = GRIPPER_CLOSED if closed else GRIPPER_OPEN
        if np.any(delta != 0.0):
            try:
                q, _ = self._ee.step(np.r_[delta, gripper], "ee_delta", js.joint_pos)
            except ValueError as e:
                log.error(f"EE delta not applied: {e}")
                return
        elif p.hold_when_idle:
            q = self._ee.hold(js.joint_pos)
        else:
            self._ee.reset()  # the next motion starts from the measured joints
            return
        self._cmd_pub.publish(trajectory_msg(q, gripper, js.stamp))
        self._delta_pub.publish(twist_stamped_msg(delta, js.stamp))
        self.n_commands += 1

    def destroy_node(self):
        if self._terminal is not None:
            self._terminal.close()
            self._terminal = None
        super().destroy_node()


def main(args=None):
    node_main(Teleop, args)
