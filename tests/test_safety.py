"""The shared safety layer: NaN rejection, joint clamping, step limiting, workspace box (and in the sim)."""

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.safety import SafetyLayer, SafetyLimits

HOME = kinematics.HOME_QPOS
G_OPEN = float(kinematics.GRIPPER_LIMITS[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected_naming_joint(bad):
    layer = SafetyLayer()
    q = HOME.copy()
    q[2] = bad
    with pytest.raises(PostBCError, match=rf"elbow={bad}"):
        layer.filter(q, G_OPEN, HOME)
    with pytest.raises(PostBCError, match="gripper"):
        layer.filter(HOME, bad, HOME)
    assert layer.stats.rejected == 2 and layer.stats.commands == 0


def test_out_of_range_clamped_with_log(caplog):
    lim = SafetyLimits(max_joint_step=10.0)
    layer = SafetyLayer(lim)
    q = HOME.copy()
    q[1] = 3.0  # shoulder upper limit is 114 deg = 1.99 rad
    with caplog.at_level(logging.WARNING, logger="postbc_core.robots.safety"):
        sent = layer.filter(q, G_OPEN, HOME)
    hi = lim.joint_limits[1, 1]
    assert sent.clamped
    # either held at the clamped limit or shortened further by the workspace box; never past the limit
    assert sent.joint_pos[1] <= hi + 1e-12
    msg = "\n".join(r.getMessage() for r in caplog.records)
    assert "shoulder" in msg and "3.0000" in msg and f"{hi:.4f}" in msg
    assert layer.stats.joint_clamps == 1 and layer.stats.per_joint_clamps[1] == 1


def test_in_range_command_passes_unchanged(caplog):
    layer = SafetyLayer()
    q = HOME + np.array([0.05, -0.03, 0.02, 0.01, -0.04, 0.1])
    with caplog.at_level(logging.WARNING):
        sent = layer.filter(q, 0.02, HOME)
    assert not sent.clamped and np.allclose(sent.joint_pos, q) and sent.gripper == 0.02
    assert not caplog.records


def test_max_step_limiting_keeps_direction(caplog):
    layer = SafetyLayer(SafetyLimits(max_joint_step=0.1))
    step = np.array([0.4, 0.0, 0.0, 0.2, 0.0, -0.3])
    with caplog.at_level(logging.WARNING):
        sent = layer.filter(HOME + step, G_OPEN, HOME)
    d = sent.joint_pos - HOME
    assert np.max(np.abs(d)) == pytest.approx(0.1)
    assert np.allclose(d / np.linalg.norm(d), step / np.linalg.norm(step))
    assert "waist" in caplog.text and layer.stats.step_limited == 1


def test_workspace_box_shortens_or_holds(caplog):
    # a box whose top is 2 cm above the home EE height: lifting the EE 10 cm must stop at the box edge
    p_home, _ = kinematics.fk(HOME)
    lim = SafetyLimits(workspace_max=(0.6, 0.4, float(p_home[2]) + 0.02), max_joint_step=3.0)
    layer = SafetyLayer(lim)
    target = kinematics.apply_ee_delta(HOME, [0, 0, 0.10, 0, 0, 0])
    with caplog.at_level(logging.WARNING):
        sent = layer.filter(target, G_OPEN, HOME)
    z = kinematics.fk(sent.joint_pos)[0][2]
    assert sent.clamped and "workspace" in caplog.text and layer.stats.workspace_limited == 1
    assert p_home[2] < z <= lim.workspace_max[2] + 1e-9
    assert z > lim.workspace_max[2] - 0.005  # went as far as the box allows, not just held
    # from a pose already on the edge, further lifting holds the current position
    sent2 = layer.filter(kinematics.apply_ee_delta(sent.joint_pos, [0, 0, 0.05, 0, 0, 0]), G_OPEN, sent.joint_pos)
    assert kinematics.fk(sent2.joint_pos)[0][2] <= lim.workspace_max[2] + 1e-9


def test_gripper_clamped_with_log(caplog):
    layer = SafetyLayer()
    with caplog.at_level(logging.WARNING):
        assert layer.check_gripper(0.5) == pytest.approx(G_OPEN)
    assert "gripper" in caplog.text and layer.stats.gripper_clamps == 1


def test_limits_validation():
    with pytest.raises(ConfigError, match="workspace_min"):
        SafetyLimits(workspace_min=(0.5, 0, 0), workspace_max=(0.1, 1, 1))
    with pytest.raises(ConfigError, match="max_joint_step"):
        SafetyLimits(max_joint_step=0.0)
    with pytest.raises(ConfigError, match="gripper_limits"):
        SafetyLimits(gripper_limits=(0.04, 0.01))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=6, max_size=6), st.floats(-1, 1))
