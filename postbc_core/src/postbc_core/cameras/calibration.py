"""Camera calibration: intrinsics from ChArUco views and hand-eye calibration (cv2.calibrateHandEye).

Frames (4x4 homogeneous transforms, `T_a_b` maps points in frame b to frame a; metres):
  base    wx250s/base_link (robots/kinematics.py)
  gripper wx250s/ee_gripper_link (kinematics.fk_matrix)
  camera  OpenCV optical frame: x right, y down, z forward (ROS `*_optical_frame`)
  board   OpenCV ChArUco frame: origin at the board's outer top-left corner, x along the columns, y along the
          rows, z into the board (away from the viewer)
Modes: "eye_in_hand" (camera on the gripper, board fixed in the world) estimates T_gripper_camera;
"eye_to_hand" (camera fixed, board held by the gripper) estimates T_base_camera by passing the inverted gripper
poses T_gripper_base to cv2.calibrateHandEye (the trick in OpenCV's calibrateHandEye documentation).

Intrinsics use the plumb_bob model (K 3x3, D = k1 k2 p1 p2 k3) and are written as a ROS camera_info YAML
(camera_calibration_parsers format). `make_calibration_sim` builds the MuJoCo twin with a ChArUco board in it,
at a known pose, to validate both tools. Needs opencv-python(-headless) 4.x (5.0 lacks calibrateHandEye) and PyYAML.
Shape legend: V views, N detected corners, H/W image height/width.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from postbc_core.errors import ConfigError, PostBCError

try:
    import cv2
except ImportError as e:  # pragma: no cover - depends on the install
    raise PostBCError("camera calibration needs OpenCV 4.x: pip install 'opencv-python-headless>=4.7,<5'") from e

logger = logging.getLogger(__name__)

HANDEYE_MODES = ("eye_to_hand", "eye_in_hand")
HANDEYE_METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
ARUCO_DICTIONARIES = tuple(sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_") and "APRILTAG" not in n))


class CalibrationError(PostBCError):
    """Calibration cannot proceed with the data given (the message says what was found and what is needed)."""


class BoardNotDetectedError(CalibrationError):
    """An image shows too few ChArUco corners (or none) for the step that needs it."""


class TooFewViewsError(CalibrationError):
    """Fewer usable views than the calibration needs."""


# ------------------------------------------------------------------------------------------------------------------
# Board
@dataclass
class CharucoSpec:
    """A ChArUco board: squares_x columns x squares_y rows of chessboard squares with ArUco markers in the white
    ones. Lengths in metres, as printed (measure the print: printers scale)."""

    squares_x: int = 7
    squares_y: int = 5
    square_length: float = 0.04
    marker_length: float = 0.03
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self):
        for name in ("squares_x", "squares_y"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and 3 <= v <= 40):
                raise ConfigError(f"{name}={v!r}: use an integer in 3..40 (at least 2x2 inner corners)")
        if not (self.square_length > 0 and np.isfinite(self.square_length)):
            raise ConfigError(f"square_length={self.square_length}: must be a positive length in metres")
        if not 0 < self.marker_length < self.square_length:
            raise ConfigError(f"marker_length={self.marker_length}: must be in (0, square_length={self.square_length})"
                              " metres (markers sit inside the white squares; 0.7-0.8 x square_length is typical)")
        if self.dictionary not in ARUCO_DICTIONARIES:
            raise ConfigError(f"dictionary={self.dictionary!r}: choose one of {ARUCO_DICTIONARIES}")
        n_markers = (self.squares_x * self.squares_y) // 2
        n_dict = self.aruco_dictionary().bytesList.shape[0]
        if n_markers > n_dict:
            raise ConfigError(f"a {self.squares_x}x{self.squares_y} board needs {n_markers} markers but "
                              f"{self.dictionary} has {n_dict}; pick a larger dictionary (e.g. DICT_4X4_250)")

    def aruco_dictionary(self):
        return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))

    def board(self):
        """The cv2.aruco.CharucoBoard for this spec."""
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_length, self.marker_length,
                                      self.aruco_dictionary())

    @property
    def n_corners(self) -> int:
        """Inner chessboard corners (the points calibration uses)."""
        return (self.squares_x - 1) * (self.squares_y - 1)

    @property
    def size_m(self) -> tuple[float, float]:
        """Board (width, height) in metres, without the white margin."""
        return self.squares_x * self.square_length, self.squares_y * self.square_length


def render_board(spec: CharucoSpec, px_per_square: int = 100, margin_px: int | None = None) -> np.ndarray:
    """Board image (H, W) uint8 with exactly px_per_square pixels per square and a white margin of margin_px
    (default half a square; detection needs a quiet zone) on every side."""
    if px_per_square < 20:
        raise ConfigError(f"px_per_square={px_per_square}: use at least 20 pixels per square")
    m = px_per_square // 2 if margin_px is None else int(margin_px)
    if m < 0:
        raise ConfigError(f"margin_px={margin_px}: must be >= 0")
    size = (spec.squares_x * px_per_square + 2 * m, spec.squares_y * px_per_square + 2 * m)
    return spec.board().generateImage(size, marginSize=m, borderBits=1)


def render_board_for_print(spec: CharucoSpec, dpi: int = 300, margin_m: float = 0.01) -> np.ndarray:
    """Board image (H, W) uint8 to print at `dpi` with no scaling: squares come out square_length metres wide."""
    pps = round(spec.square_length / 0.0254 * dpi)
    if abs(pps * 0.0254 / dpi - spec.square_length) > 1e-4:
        logger.info("square_length %.4f m is %.2f px at %d dpi; printing %d px = %.5f m squares (measure the print)",
                    spec.square_length, spec.square_length / 0.0254 * dpi, dpi, pps, pps * 0.0254 / dpi)
    return render_board(spec, px_per_square=pps, margin_px=round(margin_m / 0.0254 * dpi))


@dataclass(frozen=True)
class CharucoDetection:
    corners: np.ndarray  # (N, 2) float32 pixels (OpenCV convention: pixel centres at integers)
    ids: np.ndarray  # (N,) int32 corner ids (row-major over the inner corners)
    object_points: np.ndarray  # (N, 3) float32 board-frame metres

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])


def _gray(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ConfigError(f"images must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    raise ConfigError(f"image of shape {a.shape}: expected (H, W) gray or (H, W, 3) RGB")


def detect_charuco(image: np.ndarray, spec: CharucoSpec) -> CharucoDetection:
    """Detect the board's inner corners in an (H, W) gray or (H, W, 3) RGB uint8 image (N may be 0)."""
    board = spec.board()
    corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(_gray(image))
    if ids is None or len(ids) == 0:
        z = np.zeros((0,), np.int32)
        return CharucoDetection(np.zeros((0, 2), np.float32), z, np.zeros((0, 3), np.float32))
    ids = ids.reshape(-1).astype(np.int32)
    obj = np.asarray(board.getChessboardCorners(), np.float32)[ids]
    return CharucoDetection(corners.reshape(-1, 2).astype(np.float32), ids, obj)


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

    def to_intrinsics(self):
        from postbc_core.cameras.base import Intrinsics

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
        import yaml

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


