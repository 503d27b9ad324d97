"""One camera interface for RealSense hardware and the MuJoCo twin.

A frame: color (H, W, 3) uint8 RGB, optional depth (H, W) uint16 millimetres aligned to color, the device timestamp
(s; hardware clock where the device has one) and the host receive time (s, time.time()). Intrinsics follow
sensor_msgs/CameraInfo's plumb_bob model (K 3x3, D 5) so the ROS camera node publishes them unchanged.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # plumb_bob k1 k2 p1 p2 k3

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Frame:
    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None  # (H, W) uint16 mm, aligned to color
    device_time: float  # s
    host_time: float  # s
    index: int = 0  # device frame counter (detects drops)
    extras: dict = field(default_factory=dict)


class Camera(abc.ABC):
    name: str

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self, timeout_s: float = 1.0) -> Frame:
        """Blocks for the next frame; raises a PostBCError naming the device if none arrives within timeout_s."""

    @property
    @abc.abstractmethod
    def intrinsics(self) -> Intrinsics: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Camera":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
