"""Solving calibrations from board observations, and their files.

Intrinsics: ChArUco views -> plumb_bob model (K 3x3, D = k1 k2 p1 p2 k3), written as a ROS camera_info YAML
(camera_calibration_parsers format). Board pose: one image + intrinsics -> T_camera_board (solvePnP).
Hand-eye: samples (T_base_gripper, T_camera_board) -> cv2.calibrateHandEye, written as a YAML transform.
Modes: "eye_in_hand" (camera on the gripper, board fixed in the world) estimates T_gripper_camera;
"eye_to_hand" (camera fixed, board held by the gripper) estimates T_base_camera by passing the inverted gripper
poses T_gripper_base to cv2.calibrateHandEye (the trick in OpenCV's calibrateHandEye documentation).
Frames: calibration.frames. Shape legend: V views (or samples), N detected corners, H/W image height/width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from postbc_core.cameras.base import Intrinsics
from postbc_core.cameras.calibration import BoardNotDetectedError, CalibrationError, TooFewViewsError
from postbc_core.cameras.calibration.board import CharucoSpec, detect_charuco, gray_image
from postbc_core.cameras.calibration.frames import inv_T, make_T, rotation_angle_deg
from postbc_core.errors import ConfigError
from postbc_core.robots import kinematics

logger = logging.getLogger(__name__)

HANDEYE_MODES = ("eye_to_hand", "eye_in_hand")
HANDEYE_METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}


# ------------------------------------------------------------------------------------------------------------------
# Intrinsics
@dataclass
class IntrinsicsResult:
    K: np.ndarray  # (3, 3)
    dist: np.ndarray  # (5,) plumb_bob k1 k2 p1 p2 k3
    rms_px: float  # RMS reprojection error over all corners (px)
    per_view_rms_px: np.ndarray  # (V,) RMS per used view (px)
    image_size: tuple[int, int]  # (width, height)
    used_views: list[int]  # indices into the input images
    camera_name: str = "camera"

    def to_intrinsics(self) -> Intrinsics:
        """The result as a cameras.base.Intrinsics (what cameras and the ROS camera node use)."""
        w, h = self.image_size
        return Intrinsics(width=w, height=h, fx=float(self.K[0, 0]), fy=float(self.K[1, 1]), cx=float(self.K[0, 2]),
                          cy=float(self.K[1, 2]), distortion=tuple(float(v) for v in self.dist))

    def to_camera_info(self) -> dict:
        """camera_calibration_parsers YAML content; P = [K | 0] (monocular, no rectification)."""
        w, h = self.image_size
        P = np.hstack([self.K, np.zeros((3, 1))])
        return {
            "image_width": int(w), "image_height": int(h), "camera_name": self.camera_name,
            "camera_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in self.K.reshape(-1)]},
            "distortion_model": "plumb_bob",
            "distortion_coefficients": {"rows": 1, "cols": 5, "data": [float(v) for v in self.dist]},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in np.eye(3).reshape(-1)]},
            "projection_matrix": {"rows": 3, "cols": 4, "data": [float(v) for v in P.reshape(-1)]},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# ChArUco calibration: RMS {self.rms_px:.4f} px over {len(self.used_views)} views "
                  f"(postbc_core.cameras.calibration)\n")
        path.write_text(header + yaml.safe_dump(self.to_camera_info(), sort_keys=False))
        return path


def _matrix(info: dict, key: str, rows: int, cols: int, path) -> np.ndarray:
    try:
        m = info[key]
        data = np.asarray(m["data"], dtype=np.float64)
        if data.size != rows * cols:
            raise ValueError(f"{data.size} values")
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationError(f"{path}: field {key!r} must be {{rows: {rows}, cols: {cols}, data: [...]}} ({e})")
    return data.reshape(rows, cols)


def load_camera_info(path: str | Path) -> Intrinsics:
    """Read a camera_info YAML (ours or ROS camera_calibration's) -> cameras.base.Intrinsics."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such camera_info file; run `postbc calibrate intrinsics` to write it")
    info = yaml.safe_load(path.read_text())
    if not isinstance(info, dict) or "camera_matrix" not in info:
        raise CalibrationError(f"{path}: not a camera_info YAML (no camera_matrix)")
    model = info.get("distortion_model", "plumb_bob")
    if model != "plumb_bob":
        raise CalibrationError(f"{path}: distortion_model {model!r} is not supported; recalibrate with plumb_bob")
    K = _matrix(info, "camera_matrix", 3, 3, path)
    D = np.asarray(info.get("distortion_coefficients", {}).get("data", [0.0] * 5), dtype=np.float64).reshape(-1)
    if D.size != 5:
        raise CalibrationError(f"{path}: plumb_bob needs 5 distortion coefficients, found {D.size}")
    return Intrinsics(width=int(info["image_width"]), height=int(info["image_height"]), fx=float(K[0, 0]),
                      fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]), distortion=tuple(float(v) for v in D))


