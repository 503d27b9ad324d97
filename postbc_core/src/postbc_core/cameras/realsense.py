"""Intel RealSense (D4xx) camera through pyrealsense2: color (RGB8) + depth (Z16) aligned to color with rs.align.

Pin pyrealsense2==2.55.1.6486: 2.56+ embeds Fast DDS and crashes processes that also create rclpy nodes.
Hardware path: rs.pipeline(context) + rs.config (serial, resolution, fps). Test/injection path: construct with
`devices=` (rs.software_device objects, or a callable returning the ones "connected" now, so a test can unplug and
replug them); the chosen device's sensors are opened directly into an rs.syncer, because librealsense 2.55 does not
list software devices in a context (`software_device.add_to(ctx)` leaves `ctx.query_devices()` empty, checked), so a
pipeline cannot select them. Both paths share device selection (`select_serial`), alignment, conversion, timestamps
and intrinsics. Units: depth uint16 millimetres (depth_units 0.001 m assumed; other units are rescaled and logged),
times in seconds.

Device selection (`select_serial`): `serial` names the device; else `index` takes the index-th connected device
sorted by serial (the bringup gives its k-th camera index k, so several cameras without serials get distinct
devices, the same ones on every start); else the only connected device. Serial order, not USB enumeration order,
because enumeration order changes with ports and replugging. Once connected, a camera keeps its device's serial for
every reconnect: after an unplug the index would otherwise point at another camera's device.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from postbc_core.cameras.base import Camera, Frame, Intrinsics
from postbc_core.errors import ConfigError, PostBCError

logger = logging.getLogger(__name__)

INSTALL_HINT = ("pyrealsense2 is not installed: `pip install pyrealsense2==2.55.1.6486` (and Debian's libusb-1.0-0); "
                "newer wheels break rclpy in the same process")


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise PostBCError(f"{INSTALL_HINT} ({e})") from e
    return rs


def list_realsense_serials(context=None) -> list[str]:
    """Serial numbers of the RealSense devices visible in `context` (default: a new rs.context())."""
    rs = _rs()
    ctx = context if context is not None else rs.context()
    return [d.get_info(rs.camera_info.serial_number) for d in ctx.query_devices()
            if d.supports(rs.camera_info.serial_number)]


SERIAL_FIX = ("set the camera node's `serial` (bringup: camera_serials:=<one serial per camera, in the order of "
              "`cameras`>; `rs-enumerate-devices -s` lists them)")


def select_serial(available, *, name: str, serial: str | None = None, index: int | None = None,
                  pinned: str | None = None) -> str:
    """The serial camera `name` opens among the `available` ones (connected now). Precedence: `pinned` (the device
    this camera already streamed from; only it may be reopened), `serial`, the `index`-th sorted by serial, the only
    device. Raises PostBCError naming the connected serials and the parameter to set."""
    avail = sorted(available)
    shown = avail if avail else "none"
    if pinned is not None:
        if pinned not in avail:
            raise PostBCError(f"camera {name!r}: its RealSense {pinned!r} is not connected (unplugged?); available "
                              f"serials: {shown}")
        return pinned
    if serial is not None:
        if serial not in avail:
            raise PostBCError(f"camera {name!r}: RealSense serial {serial!r} not found; available serials: {shown}")
        return serial
    if not avail:
        raise PostBCError(f"camera {name!r}: no RealSense device found (available serials: none). Check the USB 3 "
                          "cable and the librealsense udev rules (99-realsense-libusb.rules).")
    if index is None:
        if len(avail) > 1:
            raise PostBCError(f"camera {name!r}: {len(avail)} RealSense devices are connected {avail} and none is "
                              f"chosen; {SERIAL_FIX}, or `index` (the k-th device sorted by serial)")
        return avail[0]
    if index >= len(avail):
        raise PostBCError(f"camera {name!r} takes RealSense #{index} sorted by serial (index={index}), but only "
                          f"{len(avail)} connected: {avail}; connect the missing camera, drop a camera from "
                          f"`cameras`, or {SERIAL_FIX}")
    return avail[index]


def _serial_of(rs, device) -> str:
    return device.get_info(rs.camera_info.serial_number) if device.supports(rs.camera_info.serial_number) else "?"


@dataclass
class RealSenseConfig:
    """Stream settings."""

    serial: str | None = None
    """device serial number; None = by `index`, or the only connected device (an error if several)."""
    index: int | None = None
    """with no serial: the index-th connected device sorted by serial (0-based); None = the only device."""
    width: int = 640
    """color and depth width (px)."""
    height: int = 480
    """color and depth height (px)."""
    fps: int = 30
    """frame rate (Hz)."""
    depth: bool = True
    """also stream depth, aligned to color."""
    name: str = "realsense"
    """camera name used in observation keys and messages."""
    reconnect_attempts: int = 3
    """restarts tried when the device disappears mid-stream before read() raises."""

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ConfigError(f"RealSense stream {self.width}x{self.height}@{self.fps}: all must be > 0")
        if self.reconnect_attempts < 0:
            raise ConfigError(f"reconnect_attempts={self.reconnect_attempts} must be >= 0")
        if self.index is not None and (isinstance(self.index, bool) or not isinstance(self.index, int)
                                       or self.index < 0):
            raise ConfigError(f"index={self.index!r}: give a device number >= 0 (the k-th RealSense sorted by "
                              "serial) or None")


class _PipelineSource:
    """Hardware: rs.pipeline over a context."""

    def __init__(self, rs, cfg: RealSenseConfig, context, pinned: str | None):
        self.rs, self.cfg, self.pinned = rs, cfg, pinned
        self.ctx = context if context is not None else rs.context()
        self.pipe = None

    def serials(self) -> list[str]:
        return list_realsense_serials(self.ctx)

    def start(self):
        rs, cfg = self.rs, self.cfg
        serial = select_serial(self.serials(), name=cfg.name, serial=cfg.serial, index=cfg.index, pinned=self.pinned)
        rc = rs.config()
        rc.enable_device(serial)
        rc.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        if cfg.depth:
            rc.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        self.pipe = rs.pipeline(self.ctx)
        try:
            profile = self.pipe.start(rc)
        except RuntimeError as e:
            self.pipe = None
            raise PostBCError(f"camera {cfg.name!r} ({serial}): cannot stream {cfg.width}x{cfg.height}@{cfg.fps} "
                              f"color{'+depth' if cfg.depth else ''}: {e}") from e
        self.serial = serial
        dev = profile.get_device()
        depth_units = dev.first_depth_sensor().get_option(rs.option.depth_units) if cfg.depth else 0.001
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        return color.get_intrinsics(), float(depth_units)

    def poll(self, timeout_ms: int):
        if self.pipe is None:  # a failed reconnect left no pipeline
            time.sleep(timeout_ms / 1000.0)
            return None
        ok, fs = self.pipe.try_wait_for_frames(timeout_ms)
        return fs if ok else None

    def connected(self) -> bool:
        return getattr(self, "serial", None) in self.serials()

    def stop(self):
        if self.pipe is not None:
            try:
                self.pipe.stop()
            except RuntimeError:
                pass  # already stopped by a disconnect
            self.pipe = None


class _SensorSource:
    """Given devices (rs.software_device in tests): the selected one's sensors stream straight into an rs.syncer."""

    def __init__(self, rs, cfg: RealSenseConfig, devices, pinned: str | None):
        self.rs, self.cfg, self.pinned = rs, cfg, pinned
        self._devices = devices if callable(devices) else (lambda: devices)
        self.opened = []

    def _by_serial(self) -> dict:
        return {_serial_of(self.rs, d): d for d in self._devices()}

    def serials(self) -> list[str]:
        return list(self._by_serial())

    def _find(self, stream, fmt):
        cfg = self.cfg
        seen = []
        for s in self.dev.query_sensors():
            for p in s.get_stream_profiles():
                if p.stream_type() != stream:
                    continue
                v = p.as_video_stream_profile()
                seen.append(f"{v.width()}x{v.height()}@{p.fps()} {p.format()}")
                if v.width() == cfg.width and v.height() == cfg.height and p.fps() == cfg.fps and p.format() == fmt:
                    return s, p
        raise PostBCError(f"camera {cfg.name!r}: no {stream} profile {cfg.width}x{cfg.height}@{cfg.fps} {fmt}; "
                          f"the device offers {seen}")

    def start(self):
        rs, cfg = self.rs, self.cfg
        devices = self._by_serial()
        self.serial = select_serial(devices, name=cfg.name, serial=cfg.serial, index=cfg.index, pinned=self.pinned)
        self.dev = devices[self.serial]
        self.sync = rs.syncer()
        wanted = [(rs.stream.color, rs.format.rgb8)] + ([(rs.stream.depth, rs.format.z16)] if cfg.depth else [])
        found = [self._find(st, fmt) for st, fmt in wanted]
        for sensor, prof in found:
            try:
                sensor.open(prof)
                sensor.start(self.sync)
            except RuntimeError as e:  # e.g. another camera object streams this device already
                self.stop()
                raise PostBCError(f"camera {cfg.name!r} ({self.serial}): cannot stream {cfg.width}x{cfg.height}@"
                                  f"{cfg.fps}: {e}") from e
            self.opened.append(sensor)
        depth_units = 0.001
        if cfg.depth:
            dsens = found[1][0]
            if dsens.supports(rs.option.depth_units):
                depth_units = dsens.get_option(rs.option.depth_units)
        return found[0][1].as_video_stream_profile().get_intrinsics(), float(depth_units)

    def poll(self, timeout_ms: int):
        ok, fs = self.sync.try_wait_for_frames(timeout_ms)
        return fs if ok else None

    def connected(self) -> bool:
        return getattr(self, "serial", None) in self._by_serial()

    def stop(self):
        for s in self.opened:
            try:
                s.stop()
                s.close()
            except RuntimeError:
                pass
        self.opened = []


