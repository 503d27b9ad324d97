"""camera node over real rclpy: the sim backend mirrors published joint states / object poses into rendered images
(rate, stamps, camera_info, depth); the realsense backend fails clearly without a device and survives read
failures of an injected camera (reconnect with backoff, drops counted from the frame counter)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseArray
from postbc import conversions as cv
from postbc import topics
from postbc.nodes.camera import Camera
from postbc_core.cameras.base import Frame, Intrinsics
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots.kinematics import HOME_QPOS
from rclpy.parameter import Parameter
from ros_helpers import wait_for
from sensor_msgs.msg import CameraInfo, Image, JointState


def _params(**kw):
    return [Parameter(k, value=v) for k, v in kw.items()]


class Collector:
    def __init__(self, node, msg_type, topic, qos=topics.SENSOR_QOS):
        self.msgs, self.times = [], []
        self._lock = threading.Lock()
        node.create_subscription(msg_type, topic, self._cb, qos)

    def _cb(self, msg):
        with self._lock:
            self.msgs.append(msg)
            self.times.append(time.monotonic())

    def __len__(self):
        return len(self.msgs)


class StatePublisher:
    """/joint_states at `hz` (wall time, stamps = the helper's clock) from a settable arm pose + object poses."""

    def __init__(self, node, hz=50.0):
        self.node = node
        self.q = HOME_QPOS.copy()
        self.poses = None
        self.stamps = set()
        self.pub = node.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
        self.pub_poses = node.create_publisher(PoseArray, topics.OBJECT_POSES, topics.STATE_QOS)
        node.create_timer(1.0 / hz, self._tick)

    def _tick(self):
        t = self.node.get_clock().now().nanoseconds * 1e-9
        msg = cv.joint_state_msg(self.q, 0.03, t)
        self.stamps.add(cv.to_sec(msg.header.stamp))
        if self.poses is not None:
            self.pub_poses.publish(cv.pose_array_msg(self.poses, t))
        self.pub.publish(msg)


def test_sim_camera_publishes_mirrored_images(graph):
    fps, W, H = 10.0, 64, 48
    cam = graph.add(Camera("front_camera", context=graph.context, parameter_overrides=_params(
        backend="sim", camera="front", fps=fps, width=W, height=H, depth=True, task="lift_cube")))
    helper = graph.node("helper")
    images = Collector(helper, Image, topics.image_topic("front"))
    infos = Collector(helper, CameraInfo, topics.camera_info_topic("front"))
    depths = Collector(helper, Image, topics.depth_topic("front"))
    time.sleep(0.5)
    assert len(images) == 0, "the sim camera must not publish before it has a joint state to mirror"
    state = StatePublisher(helper)
    wait_for(lambda: len(images) >= 3, 10.0, what="first sim images")
    n0, t0 = len(images), time.monotonic()
    time.sleep(2.0)
    rate = (len(images) - n0) / (time.monotonic() - t0)
    assert 0.7 * fps <= rate <= 1.2 * fps, f"image rate {rate:.1f} Hz, configured {fps}"

    img, info = images.msgs[-1], infos.msgs[-1]
    assert (img.width, img.height, img.encoding) == (W, H, "rgb8")
    assert img.header.frame_id == info.header.frame_id == "front_color_optical_frame"
    stamps = [cv.to_sec(m.header.stamp) for m in images.msgs]
    assert all(s in state.stamps for s in stamps), "an image stamp must be the stamp of the joint state it shows"
    assert np.all(np.diff(stamps) > 0)
    info_stamps = {cv.to_sec(m.header.stamp) for m in infos.msgs}
    assert set(stamps) <= info_stamps | set(stamps[-2:])  # camera_info shares the image stamps
    from postbc_core.cameras.sim import mujoco_intrinsics

    want = mujoco_intrinsics(cam._sim.model, "front", W, H)
    assert np.allclose(np.reshape(info.k, (3, 3)), want.K) and (info.width, info.height) == (W, H)
    assert depths.msgs and depths.msgs[-1].encoding == "16UC1"
    assert np.any(cv.image_array(depths.msgs[-1]) > 0)

    # Mirroring: the image follows the arm and the object as published, not a simulation of its own.
    home = cv.image_array(images.msgs[-1]).astype(np.int16)
    state.q = HOME_QPOS + np.array([0.9, 0.0, 0.0, 0.0, 0.0, 0.0])
    n = len(images)
    wait_for(lambda: len(images) >= n + 3, 10.0, what="images after moving the arm")
    moved = cv.image_array(images.msgs[-1]).astype(np.int16)
    assert np.abs(moved - home).mean() > 2.0, "the image did not change when the arm moved"
    state.q = HOME_QPOS.copy()
    n = len(images)
    wait_for(lambda: len(images) >= n + 3, 10.0, what="images after moving the arm back")
    back = cv.image_array(images.msgs[-1]).astype(np.int16)
    assert np.abs(back - home).mean() < 0.5, "same joint state, different image: the camera is not a mirror"
    state.poses = [np.array([0.25, 0.12, 0.015, 1.0, 0.0, 0.0, 0.0])]  # the cube, moved
    n = len(images)
    wait_for(lambda: len(images) >= n + 3, 10.0, what="images after moving the cube")
    cube = cv.image_array(images.msgs[-1]).astype(np.int16)
    assert np.abs(cube - home).mean() > 0.2, "the image did not change when the object pose moved"


def test_realsense_missing_device_fails_at_start(ros_context):
    rs = pytest.importorskip("pyrealsense2")
    if len(rs.context().query_devices()):
        pytest.skip("a RealSense is connected to this machine")
    with pytest.raises(PostBCError, match=r"serial '000000000000'.*USB 3"):
        Camera("cam", context=ros_context, parameter_overrides=_params(backend="realsense", serial="000000000000"))


class FlakyCamera:
    """A postbc_core Camera stand-in: frames with a device clock and counter; read fails after `fail_after`
    frames, then `connect` fails `bad_connects` times before the stream comes back."""

    W, H = 32, 24

    def __init__(self, config, *, fail_after=5, bad_connects=2, skip_at=3):
        self.config, self.fail_after, self.bad_connects, self.skip_at = config, fail_after, bad_connects, skip_at
        self.connects, self.reads, self.index, self.is_open = 0, 0, 0, False
        self.device_t0 = 1000.0  # device clock, unrelated to the node clock

    def connect(self):
        self.connects += 1
        if self.connects > 1 and self.bad_connects > 0:
            self.bad_connects -= 1
            raise PostBCError("RealSense FAKE1: no device found")
        self.is_open = True

    @property
    def intrinsics(self):
        return Intrinsics(self.W, self.H, 30.0, 30.0, 15.5, 11.5)

    def read(self, timeout_s=1.0):
        if not self.is_open:
            raise PostBCError("not connected")
        time.sleep(0.036)  # a little slower than the device clock advances: stamps never run ahead of now
        self.reads += 1
        if self.reads == self.fail_after:
            raise PostBCError(f"camera 'front' (RealSense FAKE1): no frame within {timeout_s:.2f} s")
        self.index += 2 if self.index == self.skip_at else 1  # one lost frame on the device
        return Frame(color=np.full((self.H, self.W, 3), self.index % 255, np.uint8), depth=None,
                     device_time=self.device_t0 + 0.033 * self.index, host_time=time.time(), index=self.index)

    def close(self):
        self.is_open = False


def _camera_info_yaml(path, width, height, fx):
    import yaml

    path.write_text(yaml.safe_dump({
        "image_width": width, "image_height": height, "camera_name": "front", "distortion_model": "plumb_bob",
        "camera_matrix": {"rows": 3, "cols": 3, "data": [fx, 0, 15.0, 0, fx, 11.0, 0, 0, 1]},
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.1, -0.05, 0, 0, 0]}}))
    return str(path)


