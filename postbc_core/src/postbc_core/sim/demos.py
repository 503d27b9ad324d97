"""Scripted demonstrators for the sim tasks that drive the arm like a human with a SpaceMouse, and `record_demos`.

A demonstrator is an "operator": every control step it looks at the scene (privileged state: object poses) and
commands a Bridge-style end-effector delta [dx dy dz droll dpitch dyaw] (m, rad, base frame) plus a gripper opening
target (m). That command goes through exactly the teleop path: it is the action of a task in action_mode "ee_delta",
run by the one episode loop (control/loop.py): the delta applies to the measured joints (robots.actions, the one
conversion) and the task's one `SafetyLayer` filters the result; the loop's row (control/rows.py) stores the command
as cmd_ee_delta and what was sent as cmd_joint_pos. Behaviour is a phase script (approach above, descend, close,
lift, move, place/push, release) written as a generator, with per-episode random modes so the demonstrations are
multimodal.

Intended modes (drawn per episode with `choose`, recorded in `mode` / DemoStats.modes), each a distinct way to do the
task that a multimodal policy should keep apart:
  - approach_side "left" / "right" (every task): the arc the EE takes to reach the object;
  - grasp_point -0.012 / 0 / +0.012 m (put_in_bowl): where along the corn the fingers close, measured along the
    commanded grasp yaw's direction (the corn is symmetric end to end, so the label is the canonical one);
  - push_yaw 70 / 110 deg (push_to_target): fingers slanted left or right of the push line.
NOT a mode: the grasp yaw (the wrist's angle about vertical). Among the yaws that give the same grasp (the object's
symmetric ones: cube every 90 deg, corn capsule and the parallel jaws every 180 deg) `grasp_yaw_near` takes the one
needing the least wrist rotation from the EE yaw at HOME, so the commanded wrist angle is ONE continuous function of
the object's (or push line's) yaw: lift_cube, whose cube spawns at yaw [-pi/4, pi/4), is grasped at the cube's own
yaw with no cut inside the spawn range. Where the spawn covers the whole circle (corn yaw, push direction) one cut is
unavoidable (a circle of object yaws onto a wrist interval); it falls where both candidates need the same 90 deg
rotation. The branch is picked from the noiseless yaw and the operator's yaw error added afterwards, so noise never
flips it. (An earlier version also drew a cube "face" 0/90 deg and wrapped yaw + 90 deg to [-pi/2, pi/2): the wrist
target then jumped by pi as the cube yaw crossed 0, three wrist targets for one task.)

`quality` in [0, 1] sets how clean the operator is: 1 = small action noise and rare short pauses (still human-like);
lower = more noise, more and longer hesitations, overshoot followed by corrections, sloppier grasp placement and
closing before the fingers are fully down. Units: metres, radians, seconds. Shape legend: T steps of one episode.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from postbc_core.control.loop import Actor, EpisodeResult, run_episodes
from postbc_core.errors import ConfigError, StoreError
from postbc_core.robots import kinematics
from postbc_core.sim.base import quat_yaw

logger = logging.getLogger(__name__)

G_OPEN, G_CLOSED = float(kinematics.GRIPPER_LIMITS[1]), float(kinematics.GRIPPER_LIMITS[0])
# The finger pads reach 2 cm below the EE site (wx250s.xml: pad x 0.0276 +- 0.02 from fingers_link at 0.066, site at
# 0.0936); keep the site this high so the pad tips clear the table by ~3 mm while covering a 3 cm object.
GRASP_Z = 0.023
TRAVEL_Z = 0.10  # m, height for moves above objects (clears the 4 cm bowl rim with the corn hanging below)
DOWN = kinematics.euler_to_mat([0.0, np.pi / 2, 0.0])  # EE x axis pointing down (HOME orientation)

Vec = np.ndarray
Target = Vec | Callable[[], Vec]


def ee_yaw(quat: Vec) -> float:
    """Yaw (rad) about vertical of a gripper pointing down with orientation quat [w x y z]: R = Rz(yaw) @ DOWN."""
    M = kinematics.quat_to_mat(np.asarray(quat, dtype=np.float64)) @ DOWN.T
    return float(np.arctan2(M[1, 0], M[0, 0]))


HOME_YAW = ee_yaw(kinematics.fk(kinematics.HOME_QPOS)[1])  # rad, the EE yaw at HOME (0: fingers close along y)


def grasp_yaw_near(yaw: float, period: float, reference: float = HOME_YAW) -> float:
    """The grasp yaw (rad) among the equivalent ones yaw + k * period (the object's and the jaws' symmetry: pi / 2 for
    a cube, pi for a capsule or for the closed parallel jaws) that needs the least wrist rotation from `reference`
    (rad, default the EE yaw at HOME): the one in [reference - period / 2, reference + period / 2).

    The single rule every demonstrator uses for its wrist target, so that target is one continuous function of the
    object's yaw over the spawn range (see the module docstring)."""
    if not period > 0:
        raise ConfigError(f"period={period}: the grasp symmetry period must be > 0 rad (pi / 2 cube, pi capsule)")
    return float(reference + (yaw - reference + period / 2) % period - period / 2)


