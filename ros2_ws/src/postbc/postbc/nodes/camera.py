"""camera node: /<camera>/image_raw (rgb8) + /<camera>/camera_info (+ depth) for one camera, SENSOR_QOS.

backend "realsense": a postbc_core RealSenseCamera read by a thread of this node. header.stamp = the frame's
hardware timestamp mapped into the node's clock by a fixed offset: at the first frame after each (re)connect,
offset = now - device_time, then stamp = device_time + offset. Frame-to-frame timing is therefore the device's (no
host scheduling jitter), and stamps are comparable with every other stamp of the graph. librealsense's default
"global time" already maps the device clock onto the host clock with drift correction, so the offset stays
constant; with a raw hardware clock domain the offset is re-measured whenever a stamp would lie in the future
(drift can then only make stamps older, never acausal). A read timeout or failure marks the camera disconnected
and retries `connect` with exponential backoff (reconnect_backoff .. reconnect_backoff_max s); frames lost are
counted from gaps in the device frame counter. A reconnect reopens the same device (its serial is kept), so an
unplugged camera never takes over another camera's device. A camera still disconnected after `reconnect_timeout`
s ends the node with an error and exit status 2 (the error is raised from a timer, so the executor's spin ends and
run_node exits), so a launch that stops on a node's exit stops instead of recording without that camera. A device
missing at start ends the node the same way, with an error naming the serial and the fix. Several cameras without
serials: the bringup gives the k-th camera `index` k, the k-th connected RealSense sorted by serial
(postbc_core.cameras.realsense.select_serial); the node logs which serial each camera took.

backend "sim": renders the MuJoCo twin by mirroring the sim driver: the same task model, the arm from
/joint_states (fingers left = +g, right = -g), the free bodies from /postbc/sim/object_poses ([0] = the task
object, then WidowXSim.scene_bodies() order), at `fps` on the node clock (sim time). header.stamp = the stamp of
the /joint_states message the image reflects; a tick without a new joint state publishes nothing (the twin did
not move, a frame would only repeat); nothing is published before the first /joint_states. Rendering runs on one thread of this node (an OpenGL context belongs to one
thread). Mocap bodies (push_to_target's target marker) are not published by the driver and stay at their MJCF
position.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseArray
from postbc_core.errors import ConfigError, PostBCError
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState

from postbc import conversions as cv
from postbc import topics
from postbc.node_main import main as node_main
from postbc.params import declare

BACKENDS = ("realsense", "sim")


@dataclass
class Params:
    backend: str = "realsense"
    """"realsense" (a D4xx through pyrealsense2) or "sim" (renders the MuJoCo twin the sim driver runs)."""
    camera: str = "front"
    """Camera name: topics /<camera>/image_raw and /<camera>/camera_info; in sim also the MJCF camera name."""
    fps: float = 30.0
    """Frame rate (Hz): 6/15/30/60 on a RealSense; in sim lower (e.g. 10 = the control rate), on the node clock."""
    width: int = 640
    """Image width (px)."""
    height: int = 480
    """Image height (px)."""
    serial: str = ""
    """realsense: device serial number; "" = by `index`, or the only connected device."""
    index: int = -1
    """realsense, when serial is "": the index-th connected RealSense sorted by serial (the bringup gives its k-th
    camera k); -1 = the only connected device (an error listing the serials if there are several)."""
    camera_info_file: str = ""
    """camera_info YAML from `postbc calibrate intrinsics`; overrides the device's / twin's intrinsics."""
    depth: bool = False
    """Also publish /<camera>/depth/image_raw (16UC1 millimetres, aligned to color)."""
    task: str = "lift_cube"
    """sim: the task whose model the driver runs (postbc_core.sim.registry name)."""
    read_timeout: float = 1.0
    """realsense: seconds without a frame before the camera counts as disconnected."""
    reconnect_backoff: float = 0.5
    """realsense: first wait (s) before a reconnect attempt; doubles after each failure."""
    reconnect_backoff_max: float = 5.0
    """realsense: longest wait (s) between reconnect attempts."""
    reconnect_timeout: float = 30.0
    """realsense: seconds a disconnected camera may take to come back (e.g. replugged) before the node exits with
    status 2; 0 = keep trying forever."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: choose one of {BACKENDS}")
        if not self.camera or "/" in self.camera or not self.camera.replace("_", "").isalnum():
            raise ConfigError(f"camera={self.camera!r}: give a plain name such as 'front' or 'wrist'")
        if not 0.0 < self.fps <= 90.0:
            raise ConfigError(f"fps={self.fps}: must be in (0, 90] Hz")
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"image size {self.width}x{self.height}: use at least 8x8 pixels")
        if self.read_timeout <= 0 or self.reconnect_backoff <= 0 or self.reconnect_backoff_max < self.reconnect_backoff:
            raise ConfigError(f"read_timeout={self.read_timeout}, reconnect_backoff={self.reconnect_backoff}, "
                              f"reconnect_backoff_max={self.reconnect_backoff_max}: need timeouts > 0 and "
                              "reconnect_backoff_max >= reconnect_backoff")
        if self.index < -1:
            raise ConfigError(f"index={self.index}: give the k-th RealSense sorted by serial (k >= 0) or -1 for the "
                              "only connected device")
        if self.reconnect_timeout < 0:
            raise ConfigError(f"reconnect_timeout={self.reconnect_timeout}: give seconds >= 0 (0 = retry forever)")


