"""`postbc calibrate <verb>`: camera calibration (the cameras/calibration package). Each verb is a typed function
(tyro builds its flags); user errors propagate as PostBCError (the main CLI prints them and exits 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _spec(squares_x, squares_y, square_length, marker_length, dictionary):
    from postbc_core.cameras.calibration.board import CharucoSpec

    return CharucoSpec(squares_x, squares_y, square_length, marker_length, dictionary)


def board(out: Path = Path("charuco_board.png"), squares_x: int = 7, squares_y: int = 5, square_length: float = 0.04,
          marker_length: float = 0.03, dictionary: str = "DICT_4X4_50", dpi: int = 300, margin: float = 0.01) -> int:
    """Write a printable ChArUco board PNG (print at 100 % scale, then measure a square).

    Args:
        out: PNG to write.
        squares_x: Squares along the board's width.
        squares_y: Squares along the board's height.
        square_length: Square side in metres.
        marker_length: ArUco marker side in metres (< square_length).
        dictionary: ArUco dictionary (cv2.aruco DICT_* name).
        dpi: Printer resolution the image is made for.
        margin: White margin in metres on each side.
    """
    import cv2

    from postbc_core.cameras.calibration.board import render_board_for_print

    spec = _spec(squares_x, squares_y, square_length, marker_length, dictionary)
    img = render_board_for_print(spec, dpi=dpi, margin_m=margin)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img)
    print(f"{out}: {img.shape[1]}x{img.shape[0]} px, print at {dpi} dpi ({img.shape[1] / dpi * 25.4:.1f} x "
          f"{img.shape[0] / dpi * 25.4:.1f} mm); squares {square_length * 1000:.1f} mm")
    return 0


def intrinsics(images: Path, out: Path, camera_name: str = "camera", squares_x: int = 7, squares_y: int = 5,
               square_length: float = 0.04, marker_length: float = 0.03, dictionary: str = "DICT_4X4_50",
               min_views: int = 6, fix_k3: bool = True) -> int:
    """Calibrate intrinsics from ChArUco images; write a ROS camera_info YAML.

    Args:
        images: Directory of images (png/jpg) of the board, all at the camera's streaming resolution.
        out: camera_info YAML to write (e.g. calibration/front_camera_info.yaml).
        camera_name: camera_name field of the YAML.
        squares_x: Squares along the board's width.
        squares_y: Squares along the board's height.
        square_length: Measured square side in metres.
        marker_length: Measured marker side in metres.
        dictionary: ArUco dictionary (cv2.aruco DICT_* name).
        min_views: Fewest usable views accepted.
        fix_k3: Keep k3 = 0 (ROS camera_calibration's default).
    """
    import cv2

    from postbc_core.cameras.calibration import CalibrationError
    from postbc_core.cameras.calibration.solve import calibrate_intrinsics

    spec = _spec(squares_x, squares_y, square_length, marker_length, dictionary)
    files = sorted(p for p in Path(images).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise CalibrationError(f"{images}: no .png/.jpg images found")
    imgs = []
    for f in files:
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise CalibrationError(f"{f}: cannot be read as an image")
        imgs.append(im)
    res = calibrate_intrinsics(imgs, spec, min_views=min_views, fix_k3=fix_k3, camera_name=camera_name)
    res.save(out)
    K = res.K
    print(f"{len(res.used_views)}/{len(files)} views, RMS {res.rms_px:.3f} px (worst view "
          f"{res.per_view_rms_px.max():.3f} px); fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f}; "
          f"D {[round(float(v), 5) for v in res.dist]}")
    print(f"camera_info: {out}")
    return 0


def handeye(out: Path, samples: Path | None = None, sim: bool = False, mode: str = "eye_to_hand",
            method: str = "park", camera_frame: str = "camera_color_optical_frame", n_poses: int = 14,
            seed: int = 0) -> int:
    """Hand-eye calibration from recorded samples (or a run in the MuJoCo twin); writes the transform YAML.

    Args:
        out: YAML to write (e.g. calibration/front_handeye.yaml).
        samples: .npz of (T_base_gripper, T_camera_board) samples written by
            postbc_core.cameras.calibration.solve.save_samples after capture.capture_handeye on the robot.
        sim: Instead of SAMPLES, capture in the twin (board on the gripper, "front" camera, eye_to_hand) and
            report the error against the MJCF truth.
        mode: eye_to_hand (fixed camera -> T_base_camera) or eye_in_hand (wrist camera -> T_gripper_camera).
        method: tsai, park, horaud, andreff or daniilidis.
        camera_frame: Child frame name written to the YAML.
        n_poses: Poses visited with --sim.
        seed: Pose randomisation with --sim.
    """
    from postbc_core.cameras.calibration.solve import calibrate_handeye, load_samples
    from postbc_core.errors import ConfigError, check_seed

    if sim == (samples is not None):
        raise ConfigError("give exactly one of --samples FILE.npz or --sim")
    check_seed(seed)
    if samples is not None:
        res = calibrate_handeye(load_samples(samples), mode, method, camera_frame=camera_frame)
        truth = None
    else:
        if mode != "eye_to_hand":
            raise ConfigError(f"--sim runs eye_to_hand (board on the gripper, front camera); got mode={mode!r}")
        from postbc_core.cameras.calibration.board import CharucoSpec
        from postbc_core.cameras.calibration.capture import capture_handeye
        from postbc_core.cameras.calibration.frames import inv_T
        from postbc_core.cameras.sim import SimCamera
        from postbc_core.sim.calibration_scene import make_calibration_sim, sim_eye_to_hand_poses

        spec = CharucoSpec(6, 5, 0.035, 0.026)
        scene = make_calibration_sim(spec, "gripper")
        try:
            poses = sim_eye_to_hand_poses(scene, n_poses=n_poses, seed=seed)
            with SimCamera(scene.sim, "front", 640, 480) as cam:
                got = capture_handeye(scene.sim, cam, poses, spec, intrinsics=scene.sim_intrinsics("front", 640, 480))
            res = calibrate_handeye(got, mode, method, camera_frame=camera_frame)
            truth = inv_T(scene.T_world_base()) @ scene.T_world_camera("front")
        finally:
            scene.sim.close()
    res.save(out)
    print(res.summary())
    if truth is not None:
        import numpy as np

        from postbc_core.cameras.calibration.frames import rotation_angle_deg

        t_err = float(np.linalg.norm(res.T[:3, 3] - truth[:3, 3]))
        r_err = rotation_angle_deg(truth[:3, :3].T @ res.T[:3, :3])
        print(f"error vs the MJCF: {1000 * t_err:.3f} mm, {r_err:.4f} deg")
    print(f"hand-eye: {out}")
    return 0


CALIBRATE_COMMANDS: dict[str, Callable[..., int]] = {"intrinsics": intrinsics, "handeye": handeye, "board": board}