def calibrate_intrinsics(images, spec: CharucoSpec, *, min_views: int = 6, min_corners: int = 8,
                         fix_k3: bool = True, camera_name: str = "camera") -> IntrinsicsResult:
    """Intrinsics from V ChArUco views (each (H, W) or (H, W, 3) uint8, all the same size).

    Views with fewer than min_corners detected corners are skipped (logged). Raises BoardNotDetectedError if no
    view shows the board, TooFewViewsError if fewer than min_views views are usable. fix_k3 keeps k3 = 0 (as ROS
    camera_calibration does by default: k3 is poorly determined for ordinary lenses and overfits). Vary the board's distance and
    tilt (+-30 deg or more) between views: fronto-parallel views alone leave the focal length poorly determined.
    """
    images = list(images)
    if min_views < 3:
        raise ConfigError(f"min_views={min_views}: calibrateCamera needs at least 3 views")
    if min_corners < 6:
        raise ConfigError(f"min_corners={min_corners}: a view needs at least 6 corners to constrain the camera")
    size = None
    obj, img, used, counts = [], [], [], []
    for i, image in enumerate(images):
        g = gray_image(image)
        if size is None:
            size = (g.shape[1], g.shape[0])
        elif (g.shape[1], g.shape[0]) != size:
            raise ConfigError(f"image {i} is {g.shape[1]}x{g.shape[0]} but image 0 is {size[0]}x{size[1]}; "
                              "calibrate one resolution at a time")
        det = detect_charuco(g, spec)
        counts.append(det.n)
        if det.n < min_corners:
            logger.info("view %d: %d corners (< %d), skipped", i, det.n, min_corners)
            continue
        obj.append(det.object_points.reshape(-1, 1, 3))
        img.append(det.corners.reshape(-1, 1, 2))
        used.append(i)
    if not images or max(counts, default=0) == 0:
        raise BoardNotDetectedError(
            f"no ChArUco corners found in any of {len(images)} image(s) for a {spec.squares_x}x{spec.squares_y} "
            f"{spec.dictionary} board; check the board spec (squares, dictionary), focus and lighting")
    if len(used) < min_views:
        raise TooFewViewsError(
            f"{len(used)} of {len(images)} view(s) show >= {min_corners} corners (counts: {counts}); need "
            f"{min_views}: capture more views with the whole board in the image")
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=flags)
    per_view = []
    for o, p, r, t in zip(obj, img, rvecs, tvecs):
        proj, _ = cv2.projectPoints(o, r, t, K, dist)
        per_view.append(float(np.sqrt(np.mean(np.sum((proj - p).reshape(-1, 2) ** 2, axis=1)))))
    dist = np.asarray(dist, np.float64).reshape(-1)[:5]
    return IntrinsicsResult(K=np.asarray(K, np.float64), dist=dist, rms_px=float(rms),
                            per_view_rms_px=np.asarray(per_view), image_size=size, used_views=used,
                            camera_name=camera_name)


# ------------------------------------------------------------------------------------------------------------------
# Board pose
def _intrinsics_arrays(intrinsics) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(intrinsics, IntrinsicsResult):
        return intrinsics.K, intrinsics.dist
    return np.asarray(intrinsics.K, np.float64), np.asarray(intrinsics.distortion, np.float64)


