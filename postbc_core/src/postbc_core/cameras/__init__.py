"""Camera interface and backends; RealSenseCamera imports pyrealsense2 and SimCamera mujoco only when used."""

from postbc_core.cameras.base import Camera, Frame, Intrinsics

_LAZY = {
    "RealSenseCamera": "postbc_core.cameras.realsense",
    "RealSenseConfig": "postbc_core.cameras.realsense",
    "list_realsense_serials": "postbc_core.cameras.realsense",
    "SimCamera": "postbc_core.cameras.sim",
}

__all__ = ["Camera", "Frame", "Intrinsics", "RealSenseCamera", "RealSenseConfig", "SimCamera", "list_realsense_serials"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'postbc_core.cameras' has no attribute {name!r}")
