"""`postbc data export --format mcap`: episodes as an MCAP file of ROS 2 messages on one timeline, on the topics and
with the message types the live graph uses (ros2_ws/src/postbc/postbc/topics.py, conversions.py), so Foxglove or
Lichtblick show a recording and a live bag alike.

Store key -> topic (type):

- `<camera>_rgb` -> `/<camera>/image_raw` (sensor_msgs/Image rgb8); with `--images jpeg`
  `/<camera>/image_raw/compressed` (sensor_msgs/CompressedImage jpeg)
- `<camera>_depth` -> `/<camera>/depth/image_raw` (sensor_msgs/Image 16UC1, mm)
- `joint_pos` (+ `joint_vel`, `joint_effort`, `gripper_pos`) -> `/joint_states` (sensor_msgs/JointState: 6 joints,
  then left_finger = the gripper and right_finger = -left_finger, as the driver publishes it)
- `cmd_joint_pos` -> `/postbc/command` (trajectory_msgs/JointTrajectory, one point due now)
- `cmd_ee_delta` -> `/postbc/teleop/ee_delta` (geometry_msgs/TwistStamped in wx250s/base_link) and its gripper
  -> `/postbc/teleop/ee_gripper` (std_msgs/Float32)
- `reward`, `done` -> `/postbc/reward` (std_msgs/Float32), `/postbc/done` (std_msgs/Bool)
- episode boundaries and label -> `/postbc/episode` (std_msgs/String: "start", then "success" / "failure" when
  labelled and "stop" at the last step, the teleop node's episode keys)
- episode metadata -> `/postbc/episode/meta` (std_msgs/String JSON: index, task, source, operator, success, length,
  times, time offset)
- every other numeric key (ee_pose, object_pose, noise, ...) -> `/postbc/data/<key>` (std_msgs/Float64MultiArray, its
  layout the per-step shape)

Log time = the step's stored `timestamp` (s -> ns); header stamps = the stream's own `<key>_stamp` where the store
has one (the sample the recorder used), else the step's timestamp. Episodes whose stored times overlap the previous
exported episode (sim episodes all start at 0) are shifted to follow it (common.Timeline); the shift is in the
episode's meta message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from postbc_core.data.store import EpisodeStore
from postbc_core.errors import ConfigError
from postbc_core.interchange.common import (
    Timeline,
    atomic_output,
    camera_keys,
    camera_name,
    check_output,
    infer_fps,
    read_episode,
    require,
    select_episodes,
)
from postbc_core.interchange.ros2_msgs import schema_text
from postbc_core.robots.base import JOINT_NAMES

log = logging.getLogger(__name__)

# The live graph's names (ros2_ws/src/postbc/postbc/topics.py, conversions.py; a test checks they agree).
JOINT_STATES = "/joint_states"
COMMAND = "/postbc/command"
TELEOP_EE_DELTA = "/postbc/teleop/ee_delta"
EPISODE_EVENTS = "/postbc/episode"
EE_FRAME = "wx250s/base_link"
GRIPPER_JOINT, MIRROR_JOINT = "left_finger", "right_finger"
STATE_JOINTS = (*JOINT_NAMES, GRIPPER_JOINT, MIRROR_JOINT)
COMMAND_JOINTS = (*JOINT_NAMES, GRIPPER_JOINT)
# Export-only topics (no live node publishes these).
EE_GRIPPER = "/postbc/teleop/ee_gripper"
REWARD = "/postbc/reward"
DONE = "/postbc/done"
EPISODE_META = "/postbc/episode/meta"
DATA_PREFIX = "/postbc/data/"

IMAGE_FORMATS = ("raw", "jpeg")
_JOINT_KEYS = ("joint_pos", "joint_vel", "joint_effort", "gripper_pos")


def image_topic(camera: str) -> str:
    return f"/{camera}/image_raw"


def depth_topic(camera: str) -> str:
    return f"/{camera}/depth/image_raw"


def _stamp(seconds: float) -> dict:
    ns = int(round(float(seconds) * 1e9))
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


def _header(seconds: float, frame_id: str = "") -> dict:
    return {"stamp": _stamp(seconds), "frame_id": frame_id}


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # cv2 reports no reason
        raise ConfigError(f"JPEG encoding of a {rgb.shape} frame failed")
    return buf.tobytes()


def export_mcap(src: str | os.PathLike, out: str | os.PathLike, *, episodes: Sequence[int] | None = None,
                images: str = "raw", jpeg_quality: int = 90, fps: float | None = None,
                overwrite: bool = False) -> dict:
    """Write episodes of the store `src` to the MCAP file `out` (see the module docstring for topics and types).

    episodes: indices (negative from the end; None: all). images: "raw" (sensor_msgs/Image, exact) or "jpeg"
    (sensor_msgs/CompressedImage at `jpeg_quality`, ~10x smaller). fps: steps per second, used only when the store
    has no `timestamp` key. Refuses an existing `out` unless `overwrite`; the file appears only once complete.
    Returns {"path", "episodes", "steps", "messages": {topic: count}}.
    """
    require("mcap", "mcap", "MCAP export")
    writer_mod = require("mcap_ros2.writer", "mcap", "MCAP export")
    if images not in IMAGE_FORMATS:
        raise ConfigError(f"--images {images!r} is not one of {IMAGE_FORMATS}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ConfigError(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
    out = Path(out)
    check_output(out, src, overwrite)
    counts: dict[str, int] = {}
    with EpisodeStore.open(src, "r") as store:
        picked = select_episodes(store, episodes)
        schema = store.schema()
        timeline = Timeline(infer_fps(store, picked, fps) if "timestamp" not in schema else 1.0)
        rgb_keys, depth_keys = camera_keys(schema)
        with atomic_output(out) as tmp, open(tmp, "wb") as f:
            writer = writer_mod.Writer(f)
            schemas: dict[str, object] = {}

            def emit(topic: str, datatype: str, msg: dict, t: float) -> None:
                if datatype not in schemas:
                    schemas[datatype] = writer.register_msgdef(datatype.replace("/", "/msg/", 1),
                                                               schema_text(datatype))
                ns = int(round(t * 1e9))
                writer.write_message(topic, schemas[datatype], msg, log_time=ns, publish_time=ns,
                                     sequence=counts.get(topic, 0))
                counts[topic] = counts.get(topic, 0) + 1

            handled = {"timestamp", *rgb_keys, *depth_keys, *(k for k in _JOINT_KEYS if k in schema),
                       "cmd_joint_pos", "cmd_ee_delta", "reward", "done"}
            handled |= {f"{k}_stamp" for k in rgb_keys} | {"joint_states_stamp", "command_stamp",
                                                          "cmd_ee_delta_stamp"}
            others = sorted(k for k in schema if k not in handled)
            for i in picked:
                ep = read_episode(store, i)
                meta = store.episode_meta(i)
                T = meta["length"]
                placed = timeline.place(ep, T)
                times = placed.times

                def stamp(key: str, s: int) -> float:
                    own = ep.get(f"{key}_stamp")
                    return float(own[s]) + placed.offset if own is not None and own[s] > 0 else float(times[s])

                info = {"index": i, "task": meta["task"], "source": meta["source"], "operator": meta["operator"],
                        "success": meta["success"], "length": T, "start_time": _finite(meta["start_time"]),
                        "end_time": _finite(meta["end_time"]), "time_offset_s": placed.offset,
                        "store": str(src)}
                emit(EPISODE_META, "std_msgs/String", {"data": json.dumps(info)}, times[0])
                emit(EPISODE_EVENTS, "std_msgs/String", {"data": "start"}, times[0])
                for s in range(T):
                    t = float(times[s])
                    for k in rgb_keys:
                        cam = camera_name(k)
                        if images == "raw":
                            a = np.ascontiguousarray(ep[k][s])
                            emit(image_topic(cam), "sensor_msgs/Image",
                                 {"header": _header(stamp(k, s), cam), "height": a.shape[0], "width": a.shape[1],
                                  "encoding": "rgb8", "is_bigendian": 0, "step": a.shape[1] * 3, "data": a.tobytes()},
                                 t)
                        else:
                            emit(image_topic(cam) + "/compressed", "sensor_msgs/CompressedImage",
                                 {"header": _header(stamp(k, s), cam), "format": "jpeg",
                                  "data": _jpeg(ep[k][s], jpeg_quality)}, t)
                    for k in depth_keys:
                        cam = camera_name(k)
                        a = np.ascontiguousarray(ep[k][s].astype("<u2"))
                        emit(depth_topic(cam), "sensor_msgs/Image",
                             {"header": _header(stamp(k, s), cam), "height": a.shape[0], "width": a.shape[1],
                              "encoding": "16UC1", "is_bigendian": 0, "step": a.shape[1] * 2, "data": a.tobytes()}, t)
                    if "joint_pos" in ep:
                        emit(JOINT_STATES, "sensor_msgs/JointState", _joint_state(ep, s, stamp("joint_states", s)),
                             t)
                    if "cmd_joint_pos" in ep:
                        c = ep["cmd_joint_pos"][s].astype(np.float64)
                        emit(COMMAND, "trajectory_msgs/JointTrajectory",
                             {"header": _header(stamp("command", s)), "joint_names": list(COMMAND_JOINTS),
                              "points": [{"positions": [float(v) for v in c[:len(COMMAND_JOINTS)]],
                                          "velocities": [], "accelerations": [], "effort": [],
                                          "time_from_start": {"sec": 0, "nanosec": 0}}]}, t)
                    if "cmd_ee_delta" in ep:
                        d = ep["cmd_ee_delta"][s].astype(np.float64)
                        st = stamp("cmd_ee_delta", s)
                        emit(TELEOP_EE_DELTA, "geometry_msgs/TwistStamped",
                             {"header": _header(st, EE_FRAME),
                              "twist": {"linear": {"x": d[0], "y": d[1], "z": d[2]},
                                        "angular": {"x": d[3], "y": d[4], "z": d[5]}}}, t)
                        if d.shape[0] > 6:
                            emit(EE_GRIPPER, "std_msgs/Float32", {"data": float(d[6])}, t)
                    if "reward" in ep:
                        emit(REWARD, "std_msgs/Float32", {"data": float(np.asarray(ep["reward"][s]).reshape(-1)[0])},
                             t)
                    if "done" in ep:
                        emit(DONE, "std_msgs/Bool", {"data": bool(np.asarray(ep["done"][s]).reshape(-1)[0])}, t)
                    for k in others:
                        a = np.asarray(ep[k][s])
                        emit(DATA_PREFIX + k, "std_msgs/Float64MultiArray", _multiarray(a), t)
                if meta["success"] is not None:
                    emit(EPISODE_EVENTS, "std_msgs/String", {"data": "success" if meta["success"] else "failure"},
                         times[-1])
                emit(EPISODE_EVENTS, "std_msgs/String", {"data": "stop"}, times[-1])
            writer.finish()
        steps = int(sum(store.episode_lengths[i] for i in picked))
    log.info("exported %d episode(s), %d steps of %s to %s", len(picked), steps, src, out)
    return {"path": str(out), "episodes": picked, "steps": steps, "messages": counts}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _joint_state(ep: dict, s: int, t: float) -> dict:
    """One /joint_states message as the driver publishes it (conversions.joint_state_msg): 6 joints, then the
    gripper as left_finger and its mirror right_finger = -left_finger; zeros where the store has no velocity /
    effort."""
    q = ep["joint_pos"][s].astype(np.float64)
    v = ep["joint_vel"][s].astype(np.float64) if "joint_vel" in ep else np.zeros(len(JOINT_NAMES))
    e = ep["joint_effort"][s].astype(np.float64) if "joint_effort" in ep else np.zeros(len(JOINT_NAMES))
    g = float(ep["gripper_pos"][s].reshape(-1)[0]) if "gripper_pos" in ep else 0.0
    return {"header": _header(t), "name": list(STATE_JOINTS), "position": [*map(float, q), g, -g],
            "velocity": [*map(float, v), 0.0, 0.0], "effort": [*map(float, e), 0.0, 0.0]}


def _multiarray(a: np.ndarray) -> dict:
    """Any per-step array as std_msgs/Float64MultiArray: row-major data, one dimension per axis (label dim<i>)."""
    shape = a.shape
    strides = [int(np.prod(shape[j:])) for j in range(len(shape))]
    return {"layout": {"dim": [{"label": f"dim{j}", "size": int(n), "stride": strides[j]} for j, n in enumerate(shape)],
                       "data_offset": 0},
            "data": [float(v) for v in a.astype(np.float64).reshape(-1)]}