def test_realsense_reconnects_after_read_failure(graph, tmp_path):
    fakes = []

    def factory(cfg):
        fakes.append(FlakyCamera(cfg))
        return fakes[-1]

    with pytest.raises(ConfigError, match="calibrate at the streamed size"):
        Camera("bad", context=graph.context, camera_factory=factory, parameter_overrides=_params(
            backend="realsense", width=32, height=24,
            camera_info_file=_camera_info_yaml(tmp_path / "big.yaml", 640, 480, 600.0)))
    fakes.clear()
    cam = graph.add(Camera("cam", context=graph.context, camera_factory=factory, parameter_overrides=_params(
        backend="realsense", camera="front", width=32, height=24, reconnect_backoff=0.05,
        reconnect_backoff_max=0.2, camera_info_file=_camera_info_yaml(tmp_path / "front.yaml", 32, 24, 40.0))))
    helper = graph.node("helper")
    images = Collector(helper, Image, topics.image_topic("front"))
    infos = Collector(helper, CameraInfo, topics.camera_info_topic("front"))
    wait_for(lambda: cam.reconnects >= 1 and len(images) >= 8, 10.0, what="frames after a reconnect")
    fake = fakes[0]
    assert fake.connects == 4  # start + 2 failed reconnects + the good one; the node survived all of them
    assert cam.connected and cam.frames_dropped == 1
    stamps = np.array([cv.to_sec(m.header.stamp) for m in images.msgs])
    assert np.all(np.diff(stamps) > 0)
    # Stamps are in the node clock's domain (device time + offset), not the device clock's.
    now = graph.nodes[0].get_clock().now().nanoseconds * 1e-9
    assert abs(stamps[-1] - now) < 2.0
    # Within one connection the spacing is the device's (0.033 s per frame index), not the host's receive jitter.
    pre = stamps[:3]
    assert np.allclose(np.diff(pre), 0.033, atol=1e-6)
    # The calibration file's intrinsics replace the device's (30 px focal length in FlakyCamera).
    assert infos.msgs and infos.msgs[-1].k[0] == 40.0 and list(infos.msgs[-1].d)[:2] == [0.1, -0.05]


