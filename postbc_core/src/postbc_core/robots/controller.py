"""Timed joint trajectories executed on a `Robot` at the control rate, with the holds a robot operator relies on.

The ROS robot_driver is a thin shell over `TrajectoryExecutor`: it converts messages, calls `submit` per
trajectory and `step` once per control period, and wires the e-stop, ~/enable and ~/go_home to `estop`, `enable`
and `go_home`. Everything here runs without ROS, so the scheduling and the safety behaviour are tested directly
(tests/test_controller.py) on a SimRobot.

Conventions (ros2_controllers' joint_trajectory_controller where it has one): point i of a trajectory is due at
stamp + times[i]; the last due point is held until the next one is due; a zero stamp means "start on receipt"; a
stamp older than `max_command_age` is rejected (the stamp is the observation time its producer acted on, so this
bounds perception-to-action latency), one more than `max_command_lead` in the future too (a clock mismatch).
Holds: the watchdog (the last point is `command_timeout` in the past), the e-stop (latched until `enable(True)`)
and `enable(False)` all command the measured position once (`Robot.hold`) and then send nothing. Every command
passes the robot's SafetyLayer relative to the measured joints. Units: radians, metres, seconds (robot time: sim
time in the twin, the node clock on hardware).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import JOINT_NAMES, N_JOINTS, JointAction, Robot

logger = logging.getLogger(__name__)

IGNORED_LOG_GAP = 1.0  # s of wall time without ignored commands that ends a "burst" (one log line per burst)
SAFETY_LOG_GAP = 1.0  # s of wall time between two "altered by the safety layer" lines


@dataclass
class ExecutorConfig:
    """Timing and home behaviour of TrajectoryExecutor (the driver's parameters of the same names)."""

    command_timeout: float = 0.5
    """Watchdog (s): hold the measured position when the last trajectory's last point is this far in the past."""
    max_command_age: float = 0.5
    """A trajectory whose stamp is older than this (s) on arrival is rejected."""
    max_command_lead: float = 5.0
    """A trajectory may start up to this many seconds in the future; farther is rejected as a clock mismatch."""
    home_tolerance: float = 0.01
    """go_home succeeds once every joint is within this (rad) of kinematics.HOME_QPOS."""
    home_timeout: float = 10.0
    """go_home fails after this many seconds (robot time) without reaching home."""

    def __post_init__(self):
        for name in ("command_timeout", "max_command_age", "max_command_lead", "home_tolerance", "home_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")


# A log sink: (severity "info" | "warning" | "error", text). The driver routes it to its ROS logger.
LogFn = Callable[[str, str], None]


def _python_log(severity: str, text: str) -> None:
    logger.log({"info": logging.INFO, "warning": logging.WARNING}.get(severity, logging.ERROR), text)


class TrajectoryExecutor:
    """Runs timed joint-space chunks on `robot` (connected; `send_action` must not step time itself: a SimRobot
    with step_on_send=False, or the real arm). Thread-safe: `lock` guards every method, and a caller that advances
    the sim physics takes it too, so a step never sees half a state.

    Shapes: a chunk is joint_pos (T, 6) rad, gripper (T,) m (NaN = keep the gripper's target), times (T,) s after
    `stamp`, strictly increasing."""

    def __init__(self, robot: Robot, config: ExecutorConfig | None = None, log: LogFn = _python_log):
        self.robot = robot
        self.config = config or ExecutorConfig()
        self._log = log
        self.lock = threading.RLock()
        self.mode = "hold"  # "hold" | "traj" | "home"
        self._chunk_q: np.ndarray | None = None  # (T, 6) of the running trajectory
        self._chunk_g: np.ndarray | None = None  # (T,)
        self._due: np.ndarray | None = None  # (T,) absolute due times (s)
        self._req_q: np.ndarray | None = None  # the requested (pre-safety) target being executed; None = keep the last
        self.gripper = float(self.robot.safety.limits.gripper_limits[1])  # target (m); a hold keeps it (a grasp stays)
        self.estopped = False
        self.estop_input = False  # the e-stop input's last value (enable refuses while it is True)
        self.enabled = True
        self.counts = {"accepted": 0, "rejected": 0, "ignored": 0, "clamped": 0, "watchdog_holds": 0}
        self.last_sent: np.ndarray | None = None
        self.last_measured: np.ndarray | None = self.robot.measure().joint_pos
        self._home_event: threading.Event | None = None
        self._home_result = (False, "")
        self._home_start = 0.0
        self._last_ignored_log = -1e9
        self._last_safety_log = -1e9

    # -- inputs -------------------------------------------------------------------------------------------------
    def submit(self, joint_pos, gripper, times, stamp: float, now: float) -> bool:
        """A trajectory received at robot time `now`. Returns True when accepted; a rejected or ignored one is
        counted and logged (its reason names the fix) and nothing changes."""
        q = np.asarray(joint_pos, dtype=np.float64)
        g = np.asarray(gripper, dtype=np.float64)
        t = np.asarray(times, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != N_JOINTS or g.shape != (len(q),) or t.shape != (len(q),) or not len(q):
            return self._reject(f"command rejected: expected joint_pos (T, {N_JOINTS}), gripper (T,) and times (T,) "
                                f"with T >= 1, got {q.shape}, {g.shape}, {t.shape}")
        bad = np.argwhere(~np.isfinite(q))
        if bad.size:
            k, j = bad[0]
            return self._reject(f"command rejected: {len(bad)} non-finite value(s), first {JOINT_NAMES[j]}="
                                f"{q[k, j]} at point {k}; nothing moves. Check the policy output / normalizer for NaNs.")
        if np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
            return self._reject(f"command rejected: times must increase strictly, got {t.tolist()}")
        if stamp == 0.0:  # joint_trajectory_controller's convention: a zero stamp starts on receipt
            stamp = now
        c = self.config
        age = now - stamp
        if age > c.max_command_age:
            return self._reject(f"command rejected: header stamp {stamp:.3f} s is {age:.3f} s old (> max_command_age "
                                f"{c.max_command_age} s); stamp commands with the observation time on the node "
                                "clock (use_sim_time=True in sim) and keep inference latency below max_command_age")
        if age < -c.max_command_lead:
            return self._reject(f"command rejected: header stamp {stamp:.3f} s is {-age:.3f} s in the future of the "
                                f"driver's clock ({now:.3f} s; max_command_lead {c.max_command_lead} s): a clock "
                                "mismatch? In sim run the producer with use_sim_time=True, or stamp 0 to start on "
                                "receipt")
        with self.lock:
            reason = ("e-stop is latched (publish false on /postbc/estop, then call ~/enable true)" if self.estopped
                      else "driver is disabled (call ~/enable true)" if not self.enabled
                      else "going home (~/go_home in progress)" if self.mode == "home" else None)
            if reason is not None:
                self.counts["ignored"] += 1
                wall = time.monotonic()
                if wall - self._last_ignored_log > IGNORED_LOG_GAP:
                    self._log("warning", f"command ignored: {reason}")
                self._last_ignored_log = wall
                return False
            self._chunk_q, self._chunk_g, self._due = q.copy(), g.copy(), stamp + t
            self.mode = "traj"
            self.counts["accepted"] += 1
            return True

    def _reject(self, text: str) -> bool:
        with self.lock:
            self.counts["rejected"] += 1
        self._log("error", text)
        return False

    def reject(self, text: str) -> None:
        """Count and log a command the caller found malformed before it could be submitted."""
        self._reject(text)

    def estop(self, active: bool) -> None:
        """The e-stop input: True latches a hold (commands ignored) until it reads False and enable(True)."""
        with self.lock:
            self.estop_input = bool(active)
            if active and not self.estopped:
                self.estopped = True
                self.hold_now("e-stop")
                self._log("error", "E-STOP latched: holding the measured position, ignoring commands; publish false "
                                   "on /postbc/estop and call ~/enable true to resume")

    def enable(self, on: bool) -> tuple[bool, str]:
        """(success, message). True clears a latched e-stop (once its input reads False) and resumes from where
        the arm is; False holds and ignores commands without latching."""
        with self.lock:
            if not on:
                self.enabled = False
                self.hold_now("disabled")
                return True, "disabled: holding, commands ignored"
            if self.estop_input:
                return False, ("e-stop topic /postbc/estop is still True; publish false there first, then call "
                               "~/enable true")
            if self.estopped or not self.enabled:
                was = "e-stop cleared" if self.estopped else "enabled"
                self.estopped, self.enabled = False, True
                self.hold_now("enable")  # resume from where the arm is, never toward a pre-stop target
                return True, was
            return True, "already enabled"

    # -- holds and home -----------------------------------------------------------------------------------------
    def hold_now(self, why: str, gripper: float | None = None) -> None:
        """Target := the measured joints (the arm stops where it is); the gripper keeps its target unless given."""
        with self.lock:
            if gripper is not None:
                self.gripper = float(gripper)
            self.mode, self._chunk_q, self._chunk_g, self._due, self._req_q = "hold", None, None, None, None
            self._finish_home(False, f"go_home interrupted: {why}")
            try:
                self.last_sent = self.robot.hold(self.gripper)
            except PostBCError as e:
                self._log("error", f"hold ({why}) failed: {e}")

    def _finish_home(self, ok: bool, message: str) -> None:
        if self._home_event is not None:
            self._home_result = (ok, message)
            self._home_event.set()
            self._home_event = None

    def go_home(self, now: float, wall_timeout: float) -> tuple[bool, str]:
        """Drive to kinematics.HOME_QPOS through the control loop (at the safety layer's speed), gripper open.
        Blocks until reached, failed (home_timeout of robot time) or `wall_timeout` s of wall time passed; `step`
        must keep running in another thread meanwhile. Returns (success, message)."""
        with self.lock:
            if self.estopped or not self.enabled:
                return False, ("e-stop is latched; clear it first" if self.estopped
                               else "driver is disabled; call ~/enable true first")
            self._finish_home(False, "go_home superseded by a new request")
            event = self._home_event = threading.Event()
            self.mode, self._chunk_q, self._chunk_g, self._due = "home", None, None, None
            self.gripper = float(self.robot.safety.limits.gripper_limits[1])
            self._home_start = now
        if not event.wait(wall_timeout):
            with self.lock:
                if self._home_event is event:
                    self._home_event = None
                    self.hold_now("no progress")
            return False, f"go_home: no result after {wall_timeout:.1f} s of wall time"
        return self._home_result

    def close(self, why: str = "shutting down") -> None:
        with self.lock:
            self._finish_home(False, f"go_home interrupted: {why}")

    # -- the control period -------------------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """Once per control period at robot time `now`: pick the due target, pass it through the safety layer,
        send it; or run the watchdog / home checks."""
        with self.lock:
            if self.estopped or not self.enabled:
                return
            c = self.config
            q_meas = self.robot.measure().joint_pos
            self.last_measured = q_meas
            if self.mode == "home":
                err = float(np.max(np.abs(q_meas - kinematics.HOME_QPOS)))
                if err < c.home_tolerance:
                    self.mode, self._req_q = "hold", None
                    self._finish_home(True, "home reached")
                    return
                if now - self._home_start > c.home_timeout:
                    self._finish_home(False, f"go_home: still {err:.4f} rad from home after {c.home_timeout} s "
                                             "(blocked by an object or the workspace box?); holding")
                    self.hold_now("go_home timeout")
                    return
                self._req_q = kinematics.HOME_QPOS.copy()
            elif self.mode == "traj":
                due = self._due
                if now - due[-1] > c.command_timeout:
                    self.counts["watchdog_holds"] += 1
                    self._log("warning", f"watchdog: no command for {now - due[-1]:.2f} s (command_timeout "
                                         f"{c.command_timeout} s), holding")
                    self.hold_now("watchdog")
                    return
                k = int(np.searchsorted(due, now, side="right")) - 1
                if k >= 0:
                    self._req_q = self._chunk_q[k].copy()
                    if np.isfinite(self._chunk_g[k]):
                        self.gripper = float(self._chunk_g[k])
            if self._req_q is None:
                return  # holding: the last target stays
            self._send(self._req_q)

    def _send(self, q_req: np.ndarray) -> None:
        stats = self.robot.safety.stats
        before = (stats.joint_clamps, stats.workspace_limited, stats.gripper_clamps)
        g_req = self.gripper
        try:
            sent = self.robot.send_action(JointAction(joint_pos=q_req, gripper=g_req))
        except PostBCError as e:
            self._log("error", f"command not sent: {e}")
            self.hold_now("send failed")
            return
        self.gripper = float(sent.gripper)
        self.last_sent = sent.joint_pos
        if not sent.clamped:
            return
        self.counts["clamped"] += 1
        # Step limiting alone is how a far target is approached (every period), so only the limits and the box are
        # reported, at most once a second.
        after = (stats.joint_clamps, stats.workspace_limited, stats.gripper_clamps)
        what = [w for w, b, a in zip(("joint limits", "workspace box", "gripper range"), before, after) if a > b]
        wall = time.monotonic()
        if what and wall - self._last_safety_log > SAFETY_LOG_GAP:
            self._last_safety_log = wall
            self._log("warning", f"safety: target {np.round(q_req, 4).tolist()} (gripper {g_req:.4f} m) altered by "
                                 f"the {' and '.join(what)} to {np.round(sent.joint_pos, 4).tolist()} (gripper "
                                 f"{sent.gripper:.4f} m); command targets inside the limits")

    # -- diagnostics --------------------------------------------------------------------------------------------
    def status(self) -> dict:
        with self.lock:
            return {
                "enabled": self.enabled, "estop": self.estopped, "holding": self.mode == "hold", "mode": self.mode,
                "commands": dict(self.counts), "safety": asdict(self.robot.safety.stats),
                "target": None if self.last_sent is None else [round(float(v), 5) for v in self.last_sent],
                "gripper_target": self.gripper,
            }
