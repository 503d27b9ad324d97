"""recorder node: joint states, camera images and commands -> episodes in a postbc_core EpisodeStore (zarr).

Synchronisation. A timer at `control_hz` on the node clock (sim time in sim) samples, at tick t, the latest message
of every stream: that is observation t. The row of tick t also holds the command the operator / policy issued in
response to observation t, i.e. the latest /postbc/command received before tick t+1, so row t is written at tick
t+1 (a one-step delayed write); reward/done of row t are those seen at tick t+1 (the state the command led to, as
in postbc_core.sim.demos). At stop the last observation has no complete response window and is not written.
Keys (same names as postbc_core.sim.demos.record_demos): timestamp (tick time, float64 s), joint_pos/vel/effort (6),
gripper_pos (1), ee_pose (7, FK of joint_pos), <camera>_rgb (H, W, 3) uint8, the sim task's state keys when
/postbc/sim/object_poses is published (`task` a sim task: postbc_core.sim.registry.task_state_keys, the keys
`postbc sim demos` stores, e.g. lift_cube: object_pose (7), object_pos (3), object_yaw_feat (2), object_height (1);
any other `task`: object_pose alone), cmd_joint_pos (7: the command's first point = the target executed after
this observation; the measured pose when no command was ever received, i.e. the driver holds), cmd_ee_delta (7,
when /postbc/teleop/ee_delta is published: the delta received during the step, zeros when none, + the gripper
target), reward (float32), done (bool), and per-stream header stamps `<stream>_stamp` (float64 s, -1 = no message
yet): joint_states_stamp, <camera>_rgb_stamp, object_pose_stamp, command_stamp, cmd_ee_delta_stamp.

Per stream and episode the node counts messages received, ticks without a new message ("repeated"), ticks where
the latest message was older than `max_stream_age` ("late"), and messages lost, estimated from gaps in the header
stamps against the stream's median period ("dropped"); per episode, timer periods the process was too busy to
tick ("missed_ticks": no row there). /postbc/recorder/status (JSON, ~status_hz, steady clock):
store, episodes, recording, the current episode's steps / duration, per-stream rates and counts, the last episode,
and "disk": free bytes, the recording rate (bytes/s: measured during an episode, else what the store's episodes
took), minutes of recording left at that rate, and "low" (below `disk_warn_minutes`: a warning is logged).

Disk space (postbc_core.data.disk): an episode whose longest allowed length (`max_episode_s`; one minute when
unlimited) does not fit in the free space above `disk_reserve_mb` at the current rate is refused at start; a
recording episode that reaches the reserve is stopped and committed. Committed episodes are never touched.
Camera codec: `codec` (postbc_core.data.codecs), fixed by the store's first episode.

Writing: EpisodeStore.open(store, "a") (creates it, or resumes appending after recovering an interrupted tail; the
store's writer lock refuses a second recorder). Steps go to `episode_writer(background=True)`, so block writes to
disk run on the writer's thread; commit / discard / relabel run on one worker thread of this node. The tick waits
for the disk only when a block fills while the previous one is still being written (memory stays bounded), and
then holds only the episode's write lock: stream callbacks, status and services never wait for the disk. A
committed episode is on disk for good: SIGKILL at any point leaves every committed episode valid, and the next
recorder drops the uncommitted tail when it reopens the store.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseArray, TwistStamped
from postbc_core.robots.observation import resize_image, robot_observation
from postbc_core.control.rows import step_row
from postbc_core.data.codecs import parse_codecs
from postbc_core.data.disk import (
    DEFAULT_RESERVE_BYTES,
    DEFAULT_WARN_MINUTES,
    DiskBudget,
    EpisodeRate,
    disk_free_bytes,
    rate_from_store,
)
from postbc_core.data.store import (
    DEFAULT_FLUSH_BYTES,
    SOURCES,
    STRING_META,
    EpisodeStore,
)
from postbc_core.errors import ConfigError, PostBCError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from postbc import conversions as cv
from postbc import topics
from postbc.node_main import main as node_main
from postbc.observation import object_keys, pose_key_shapes
from postbc.params import declare

NO_STAMP = -1.0  # `<stream>_stamp` of a stream without any message yet (the store refuses NaN)


@dataclass
class Params:
    store: str = ""
    """Episode store path (zarr directory); created if missing, appended to if it exists. Required."""
    control_hz: float = 10.0
    """Recording rate (Hz): one row per control step, on the node clock (sim time in sim)."""
    cameras: tuple[str, ...] = ()
    """Cameras recorded as <camera>_rgb from /<camera>/image_raw, e.g. [front, wrist]; [] = state only."""
    image_size: tuple[int, ...] = (0, 0)
    """[H, W] to resize images to (cv2.INTER_AREA); [0, 0] = the camera's native size."""
    max_episode_s: float = 120.0
    """Episode time limit (s): the episode is stopped and committed (label unknown) when reached; 0 = none."""
    task: str = ""
    """Task name stored in each episode's metadata. A sim task name (the driver's task) also selects the state keys
    recorded from /postbc/sim/object_poses (that task's registry.task_state_keys; otherwise object_pose only)."""
    operator: str = ""
    """Operator name stored in each episode's metadata."""
    source: str = "teleop"
    """Episode source metadata: "teleop", or "policy" for rollouts (any of postbc_core.data.store.SOURCES)."""
    max_stream_age: float = 0.25
    """A stream whose latest message is older than this (s) at a tick counts as late for that tick."""
    auto_label_success: bool = False
    """Sim: reward/done from /postbc/sim/success, and the episode label when the operator gives none."""
    start_timeout: float = 2.0
    """Seconds the start service waits for every required stream (joint states + cameras) to have a message."""
    flush_bytes: int = DEFAULT_FLUSH_BYTES
    """Steps are buffered and written to disk in blocks of about this many bytes (memory ~3x this)."""
    status_hz: float = 2.0
    """Rate (Hz, steady clock) of /postbc/recorder/status."""
    codec: str = ""
    """Camera codec of a new store's <camera>_rgb keys (postbc_core.data.codecs): raw (exact, ~1x on camera frames),
    jpeg (quality 90, ~30x smaller), jpeg:Q, jpegxl-lossless (exact, ~2x), or per camera front_rgb=jpeg,wrist_rgb=raw.
    Empty: raw for a new store, the store's own for an existing one (a store's codecs are fixed by its first
    episode)."""
    disk_warn_minutes: float = DEFAULT_WARN_MINUTES
    """Warn (log + status "disk": {"low": true}) when the disk holds fewer minutes of recording at the current rate."""
    disk_reserve_mb: float = DEFAULT_RESERVE_BYTES / 1e6
    """MB of the store's disk never recorded into: an episode that would not fit in the rest is refused at start,
    and a recording episode is stopped and committed when the free space reaches the reserve."""

    def __post_init__(self):
        if not self.store:
            raise ConfigError("store is empty: set the episode store path, e.g. store:=/data/demos.zarr")
        if not 0.0 < self.control_hz <= 100.0:
            raise ConfigError(f"control_hz={self.control_hz}: must be in (0, 100] Hz")
        self.cameras = tuple(c for c in self.cameras if c)
        bad = [c for c in self.cameras if "/" in c or not c.replace("_", "").isalnum()]
        if bad or len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras={list(self.cameras)}: give distinct plain names such as ['front', 'wrist']")
        if len(self.image_size) != 2 or (any(self.image_size) and min(self.image_size) < 8):
            raise ConfigError(f"image_size={list(self.image_size)}: give [H, W] (each >= 8) or [0, 0] for native")
        if self.max_episode_s < 0:
            raise ConfigError(f"max_episode_s={self.max_episode_s}: must be >= 0 (0 = no time limit)")
        if self.source not in SOURCES:
            raise ConfigError(f"source={self.source!r}: choose one of {SOURCES}")
        for name in ("task", "operator"):
            if len(getattr(self, name)) > STRING_META[name]:
                raise ConfigError(f"{name} is {len(getattr(self, name))} characters; the store keeps at most "
                                  f"{STRING_META[name]}")
        try:
            parse_codecs(self.codec)
        except PostBCError as exc:
            raise ConfigError(f"codec={self.codec!r}: {exc}") from None
        if self.disk_warn_minutes < 0 or self.disk_reserve_mb < 0:
            raise ConfigError(f"disk_warn_minutes={self.disk_warn_minutes}, disk_reserve_mb={self.disk_reserve_mb}: "
                              "need values >= 0")
        if self.max_stream_age <= 0 or self.start_timeout < 0 or self.status_hz <= 0 or self.flush_bytes < 1:
            raise ConfigError(f"max_stream_age={self.max_stream_age}, start_timeout={self.start_timeout}, "
                              f"status_hz={self.status_hz}, flush_bytes={self.flush_bytes}: need max_stream_age > 0, "
                              "start_timeout >= 0, status_hz > 0, flush_bytes >= 1")