def load_camera_info(path: str | Path):
    """Read a camera_info YAML (ours or ROS camera_calibration's) -> cameras.base.Intrinsics."""
    import yaml

    from postbc_core.cameras.base import Intrinsics

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
        g = _gray(image)
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
# Poses and hand-eye
def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.asarray(t).reshape(3)
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (deg) of a rotation matrix."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


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


def _move_to(robot_like, q: np.ndarray, settle_tol: float, max_steps: int) -> np.ndarray:
    """Drive to joint configuration q (6,) rad and return the measured joints once they stop moving."""
    from postbc_core.robots import kinematics

    if hasattr(robot_like, "send_action"):  # robots.base.Robot (sim or hardware): goes through the safety layer
        from postbc_core.robots.base import JointAction

        g = float(kinematics.GRIPPER_LIMITS[0])
        read = lambda: np.asarray(robot_like.get_observation()["joint_pos"], np.float64)
        step = lambda: robot_like.send_action(JointAction(joint_pos=q, gripper=g))
    elif hasattr(robot_like, "step_control"):  # a sim.base.WidowXSim
        g = float(robot_like.gripper_pos())
        read = robot_like.joint_pos
        step = lambda: robot_like.step_control(q, g)
    else:
        raise ConfigError(f"{type(robot_like).__name__}: expected a robots.base.Robot or a sim.base.WidowXSim")
    prev = read()
    for _ in range(max_steps):
        step()
        cur = read()
        if np.max(np.abs(cur - q)) < settle_tol and np.max(np.abs(cur - prev)) < 0.1 * settle_tol:
            return cur
        prev = cur
    err = float(np.max(np.abs(read() - q)))
    if err > 0.05:
        raise CalibrationError(f"arm did not reach {np.round(q, 4)} (still {err:.3f} rad off after {max_steps} "
                               "steps); choose reachable, collision-free calibration poses")
    logger.info("pose %s settled %.4f rad off the target (the measured joints are used)", np.round(q, 4), err)
    return read()