# ---------------------------------------------------------------- several RealSenses, unplug / replug
def test_bringup_gives_each_camera_its_own_device():
    from postbc import bringup

    specs = {n.name: n.parameters for n in bringup.graph("sim", bringup.Bringup(backend="interbotix"))}
    assert (specs["camera_front"]["index"], specs["camera_wrist"]["index"]) == (0, 1)
    assert "serial" not in specs["camera_front"]
    pinned = {n.name: n.parameters for n in bringup.graph("sim", bringup.Bringup(
        backend="interbotix", camera_serials=("111", "222")))}
    assert pinned["camera_wrist"]["serial"] == "222" and "index" not in pinned["camera_wrist"]
    with pytest.raises(ConfigError, match="index=-2"):
        bringup.graph("sim", bringup.Bringup(backend="interbotix"), {"camera_front": {"index": -2}})


def _software_factory(feeder):
    from postbc_core.cameras.realsense import RealSenseCamera

    return lambda cfg: RealSenseCamera(cfg, devices=feeder.connected)


def test_realsense_nodes_take_distinct_devices_and_survive_replug(graph):
    """Two camera nodes, no serials, two software RealSenses (librealsense's own syncer behind the real node): each
    node streams its own device; an unplugged camera is reported, reopens its own device when replugged (not the
    other camera's), and the other camera keeps streaming meanwhile."""
    rs = pytest.importorskip("pyrealsense2")
    from _realsense_sw import FPS, H, W, Feeder, SoftwareRealSense

    feeder = Feeder({20: SoftwareRealSense(rs, "B2"), 10: SoftwareRealSense(rs, "A1")})
    with feeder:
        cams = {}
        for k, name in enumerate(("front", "wrist")):
            cams[name] = graph.add(Camera(f"camera_{name}", context=graph.context,
                                          camera_factory=_software_factory(feeder), parameter_overrides=_params(
                backend="realsense", camera=name, index=k, width=W, height=H, fps=float(FPS), read_timeout=0.3,
                reconnect_backoff=0.05, reconnect_backoff_max=0.2)))
        helper = graph.node("helper")
        images = {n: Collector(helper, Image, topics.image_topic(n)) for n in cams}
        wait_for(lambda: all(len(c) >= 5 for c in images.values()), 10.0, what="images from both cameras")
        assert (cams["front"].serial, cams["wrist"].serial) == ("A1", "B2")
        assert {int(cv.image_array(m)[0, 0, 0]) for m in images["front"].msgs} == {10}
        assert {int(cv.image_array(m)[0, 0, 0]) for m in images["wrist"].msgs} == {20}

        feeder.unplug(10)
        wait_for(lambda: not cams["front"].connected, 5.0, what="the unplug to be reported")
        assert cams["front"].disconnects == 1
        n_wrist = len(images["wrist"])
        time.sleep(0.5)  # front retries meanwhile: index 0 now points at B2, which it must not take
        assert not cams["front"].connected and cams["front"].serial == "A1"
        assert len(images["wrist"]) > n_wrist + 5, "the other camera must keep streaming"
        feeder.replug(10, rs)
        n_front = len(images["front"])
        wait_for(lambda: cams["front"].reconnects == 1 and len(images["front"]) >= n_front + 5, 10.0,
                 what="frames after the replug")
        assert cams["front"].connected and cams["front"].serial == "A1"
        assert {int(cv.image_array(m)[0, 0, 0]) for m in images["front"].msgs[n_front:]} == {10}

        # A hub glitch: both cameras drop, the wrist camera's device comes back first. Index 0 then points at B2;
        # the front camera must wait for A1 instead of taking B2 (the cameras would silently swap).
        feeder.unplug(10)
        feeder.unplug(20)
        wait_for(lambda: not cams["front"].connected and not cams["wrist"].connected, 5.0, what="both unplugs")
        feeder.replug(20, rs)
        n = {k: len(v) for k, v in images.items()}
        wait_for(lambda: cams["wrist"].connected and len(images["wrist"]) >= n["wrist"] + 5, 10.0,
                 what="the wrist camera back")
        time.sleep(0.5)  # several reconnect attempts of the front camera meanwhile
        assert not cams["front"].connected and len(images["front"]) == n["front"]
        feeder.replug(10, rs)
        wait_for(lambda: cams["front"].connected and len(images["front"]) >= n["front"] + 5, 10.0,
                 what="the front camera back")
        assert {int(cv.image_array(m)[0, 0, 0]) for m in images["front"].msgs[n["front"]:]} == {10}
        assert {int(cv.image_array(m)[0, 0, 0]) for m in images["wrist"].msgs[n["wrist"]:]} == {20}