# The keys of every row (per-step shape, dtype), as _sample / _complete_row build them; the cameras add <camera>_rgb
# (H, W, 3) uint8 and <camera>_rgb_stamp.
ROW_KEYS = {"timestamp": ((), np.float64), "joint_pos": ((6,), np.float32), "joint_vel": ((6,), np.float32),
            "joint_effort": ((6,), np.float32), "gripper_pos": ((1,), np.float32), "ee_pose": ((7,), np.float32),
            "joint_states_stamp": ((), np.float64), "cmd_joint_pos": ((7,), np.float32),
            "command_stamp": ((), np.float64), "reward": ((), np.float32), "done": ((), np.bool_)}
# Keys a row holds when their stream is published as the store's first episode starts (then in every episode).
OPTIONAL_KEYS = {"cmd_ee_delta": ((7,), np.float32), "cmd_ee_delta_stamp": ((), np.float64),
                 "object_pose_stamp": ((), np.float64)}


def check_store_keys(store: EpisodeStore, p: Params) -> None:
    """ConfigError, before the recorder starts, when the store's episodes hold other keys (or shapes) than this
    recorder writes: every episode of a store has the same keys, so a store of `postbc sim demos` or of another
    tool would otherwise take no episode, each aborted at its first step. Names the keys and the fix. (Image
    sizes are checked at each start, against the frames: _image_size_mismatch.)"""
    if not store.n_episodes:
        return
    schema = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in store.schema().items()}
    images = {f"{c}_rgb" for c in p.cameras}
    want = {**ROW_KEYS, **{f"{c}_rgb_stamp": ((), np.float64) for c in p.cameras}}
    optional = dict(OPTIONAL_KEYS)
    sim_task = None
    if set(schema) - set(want) - set(optional) - images:  # object keys: those of the recorder's task
        from postbc_core.sim.registry import TASKS  # mujoco loads here, only for a store with such keys

        sim_task = p.task if p.task in TASKS else ""
        optional.update({k: (shape, np.float32) for k, shape in pose_key_shapes(sim_task).items()})
    objects = sorted(set(optional) - set(OPTIONAL_KEYS))
    missing = sorted(set(want) - set(schema) | images - set(schema))
    extra = sorted(set(schema) - set(want) - set(optional) - images)
    for keys, stamp in ((["cmd_ee_delta"], "cmd_ee_delta_stamp"), (objects or ["object_pose"], "object_pose_stamp")):
        has = [k for k in keys if k in schema]
        if bool(has) != (stamp in schema):  # a row holds both or neither
            missing.append(stamp if has else f"one of {keys}")
    spec = {**want, **optional}
    shapes = [f"{k} {schema[k][0]} {schema[k][1]} (writes {spec[k][0]} {np.dtype(spec[k][1])})"
              for k in sorted(set(schema) & set(spec)) if schema[k] != (spec[k][0], np.dtype(spec[k][1]))]
    if not (missing or extra or shapes):
        return
    found = [f"lack {missing}" if missing else "", f"have {extra}, which this recorder does not write" if extra
             else "", f"differ in shape: {'; '.join(shapes)}" if shapes else ""]
    fixes = []
    stored_cams = sorted(k[: -len("_rgb")] for k in schema if k.endswith("_rgb"))
    if stored_cams != sorted(p.cameras):
        fixes.append(f"cameras:={stored_cams} to match")
    if extra and not sim_task:
        fixes.append("task:=<the store's sim task> if it holds that task's object keys")
    fixes.append("record into another store (store:=...)")
    raise ConfigError(f"store {p.store}: its episodes {', '.join(f for f in found if f)}; every episode of a store "
                      f"has the same keys (a store of `postbc sim demos` or another tool has other keys than a "
                      f"recorder's): {' or '.join(fixes)}")


