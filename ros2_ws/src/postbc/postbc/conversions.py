"""Message <-> numpy conversions for the postbc graph: the one place that knows message layouts.

Units: radians, metres, seconds. Joint order: postbc_core.robots.base.JOINT_NAMES; the gripper is the
`left_finger` joint (finger opening in metres; `right_finger` mirrors it negated, as in the Interbotix URDF).
Poses are (7,) [x y z, qw qx qy qz] (postbc_core's convention); ROS quaternions are x y z w.
Shape legend: T trajectory points, H, W image height/width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose, PoseArray, PoseStamped
from postbc_core.errors import PostBCError
from postbc_core.robots.base import JOINT_NAMES, N_JOINTS
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

GRIPPER_JOINT = "left_finger"
MIRROR_JOINT = "right_finger"
STATE_JOINTS = (*JOINT_NAMES, GRIPPER_JOINT, MIRROR_JOINT)
COMMAND_JOINTS = (*JOINT_NAMES, GRIPPER_JOINT)


class ConversionError(PostBCError):
    """A message that cannot be converted (wrong joints, shape, encoding); the text says what to fix."""


# -- time -----------------------------------------------------------------------------------------------------------
def to_sec(t: Time | Duration) -> float:
    return float(t.sec) + 1e-9 * float(t.nanosec)


def to_time(seconds: float) -> Time:
    ns = int(round(float(seconds) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_duration(seconds: float) -> Duration:
    if seconds < 0:
        raise ConversionError(f"negative duration {seconds} s")
    ns = int(round(float(seconds) * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# -- joint states ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JointStateArrays:
    """One /joint_states message: joint_pos/vel/effort (6,), gripper_pos (1,) m, stamp s (header)."""

    joint_pos: np.ndarray
    joint_vel: np.ndarray
    joint_effort: np.ndarray
    gripper_pos: np.ndarray
    stamp: float


def joint_state_msg(joint_pos, gripper: float, stamp: float, joint_vel=None, joint_effort=None,
                    frame_id: str = "") -> JointState:
    """(6,) rad + gripper opening (m) -> JointState over STATE_JOINTS (velocity/effort zero-filled when None)."""
    q = _vec(joint_pos, N_JOINTS, "joint_pos")
    v = np.zeros(N_JOINTS) if joint_vel is None else _vec(joint_vel, N_JOINTS, "joint_vel")
    e = np.zeros(N_JOINTS) if joint_effort is None else _vec(joint_effort, N_JOINTS, "joint_effort")
    g = float(gripper)
    msg = JointState()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.name = list(STATE_JOINTS)
    msg.position = [*map(float, q), g, -g]
    msg.velocity = [*map(float, v), 0.0, 0.0]
    msg.effort = [*map(float, e), 0.0, 0.0]
    return msg


def joint_state_arrays(msg: JointState) -> JointStateArrays:
    """JointState (any joint order, extra joints ignored; Interbotix's too) -> arrays in our joint order."""
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in (*JOINT_NAMES, GRIPPER_JOINT) if n not in index]
    if missing:
        raise ConversionError(f"JointState lacks joints {missing} (has {list(msg.name)}); publish the WidowX "
                              f"joints {list(COMMAND_JOINTS)}")
    if len(msg.position) != len(msg.name):
        raise ConversionError(f"JointState has {len(msg.name)} names but {len(msg.position)} positions")
    idx = [index[n] for n in JOINT_NAMES]

    def pick(values) -> np.ndarray:
        return np.asarray([values[i] for i in idx], np.float64) if len(values) == len(msg.name) else np.zeros(N_JOINTS)

    return JointStateArrays(joint_pos=pick(msg.position), joint_vel=pick(msg.velocity),
                            joint_effort=pick(msg.effort),
                            gripper_pos=np.array([msg.position[index[GRIPPER_JOINT]]], np.float64),
                            stamp=to_sec(msg.header.stamp))


