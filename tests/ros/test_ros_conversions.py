"""conversions.py: message <-> numpy round trips and the errors for malformed messages (no graph needed)."""

import numpy as np
import pytest
from postbc import conversions as cv
from postbc_core.cameras.base import Intrinsics
from postbc_core.robots.base import JOINT_NAMES
from sensor_msgs.msg import JointState

rng = np.random.default_rng(0)


def test_time_round_trip():
    for t in (0.0, 1e-9, 12.345678901, 1.7e9 + 0.123456789):
        assert abs(cv.to_sec(cv.to_time(t)) - t) < 1e-9 * max(1.0, t / 1e9) + 1e-9
    with pytest.raises(cv.ConversionError, match="negative"):
        cv.to_duration(-0.1)


def test_joint_state_round_trip_and_any_order():
    q, v, e = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    msg = cv.joint_state_msg(q, 0.031, 5.5, v, e)
    assert list(msg.name) == [*JOINT_NAMES, "left_finger", "right_finger"]
    assert msg.position[-1] == pytest.approx(-0.031)
    a = cv.joint_state_arrays(msg)
    np.testing.assert_allclose(a.joint_pos, q)
    np.testing.assert_allclose(a.joint_vel, v)
    np.testing.assert_allclose(a.joint_effort, e)
    assert a.gripper_pos.tolist() == [pytest.approx(0.031)] and a.stamp == pytest.approx(5.5)
    # Interbotix order with an extra `gripper` joint and no efforts: our order back, zeros for missing arrays.
    names = ["gripper", *reversed(JOINT_NAMES), "left_finger", "right_finger"]
    pos = [9.0, *reversed(q.tolist()), 0.02, -0.02]
    shuffled = JointState(name=names, position=pos, velocity=[], effort=[])
    b = cv.joint_state_arrays(shuffled)
    np.testing.assert_allclose(b.joint_pos, q)
    assert b.gripper_pos[0] == pytest.approx(0.02) and not b.joint_vel.any()


def test_joint_state_errors_name_the_problem():
    with pytest.raises(cv.ConversionError, match="lacks joints.*wrist_rotate"):
        cv.joint_state_arrays(JointState(name=list(JOINT_NAMES[:5]) + ["left_finger"], position=[0.0] * 6))
    with pytest.raises(cv.ConversionError, match="7 names but 3 positions"):
        cv.joint_state_arrays(JointState(name=[*JOINT_NAMES, "left_finger"], position=[0.0] * 3))


def test_trajectory_round_trip_chunk_and_single_point():
    q = rng.normal(size=(4, 6))
    g = np.array([0.01, 0.02, 0.03, 0.04])
    ch = cv.trajectory_chunk(cv.trajectory_msg(q, g, 7.25, dt=0.1))
    np.testing.assert_allclose(ch.joint_pos, q)
    np.testing.assert_allclose(ch.gripper, g)
    np.testing.assert_allclose(ch.times, [0.0, 0.1, 0.2, 0.3])
    assert ch.stamp == pytest.approx(7.25)
    one = cv.trajectory_chunk(cv.trajectory_msg(q[0], 0.02, 1.0))
    assert one.joint_pos.shape == (1, 6) and one.times.tolist() == [0.0]


def test_trajectory_keeps_nan_for_the_safety_layer_and_rejects_malformed():
    q = np.zeros(6)
    q[2] = np.nan
    ch = cv.trajectory_chunk(cv.trajectory_msg(q, 0.02, 0.0))
    assert np.isnan(ch.joint_pos[0, 2])  # the driver's safety layer rejects it, with a log line
    msg = cv.trajectory_msg(np.zeros((2, 6)), 0.02, 0.0, dt=0.1)
    msg.joint_names = list(JOINT_NAMES)  # no gripper joint: gripper NaN = hold
    for p in msg.points:
        p.positions = p.positions[:6]
    assert np.isnan(cv.trajectory_chunk(msg).gripper).all()
    msg.points = []
    with pytest.raises(cv.ConversionError, match="no points"):
        cv.trajectory_chunk(msg)
    with pytest.raises(cv.ConversionError, match="strictly increasing"):
        cv.trajectory_msg(np.zeros((2, 6)), 0.0, 0.0, times=[0.2, 0.1])
    with pytest.raises(cv.ConversionError, match="need dt or times"):
        cv.trajectory_msg(np.zeros((2, 6)), 0.0, 0.0)
    with pytest.raises(cv.ConversionError, match=r"\(T, 6\)"):
        cv.trajectory_msg(np.zeros((2, 5)), 0.0, 0.0)


