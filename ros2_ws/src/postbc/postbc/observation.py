"""The robot's observation assembled from topics, the same keys the episode store and the sim use.

`ObservationSource(node, obs_shapes, cameras, task)` subscribes what a policy's keys need and `step()` returns one
control step's observation: joint_pos, joint_vel, joint_effort, gripper_pos (from /joint_states), ee_pose (FK of
joint_pos): the robot keys of postbc_core.robots.observation.robot_observation; the sim's privileged object state
from /postbc/sim/object_poses and <camera>_rgb (from /<camera>/image_raw, resized to the policy's shape with
robots.observation.resize_image, which refuses a frame that is not RGB or not at the policy's aspect ratio: logged,
and named by `missing()`), in the dtypes the store keeps (control.spec.store_dtype). `frames()` counts, per camera,
the frames received and what became of them: used by an observation, dropped (replaced before any observation took
it), refused, or pending (the latest, not taken yet). Object state: with
`task` (sim backend: the driver's task) every key the task computes from its scene poses,
postbc_core.sim.registry.task_state_keys (object_pose, object_pos, object_yaw_feat, bowl_pos, target_pos, ...: the
task's `recommended_obs_keys` that `postbc pipeline` trains on); without, object_pose alone (poses[0]). Used by the
policy node and the finetune manager, so both see exactly what `postbc eval` feeds a policy in the sim.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseArray
from postbc_core.control.spec import store_dtype
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots.observation import resize_image, robot_observation
from sensor_msgs.msg import Image, JointState

from postbc import topics
from postbc.conversions import (
    ConversionError,
    image_array,
    joint_state_arrays,
    pose_array_arrays,
)

STATE_KEYS = ("joint_pos", "joint_vel", "joint_effort", "gripper_pos", "ee_pose")  # from /joint_states


def pose_key_shapes(task: str = "") -> dict[str, tuple[int, ...]]:
    """{key: shape} of the keys computed from /postbc/sim/object_poses: with a sim `task`, its state keys
    (registry.task_state_shapes, e.g. lift_cube: object_pose (7,), object_pos (3,), object_yaw_feat (2,),
    object_height (1,)); without, object_pose (7,) alone. ConfigError when `task` is not a sim task."""
    if not task:
        return {"object_pose": (7,)}
    from postbc_core.sim import registry  # mujoco loads here, only for a sim task

    if task not in registry.TASKS:
        raise ConfigError(f"task={task!r} is not a sim task; available: {', '.join(registry.list_tasks())}. Give "
                          "the sim driver's task, or \"\" off the sim (object_pose only)")
    return registry.task_state_shapes(task)


def cameras_for(obs_keys: Sequence[str], cameras: Sequence[str] = (), task: str = "") -> list[str]:
    """The cameras to subscribe for `obs_keys` (`cameras` empty: those the `<camera>_rgb` keys name); ConfigError
    naming every key that no topic provides (object keys: pose_key_shapes(task))."""
    wanted = [k[: -len("_rgb")] for k in obs_keys if k.endswith("_rgb")]
    cams = list(cameras) or wanted
    available = [*STATE_KEYS, *pose_key_shapes(task), *(f"{c}_rgb" for c in cams)]
    missing = [k for k in obs_keys if k not in available]
    if missing:
        poses = (f"{topics.OBJECT_POSES} via task {task!r}" if task else
                 f"{topics.OBJECT_POSES}: object_pose only without a sim task; on the sim backend set the node's "
                 "`task` to the driver's task to also get that task's state keys (object_pos, object_yaw_feat, "
                 "bowl_pos, target_pos, ...)")
        raise ConfigError(f"the checkpoint needs observation keys {missing} that no topic provides; available: "
                          f"{available} (/joint_states, {poses}, /<camera>/image_raw for cameras {cams}); set "
                          "`cameras` / `task` or use a checkpoint trained on these keys")
    return [c for c in cams if f"{c}_rgb" in obs_keys]


def object_keys(poses: np.ndarray, task: str = "") -> dict[str, np.ndarray]:
    """The object keys of one /postbc/sim/object_poses message, poses (N, 7) float64 in the driver's order: with a
    sim `task` registry.task_state_keys (the task's own observation code; PostBCError when N does not match its
    scene bodies), else {"object_pose": poses[0]}. Shared by the policy / finetune observation and the recorder."""
    if not task:
        return {"object_pose": np.asarray(poses[0])}
    from postbc_core.sim.registry import task_state_keys

    return task_state_keys(task, poses)


@dataclass(frozen=True)
class Step:
    """One observation: obs {key: per-step array}, stamp (s, the /joint_states header) and the measured joints."""

    obs: dict[str, np.ndarray]
    stamp: float
    joint_pos: np.ndarray


class ObservationSource:
    """Latest messages of every stream a policy needs; `step()` snapshots them (thread-safe).

    `task`: the sim task whose scene /postbc/sim/object_poses carries (the sim driver's `task`), so the task's state
    keys are available; "" off the sim (object_pose only)."""

    def __init__(self, node, obs_shapes: Mapping[str, tuple[int, ...]], cameras: Sequence[str] = (), task: str = ""):
        self.node = node
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        self.task = task
        self.cameras = cameras_for(list(self.obs_shapes), cameras, task)
        shapes = pose_key_shapes(task)
        self.pose_keys = [k for k in self.obs_shapes if k in shapes]
        bad = [f"{k} {self.obs_shapes[k]} (given: {shapes[k]})" for k in self.pose_keys
               if self.obs_shapes[k] != shapes[k]]
        if bad:
            raise ConfigError(f"the checkpoint's keys {', '.join(bad)} do not match what {topics.OBJECT_POSES} gives "
                              f"(task {task!r}); use a checkpoint trained on the driver's task")
        self._lock = threading.Lock()
        self._js: JointState | None = None
        self._object: PoseArray | None = None
        self._images: dict[str, np.ndarray] = {}
        self._refused: dict[str, str] = {}  # camera -> why its latest frame could not become the policy's image
        # Frame accounting (frames()): plain counters under the lock, so a camera-rate callback pays two increments.
        # _seq numbers a camera's accepted frames; a step that returns an observation marks the frame it took as used
        # once (_taken: the newest seq so taken), so "dropped" = accepted - used - pending needs no per-frame state.
        self._received = dict.fromkeys(self.cameras, 0)
        self._rejected = dict.fromkeys(self.cameras, 0)  # not convertible or refused by resize_image's check
        self._seq = dict.fromkeys(self.cameras, 0)
        self._img_seq: dict[str, int] = {}  # camera -> seq of the frame in _images
        self._taken = dict.fromkeys(self.cameras, 0)
        self._used = dict.fromkeys(self.cameras, 0)
        node.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, topics.STATE_QOS)
        if self.pose_keys:
            node.create_subscription(PoseArray, topics.OBJECT_POSES, self._on_objects, topics.STATE_QOS)
        for cam in self.cameras:
            node.create_subscription(Image, topics.image_topic(cam), lambda m, c=cam: self._on_image(c, m),
                                     topics.SENSOR_QOS)

    # /joint_states and object poses arrive at 100 Hz or more: keep the latest message and convert it only when a
    # control tick samples it (the callbacks share the GIL with inference and, in the sim, with the physics).
    def _on_joint_states(self, msg: JointState) -> None:
        with self._lock:
            self._js = msg

    def _on_objects(self, msg: PoseArray) -> None:
        with self._lock:
            self._object = msg

    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            img = image_array(msg)
        except ConversionError as e:
            self.node.get_logger().error(f"{topics.image_topic(camera)} ignored: {e}", throttle_duration_sec=5.0)
            with self._lock:
                self._received[camera] += 1
                self._rejected[camera] += 1
            return
        key = f"{camera}_rgb"
        try:  # RGB at the policy's aspect ratio (resize_image's rule, the one training and `postbc eval` apply)
            img = resize_image(img, self.obs_shapes[key], camera=key)
        except ConfigError as e:  # the camera's settings, not one bad frame: said until a frame fits
            self.node.get_logger().error(f"{topics.image_topic(camera)} refused: {e}", throttle_duration_sec=5.0)
            with self._lock:
                self._received[camera] += 1
                self._rejected[camera] += 1
                self._images.pop(camera, None)
                self._img_seq.pop(camera, None)
                self._refused[camera] = str(e)
            return
        with self._lock:
            self._received[camera] += 1
            self._seq[camera] += 1
            self._images[camera] = img
            self._img_seq[camera] = self._seq[camera]
            self._refused.pop(camera, None)

    def frames(self) -> dict[str, dict[str, int]]:
        """Per camera {received, used, dropped, refused, pending} frame counts since start: used = frames an
        observation (a `step()` that returned one) took, each counted once however many steps reused it; dropped =
        frames replaced (or refused over) before any observation took them; refused = not convertible or refused by
        resize_image's check; pending = 1 while the latest frame waits for a step. received = used + dropped +
        refused + pending."""
        with self._lock:
            out = {}
            for c in self.cameras:
                pending = int(self._img_seq.get(c, 0) > self._taken[c])
                accepted = self._seq[c]
                out[c] = {"received": self._received[c], "used": self._used[c],
                          "dropped": accepted - self._used[c] - pending, "refused": self._rejected[c],
                          "pending": pending}
        return out

    def missing(self) -> list[str]:
        """Topics that have not delivered a message yet (a camera whose frames are refused: with the reason)."""
        with self._lock:
            out = [] if self._js is not None else [topics.JOINT_STATES]
            if self.pose_keys and self._object is None:
                out.append(topics.OBJECT_POSES)
            out += [f"{topics.image_topic(c)} (refused: {self._refused[c]})" if c in self._refused else
                    topics.image_topic(c) for c in self.cameras if c not in self._images]
        return out

    def step(self) -> Step | None:
        """The current observation (policy keys only, float32 low-dim, uint8 images), or None while a stream has
        not published yet."""
        with self._lock:
            js_msg, obj_msg, images, seqs = self._js, self._object, dict(self._images), dict(self._img_seq)
        keys = self.obs_shapes
        try:
            js = None if js_msg is None else joint_state_arrays(js_msg)
            poses = None if obj_msg is None else pose_array_arrays(obj_msg)
        except ConversionError as e:
            self.node.get_logger().error(f"observation skipped: {e}", throttle_duration_sec=5.0)
            return None
        if poses is not None and not len(poses):
            poses = None
        if js is None or (self.pose_keys and poses is None) or any(c not in images for c in self.cameras):
            return None
        raw = robot_observation(js.joint_pos, js.joint_vel, js.joint_effort, js.gripper_pos, js.stamp)
        if self.pose_keys:
            try:
                raw.update(object_keys(poses, self.task))
            except PostBCError as e:  # poses of another task's scene: the node and the driver disagree on the task
                self.node.get_logger().error(f"observation skipped: {e}", throttle_duration_sec=5.0)
                return None
        raw.update({f"{c}_rgb": images[c] for c in self.cameras})
        with self._lock:  # the frames this observation took are used (a frame reused by a later step counts once)
            for c in self.cameras:
                if seqs[c] > self._taken[c]:
                    self._taken[c] = seqs[c]
                    self._used[c] += 1
        return Step(obs={k: store_dtype(k, raw[k]) for k in keys}, stamp=js.stamp, joint_pos=js.joint_pos)