# -- per-stream bookkeeping (no ROS in here) --------------------------------------------------------------------------
@dataclass
class StreamState:
    """Latest message of one input stream and its arrival statistics. Times in seconds on the node clock."""

    name: str
    topic: str
    latest: object = None
    stamp: float = NO_STAMP  # header stamp of `latest`
    seq: int = 0  # messages received since the node started
    arrivals: deque = field(default_factory=lambda: deque(maxlen=256))  # node-clock receive times (rates)
    periods: deque = field(default_factory=lambda: deque(maxlen=64))  # header stamp intervals (drop detection)
    # counted while an episode records (reset at its start)
    received: int = 0
    repeated: int = 0
    late: int = 0
    dropped: int = 0
    out_of_order: int = 0
    _seq_at_tick: int = 0

    def on_message(self, msg, stamp: float, now: float, recording: bool) -> None:
        if self.latest is not None and stamp < self.stamp:
            self.out_of_order += 1
            return  # older than what we hold (a publisher restarted its clock, or a reordered delivery): keep ours
        if self.latest is not None and stamp > self.stamp:
            dt = stamp - self.stamp
            if recording and len(self.periods) >= 8:
                period = statistics.median(self.periods)
                # A gap of k periods = k - 1 messages that never arrived. An estimate: 1.8 (not 1.5) periods keeps
                # the scheduling jitter of wall-clock publishers from counting as drops.
                if dt > 1.8 * period:
                    self.dropped += round(dt / period) - 1
            self.periods.append(dt)
        self.latest, self.stamp = msg, stamp
        self.seq += 1
        self.arrivals.append(now)
        if recording:
            self.received += 1

    def on_tick(self, now: float, max_age: float) -> None:
        """Count this tick as repeated (no new message since the last tick) and/or late (latest too old)."""
        if self.latest is None:
            return
        if self.seq == self._seq_at_tick:
            self.repeated += 1
        if now - self.stamp > max_age:
            self.late += 1
        self._seq_at_tick = self.seq

    def new_since(self, seq: int) -> bool:
        return self.seq != seq

    def reset_counts(self) -> None:
        self.received = self.repeated = self.late = self.dropped = self.out_of_order = 0
        self._seq_at_tick = self.seq

    def rate(self, now: float, window: float = 2.0) -> float:
        """Receive rate (Hz) over the last `window` s of the node clock."""
        ts = [t for t in self.arrivals if now - window < t <= now]
        return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) >= 2 and ts[-1] > ts[0] else 0.0

    def counts(self, now: float) -> dict:
        return {"topic": self.topic, "rate_hz": round(self.rate(now), 2), "received": self.received,
                "repeated": self.repeated, "late": self.late, "dropped": self.dropped,
                "out_of_order": self.out_of_order,
                "age_s": round(now - self.stamp, 3) if self.latest is not None else None}