EXIT_SCRIPT = r"""
import functools, sys, threading
import pyrealsense2 as rs
from _realsense_sw import FPS, H, W, Feeder, SoftwareRealSense
from postbc.node_main import run_node
from postbc.nodes.camera import Camera
from postbc_core.cameras.realsense import RealSenseCamera
from rclpy.parameter import Parameter

feeder = Feeder({10: SoftwareRealSense(rs, "A1")}).__enter__()
threading.Timer(2.0, feeder.unplug, args=(10,)).start()  # unplugged for good after 2 s of streaming
params = dict(backend="realsense", camera="front", index=0, width=W, height=H, fps=float(FPS), read_timeout=0.3,
              reconnect_backoff=0.05, reconnect_backoff_max=0.2, reconnect_timeout=1.0)
node = functools.partial(Camera, "camera_front", camera_factory=lambda cfg: RealSenseCamera(cfg, devices=feeder.connected),
                         parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
sys.exit(run_node(node, []))
"""


def test_realsense_node_exits_2_when_the_camera_stays_unplugged():
    """The node's own process (run_node, as `ros2 run` / a launch starts it): a camera that does not come back within
    reconnect_timeout ends it with exit status 2 and an error naming the serial and the fix, no traceback."""
    import os
    import subprocess
    import sys

    pytest.importorskip("pyrealsense2")
    from _paths import ROOT

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "ros2_ws" / "src" / "postbc"),
                                                      os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "error: camera node 'front': RealSense A1 disconnected and not back after" in r.stderr
    assert "reconnect_timeout=1" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60
