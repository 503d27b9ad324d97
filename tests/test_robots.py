"""Robot backends: SimRobot on the MuJoCo twin; InterbotixRobot's pure parts (effort units, config errors, the SDK
missing). InterbotixRobot against Interbotix's real SDK and simulated xs_sdk: tests/ros/test_interbotix_upstream.py."""

import sys

import numpy as np
import pytest
from postbc_core.errors import PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import EEDeltaAction, JointAction

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
    from postbc_core.sim import make

    with SimRobot(make("lift_cube", cameras=("front",), image_size=(32, 32))) as robot:
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
    from postbc_core.sim import make

    with pytest.raises(PostBCError, match="not connected"):
        SimRobot(make("lift_cube")).get_observation()


def test_sim_robot_commands_pass_the_tasks_one_safety_layer():
    """The robot has no layer of its own: its commands and the task's step() pass the task's, built from the task's
    control rate and speed limit; a name instead of a task, or a task without a layer, is refused with the fix."""
    from postbc_core.errors import ConfigError
    from postbc_core.robots.sim_robot import SimRobot
    from postbc_core.sim import make

    task = make("lift_cube", control_hz=5.0, max_joint_speed=1.0)
    with SimRobot(task) as robot:
        assert robot.safety is task.safety and robot.safety.limits.max_joint_step == pytest.approx(1.0 / 5.0)
        sent = robot.send_action(JointAction(joint_pos=HOME + 1.0, gripper=0.03))
        assert np.max(np.abs(sent.joint_pos - HOME)) == pytest.approx(0.2) and sent.clamped
        assert task.safety.stats.commands == 1 and task.safety.stats.step_limited == 1
    with pytest.raises(ConfigError, match=r"SimRobot\(postbc_core.sim.make\('lift_cube'"):
        SimRobot("lift_cube")
    with pytest.raises(ConfigError, match="safety=False"):
        SimRobot(make("lift_cube", safety=False))


# ---------------------------------------------------------------- Interbotix (no SDK needed)
def test_interbotix_missing_sdk_clear_error(monkeypatch):
    from postbc_core.robots.interbotix import InterbotixRobot

    # import fails as if absent, also for submodules a stand-in test may have left cached
    for m in [m for m in sys.modules if m.startswith("interbotix_xs_modules.")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, "interbotix_xs_modules", None)
    with pytest.raises(PostBCError, match=r"interbotix_xs_modules is not importable.*installer.*sim backend"):
        InterbotixRobot().connect()


def test_interbotix_sdk_dependency_missing_names_it(monkeypatch, tmp_path):
    """The SDK imports modern_robotics (pip-installed by Interbotix's installer, not by apt): its absence is named
    with the pip command, not reported as "the SDK is not installed"."""
    from postbc_core.robots import interbotix

    def fake_import(name):
        raise ModuleNotFoundError("No module named 'modern_robotics'", name="modern_robotics")

    monkeypatch.setattr(interbotix.importlib, "import_module", fake_import)
    with pytest.raises(PostBCError, match=r"imports 'modern_robotics', which is not: `python3 -m pip install "
                                          r"modern_robotics`.*xsarm_amd64_install\.sh"):
        interbotix.InterbotixRobot().connect()


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


def test_interbotix_reading_effort_is_newton_metres():
    """The SDK's joint_states.effort (milliamps on the XM servos) comes out of measure / get_observation in N·m, the
    unit the twin reports, so the store holds one unit whatever the backend. xs_sdk_sim publishes no efforts, so
    the conversion is checked on a JointState shaped as the real xs_sdk publishes it (arm, gripper, fingers)."""
    from types import SimpleNamespace

    from postbc_core.robots.interbotix import ARM_SERVOS, effort_scale, joint_reading

    names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper", "left_finger",
             "right_finger"]
    idx = {n: i for i, n in enumerate(names)}
    effort = [1150.0, -230.0, 0.0, 0.0, 0.0, 1000 * 2.69, 0.0, 0.0, 0.0]  # mA; XL430 wrist_rotate at 100 % load
    js = SimpleNamespace(position=[0.1, -1.8, 1.55, 0, 0.8, 0, 0.2, 0.03, -0.03], velocity=[0.5] * 9, effort=effort)
    r = joint_reading(js, idx, effort_scale(ARM_SERVOS["wx250s"]))
    eff = r.joint_effort
    assert eff[0] == pytest.approx(2.05) and eff[1] == pytest.approx(-2 * 0.41) and eff[5] == pytest.approx(1.5)
    assert np.all(np.abs(eff) < 20.0)  # within the URDF effort limits (N·m), far below raw milliamps
    assert r.gripper == pytest.approx(0.03) and r.joint_pos[0] == pytest.approx(0.1) and r.joint_vel[0] == 0.5
    # xs_sdk_sim's empty velocity / effort lists read as zeros
    r = joint_reading(SimpleNamespace(position=js.position, velocity=[], effort=[]), idx, np.ones(6))
    assert not r.joint_vel.any() and not r.joint_effort.any()


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