@dataclass
class OperatorStyle:
    """How a simulated operator moves, derived from `quality` (1 clean .. 0 sloppy) and the episode's rng."""

    quality: float = 1.0
    """In [0, 1]; every field below defaults from it in `from_quality`."""
    speed: float = 0.02
    """Largest translation command per control step (m); a SpaceMouse at full tilt on a WidowX is ~2-3 cm/step."""
    gain: float = 0.8
    """Fraction of the remaining distance commanded per step (a human closes in proportionally)."""
    noise: float = 0.001
    """Std of the per-step translation noise (m)."""
    rot_noise: float = 0.01
    """Std of the per-step rotation noise (rad)."""
    pause_prob: float = 0.01
    """Chance per step of starting a hesitation (zero command)."""
    pause_max: int = 2
    """Longest hesitation (steps)."""
    overshoot: float = 0.0
    """Largest overshoot past a waypoint along the motion (m), corrected afterwards."""
    grasp_err: float = 0.002
    """Std of the horizontal grasp placement error (m)."""
    yaw_err: float = 0.03
    """Std of the grasp yaw error (rad)."""
    close_early: float = 0.0
    """How far above the grasp height (m) the operator may start closing."""

    @classmethod
    def from_quality(cls, quality: float, rng: np.random.Generator) -> OperatorStyle:
        if not 0.0 <= quality <= 1.0:
            raise ConfigError(f"quality={quality}: use a value in [0, 1] (1 = clean, 0 = sloppy)")
        s = 1.0 - quality  # sloppiness
        return cls(
            quality=quality,
            speed=float(rng.uniform(0.016, 0.024)),
            gain=float(rng.uniform(0.7, 0.9)),
            noise=0.001 + 0.006 * s,
            rot_noise=0.01 + 0.05 * s,
            pause_prob=0.01 + 0.08 * s,
            pause_max=2 + int(round(5 * s)),
            overshoot=0.03 * s,
            grasp_err=0.002 + 0.012 * s,
            yaw_err=0.03 + 0.35 * s,
            close_early=0.02 * s,
        )