def test_property_output_always_within_limits(req, g):
    lim = SafetyLimits()
    layer = SafetyLayer(lim)
    sent = layer.filter(np.array(req), g, HOME)
    jl = lim.joint_limits
    assert np.all(sent.joint_pos >= jl[:, 0] - 1e-12) and np.all(sent.joint_pos <= jl[:, 1] + 1e-12)
    assert np.max(np.abs(sent.joint_pos - HOME)) <= lim.max_joint_step + 1e-9
    assert lim.in_workspace(kinematics.fk(sent.joint_pos)[0])
    assert lim.gripper_limits[0] <= sent.gripper <= lim.gripper_limits[1]


def test_sim_far_outside_limits_never_exceeds_limits():
    from postbc_core.robots.base import JointAction
    from postbc_core.robots.sim_robot import SimRobot
    from postbc_core.sim import make

    rng = np.random.default_rng(0)
    urdf = kinematics.JOINT_LIMITS
    with SimRobot(make("lift_cube")) as robot:
        for _ in range(40):
            req = rng.choice([-1.0, 1.0], size=6) * rng.uniform(5, 50, size=6)
            robot.send_action(JointAction(joint_pos=req, gripper=float(rng.uniform(-1, 1))))
            q = robot.sim.joint_pos()
            assert np.all(q >= urdf[:, 0] - 0.01) and np.all(q <= urdf[:, 1] + 0.01), q
            assert robot.safety.limits.workspace_violation(kinematics.fk(q)[0]) < 0.02
        assert robot.safety.stats.joint_clamps > 0


def test_layer_built_from_rate_and_speed():
    """make_safety_layer, the one constructor the backends use: the step is max_joint_speed / control_hz; given limits
    must agree with it (a config's speed and the enforced step cannot drift apart)."""
    from postbc_core.robots.safety import make_safety_layer

    layer = make_safety_layer(5.0, 1.0)
    assert layer.limits.max_joint_step == pytest.approx(0.2) and layer.limits == SafetyLimits.for_rate(5.0, 1.0)
    own = SafetyLimits.for_rate(8.0, 1.2, joint_margin=0.05, workspace_min=(0.1, -0.3, 0.02))
    assert make_safety_layer(8.0, 1.2, own).limits is own and own.max_joint_step == pytest.approx(0.15)
    with pytest.raises(ConfigError, match=r"max_joint_step=0.15 rad disagrees with max_joint_speed / control_hz"):
        make_safety_layer(5.0, 1.5, SafetyLimits())
    with pytest.raises(ConfigError, match="max_joint_speed=0.0 rad/s must be > 0"):
        SafetyLimits.for_rate(10.0, 0.0)
    with pytest.raises(ConfigError, match="control_hz=-1"):
        SafetyLimits.for_rate(-1.0)


def test_no_import_circle_and_the_twin_backend_below_sim():
    """robots.base (the action types) sits below robots.safety, which sits below robots.robot (the interface); the
    twin backend takes a task object and imports nothing of postbc_core.sim."""
    import subprocess
    import sys

    code = ("import sys; import postbc_core.robots.base as b, postbc_core.robots.safety, postbc_core.robots.sim_robot; "
            "import ast, inspect; "
            "names = lambda m: {n.module for n in ast.walk(ast.parse(inspect.getsource(m))) "
            "if isinstance(n, ast.ImportFrom)}; "
            "assert not {'postbc_core.robots.safety', 'postbc_core.robots.robot'} & names(b), names(b); "
            "assert 'postbc_core.robots.robot' not in names(sys.modules['postbc_core.robots.safety']); "
            "sim = [m for m in sys.modules if m.startswith('postbc_core.sim')]; assert not sim, sim")
    subprocess.run([sys.executable, "-c", code], check=True)