class RealSenseCamera(Camera):
    """`RealSenseCamera(RealSenseConfig(serial="..."))`; `context=` injects a librealsense context, `device=` one
    device or `devices=` several (a sequence, or a callable returning the devices connected now); tests use
    rs.software_device objects. `serial` is the device streamed from, kept for reconnects (None before connect)."""

    def __init__(self, config: RealSenseConfig | None = None, *, context=None, device=None, devices=None):
        self.config = config or RealSenseConfig()
        self.name = self.config.name
        if device is not None and devices is not None:
            raise ConfigError("RealSenseCamera: give device= or devices=, not both")
        self._context = context
        self._devices = [device] if device is not None else devices
        self.serial: str | None = None
        self._src = None
        self._stale = False
        self._align = None
        self._intr: Intrinsics | None = None
        self._depth_scale_mm = 1.0

    @property
    def is_connected(self) -> bool:
        return self._src is not None

    def connect(self) -> None:
        if self._src is not None:
            return
        rs = _rs()
        src = (_SensorSource(rs, self.config, self._devices, self.serial) if self._devices is not None
               else _PipelineSource(rs, self.config, self._context, self.serial))
        intr, depth_units = src.start()
        self._src = src
        self.serial = src.serial
        self._align = rs.align(rs.stream.color) if self.config.depth else None
        self._depth_scale_mm = depth_units * 1000.0
        if abs(self._depth_scale_mm - 1.0) > 1e-9:
            logger.warning("camera %s: depth_units %.6g m; depth is rescaled to millimetres", self.name, depth_units)
        self._intr = Intrinsics(width=intr.width, height=intr.height, fx=intr.fx, fy=intr.fy, cx=intr.ppx,
                                cy=intr.ppy, distortion=tuple(float(c) for c in intr.coeffs[:5]))
        logger.info("camera %s: RealSense %s streaming %dx%d@%d", self.name, src.serial, intr.width, intr.height,
                    self.config.fps)

    @property
    def intrinsics(self) -> Intrinsics:
        if self._intr is None:
            raise PostBCError(f"camera {self.name!r} is not connected; intrinsics come from the stream profile")
        return self._intr

    def read(self, timeout_s: float = 1.0) -> Frame:
        if self._src is None:
            raise PostBCError(f"camera {self.name!r} is not connected; call connect() or use `with camera:`")
        rs = _rs()
        deadline = time.monotonic() + timeout_s
        attempts = 0
        while True:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            fs = self._src.poll(min(left_ms, 200))
            if fs is not None:
                frame = self._convert(rs, fs)
                if frame is not None:
                    return frame
                # a syncer can hand out a lone color or depth frame before its partner arrives: wait for the pair
            if time.monotonic() >= deadline:
                # _stale: a failed reconnect left the stopped source; its device may be back by now
                if (self._stale or not self._src.connected()) and attempts < self.config.reconnect_attempts:
                    attempts += 1
                    logger.warning("camera %s: device disconnected; reconnecting (attempt %d/%d)", self.name,
                                   attempts, self.config.reconnect_attempts)
                    self._reconnect()
                    deadline = time.monotonic() + timeout_s
                    continue
                serial = getattr(self._src, "serial", "?")
                if not self._src.connected():
                    raise PostBCError(f"camera {self.name!r}: RealSense {serial} disconnected (unplugged?); "
                                      f"connected serials: {sorted(self._src.serials()) or 'none'}. Replug it into "
                                      "a USB 3 port")
                raise PostBCError(f"camera {self.name!r} (RealSense {serial}): no frame within {timeout_s:.2f} s; "
                                  "check the cable/USB 3 port or raise timeout_s")

    def _reconnect(self) -> None:
        src, self._src = self._src, None
        src.stop()
        try:
            self.connect()
            self._stale = False
        except PostBCError as e:
            logger.warning("camera %s: reconnect failed: %s", self.name, e)
            self._src, self._stale = src, True  # keep a handle so the next read can try again

    def _convert(self, rs, fs) -> Frame | None:
        if self._align is not None:
            if not (fs.get_depth_frame() and fs.get_color_frame()):
                return None
            fs = self._align.process(fs)
        cf = fs.get_color_frame()
        if not cf:
            return None
        color = np.asanyarray(cf.get_data()).copy()
        depth = None
        if self._align is not None:
            df = fs.get_depth_frame()
            depth = np.asanyarray(df.get_data()).copy()
            if abs(self._depth_scale_mm - 1.0) > 1e-9:
                depth = np.clip(np.round(depth * self._depth_scale_mm), 0, 65535).astype(np.uint16)
        extras = {"timestamp_domain": str(cf.get_frame_timestamp_domain()), "serial": self._src.serial}
        return Frame(color=color, depth=depth, device_time=cf.get_timestamp() / 1000.0, host_time=time.time(),
                     index=int(cf.get_frame_number()), extras=extras)

    def close(self) -> None:
        if self._src is not None:
            self._src.stop()
            self._src, self._stale = None, False
