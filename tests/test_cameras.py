"""Cameras: RealSense through librealsense's software_device (real syncer + align), and the MuJoCo sim camera."""

import math

import numpy as np
import pytest
from postbc_core.errors import PostBCError

from _realsense_sw import FPS, H, W, Feeder, SoftwareRealSense


@pytest.fixture()
def rs():
    return pytest.importorskip("pyrealsense2")


def test_realsense_software_device_frames(rs):
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    sw = SoftwareRealSense(rs)
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, name="front"), device=sw.dev)
    with cam:
        intr = cam.intrinsics
        assert (intr.width, intr.height) == (W, H)
        assert intr.fx == pytest.approx(55.0) and intr.fy == pytest.approx(56.0)
        assert (intr.cx, intr.cy) == (pytest.approx(31.5), pytest.approx(23.25))
        got = []
        for k in range(1, 5):
            color = np.full((H, W, 3), 10 * k, np.uint8)
            color[:, :, 1] = 7  # channel order survives (RGB, not BGR)
            depth = np.full((H, W), 500 + k, np.uint16)
            sw.inject(k, color, depth)
            try:
                got.append((k, cam.read(timeout_s=0.5)))
            except PostBCError:
                pass  # the syncer may hold back the very first pair until it has seen both streams
        assert len(got) >= 3
        for k, fr in got[1:]:
            assert fr.color.shape == (H, W, 3) and fr.color.dtype == np.uint8
            assert fr.depth.shape == (H, W) and fr.depth.dtype == np.uint16
            assert fr.color[0, 0, 0] == 10 * fr.index and fr.color[0, 0, 1] == 7
            # aligned to color: interior pixels keep the injected depth of the same frame pair
            assert fr.depth[H // 2, W // 2] == 500 + fr.index
            assert fr.device_time == pytest.approx(fr.index / FPS)
            assert fr.host_time > 1e9
        idx = [fr.index for _, fr in got]
        assert idx == sorted(idx) and len(set(idx)) == len(idx)


def test_realsense_read_timeout_names_device(rs):
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    sw = SoftwareRealSense(rs, serial="SWTIMEOUT")
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS), device=sw.dev)
    with cam, pytest.raises(PostBCError, match="SWTIMEOUT.*no frame within"):
        cam.read(timeout_s=0.2)


def test_realsense_wrong_serial_lists_available(rs):
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    sw = SoftwareRealSense(rs, serial="SW42")
    cam = RealSenseCamera(RealSenseConfig(serial="123456", width=W, height=H, fps=FPS), device=sw.dev)
    with pytest.raises(PostBCError, match=r"'123456' not found; available serials: \['SW42'\]"):
        cam.connect()


def test_realsense_unsupported_profile_lists_offered(rs):
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    sw = SoftwareRealSense(rs)
    with pytest.raises(PostBCError, match="64x48@30"):
        RealSenseCamera(RealSenseConfig(width=1280, height=720, fps=FPS), device=sw.dev).connect()


def test_realsense_no_device_clear_error(rs):
    """A real (empty) librealsense context: no camera on CI machines."""
    from postbc_core.cameras.realsense import RealSenseCamera, list_realsense_serials

    ctx = rs.context()
    if list_realsense_serials(ctx):
        pytest.skip("a real RealSense is connected")
    with pytest.raises(PostBCError, match="no RealSense device found.*available serials: none"):
        RealSenseCamera(context=ctx).connect()


# ---------------------------------------------------------------- several devices, unplug / replug
def test_select_serial_precedence():
    from postbc_core.cameras.realsense import select_serial

    avail = ["B2", "A1", "C3"]  # enumeration order: the choice must not depend on it
    assert select_serial(avail, name="c", index=0) == "A1"
    assert select_serial(avail, name="c", index=2) == "C3"
    assert select_serial(avail, name="c", serial="C3", index=0) == "C3"  # an explicit serial wins over index
    assert select_serial(avail, name="c", serial="C3", pinned="B2") == "B2"  # the device already streamed from
    assert select_serial(["Z9"], name="c") == "Z9"
    with pytest.raises(PostBCError, match=r"'c': its RealSense 'A1' is not connected \(unplugged\?\); available "
                                          r"serials: \['B2'\]"):
        select_serial(["B2"], name="c", index=0, pinned="A1")  # never falls back to another camera's device


def test_realsense_index_must_be_a_device_number():
    from postbc_core.cameras.realsense import RealSenseConfig
    from postbc_core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"index=-1: give a device number >= 0"):
        RealSenseConfig(index=-1)


def _frames_from(cam, n=3, timeout_s=2.0):
    """n frames read from a streaming camera (the first pair may be held back by the syncer)."""
    out = []
    deadline = __import__("time").monotonic() + 10.0
    while len(out) < n:
        assert __import__("time").monotonic() < deadline, f"camera {cam.name}: no frames"
        out.append(cam.read(timeout_s=timeout_s))
    return out