def estimate_board_pose(image: np.ndarray, spec: CharucoSpec, intrinsics, *, min_corners: int = 6
                        ) -> tuple[np.ndarray, int, float]:
    """Board pose in the camera: (T_camera_board (4, 4), corners used, RMS reprojection px) via cv2.solvePnP.

    intrinsics: a cameras.base.Intrinsics or an IntrinsicsResult. Raises BoardNotDetectedError below min_corners.
    """
    K, dist = _intrinsics_arrays(intrinsics)
    det = detect_charuco(image, spec)
    if det.n < min_corners:
        raise BoardNotDetectedError(f"{det.n} ChArUco corner(s) detected, need {min_corners} for a board pose; "
                                    "bring the whole board into view (check spec, focus, lighting)")
    # IPPE gives the planar pose without a local-minimum risk; Levenberg-Marquardt then refines it.
    ok, rvec, tvec = cv2.solvePnP(det.object_points, det.corners, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise BoardNotDetectedError(f"solvePnP failed on {det.n} corners")
    rvec, tvec = cv2.solvePnPRefineLM(det.object_points, det.corners, K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(det.object_points, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - det.corners) ** 2, axis=1))))
    return make_T(cv2.Rodrigues(rvec)[0], tvec), det.n, rms


# ------------------------------------------------------------------------------------------------------------------
# Hand-eye
@dataclass
class HandEyeSample:
    T_base_gripper: np.ndarray  # (4, 4) EE pose from FK of the measured joints
    T_camera_board: np.ndarray  # (4, 4) from solvePnP
    joint_pos: np.ndarray | None = None  # (6,) rad
    n_corners: int = 0
    reproj_rms_px: float = 0.0


def save_samples(samples: list[HandEyeSample], path: str | Path) -> Path:
    """Write samples to an .npz (T_base_gripper (V, 4, 4), T_camera_board (V, 4, 4), joint_pos (V, 6))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    q = np.array([np.full(6, np.nan) if s.joint_pos is None else s.joint_pos for s in samples]).reshape(-1, 6)
    np.savez(path, T_base_gripper=np.array([s.T_base_gripper for s in samples]).reshape(-1, 4, 4),
             T_camera_board=np.array([s.T_camera_board for s in samples]).reshape(-1, 4, 4), joint_pos=q)
    return path


def load_samples(path: str | Path) -> list[HandEyeSample]:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such hand-eye samples file (.npz written by save_samples)")
    with np.load(path) as z:
        missing = {"T_base_gripper", "T_camera_board"} - set(z.files)
        if missing:
            raise CalibrationError(f"{path}: missing arrays {sorted(missing)}")
        Tg, Tc = z["T_base_gripper"], z["T_camera_board"]
        q = z["joint_pos"] if "joint_pos" in z.files else np.full((len(Tg), 6), np.nan)
    if Tg.shape != Tc.shape or Tg.shape[1:] != (4, 4):
        raise CalibrationError(f"{path}: T_base_gripper {Tg.shape} and T_camera_board {Tc.shape} must both be (V, 4, 4)")
    return [HandEyeSample(T_base_gripper=a, T_camera_board=b, joint_pos=c) for a, b, c in zip(Tg, Tc, q)]


@dataclass
class HandEyeResult:
    T: np.ndarray  # (4, 4) T_parent_child: T_base_camera (eye_to_hand) or T_gripper_camera (eye_in_hand)
    mode: str
    method: str
    parent_frame: str
    child_frame: str
    n_samples: int
    T_board: np.ndarray  # (4, 4) mean board pose: T_gripper_board (eye_to_hand) or T_base_board (eye_in_hand)
    residual_translation_m: np.ndarray  # (V,) per-sample distance of the implied board pose from T_board
    residual_rotation_deg: np.ndarray  # (V,)
    extras: dict = field(default_factory=dict)

    @property
    def translation(self) -> np.ndarray:
        return self.T[:3, 3].copy()

    @property
    def quaternion_xyzw(self) -> np.ndarray:
        w, x, y, z = kinematics.mat_to_quat(self.T[:3, :3])
        return np.array([x, y, z, w])

    def summary(self) -> str:
        return (f"{self.mode} ({self.method}, {self.n_samples} samples): {self.parent_frame} -> {self.child_frame} "
                f"t = {np.round(self.translation, 4).tolist()} m, q_xyzw = {np.round(self.quaternion_xyzw, 5).tolist()}; "
                f"board consistency: {1000 * self.residual_translation_m.mean():.2f} mm mean / "
                f"{1000 * self.residual_translation_m.max():.2f} mm max, {self.residual_rotation_deg.mean():.3f} deg "
                f"mean / {self.residual_rotation_deg.max():.3f} deg max")

    def to_dict(self) -> dict:
        return {
            "mode": self.mode, "method": self.method,
            "parent_frame": self.parent_frame, "child_frame": self.child_frame,
            "translation": {k: float(v) for k, v in zip("xyz", self.translation)},
            "rotation": {k: float(v) for k, v in zip("xyzw", self.quaternion_xyzw)},
            "matrix": [[float(v) for v in row] for row in self.T],
            "n_samples": int(self.n_samples),
            "residuals": {
                "translation_mean_m": float(self.residual_translation_m.mean()),
                "translation_max_m": float(self.residual_translation_m.max()),
                "rotation_mean_deg": float(self.residual_rotation_deg.mean()),
                "rotation_max_deg": float(self.residual_rotation_deg.max()),
            },
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# hand-eye calibration: T_{self.parent_frame}_{self.child_frame} "
                        "(translation m, quaternion xyzw; matrix maps child-frame points to the parent frame)\n"
                        + yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def load_handeye(path: str | Path) -> tuple[np.ndarray, str, str]:
    """Read a hand-eye YAML -> (T_parent_child (4, 4), parent_frame, child_frame)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such hand-eye file; run `postbc calibrate handeye` to write it")
    d = yaml.safe_load(path.read_text())
    try:
        T = np.asarray(d["matrix"], np.float64).reshape(4, 4)
        return T, str(d["parent_frame"]), str(d["child_frame"])
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationError(f"{path}: not a hand-eye YAML (needs matrix, parent_frame, child_frame): {e}")


