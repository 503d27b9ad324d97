"""Camera interface over a MuJoCo twin camera ("front" or "wrist" of sim.base.WidowXSim).

Intrinsics follow MuJoCo's pinhole model: fy = H / (2 tan(fovy / 2)), fx = fy (square pixels), principal point at
the image centre, no distortion. `device_time` is the simulation time (s).
"""

from __future__ import annotations

import math
import time

from postbc_core.cameras.base import Camera, Frame, Intrinsics
from postbc_core.errors import ConfigError, PostBCError


def mujoco_intrinsics(model, camera: str, width: int, height: int) -> Intrinsics:
    """Pinhole intrinsics of a MuJoCo camera rendered at width x height: fx = fy = H / (2 tan(fovy / 2)).

    OpenCV's pixel convention: pixel centres at integer coordinates, so the optical axis of a symmetric frustum sits
    at ((W - 1) / 2, (H - 1) / 2); W / 2 would be half a pixel off (~0.1 deg in hand-eye calibration).
    """
    import mujoco

    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_id < 0:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise ConfigError(f"unknown sim camera {camera!r}; available: {names}")
    f = height / (2.0 * math.tan(math.radians(float(model.cam_fovy[cam_id])) / 2.0))
    return Intrinsics(width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


class SimCamera(Camera):
    """Renders `camera` of `sim` (a WidowXSim, or a Task whose `.sim` is one) at width x height pixels."""

    def __init__(self, sim, camera: str = "front", width: int = 128, height: int = 128, depth: bool = False,
                 name: str | None = None):
        if width < 8 or height < 8:
            raise ConfigError(f"image size {width}x{height}: use at least 8x8 pixels")
        self._sim = getattr(sim, "sim", sim)
        self.camera = camera
        self.name = name or camera
        self.width, self.height, self.depth = int(width), int(height), bool(depth)
        self._index = 0
        self._connected = False
        self._intr = mujoco_intrinsics(self._sim.model, camera, self.width, self.height)

    def connect(self) -> None:
        self._connected = True

    @property
    def intrinsics(self) -> Intrinsics:
        return self._intr

    def read(self, timeout_s: float = 1.0) -> Frame:
        if not self._connected:
            raise PostBCError(f"sim camera {self.name!r} is not connected; call connect() or use `with camera:`")
        rgb, dep = self._sim.render(self.camera, self.width, self.height, depth=self.depth)
        self._index += 1
        return Frame(color=rgb, depth=dep, device_time=float(self._sim.time), host_time=time.time(),
                     index=self._index)

    def close(self) -> None:
        self._connected = False
