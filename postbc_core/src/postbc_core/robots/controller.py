"""Timed joint trajectories executed on a `Robot` at the control rate, with the holds a robot operator relies on.

The ROS robot_driver is a thin shell over `TrajectoryExecutor`: it converts messages, calls `submit` per
trajectory and `step` once per control period, and wires the e-stop, ~/enable and ~/go_home to `estop`, `enable`
and `go_home`. Everything here runs without ROS, so the sampling and the safety behaviour are tested directly
(tests/test_controller.py) on a SimRobot.

Execution follows ros2_controllers' joint_trajectory_controller (JTC; trajectory.cpp and update(), Humble to
Rolling): every control tick the target is the running trajectory *sampled at now*. Point i is at
stamp + times[i] (a zero stamp means "start on receipt"). Before the first point the trajectory runs from the
command in force at receipt (the last command sent, at the time of the last control tick: JTC's
interpolate_from_desired_state start; the measured joints when nothing was sent yet) toward the first point; between
points it is JTC's spline for the fields both ends give: positions only -> linear, with velocities -> cubic, with
velocities and accelerations -> quintic (accelerations without velocities: linear). After the last point its
positions are held. A new trajectory replaces the running one from now on (no splicing, as JTC), so a client that
streams one-point trajectories faster than their time_from_start moves the arm at the speed each implies; a future
stamp starts moving at once toward the first point, arriving at its time. The gripper is its own linear trajectory
over the points that give it (NaN = keep the gripper's target), from its target at receipt.
Starting from the last command rather than from the measured joints (JTC's default) is deliberate: at this
driver's 5-10 Hz a streamed trajectory often sees a single tick, and a start at the measured state at that tick
(JTC's first sample) would command where the arm already is, so a 10 Hz stream would never move it.

Kept from before, stricter than JTC where a robot operator needs it: a stamp older than `max_command_age` is
rejected (the stamp is the observation time its producer acted on, so this bounds perception-to-action latency;
JTC only rejects a trajectory that ends in the past), one more than `max_command_lead` in the future too (a clock
mismatch). Holds: the watchdog (the last point is `command_timeout` in the past: JTC's cmd_timeout), the e-stop
(latched until `enable(True)`) and `enable(False)` all command the measured position once (`Robot.hold`) and then
send nothing. Every sampled target passes the robot's SafetyLayer relative to the measured joints (limits,
workspace box, max_joint_step per tick), so no trajectory moves the arm faster than the safety layer allows. JTC's
action-goal rules (goal and path tolerances, goal_time) have no counterpart: the driver takes topic commands only.
Units: radians, metres, seconds (robot time: sim time in the twin, the node clock on hardware).
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
from postbc_core.robots.base import JOINT_NAMES, N_JOINTS, JointAction
from postbc_core.robots.robot import Robot

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


def interpolate(t: float, t0: float, p0, t1: float, p1, v0=None, v1=None, a0=None, a1=None):
    """JTC's Trajectory::interpolate_between_points: the state at time t on the segment (t0, p0, v0, a0) ->
    (t1, p1, v1, a1). Linear without velocities at both ends, cubic with them, quintic with accelerations too;
    t is clamped to the segment, and a clamped sample is linear (JTC's rule). Returns (pos, vel, acc), each (6,)
    (rad, rad/s, rad/s^2)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    T = t1 - t0
    s = t - t0
    has_v = v0 is not None and v1 is not None
    has_a = has_v and a0 is not None and a1 is not None
    if s < 0.0 or s > T:
        s, has_v, has_a = min(max(s, 0.0), T), False, False
    zero = np.zeros_like(p0)
    if not has_v:
        slope = (p1 - p0) / T if T > 0 else zero
        return p0 + s * slope, slope, zero
    v0, v1 = np.asarray(v0, np.float64), np.asarray(v1, np.float64)
    if not has_a:
        c2 = (-3 * p0 + 3 * p1 - 2 * v0 * T - v1 * T) / T**2 if T > 0 else zero
        c3 = (2 * p0 - 2 * p1 + v0 * T + v1 * T) / T**3 if T > 0 else zero
        return (p0 + v0 * s + c2 * s**2 + c3 * s**3, v0 + 2 * c2 * s + 3 * c3 * s**2, 2 * c2 + 6 * c3 * s)
    a0, a1 = np.asarray(a0, np.float64), np.asarray(a1, np.float64)
    c2 = 0.5 * a0
    if T > 0:
        c3 = (-20 * p0 + 20 * p1 - 3 * a0 * T**2 + a1 * T**2 - 12 * v0 * T - 8 * v1 * T) / (2 * T**3)
        c4 = (30 * p0 - 30 * p1 + 3 * a0 * T**2 - 2 * a1 * T**2 + 16 * v0 * T + 14 * v1 * T) / (2 * T**4)
        c5 = (-12 * p0 + 12 * p1 - a0 * T**2 + a1 * T**2 - 6 * v0 * T - 6 * v1 * T) / (2 * T**5)
    else:
        c3 = c4 = c5 = zero
    return (p0 + v0 * s + c2 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5,
            v0 + 2 * c2 * s + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4,
            2 * c2 + 6 * c3 * s + 12 * c4 * s**2 + 20 * c5 * s**3)


@dataclass
class _Trajectory:
    """A trajectory being executed, in absolute robot time. Knot 0 is the command in force at receipt when it
    precedes the first point. K knots: t (K,) s, q (K, 6) rad, v / a (K, 6) with NaN rows where a knot gives none;
    the gripper's own knots g_t (Kg,) s, g (Kg,) m (Kg = 0: no gripper in this trajectory)."""

    t: np.ndarray
    q: np.ndarray
    v: np.ndarray
    a: np.ndarray
    g_t: np.ndarray
    g: np.ndarray

    @property
    def end(self) -> float:
        return float(self.t[-1])

    def sample(self, now: float):
        """(pos, vel, acc) of the arm at `now` (JTC's Trajectory::sample) and the gripper target (None: keep)."""
        g = float(np.interp(now, self.g_t, self.g)) if len(self.g_t) else None
        k = int(np.searchsorted(self.t, now, side="right")) - 1
        if k >= len(self.t) - 1:  # played out: hold the last point, at rest
            zero = np.zeros(N_JOINTS)
            return self.q[-1].copy(), zero, zero, g
        k = max(k, 0)

        def given(x, i):
            return x[i] if np.all(np.isfinite(x[i])) else None

        q, v, a = interpolate(now, self.t[k], self.q[k], self.t[k + 1], self.q[k + 1], given(self.v, k),
                              given(self.v, k + 1), given(self.a, k), given(self.a, k + 1))
        return q, v, a, g


class TrajectoryExecutor:
    """Runs timed joint-space chunks on `robot` (connected; `send_action` must not step time itself: a SimRobot
    with step_on_send=False, or the real arm). Thread-safe: `lock` guards every method, and a caller that advances
    the sim physics takes it too, so a step never sees half a state.

    Shapes: a chunk is joint_pos (T, 6) rad, gripper (T,) m (NaN = keep the gripper's target), times (T,) s after
    `stamp`, strictly increasing; optional velocities (T, 6) rad/s and accelerations (T, 6) rad/s^2, a NaN row
    where a point gives none."""

    def __init__(self, robot: Robot, config: ExecutorConfig | None = None, log: LogFn = _python_log):
        self.robot = robot
        self.config = config or ExecutorConfig()
        self._log = log
        self.lock = threading.RLock()
        self.mode = "hold"  # "hold" | "traj" | "home"
        self._traj: _Trajectory | None = None  # the running trajectory (mode "traj")
        self._req_q: np.ndarray | None = None  # the requested (pre-safety) target of the last tick; None = holding
        # The command in force: last_sent, sent at the tick at _last_tick with the trajectory's velocity and
        # acceleration there (zero unless it went out unaltered): where a new trajectory starts.
        self._last_tick: float | None = None
        self._last_va = (np.zeros(N_JOINTS), np.zeros(N_JOINTS))
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
    def submit(self, joint_pos, gripper, times, stamp: float, now: float, velocities=None,
               accelerations=None) -> bool:
        """A trajectory received at robot time `now`; it replaces the running one from the next tick on. Returns
        True when accepted; a rejected or ignored one is counted and logged (its reason names the fix) and nothing
        changes."""
        q = np.asarray(joint_pos, dtype=np.float64)
        g = np.asarray(gripper, dtype=np.float64)
        t = np.asarray(times, dtype=np.float64)
        va = [np.full(q.shape, np.nan) if x is None else np.asarray(x, dtype=np.float64)
              for x in (velocities, accelerations)]
        if (q.ndim != 2 or q.shape[1] != N_JOINTS or g.shape != (len(q),) or t.shape != (len(q),) or not len(q)
                or any(x.shape != q.shape for x in va)):
            return self._reject(f"command rejected: expected joint_pos (T, {N_JOINTS}), gripper (T,) and times (T,) "
                                f"with T >= 1 (velocities / accelerations (T, {N_JOINTS}) if given), got {q.shape}, "
                                f"{g.shape}, {t.shape}, {' and '.join(str(x.shape) for x in va)}")
        absent = [np.isnan(x).all(axis=1, keepdims=True) for x in va]  # a NaN row: that point gives none
        for what, x, skip in (("", q, False), ("velocity of ", va[0], absent[0]),
                              ("acceleration of ", va[1], absent[1])):
            bad = np.argwhere(~np.isfinite(x) & ~skip)
            if bad.size:
                k, j = bad[0]
                return self._reject(f"command rejected: {len(bad)} non-finite value(s), first {what}"
                                    f"{JOINT_NAMES[j]}={x[k, j]} at point {k}; nothing moves. Check the policy "
                                    "output / normalizer for NaNs.")
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
            self._traj = self._start(q, g, stamp + t, *va, now)
            self.mode = "traj"
            self.counts["accepted"] += 1
            return True

    def _start(self, q, g, t, v, a, now: float) -> _Trajectory:
        """The trajectory to execute: the points, preceded by the command in force when the first point is ahead
        of it (JTC's set_point_before_trajectory_msg; velocities / accelerations there only where the first point
        gives them, so the first segment has the spline degree of the rest)."""
        t_s = self._last_tick if self._last_tick is not None and self._last_tick <= now else now
        q_s = self.last_sent if self.last_sent is not None else self.robot.measure().joint_pos
        gk = np.isfinite(g)
        g_t, g_v = t[gk], g[gk]
        if len(g_t) and t_s < g_t[0]:
            g_t, g_v = np.r_[t_s, g_t], np.r_[self.gripper, g_v]
        if t_s < t[0]:
            v_s, a_s = (np.where(np.isnan(x[0]), np.nan, last) for x, last in zip((v, a), self._last_va))
            t, q, v, a = np.r_[t_s, t], np.vstack([q_s, q]), np.vstack([v_s, v]), np.vstack([a_s, a])
        return _Trajectory(t=t, q=q.copy(), v=v.copy(), a=a.copy(), g_t=g_t, g=g_v)

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
            self.mode, self._traj, self._req_q = "hold", None, None
            self._last_va = (np.zeros(N_JOINTS), np.zeros(N_JOINTS))
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
            self.mode, self._traj = "home", None
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
        """Once per control period at robot time `now`: sample the running trajectory at now, pass the target
        through the safety layer, send it; or run the watchdog / home checks."""
        with self.lock:
            self._last_tick = now
            self._last_va = (np.zeros(N_JOINTS), np.zeros(N_JOINTS))
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
                end = self._traj.end
                if now - end > c.command_timeout:
                    self.counts["watchdog_holds"] += 1
                    self._log("warning", f"watchdog: no command for {now - end:.2f} s (command_timeout "
                                         f"{c.command_timeout} s), holding")
                    self.hold_now("watchdog")
                    return
                q, v, a, g = self._traj.sample(now)
                self._req_q = q
                if g is not None:
                    self.gripper = g
                if self._send(q) is False:
                    self._last_va = (v, a)
                return
            if self._req_q is None:
                return  # holding: the last target stays
            self._send(self._req_q)

    def _send(self, q_req: np.ndarray) -> bool | None:
        """Send through the safety layer; returns whether it altered the command (None: nothing was sent)."""
        stats = self.robot.safety.stats
        before = (stats.joint_clamps, stats.workspace_limited, stats.gripper_clamps)
        g_req = self.gripper
        try:
            sent = self.robot.send_action(JointAction(joint_pos=q_req, gripper=g_req))
        except PostBCError as e:
            self._log("error", f"command not sent: {e}")
            self.hold_now("send failed")
            return None
        self.gripper = float(sent.gripper)
        self.last_sent = sent.joint_pos
        if not sent.clamped:
            return False
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
        return True

    # -- diagnostics --------------------------------------------------------------------------------------------
    def status(self) -> dict:
        with self.lock:
            return {
                "enabled": self.enabled, "estop": self.estopped, "holding": self.mode == "hold", "mode": self.mode,
                "commands": dict(self.counts), "safety": asdict(self.robot.safety.stats),
                "target": None if self.last_sent is None else [round(float(v), 5) for v in self.last_sent],
                "sampled_target": (None if self.mode != "traj" or self._req_q is None
                                   else [round(float(v), 5) for v in self._req_q]),
                "gripper_target": self.gripper,
            }