@dataclass
class Episode:
    writer: object
    index: int
    start: float  # node clock
    start_wall: float
    keys: dict  # optional keys recorded: {"pose": (keys from the object poses, ...), "cmd_ee_delta": bool}
    label: bool | None = None  # the operator's label (wins over auto_label_success)
    success_seen: bool = False
    steps: int = 0
    ticks: int = 0
    missed_ticks: int = 0  # timer periods skipped (the process was starved; rows are missing there)
    last_gripper_cmd: float = math.nan
    open: bool = True  # False once committed / discarded: the tick writes no more rows
    write_lock: threading.Lock = field(default_factory=threading.Lock)  # the tick's append vs commit / discard


class Recorder(Node):
    def __init__(self, node_name: str = "recorder", *, context=None, parameter_overrides=None, namespace="",
                 disk_free: Callable[[Path], int] | None = None):
        """`disk_free`: the free-space query of the store's disk (postbc_core.data.disk; tests inject one)."""
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self.store: EpisodeStore | None = None
        try:
            self.params = p = declare(self, Params)
            # StoreError (with the owner) if another recorder writes it, or when `codec` differs from the store's
            self.store = EpisodeStore.open(p.store, "a", codecs=p.codec or None)
            check_store_keys(self.store, p)
        except BaseException:
            # A half-built node must not linger: rclpy's context would destroy it again at shutdown (a traceback
            # after the error line), and the store's writer lock would stay taken.
            if self.store is not None:
                self.store.close()
            Node.destroy_node(self)
            raise
        if self.store.recovery is not None:
            self.get_logger().warning(str(self.store.recovery))
        self.disk = DiskBudget(Path(p.store), warn_minutes=p.disk_warn_minutes,
                               reserve_bytes=int(p.disk_reserve_mb * 1e6), free_bytes=disk_free or disk_free_bytes)
        self._store_rate = rate_from_store(self.store, p.control_hz)  # bytes/s of the committed episodes
        self._episode_rate: EpisodeRate | None = None  # measured while an episode records
        self._disk_low = False
        self.get_logger().info(f"recording to {p.store} ({self.store.n_episodes} episodes already there)")
        self._lock = threading.RLock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder-commit")
        self._job: Future | None = None  # the last commit / discard / relabel
        self._rec: Episode | None = None
        self._pending: dict | None = None  # observation of the previous tick, waiting for its command
        self._pending_seq: dict[str, int] = {}
        self._pose_keys: tuple[str, ...] | None = None  # keys derivable from the object poses (_derivable_pose_keys)
        self._sim_task = ""
        self.last_episode: dict | None = None
        self.error: str | None = None

        self.streams: dict[str, StreamState] = {}
        self._stream("joint_states", JointState, topics.JOINT_STATES, topics.STATE_QOS)
        for cam in p.cameras:
            self._stream(f"{cam}_rgb", Image, topics.image_topic(cam), topics.SENSOR_QOS)
        self._stream("object_pose", PoseArray, topics.OBJECT_POSES, topics.STATE_QOS)
        self._stream("command", JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
        self._stream("cmd_ee_delta", TwistStamped, topics.TELEOP_EE_DELTA, topics.COMMAND_QOS)
        self._success: bool | None = None
        self.create_subscription(Bool, topics.SUCCESS, self._on_success, topics.STATE_QOS,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.required = ["joint_states", *(f"{c}_rgb" for c in p.cameras)]

        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/start", self._srv_start, callback_group=services)
        self.create_service(Trigger, "~/stop", self._srv_stop, callback_group=services)
        self.create_service(Trigger, "~/discard", self._srv_discard, callback_group=services)
        self.create_service(SetBool, "~/label", self._srv_label, callback_group=services)
        self.create_subscription(String, topics.EPISODE_EVENTS, self._on_event, 10, callback_group=services)
        self.pub_status = self.create_publisher(String, topics.RECORDER_STATUS, topics.STATUS_QOS)
        self._tick_timer = self.create_timer(1.0 / p.control_hz, self._on_tick,
                                             callback_group=MutuallyExclusiveCallbackGroup())
        self._status_timer = self.create_timer(1.0 / p.status_hz, self.publish_status,
                                               callback_group=MutuallyExclusiveCallbackGroup(),
                                               clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- inputs -------------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stream(self, name, msg_type, topic, qos) -> None:
        s = self.streams[name] = StreamState(name, topic)
        # One callback group per stream: its messages are handled in order, different streams in parallel.

        def cb(msg):
            now = self._now()
            stamp = cv.to_sec(msg.header.stamp)
            with self._lock:
                s.on_message(msg, stamp, now, self._rec is not None)

        self.create_subscription(msg_type, topic, cb, qos, callback_group=MutuallyExclusiveCallbackGroup())

    def _on_success(self, msg: Bool) -> None:
        self._success = bool(msg.data)

    # -- the control-rate tick ----------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        now = self._now()
        with self._lock:
            rec = self._rec
            if rec is None:
                return
            # Timer periods since the start minus ticks run: rcl fires a late tick as soon as it can and keeps the
            # timer's phase, so a late tick is not a missed one, only a period that got no tick at all is.
            rec.ticks += 1
            rec.missed_ticks = max(0, math.ceil((now - rec.start) * self.params.control_hz - 1e-6) - rec.ticks)
            obs, self._pending = self._pending, None
            row = None if obs is None else self._complete_row(rec, obs)
        # The write may wait for the disk (a full block while the previous one is still being written): it holds
        # only the episode's write lock, so stream callbacks, status and services never wait for the disk.
        error = None
        if row is not None:
            with rec.write_lock:
                try:
                    if rec.open:  # else stopped / discarded since this tick began: the row has no episode
                        rec.writer.append_step(row)
                        rec.steps += 1
                except PostBCError as e:  # a schema clash with the store, a bad message: never record it half
                    error = f"episode {rec.index} aborted at step {rec.steps}: {e}"
        with self._lock:
            if self._rec is not rec:
                return
            if error is not None:
                self.error = error
                self.get_logger().error(error + "; the episode is discarded")
                self._end(discard=True, reason="error")
                return
            if self.params.max_episode_s and now - rec.start >= self.params.max_episode_s - 1e-9:
                self.get_logger().info(f"episode {rec.index}: time limit {self.params.max_episode_s:g} s reached; "
                                       "committing it")
                self._end(discard=False, reason="time limit")
                return
            for s in self.streams.values():
                s.on_tick(now, self.params.max_stream_age)
            try:
                self._pending = self._sample(rec, now)
            except PostBCError as e:
                self.get_logger().error(f"episode {rec.index}: tick at {now:.3f} s not recorded: {e}")
                return
            self._pending_seq = {k: s.seq for k, s in self.streams.items()}

    def _sample(self, rec: Episode, now: float) -> dict:
        """Observation at tick time `now` (raw: step_row casts it to store dtypes): the latest message of every
        recorded stream, with their header stamps."""
        js = self.streams["joint_states"]
        st = cv.joint_state_arrays(js.latest)
        row = robot_observation(st.joint_pos, st.joint_vel, st.joint_effort, st.gripper_pos, now)
        row["joint_states_stamp"] = js.stamp
        for cam in self.params.cameras:
            s = self.streams[f"{cam}_rgb"]
            img = cv.image_array(s.latest)
            if img.ndim != 3:
                raise PostBCError(f"{s.topic} publishes {s.latest.encoding} images; the recorder stores rgb8")
            # resize_image's one rule (RGB, the same aspect: no squash), as training and the policy nodes apply it
            row[f"{cam}_rgb"] = resize_image(img, self.params.image_size, camera=f"{cam}_rgb")
            row[f"{cam}_rgb_stamp"] = s.stamp
        if rec.keys["pose"]:
            s = self.streams["object_pose"]
            poses = cv.pose_array_arrays(s.latest) if s.latest is not None else np.zeros((0, 7))
            if not len(poses):
                raise PostBCError(f"{s.topic} has no pose; the store records {list(rec.keys['pose'])}")
            derived = object_keys(poses, self._sim_task)  # PostBCError: poses of another task's scene
            for k in rec.keys["pose"]:
                row[k] = derived[k]
            row["object_pose_stamp"] = s.stamp
        return row

    def _complete_row(self, rec: Episode, obs: dict) -> dict:
        """The stored row of observation `obs` (control.rows.step_row, store dtypes): the response to it, i.e. the
        latest command received before this tick, the operator's EE delta of the step, reward and done; plus the
        command streams' header stamps."""
        cmd = self.streams["command"]
        q, g = obs["joint_pos"], math.nan
        if cmd.latest is not None:
            chunk = cv.trajectory_chunk(cmd.latest)
            if np.all(np.isfinite(chunk.joint_pos[0])):
                q = chunk.joint_pos[0]
            g = float(chunk.gripper[0])
        if not math.isfinite(g):  # no gripper in the command: the driver holds its current gripper target
            g = rec.last_gripper_cmd if math.isfinite(rec.last_gripper_cmd) else float(obs["gripper_pos"][0])
        rec.last_gripper_cmd = g
        s = self.streams["cmd_ee_delta"]
        delta = np.zeros(6)  # the operator sent no delta during the step
        if rec.keys["cmd_ee_delta"] and s.latest is not None and s.new_since(self._pending_seq.get("cmd_ee_delta", -1)):
            delta = cv.twist_array(s.latest)
        success = bool(self._success) if self.params.auto_label_success else False
        rec.success_seen |= success
        row = step_row(obs, q, g, ee_delta=delta, reward=1.0 if success else 0.0, done=success)
        row["command_stamp"] = np.float64(cmd.stamp)
        if rec.keys["cmd_ee_delta"]:
            row["cmd_ee_delta_stamp"] = np.float64(s.stamp)
        else:  # the store records no operator delta (no teleop stream when its first episode began)
            del row["cmd_ee_delta"]
        return row

    def _image_size_mismatch(self, schema: dict) -> str:
        """The store's image size vs what this recorder writes from the latest frames (native size: known only
        once a frame arrived); "" when they match."""
        for cam in self.params.cameras:
            s = self.streams[f"{cam}_rgb"]
            size = tuple(self.params.image_size) if any(self.params.image_size) else (
                (s.latest.height, s.latest.width) if s.latest is not None else None)
            stored = schema[f"{cam}_rgb"][0][:2]
            if size is not None and size != stored:
                return (f"the store's {cam}_rgb images are {stored[0]}x{stored[1]} (HxW) but this recorder writes "
                        f"{size[0]}x{size[1]}; set image_size:=[{stored[0]}, {stored[1]}] or record into another store")
        return ""

    def _derivable_pose_keys(self) -> tuple[str, ...]:
        """The keys this recorder computes from /postbc/sim/object_poses: the state keys of the sim task `task`
        (observation.pose_key_shapes), or object_pose alone when `task` names no sim task (warned once)."""
        if self._pose_keys is None:
            from postbc_core.sim.registry import TASKS  # mujoco loads here: object poses come from the sim

            task = self.params.task
            self._sim_task = task if task in TASKS else ""
            if not self._sim_task:
                self.get_logger().warning(
                    f"{topics.OBJECT_POSES} is published but task={task!r} is not a sim task "
                    f"({', '.join(sorted(TASKS))}): recording object_pose only; set the recorder's task to the "
                    "driver's task to record its state keys (object_pos, object_yaw_feat, ...)")
            self._pose_keys = tuple(pose_key_shapes(self._sim_task))
        return self._pose_keys

    # -- episode control ----------------------------------------------------------------------------------------
    def _wait_job(self) -> None:
        job = self._job
        if job is not None:
            job.result()

    def start(self, wait: float = 0.0) -> tuple[bool, str]:
        """Begin an episode at the next tick; fails when recording, or when a required stream has no message."""
        try:
            self._wait_job()
        except PostBCError:
            pass  # reported by the job itself
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                missing = [self.streams[n].topic for n in self.required if self.streams[n].latest is None]
                if self._rec is not None:
                    return False, f"already recording episode {self._rec.index}; stop or discard it first"
                if not missing:
                    return self._begin()
            if time.monotonic() >= deadline:
                return False, (f"cannot start: no message yet on {', '.join(missing)} (is the driver / camera node "
                               "running, with matching camera names?)")
            time.sleep(0.02)

    def _begin(self) -> tuple[bool, str]:
        try:  # a commit the tick started (time limit) after start() waited: the store takes one writer at a time
            self._wait_job()
        except PostBCError:
            pass
        # Optional keys: the store's key set once it has episodes (every episode must match it; cmd_ee_delta is
        # then zeros while the operator sends none), else what is being published when the first episode starts.
        schema = self.store.schema() if self.store.n_episodes else {}
        poses_on = self.streams["object_pose"].latest is not None
        derivable = self._derivable_pose_keys() if poses_on or "object_pose" in schema else ()
        pose_keys = tuple(k for k in derivable if k in schema) if schema else derivable if poses_on else ()
        ee_on = self.streams["cmd_ee_delta"].latest is not None
        keys = {"pose": pose_keys, "cmd_ee_delta": ("cmd_ee_delta" in schema) if schema else ee_on}
        ignored = []
        unrecorded = [k for k in derivable if k not in pose_keys]
        if poses_on and unrecorded:
            ignored.append(f"{topics.OBJECT_POSES} ({', '.join(unrecorded)})")
        if ee_on and not keys["cmd_ee_delta"]:
            ignored.append(topics.TELEOP_EE_DELTA)
        if ignored:
            self.get_logger().warning(f"{', '.join(ignored)} published but not recorded: the store's episodes have "
                                      "no such key (use a new store to record it)")
        if pose_keys and not poses_on:
            return False, (f"cannot start: the store records {list(pose_keys)} but {topics.OBJECT_POSES} has no "
                           "message (is the sim driver running?)")
        if schema:
            bad = self._image_size_mismatch(schema)
            if bad:
                return False, f"cannot start: {bad}"
        try:  # an episode that cannot fit is refused here, not failed mid-way
            self.disk.check_start(self._rate(), self.params.max_episode_s)
        except PostBCError as exc:
            return False, f"cannot start: {exc}"
        self.error = None
        writer = self.store.episode_writer(task=self.params.task, source=self.params.source,
                                           operator=self.params.operator, flush_bytes=self.params.flush_bytes,
                                           background=True)
        self._rec = Episode(writer=writer, index=self.store.n_episodes, start=self._now(), start_wall=time.time(),
                            keys=keys)
        self._pending = None
        self._episode_rate = EpisodeRate(self.disk)
        for s in self.streams.values():
            s.reset_counts()
        self.get_logger().info(f"episode {self._rec.index}: recording at {self.params.control_hz:g} Hz")
        return True, f"recording episode {self._rec.index}"

    def stop(self) -> Future | None:
        """Commit the episode (on the worker thread); None when not recording."""
        with self._lock:
            return self._end(discard=False, reason="stop") if self._rec is not None else None

    def discard(self) -> Future | None:
        with self._lock:
            return self._end(discard=True, reason="discard") if self._rec is not None else None

    def _end(self, *, discard: bool, reason: str) -> Future:
        """Detach the episode (the tick stops writing to it) and commit / discard it on the worker. Lock held."""
        rec, self._rec, self._pending = self._rec, None, None
        if self._episode_rate is not None and self._episode_rate.rate():
            self._store_rate = self._episode_rate.rate()  # until the commit measures the store again
        self._episode_rate = None
        now = self._now()
        label = rec.label
        if label is None and self.params.auto_label_success:
            label = rec.success_seen
        summary = {"index": rec.index, "duration_s": round(now - rec.start, 3),
                   "missed_ticks": rec.missed_ticks, "reason": reason, "success": label,
                   "streams": {k: s.counts(now) for k, s in self.streams.items() if s.latest is not None}}

        def finish():
            with rec.write_lock:  # waits for a row the tick is writing, then closes the episode to further rows
                rec.open = False
            summary["steps"] = rec.steps
            if discard or rec.steps == 0:
                rec.writer.discard()
                summary["committed"] = False
                why = reason if discard else "no complete step (stopped before the second tick)"
                self.get_logger().info(f"episode {rec.index} discarded ({why})")
            else:
                rec.writer.commit(success=label)
                summary["committed"] = True
                self._store_rate = rate_from_store(self.store, self.params.control_hz)
                late = {k: v["late"] for k, v in summary["streams"].items() if v["late"]}
                dropped = {k: v["dropped"] for k, v in summary["streams"].items() if v["dropped"]}
                self.get_logger().info(f"episode {rec.index} committed ({reason}): {rec.steps} steps, "
                                       f"{summary['duration_s']:.1f} s, success={label}, late={late}, "
                                       f"dropped={dropped}, missed ticks={rec.missed_ticks}")
            self.last_episode = summary
            return summary

        self._job = self._worker.submit(finish)
        return self._job

    def label(self, success: bool) -> tuple[bool, str]:
        """Label the recording episode (applied at commit) or, when none records, the last committed one."""
        with self._lock:
            if self._rec is not None:
                self._rec.label = bool(success)
                return True, f"episode {self._rec.index} (recording) labelled success={bool(success)}"

        def relabel():
            if not self.store.n_episodes:
                raise PostBCError("no episode to label: the store is empty and nothing is recording")
            self.store.set_label(-1, bool(success))
            if self.last_episode is not None and self.last_episode.get("committed"):
                self.last_episode["success"] = bool(success)
            return self.store.n_episodes - 1

        with self._lock:
            self._job = job = self._worker.submit(relabel)
        try:
            i = job.result()
        except PostBCError as e:
            return False, str(e)
        return True, f"episode {i} labelled success={bool(success)}"

    # -- services / events --------------------------------------------------------------------------------------
    def _srv_start(self, req, res):
        res.success, res.message = self.start(wait=self.params.start_timeout)
        return res

    def _srv_stop(self, req, res):
        res.success, res.message = self._finish(self.stop(), "stop")
        return res

    def _srv_discard(self, req, res):
        res.success, res.message = self._finish(self.discard(), "discard")
        return res

    def _srv_label(self, req, res):
        res.success, res.message = self.label(req.data)
        return res

    def _finish(self, job: Future | None, what: str) -> tuple[bool, str]:
        if job is None:
            return False, f"nothing to {what}: not recording"
        try:
            s = job.result()
        except PostBCError as e:
            return False, f"{what} failed: {e}"
        if not s["committed"]:
            return what == "discard", f"episode {s['index']} discarded ({s['steps']} steps)"
        return True, f"episode {s['index']} committed: {s['steps']} steps, {s['duration_s']:.2f} s"

    def _on_event(self, msg: String) -> None:
        ev = msg.data.strip().lower()
        if ev == "start":
            ok, text = self.start(wait=self.params.start_timeout)
        elif ev in ("stop", "discard"):
            ok = (self.stop() if ev == "stop" else self.discard()) is not None
            text = "" if ok else f"nothing to {ev}: not recording"
        elif ev in ("success", "failure"):
            ok, text = self.label(ev == "success")
        else:
            ok, text = False, f"unknown episode event {msg.data!r}; send start, stop, discard, success or failure"
        if not ok:
            self.get_logger().warning(f"{topics.EPISODE_EVENTS} {msg.data!r}: {text}")

    # -- status -------------------------------------------------------------------------------------------------
    def _rate(self) -> float | None:
        """Bytes per second of recording now: measured during the episode, else what the store's episodes took."""
        er = self._episode_rate
        measured = er.rate() if er is not None else None
        return measured if measured is not None else self._store_rate

    def _check_disk(self) -> dict:
        """The disk's status; warns when it turns low, and stops (commits) a recording episode when the reserve is
        reached, so what was recorded is kept."""
        d = self.disk.status(self._rate())
        if d["low"] and not self._disk_low:
            left = "unknown" if d["minutes_left"] is None else f"{d['minutes_left']:.1f}"
            self.get_logger().warning(f"disk of {self.params.store} is low: {d['free_bytes'] / 1e6:.0f} MB free, "
                                      f"{left} minutes of recording left at the current rate")
        self._disk_low = d["low"]
        with self._lock:
            if self._rec is not None and self.disk.usable_bytes() <= 0:
                self.get_logger().error(f"disk of {self.params.store} reached its reserve: stopping and committing "
                                        f"episode {self._rec.index}")
                self.error = "disk full: episode stopped"
                self._end(discard=False, reason="disk_full")
        return d

    def status(self) -> dict:
        now = self._now()
        with self._lock:
            rec = self._rec
            out = {"store": self.params.store, "episodes": self.store.n_episodes, "recording": rec is not None,
                   "control_hz": self.params.control_hz,
                   "streams": {k: s.counts(now) for k, s in self.streams.items()},
                   "last_episode": self.last_episode, "error": self.error,
                   "disk": self.disk.status(self._rate())}
            if rec is not None:
                out["episode"] = {"index": rec.index, "steps": rec.steps, "duration_s": round(now - rec.start, 3),
                                  "missed_ticks": rec.missed_ticks, "label": rec.label}
        return out

    def publish_status(self) -> None:
        self._check_disk()
        self.pub_status.publish(String(data=json.dumps(self.status())))

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def destroy_node(self):
        self._tick_timer.cancel()
        self._status_timer.cancel()
        with self._lock:
            if self._rec is not None:
                self.get_logger().warning(f"shutting down while recording episode {self._rec.index}: discarding it "
                                          "(stop it first to keep it)")
                self._end(discard=True, reason="shutdown")
        self._worker.shutdown(wait=True)
        self.store.close()
        super().destroy_node()


def main(args=None):
    node_main(Recorder, args)


if __name__ == "__main__":
    main()
