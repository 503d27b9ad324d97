"""WidowX 250s (wx250s) kinematics in pure numpy: FK, geometric Jacobian, damped-least-squares IK, EE deltas.

Shared by the MuJoCo twin and the real arm, so no mujoco import here. Frames and numbers follow Interbotix's
`wx250s.urdf.xacro` (interbotix_xsarm_descriptions): the base frame is `wx250s/base_link` (x forward, z up), the
end-effector frame is `wx250s/ee_gripper_link` (between the fingers, x along the approach direction). Units: metres,
radians. Quaternions are [w x y z]. Shape legend: N batch of configurations.

Joint order: waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate (robots/base.py JOINT_NAMES).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# (parent -> joint origin translation, joint axis) from wx250s.urdf.xacro; every joint origin has rpy = 0.
JOINT_ORIGINS = np.array([
    [0.0, 0.0, 0.072],  # waist: base_link -> shoulder_link
    [0.0, 0.0, 0.03865],  # shoulder: shoulder_link -> upper_arm_link
    [0.04975, 0.0, 0.25],  # elbow: upper_arm_link -> upper_forearm_link
    [0.175, 0.0, 0.0],  # forearm_roll: upper_forearm_link -> lower_forearm_link
    [0.075, 0.0, 0.0],  # wrist_angle: lower_forearm_link -> wrist_link
    [0.065, 0.0, 0.0],  # wrist_rotate: wrist_link -> gripper_link
])
JOINT_AXES = ("z", "y", "y", "x", "y", "x")
# gripper_link -> ee_arm_link 0.043, ee_arm_link -> gripper_bar_link 0, gripper_bar_link -> fingers_link 0.023,
# fingers_link -> ee_gripper_link 0.027575 (all along x, rpy 0).
FINGERS_OFFSET = 0.043 + 0.023  # gripper_link -> fingers_link (where the finger slides are anchored)
EE_OFFSET = np.array([FINGERS_OFFSET + 0.027575, 0.0, 0.0])  # gripper_link -> ee_gripper_link

# URDF limits: waist/forearm_roll/wrist_rotate +-(pi - 1e-5); shoulder [-108, 114] deg; elbow [-123, 92] deg;
# wrist_angle [-100, 123] deg.
_PI_LIM = np.pi - 1e-5
JOINT_LIMITS = np.array([
    [-_PI_LIM, _PI_LIM],
    [np.deg2rad(-108.0), np.deg2rad(114.0)],
    [np.deg2rad(-123.0), np.deg2rad(92.0)],
    [-_PI_LIM, _PI_LIM],
    [np.deg2rad(-100.0), np.deg2rad(123.0)],
    [-_PI_LIM, _PI_LIM],
])
# left_finger prismatic joint (m): 0.015 closed .. 0.037 open; right_finger mirrors it (mimic multiplier -1).
GRIPPER_LIMITS = np.array([0.015, 0.037])
# Start pose (ours; Interbotix's 'home' is all zeros, gripper horizontal): gripper pointing straight down with the
# EE at (0.30, 0, 0.18) m, i.e. 18 cm above the table centre (IK solution, rounded to 0.1 mrad).
HOME_QPOS = np.array([0.0, 0.0048, 0.0826, 0.0, 1.4834, 0.0])


_WRAP = (JOINT_LIMITS[:, 1] - JOINT_LIMITS[:, 0]) > 2 * np.pi - 1e-3  # joints with +-pi limits


@dataclass(frozen=True)
class IKResult:
    q: np.ndarray  # (6,) rad, within JOINT_LIMITS
    pos_err_m: float
    rot_err_rad: float  # 0 when no orientation target was given
    converged: bool


def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) about a principal axis for angles (N,)."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    if axis == "x":
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "y":
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _as_batch(q) -> tuple[np.ndarray, bool]:
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (6,) or q.ndim not in (1, 2):
        raise ValueError(f"joint vector must have shape (6,) or (N, 6), got {q.shape}")
    return np.atleast_2d(q), q.ndim == 1


def _chain(q: np.ndarray):
    """Joint frames for q (N, 6): positions (N, 6, 3) and world axes (N, 6, 3) of each joint, EE (N, 3), (N, 3, 3)."""
    n = q.shape[0]
    R = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    p = np.zeros((n, 3))
    unit = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}
    pos, axes = np.zeros((n, 6, 3)), np.zeros((n, 6, 3))
    for i, ax in enumerate(JOINT_AXES):
        p = p + R @ JOINT_ORIGINS[i]
        pos[:, i] = p
        axes[:, i] = R @ unit[ax]
        R = R @ _rot(ax, q[:, i])
    p_ee = p + R @ EE_OFFSET
    return pos, axes, p_ee, R


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) [w x y z] with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    # Shepperd's method: pick the numerically largest of w, x, y, z as the pivot.
    cand = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    k = np.argmax(cand, axis=1)
    q = np.zeros((m.shape[0], 4))
    for i in range(m.shape[0]):
        a = m[i]
        if k[i] == 0:
            s = 2.0 * np.sqrt(1.0 + tr[i])
            q[i] = [0.25 * s, (a[2, 1] - a[1, 2]) / s, (a[0, 2] - a[2, 0]) / s, (a[1, 0] - a[0, 1]) / s]
        elif k[i] == 1:
            s = 2.0 * np.sqrt(1.0 + a[0, 0] - a[1, 1] - a[2, 2])
            q[i] = [(a[2, 1] - a[1, 2]) / s, 0.25 * s, (a[0, 1] + a[1, 0]) / s, (a[0, 2] + a[2, 0]) / s]
        elif k[i] == 2:
            s = 2.0 * np.sqrt(1.0 + a[1, 1] - a[0, 0] - a[2, 2])
            q[i] = [(a[0, 2] - a[2, 0]) / s, (a[0, 1] + a[1, 0]) / s, 0.25 * s, (a[1, 2] + a[2, 1]) / s]
        else:
            s = 2.0 * np.sqrt(1.0 + a[2, 2] - a[0, 0] - a[1, 1])
            q[i] = [(a[1, 0] - a[0, 1]) / s, (a[0, 2] + a[2, 0]) / s, (a[1, 2] + a[2, 1]) / s, 0.25 * s]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape(R.shape[:-2] + (4,))


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) [w x y z] -> rotation matrices (..., 3, 3)."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def euler_to_mat(rpy: np.ndarray) -> np.ndarray:
    """Extrinsic roll-pitch-yaw about base x, y, z (rad) -> R = Rz(yaw) Ry(pitch) Rx(roll), (3, 3)."""
    r, p, y = (np.atleast_1d(np.float64(v)) for v in rpy)
    return (_rot("z", y) @ _rot("y", p) @ _rot("x", r))[0]


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) in the base frame that rotates R onto R_target."""
    dR = R_target @ R.T
    cos = np.clip((np.trace(dR) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    v = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]])
    if angle < 1e-9:
        return 0.5 * v
    if np.pi - angle < 1e-6:
        # Near pi the antisymmetric part vanishes: take the axis from the symmetric part.
        B = (dR + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(B), 0.0, None))
        i = int(np.argmax(axis))
        axis = B[i] / axis[i]
        return angle * axis / np.linalg.norm(axis)
    return angle * v / (2.0 * np.sin(angle))


