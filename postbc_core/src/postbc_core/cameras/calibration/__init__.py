"""Camera calibration: ChArUco intrinsics and hand-eye calibration (cv2.calibrateHandEye), split by job.

  frames   the frame conventions and 4x4 transform helpers every step shares
  board    the ChArUco board: its definition, rendering (screen, print) and corner detection
  solve    intrinsics (camera_info YAML), the board pose in a camera (PnP), hand-eye (samples .npz, YAML)
  capture  hand-eye capture: drives a robots.robot.Robot (or a sim.base.WidowXSim) through poses and reads a Camera
The MuJoCo twin with a board in it, which validates both tools, is postbc_core.sim.calibration_scene (the sim
depends on the board here, never the other way). This package owns the OpenCV check and the error types the
modules share. Needs opencv-python(-headless) 4.x (5.0 lacks calibrateHandEye) and PyYAML.
"""

from postbc_core.errors import PostBCError

try:
    import cv2  # noqa: F401  (checked here once: every module below needs it)
except ImportError as e:  # pragma: no cover - depends on the install
    raise PostBCError("camera calibration needs OpenCV 4.x: pip install 'opencv-python-headless>=4.7,<5'") from e


class CalibrationError(PostBCError):
    """Calibration cannot proceed with the data given (the message says what was found and what is needed)."""


class BoardNotDetectedError(CalibrationError):
    """An image shows too few ChArUco corners (or none) for the step that needs it."""


class TooFewViewsError(CalibrationError):
    """Fewer usable views than the calibration needs."""
