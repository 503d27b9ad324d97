"""The one safety layer every robot backend passes its commands through (sim and hardware alike).

Order of checks in `SafetyLayer.filter` (each alteration is logged and counted, nothing is fixed silently):
  1. non-finite targets (NaN/inf) -> PostBCError naming the joint and value; nothing is sent;
  2. joint limits (kinematics.JOINT_LIMITS shrunk by `joint_margin`) -> clamp, warning per joint;
  3. per-step motion above `max_joint_step` -> the whole step is scaled down (direction kept);
  4. EE position (FK of the target) outside the workspace box -> the step is shortened to the last in-box point
     on the segment current -> target (holding the current position when none is), warning.
Units: radians, metres. Shapes: joint vectors (6,), gripper a scalar (finger opening, m).

Every backend builds its layer with `make_safety_layer(control_hz, max_joint_speed, limits)` (the sim task, which a
SimRobot and the scripted demonstrators share, and InterbotixRobot): the one place a speed limit (rad/s) becomes a
per-step limit (rad), so the arm, the twin and the demos move at most max_joint_speed whatever the control rate.
The defaults here (MAX_JOINT_SPEED, CONTROL_HZ, the SafetyLimits fields) are the driver's parameter defaults too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.actions import EEDeltaExecutor
from postbc_core.robots.base import JOINT_NAMES, N_JOINTS, EEDeltaAction, JointAction, SentCommand

logger = logging.getLogger(__name__)

MAX_JOINT_SPEED = 1.5
"""rad/s: the default joint speed limit (robot_driver's max_joint_speed); per control step MAX_JOINT_SPEED / hz."""
CONTROL_HZ = 10.0
"""Hz: the default control rate of the driver, the twin's tasks and the Interbotix backend (WidowX: 5-10 Hz)."""


@dataclass
class SafetyLimits:
    """Limits the safety layer enforces."""

    joint_margin: float = 0.02
    """rad kept clear of each URDF joint limit (kinematics.JOINT_LIMITS)."""
    gripper_limits: tuple[float, float] = (float(kinematics.GRIPPER_LIMITS[0]), float(kinematics.GRIPPER_LIMITS[1]))
    """finger opening range (m)."""
    workspace_min: tuple[float, float, float] = (0.05, -0.40, 0.01)
    """lower corner (m, base frame) of the box the EE must stay in: in front of the base, above the table (z=0)."""
    workspace_max: tuple[float, float, float] = (0.60, 0.40, 0.55)
    """upper corner (m, base frame) of the EE box."""
    max_joint_step: float = MAX_JOINT_SPEED / CONTROL_HZ
    """largest change of any joint per control step (rad); 0.15 at 10 Hz is 1.5 rad/s, well under the
    Dynamixel XM430/XL430 no-load speeds on the wx250s. Backends set it from a speed: `for_rate`."""

    def __post_init__(self):
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ConfigError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max} "
                              "on every axis (x, y, z in metres)")
        span = kinematics.JOINT_LIMITS[:, 1] - kinematics.JOINT_LIMITS[:, 0]
        if not 0.0 <= self.joint_margin < float(span.min()) / 2:
            raise ConfigError(f"joint_margin={self.joint_margin} rad must be in [0, {float(span.min()) / 2:.3f})")
        if not self.max_joint_step > 0:
            raise ConfigError(f"max_joint_step={self.max_joint_step} rad must be > 0")
        g0, g1 = self.gripper_limits
        if not g0 < g1:
            raise ConfigError(f"gripper_limits {self.gripper_limits} must be (closed, open) with closed < open (m)")

    @classmethod
    def for_rate(cls, control_hz: float, max_joint_speed: float = MAX_JOINT_SPEED, **limits) -> SafetyLimits:
        """Limits whose per-step joint limit is max_joint_speed (rad/s) / control_hz (Hz) rad; `limits`: the other
        fields (joint_margin, gripper_limits, workspace_min, workspace_max). ConfigError for a rate or speed <= 0."""
        if not control_hz > 0:
            raise ConfigError(f"control_hz={control_hz} must be > 0 Hz (the WidowX runs at 5-10 Hz)")
        if not max_joint_speed > 0:
            raise ConfigError(f"max_joint_speed={max_joint_speed} rad/s must be > 0 (the default: {MAX_JOINT_SPEED})")
        return cls(max_joint_step=max_joint_speed / control_hz, **limits)

    @property
    def joint_limits(self) -> np.ndarray:
        """(6, 2) rad: URDF limits shrunk by the margin."""
        lim = kinematics.JOINT_LIMITS.copy()
        lim[:, 0] += self.joint_margin
        lim[:, 1] -= self.joint_margin
        return lim

    def in_workspace(self, pos: np.ndarray) -> bool:
        pos = np.asarray(pos, float)
        return bool(np.all(pos >= self.workspace_min) and np.all(pos <= self.workspace_max))

    def workspace_violation(self, pos: np.ndarray) -> float:
        """Distance (m) from pos to the box (0 inside)."""
        pos = np.asarray(pos, float)
        below = np.clip(np.asarray(self.workspace_min) - pos, 0, None)
        above = np.clip(pos - np.asarray(self.workspace_max), 0, None)
        return float(np.linalg.norm(below + above))