def fk_matrix(q) -> np.ndarray:
    """Homogeneous transform base_link -> ee_gripper_link: (4, 4) for q (6,), (N, 4, 4) for q (N, 6)."""
    qb, single = _as_batch(q)
    _, _, p, R = _chain(qb)
    T = np.zeros((qb.shape[0], 4, 4))
    T[:, :3, :3], T[:, :3, 3], T[:, 3, 3] = R, p, 1.0
    return T[0] if single else T


def fk(q) -> tuple[np.ndarray, np.ndarray]:
    """EE position (3,) m and orientation (4,) [w x y z] in the base frame; batched: (N, 3), (N, 4)."""
    qb, single = _as_batch(q)
    _, _, p, R = _chain(qb)
    quat = mat_to_quat(R)
    return (p[0], quat[0]) if single else (p, quat)


def jacobian(q) -> np.ndarray:
    """Geometric Jacobian (6, 6) of the EE frame in the base frame: rows [v (m/s); omega (rad/s)] per joint rad/s."""
    qb, single = _as_batch(q)
    if not single:
        raise ValueError("jacobian takes one configuration (6,)")
    pos, axes, p_ee, _ = _chain(qb)
    J = np.zeros((6, 6))
    J[:3] = np.cross(axes[0], p_ee[0] - pos[0]).T
    J[3:] = axes[0].T
    return J


