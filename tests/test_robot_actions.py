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


# ------------------------------------------------------------------ one EE-delta convention (issue 22, item 5)
from postbc_core.control.runner import ChunkStepper  # noqa: E402
from postbc_core.robots.actions import EEDeltaExecutor, joint_targets  # noqa: E402

# A 4-step chunk as a policy predicts it (m, rad, gripper m): forward and down 2 cm a step, a little yaw.
CHUNK = np.array([[0.02, 0.01, -0.02, 0, 0, 0.05, GRIPPER_OPEN]] * 4)
# Then 5 cm a step straight into the table: the arm is blocked, its target runs ahead and the chain is cut.
INTO_TABLE = np.array([[0.0, 0.0, -0.05, 0, 0, 0, GRIPPER_OPEN]] * 4)


def _twin_run(chunks):
    """The twin env (lift_cube, ee_delta, no safety layer, so info['joint_target'] is the converted target) executing
    `chunks` back to back: the joints measured before each step and the env's targets."""
    from postbc_core.sim import make

    env = make("lift_cube", action_mode="ee_delta", safety=False, terminate_on_success=False)
    try:
        obs = env.reset(seed=0)
        qs, targets = [], []
        for a in np.concatenate(chunks):
            qs.append(obs["joint_pos"].astype(np.float64))
            obs, *_, info = env.step(a)
            targets.append(info["joint_target"])
        return np.array(qs), np.array(targets), env.ee_executor.cuts
    finally:
        env.close()


def test_policy_node_stepping_gives_the_twin_envs_targets_for_the_same_chunk_and_measured_joints():
    """The ROS policy node executes a chunk with ChunkStepper (one action per tick, that tick's measured joints); the
    twin's Task.step with its EEDeltaExecutor. Same chunk, same measured joints -> the same targets, exactly,
    including a step where the chain is cut (the arm blocked by the table)."""
    qs, env_targets, cuts = _twin_run([CHUNK, INTO_TABLE])
    node = ChunkStepper("ee_delta")
    out = []
    for start, chunk in ((7, CHUNK), (11, INTO_TABLE)):  # a plan per chunk, ticks numbered as the node numbers them
        node.plan(start, chunk)
        for i in range(len(chunk)):
            q, g = node.command(start + i, qs[start - 7 + i])
            out.append(q)
            assert g == GRIPPER_OPEN
    np.testing.assert_array_equal(np.array(out), env_targets)
    assert node.executor.cuts == cuts >= 1  # the blocked arm's target led by > 5 cm: the cut path ran
    # Not the same as converting the chunk ahead from the observation's joints when the arm lags: the blocked chunk
    pre, _ = joint_targets(INTO_TABLE, "ee_delta", qs[4])
    assert np.abs(pre - env_targets[4:]).max() > 0.05
    assert node.command(99, qs[0]) is None  # no plan covers tick 99


def test_teleop_recorded_deltas_replay_into_the_recorded_trajectory(tmp_path):
    """A teleop-style recording in the twin (the operator's delta chained by teleop's executor, the joint target
    sent through the task's safety layer, the delta stored as cmd_ee_delta the way the recorder stores
    /postbc/teleop/ee_delta) replayed through the twin's EE-delta executor (`postbc data replay --action-key
    cmd_ee_delta`) reproduces the recorded joints."""
    from postbc_core.control.rows import step_row
    from postbc_core.control.spec import stack_rows
    from postbc_core.data import EpisodeStore
    from postbc_core.sim import make
    from postbc_core.sim.replay import replay_episode

    env = make("lift_cube", action_mode="joint", terminate_on_success=False, max_steps=40)
    teleop = EEDeltaExecutor(0.05, 0.25, 0.5)  # teleop's bounds at 0.1 m/s, 0.5 rad/s, 10 Hz (RESYNC_STEPS 5)
    rng = np.random.default_rng(0)
    obs, rows = env.reset(seed=4), []
    try:
        for t in range(30):  # an operator moving ~1 cm / step in free space with some noise, then holding still
            # (sideways and yawing: forward or up at HOME would drive wrist_angle into its limit, where IK is not exact)
            noise = np.r_[rng.normal(0, 0.002, 3), 0, 0, 0]
            delta = np.r_[0.0, 0.008, 0.0, 0, 0, 0.02] + noise if t < 24 else np.zeros(6)
            q, _ = teleop.step(np.r_[delta, GRIPPER_OPEN], "ee_delta", obs["joint_pos"])
            prev = obs
            obs, *_, info = env.step(np.r_[q, GRIPPER_OPEN])
            rows.append(step_row(prev, info["joint_target"], info["gripper_target"], ee_delta=delta))
    finally:
        env.close()
    with EpisodeStore.create(tmp_path / "teleop.zarr") as store:
        store.add_episode(stack_rows(rows), success=False, task="lift_cube", source="teleop")
    rep = replay_episode(tmp_path / "teleop.zarr", 0, out=tmp_path / "replay", action_key="cmd_ee_delta", video=False)
    # float32 storage of the deltas is all that separates them (measured 7e-8 rad); re-anchoring each delta to the
    # measured joints instead loses the tracking lag every step (the pre-convention twin's rule: 0.030 rad)
    assert rep["joint_error_rad"]["max"] < 1e-3, rep["joint_error_rad"]