def capture_handeye(robot_like, camera, poses, spec: CharucoSpec, *, intrinsics=None, min_corners: int = 8,
                    settle_tol: float = 2e-3, max_settle_steps: int = 60) -> list[HandEyeSample]:
    """Move through joint configurations `poses` (P, 6) rad, record (FK EE pose, board pose) at each.

    robot_like: a robots.base.Robot (commands pass its safety layer) or a sim.base.WidowXSim. camera: a
    cameras.base.Camera (connected); intrinsics default to camera.intrinsics. The EE pose is FK of the measured
    joints (what the arm really did). Poses where the board is not seen are skipped (logged).
    """
    from postbc_core.robots import kinematics

    intr = camera.intrinsics if intrinsics is None else intrinsics
    samples = []
    poses = np.asarray(poses, np.float64).reshape(-1, 6)
    for i, q in enumerate(poses):
        q_meas = _move_to(robot_like, q, settle_tol, max_settle_steps)
        frame = camera.read()
        try:
            T_cb, n, rms = estimate_board_pose(frame.color, spec, intr, min_corners=min_corners)
        except BoardNotDetectedError as e:
            logger.info("hand-eye pose %d skipped: %s", i, e)
            continue
        samples.append(HandEyeSample(T_base_gripper=kinematics.fk_matrix(q_meas), T_camera_board=T_cb,
                                     joint_pos=q_meas, n_corners=n, reproj_rms_px=rms))
    logger.info("hand-eye capture: board seen in %d of %d poses", len(samples), len(poses))
    return samples


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
        from postbc_core.robots import kinematics

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
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# hand-eye calibration: T_{self.parent_frame}_{self.child_frame} "
                        "(translation m, quaternion xyzw; matrix maps child-frame points to the parent frame)\n"
                        + yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def load_handeye(path: str | Path) -> tuple[np.ndarray, str, str]:
    """Read a hand-eye YAML -> (T_parent_child (4, 4), parent_frame, child_frame)."""
    import yaml

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


# ------------------------------------------------------------------------------------------------------------------
# MuJoCo twin with a board
BOARD_BODY = "charuco_board"
BOARD_THICKNESS = 0.002  # m, the box geom's full thickness


