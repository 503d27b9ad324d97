"""Hand-eye capture: drives the arm (a robots.robot.Robot, whose safety layer every command passes, or a bare
sim.base.WidowXSim) through joint configurations and pairs each measured pose with the board pose a Camera sees.
What it returns feeds calibration.solve.calibrate_handeye (and save_samples). Shape legend: P poses.
"""

from __future__ import annotations

import logging

import numpy as np

from postbc_core.cameras.calibration import BoardNotDetectedError, CalibrationError
from postbc_core.cameras.calibration.board import CharucoSpec
from postbc_core.cameras.calibration.solve import HandEyeSample, estimate_board_pose
from postbc_core.errors import ConfigError
from postbc_core.robots import kinematics
from postbc_core.robots.base import JointAction

logger = logging.getLogger(__name__)


def _move_to(robot_like, q: np.ndarray, settle_tol: float, max_steps: int) -> np.ndarray:
    """Drive to joint configuration q (6,) rad and return the measured joints once they stop moving."""
    if hasattr(robot_like, "send_action"):  # robots.robot.Robot (sim or hardware): goes through the safety layer
        g = float(kinematics.GRIPPER_LIMITS[0])
        read = lambda: np.asarray(robot_like.get_observation()["joint_pos"], np.float64)
        step = lambda: robot_like.send_action(JointAction(joint_pos=q, gripper=g))
    elif hasattr(robot_like, "step_control"):  # a sim.base.WidowXSim
        g = float(robot_like.gripper_pos())
        read = robot_like.joint_pos
        step = lambda: robot_like.step_control(q, g)
    else:
        raise ConfigError(f"{type(robot_like).__name__}: expected a robots.robot.Robot or a sim.base.WidowXSim")
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

    robot_like: a robots.robot.Robot (commands pass its safety layer) or a sim.base.WidowXSim. camera: a
    cameras.base.Camera (connected); intrinsics default to camera.intrinsics. The EE pose is FK of the measured
    joints (what the arm really did). Poses where the board is not seen are skipped (logged).
    """
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