class Demonstrator:
    """Base operator: `reset(obs)` at the start of an episode, then `act(obs) -> (7,)` command per step.

    Subclasses implement `script()`, a generator that yields commands (7,) and reads `self.obs` (updated before each
    step); helpers `move_to` / `hold` do the closed-loop SpaceMouse-style driving. `mode` names the episode's random
    choices (approach side, grasp point, push slant: the intended modes), recorded in DemoStats for multimodality
    checks.
    """

    def __init__(self, rng: np.random.Generator, quality: float = 1.0):
        self.rng = rng
        self.style = OperatorStyle.from_quality(quality, rng)
        self.mode: dict[str, object] = {}
        self.obs: dict[str, np.ndarray] = {}
        self._gen: Iterator[np.ndarray] | None = None
        self._grip = G_OPEN

    # -- driving ----------------------------------------------------------------------------------------------
    def reset(self, obs: dict[str, np.ndarray]) -> None:
        self.obs = obs
        self._grip = G_OPEN
        self._gen = self.script()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The operator's command (7,): [dx dy dz droll dpitch dyaw] (m, rad) + gripper opening target (m)."""
        self.obs = obs
        try:
            return next(self._gen)
        except StopIteration:  # script finished: hands off the SpaceMouse
            self._gen = iter(())
            return self._idle()

    def script(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _idle(self) -> np.ndarray:
        return np.r_[np.zeros(6), self._grip]

    @property
    def ee(self) -> Vec:
        return self.obs["ee_pose"][:3]

    def _rot_cmd(self, yaw: float) -> Vec:
        R = kinematics.quat_to_mat(self.obs["ee_pose"][3:])
        err = kinematics.rotation_error(kinematics.euler_to_mat([0.0, 0.0, yaw]) @ DOWN, R)
        # Small rotations: axis-angle components ~ extrinsic roll/pitch/yaw deltas.
        # 0.1 rad/step cap keeps wrist_rotate under the safety layer's 0.15 rad/step limit.
        return np.clip(0.6 * err, -0.1, 0.1)

    def _pause(self) -> Iterator[np.ndarray]:
        st = self.style
        if self.rng.random() < st.pause_prob:
            for _ in range(int(self.rng.integers(1, st.pause_max + 1))):
                yield self._idle()

    def move_to(self, target: Target, yaw: float, grip: float | None = None, *, tol: float = 0.006,
                max_steps: int = 40, overshoot: bool = True) -> Iterator[np.ndarray]:
        """Drive the EE to `target` (3,) m (or a callable re-evaluated every step) with the gripper pointing down
        at `yaw`; ends within `tol` m (and 0.1 rad) or after max_steps. Overshoots past it first at low quality."""
        st = self.style
        if grip is not None:
            self._grip = float(grip)
        get = target if callable(target) else (lambda: target)
        aim_off = np.zeros(3)
        if overshoot and st.overshoot > 0:
            d = get() - self.ee
            n = np.linalg.norm(d[:2])
            if n > 0.03:  # only on real moves, along the horizontal direction of travel
                aim_off[:2] = d[:2] / n * self.rng.uniform(0.0, st.overshoot)
        for _ in range(max_steps):
            yield from self._pause()
            goal = get() + aim_off
            err = goal - self.ee
            rot = self._rot_cmd(yaw)
            if np.linalg.norm(err) < max(tol, 0.01 if aim_off.any() else 0.0) and np.linalg.norm(rot) < 0.06:
                if not aim_off.any():
                    return
                aim_off = np.zeros(3)  # overshot: now correct back onto the real waypoint
                continue
            dp = st.gain * err
            n = np.linalg.norm(dp)
            if n > st.speed:
                dp *= st.speed / n
            dp = dp + self.rng.normal(0.0, st.noise, 3)
            drot = rot + self.rng.normal(0.0, st.rot_noise, 3)
            yield np.r_[dp, drot, self._grip]

    def hold(self, grip: float, steps: int) -> Iterator[np.ndarray]:
        """Keep still for `steps` while the gripper moves to `grip` (m)."""
        self._grip = float(grip)
        for _ in range(steps):
            yield self._idle()

    def choose(self, name: str, options: tuple) -> object:
        value = options[int(self.rng.integers(len(options)))]
        self.mode[name] = value
        return value


# ------------------------------------------------------------------------------------------------------------------
class PickDemonstrator(Demonstrator):
    """Shared pick: approach above the object (via a point on its left or right), descend, close, lift.
    Retries the grasp (re-open, re-approach) when the object is not held after lifting."""

    side_offset = 0.06  # m, lateral via-point distance for the approach-side mode

    grasp_period = np.pi  # rad, symmetry of the grasp about vertical (object and parallel jaws together)

    def object_yaw(self) -> float:
        """The object's yaw (rad) that a grasp at the same yaw fits (fingers closing across it)."""
        return quat_yaw(self.obs["object_pose"][3:])

    def grasp_yaw(self) -> float:
        """The commanded grasp yaw (rad) before the operator's yaw error: the least-wrist-rotation branch."""
        return grasp_yaw_near(self.object_yaw(), self.grasp_period)

    def grasp_point(self) -> Vec:
        return self.obs["object_pose"][:3].copy()

    def pick(self, lift_z: float) -> Iterator[np.ndarray]:
        """Grasp and lift to lift_z (m); leaves `self.held_yaw` (rad), the wrist yaw the object was grasped at."""
        st = self.style
        side = self.choose("approach_side", ("left", "right"))
        for attempt in range(3):
            obj = self.grasp_point()
            yaw = self.held_yaw = self.grasp_yaw() + self.rng.normal(0.0, st.yaw_err)
            xy = obj[:2] + self.rng.normal(0.0, st.grasp_err, 2)
            if attempt == 0:
                # Human-like arc: come in from the chosen side before centring over the object.
                via = np.r_[xy + [0.0, self.side_offset if side == "left" else -self.side_offset], TRAVEL_Z]
                yield from self.move_to(via, yaw, G_OPEN, tol=0.02)
            yield from self.move_to(np.r_[xy, TRAVEL_Z - 0.03], yaw, G_OPEN, tol=0.008)
            z = max(obj[2], GRASP_Z) + self.rng.uniform(0.0, st.close_early)
            yield from self.move_to(np.r_[xy, z], yaw, G_OPEN, tol=0.005, overshoot=False)
            yield from self.hold(G_CLOSED, 4)
            yield from self.move_to(np.r_[xy, lift_z], yaw, G_CLOSED, tol=0.01, overshoot=False)
            if self.obs["object_pose"][2] > obj[2] + 0.02:  # it came up with the fingers
                return
            self.mode["regrasps"] = attempt + 1
            yield from self.hold(G_OPEN, 3)


class LiftCubeDemonstrator(PickDemonstrator):
    """lift_cube: pick the cube across the pair of faces nearest the HOME wrist yaw and lift it.

    No face choice: with the cube's yaw in [-pi/4, pi/4) the nearest pair is the one at the cube's own yaw, so the
    grasp yaw is continuous over the spawn range (a second face at +90 deg would need up to 135 deg of wrist rotation,
    or wrap and jump by pi at cube yaw 0)."""

    grasp_period = np.pi / 2  # cube faces every 90 deg

    def script(self):
        yield from self.pick(lift_z=0.12)
        yield from self.hold(G_CLOSED, 40)


class PutInBowlDemonstrator(PickDemonstrator):
    """put_in_bowl: pick the corn across its axis (near one end or the middle), carry it over the bowl, lower, open."""

    grasp_period = np.pi  # capsule: symmetric end to end

    def script(self):
        self._along = self.choose("grasp_point", (-0.012, 0.0, 0.012))  # m along the corn axis
        yield from self.pick(lift_z=TRAVEL_Z)
        st = self.style
        bowl = self.obs["bowl_pose"][:3]
        # Put the corn's centre (not the fingers) over the bowl centre: offset by where it was grasped.
        hold_off = self.obs["object_pose"][:2] - self.ee[:2]
        yaw = self.held_yaw  # keep the wrist as grasped (re-deriving it from the corn could pick the other branch)
        drop = bowl[:2] - hold_off + self.rng.normal(0.0, 0.5 * st.grasp_err, 2)
        yield from self.move_to(np.r_[drop, TRAVEL_Z], yaw, G_CLOSED, tol=0.008)
        yield from self.move_to(np.r_[drop, 0.065], yaw, G_CLOSED, tol=0.008, overshoot=False)
        yield from self.hold(G_OPEN, 4)
        yield from self.move_to(np.r_[drop, TRAVEL_Z], yaw, G_OPEN, tol=0.01, overshoot=False)
        yield from self.hold(G_OPEN, 40)

    # object_yaw: the corn's capsule axis is its local x; the fingers close along the EE y axis, so yaw = corn yaw.

    def grasp_point(self) -> Vec:
        # Along the commanded grasp yaw (not the corn's raw x axis, which flips with its yaw by pi): +0.012 is the
        # same end for every corn yaw on the branch.
        p = self.obs["object_pose"][:3].copy()
        a = self.grasp_yaw()
        p[:2] += self._along * np.array([np.cos(a), np.sin(a)])
        return p


class PushToTargetDemonstrator(Demonstrator):
    """push_to_target: gripper closed, go behind the puck (around its left or right), lower, push it onto the target
    while steering to keep the puck on the line to the target; back off and re-approach when it slips sideways."""

    PUCK_R = 0.025
    FINGER_R = 0.012  # m, half the closed fingers' width across the push direction (pads 2.4 cm wide)

    def _dir(self) -> Vec:
        d = self.obs["target_pos"][:2] - self.obs["object_pose"][:2]
        return d / max(np.linalg.norm(d), 1e-6)

    def _behind(self, gap: float) -> Vec:
        return self.obs["object_pose"][:2] - self._dir() * (self.PUCK_R + self.FINGER_R + gap)

    def script(self):
        st = self.style
        side = self.choose("approach_side", ("left", "right"))
        yaw_mode = self.choose("push_yaw", (70, 110))  # fingers slanted left or right of the push line
        for attempt in range(3):
            u = self._dir()
            # Closed parallel jaws push alike under a half turn: least wrist rotation among the two.
            yaw = (grasp_yaw_near(np.arctan2(u[1], u[0]) + np.deg2rad(yaw_mode), np.pi)
                   + self.rng.normal(0.0, st.yaw_err))
            pre = self._behind(0.025) + self.rng.normal(0.0, st.grasp_err, 2)
            if attempt == 0:
                perp = np.array([-u[1], u[0]]) * (1.0 if side == "left" else -1.0)
                via = self.obs["object_pose"][:2] + perp * 0.07 - u * 0.03
                yield from self.move_to(np.r_[via, 0.07], yaw, G_CLOSED, tol=0.02)
            yield from self.move_to(np.r_[pre, 0.06], yaw, G_CLOSED, tol=0.008)
            yield from self.move_to(np.r_[pre, GRASP_Z], yaw, G_CLOSED, tol=0.006, overshoot=False)
            for _ in range(60):
                yield from self._pause()
                u = self._dir()
                to_puck = self.obs["object_pose"][:2] - self.ee[:2]
                lateral = to_puck - u * (to_puck @ u)
                if np.linalg.norm(lateral) > 0.02 or to_puck @ u < 0:
                    break  # the puck slid off the fingers: re-approach
                # Aim a little into the puck along the push line; correct the lateral offset.
                goal = self._behind(-0.02)
                err = np.r_[goal - self.ee[:2], GRASP_Z - self.ee[2]]
                dp = st.gain * err
                n = np.linalg.norm(dp)
                cap = 0.6 * st.speed  # pushing is slower than free motion
                if n > cap:
                    dp *= cap / n
                dp = dp + self.rng.normal(0.0, st.noise, 3)
                yield np.r_[dp, self._rot_cmd(yaw) + self.rng.normal(0.0, st.rot_noise, 3), G_CLOSED]
            self.mode["reapproaches"] = attempt + 1
            yield from self.move_to(np.r_[self.ee[:2] - 0.02 * self._dir(), 0.06], yaw, G_CLOSED, tol=0.01,
                                    overshoot=False)
        yield from self.hold(G_CLOSED, 40)


DEMONSTRATORS: dict[str, type[Demonstrator]] = {
    "lift_cube": LiftCubeDemonstrator,
    "put_in_bowl": PutInBowlDemonstrator,
    "push_to_target": PushToTargetDemonstrator,
}


def make_demonstrator(task: str, rng: np.random.Generator, quality: float = 1.0) -> Demonstrator:
    """The scripted operator for `task`; ConfigError naming the tasks that have one."""
    if task not in DEMONSTRATORS:
        raise ConfigError(f"no scripted demonstrator for task {task!r}; available: {', '.join(sorted(DEMONSTRATORS))}")
    return DEMONSTRATORS[task](rng, quality)


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class DemoEpisode:
    """One demonstration attempt: per-step arrays (key -> (T, ...)) and its outcome."""

    data: dict[str, np.ndarray]
    success: bool
    length: int
    path_length: float
    """EE path length (m) over the episode."""
    mode: dict[str, object]


class _Operators(Actor):
    """Scripted operators as the episode loop's actor: `make(result)` gives each episode's Demonstrator, whose (7,)
    command is the action (float64, not clipped: the safety layer bounds what is sent). Collects each episode's
    DemoEpisode (`episodes`, in episode order) with the EE path length and the operator's modes."""

    def __init__(self, make: Callable[[EpisodeResult], Demonstrator]):
        self.make = make
        self.ops: dict[int, Demonstrator] = {}
        self.path: dict[int, float] = {}
        self.last_success: dict[int, bool] = {}
        self.episodes: dict[int, DemoEpisode] = {}

    def start(self, slot: int, result: EpisodeResult, obs: dict, env) -> None:
        self.ops[slot] = self.make(result)
        self.ops[slot].reset(obs)
        self.path[slot], self.last_success[slot] = 0.0, False

    def act(self, slots: list[int], obs: list[dict]) -> np.ndarray:
        return np.stack([np.asarray(self.ops[j].act(o), dtype=np.float64) for j, o in zip(slots, obs)])

    def observe(self, slot: int, step, env) -> None:
        self.path[slot] += float(np.linalg.norm(step.next_obs["ee_pose"][:3] - step.obs["ee_pose"][:3]))
        # The outcome is the last step's: with terminate_on_success off a success that did not last is none
        # (EpisodeResult.success holds any step's).
        self.last_success[slot] = bool(step.info["success"])

    def end(self, slot: int, result: EpisodeResult, env) -> None:
        self.episodes[result.episode] = DemoEpisode(
            data=result.episode_data() if result.rows else {}, success=self.last_success[slot], length=result.length,
            path_length=self.path[slot], mode=dict(self.ops.pop(slot).mode))


def _check_demo_task(task) -> None:
    if task.safety is None:
        raise ConfigError("run_demo_episode records what the arm would execute: build the task with its safety "
                          "layer on (safety=True)")
    if task.config.action_mode != "ee_delta":
        raise ConfigError(f"demonstrations drive the EE-delta path (the operator's delta -> IK from the measured "
                          f"joints -> the task's safety layer): build the task with action_mode='ee_delta'; got "
                          f"action_mode={task.config.action_mode!r}")


def _make_demo_task(name: str, **overrides):
    """The sim task demonstrations run on: action_mode "ee_delta" (refused as an override: the demos choose it)."""
    from postbc_core.sim.registry import make

    if "action_mode" in overrides:
        raise ConfigError(f"action_mode={overrides['action_mode']!r}: demonstrations drive the EE-delta path (the "
                          "operator's delta -> IK from the measured joints -> the safety layer); leave action_mode "
                          "unset")
    task = make(name, action_mode="ee_delta", **overrides)
    _check_demo_task(task)
    return task


def run_demo_episode(task, demonstrator: Demonstrator, seed: int) -> DemoEpisode:
    """Roll one episode of `demonstrator` on `task` (a Task in action_mode "ee_delta" with its safety layer on, reset
    here with `seed`) through the episode loop.

    Per step t the record (control.rows.step_row) holds the observation BEFORE the command, the operator's
    `cmd_ee_delta` (7,), the command actually sent `cmd_joint_pos` (7,) (the delta applied to the measured joints,
    then the task's safety layer, exactly like teleop through the driver), the resulting `reward` and `done`
    (= terminated by success; a time-limit truncation is not a terminal state).
    """
    _check_demo_task(task)
    actor = _Operators(lambda result: demonstrator)
    run_episodes([task], actor, [seed], record=True, clip_actions=False)
    return actor.episodes[0]


@dataclass
class DemoStats:
    """Outcome of `record_demos` (every attempt, kept or not)."""

    task: str
    attempts: int = 0
    successes: int = 0
    stored: int = 0
    """Episodes written to the store."""
    lengths: list[int] = field(default_factory=list)
    """Steps of each attempt."""
    successes_per_attempt: list[bool] = field(default_factory=list)
    path_lengths: list[float] = field(default_factory=list)
    """EE path length (m) of each attempt."""
    modes: list[dict] = field(default_factory=list)
    """Per attempt: the demonstrator's random choices (approach side, grasp yaw, ...)."""
    seconds: float = 0.0

    def add(self, ep: "DemoEpisode") -> None:
        """Counts one attempt."""
        self.attempts += 1
        self.successes += ep.success
        self.lengths.append(ep.length)
        self.successes_per_attempt.append(ep.success)
        self.path_lengths.append(ep.path_length)
        self.modes.append(ep.mode)

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else 0.0

    def summary(self) -> str:
        return (f"{self.task}: {self.successes}/{self.attempts} attempts succeeded (success rate "
                f"{self.success_rate:.0%}), {self.stored} episodes stored, mean length {self.mean_length:.1f} steps, "
                f"mean EE path {np.mean(self.path_lengths) if self.path_lengths else 0.0:.3f} m, "
                f"{self.seconds:.1f} s")

    def to_dict(self) -> dict:
        return {**asdict(self), "success_rate": self.success_rate, "mean_length": self.mean_length}


def record_demos(task: str, episodes: int, out: Path, *, seed: int = 0, quality: float = 1.0,
                 cameras: tuple[str, ...] = (), image_size: tuple[int, int] = (128, 128), keep_failures: bool = False,
                 max_attempts: int | None = None, operator: str = "scripted", overwrite: bool = False,
                 append: bool = False, codec: str | None = None, **task_overrides) -> DemoStats:
    """Record `episodes` successful scripted demonstrations of `task` into the episode store `out`.

    Attempt i resets the task with seed `seed + i` (the operator's random choices come from the same seed). Attempts
    continue until `episodes` successes or `max_attempts` (default 3 * episodes); failures are discarded unless
    `keep_failures` (then stored with success=False). An existing store is refused unless `overwrite` (replace it)
    or `append` (add episodes; keys must match). Keys per step: timestamp (sim seconds), joint_pos, joint_vel,
    joint_effort, gripper_pos, ee_pose, object_pose, object_pos, object_yaw_feat (symmetric objects), the task's
    extras, `<camera>_rgb`, cmd_ee_delta, cmd_joint_pos, reward, done (see run_demo_episode); train on the task's
    `recommended_obs_keys` (sim.registry). `codec`: the camera codec choice (data/codecs.py; None = raw for a new
    store, the store's own when appending). Returns (and logs) the DemoStats.
    """
    from postbc_core.data.codecs import parse_codecs
    from postbc_core.data.layout import STRING_META
    from postbc_core.data.paths import real_path
    from postbc_core.data.store import EpisodeStore
    from postbc_core.sim.registry import make

    if episodes < 1:
        raise ConfigError(f"episodes={episodes}: ask for at least 1")
    max_attempts = 3 * episodes if max_attempts is None else int(max_attempts)
    if max_attempts < episodes:
        raise ConfigError(f"max_attempts={max_attempts} is below episodes={episodes}; raise it or leave it unset")
    if overwrite and append:
        raise ConfigError("pass either overwrite or append, not both")
    parse_codecs(codec)  # an unknown codec is refused before the sim starts
    # Everything checkable is checked before the store is touched, so a typo never leaves an empty store behind.
    if not 0.0 <= quality <= 1.0:  # (also refuses NaN)
        raise ConfigError(f"quality={quality}: use a value in [0, 1] (1 = clean operator, 0 = sloppy)")
    if not isinstance(operator, str) or len(operator) > STRING_META["operator"]:
        raise ConfigError(f"operator {operator!r} must be a string of at most {STRING_META['operator']} characters")
    if task not in DEMONSTRATORS:
        make(task)  # unknown task: the registry's ConfigError lists the tasks
        raise ConfigError(f"no scripted demonstrator for task {task!r}; available: {', '.join(sorted(DEMONSTRATORS))}")
    out = Path(out)
    env = _make_demo_task(task, cameras=tuple(cameras), image_size=tuple(image_size), **task_overrides)
    if out.exists() and not (overwrite or append):
        raise StoreError(f"{out} already exists: pass overwrite=True / --overwrite (replace it) or append=True / "
                         "--append (add episodes), or pick a new path")
    created = not out.exists()
    store = (EpisodeStore.open(out, "a", codecs=codec) if append
             else EpisodeStore.create(out, overwrite=overwrite, codecs=codec))
    created = created or overwrite
    stats = DemoStats(task=task)
    t0 = time.time()
    try:
        while stats.successes < episodes and stats.attempts < max_attempts:
            i = stats.attempts
            start = time.time()
            demo = make_demonstrator(task, np.random.default_rng([seed, i]), quality)
            ep = run_demo_episode(env, demo, seed + i)
            stats.add(ep)
            if ep.success or keep_failures:
                store.add_episode(ep.data, success=ep.success, task=task, source="scripted", operator=operator,
                                  start_time=start, end_time=time.time())
                stats.stored += 1
            logger.debug("%s attempt %d (seed %d): %s in %d steps, mode %s", task, i, seed + i,
                         "success" if ep.success else "failure", ep.length, ep.mode)
    except BaseException:
        if created and store.n_episodes == 0:  # a store this call made and nothing was committed to: leave no trace
            store.close()
            shutil.rmtree(real_path(out), ignore_errors=True)  # through a symlink: the store it names
        raise
    finally:
        store.close()
        env.close()
    stats.seconds = time.time() - t0
    if stats.successes < episodes:
        logger.warning("%s: only %d of %d requested successful demos after %d attempts (max_attempts); raise "
                       "max_attempts or quality", task, stats.successes, episodes, stats.attempts)
    logger.info("%s -> %s", stats.summary(), out)
    return stats


def demo_success_rate(task: str, n: int, *, seed: int = 0, quality: float = 1.0, **task_overrides) -> DemoStats:
    """Run `n` state-only attempts without recording (for tests and benchmarks); DemoStats with stored = 0."""
    env = _make_demo_task(task, **task_overrides)
    actor = _Operators(lambda r: make_demonstrator(task, np.random.default_rng([seed, r.episode]), quality))
    stats = DemoStats(task=task)
    t0 = time.time()
    try:
        run_episodes([env], actor, [seed + i for i in range(n)], clip_actions=False)  # state only: no rows
    finally:
        env.close()
    for i in range(n):
        stats.add(actor.episodes[i])
    stats.seconds = time.time() - t0
    return stats


__all__ = ["DEMONSTRATORS", "HOME_YAW", "DemoEpisode", "DemoStats", "Demonstrator", "OperatorStyle",
           "demo_success_rate", "ee_yaw", "grasp_yaw_near", "make_demonstrator", "record_demos", "run_demo_episode"]
