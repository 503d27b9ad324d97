"""MuJoCo twin of the WidowX 250s: the robot (`WidowXSim`) and the task base class (`Task`, `TaskConfig`).

`WidowXSim` owns one MjModel/MjData: reset, one control period of physics per command, the robot observation of
robots/robot.py, and offscreen rendering. A `Task` adds objects (its own XML in sim/assets, which includes
scene.xml), seeded randomisation, success, rewards and the action modes. Units: metres, radians, seconds.
Shape legend: H, W image height/width.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from postbc_core.robots.actions import ACTION_MODES, EEDeltaExecutor, action_bounds, check_action, ee_delta_between
from postbc_core.robots.observation import robot_observation
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import JOINT_NAMES
from postbc_core.robots.safety import CONTROL_HZ, MAX_JOINT_SPEED, SafetyLimits, make_safety_layer

if sys.platform.startswith("linux"):
    # Headless offscreen rendering by default; must be decided before mujoco is imported. A user's choice wins.
    os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
SCENE_XML = ASSETS / "scene.xml"
PHYSICS_DT = 0.002  # s, 500 Hz; must match <option timestep> in wx250s.xml
EE_SITE = "ee_gripper_link"
CAMERAS = ("front", "wrist")
GRIPPER_ACTUATOR = "gripper"


def offscreen_size(xml_path: Path = ASSETS / "wx250s.xml") -> tuple[int, int]:
    """(height, width) px of the offscreen framebuffer a model declares (<visual><global offheight offwidth>), the
    largest image MuJoCo renders from it; read from the XML so the limit has one home."""
    import xml.etree.ElementTree as ET

    g = ET.parse(xml_path).getroot().find("./visual/global")
    return int(g.get("offheight")), int(g.get("offwidth"))


OFFSCREEN_SIZE = offscreen_size()
"""(480, 640): every task scene includes wx250s.xml, whose buffer holds a RealSense's 640x480 colour stream."""


_triton_loaded = False


def load_triton_before_gl() -> None:
    """Loads Triton, when installed, before the process's first OpenGL context (once per process).

    Why: torch's CUDA wheels ship Triton, whose libtriton.so carries its own LLVM, and Mesa's software OpenGL
    (llvmpipe, what EGL / OSMesa render with on a machine without a GPU driver) loads the system's libLLVM. When
    Triton loads second (torch imports it the first time an optimizer is built or a model compiled), the process
    segfaults; loaded first, both work and the images are bit-identical. Measured in the robot environment (Python
    3.10, torch 2.13+cu130): rendering the twin and then creating AdamW crashed `postbc finetune` on an image policy
    and the `postbc ros run finetune` graph (a sim camera node beside the manager). Costs ~0.25 s once; a machine
    without Triton (torch's CPU wheels) skips it."""
    global _triton_loaded
    if _triton_loaded:
        return
    _triton_loaded = True
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception as e:  # a broken Triton install: torch would fail on it too, later, with its own error
        logger.debug("triton not loaded before OpenGL: %s", e)


def check_render_size(height: int, width: int, buffer: tuple[int, int]) -> None:
    """ConfigError when height x width px exceeds the offscreen buffer (height, width) of the model."""
    if height > buffer[0] or width > buffer[1]:
        raise ConfigError(f"image size {height}x{width} (HxW) exceeds the twin's offscreen buffer of {buffer[0]}x"
                          f"{buffer[1]} (<global offheight=\"{buffer[0]}\" offwidth=\"{buffer[1]}\"/>, the task "
                          f"scenes' in sim/assets/wx250s.xml); render at most {buffer[0]}x{buffer[1]} or raise the "
                          "buffer in the model")


