"""The ChArUco board: its definition (CharucoSpec), its image (on screen, in the twin, to print) and detecting its
inner corners in an image. Frames: calibration.frames. Shape legend: N detected corners, H/W image height/width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from postbc_core.errors import ConfigError

logger = logging.getLogger(__name__)

ARUCO_DICTIONARIES = tuple(sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_") and "APRILTAG" not in n))


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
    """The corners of one board found in one image (N = 0 when none were found)."""

    corners: np.ndarray  # (N, 2) float32 pixels (OpenCV convention: pixel centres at integers)
    ids: np.ndarray  # (N,) int32 corner ids (row-major over the inner corners)
    object_points: np.ndarray  # (N, 3) float32 board-frame metres

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])


def gray_image(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 gray from an (H, W) gray or (H, W, 3) RGB uint8 image (what OpenCV's detectors take)."""
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
    corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(gray_image(image))
    if ids is None or len(ids) == 0:
        z = np.zeros((0,), np.int32)
        return CharucoDetection(np.zeros((0, 2), np.float32), z, np.zeros((0, 3), np.float32))
    ids = ids.reshape(-1).astype(np.int32)
    obj = np.asarray(board.getChessboardCorners(), np.float32)[ids]
    return CharucoDetection(corners.reshape(-1, 2).astype(np.float32), ids, obj)