@dataclass
class CalibrationScene:
    """A WidowXSim with a ChArUco board body: `mount="world"` (a mocap body posed by set_board_pose) or
    `"gripper"` (rigidly attached to gripper_link). Ground truth comes from the compiled model."""

    sim: object  # sim.base.WidowXSim
    spec: CharucoSpec
    mount: str
    # board body frame -> OpenCV board frame (the texture's top-left corner, z into the board)
    T_body_board: np.ndarray

    def set_board_pose(self, pos, quat_wxyz=(1.0, 0.0, 0.0, 0.0)) -> None:
        """World pose of the board body (its visible face is its +z side; mount="world" only)."""
        import mujoco

        if self.mount != "world":
            raise ConfigError("set_board_pose: the board is attached to the gripper (mount='gripper')")
        m, d = self.sim.model, self.sim.data
        mid = int(m.body_mocapid[m.body(BOARD_BODY).id])
        d.mocap_pos[mid] = pos
        d.mocap_quat[mid] = np.asarray(quat_wxyz, np.float64) / np.linalg.norm(quat_wxyz)
        mujoco.mj_forward(m, d)

    def _T_world_body(self, body: str) -> np.ndarray:
        b = self.sim.model.body(body).id
        return make_T(self.sim.data.xmat[b].reshape(3, 3), self.sim.data.xpos[b])

    def T_world_board(self) -> np.ndarray:
        return self._T_world_body(BOARD_BODY) @ self.T_body_board

    def T_world_base(self) -> np.ndarray:
        return self._T_world_body("base_link")

    def T_world_gripper(self) -> np.ndarray:
        s = self.sim.model.site("ee_gripper_link").id
        return make_T(self.sim.data.site_xmat[s].reshape(3, 3), self.sim.data.site_xpos[s])

    def T_world_camera(self, camera: str) -> np.ndarray:
        """Camera pose in OpenCV optical convention (MuJoCo cameras look along -z with y up)."""
        c = self.sim.model.camera(camera).id
        R = self.sim.data.cam_xmat[c].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        return make_T(R, self.sim.data.cam_xpos[c])

    def sim_intrinsics(self, camera: str, width: int, height: int):
        """MuJoCo's pinhole intrinsics of `camera` at width x height (OpenCV pixel convention)."""
        from postbc_core.cameras.sim import mujoco_intrinsics

        return mujoco_intrinsics(self.sim.model, camera, width, height)


def make_calibration_sim(spec: CharucoSpec, mount: str = "world", *, board_pos=(0.14, 0.0, 0.0),
                         board_quat=(0.7071067811865476, 0.0, 0.7071067811865476, 0.0), px_per_square: int = 64,
                         control_hz: float = 10.0) -> CalibrationScene:
    """The WidowX twin (sim/assets/scene.xml) plus a ChArUco board: a thin textured box whose +z face shows the
    board (with a white margin of half a square).

    mount="world": a mocap body (pose it with set_board_pose). mount="gripper": a child of gripper_link at
    board_pos / board_quat (w x y z; the default puts the board 14 cm out along the gripper's x axis, facing
    forward). The task XML files are untouched: the scene is written with the board image into a temp dir.
    """
    from postbc_core.sim import base as sim_base

    if mount not in ("world", "gripper"):
        raise ConfigError(f"mount={mount!r}: choose 'world' or 'gripper'")
    img = render_board(spec, px_per_square=px_per_square)
    margin = px_per_square // 2
    w_m = img.shape[1] / px_per_square * spec.square_length
    h_m = img.shape[0] / px_per_square * spec.square_length
    geom = (f'<geom name="charuco_board" type="box" size="{w_m / 2} {h_m / 2} {BOARD_THICKNESS / 2}" '
            f'pos="0 0 {-BOARD_THICKNESS / 2}" material="charuco" contype="0" conaffinity="0" density="0" '
            'group="1"/>')
    with tempfile.TemporaryDirectory(prefix="postbc_calib_") as tmp:
        tmp = Path(tmp)
        cv2.imwrite(str(tmp / "charuco.png"), img)
        shutil.copy(sim_base.ASSETS / "wx250s.xml", tmp / "wx250s.xml")
        scene = sim_base.SCENE_XML.read_text()
        scene = scene.replace("</asset>", '  <texture name="charuco" type="2d" file="charuco.png"/>\n'
                              '    <material name="charuco" texture="charuco" specular="0" shininess="0"/>\n'
                              '  </asset>', 1)
        if mount == "world":
            scene = scene.replace("</worldbody>", f'  <body name="{BOARD_BODY}" mocap="true" pos="0.3 0 0.2">'
                                  f'{geom}</body>\n  </worldbody>', 1)
        else:
            robot = (tmp / "wx250s.xml").read_text()
            anchor = '<site name="ee_gripper_link"'
            if anchor not in robot:
                raise PostBCError(f"wx250s.xml has no {anchor}: update make_calibration_sim")
            p = " ".join(str(float(v)) for v in board_pos)
            q = " ".join(str(float(v)) for v in board_quat)
            body = f'<body name="{BOARD_BODY}" pos="{p}" quat="{q}">{geom}</body>\n                  '
            (tmp / "wx250s.xml").write_text(robot.replace(anchor, body + anchor, 1))
        (tmp / "scene.xml").write_text(scene)
        sim = sim_base.WidowXSim(tmp / "scene.xml", control_hz=control_hz)
    # MuJoCo maps the image onto the box's +z face with its first row at +y: the OpenCV board frame's origin is
    # the board's top-left corner (inside the margin), x along +x, y along -y, z along -z (into the board).
    m_m = margin / px_per_square * spec.square_length
    T_body_board = make_T(np.diag([1.0, -1.0, -1.0]), [-w_m / 2 + m_m, h_m / 2 - m_m, 0.0])
    return CalibrationScene(sim=sim, spec=spec, mount=mount, T_body_board=T_body_board)