def _valid_msg():
    return cv.trajectory_msg(np.zeros((2, 6)), 0.02, 3.0, dt=0.1)


def _names(m, names):
    m.joint_names = names


def _point(m, field, value):
    setattr(m.points[1], field, value)


@pytest.mark.parametrize("damage,match", [
    # what joint_trajectory_controller (Humble) refuses, refused here with the reason
    (lambda m: _names(m, [*JOINT_NAMES[:5], "gripper", "left_finger"]), r"unknown joints \['gripper'\]"),
    (lambda m: _names(m, [*JOINT_NAMES[:6], "waist"]), "names a joint twice"),
    (lambda m: _point(m, "time_from_start", m.points[0].time_from_start), "increase strictly"),
    (lambda m: _point(m, "velocities", [0.0, 0.0]), "2 velocities for 7 joints"),
    (lambda m: _point(m, "accelerations", [0.0] * 3), "3 accelerations for 7 joints"),
    (lambda m: _point(m, "effort", [0.0] * 7), "efforts"),
])
def test_trajectory_checked_like_joint_trajectory_controller(damage, match):
    msg = _valid_msg()
    msg.points[1].velocities = [0.0] * 7  # one per joint: accepted (positions are what the driver streams)
    assert cv.trajectory_chunk(msg).times.tolist() == [0.0, 0.1]
    damage(msg)
    with pytest.raises(cv.ConversionError, match=match):
        cv.trajectory_chunk(msg)


@pytest.mark.parametrize("shape,dtype,enc", [((48, 64, 3), np.uint8, "rgb8"), ((48, 64), np.uint16, "16UC1"),
                                             ((48, 64), np.uint8, "mono8")])
def test_image_round_trip(shape, dtype, enc):
    a = rng.integers(0, np.iinfo(dtype).max, size=shape).astype(dtype)
    msg = cv.image_msg(a, 3.0, "front_color_optical_frame")
    assert msg.encoding == enc and msg.height == 48 and msg.width == 64
    np.testing.assert_array_equal(cv.image_array(msg), a)


def test_image_bgr_padded_rows_and_bad_encoding():
    rgb = rng.integers(0, 255, size=(4, 5, 3)).astype(np.uint8)
    msg = cv.image_msg(np.ascontiguousarray(rgb[..., ::-1]), 0.0, encoding="bgr8")
    padded = np.zeros((4, 20), np.uint8)  # step 20 > 15 bytes per row (drivers may pad rows)
    padded[:, :15] = np.frombuffer(bytes(msg.data), np.uint8).reshape(4, 15)
    msg.step, msg.data = 20, padded.tobytes()
    np.testing.assert_array_equal(cv.image_array(msg), rgb)
    msg.encoding = "yuv422"
    with pytest.raises(cv.ConversionError, match="yuv422"):
        cv.image_array(msg)


def test_camera_info_round_trip():
    intr = Intrinsics(640, 480, 605.1, 604.7, 318.9, 241.2, (0.1, -0.2, 0.001, 0.002, 0.05))
    msg = cv.camera_info_msg(intr, 1.0, "front_color_optical_frame")
    assert msg.p[0] == pytest.approx(605.1) and msg.p[3] == 0.0 and msg.distortion_model == "plumb_bob"
    assert cv.camera_info_intrinsics(msg) == intr


def test_pose_round_trips():
    poses = rng.normal(size=(3, 7))
    poses[:, 3:] /= np.linalg.norm(poses[:, 3:], axis=1, keepdims=True)
    np.testing.assert_allclose(cv.pose_array_arrays(cv.pose_array_msg(poses, 2.0)), poses)
    np.testing.assert_allclose(cv.pose_array(cv.pose_stamped_msg(poses[0], 2.0).pose), poses[0])
    with pytest.raises(cv.ConversionError, match="7 values"):
        cv.pose_msg([0, 0, 0])
