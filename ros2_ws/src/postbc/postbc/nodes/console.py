"""console node: the operator's browser console (camera views, joint state, recorder / finetune / policy / driver
status, episode controls, e-stop) served on http://127.0.0.1:8080/ by every launch profile (`console:=false` leaves
it out).

It uses the graph's own interfaces, nothing else: the status topics the nodes publish (/postbc/driver/status,
/postbc/recorder/status, /postbc/finetune/status, /postbc/policy/diagnostics), /joint_states, the camera image
topics, /rosout (warnings and errors of the other nodes appear on the page), and the nodes' services
(recorder ~/start ~/stop ~/discard ~/label; finetune_manager ~/start ~/pause ~/abort ~/label; robot_driver ~/go_home
~/reset ~/enable; policy ~/enable). The e-stop button publishes True on the latched /postbc/estop; release and re-arm
are the README's two CLI lines: publish False there, then call /robot_driver/enable true. The console publishes on
/postbc/estop but does not subscribe to it (see __init__).

Never blocking the graph: every subscription callback stores a reference to the newest message and returns (no
conversion, no encoding, no locks shared with the web server beyond a dict assignment); the web server
(postbc/console_web.py) runs on its own thread, at a lower scheduling priority (`nice`). A camera is subscribed to
only while some browser shows it, and its frames are downscaled (`view_width`) and JPEG-encoded at most `stream_hz`
times a second, one encode shared by every browser. Service calls wait for their answer on web worker threads, never
on the executor. benchmarks/bench_ros_console.py measures what two browsers cost the control loop.

Access: bound to 127.0.0.1 by default; another interface needs an access token (`token`, or $POSTBC_CONSOLE_TOKEN),
checked before anything starts (postbc.console_web.check_bind).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from postbc_core.errors import ConfigError
from rcl_interfaces.msg import Log
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from postbc import conversions as cv
from postbc import topics
from postbc.console_web import ConsoleServer, FrameHub, check_bind, resolve_token
from postbc.node_main import main as node_main
from postbc.params import declare

# page action -> (node, service, type). "release" is a publish (see the module doc), not a service.
ACTIONS = {
    "record_start": ("recorder", "start", Trigger), "record_stop": ("recorder", "stop", Trigger),
    "record_discard": ("recorder", "discard", Trigger), "record_label": ("recorder", "label", SetBool),
    "finetune_start": ("finetune_manager", "start", Trigger), "finetune_pause": ("finetune_manager", "pause", Trigger),
    "finetune_abort": ("finetune_manager", "abort", Trigger),
    "finetune_label": ("finetune_manager", "label", SetBool),
    "home": ("robot_driver", "go_home", Trigger), "reset": ("robot_driver", "reset", Trigger),
    "rearm": ("robot_driver", "enable", SetBool), "policy_enable": ("policy", "enable", SetBool),
}
STATUS_TOPICS = {"driver": topics.DRIVER_STATUS, "recorder": topics.RECORDER_STATUS,
                 "finetune": topics.FINETUNE_STATUS, "policy": topics.POLICY_DIAGNOSTICS}
ROSOUT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)  # rcl's /rosout keeps recent lines for joiners
IDLE_S = 5.0  # a page that has not polled for this long is gone: /joint_states is unsubscribed
WARN = 30  # rcl_interfaces/Log levels: 10 debug, 20 info, 30 warn, 40 error, 50 fatal


@dataclass
class Params:
    host: str = "127.0.0.1"
    """Interface to serve on: 127.0.0.1 = this machine only (an SSH tunnel reaches it); another address needs
    `token`."""
    port: int = 8080
    """TCP port (0 = any free port; the node logs the URL)."""
    token: str = ""
    """Access token every request must carry (open http://host:port/?token=...); empty = $POSTBC_CONSOLE_TOKEN,
    else none (allowed on 127.0.0.1 only)."""
    cameras: tuple[str, ...] = ()
    """Cameras shown, from /<camera>/image_raw, e.g. [front, wrist]."""
    stream_hz: float = 10.0
    """Most camera frames per second JPEG-encoded and sent per camera, however many browsers watch (0.1..60)."""
    jpeg_quality: int = 75
    """JPEG quality of the camera views (1..100)."""
    view_width: int = 320
    """Camera views wider than this (pixels) are downscaled before encoding (0 = native size: ~4x the encode time
    and bandwidth of a 640x480 camera at 320)."""
    nice: int = 10
    """Scheduling niceness of the web server's threads (0..19; Linux): under load they yield the CPU to the control
    threads of the same process (`postbc ros run` composes every node in one)."""
    profile: str = ""
    """The launch profile (sim, record_demos, policy, finetune): which panels the page opens with."""
    service_timeout: float = 10.0
    """Seconds a button waits for the node's service to answer before the page reports no answer."""

    def __post_init__(self):
        check_bind(self.host, self.port, resolve_token(self.token))
        if not 0.1 <= self.stream_hz <= 60.0:
            raise ConfigError(f"stream_hz={self.stream_hz}: give 0.1..60 frames per second per camera")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality={self.jpeg_quality}: give 1..100")
        if self.view_width < 0:
            raise ConfigError(f"view_width={self.view_width}: give pixels >= 0 (0 = native size)")
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"nice={self.nice}: give 0..19 (0 = the process's own priority)")
        if self.service_timeout <= 0:
            raise ConfigError(f"service_timeout={self.service_timeout}: give seconds > 0")