def test_realsense_several_devices_get_distinct_devices_by_index(rs):
    """Two cameras, no serials: camera k opens the k-th device sorted by serial, whatever the enumeration order."""
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    feeder = Feeder({20: SoftwareRealSense(rs, "B2"), 10: SoftwareRealSense(rs, "A1")})  # B2 enumerates first
    cams = [RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, name=n, index=k), devices=feeder.connected)
            for k, n in enumerate(("front", "wrist"))]
    with feeder, cams[0], cams[1]:
        assert (cams[0].serial, cams[1].serial) == ("A1", "B2")
        assert {int(f.color[0, 0, 0]) for f in _frames_from(cams[0])} == {10}  # A1's frames only
        assert {int(f.color[0, 0, 0]) for f in _frames_from(cams[1])} == {20}
        assert {f.extras["serial"] for f in _frames_from(cams[1], 1)} == {"B2"}


def test_realsense_several_devices_without_choice_list_serials(rs):
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    devs = [SoftwareRealSense(rs, "B2").dev, SoftwareRealSense(rs, "A1").dev]
    with pytest.raises(PostBCError, match=r"'front': 2 RealSense devices are connected \['A1', 'B2'\] and none is "
                                          r"chosen; set the camera node's `serial` \(bringup: camera_serials:="):
        RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, name="front"), devices=devs).connect()
    # The second of two cameras with one device connected: a clear error, not "device busy".
    with pytest.raises(PostBCError, match=r"'wrist' takes RealSense #1 sorted by serial \(index=1\), but only 1 "
                                          r"connected: \['B2'\].*camera_serials"):
        RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, name="wrist", index=1), devices=devs[:1]).connect()


def test_realsense_unplug_reported_replug_reopens_the_same_device(rs):
    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    feeder = Feeder({10: SoftwareRealSense(rs, "A1"), 20: SoftwareRealSense(rs, "B2")})
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, name="front", index=0, reconnect_attempts=0),
                          devices=feeder.connected)
    with feeder, cam:
        assert cam.serial == "A1" and int(_frames_from(cam, 1)[0].color[0, 0, 0]) == 10
        feeder.unplug(10)
        with pytest.raises(PostBCError, match=r"'front': RealSense A1 disconnected \(unplugged\?\); connected "
                                              r"serials: \['B2'\]"):
            for _ in range(10):  # frames queued before the unplug may still come out first
                cam.read(timeout_s=0.3)
        cam.close()
        # Index 0 now points at B2 (the other camera's device): the camera must wait for its own device instead.
        with pytest.raises(PostBCError, match=r"its RealSense 'A1' is not connected"):
            cam.connect()
        feeder.replug(10, rs)
        cam.connect()
        assert cam.serial == "A1" and {int(f.color[0, 0, 0]) for f in _frames_from(cam)} == {10}


def test_realsense_read_reconnects_when_replugged_in_time(rs):
    """The library's own retries (reconnect_attempts): a read spanning a short unplug returns the device's frames."""
    import threading

    from postbc_core.cameras.realsense import RealSenseCamera, RealSenseConfig

    feeder = Feeder({10: SoftwareRealSense(rs, "A1")})
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, name="front", reconnect_attempts=20),
                          devices=feeder.connected)
    with feeder, cam:
        _frames_from(cam, 1)
        feeder.unplug(10)
        threading.Timer(1.0, feeder.replug, args=(10, rs)).start()
        for _ in range(10):  # drain what was queued before the unplug, then block across it
            f = cam.read(timeout_s=0.3)
        assert cam.serial == "A1" and int(f.color[0, 0, 0]) == 10


def test_sim_camera_intrinsics_and_frames():
    from postbc_core.cameras.sim import SimCamera
    from postbc_core.errors import ConfigError
    from postbc_core.sim.base import WidowXSim

    # sim.base picks a headless MUJOCO_GL before mujoco loads (cameras.sim imports mujoco only when constructed)

    sim = WidowXSim()
    try:
        cam = SimCamera(sim, "front", width=40, height=32, depth=True)
        fovy = math.radians(float(sim.model.cam_fovy[sim.model.camera("front").id]))
        assert cam.intrinsics.fy == pytest.approx(32 / (2 * math.tan(fovy / 2)))
        assert cam.intrinsics.fx == cam.intrinsics.fy
        assert (cam.intrinsics.cx, cam.intrinsics.cy) == (19.5, 15.5)  # ((W - 1) / 2, (H - 1) / 2)
        with pytest.raises(PostBCError):
            cam.read()
        with cam:
            f1 = cam.read()
            sim.step_control(sim.joint_pos(), 0.037)
            f2 = cam.read()
        assert f1.color.shape == (32, 40, 3) and f1.color.dtype == np.uint8 and f1.color.std() > 0
        assert f1.depth.shape == (32, 40) and f1.depth.dtype == np.uint16 and f1.depth.max() > 0
        assert f2.device_time == pytest.approx(sim.time) and f2.device_time > f1.device_time
        assert f2.index == f1.index + 1
        with pytest.raises(ConfigError, match="available"):
            SimCamera(sim, "nope")
        with SimCamera(sim, "wrist", width=640, height=480) as big:  # what a RealSense (and the camera node) gives
            assert big.read().color.shape == (480, 640, 3)
        with SimCamera(sim, "front", width=641, height=480) as too_big:
            with pytest.raises(ConfigError, match="offscreen buffer of 480x640"):
                too_big.read()
    finally:
        sim.close()