@dataclass
class SafetyStats:
    """Counters for diagnostics (the driver publishes them; tests read them)."""

    commands: int = 0
    rejected: int = 0
    joint_clamps: int = 0
    step_limited: int = 0
    workspace_limited: int = 0
    gripper_clamps: int = 0
    per_joint_clamps: list[int] = field(default_factory=lambda: [0] * N_JOINTS)


class SafetyLayer:
    """Filters requested joint/gripper targets into commands that are safe to send."""

    def __init__(self, limits: SafetyLimits | None = None, log_level: int = logging.WARNING):
        """log_level: level of the per-command alteration messages. Backends that execute commands for an operator
        keep WARNING; the sim tasks use DEBUG and report the counts (`stats`) per episode instead."""
        self.limits = limits or SafetyLimits()
        self.stats = SafetyStats()
        self.log_level = log_level
        self.ee_executor = EEDeltaExecutor()
        """The chain EE-delta actions apply to (data.layout.EE_DELTA_CONVENTION); a backend resets it per episode."""

    def check_finite(self, q: np.ndarray, what: str) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (N_JOINTS,):
            self.stats.rejected += 1
            raise PostBCError(f"{what} must have shape ({N_JOINTS},) (joints {', '.join(JOINT_NAMES)}), got {q.shape}")
        bad = np.flatnonzero(~np.isfinite(q))
        if bad.size:
            self.stats.rejected += 1
            names = ", ".join(f"{JOINT_NAMES[i]}={q[i]}" for i in bad)
            raise PostBCError(f"{what} has non-finite values ({names}); command rejected, nothing sent. "
                              "Check the policy output / normalizer for NaNs.")
        return q

    def check_gripper(self, requested: float) -> float:
        """Finite check + clamp of a gripper opening target (m)."""
        g = float(np.asarray(requested, dtype=np.float64).reshape(()))
        if not np.isfinite(g):
            self.stats.rejected += 1
            raise PostBCError(f"gripper target is {g}; command rejected, nothing sent")
        lo, hi = self.limits.gripper_limits
        if not lo <= g <= hi:
            clamped = min(max(g, lo), hi)
            self.stats.gripper_clamps += 1
            logger.log(self.log_level, "safety: gripper target %.4f m outside [%.4f, %.4f] m, clamped to %.4f",
                       g, lo, hi, clamped)
            g = clamped
        return g

    def command(self, action: JointAction | EEDeltaAction, current_q) -> SentCommand:
        """Resolves a robot action against the measured joints (EE deltas through `ee_executor`, chained from the
        previous command's target: the one rule teleop, the twin and the policies use) and filters it: the one path
        every backend uses."""
        if isinstance(action, EEDeltaAction):
            delta = np.asarray(action.delta, dtype=np.float64).reshape(6)
            if not np.all(np.isfinite(delta)):
                self.stats.rejected += 1
                raise PostBCError(f"EE delta {delta} has non-finite values; command rejected, nothing sent")
            # The gripper is filtered below (check_gripper names a bad value); here only the joints are converted.
            requested, _ = self.ee_executor.step(np.r_[delta, 0.0], "ee_delta",
                                                 self.check_finite(current_q, "current joint state"))
        elif isinstance(action, JointAction):
            requested = action.joint_pos
            self.ee_executor.q_prev = np.asarray(requested, np.float64).copy()  # a later delta continues from it
        else:
            raise PostBCError(f"expected a JointAction or EEDeltaAction, got {type(action).__name__}")
        return self.filter(requested, action.gripper, current_q)

    def filter(self, requested_q, requested_gripper: float, current_q) -> SentCommand:
        """requested_q (6,) rad, requested_gripper m, current_q (6,) rad (measured) -> the command to send."""
        q = self.check_finite(requested_q, "requested joint target").copy()
        cur = self.check_finite(current_q, "current joint state")
        g = self.check_gripper(requested_gripper)
        self.stats.commands += 1
        altered = g != float(np.asarray(requested_gripper, dtype=np.float64).reshape(()))  # the gripper was clamped
        lim = self.limits.joint_limits

        # 2. joint limits
        for i in range(N_JOINTS):
            lo, hi = lim[i]
            if q[i] < lo or q[i] > hi:
                bound = lo if q[i] < lo else hi
                logger.log(self.log_level,
                           "safety: joint %s target %.4f rad outside [%.4f, %.4f] rad, clamped to limit %.4f",
                           JOINT_NAMES[i], q[i], lo, hi, bound)
                q[i] = bound
                self.stats.joint_clamps += 1
                self.stats.per_joint_clamps[i] += 1
                altered = True

        # 3. per-step motion
        step = q - cur
        biggest = float(np.max(np.abs(step)))
        if biggest > self.limits.max_joint_step:
            scale = self.limits.max_joint_step / biggest
            i = int(np.argmax(np.abs(step)))
            logger.log(self.log_level,
                       "safety: step of %.4f rad on joint %s exceeds max %.4f rad/step; step scaled by %.3f",
                       biggest, JOINT_NAMES[i], self.limits.max_joint_step, scale)
            q = cur + step * scale
            self.stats.step_limited += 1
            altered = True

        # 4. workspace box on the EE position of the target
        pos, _ = kinematics.fk(q)
        if not self.limits.in_workspace(pos):
            q_new = self._workspace_project(cur, q)
            logger.log(self.log_level, "safety: target EE position %s m is outside the workspace box %s..%s m; %s",
                       np.round(pos, 4), self.limits.workspace_min, self.limits.workspace_max,
                       "holding current position" if np.allclose(q_new, cur) else "step shortened to the box edge")
            q = q_new
            self.stats.workspace_limited += 1
            altered = True
        return SentCommand(joint_pos=q, gripper=g, clamped=altered)

    def _workspace_project(self, cur: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Largest t in [0, 1] with FK(cur + t (target - cur)) acceptable, by bisection (12 FK calls).

        Acceptable = inside the box, or (when the arm is already outside, e.g. after sleep) not farther from it than
        the current pose, so the arm can always move back in.
        """
        L = self.limits
        cur_viol = L.workspace_violation(kinematics.fk(cur)[0])

        def ok(t: float) -> bool:
            v = L.workspace_violation(kinematics.fk(cur + t * (target - cur))[0])
            return v <= 0.0 or (cur_viol > 0 and v <= cur_viol)

        if not ok(0.0):
            return cur.copy()
        lo_t, hi_t = 0.0, 1.0
        for _ in range(12):
            mid = 0.5 * (lo_t + hi_t)
            if ok(mid):
                lo_t = mid
            else:
                hi_t = mid
        return cur + lo_t * (target - cur)


def make_safety_layer(control_hz: float, max_joint_speed: float = MAX_JOINT_SPEED, limits: SafetyLimits | None = None,
                      *, log_level: int = logging.WARNING) -> SafetyLayer:
    """The safety layer of a robot backend running at `control_hz` (Hz) with joints limited to `max_joint_speed`
    (rad/s): the one constructor every backend uses. `limits`: the full limits (joint margin, workspace box, gripper
    range; None = the defaults at this rate, `SafetyLimits.for_rate`); their max_joint_step must be max_joint_speed /
    control_hz (ConfigError otherwise), so a config's speed and the step the layer enforces cannot disagree."""
    wanted = SafetyLimits.for_rate(control_hz, max_joint_speed)
    if limits is None:
        limits = wanted
    elif not np.isclose(limits.max_joint_step, wanted.max_joint_step, rtol=1e-9, atol=0.0):
        raise ConfigError(f"limits.max_joint_step={limits.max_joint_step} rad disagrees with max_joint_speed / "
                          f"control_hz = {max_joint_speed} / {control_hz} = {wanted.max_joint_step} rad; build the "
                          "limits with SafetyLimits.for_rate(control_hz, max_joint_speed, ...)")
    return SafetyLayer(limits, log_level)
