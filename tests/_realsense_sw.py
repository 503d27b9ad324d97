"""A software RealSense for the camera tests: librealsense's own rs.software_device (color + depth sensors, real
syncer and align), whose frames a test injects. Shared by tests/test_cameras.py and tests/ros/test_ros_camera.py."""

from __future__ import annotations

import threading

import numpy as np

W, H, FPS = 64, 48, 30


def _intr(rs, f, cx, cy):
    i = rs.intrinsics()
    i.width, i.height, i.fx, i.fy, i.ppx, i.ppy = W, H, f, f + 1.0, cx, cy
    i.model = rs.distortion.brown_conrady
    i.coeffs = [0.0, 0.0, 0.0, 0.0, 0.0]
    return i


class SoftwareRealSense:
    """A software RealSense: a color and a depth sensor whose frames the test injects."""

    def __init__(self, rs, serial="SW0001"):
        self.rs, self.serial = rs, serial
        self.dev = rs.software_device()
        self.dev.register_info(rs.camera_info.serial_number, serial)
        self.depth_s = self.dev.add_sensor("Stereo Module")
        self.color_s = self.dev.add_sensor("RGB Camera")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps = rs.stream.depth, 0, 0, W, H, FPS
        vs.bpp, vs.fmt, vs.intrinsics = 2, rs.format.z16, _intr(rs, 50.0, W / 2, H / 2)
        self.dprof = self.depth_s.add_video_stream(vs)
        self.depth_s.add_read_only_option(rs.option.depth_units, 0.001)
        cs = rs.video_stream()
        cs.type, cs.index, cs.uid, cs.width, cs.height, cs.fps = rs.stream.color, 0, 1, W, H, FPS
        self.color_intr = _intr(rs, 55.0, 31.5, 23.25)
        cs.bpp, cs.fmt, cs.intrinsics = 3, rs.format.rgb8, self.color_intr
        self.cprof = self.color_s.add_video_stream(cs)
        ext = rs.extrinsics()
        ext.rotation, ext.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        self.dprof.register_extrinsics_to(self.cprof, ext)
        self.dev.create_matcher(rs.matchers.dlr_c)
        self._keep = []  # librealsense reads the pixel buffers after on_video_frame returns

    def inject(self, k, color, depth):
        rs = self.rs
        for sensor, prof, arr, bpp in ((self.depth_s, self.dprof, depth, 2), (self.color_s, self.cprof, color, 3)):
            f = rs.software_video_frame()
            f.pixels = arr
            self._keep.append(arr)
            f.bpp, f.stride, f.timestamp = bpp, W * bpp, k * 1000.0 / FPS
            f.domain, f.frame_number, f.profile = rs.timestamp_domain.hardware_clock, k, prof.as_video_stream_profile()
            sensor.on_video_frame(f)


class Feeder:
    """Injects frames into software RealSenses at ~FPS on a thread, like plugged-in cameras streaming. Each device's
    color is its `value` in every pixel (so a test can tell which device an image came from); `plugged` is the
    "connected" list a RealSenseCamera(devices=feeder.connected) sees; unplug/replug change it."""

    def __init__(self, devices: dict[int, SoftwareRealSense]):
        self.devices = dict(devices)  # value -> device
        self.plugged = list(self.devices)
        self._k = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def connected(self):
        with self._lock:
            return [self.devices[v].dev for v in self.plugged]

    def unplug(self, value):
        with self._lock:
            self.plugged.remove(value)

    def replug(self, value, rs):
        """A replugged camera is a new librealsense device object with the same serial."""
        with self._lock:
            self.devices[value] = SoftwareRealSense(rs, serial=self.devices[value].serial)
            self.plugged.append(value)

    def _run(self):
        while not self._stop.wait(1.0 / FPS):
            self._k += 1
            with self._lock:
                live = [(v, self.devices[v]) for v in self.plugged]
            for v, sw in live:
                sw.inject(self._k, np.full((H, W, 3), v, np.uint8), np.full((H, W), 500 + v, np.uint16))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2.0)