def to_rgb(msg: Image) -> np.ndarray:
    """A camera Image (rgb8 / bgr8 / mono8 / 16UC1 depth) -> (H, W, 3) uint8 RGB for the JPEG view."""
    a = cv.image_array(msg)
    if a.dtype != np.uint8:  # depth (mm): scaled to 0..255 over 0..2 m for a view
        a = np.clip(a.astype(np.float32) * (255.0 / 2000.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return a


class Console(Node):
    def __init__(self, node_name: str = "console", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self.server: ConsoleServer | None = None
        self.params = p = declare(self, Params)
        group = ReentrantCallbackGroup()
        self._group = group
        self._camera_subs: dict[str, object] = {}
        self.hub = FrameHub(p.cameras, p.stream_hz, p.jpeg_quality, to_rgb, width=p.view_width,
                            on_watch=self._watch_camera)
        self._lock = threading.Lock()
        self._status: dict[str, tuple[dict, float]] = {}
        self._joints: JointState | None = None
        self._joint_times: deque[float] = deque(maxlen=300)
        self._log: deque[dict] = deque(maxlen=60)
        self._episodes: dict[int, dict] = {}
        # /joint_states (100 Hz) only while a page polls: an unwatched console costs the control process nothing
        # but its few status subscriptions (2 Hz each).
        self._joint_sub = None
        self._last_poll = -1e9
        self._sub_lock = threading.Lock()
        self.create_timer(1.0, self._drop_idle_joint_sub, callback_group=group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        for key, topic in STATUS_TOPICS.items():
            self.create_subscription(String, topic, lambda m, k=key: self._on_status(k, m), topics.STATUS_QOS,
                                     callback_group=group)
        # No subscription on /postbc/estop (the driver's status says whether it is latched): the README's
        # `ros2 topic pub --once` publishes as soon as ONE subscriber matches and exits; were the console that one,
        # the driver could miss the e-stop (tests/ros/test_ros_launch.py runs that line against this graph).
        self.create_subscription(Log, "/rosout", self._on_rosout, ROSOUT_QOS, callback_group=group)
        self._estop_pub = self.create_publisher(Bool, topics.ESTOP, topics.LATCHED_QOS)
        self._action_clients = {name: self.create_client(t, f"/{node}/{srv}", callback_group=group)
                                for name, (node, srv, t) in ACTIONS.items()}
        # The socket is bound here: a bad address or a busy port is a ConfigError before the node runs.
        self.server = ConsoleServer(self, p.host, p.port, resolve_token(p.token), nice=p.nice)
        self.server.start()
        self.get_logger().info(f"operator console on {self.server.url}"
                               + (" (token required: open it with ?token=...)" if self.server.token else ""))

    # -- subscriptions: store and return ----------------------------------------------------------------------
    def _on_joints(self, msg: JointState) -> None:
        self._joints = msg
        self._joint_times.append(time.monotonic())

    def _drop_idle_joint_sub(self) -> None:
        with self._sub_lock:
            if self._joint_sub is not None and time.monotonic() - self._last_poll > IDLE_S:
                self.destroy_subscription(self._joint_sub)
                self._joint_sub = None
                self._joints = None
                self._joint_times.clear()

    def _watch_camera(self, camera: str, on: bool) -> None:
        """Subscribe to `camera` while a browser shows it (FrameHub.watch): unwatched frames are not even
        deserialized in this process (2 x 640x480 at 30 Hz: ~0.3 of a core here)."""
        if on:
            self._camera_subs[camera] = self.create_subscription(
                Image, topics.image_topic(camera), lambda m, c=camera: self.hub.put(c, m), topics.SENSOR_QOS,
                callback_group=self._group)
        else:
            sub = self._camera_subs.pop(camera, None)
            if sub is not None and self.context.ok():  # a stream that ends at shutdown: the node goes anyway
                self.destroy_subscription(sub)

    def _on_status(self, key: str, msg: String) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            data = {"error": f"unreadable status JSON: {msg.data[:120]!r}"}
        self._status[key] = (data, time.monotonic())
        if key == "recorder" and isinstance(data.get("last_episode"), dict):
            ep = data["last_episode"]
            if "index" in ep and "committed" in ep:
                self._episodes[int(ep["index"])] = {k: ep.get(k) for k in
                                                    ("index", "steps", "duration_s", "success", "committed",
                                                     "reason", "missed_ticks")}

    def _on_rosout(self, msg: Log) -> None:
        if msg.level >= WARN and msg.name != self.get_fully_qualified_name().lstrip("/"):
            self._note(int(msg.level), msg.name, msg.msg)

    def _note(self, level: int, source: str, text: str) -> None:
        with self._lock:
            self._log.append({"time": time.time(), "level": {30: "warn", 40: "error", 50: "fatal"}.get(level, "info"),
                              "source": source, "message": text})

    # -- what the web server reads (its threads) ----------------------------------------------------------------
    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._sub_lock:
            self._last_poll = now
            if self._joint_sub is None:
                self._joint_sub = self.create_subscription(JointState, topics.JOINT_STATES, self._on_joints,
                                                           topics.STATE_QOS, callback_group=self._group)
        status = {k: {"data": v, "age_s": round(now - t, 2)} for k, (v, t) in list(self._status.items())}
        js = self._joints
        times = list(self._joint_times)
        recent = [t for t in times if now - t <= 2.0]
        joints = None
        if js is not None:
            joints = {"names": list(js.name), "position": [round(float(x), 4) for x in js.position],
                      "rate_hz": round(len(recent) / 2.0, 1), "age_s": round(now - times[-1], 2) if times else None}
        with self._lock:
            log = list(self._log)
        return {"profile": self.params.profile, "cameras": list(self.hub.cameras), "status": status,
                "joints": joints,
                "episodes": [self._episodes[i] for i in sorted(self._episodes, reverse=True)][:50],
                "frames": {c: self.hub.received[c] for c in self.hub.cameras}, "log": log}

    def estop(self) -> tuple[bool, str]:
        """Latch the e-stop (the driver holds at once and ignores commands until released and re-armed)."""
        self._estop_pub.publish(Bool(data=True))
        self._note(40, "console", "E-STOP pressed on the console")
        self.get_logger().warning("E-STOP pressed on the console")
        return True, "e-stop latched: release, then re-arm to move again"

    def action(self, name: str, value: bool | None) -> tuple[bool, str]:
        """A page button: a service call (its success and message) or the e-stop release publish."""
        if name == "release":
            self._estop_pub.publish(Bool(data=False))
            return True, "e-stop input released (the driver stays latched until re-armed)"
        if name not in ACTIONS:
            return False, f"unknown action {name!r}; known: {sorted([*ACTIONS, 'release'])}"
        node, srv, srv_type = ACTIONS[name]
        client = self._action_clients[name]
        if not client.service_is_ready():
            ok, msg = False, f"/{node}/{srv} is not available (is the {node} node running in this profile?)"
        else:
            req = srv_type.Request()
            if srv_type is SetBool:
                req.data = True if name == "rearm" else bool(value)
            done = threading.Event()
            fut = client.call_async(req)
            fut.add_done_callback(lambda f: done.set())
            if not done.wait(self.params.service_timeout):
                getattr(client, "remove_pending_request", lambda f: None)(fut)  # Humble has it; older may not
                ok, msg = False, f"/{node}/{srv}: no answer in {self.params.service_timeout:g} s"
            else:
                res = fut.result()
                ok, msg = bool(res.success), res.message
        if not ok:
            self._note(40, node, f"{srv}: {msg}")
        return ok, msg

    def destroy_node(self):
        if self.server is not None:
            self.server.stop()
            self.server = None
        super().destroy_node()


def main(args=None):
    node_main(Console, args)


if __name__ == "__main__":
    main()