def _mean_pose(Ts: list[np.ndarray]) -> np.ndarray:
    """Average of rigid transforms: mean translation, chordal-mean rotation (SVD projection)."""
    U, _, Vt = np.linalg.svd(sum(T[:3, :3] for T in Ts))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    return make_T(R, np.mean([T[:3, 3] for T in Ts], axis=0))


def calibrate_handeye(samples: list[HandEyeSample], mode: str = "eye_to_hand", method: str = "park", *,
                      base_frame: str = "wx250s/base_link", gripper_frame: str = "wx250s/ee_gripper_link",
                      camera_frame: str = "camera_color_optical_frame", min_samples: int = 5) -> HandEyeResult:
    """cv2.calibrateHandEye over >= min_samples samples with varied orientations.

    eye_to_hand -> T_base_camera; eye_in_hand -> T_gripper_camera. Residuals: each sample implies the board pose
    that should be constant (in the gripper for eye_to_hand, in the base for eye_in_hand); they report its spread.
    """
    if mode not in HANDEYE_MODES:
        raise ConfigError(f"mode={mode!r}: choose one of {HANDEYE_MODES}")
    if method not in HANDEYE_METHODS:
        raise ConfigError(f"method={method!r}: choose one of {sorted(HANDEYE_METHODS)}")
    if min_samples < 3:
        raise ConfigError(f"min_samples={min_samples}: hand-eye needs at least 3 poses (2 motions)")
    if len(samples) < min_samples:
        raise TooFewViewsError(f"{len(samples)} hand-eye sample(s) with the board detected; need {min_samples} "
                               "(use more poses, with rotations about different axes)")
    if mode == "eye_to_hand":
        # OpenCV: pass base->gripper (the inverse of the EE pose) and it returns camera->base, i.e. T_base_camera.
        g = [inv_T(s.T_base_gripper) for s in samples]
    else:
        g = [s.T_base_gripper for s in samples]
    R, t = cv2.calibrateHandEye([T[:3, :3] for T in g], [T[:3, 3] for T in g],
                                [s.T_camera_board[:3, :3] for s in samples],
                                [s.T_camera_board[:3, 3] for s in samples], method=HANDEYE_METHODS[method])
    X = make_T(R, t)
    if not np.all(np.isfinite(X)):
        raise CalibrationError(f"calibrateHandEye ({method}) returned a non-finite transform; the poses are "
                               "degenerate: vary the gripper orientation about at least two axes")
    boards = [T @ X @ s.T_camera_board for T, s in zip(g, samples)]
    mean = _mean_pose(boards)
    res_t = np.array([np.linalg.norm(B[:3, 3] - mean[:3, 3]) for B in boards])
    res_r = np.array([rotation_angle_deg(mean[:3, :3].T @ B[:3, :3]) for B in boards])
    parent = base_frame if mode == "eye_to_hand" else gripper_frame
    return HandEyeResult(T=X, mode=mode, method=method, parent_frame=parent, child_frame=camera_frame,
                         n_samples=len(samples), T_board=mean, residual_translation_m=res_t,
                         residual_rotation_deg=res_r)

