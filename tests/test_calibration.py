"""Camera calibration (cameras/calibration) against the MuJoCo twin (sim/calibration_scene): ChArUco intrinsics of
the "front" camera and eye-to-hand calibration with a board on the gripper, both checked against the truth from the
compiled MJCF."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "calibrateHandEye"):
    pytest.skip("OpenCV without calibrateHandEye (5.x); install opencv-python-headless<5", allow_module_level=True)

from postbc_core.cameras.calibration import BoardNotDetectedError, TooFewViewsError
from postbc_core.cameras.calibration.board import CharucoSpec, detect_charuco, render_board, render_board_for_print
from postbc_core.cameras.calibration.capture import capture_handeye
from postbc_core.cameras.calibration.frames import inv_T, make_T, rotation_angle_deg, rotvec
from postbc_core.cameras.calibration.solve import (
    HandEyeSample,
    calibrate_handeye,
    calibrate_intrinsics,
    estimate_board_pose,
    load_camera_info,
    load_handeye,
    load_samples,
    save_samples,
)
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.sim.calibration_scene import make_calibration_sim, sim_eye_to_hand_poses, sim_intrinsics_views

W, H = 480, 360
SPEC = CharucoSpec(7, 5, 0.04, 0.03, "DICT_4X4_50")


@pytest.fixture(scope="module")
def world_scene():
    scene = make_calibration_sim(SPEC, "world")
    yield scene
    scene.sim.close()


@pytest.fixture(scope="module")
def views(world_scene):
    return sim_intrinsics_views(world_scene, "front", n_views=12, width=W, height=H, seed=0)


def test_spec_validation():
    with pytest.raises(ConfigError, match="marker_length"):
        CharucoSpec(7, 5, 0.04, 0.05)
    with pytest.raises(ConfigError, match="dictionary"):
        CharucoSpec(dictionary="DICT_NOPE")
    with pytest.raises(ConfigError, match="needs 55 markers but DICT_4X4_50 has 50"):
        CharucoSpec(10, 11, 0.04, 0.03, "DICT_4X4_50")
    img = render_board(SPEC, px_per_square=40, margin_px=20)
    assert img.shape == (5 * 40 + 40, 7 * 40 + 40) and img.dtype == np.uint8
    assert detect_charuco(img, SPEC).n == SPEC.n_corners
    # at 300 dpi a 4 cm square is 472 px
    assert render_board_for_print(SPEC, dpi=300, margin_m=0.0).shape == (5 * 472, 7 * 472)


def test_board_pose_in_sim_matches_truth(world_scene):
    """The board frame convention of make_calibration_sim agrees with OpenCV's (solvePnP vs the MJCF)."""
    Tc = world_scene.T_world_camera("front")
    from postbc_core.robots import kinematics

    world_scene.set_board_pose(Tc[:3, 3] + 0.45 * Tc[:3, 2], kinematics.mat_to_quat(Tc[:3, :3] @ np.diag([1, -1, -1])))
    rgb, _ = world_scene.sim.render("front", W, H)
    T, n, rms = estimate_board_pose(rgb, SPEC, world_scene.sim_intrinsics("front", W, H))
    truth = inv_T(Tc) @ world_scene.T_world_board()
    assert n == SPEC.n_corners and rms < 0.5
    assert np.linalg.norm(T[:3, 3] - truth[:3, 3]) < 1e-3
    assert rotation_angle_deg(truth[:3, :3].T @ T[:3, :3]) < 0.2


def test_intrinsics_recovered_within_1_percent(views, world_scene, tmp_path):
    from postbc_core.cameras.sim import SimCamera

    res = calibrate_intrinsics(views, SPEC, camera_name="front")
    truth = SimCamera(world_scene.sim, "front", W, H).intrinsics
    got = res.to_intrinsics()
    errs = {k: abs(getattr(got, k) - getattr(truth, k)) / getattr(truth, k) for k in ("fx", "fy", "cx", "cy")}
    print("intrinsics relative errors:", {k: f"{100 * v:.3f}%" for k, v in errs.items()}, "rms px", res.rms_px)
    assert max(errs.values()) < 0.01, errs
    assert res.rms_px < 0.5 and len(res.per_view_rms_px) == len(res.used_views) == 12
    assert res.image_size == (W, H)
    # camera_info YAML round trip
    path = res.save(tmp_path / "front.yaml")
    import yaml

    info = yaml.safe_load(path.read_text())
    assert info["distortion_model"] == "plumb_bob" and len(info["distortion_coefficients"]["data"]) == 5
    assert info["image_width"] == W and info["projection_matrix"]["cols"] == 4
    back = load_camera_info(path)
    assert back == got


