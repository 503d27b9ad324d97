"""robots.actions pieces the ROS nodes use: where teleop's chained EE deltas start (chained_reference) and the
binary gripper targets."""

import numpy as np
from postbc_core.robots.actions import GRIPPER_CLOSED, GRIPPER_OPEN, chained_reference, joint_target
from postbc_core.robots import kinematics

HOME = kinematics.HOME_QPOS
LIMITS = (0.01, 0.05, 0.5)  # max EE lead m, rad; max joint lead rad


def test_chained_reference_keeps_a_close_target_and_cuts_a_far_one():
    q_meas = HOME.copy()
    assert chained_reference(None, q_meas, *LIMITS) is not q_meas  # no previous target: a copy of the measurement
    np.testing.assert_array_equal(chained_reference(None, q_meas, *LIMITS), q_meas)
    close, _ = joint_target(np.r_[0.005, 0, 0, 0, 0, 0.02, GRIPPER_OPEN], "ee_delta", q_meas)  # 5 mm, 0.02 rad ahead
    assert chained_reference(close, q_meas, *LIMITS) is close
    far_m, _ = joint_target(np.r_[0.02, 0, 0, 0, 0, 0, GRIPPER_OPEN], "ee_delta", q_meas)  # 2 cm > 1 cm
    far_rad, _ = joint_target(np.r_[0, 0, 0, 0, 0, 0.1, GRIPPER_OPEN], "ee_delta", q_meas)  # 0.1 rad > 0.05 rad
    # the same EE pose through a joint far from the measured one (wrist rotate by 2 pi is another IK branch)
    branch = q_meas + np.r_[0, 0, 0, 0, 0, 2 * np.pi]
    for far in (far_m, far_rad, branch):
        ref = chained_reference(far, q_meas, *LIMITS)
        assert ref is not q_meas
        np.testing.assert_array_equal(ref, q_meas)


def test_gripper_targets_are_the_ends_of_the_gripper_range():
    assert (GRIPPER_CLOSED, GRIPPER_OPEN) == tuple(kinematics.GRIPPER_LIMITS) and GRIPPER_CLOSED < GRIPPER_OPEN
