"""Cameras: RealSense through librealsense's software_device (real syncer + align), and the MuJoCo sim camera."""

import math

import numpy as np
import pytest
from postbc_core.errors import PostBCError

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
        self.rs = rs
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
    finally:
        sim.close()