def test_too_few_views(views):
    with pytest.raises(TooFewViewsError, match="2 of 2 view"):
        calibrate_intrinsics(views[:2], SPEC)


def test_board_not_detected():
    blank = np.full((H, W, 3), 128, np.uint8)
    with pytest.raises(BoardNotDetectedError, match="no ChArUco corners"):
        calibrate_intrinsics([blank] * 8, SPEC)
    from postbc_core.cameras.base import Intrinsics

    with pytest.raises(BoardNotDetectedError, match="0 ChArUco corner"):
        estimate_board_pose(blank, SPEC, Intrinsics(W, H, 300.0, 300.0, W / 2, H / 2))
    # a board from another dictionary is not this board
    other = render_board(CharucoSpec(7, 5, 0.04, 0.03, "DICT_5X5_50"), 60)
    assert detect_charuco(other, SPEC).n == 0
    assert issubclass(BoardNotDetectedError, PostBCError)


def test_handeye_math_exact_on_synthetic_poses():
    """Noise-free synthetic poses: both modes recover the transform (checks the eye-to-hand inversion trick)."""
    rng = np.random.default_rng(1)

    def rand_T(scale):
        return make_T(rotvec(rng.normal(size=3) * 0.5), rng.normal(size=3) * scale)

    X, B = rand_T(0.3), rand_T(0.1)
    grip = [rand_T(0.3) for _ in range(8)]
    # eye_to_hand: camera fixed (T_base_camera = X), board in the gripper (T_gripper_board = B)
    s = [HandEyeSample(G, inv_T(X) @ G @ B) for G in grip]
    r = calibrate_handeye(s, "eye_to_hand", "park")
    assert np.allclose(r.T, X, atol=1e-6) and np.allclose(r.T_board, B, atol=1e-6)
    assert r.residual_translation_m.max() < 1e-6
    # eye_in_hand: camera on the gripper (T_gripper_camera = X), board fixed (T_base_board = B)
    s = [HandEyeSample(G, inv_T(G @ X) @ B) for G in grip]
    r = calibrate_handeye(s, "eye_in_hand", "tsai")
    assert np.allclose(r.T, X, atol=1e-6) and r.parent_frame.endswith("ee_gripper_link")
    with pytest.raises(TooFewViewsError, match="2 hand-eye sample"):
        calibrate_handeye(s[:2], "eye_in_hand")
    with pytest.raises(ConfigError, match="mode"):
        calibrate_handeye(s, "eye_on_head")


def test_eye_to_hand_in_sim(tmp_path):
    """Board on the gripper, fixed "front" camera: T_base_camera within 2 mm / 0.2 deg of the MJCF's."""
    from postbc_core.cameras.sim import SimCamera

    spec = CharucoSpec(6, 5, 0.035, 0.026)
    scene = make_calibration_sim(spec, "gripper")
    try:
        poses = sim_eye_to_hand_poses(scene, n_poses=12, seed=0)
        cam = SimCamera(scene.sim, "front", 640, 480)
        with cam:
            samples = capture_handeye(scene.sim, cam, poses, spec, intrinsics=scene.sim_intrinsics("front", 640, 480))
        assert len(samples) >= 10
        truth = inv_T(scene.T_world_base()) @ scene.T_world_camera("front")
        res = calibrate_handeye(samples, "eye_to_hand", "park")
        t_err = np.linalg.norm(res.T[:3, 3] - truth[:3, 3])
        r_err = rotation_angle_deg(truth[:3, :3].T @ res.T[:3, :3])
        print(f"eye_to_hand error: {1000 * t_err:.3f} mm, {r_err:.4f} deg; {res.summary()}")
        assert t_err < 2e-3 and r_err < 0.2
        # the board pose in the gripper is recovered too (truth from the MJCF)
        T_gb = inv_T(scene.T_world_gripper()) @ scene.T_world_board()
        assert np.linalg.norm(res.T_board[:3, 3] - T_gb[:3, 3]) < 2e-3
        # YAML + samples round trip
        path = res.save(tmp_path / "handeye.yaml")
        T, parent, _child = load_handeye(path)
        assert np.allclose(T, res.T) and parent == "wx250s/base_link"
        import yaml

        d = yaml.safe_load(path.read_text())
        assert set(d["rotation"]) == {"x", "y", "z", "w"} and len(d["matrix"]) == 4
        back = load_samples(save_samples(samples, tmp_path / "s.npz"))
        assert np.allclose(calibrate_handeye(back, "eye_to_hand", "park").T, res.T)
    finally:
        scene.sim.close()