def _rotvec(v) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(v, np.float64).reshape(3, 1))[0]


def sim_intrinsics_views(scene: CalibrationScene, camera: str = "front", n_views: int = 12, width: int = 480,
                         height: int = 360, seed: int = 0, distance=(0.38, 0.55)) -> list[np.ndarray]:
    """Render n_views RGB images of the (world-mounted) board facing `camera` at random distances (m) and
    tilts (+-34 deg about the board's x and y axes, +-17 deg in-plane)."""
    from postbc_core.robots import kinematics

    rng = np.random.default_rng(seed)
    Tc = scene.T_world_camera(camera)
    Rc = Tc[:3, :3]
    images = []
    for _ in range(n_views):
        # Board body axes facing the camera: x = camera x, y = -camera y, z = -camera z; then tilt it.
        R = Rc @ np.diag([1.0, -1.0, -1.0]) @ _rotvec([rng.uniform(-0.6, 0.6), 0, 0]) \
            @ _rotvec([0, rng.uniform(-0.6, 0.6), 0]) @ _rotvec([0, 0, rng.uniform(-0.3, 0.3)])
        pos = Tc[:3, 3] + rng.uniform(*distance) * Rc[:, 2] + rng.uniform(-0.03, 0.03) * Rc[:, 0] \
            + rng.uniform(-0.03, 0.03) * Rc[:, 1]
        scene.set_board_pose(pos, kinematics.mat_to_quat(R))
        images.append(scene.sim.render(camera, width, height)[0])
    return images


def sim_eye_to_hand_poses(scene: CalibrationScene, n_poses: int = 14, seed: int = 0, camera: str = "front",
                          board_point=(0.38, 0.0, 0.18)) -> np.ndarray:
    """Joint configurations (P, 6) rad that show the gripper-mounted board (make_calibration_sim's default mount)
    to `camera`: IK for the board facing the camera at board_point (m, base frame), then random joint offsets
    (up to 0.25 rad; 0.4-0.5 rad on the wrist rolls) so the orientations differ about several axes."""
    from postbc_core.robots import kinematics

    Tc = inv_T(scene.T_world_base()) @ scene.T_world_camera(camera)
    pb = np.asarray(board_point, np.float64)
    d = (Tc[:3, 3] - pb) / np.linalg.norm(Tc[:3, 3] - pb)
    y = np.cross([0.0, 0.0, 1.0], d)
    y /= np.linalg.norm(y)
    R = np.stack([d, y, np.cross(d, y)], axis=1)  # gripper x (the board normal) towards the camera
    ee_to_board = 0.14 - float(kinematics.EE_OFFSET[0])
    r = kinematics.ik(pb - ee_to_board * d, kinematics.mat_to_quat(R))
    if not r.converged:
        raise CalibrationError(f"no IK solution puts the board at {pb.tolist()} facing the camera; move board_point")
    rng = np.random.default_rng(seed)
    poses = r.q + rng.uniform(-1, 1, (n_poses, 6)) * np.array([0.25, 0.12, 0.12, 0.4, 0.35, 0.5])
    poses[:, [3, 5]] = (poses[:, [3, 5]] + np.pi) % (2 * np.pi) - np.pi  # continuous joints: wrap, not clamp
    return np.clip(poses, kinematics.JOINT_LIMITS[:, 0] + 0.01, kinematics.JOINT_LIMITS[:, 1] - 0.01)
