"""robots/kinematics.py: FK against MuJoCo's EE site, Jacobian against finite differences, IK round trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postbc_core.robots import kinematics as K

LO, HI = K.JOINT_LIMITS[:, 0], K.JOINT_LIMITS[:, 1]


def random_q(rng, n):
    return rng.uniform(LO, HI, size=(n, 6))


def quat_angle(q1, q2):
    return 2 * np.arccos(np.clip(abs(float(np.dot(q1, q2))), 0.0, 1.0))


def test_fk_matches_mujoco_site():
    pytest.importorskip("mujoco")
    from postbc_core.sim.base import SCENE_XML, mujoco  # sim.base picks the headless GL backend first

    m = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    d = mujoco.MjData(m)
    adr = [m.joint(n).qposadr[0] for n in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")]
    site = m.site("ee_gripper_link").id
    qs = random_q(np.random.default_rng(0), 100)
    pos_b, quat_b = K.fk(qs)
    max_p = max_r = 0.0
    for i, q in enumerate(qs):
        d.qpos[adr] = q
        mujoco.mj_kinematics(m, d)
        R = d.site_xmat[site].reshape(3, 3)
        # base_link sits at the world origin with identity orientation, so world == base frame.
        max_p = max(max_p, np.linalg.norm(d.site_xpos[site] - pos_b[i]))
        max_r = max(max_r, np.linalg.norm(K.rotation_error(R, K.quat_to_mat(quat_b[i]))))
    assert max_p < 1e-6, max_p
    assert max_r < 1e-6, max_r


def test_joint_limits_match_mjcf():
    pytest.importorskip("mujoco")
    from postbc_core.sim.base import SCENE_XML, mujoco  # sim.base picks the headless GL backend first

    m = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    for i, n in enumerate(("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")):
        np.testing.assert_allclose(m.joint(n).range, K.JOINT_LIMITS[i], atol=1e-12)
        np.testing.assert_allclose(m.actuator(n).ctrlrange, K.JOINT_LIMITS[i], atol=1e-12)
    np.testing.assert_allclose(m.joint("left_finger").range, K.GRIPPER_LIMITS, atol=1e-12)
    np.testing.assert_allclose(m.joint("right_finger").range, -K.GRIPPER_LIMITS[::-1], atol=1e-12)
    np.testing.assert_allclose(m.actuator("gripper").ctrlrange, K.GRIPPER_LIMITS, atol=1e-12)


def test_home_pose_points_down_above_table():
    pos, quat = K.fk(K.HOME_QPOS)
    np.testing.assert_allclose(pos, [0.30, 0.0, 0.18], atol=2e-3)
    approach = K.quat_to_mat(quat)[:, 0]  # EE x axis = approach direction
    np.testing.assert_allclose(approach, [0, 0, -1], atol=1e-3)
    assert np.all(K.HOME_QPOS >= LO) and np.all(K.HOME_QPOS <= HI)


def test_fk_batched_equals_single_and_matrix():
    qs = random_q(np.random.default_rng(1), 8)
    P, Q = K.fk(qs)
    T = K.fk_matrix(qs)
    assert P.shape == (8, 3) and Q.shape == (8, 4) and T.shape == (8, 4, 4)
    for i, q in enumerate(qs):
        p, quat = K.fk(q)
        np.testing.assert_allclose(p, P[i], atol=1e-12)
        np.testing.assert_allclose(quat, Q[i], atol=1e-12)
        np.testing.assert_allclose(K.fk_matrix(q)[:3, :3], K.quat_to_mat(quat), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_jacobian_matches_finite_differences(u):
    q = LO + np.asarray(u) * (HI - LO)
    J = K.jacobian(q)
    eps = 1e-6
    T0 = K.fk_matrix(q)
    for j in range(6):
        T1 = K.fk_matrix(q + eps * np.eye(6)[j])
        np.testing.assert_allclose((T1[:3, 3] - T0[:3, 3]) / eps, J[:3, j], atol=1e-5)
        w = K.rotation_error(T1[:3, :3], T0[:3, :3]) / eps
        np.testing.assert_allclose(w, J[3:, j], atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3))
def test_quaternion_round_trip(rpy):
    R = K.euler_to_mat(rpy)
    q = K.mat_to_quat(R)
    assert abs(np.linalg.norm(q) - 1) < 1e-12 and q[0] >= 0
    np.testing.assert_allclose(K.quat_to_mat(q), R, atol=1e-10)


def test_ik_round_trip_random_targets():
    rng = np.random.default_rng(2)
    errs, rot_errs = [], []
    for q_true in random_q(rng, 40):
        pos, quat = K.fk(q_true)
        res = K.ik(pos, quat, q_init=K.HOME_QPOS)  # a different start than q_true
        assert np.all(res.q >= LO - 1e-12) and np.all(res.q <= HI + 1e-12)
        p2, q2 = K.fk(res.q)
        errs.append(np.linalg.norm(p2 - pos))
        rot_errs.append(quat_angle(q2, quat))
        assert res.converged, (q_true, res)
    print(f"IK round trip over 40 targets: max pos err {max(errs) * 1e3:.4f} mm, max rot err {max(rot_errs):.2e} rad")
    assert max(errs) < 1e-3
    assert max(rot_errs) < 1e-2


def test_ik_position_only_and_unreachable():
    res = K.ik([0.25, 0.1, 0.1])
    assert res.converged and res.rot_err_rad == 0.0
    np.testing.assert_allclose(K.fk(res.q)[0], [0.25, 0.1, 0.1], atol=1e-4)
    far = K.ik([2.0, 0.0, 0.0], restarts=1)  # 2 m: beyond the ~0.65 m reach
    assert not far.converged and far.pos_err_m > 1.0


def test_apply_ee_delta_moves_ee_by_delta():
    q = K.HOME_QPOS
    p0, quat0 = K.fk(q)
    np.testing.assert_allclose(K.apply_ee_delta(q, np.zeros(6)), q, atol=1e-6)
    q1 = K.apply_ee_delta(q, [0.02, -0.01, 0.03, 0, 0, 0])
    p1, quat1 = K.fk(q1)
    np.testing.assert_allclose(p1 - p0, [0.02, -0.01, 0.03], atol=1e-4)
    assert quat_angle(quat0, quat1) < 1e-3
    # Yaw about the base z axis, applied to the current orientation: R1 = Rz(0.2) R0, position unchanged.
    q2 = K.apply_ee_delta(q, [0, 0, 0, 0, 0, 0.2])
    p2, quat2 = K.fk(q2)
    np.testing.assert_allclose(p2, p0, atol=1e-4)
    np.testing.assert_allclose(K.quat_to_mat(quat2), K.euler_to_mat([0, 0, 0.2]) @ K.quat_to_mat(quat0), atol=1e-3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        K.fk(np.zeros(5))
    with pytest.raises(ValueError):
        K.ik([np.nan, 0, 0])
    with pytest.raises(ValueError):
        K.apply_ee_delta(K.HOME_QPOS, [0, 0, np.inf, 0, 0, 0])


def test_mjcf_limits_checked_against_kinematics_at_load(tmp_path):
    """The joint limits live in kinematics; a model whose MJCF range differs is refused at load, naming the joint
    and both values."""
    pytest.importorskip("mujoco")
    import shutil

    from postbc_core.errors import ConfigError
    from postbc_core.sim.base import ASSETS, WidowXSim

    for f in ("scene.xml", "wx250s.xml"):
        shutil.copy(ASSETS / f, tmp_path / f)
    xml = (tmp_path / "wx250s.xml").read_text()
    old = 'name="elbow" axis="0 1 0" range="-2.1467549799530254 1.6057029118347832"'
    assert old in xml
    (tmp_path / "wx250s.xml").write_text(xml.replace(old, old.replace("1.6057029118347832", "1.7")))
    with pytest.raises(ConfigError, match=r"joint 'elbow' range is \[-2.1467549799530254, 1.7\] but "
                                          r"robots/kinematics.py declares \[-2.1467549799530254, 1.6057029118347832\]"):
        WidowXSim(tmp_path / "scene.xml")