class Camera(Node):
    """One camera. `camera_factory(RealSenseConfig) -> postbc_core Camera` replaces the RealSense (tests)."""

    def __init__(self, node_name: str = "camera", *, context=None, parameter_overrides=None, namespace="",
                 camera_factory: Callable | None = None):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self.params = p = declare(self, Params)
        self.frame_id = f"{p.camera}_color_optical_frame"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_published = 0
        self.frames_dropped = 0  # realsense: gaps in the device frame counter
        self.reconnects = 0
        self.disconnects = 0
        self.connected = False
        self.serial = ""  # realsense: the device streamed from (kept across reconnects)
        self.fatal: PostBCError | None = None  # set by the reader thread when the camera gave up
        self._info_override = None
        if p.camera_info_file:
            from postbc_core.cameras.calibration.solve import load_camera_info

            self._info_override = load_camera_info(p.camera_info_file)
            if (self._info_override.width, self._info_override.height) != (p.width, p.height):
                raise ConfigError(f"camera_info_file {p.camera_info_file} is for {self._info_override.width}x"
                                  f"{self._info_override.height} images but width x height is {p.width}x{p.height}; "
                                  "calibrate at the streamed size or change width/height")
        self.pub_image = self.create_publisher(Image, topics.image_topic(p.camera), topics.SENSOR_QOS)
        self.pub_info = self.create_publisher(CameraInfo, topics.camera_info_topic(p.camera), topics.SENSOR_QOS)
        self.pub_depth = (self.create_publisher(Image, topics.depth_topic(p.camera), topics.SENSOR_QOS) if p.depth
                          else None)
        if p.backend == "realsense":
            self._init_realsense(camera_factory)
        else:
            self._init_sim()

    # -- publishing ---------------------------------------------------------------------------------------------
    def _publish(self, color: np.ndarray, depth: np.ndarray | None, stamp: float, intrinsics) -> None:
        intr = self._info_override or intrinsics
        self.pub_image.publish(cv.image_msg(color, stamp, self.frame_id))
        self.pub_info.publish(cv.camera_info_msg(intr, stamp, self.frame_id))
        if self.pub_depth is not None and depth is not None:
            self.pub_depth.publish(cv.image_msg(depth, stamp, self.frame_id, encoding="16UC1"))
        self.frames_published += 1

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- realsense ----------------------------------------------------------------------------------------------
    def _init_realsense(self, camera_factory) -> None:
        from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

        p = self.params
        # The node owns reconnects (backoff, without blocking anyone); the library's own retries would only
        # stretch a failed read to several timeouts.
        index = None if p.serial or p.index < 0 else p.index
        cfg = RealSenseConfig(serial=p.serial or None, index=index, width=p.width, height=p.height,
                              fps=round(p.fps), depth=p.depth, name=p.camera, reconnect_attempts=0)
        self._cam = (camera_factory or RealSenseCamera)(cfg)
        which = (f"serial {p.serial!r}" if p.serial else f"#{index} sorted by serial" if index is not None
                 else "(any serial)")
        try:
            self._cam.connect()
        except PostBCError as e:
            raise PostBCError(f"camera node {p.camera!r}: cannot open the RealSense {which}: {e}. Fix: plug the "
                              "camera into a USB 3 port, or set `serial` to one listed by `rs-enumerate-devices`; "
                              "for the twin use backend:=sim") from e
        self.serial = getattr(self._cam, "serial", None) or p.serial
        self.get_logger().info(f"camera {p.camera}: RealSense {self.serial} ({which}); pin it with `serial` "
                               f"(bringup camera_serials) if this is not the {p.camera} camera")
        self.connected = True
        self._offset: float | None = None
        self._last_index: int | None = None
        self._down_since: float | None = None
        # The reader thread cannot end the process itself; a timer raises its fatal error in the executor, whose
        # spin then ends (run_node prints it and exits 2).
        self.create_timer(0.2, self._raise_fatal)
        self._thread = threading.Thread(target=self._realsense_loop, name=f"camera-{p.camera}", daemon=True)
        self._thread.start()

    def _raise_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    def _realsense_loop(self) -> None:
        p = self.params
        backoff = p.reconnect_backoff
        while not self._stop.is_set():
            if not self.connected:
                down = time.monotonic() - self._down_since
                if p.reconnect_timeout > 0 and down > p.reconnect_timeout:
                    self.fatal = PostBCError(
                        f"camera node {p.camera!r}: RealSense {self.serial} disconnected and not back after "
                        f"{down:.0f} s (reconnect_timeout={p.reconnect_timeout:g}); exiting so the launch stops. Fix: "
                        "replug the camera into a USB 3 port and restart; raise reconnect_timeout (0 = wait forever)")
                    self.get_logger().fatal(str(self.fatal))
                    return
                if self._stop.wait(backoff):
                    return
                try:
                    self._cam.connect()
                except Exception as e:  # noqa: BLE001 - any failure means "still unplugged": retry later
                    backoff = min(2.0 * backoff, p.reconnect_backoff_max)
                    self.get_logger().warning(f"camera {p.camera}: reconnect failed ({e}); next try in "
                                              f"{backoff:g} s")
                    continue
                self.connected, backoff = True, p.reconnect_backoff
                self._offset, self._last_index = None, None  # a new stream: new clock anchor and counter
                self.reconnects += 1
                self.get_logger().info(f"camera {p.camera}: RealSense {self.serial} reconnected after "
                                       f"{time.monotonic() - self._down_since:.1f} s (reconnect #{self.reconnects})")
            try:
                frame = self._cam.read(timeout_s=p.read_timeout)
            except Exception as e:  # noqa: BLE001 - a timeout or a USB error: mark disconnected, never crash
                if self._stop.is_set():
                    return
                self.connected, self._down_since = False, time.monotonic()
                self.disconnects += 1
                limit = f"up to {p.reconnect_timeout:g} s" if p.reconnect_timeout > 0 else "until it is back"
                self.get_logger().error(f"camera {p.camera}: read failed ({e}); disconnected, reconnecting {limit} "
                                        f"with backoff {p.reconnect_backoff:g}..{p.reconnect_backoff_max:g} s")
                with contextlib.suppress(Exception):  # the device may already be gone
                    self._cam.close()
                continue
            self._on_frame(frame)

    def _on_frame(self, frame) -> None:
        now = self._now()
        if self._offset is None or frame.device_time + self._offset > now:
            self._offset = now - frame.device_time
        if self._last_index is not None and frame.index > self._last_index + 1:
            lost = frame.index - self._last_index - 1
            self.frames_dropped += lost
            self.get_logger().warning(f"camera {self.params.camera}: {lost} frame(s) lost (device frame "
                                      f"{self._last_index} -> {frame.index}; {self.frames_dropped} in total); check "
                                      "USB bandwidth / CPU load")
        self._last_index = frame.index
        self._publish(frame.color, frame.depth, frame.device_time + self._offset, self._cam.intrinsics)

    # -- sim ----------------------------------------------------------------------------------------------------
    def _init_sim(self) -> None:
        from postbc_core.cameras.sim import mujoco_intrinsics
        from postbc_core.sim import registry

        p = self.params
        self._task = registry.make(p.task)
        self._sim = self._task.sim
        self._intr = mujoco_intrinsics(self._sim.model, p.camera, p.width, p.height)
        self._bodies = self._task.scene_body_names()  # the driver's /postbc/sim/object_poses order
        self._lock = threading.Lock()
        self._joint_msg: JointState | None = None
        self._poses_msg: PoseArray | None = None
        self._last_stamp: float | None = None
        self._request: tuple | None = None
        self._wake = threading.Event()
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, topics.STATE_QOS)
        self.create_subscription(PoseArray, topics.OBJECT_POSES, self._on_poses, topics.STATE_QOS)
        self.create_timer(1.0 / p.fps, self._on_tick)
        self._thread = threading.Thread(target=self._render_loop, name=f"camera-{p.camera}-render", daemon=True)
        self._thread.start()

    def _on_joints(self, msg: JointState) -> None:
        with self._lock:
            self._joint_msg = msg

    def _on_poses(self, msg: PoseArray) -> None:
        with self._lock:
            self._poses_msg = msg

    def _on_tick(self) -> None:
        with self._lock:
            js, poses = self._joint_msg, self._poses_msg
        if js is None:
            return
        stamp = cv.to_sec(js.header.stamp)
        if stamp == self._last_stamp:  # (a driver reset may move sim time backwards: only equality repeats)
            return
        self._last_stamp = stamp
        self._request = (js, poses)  # the render thread takes the newest; a slow render skips ticks
        self._wake.set()

    def _render_loop(self) -> None:
        p = self.params
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            self._wake.clear()
            req, self._request = self._request, None
            if req is None:
                continue
            js, poses = req
            try:
                self._mirror(js, poses)
                rgb, dep = self._sim.render(p.camera, p.width, p.height, depth=p.depth)
            except PostBCError as e:
                self.get_logger().error(f"camera {p.camera}: cannot mirror the driver's state ({e}); frame skipped")
                continue
            if self._stop.is_set():
                break
            self._publish(rgb, dep, cv.to_sec(js.header.stamp), self._intr)
        self._sim.close()  # the renderer's GL context is released by the thread that made it

    def _mirror(self, js: JointState, poses: PoseArray | None) -> None:
        """Set the twin's arm and free bodies to the driver's published state (reset = qpos + mj_forward)."""
        state = cv.joint_state_arrays(js)
        self._sim.reset(qpos=state.joint_pos, gripper=float(state.gripper_pos[0]))
        if poses is None:
            return
        arr = cv.pose_array_arrays(poses)
        if arr.shape[0] != len(self._bodies):
            raise PostBCError(f"/postbc/sim/object_poses has {arr.shape[0]} poses but task {self.params.task!r} has "
                              f"scene bodies {self._bodies}; run the camera with the driver's task")
        for body, pose in zip(self._bodies, arr):
            self._sim.set_body_pose(body, pose[:3], pose[3:])

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def destroy_node(self):
        self._stop.set()
        if self._thread is not None:
            if self.params.backend == "sim":
                self._wake.set()
            self._thread.join(timeout=5.0)
        if self.params.backend == "realsense":
            with contextlib.suppress(Exception):  # a device unplugged at shutdown
                self._cam.close()
        super().destroy_node()


def main(args=None):
    node_main(Camera, args)


if __name__ == "__main__":
    main()