def _ik_solve(q0, p_target, R_target, max_iters, tol, damping):
    lo, hi = JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1]
    q = np.clip(q0, lo, hi)
    best = (np.inf, q, np.inf, np.inf)
    for _ in range(max_iters):
        _, _, p, R = _chain(q[None])
        e_pos = p_target - p[0]
        e_rot = rotation_error(R_target, R[0]) if R_target is not None else np.zeros(3)
        pe, re = float(np.linalg.norm(e_pos)), float(np.linalg.norm(e_rot))
        # Score rotation error at 0.1 m per rad so a 1 mm / 10 mrad trade-off is neutral.
        score = pe + 0.1 * re
        if score < best[0]:
            best = (score, q.copy(), pe, re)
        if pe < tol and re < 10 * tol:
            break
        J = jacobian(q)
        if R_target is None:
            J, err = J[:3], e_pos
        else:
            err = np.concatenate([e_pos, e_rot])
        # Damped least squares: dq = J^T (J J^T + lambda^2 I)^-1 e; limit the step so linearisation holds.
        dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(J.shape[0]), err)
        step = np.max(np.abs(dq))
        if step > 0.5:
            dq *= 0.5 / step
        q = q + dq
        # waist, forearm_roll and wrist_rotate span the full circle: wrap instead of clamping so an iterate
        # crossing +-pi continues on the other side rather than sticking at the limit.
        q[_WRAP] = (q[_WRAP] + np.pi) % (2 * np.pi) - np.pi
        q = np.clip(q, lo, hi)
    _, q, pe, re = best
    return q, pe, re


def ik(target_pos, target_quat=None, q_init=None, *, max_iters: int = 200, tol: float = 1e-4,
       damping: float = 1e-3, restarts: int = 12, seed: int = 0) -> IKResult:
    """Damped-least-squares IK for the EE frame, joint limits enforced by clamping every iterate.

    target_pos (3,) m and optional target_quat (4,) [w x y z] in the base frame; q_init (6,) rad (default HOME_QPOS).
    Converged means position error < tol m and rotation error < 10 * tol rad. If the first attempt fails, up to
    `restarts` seeded random starts within the limits are tried; the best attempt is returned either way.
    """
    p_target = np.asarray(target_pos, dtype=np.float64).reshape(3)
    R_target = None if target_quat is None else quat_to_mat(np.asarray(target_quat, dtype=np.float64).reshape(4))
    q0 = HOME_QPOS if q_init is None else np.asarray(q_init, dtype=np.float64).reshape(6)
    if not (np.all(np.isfinite(p_target)) and np.all(np.isfinite(q0))):
        raise ValueError(f"ik got a non-finite target {p_target} or start {q0}")
    rng = np.random.default_rng(seed)
    best = None
    for attempt in range(restarts + 1):
        if attempt == 0:
            start = q0
        elif attempt == 1:
            # HOME turned towards the target: gets targets behind the base that a start facing forward misses.
            start = HOME_QPOS.copy()
            start[0] = np.arctan2(p_target[1], p_target[0])
        else:
            start = rng.uniform(JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1])
        q, pe, re = _ik_solve(start, p_target, R_target, max_iters, tol, damping)
        ok = pe < tol and re < 10 * tol
        if best is None or pe + 0.1 * re < best.pos_err_m + 0.1 * best.rot_err_rad:
            best = IKResult(q=q, pos_err_m=pe, rot_err_rad=re, converged=ok)
        if ok:
            break
    return best


def apply_ee_delta(q, delta6, *, max_iters: int = 100) -> np.ndarray:
    """Joint targets (6,) that move the EE by a Bridge-style delta [dx dy dz droll dpitch dyaw] (m, rad).

    Translation is added in the base frame; the rotation delta (extrinsic rpy about base axes) is pre-multiplied
    onto the current EE orientation. IK starts from q so small deltas give small joint changes (no restarts, which
    could jump to another branch); an unreachable delta returns the closest solution and logs a warning.
    """
    q = np.asarray(q, dtype=np.float64).reshape(6)
    d = np.asarray(delta6, dtype=np.float64).reshape(6)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(d))):
        raise ValueError(f"apply_ee_delta got non-finite input q={q} delta={d}")
    _, _, p, R = _chain(q[None])
    R_target = euler_to_mat(d[3:]) @ R[0]
    res = ik(p[0] + d[:3], mat_to_quat(R_target), q_init=q, max_iters=max_iters, restarts=0)
    if not res.converged:
        logger.warning("EE delta %s not reachable exactly from q=%s: residual %.4f m, %.4f rad",
                       np.round(d, 4), np.round(q, 3), res.pos_err_m, res.rot_err_rad)
    return res.q