# -- commands -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """A commanded joint-space chunk: joint_pos (T, 6) rad, gripper (T,) m, times (T,) s after `stamp`; velocities
    (T, 6) rad/s and accelerations (T, 6) rad/s^2 where the message gives them (a NaN row: that point gives none;
    None: no point does)."""

    joint_pos: np.ndarray
    gripper: np.ndarray
    times: np.ndarray
    stamp: float
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None


def trajectory_msg(joint_pos, gripper, stamp: float, dt: float | None = None, times=None) -> JointTrajectory:
    """(T, 6) or (6,) joint targets + (T,) or scalar gripper -> JointTrajectory over COMMAND_JOINTS.

    Point i is due at `times[i]` (default i * dt, so a single target is due now) after `stamp` (header)."""
    q = np.asarray(joint_pos, np.float64)
    q = q[None] if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[1] != N_JOINTS:
        raise ConversionError(f"joint_pos must be (T, {N_JOINTS}) or ({N_JOINTS},), got {np.shape(joint_pos)}")
    T = q.shape[0]
    g = np.broadcast_to(np.asarray(gripper, np.float64).reshape(-1), (T,)) if np.size(gripper) in (1, T) else None
    if g is None:
        raise ConversionError(f"gripper has {np.size(gripper)} values for {T} points")
    if times is None:
        if T > 1 and dt is None:
            raise ConversionError(f"{T} points need dt or times (time_from_start must increase strictly)")
        times = np.arange(T) * (0.0 if dt is None else float(dt))
    times = np.asarray(times, np.float64).reshape(-1)
    if times.shape != (T,) or np.any(np.diff(times) <= 0):
        raise ConversionError(f"times must be {T} strictly increasing offsets, got {times}")
    msg = JointTrajectory()
    msg.header.stamp = to_time(stamp)
    msg.joint_names = list(COMMAND_JOINTS)
    for i in range(T):
        p = JointTrajectoryPoint()
        p.positions = [*map(float, q[i]), float(g[i])]
        p.time_from_start = to_duration(times[i])
        msg.points.append(p)
    return msg


def trajectory_chunk(msg: JointTrajectory) -> Chunk:
    """JointTrajectory (joint names in any order; the gripper joint optional) -> Chunk in our joint order.

    Checked as ros2_controllers' joint_trajectory_controller checks a trajectory (Humble, allow_partial_joints_goal
    false): every arm joint named, no unknown or repeated names, at least one point, as many positions as names,
    velocities / accelerations empty or one per joint (they select the driver's spline, as in JTC), no efforts,
    time_from_start strictly increasing. The header stamp is returned as sent (0 = "start now", resolved by the
    driver). Values are returned as sent, NaN included: rejecting them is the driver's job, with a log line.
    A point without the gripper keeps NaN there (the driver then holds the current gripper target)."""
    if not msg.points:
        raise ConversionError("JointTrajectory has no points; send at least one target")
    names = list(msg.joint_names)
    unknown = [n for n in names if n not in COMMAND_JOINTS]
    if unknown:
        raise ConversionError(f"JointTrajectory names unknown joints {unknown}; the wx250s command joints are "
                              f"{list(COMMAND_JOINTS)}")
    if len(set(names)) != len(names):
        raise ConversionError(f"JointTrajectory names a joint twice: {names}")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in JOINT_NAMES if n not in index]
    if missing:
        raise ConversionError(f"JointTrajectory lacks joints {missing} (has {names}); command all "
                              f"of {list(COMMAND_JOINTS)} (the gripper joint {GRIPPER_JOINT} may be left out)")
    idx = [index[n] for n in JOINT_NAMES]
    gi = index.get(GRIPPER_JOINT)
    q = np.empty((len(msg.points), N_JOINTS))
    g = np.full(len(msg.points), np.nan)
    t = np.empty(len(msg.points))
    va = {"velocities": np.full((len(msg.points), N_JOINTS), np.nan),
          "accelerations": np.full((len(msg.points), N_JOINTS), np.nan)}
    for k, p in enumerate(msg.points):
        if len(p.positions) != len(names):
            raise ConversionError(f"point {k} has {len(p.positions)} positions for {len(names)} joints")
        for field_name in ("velocities", "accelerations"):
            n = len(getattr(p, field_name))
            if n not in (0, len(names)):
                raise ConversionError(f"point {k} has {n} {field_name} for {len(names)} joints (give none or one "
                                      "per joint)")
            if n:
                va[field_name][k] = [getattr(p, field_name)[i] for i in idx]
        if len(p.effort):
            raise ConversionError(f"point {k} has efforts; the driver takes position targets only (leave effort "
                                  "empty)")
        q[k] = [p.positions[i] for i in idx]
        if gi is not None:
            g[k] = p.positions[gi]
        t[k] = to_sec(p.time_from_start)
    if np.any(np.diff(t) <= 0):
        raise ConversionError(f"time_from_start must increase strictly along the trajectory, got {t.tolist()}")
    v, a = (None if np.isnan(x).all() else x for x in va.values())
    return Chunk(joint_pos=q, gripper=g, times=t, stamp=to_sec(msg.header.stamp), velocities=v, accelerations=a)


# -- images ---------------------------------------------------------------------------------------------------------
_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1),
              "mono16": (np.uint16, 1)}


def image_msg(array: np.ndarray, stamp: float, frame_id: str = "", encoding: str | None = None) -> Image:
    """(H, W, 3) uint8 -> rgb8, (H, W) uint16 (depth mm) -> 16UC1, (H, W) uint8 -> mono8."""
    a = np.ascontiguousarray(array)
    if encoding is None:
        if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
            encoding = "rgb8"
        elif a.dtype == np.uint16 and a.ndim == 2:
            encoding = "16UC1"
        elif a.dtype == np.uint8 and a.ndim == 2:
            encoding = "mono8"
        else:
            raise ConversionError(f"no image encoding for dtype {a.dtype} shape {a.shape}; give (H, W, 3) uint8 RGB "
                                  "or (H, W) uint16 depth")
    msg = Image()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.strides[0])
    msg.data = a.tobytes()
    return msg


def image_array(msg: Image) -> np.ndarray:
    """Image -> (H, W, 3) uint8 RGB (bgr8 is converted) or (H, W) for mono/depth encodings."""
    if msg.encoding not in _ENCODINGS:
        raise ConversionError(f"image encoding {msg.encoding!r} unsupported; publish one of {sorted(_ENCODINGS)}")
    dtype, ch = _ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    row = msg.width * ch * itemsize
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise ConversionError(f"image {msg.width}x{msg.height} {msg.encoding}: step {msg.step} / {len(msg.data)} "
                              f"bytes are too small")
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data, np.uint8)
    rows = buf[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row]
    a = np.ascontiguousarray(rows).view(dtype)
    if msg.is_bigendian and itemsize > 1:
        a = a.byteswap()
    a = a.reshape(msg.height, msg.width, ch) if ch > 1 else a.reshape(msg.height, msg.width)
    return a[..., ::-1].copy() if msg.encoding == "bgr8" else a


def camera_info_msg(intrinsics, stamp: float, frame_id: str = "") -> CameraInfo:
    """postbc_core.cameras.base.Intrinsics -> CameraInfo (plumb_bob, P = [K | 0])."""
    msg = CameraInfo()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(intrinsics.width), int(intrinsics.height)
    K = np.asarray(intrinsics.K, np.float64)
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.d = [float(v) for v in intrinsics.distortion]
    msg.distortion_model = "plumb_bob"
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = [float(v) for v in P.reshape(-1)]
    return msg


def camera_info_intrinsics(msg: CameraInfo):
    """CameraInfo -> postbc_core.cameras.base.Intrinsics."""
    from postbc_core.cameras.base import Intrinsics

    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    return Intrinsics(width=int(msg.width), height=int(msg.height), fx=float(K[0, 0]), fy=float(K[1, 1]),
                      cx=float(K[0, 2]), cy=float(K[1, 2]), distortion=tuple(float(v) for v in msg.d))


# -- poses ----------------------------------------------------------------------------------------------------------
def pose_msg(pose7) -> Pose:
    """(7,) [x y z, qw qx qy qz] -> geometry_msgs/Pose."""
    p = _vec(pose7, 7, "pose")
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = map(float, p[:3])
    msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = map(float, p[3:])
    return msg


def pose_array(msg: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> (7,) [x y z, qw qx qy qz]."""
    o = msg.orientation
    return np.array([msg.position.x, msg.position.y, msg.position.z, o.w, o.x, o.y, o.z], np.float64)


def pose_stamped_msg(pose7, stamp: float, frame_id: str = "world") -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.pose = pose_msg(pose7)
    return msg


def pose_array_msg(poses: Sequence, stamp: float, frame_id: str = "world") -> PoseArray:
    """N poses (7,) -> PoseArray."""
    msg = PoseArray()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.poses = [pose_msg(p) for p in poses]
    return msg


def pose_array_arrays(msg: PoseArray) -> np.ndarray:
    """PoseArray -> (N, 7)."""
    return np.stack([pose_array(p) for p in msg.poses]) if msg.poses else np.zeros((0, 7))


def _vec(value, n: int, what: str) -> np.ndarray:
    a = np.asarray(value, np.float64).reshape(-1)
    if a.shape != (n,):
        raise ConversionError(f"{what} must have {n} values, got shape {np.shape(value)}")
    return a


# -- teleop EE deltas (appended by the teleop node) -----------------------------------------------------------------
EE_FRAME = "wx250s/base_link"  # EE deltas are expressed in the arm's base frame (robots.actions)


def twist_stamped_msg(delta6, stamp: float, frame_id: str = EE_FRAME):
    """(6,) [dx dy dz (m), droll dpitch dyaw (rad)] -> geometry_msgs/TwistStamped (linear = translation, angular =
    extrinsic roll-pitch-yaw about the base axes; per control step, not per second)."""
    from geometry_msgs.msg import TwistStamped

    d = _vec(delta6, 6, "EE delta")
    msg = TwistStamped()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = map(float, d[:3])
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = map(float, d[3:])
    return msg


def twist_array(msg) -> np.ndarray:
    """geometry_msgs/Twist (or TwistStamped) -> (6,) [linear xyz, angular xyz] (NaN passes through: callers check)."""
    t = getattr(msg, "twist", msg)
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z], np.float64)
