"""The MuJoCo twin with a ChArUco board in it, at a known pose, to validate the calibration tools
(cameras.calibration) against the truth from the compiled model: the scene, views of a world-mounted board for
intrinsics, and arm poses that show a gripper-mounted board for eye-to-hand. Frames: cameras.calibration.frames.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import mujoco
import numpy as np

from postbc_core.cameras.calibration import CalibrationError
from postbc_core.cameras.calibration.board import CharucoSpec, render_board
from postbc_core.cameras.calibration.frames import inv_T, make_T, rotvec
from postbc_core.cameras.sim import mujoco_intrinsics
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.sim.base import ASSETS, SCENE_XML, WidowXSim

BOARD_BODY = "charuco_board"
BOARD_THICKNESS = 0.002  # m, the box geom's full thickness


@dataclass
class CalibrationScene:
    """A WidowXSim with a ChArUco board body: `mount="world"` (a mocap body posed by set_board_pose) or
    `"gripper"` (rigidly attached to gripper_link). Ground truth comes from the compiled model."""

    sim: WidowXSim
    spec: CharucoSpec
    mount: str
    # board body frame -> OpenCV board frame (the texture's top-left corner, z into the board)
    T_body_board: np.ndarray

    def set_board_pose(self, pos, quat_wxyz=(1.0, 0.0, 0.0, 0.0)) -> None:
        """World pose of the board body (its visible face is its +z side; mount="world" only)."""
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
        shutil.copy(ASSETS / "wx250s.xml", tmp / "wx250s.xml")
        scene = SCENE_XML.read_text()
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
        sim = WidowXSim(tmp / "scene.xml", control_hz=control_hz)
    # MuJoCo maps the image onto the box's +z face with its first row at +y: the OpenCV board frame's origin is
    # the board's top-left corner (inside the margin), x along +x, y along -y, z along -z (into the board).
    m_m = margin / px_per_square * spec.square_length
    T_body_board = make_T(np.diag([1.0, -1.0, -1.0]), [-w_m / 2 + m_m, h_m / 2 - m_m, 0.0])
    return CalibrationScene(sim=sim, spec=spec, mount=mount, T_body_board=T_body_board)


def sim_intrinsics_views(scene: CalibrationScene, camera: str = "front", n_views: int = 12, width: int = 480,
                         height: int = 360, seed: int = 0, distance=(0.38, 0.55)) -> list[np.ndarray]:
    """Render n_views RGB images of the (world-mounted) board facing `camera` at random distances (m) and
    tilts (+-34 deg about the board's x and y axes, +-17 deg in-plane)."""
    rng = np.random.default_rng(seed)
    Tc = scene.T_world_camera(camera)
    Rc = Tc[:3, :3]
    images = []
    for _ in range(n_views):
        # Board body axes facing the camera: x = camera x, y = -camera y, z = -camera z; then tilt it.
        R = Rc @ np.diag([1.0, -1.0, -1.0]) @ rotvec([rng.uniform(-0.6, 0.6), 0, 0]) \
            @ rotvec([0, rng.uniform(-0.6, 0.6), 0]) @ rotvec([0, 0, rng.uniform(-0.3, 0.3)])
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
