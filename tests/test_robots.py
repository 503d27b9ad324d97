"""Robot backends: SimRobot on the MuJoCo twin, InterbotixRobot against the SDK stand-in in tests/fakes."""

import sys
from pathlib import Path

import numpy as np
import pytest
from postbc_core.errors import PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import EEDeltaAction, JointAction

FAKES = Path(__file__).resolve().parent / "fakes"
HOME = kinematics.HOME_QPOS
KEYS = {"joint_pos": (6,), "joint_vel": (6,), "joint_effort": (6,), "gripper_pos": (1,), "ee_pose": (7,),
        "timestamp": ()}


def test_package_import_is_light():
    import subprocess

    code = ("import sys, postbc_core.robots, postbc_core.cameras; "
            "heavy = [m for m in ('mujoco', 'interbotix_xs_modules', 'pyrealsense2') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- SimRobot
@pytest.fixture()
def sim_robot():
    from postbc_core.robots.sim_robot import SimRobot

    with SimRobot("lift_cube", cameras=("front",), image_size=(32, 32)) as robot:
        yield robot
    assert not robot.is_connected


def test_sim_observation_keys_shapes_finite(sim_robot):
    obs = sim_robot.get_observation()
    for k, shape in KEYS.items():
        assert obs[k].shape == shape, k
        assert np.all(np.isfinite(obs[k])), k
    assert obs["object_pose"].shape == (7,) and obs["success"].shape == ()
    assert obs["front_rgb"].shape == (32, 32, 3) and obs["front_rgb"].dtype == np.uint8
    assert np.allclose(obs["joint_pos"], HOME, atol=1e-3)
    p, _ = kinematics.fk(obs["joint_pos"])
    assert np.allclose(obs["ee_pose"][:3], p, atol=1e-3)  # sim EE site agrees with our FK


def test_sim_joint_action_moves_toward_target(sim_robot):
    target = HOME + np.array([0.3, 0, 0, 0, 0, 0])
    for _ in range(10):
        sent = sim_robot.send_action(JointAction(joint_pos=target, gripper=0.03))
    assert np.allclose(sent.joint_pos, target) and not sent.clamped
    assert sim_robot.get_observation()["joint_pos"][0] == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize("axis,sign", [(2, 1.0), (2, -1.0), (0, 1.0), (1, 1.0)])
def test_sim_ee_delta_moves_the_right_way(sim_robot, axis, sign):
    p0 = sim_robot.get_observation()["ee_pose"][:3]
    delta = np.zeros(6)
    delta[axis] = 0.02 * sign
    for _ in range(3):
        sim_robot.send_action(EEDeltaAction(delta=delta, gripper=0.037))
    p1 = sim_robot.get_observation()["ee_pose"][:3]
    moved = p1 - p0
    assert moved[axis] * sign == pytest.approx(0.06, abs=0.015)
    others = [i for i in range(3) if i != axis]
    assert np.all(np.abs(moved[others]) < 0.01)


def test_sim_go_home_and_reset(sim_robot):
    for _ in range(5):
        sim_robot.send_action(JointAction(joint_pos=HOME + 0.4, gripper=0.02))
    assert np.max(np.abs(sim_robot.get_observation()["joint_pos"] - HOME)) > 0.2
    sim_robot.go_home()
    assert np.allclose(sim_robot.get_observation()["joint_pos"], HOME, atol=0.01)
    o1 = sim_robot.reset(seed=3)["object_pose"]
    o2 = sim_robot.reset(seed=3)["object_pose"]
    o3 = sim_robot.reset(seed=4)["object_pose"]
    assert np.allclose(o1, o2) and not np.allclose(o1, o3)


def test_sim_nan_rejected_nothing_sent(sim_robot):
    t0 = sim_robot.get_observation()["timestamp"]
    with pytest.raises(PostBCError, match="wrist_angle=nan"):
        sim_robot.send_action(JointAction(joint_pos=np.array([0, 0, 0, 0, np.nan, 0.0]), gripper=0.03))
    with pytest.raises(PostBCError, match="non-finite"):
        sim_robot.send_action(EEDeltaAction(delta=np.array([np.inf, 0, 0, 0, 0, 0]), gripper=0.03))
    assert sim_robot.get_observation()["timestamp"] == t0  # no physics step happened


def test_sim_not_connected_errors():
    from postbc_core.robots.sim_robot import SimRobot

    with pytest.raises(PostBCError, match="not connected"):
        SimRobot().get_observation()


# ---------------------------------------------------------------- Interbotix (SDK stand-in)
@pytest.fixture()
def fake_sdk(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    for m in [m for m in sys.modules if m.startswith("interbotix_xs_modules")]:
        monkeypatch.delitem(sys.modules, m)
    import interbotix_xs_modules

    interbotix_xs_modules.CALLS.clear()
    yield interbotix_xs_modules
    for m in [m for m in sys.modules if m.startswith("interbotix_xs_modules")]:
        monkeypatch.delitem(sys.modules, m)


def test_interbotix_missing_sdk_clear_error(monkeypatch):
    from postbc_core.robots.interbotix import InterbotixRobot

    # import fails as if absent, also for submodules a stand-in test may have left cached
    for m in [m for m in sys.modules if m.startswith("interbotix_xs_modules.")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, "interbotix_xs_modules", None)
    with pytest.raises(PostBCError, match=r"interbotix_xs_modules is not importable.*installer.*sim backend"):
        InterbotixRobot().connect()


def test_interbotix_constructor_and_streaming_calls(fake_sdk):
    from postbc_core.robots.interbotix import InterbotixConfig, InterbotixRobot

    node = object()  # stands for the driver's rclpy node
    robot = InterbotixRobot(InterbotixConfig(control_hz=10.0, sleep_on_close=True), node=node)
    with robot:
        (_, kw), = fake_sdk.calls("InterbotixManipulatorXS.__init__")
        assert kw["robot_model"] == "wx250s" and kw["group_name"] == "arm" and kw["gripper_name"] == "gripper"
        assert kw["node"] is node
        assert fake_sdk.calls("arm.set_trajectory_time")[-1][1] == {"moving_time": 0.2, "accel_time": 0.05}
        assert (("group", "arm", True), {}) in fake_sdk.calls("core.robot_torque_enable")

        robot.go_home()
        (args, kw), = fake_sdk.calls("arm.set_joint_positions")
        assert np.allclose(args[0], HOME) and kw["blocking"] is True
        obs = robot.get_observation()
        for k, shape in KEYS.items():
            assert obs[k].shape == shape and np.all(np.isfinite(obs[k])), k
        assert np.allclose(obs["joint_pos"], HOME)
        assert obs["gripper_pos"][0] == pytest.approx(0.037)

        # streaming: non-blocking group commands, never the blocking set_joint_positions path
        target = HOME + np.array([0.1, 0, 0, 0, 0, 0])
        sent = robot.send_action(JointAction(joint_pos=target, gripper=0.015))
        (group, cmd), _ = fake_sdk.calls("core.robot_write_commands")[-1]
        assert group == "arm" and isinstance(cmd, list) and len(cmd) == 6
        assert np.allclose(cmd, target) and np.allclose(sent.joint_pos, target)
        assert len(fake_sdk.calls("arm.set_joint_positions")) == 1
        assert fake_sdk.calls("gripper.grasp") == [((), {"delay": 0.0})]
        assert robot.get_observation()["joint_pos"][0] == pytest.approx(0.1)

        # the gripper command is sent on change only
        robot.send_action(JointAction(joint_pos=target, gripper=0.015))
        assert len(fake_sdk.calls("gripper.grasp")) == 1

        # EE delta: +z raises the EE
        z0 = robot.get_observation()["ee_pose"][2]
        robot.send_action(EEDeltaAction(delta=np.array([0, 0, 0.02, 0, 0, 0]), gripper=0.037))
        assert robot.get_observation()["ee_pose"][2] - z0 == pytest.approx(0.02, abs=0.003)
        # go_home opened the gripper, the grasp closed it, this delta opens it again
        assert fake_sdk.calls("gripper.release") == [((), {"delay": 0.0})] * 2
    assert fake_sdk.calls("arm.go_to_sleep_pose")
    assert not fake_sdk.calls("InterbotixManipulatorXS.shutdown")  # the node belongs to the caller


def test_interbotix_commands_pass_safety(fake_sdk, caplog):
    from postbc_core.robots.interbotix import InterbotixConfig, InterbotixRobot

    robot = InterbotixRobot(InterbotixConfig(sleep_on_close=False))
    with robot:
        robot.go_home()
        n0 = len(fake_sdk.calls("core.robot_write_commands"))
        with pytest.raises(PostBCError, match="forearm_roll=nan"):
            robot.send_action(JointAction(joint_pos=np.array([0, 0, 0, np.nan, 0, 0.0]), gripper=0.03))
        assert len(fake_sdk.calls("core.robot_write_commands")) == n0  # nothing sent
        for _ in range(30):
            sent = robot.send_action(JointAction(joint_pos=np.array([9.0, 9, 9, 9, 9, 9]), gripper=0.03))
            (_, cmd), _ = fake_sdk.calls("core.robot_write_commands")[-1]
            jl = robot.safety.limits.joint_limits
            assert np.all(np.asarray(cmd) <= jl[:, 1] + 1e-12) and np.all(np.asarray(cmd) >= jl[:, 0] - 1e-12)
            assert sent.clamped
        assert "clamped to limit" in caplog.text
    assert fake_sdk.calls("InterbotixManipulatorXS.shutdown")  # we own the SDK node here


def test_interbotix_not_connected():
    from postbc_core.robots.interbotix import InterbotixRobot

    with pytest.raises(PostBCError, match="not connected"):
        InterbotixRobot().get_observation()


# ---------------------------------------------------------------- joint_effort units (N·m on every backend)
def test_interbotix_effort_to_torque_uses_each_servos_datasheet():
    """xs_sdk effort -> N·m, against the ROBOTIS datasheet numbers written out here (12 V): XM430-W350 4.1 N·m at
    2.3 A (effort in mA); XL430-W250 Present_Load in 0.1 % of its 1.5 N·m stall torque, times xs_driver's 2.69;
    shoulder and elbow have a shadow motor each (wx250s.yaml), so the joint carries twice the master's torque."""
    from postbc_core.robots.interbotix import ARM_SERVOS, effort_to_torque

    # waist 2300 mA (XM430 stall current), shoulder 1000 mA, elbow -500 mA, forearm_roll 0, wrist_angle 100 mA,
    # wrist_rotate at 50 % load (raw 500 -> effort 500 * 2.69)
    effort = [2300.0, 1000.0, -500.0, 0.0, 100.0, 500 * 2.69]
    torque = effort_to_torque(effort, ARM_SERVOS["wx250s"])
    kt = 4.1 / 2.3  # N·m/A
    want = [4.1, 2 * 1.0 * kt, -2 * 0.5 * kt, 0.0, 0.1 * kt, 0.5 * 1.5]
    np.testing.assert_allclose(torque, want, rtol=1e-9)
    with pytest.raises(PostBCError, match=r"effort has shape \(9,\)"):
        effort_to_torque([0.0] * 9, ARM_SERVOS["wx250s"])


def test_interbotix_observation_effort_is_newton_metres(fake_sdk):
    """The SDK's joint_states.effort (milliamps on the XM servos) comes out of get_observation in N·m, the unit the
    twin reports, so the store holds one unit whatever the backend."""
    from postbc_core.robots.interbotix import InterbotixConfig, InterbotixRobot

    with InterbotixRobot(InterbotixConfig(sleep_on_close=False)) as robot:
        core = robot.bot.core
        idx = core.js_index_map
        with core.js_mutex:
            core.joint_states.effort[idx["waist"]] = 1150.0  # mA: half the XM430-W350 stall current
            core.joint_states.effort[idx["shoulder"]] = -230.0
            core.joint_states.effort[idx["wrist_rotate"]] = 1000 * 2.69  # XL430 at 100 % load
        eff = robot.get_observation()["joint_effort"]
    assert eff[0] == pytest.approx(2.05) and eff[1] == pytest.approx(-2 * 0.41) and eff[5] == pytest.approx(1.5)
    assert np.all(np.abs(eff) < 20.0)  # within the URDF effort limits (N·m), far below raw milliamps


def test_interbotix_servo_table_errors_name_the_fix():
    from postbc_core.errors import ConfigError
    from postbc_core.robots.interbotix import InterbotixConfig

    with pytest.raises(ConfigError, match=r"robot_model='px100' has no published servo table.*InterbotixConfig\.servos"):
        InterbotixConfig(robot_model="px100")
    servos = {j: ("XM430-W350", 1) for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle")}
    with pytest.raises(ConfigError, match="for exactly the joints"):
        InterbotixConfig(servos=servos)
    with pytest.raises(ConfigError, match=r"\['wrist_rotate'\]: servo model 'XM999' has no effort conversion; known"):
        InterbotixConfig(servos={**servos, "wrist_rotate": ("XM999", 1)})
    with pytest.raises(ConfigError, match=r"motors=0 must be an integer >= 1"):
        InterbotixConfig(servos={**servos, "wrist_rotate": ("XL430-W250", 0)})
    # an arm with other servos (e.g. XM540-W270 at the shoulder) is one setting away
    cfg = InterbotixConfig(servos={**servos, "shoulder": ("XM540-W270", 2), "wrist_rotate": ("XL430-W250", 1)})
    assert cfg.servos["shoulder"] == ("XM540-W270", 2)