class WidowXSim:
    """One simulated wx250s. `step_control` runs `n_substeps = round(1 / (control_hz * 0.002))` physics steps."""

    def __init__(self, xml_path: str | Path = SCENE_XML, *, control_hz: float = CONTROL_HZ):
        if not 1.0 <= control_hz <= 50.0:
            raise ConfigError(f"control_hz={control_hz} is outside 1..50 Hz; the WidowX runs at 5-10 Hz")
        self.model = mujoco.MjModel.from_xml_path(str(xml_path))
        if abs(self.model.opt.timestep - PHYSICS_DT) > 1e-12:
            raise ConfigError(f"{xml_path}: timestep {self.model.opt.timestep} != {PHYSICS_DT}; fix the <option>")
        check_model_limits(self.model, xml_path)
        self.data = mujoco.MjData(self.model)
        self.control_hz = float(control_hz)
        self.n_substeps = max(1, round(1.0 / (control_hz * PHYSICS_DT)))
        m = self.model
        joints = [m.joint(n) for n in JOINT_NAMES]
        self._qadr = np.array([j.qposadr[0] for j in joints])
        self._dadr = np.array([j.dofadr[0] for j in joints])
        self._left_q = m.joint("left_finger").qposadr[0]
        self._right_q = m.joint("right_finger").qposadr[0]
        self._act = np.array([m.actuator(n).id for n in JOINT_NAMES])
        self._grip_act = m.actuator(GRIPPER_ACTUATOR).id
        self._ctrl_lo = m.actuator_ctrlrange[:, 0].copy()
        self._ctrl_hi = m.actuator_ctrlrange[:, 1].copy()
        self._site = m.site(EE_SITE).id
        self._base = m.body("base_link").id
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.reset()

    # -- state ------------------------------------------------------------------------------------------------
    def reset(self, qpos=None, gripper: float | None = None) -> dict[str, np.ndarray]:
        """Zero the physics state, put the arm at qpos (6,) rad (default HOME_QPOS) with the gripper open."""
        q = kinematics.HOME_QPOS if qpos is None else self._check_target(qpos, "reset qpos")
        g = float(kinematics.GRIPPER_LIMITS[1] if gripper is None else gripper)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qadr] = q
        self.data.qpos[self._left_q], self.data.qpos[self._right_q] = g, -g
        self.data.ctrl[self._act] = q
        self.data.ctrl[self._grip_act] = g
        mujoco.mj_forward(self.model, self.data)
        return self.observation()

    def _check_target(self, value, what: str) -> np.ndarray:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
        if a.shape != (6,):
            raise PostBCError(f"{what} must have shape (6,), got {np.shape(value)}")
        if not np.all(np.isfinite(a)):
            raise PostBCError(f"{what} contains non-finite values {a}; the safety layer must reject these upstream")
        return a

    def step_control(self, joint_target, gripper_target: float) -> None:
        """Hold the position targets (6,) rad and gripper opening (m) for one control period (1 / control_hz s)."""
        self.set_targets(joint_target, gripper_target)
        self.step_physics(self.n_substeps)

    def set_targets(self, joint_target, gripper_target: float) -> None:
        """Set the actuators' position targets (6,) rad and gripper opening (m); they hold until set again.

        For callers that step physics in their own increments (the ROS driver steps 1 / state_hz s at a time)."""
        q = self._check_target(joint_target, "joint_target")
        g = float(gripper_target)
        if not np.isfinite(g):
            raise PostBCError(f"gripper_target={gripper_target} is not finite")
        ctrl = np.empty(self.model.nu)
        ctrl[self._act], ctrl[self._grip_act] = q, g
        clipped = np.clip(ctrl, self._ctrl_lo, self._ctrl_hi)
        if np.any(np.abs(clipped - ctrl) > 1e-9):
            # MuJoCo would clamp silently; say so (the safety layer normally clamps before this point).
            logger.warning("command %s outside the actuator ranges, clamped to %s", np.round(ctrl, 4),
                           np.round(clipped, 4))
        self.data.ctrl[:] = clipped

    def step_physics(self, nstep: int = 1) -> None:
        """Advance physics by `nstep` steps of PHYSICS_DT (0.002 s) with the current actuator targets."""
        mujoco.mj_step(self.model, self.data, nstep=int(nstep))

    @property
    def time(self) -> float:
        return float(self.data.time)

    def joint_pos(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def gripper_pos(self) -> float:
        return float(self.data.qpos[self._left_q])

    def ee_pose(self) -> np.ndarray:
        """EE site pose (7,) [x y z, qw qx qy qz] in the base_link frame."""
        Rb = self.data.xmat[self._base].reshape(3, 3)
        pb = self.data.xpos[self._base]
        p = Rb.T @ (self.data.site_xpos[self._site] - pb)
        R = Rb.T @ self.data.site_xmat[self._site].reshape(3, 3)
        return np.concatenate([p, kinematics.mat_to_quat(R)])

    def observation(self) -> dict[str, np.ndarray]:
        """Robot keys of robots/robot.py: joint_pos/vel/effort (6,), gripper_pos (1,), ee_pose (7,), timestamp ()."""
        d = self.data
        # Copies (fancy indexing): the arrays do not change with the physics. ee_pose is the EE site's, not FK.
        return robot_observation(d.qpos[self._qadr], d.qvel[self._dadr], d.actuator_force[self._act],
                                 d.qpos[self._left_q], d.time, ee_pose=self.ee_pose())

    # -- objects ----------------------------------------------------------------------------------------------
    def scene_bodies(self, first: str | None = None) -> list[str]:
        """The bodies that place the scene beyond the arm: free-joint bodies, then mocap bodies (e.g. a target
        marker), each in MJCF (body id) order, with `first` (the task object) moved to the front. The ROS sim driver
        publishes their poses (/postbc/sim/object_poses) and the sim camera node sets them to mirror the driver."""
        return model_scene_bodies(self.model, first)

    def set_body_pose(self, body: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        """Place a scene body (free joint: qpos, velocity zeroed; mocap: mocap_pos/quat) and run mj_forward."""
        b = self.model.body(body)
        if self.model.body_mocapid[b.id] >= 0:
            self.data.mocap_pos[b.mocapid[0]] = pos
            self.data.mocap_quat[b.mocapid[0]] = np.asarray(quat) / np.linalg.norm(quat)
            mujoco.mj_forward(self.model, self.data)
        else:
            self.set_free_body_pose(body, pos, quat)

    def free_joint_qadr(self, body: str) -> int:
        b = self.model.body(body)
        if self.model.body_jntnum[b.id] != 1 or self.model.jnt_type[self.model.body_jntadr[b.id]] != 0:
            raise PostBCError(f"body {body!r} has no free joint")
        return int(self.model.jnt_qposadr[self.model.body_jntadr[b.id]])

    def body_pose(self, body: str) -> np.ndarray:
        """World pose (7,) [x y z, qw qx qy qz] of a body (after the last mj_step/mj_forward)."""
        b = self.model.body(body).id
        return np.concatenate([self.data.xpos[b], self.data.xquat[b]])

    def set_free_body_pose(self, body: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        adr = self.free_joint_qadr(body)
        self.data.qpos[adr:adr + 3] = pos
        self.data.qpos[adr + 3:adr + 7] = np.asarray(quat) / np.linalg.norm(quat)
        dadr = int(self.model.jnt_dofadr[self.model.body_jntadr[self.model.body(body).id]])
        self.data.qvel[dadr:dadr + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def in_contact(self, geoms_a: set[int], geoms_b: set[int]) -> bool:
        """True if any active contact pairs a geom of geoms_a with one of geoms_b."""
        for c in self.data.contact[: self.data.ncon]:
            g1, g2 = int(c.geom1), int(c.geom2)
            if (g1 in geoms_a and g2 in geoms_b) or (g2 in geoms_a and g1 in geoms_b):
                return True
        return False

    def body_geoms(self, body: str) -> set[int]:
        b = self.model.body(body).id
        return {i for i in range(self.model.ngeom) if self.model.geom_bodyid[i] == b}

    # -- rendering --------------------------------------------------------------------------------------------
    def render(self, camera: str, width: int, height: int, depth: bool = False):
        """RGB (H, W, 3) uint8 and, if depth, depth (H, W) uint16 mm (0 = no return); else (rgb, None)."""
        if camera not in CAMERAS and mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ConfigError(f"unknown camera {camera!r}; available: {CAMERAS}")
        key = (int(width), int(height))
        r = self._renderers.get(key)
        if r is None:
            check_render_size(key[1], key[0], (int(self.model.vis.global_.offheight),
                                               int(self.model.vis.global_.offwidth)))
            load_triton_before_gl()
            r = self._renderers[key] = mujoco.Renderer(self.model, height=key[1], width=key[0])
        r.update_scene(self.data, camera=camera)
        rgb = r.render().copy()
        dep = None
        if depth:
            r.enable_depth_rendering()
            try:
                metres = r.render()
            finally:
                r.disable_depth_rendering()
            # 0 marks "no return" as a RealSense does: the far clipping plane (sky) and anything beyond 65.535 m.
            far = self.model.vis.map.zfar * self.model.stat.extent
            mm = np.round(metres * 1000.0)
            dep = np.where((mm > 65535) | (metres >= 0.999 * far), 0, mm).astype(np.uint16)
        return rgb, dep

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def check_model_limits(model: mujoco.MjModel, source: str | Path = "the model") -> None:
    """ConfigError unless the MJCF's arm joint ranges and position-actuator ctrlranges equal kinematics.JOINT_LIMITS
    (rad) and the finger slides and gripper actuator kinematics.GRIPPER_LIMITS (m), naming the joint and both values.

    The limits are declared once, in robots/kinematics.py (pure numpy: the real arm, the safety layer and IK use them
    without mujoco); the MJCF keeps its own copy so it stays a complete model for MuJoCo's tools, and this check at
    every load stops the two from drifting apart."""
    g_lo, g_hi = (float(v) for v in kinematics.GRIPPER_LIMITS)
    want = [(f"joint {n!r} range", model.joint(n).range, kinematics.JOINT_LIMITS[i]) for i, n in enumerate(JOINT_NAMES)]
    want += [(f"actuator {n!r} ctrlrange", model.actuator(n).ctrlrange, kinematics.JOINT_LIMITS[i])
             for i, n in enumerate(JOINT_NAMES)]
    want += [("joint 'left_finger' range", model.joint("left_finger").range, (g_lo, g_hi)),
             ("joint 'right_finger' range", model.joint("right_finger").range, (-g_hi, -g_lo)),
             (f"actuator {GRIPPER_ACTUATOR!r} ctrlrange", model.actuator(GRIPPER_ACTUATOR).ctrlrange, (g_lo, g_hi))]
    for what, got, expected in want:
        if not np.allclose(got, expected, rtol=0.0, atol=1e-9):
            raise ConfigError(f"{source}: {what} is {np.asarray(got).tolist()} but robots/kinematics.py declares "
                              f"{np.asarray(expected, float).tolist()}; the limits live in kinematics: copy them into "
                              "the MJCF (sim/assets/wx250s.xml)")


def model_scene_bodies(model: mujoco.MjModel, first: str | None = None) -> list[str]:
    """WidowXSim.scene_bodies of `model` (no MjData needed): free-joint bodies, then mocap bodies, in body id order,
    `first` moved to the front (PostBCError when it is neither free nor mocap)."""
    m = model
    free = [m.body(b).name for b in range(m.nbody)
            if m.body_jntnum[b] == 1 and m.jnt_type[m.body_jntadr[b]] == mujoco.mjtJoint.mjJNT_FREE]
    mocap = [m.body(b).name for b in range(m.nbody) if m.body_mocapid[b] >= 0]
    names = free + mocap
    if first is not None:
        if first not in names:
            raise PostBCError(f"body {first!r} is neither free nor mocap; scene bodies: {names}")
        names = [first] + [n for n in names if n != first]
    return names


# ------------------------------------------------------------------------------------------------------------------
REWARD_TYPES = ("sparse", "dense")


@dataclass
class TaskConfig:
    """Settings shared by every sim task (task files subclass it to add their own)."""

    control_hz: float = CONTROL_HZ
    """Control rate (Hz), 5..10 like the real WidowX; physics runs round(1 / (hz * 0.002)) steps per action."""
    image_size: tuple[int, int] = (128, 128)
    """Rendered (height, width) in pixels, 8 px up to the offscreen buffer (OFFSCREEN_SIZE: 480x640, what a RealSense
    publishes)."""
    cameras: tuple[str, ...] = ()
    """Cameras rendered into the observation as `<name>_rgb`: any of ("front", "wrist"); () = state only."""
    depth: bool = False
    """Also render `<name>_depth` (H, W) uint16 mm for each camera."""
    reward_type: str = "sparse"
    """"sparse": 1 on success else 0; "dense": shaped reward in [0, 1] (1 on success)."""
    max_steps: int = 80
    """Episode time limit in control steps (truncation)."""
    action_mode: str = "joint"
    """"joint": 6 absolute joint targets + gripper (m); "ee_delta": [dx dy dz droll dpitch dyaw] + gripper (m)."""
    terminate_on_success: bool = True
    """End the episode (terminated=True) as soon as success() holds."""
    safety: bool = True
    """Pass every command through the robot's SafetyLayer (joint limits, at most max_joint_speed / control_hz rad per
    joint per step, the EE workspace box), as robot_driver does on the arm, so a rollout in the twin executes what the
    arm would. Off only to re-execute commands that already passed it (`postbc replay`)."""
    max_joint_speed: float = MAX_JOINT_SPEED
    """rad/s, robot_driver's max_joint_speed (the safety layer's step limit is max_joint_speed / control_hz)."""

    def __post_init__(self):
        if not 5.0 <= self.control_hz <= 10.0:
            raise ConfigError(f"control_hz={self.control_hz}: use 5..10 Hz (the WidowX's control rates)")
        self.image_size = tuple(int(v) for v in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(f"image_size={self.image_size}: give (height, width), each at least 8 px")
        check_render_size(*self.image_size, OFFSCREEN_SIZE)
        self.cameras = tuple(self.cameras)
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad:
            raise ConfigError(f"cameras={self.cameras}: unknown {bad}; choose from {CAMERAS}")
        if self.reward_type not in REWARD_TYPES:
            raise ConfigError(f"reward_type={self.reward_type!r}: choose one of {REWARD_TYPES}")
        if self.action_mode not in ACTION_MODES:
            raise ConfigError(f"action_mode={self.action_mode!r}: choose one of {ACTION_MODES}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ConfigError(f"max_steps={self.max_steps}: must be a positive integer")
        if not self.max_joint_speed > 0:
            raise ConfigError(f"max_joint_speed={self.max_joint_speed} rad/s must be > 0 (the driver's default: "
                              f"{MAX_JOINT_SPEED})")


@dataclass(frozen=True)
class RandomizedQuantity:
    """One quantity a task's `_randomize` draws per episode and the observation keys that carry it (`Task.
    randomized_keys`): a policy sees it when ANY one of `keys` is among its observation keys (relative keys such as
    ee_to_object count: the robot state gives the other end)."""

    what: str
    """Human-readable name, e.g. "cube position (x, y)"."""
    keys: tuple[str, ...]
    """Alternative observation keys, any one of which carries the quantity."""
    body: str
    """The scene body it belongs to (WidowXSim.scene_bodies)."""
    dof: str
    """"pos" (horizontal position) or "yaw" (rotation about vertical)."""
    needed: bool = True
    """False for randomisation the task does not depend on (e.g. the yaw of a round bowl): documented, not checked."""


def object_yaw_feature(yaw: float, symmetry: int) -> np.ndarray:
    """Canonical yaw input (2,) [sin(n yaw), cos(n yaw)] for an object that looks the same every 2 pi / n rad about
    vertical (n = `symmetry`: 4 for a cube, 2 for a capsule): equal for every equivalent yaw, continuous in yaw."""
    if not (isinstance(symmetry, int) and symmetry >= 1):
        raise ConfigError(f"symmetry={symmetry!r}: give the object's n-fold symmetry about vertical as an int >= 1")
    return np.array([np.sin(symmetry * yaw), np.cos(symmetry * yaw)])


class Task:
    """A task on the WidowX twin. Subclasses set `name`, `xml`, `config_cls`, `object_body`, `object_yaw_symmetry`,
    `recommended_obs_keys`, `randomized_keys` and implement `_randomize`, `success`, `dense_reward` (and optionally
    `_scene_extras`, `_extras`, `object_yaw_of`).

    Observation keys every task provides (besides the robot keys of WidowXSim.observation): `object_pose` (7,)
    [x y z m, qw qx qy qz] of the task object (world), `object_pos` (3,) m (its position alone: the quaternion's
    near-constant tilt components make a poor policy input), and, for objects with a yaw symmetry,
    `object_yaw_feat` (2,) = object_yaw_feature(object_yaw(), object_yaw_symmetry): a canonical orientation
    input (a cube's raw yaw quaternion differs between yaws that look identical). `recommended_obs_keys` is the one
    place that says which state keys to train on; `randomized_keys` lists what reset randomizes and which keys carry
    it (registry.missing_randomized_keys checks a key set against it).

    Every key computed from the scene bodies' poses alone (the ones above and the task's `_scene_extras`, e.g.
    bowl_pos, target_pos) comes from the classmethod `scene_observation(poses)`: `observation()` calls it on the
    sim's body poses and the ROS graph on the poses of /postbc/sim/object_poses (registry.task_state_keys), so the
    twin and a ROS node compute them with the same code. `_extras` holds the keys that need more than the poses
    (e.g. ee_to_object, from the EE site)."""

    name: str = ""
    xml: str = ""
    config_cls: type[TaskConfig] = TaskConfig
    object_body: str = ""
    object_yaw_symmetry: int = 0
    """n-fold symmetry of the task object about vertical (4 cube, 2 capsule); 0 = round or yaw not randomized: no
    object_yaw_feat key."""
    recommended_obs_keys: tuple[str, ...] = ()
    """State observation keys to train a policy on (`--obs-keys`): they cover every needed randomized quantity."""
    randomized_keys: tuple[RandomizedQuantity, ...] = ()
    """Everything `_randomize` draws, each with the observation keys that carry it (any one suffices)."""

    def __init__(self, config: TaskConfig | None = None, *, limits: SafetyLimits | None = None, **overrides):
        """`overrides`: TaskConfig fields (or a whole `config`). `limits`: the safety layer's limits (joint margin,
        workspace box; default the driver's defaults at max_joint_speed / control_hz): robot_driver passes its own
        (their max_joint_step must be max_joint_speed / control_hz: `SafetyLimits.for_rate`)."""
        if config is None:
            names = {f.name for f in fields(self.config_cls)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ConfigError(f"{self.name}: unknown setting(s) {unknown}; available: {sorted(names)}")
            config = self.config_cls(**overrides)
        elif overrides:
            raise ConfigError(f"{self.name}: pass either a config or overrides, not both ({sorted(overrides)})")
        self.config = config
        self.sim = WidowXSim(ASSETS / self.xml, control_hz=config.control_hz)
        self.np_random = np.random.default_rng()
        self.steps = 0
        self._left_pad = {self.sim.model.geom("left_pad").id}
        self._right_pad = {self.sim.model.geom("right_pad").id}
        self._obj_geoms = self.sim.body_geoms(self.object_body)
        self._scene_bodies = self.sim.scene_bodies(first=self.object_body)
        # The task's one safety layer: step() filters through it, and a SimRobot and the scripted demonstrators
        # driving this task use it too. Alterations are counted in safety.stats and reported per episode
        # (info["safety_altered"]), not logged per step: evaluation and finetuning summarise them.
        # The chain of EE-delta targets (robots.actions: what a cmd_ee_delta is relative to); reset every episode.
        self.ee_executor = EEDeltaExecutor()
        self.safety = (make_safety_layer(config.control_hz, config.max_joint_speed, limits, log_level=logging.DEBUG)
                       if config.safety else None)

    # -- actions ----------------------------------------------------------------------------------------------
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the (7,) action for the configured action mode (robots.actions.action_bounds)."""
        return action_bounds(self.config.action_mode)

    def action_to_joint_target(self, action) -> tuple[np.ndarray, float]:
        """This control step's action (7,) -> (joint targets (6,) rad, gripper target m) for the configured action
        mode: EE deltas chain from the previous step's target (robots.actions.EEDeltaExecutor, the one conversion
        the ROS policy node, teleop and the finetune manager use; cut back to the measured joints at reset and when
        the arm lags the target by more than the chain's bounds). Advances the chain: call once per step."""
        a = check_action(action, f"{self.name}: action")
        return self.ee_executor.step(a, self.config.action_mode, self.sim.joint_pos())

    # -- episode ----------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.sim.reset()
        self._randomize(self.np_random)
        self.steps = 0
        self.ee_executor.reset()
        return self.observation()

    def step(self, action):
        """One control step: returns (obs, reward, terminated, truncated, info)."""
        ref = self.ee_executor.reference(self.sim.joint_pos()) if self.config.action_mode == "joint" else None
        q, g = self.action_to_joint_target(action)
        # The step's command as a chained EE delta (data.layout.EE_DELTA_CONVENTION), what a row stores as
        # cmd_ee_delta: the action itself, or for a joint action the delta from the chain's reference to its target.
        ee = (np.asarray(action, np.float64).reshape(-1)[:6].copy() if ref is None else ee_delta_between(ref, q))
        altered = False
        if self.safety is not None:
            sent = self.safety.filter(q, g, self.sim.joint_pos())
            q, g, altered = sent.joint_pos, sent.gripper, sent.clamped
        self.sim.step_control(q, g)
        self.steps += 1
        ok = self.success()
        reward = 1.0 if ok else (self.dense_reward() if self.config.reward_type == "dense" else 0.0)
        terminated = ok and self.config.terminate_on_success
        truncated = self.steps >= self.config.max_steps and not terminated
        # joint_target / gripper_target: the command executed (after the safety layer; the demos' cmd_joint_pos);
        # ee_delta (6,): the command as a chained EE delta before the safety layer (the rows' cmd_ee_delta)
        info = {"success": ok, "is_success": ok, "joint_target": q, "gripper_target": g, "safety_altered": altered,
                "ee_delta": ee}
        return self.observation(), float(reward), bool(terminated), bool(truncated), info

    def observation(self, render: bool = True) -> dict[str, np.ndarray]:
        obs = self.sim.observation()
        obs.update(self.scene_observation(self.body_poses()))
        obs.update(self._extras())
        obs["success"] = np.array(self.success())
        if render:
            h, w = self.config.image_size
            for cam in self.config.cameras:
                rgb, dep = self.sim.render(cam, w, h, depth=self.config.depth)
                obs[f"{cam}_rgb"] = rgb
                if dep is not None:
                    obs[f"{cam}_depth"] = dep
        return obs

    def reward(self) -> float:
        if self.success():
            return 1.0
        return self.dense_reward() if self.config.reward_type == "dense" else 0.0

    def grasped(self) -> bool:
        """Both finger pads touch the task object."""
        s = self.sim
        return s.in_contact(self._left_pad, self._obj_geoms) and s.in_contact(self._right_pad, self._obj_geoms)

    def ee_pos_world(self) -> np.ndarray:
        return self.sim.data.site_xpos[self.sim._site].copy()

    def close(self) -> None:
        self.sim.close()

    # -- per task ---------------------------------------------------------------------------------------------
    def _randomize(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def success(self) -> bool:
        raise NotImplementedError

    def dense_reward(self) -> float:
        raise NotImplementedError

    def _extras(self) -> dict[str, np.ndarray]:
        """Observation keys that need more than the scene bodies' poses (e.g. the EE site): sim only."""
        return {}

    @classmethod
    def _scene_extras(cls, poses: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The task's own observation keys computed from the scene bodies' world poses alone (see
        scene_observation); `poses` holds float64 (7,) arrays for every scene body."""
        return {}

    @classmethod
    def object_yaw_of(cls, pose) -> float:
        """Yaw (rad) about vertical of the task object at world pose (7,) [x y z, qw qx qy qz]: the heading of its
        local x axis (override for objects whose x axis can tip vertical)."""
        return quat_yaw(np.asarray(pose, np.float64)[3:])

    def object_yaw(self) -> float:
        """Yaw (rad) of the task object about vertical now (object_yaw_of its current pose)."""
        return self.object_yaw_of(self.sim.body_pose(self.object_body))

    # -- keys from the scene poses (shared with the ROS graph) --------------------------------------------------
    def body_poses(self) -> dict[str, np.ndarray]:
        """{body: world pose (7,) [x y z m, qw qx qy qz]} of every scene body (WidowXSim.scene_bodies), what the ROS
        sim driver publishes on /postbc/sim/object_poses."""
        return {b: self.sim.body_pose(b) for b in self._scene_bodies}

    @classmethod
    def scene_observation(cls, poses: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation keys computed from the scene bodies' world poses alone, `poses` {body: (7,) [x y z m,
        qw qx qy qz]} (every scene body of the task, as `body_poses()` gives them): object_pose (7,), object_pos (3,)
        m, object_yaw_feat (2,) (objects with a yaw symmetry) and the task's `_scene_extras` (e.g. bowl_pos (3,),
        target_pos (3,)), float64. PostBCError naming the missing bodies when `poses` lacks one."""
        missing = [b for b in cls.scene_body_names() if b not in poses]
        if missing:
            raise PostBCError(f"{cls.name}: no pose for scene bodies {missing} (given: {sorted(poses)}); give the "
                              f"world pose (7,) of every scene body {list(cls.scene_body_names())}")
        poses = {b: np.asarray(p, np.float64).reshape(7) for b, p in poses.items()}
        pose = poses[cls.object_body]
        obs = {"object_pose": pose.copy(), "object_pos": pose[:3].copy()}
        if cls.object_yaw_symmetry:
            obs["object_yaw_feat"] = object_yaw_feature(cls.object_yaw_of(pose), cls.object_yaw_symmetry)
        obs.update(cls._scene_extras(poses))
        return obs

    @classmethod
    def scene_body_names(cls) -> tuple[str, ...]:
        """The task's scene bodies in the order /postbc/sim/object_poses publishes them: WidowXSim.scene_bodies with
        the task object first (read from the task's MJCF once, no MjData)."""
        key = (cls.xml, cls.object_body)
        if key not in _SCENE_BODIES:
            model = mujoco.MjModel.from_xml_path(str(ASSETS / cls.xml))
            _SCENE_BODIES[key] = tuple(model_scene_bodies(model, first=cls.object_body))
        return _SCENE_BODIES[key]


_SCENE_BODIES: dict[tuple[str, str], tuple[str, ...]] = {}  # (task XML, task object) -> Task.scene_body_names


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion [w x y z] of a rotation by yaw (rad) about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(quat) -> float:
    """Yaw (rad) about world z of a [w x y z] quaternion (the heading of its x axis in the horizontal plane)."""
    w, x, y, z = np.asarray(quat, dtype=np.float64)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
