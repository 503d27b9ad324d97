"""robot_driver over real rclpy with the sim backend (MuJoCo twin, real time); the interbotix backend runs against
Interbotix's SDK and xs_sdk_sim in test_interbotix_upstream.py, the scheduling logic alone in tests/test_controller.py.
Sim commands are stamped with the driver's sim time (a policy stamps with its observation's time), so the helper node
needs no sim clock. Assertions on motion use sim-time stamps, so a loaded
machine (slower than real time) changes the wall time a test takes, not its outcome."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseArray
from postbc import topics
from postbc.conversions import (
    joint_state_arrays,
    pose_array_arrays,
    to_sec,
    trajectory_msg,
)
from postbc_core.errors import ConfigError
from postbc_core.robots import kinematics
from postbc_core.robots.base import JOINT_NAMES
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import call_service, wait_for
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

HOME = kinematics.HOME_QPOS
RTF = 1.0  # real time: on a loaded 2-core machine message latency costs less sim time than at 2x
CONTROL_DT = 0.1  # s, control_hz 10
MAX_SPEED = 1.5  # rad/s, the driver's default max_joint_speed


def _param(name, value):
    return Parameter(name, value=value)


class Probe:
    """Helper node: collects /joint_states, object poses, success, status, /clock; publishes commands and e-stop."""

    def __init__(self, graph, node_name="probe", extras=False):
        self.node = n = graph.node(node_name)
        self.lock = threading.Lock()
        self.js: list = []  # (wall time, JointStateArrays)
        self.poses: list = []
        self.success: list = []
        self.status: list = []
        self.clock: list = []
        # A deep reader queue: on a loaded 2-core machine the Python callbacks lag behind 200 msg/s for a while.
        deep = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        n.create_subscription(JointState, topics.JOINT_STATES, self._js, deep)
        if extras:  # only where needed: every subscription costs GIL time the driver's physics thread needs
            n.create_subscription(PoseArray, topics.OBJECT_POSES, lambda m: self._add(self.poses, m), deep)
            n.create_subscription(Bool, topics.SUCCESS, lambda m: self._add(self.success, m.data), deep)
            n.create_subscription(ClockMsg, topics.CLOCK, lambda m: self._add(self.clock, to_sec(m.clock)), 10)
        n.create_subscription(String, topics.DRIVER_STATUS, lambda m: self._add(self.status, json.loads(m.data)),
                              topics.STATUS_QOS)
        # Command stamps: the driver's clock where the test has the driver (the received joint states may lag it by
        # a callback backlog on a loaded machine), else the latest observation's stamp.
        self.now = lambda: self.latest().stamp
        self.cmd = n.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
        self.estop = n.create_publisher(Bool, topics.ESTOP, topics.LATCHED_QOS)
        wait_for(lambda: self.cmd.get_subscription_count() and self.estop.get_subscription_count(),
                 what="the driver subscribed to commands and e-stop")

    def _add(self, lst, v):
        with self.lock:
            lst.append(v)

    def _js(self, msg):
        self._add(self.js, (time.monotonic(), joint_state_arrays(msg)))

    def latest(self):
        wait_for(lambda: self.js, what="/joint_states")
        with self.lock:
            return self.js[-1][1]

    def wait_sim_time(self, t: float):
        wait_for(lambda: self.js and self.latest().stamp >= t, timeout=10 + t / RTF, what=f"sim time {t}")

    def after(self, t: float):
        """The first joint state stamped at or after sim time t (waits for it)."""
        self.wait_sim_time(t)
        return self.since(t)[0]

    def send(self, q, gripper=0.03, stamp=None, **kw):
        s = self.now() if stamp is None else stamp
        self.cmd.publish(trajectory_msg(q, gripper, s, **kw))

    def stream(self, q, duration, gripper=0.03, period=CONTROL_DT):
        """Re-send the target with a fresh stamp every control period for `duration` sim seconds (a teleop)."""
        end = self.now() + duration
        while self.latest().stamp < end:
            self.send(q, gripper)
            time.sleep(period / RTF)

    def since(self, t0):
        with self.lock:
            return [a for _, a in self.js if a.stamp >= t0]


@pytest.fixture
def sim_driver(graph):
    """(driver, probe) with the sim backend (lift_cube), real_time_factor 2, use_sim_time as in a sim graph."""
    from postbc.nodes.robot_driver import RobotDriver

    drv = graph.add(RobotDriver(context=graph.context, parameter_overrides=[
        _param("real_time_factor", RTF), _param("use_sim_time", True),
        # the test's latency budget on a loaded machine (the default 0.5 s is for a dedicated robot computer)
        _param("max_command_age", 1.0)]))
    probe = Probe(graph)
    probe.now = drv.now
    probe.latest()
    return drv, probe


def _max_speed(states, window=CONTROL_DT):
    """Largest joint speed (rad/s) over `window` s of sim time, from finite differences of positions."""
    t, idx = np.unique([s.stamp for s in states], return_index=True)
    q = np.stack([states[i].joint_pos for i in idx])
    k = max(1, round(window / np.median(np.diff(t))))
    return float(np.max(np.abs(q[k:] - q[:-k]) / (t[k:] - t[:-k])[:, None]))


# ------------------------------------------------------------------------------------------------ sim backend
def test_joint_states_rate_clock_and_object_poses(sim_driver, graph):
    drv, probe = sim_driver
    extra = Probe(graph, "probe_extras", extras=True)
    time.sleep(0.3)
    with probe.lock:
        n0, w0, s0 = len(probe.js), time.monotonic(), probe.js[-1][1].stamp
    time.sleep(1.0)
    with probe.lock:
        n1, w1, s1 = len(probe.js), time.monotonic(), probe.js[-1][1].stamp
        stamps = np.array([a.stamp for _, a in probe.js[n0:n1]])
    # published every 10 ms of sim time: stamps on a 10 ms grid, consecutive ones 10 ms apart (the probe's Python
    # callback may drop a few on a loaded machine: KEEP_LAST 10, so the count is checked with some slack)
    d = np.diff(stamps) / 0.01
    assert np.allclose(d, np.round(d), atol=1e-4)
    assert d.min() == pytest.approx(1.0) and np.median(d) == pytest.approx(1.0)
    assert 80.0 < (n1 - n0) / (s1 - s0) <= 101.0
    # paced at RTF x wall time (lower band wide: the test machine may be loaded)
    assert 0.25 * 100 * RTF < (n1 - n0) / (w1 - w0) < 1.3 * 100 * RTF
    first = probe.latest()
    assert np.allclose(first.joint_pos, HOME, atol=2e-3) and first.gripper_pos[0] == pytest.approx(0.037, abs=1e-3)
    # /clock advances with sim time; object poses (all free bodies, task object first) and success arrive
    wait_for(lambda: len(extra.clock) > 10 and extra.poses and extra.success, what="/clock, object poses, success")
    assert extra.clock[-1] > extra.clock[0]
    poses = pose_array_arrays(extra.poses[-1])
    assert poses.shape == (1, 7)  # lift_cube: the cube is the only free body
    assert extra.poses[-1].header.frame_id == "world"
    obs = drv.robot.task.observation(render=False)
    assert np.allclose(poses[0], obs["object_pose"], atol=1e-3)
    assert extra.success[-1] is False
    st = wait_for(lambda: probe.status and probe.status[-1], what="status")
    assert st["backend"] == "sim" and st["enabled"] and not st["estop"] and st["holding"]
    assert st["sim_time"] > 0 and 0.1 * RTF < st["real_time_factor"] < 1.3 * RTF  # achieved (machine may be loaded)


def test_single_target_reached_at_bounded_speed(sim_driver):
    drv, probe = sim_driver
    start = probe.latest()
    target = HOME + np.array([0.6, -0.2, 0.2, 0.0, 0.0, 0.3])
    probe.stream(target, duration=1.2, gripper=0.02)
    after = probe.since(start.stamp)
    end = probe.latest()
    assert np.allclose(end.joint_pos, target, atol=0.01), end.joint_pos - target
    assert end.gripper_pos[0] == pytest.approx(0.02, abs=2e-3)
    # 0.6 rad at 1.5 rad/s needs >= 0.4 s: moved over several control periods, never faster than the limit
    speed = _max_speed(after)
    assert 0.5 * MAX_SPEED < speed < 1.15 * MAX_SPEED, speed
    reached = next(s.stamp for s in after if abs(s.joint_pos[0] - target[0]) < 0.01)
    assert reached - start.stamp >= 0.6 / MAX_SPEED - 0.05
    assert drv.status()["commands"]["accepted"] >= 5


def test_chunk_sampled_between_its_points(sim_driver):
    """joint_trajectory_controller's sampling: between two points the arm follows the line between them (not the
    earlier point held until the next one is due, not early), and stops at the last point."""
    drv, probe = sim_driver
    stamp = drv.now()
    q = np.tile(HOME, (3, 1))
    q[:, 0] = [0.1, 0.2, 0.3]  # 0.025 rad per period along the chunk: tracked within about a period
    probe.send(q, stamp=stamp, times=[0.0, 0.4, 0.8])
    probe.wait_sim_time(stamp + 1.2)
    states = probe.since(stamp)

    def waist_at(t):
        return next(s.joint_pos[0] for s in states if s.stamp >= stamp + t)

    def line(t):
        return float(np.interp(t, [0.0, 0.4, 0.8], q[:, 0]))

    # where the chunk was up to two control periods ago (the last tick, plus the arm's tracking lag) .. now
    for t in (0.35, 0.55, 0.75):
        assert line(t - 2 * CONTROL_DT) - 0.01 < waist_at(t) < line(t) + 0.01, (t, waist_at(t))
    assert waist_at(0.35) > 0.12 and waist_at(0.75) > 0.22  # moving on from point 0 / 1 before the next is due
    assert waist_at(1.15) == pytest.approx(0.3, abs=0.01)
    w = [s.joint_pos[0] for s in states if stamp + 0.2 <= s.stamp <= stamp + 1.2]
    assert np.all(np.diff(w) > -2e-3)


def test_unknown_backend_and_task_name_the_options(graph, capfd):
    import gc

    from postbc.nodes.robot_driver import RobotDriver

    with pytest.raises(ConfigError, match="sim, interbotix"):
        RobotDriver(context=graph.context, parameter_overrides=[_param("backend", "ur5")])
    with pytest.raises(ConfigError, match="lift_cube"):
        RobotDriver(context=graph.context, parameter_overrides=[_param("task", "stack_blocks")])
    with pytest.raises(ConfigError, match="max_joint_speed"):
        RobotDriver(context=graph.context, parameter_overrides=[_param("max_joint_speed", -1.0)])
    # the half-built nodes were destroyed (their later collection would unregister a live driver's /rosout
    # publisher); a valid driver comes up in the same context afterwards
    drv = graph.add(RobotDriver(context=graph.context, parameter_overrides=[_param("real_time_factor", RTF)]))
    gc.collect()
    NodeLog(capfd).wait("robot_driver up")
    assert drv.status()["backend"] == "sim"


# ------------------------------------------------------------------------------------------------ helpers
class Streamer:
    """Re-sends a target with fresh stamps every control period in the background (a teleop / policy)."""

    def __init__(self, probe, q, gripper=0.03):
        self.probe, self.q, self.gripper = probe, np.asarray(q, float), gripper
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.probe.send(self.q, self.gripper)
            self._stop.wait(CONTROL_DT / RTF)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class NodeLog:
    """The driver's log lines as written to stderr by rcutils (captured at the file-descriptor level by capfd).

    /rosout would do too, but its per-process registry of node names makes it flaky across many in-process nodes."""

    def __init__(self, capfd):
        self.capfd, self.text = capfd, ""

    def wait(self, text, timeout=10.0):
        def find():
            self.text += self.capfd.readouterr().err
            return [ln for ln in self.text.splitlines() if "robot_driver" in ln and text in ln]

        return wait_for(find, timeout, what=f"a robot_driver log line with {text!r}")


def _hold_still(probe, t0, t1, tol=2e-3):
    states = [s for s in probe.since(t0) if s.stamp <= t1]
    q = np.stack([s.joint_pos for s in states])
    return float(np.max(np.abs(q - q[0])))


# ------------------------------------------------------------------------------------------------ safety
def test_estop_halts_within_a_period_and_stays_latched(sim_driver, graph):
    drv, probe = sim_driver
    far = HOME + np.array([1.5, 0, 0, 0, 0, 0])
    with Streamer(probe, far):
        probe.wait_sim_time(probe.latest().stamp + 0.4)
        assert probe.latest().joint_vel[0] > 0.2  # moving when the e-stop hits
        probe.estop.publish(Bool(data=True))
        wait_for(lambda: drv.status()["estop"], what="e-stop latched")
        t_e = drv.status()["sim_time"]  # the driver latched at or before this sim time
        probe.wait_sim_time(t_e + 3 * CONTROL_DT)
        moved_after_period = _hold_still(probe, t_e + CONTROL_DT, t_e + 3 * CONTROL_DT)
        at_period = next(s for s in probe.since(t_e + CONTROL_DT))
        assert moved_after_period < 5e-3, moved_after_period
        assert abs(at_period.joint_vel[0]) < 0.1  # from > 0.2 rad/s (typically ~1.5) when it hit
        assert probe.latest().joint_pos[0] < far[0] - 0.05  # stopped short of the target
        # latched: the stream goes on, nothing moves; ~/enable true is refused while the topic says True
        probe.wait_sim_time(t_e + 0.6)
        assert _hold_still(probe, t_e + CONTROL_DT, t_e + 0.6) < 5e-3
        st = drv.status()
        assert st["estop"] and st["commands"]["ignored"] > 0
        r = call_service(probe.node, SetBool, "/robot_driver/enable", SetBool.Request(data=True))
        assert not r.success and "/postbc/estop" in r.message
        assert drv.status()["estop"]
        r = call_service(probe.node, Trigger, "/robot_driver/go_home")
        assert not r.success and "e-stop" in r.message
        # released on the topic, still latched until ~/enable true; then the stream moves the arm again
        probe.estop.publish(Bool(data=False))
        wait_for(lambda: not drv.executor_core.estop_input, what="estop False received")
        assert drv.status()["estop"]
        r = call_service(probe.node, SetBool, "/robot_driver/enable", SetBool.Request(data=True))
        assert r.success, r.message
        t_r = drv.now()
        assert probe.after(t_r + 0.5).joint_pos[0] > probe.after(t_r).joint_pos[0] + 0.3


def test_disable_holds_without_latching(sim_driver):
    drv, probe = sim_driver
    r = call_service(probe.node, SetBool, "/robot_driver/enable", SetBool.Request(data=False))
    assert r.success and not drv.status()["enabled"] and not drv.status()["estop"]
    t0 = probe.latest().stamp
    with Streamer(probe, HOME + np.array([0.5, 0, 0, 0, 0, 0])):
        probe.wait_sim_time(t0 + 0.5)
        assert _hold_still(probe, t0, t0 + 0.5) < 2e-3
        r = call_service(probe.node, SetBool, "/robot_driver/enable", SetBool.Request(data=True))
        assert r.success
        t1 = probe.latest().stamp
        probe.wait_sim_time(t1 + 0.4)
    assert probe.latest().joint_pos[0] > HOME[0] + 0.2


def test_go_home_outcome_can_change_between_calls(sim_driver):
    """Success, failure, success: each outcome logged at its own severity. rclpy's logger refuses a call site whose
    severity changes ("Logger severity cannot be changed between calls"), so one shared call site
    (`(log.info if ok else log.error)(msg)`) made the second, different outcome raise in the service callback."""
    drv, probe = sim_driver
    home = lambda: call_service(probe.node, Trigger, "/robot_driver/go_home", timeout=60)  # noqa: E731
    assert home().success  # already home
    probe.send(HOME + np.array([0.6, 0, 0, 0, 0, 0]))
    wait_for(lambda: probe.latest().joint_pos[0] > HOME[0] + 0.3, 20, what="the arm to move away")
    drv.executor_core.config.home_timeout = 0.05  # robot seconds: far too short to get back
    r = home()
    assert not r.success and "from home after" in r.message
    drv.executor_core.config.home_timeout = 10.0
    assert home().success


def test_stale_and_future_commands_rejected(sim_driver, capfd):
    drv, probe = sim_driver
    log = NodeLog(capfd)
    probe.wait_sim_time(2.5)
    now = probe.latest().stamp
    target = HOME + np.array([0.5, 0, 0, 0, 0, 0])
    probe.send(target, stamp=now - 2.0)  # older than max_command_age (1.0 s here)
    log.wait("s old (> max_command_age")
    probe.send(target, stamp=now + 30.0)  # a producer on the wall clock in a sim graph
    log.wait("in the future")
    probe.wait_sim_time(now + 0.5)
    assert _hold_still(probe, now, now + 0.5) < 2e-3
    st = drv.status()
    assert st["commands"]["rejected"] == 2 and st["commands"]["accepted"] == 0


def test_standard_trajectory_client_stamp_conventions(sim_driver):
    """An independent rclpy client with a plain trajectory_msgs/JointTrajectory, stamped as
    joint_trajectory_controller users do: stamp 0 = start on receipt; a future stamp is the time to be at the first
    point (JTC moves toward it at once)."""
    drv, probe = sim_driver
    probe.wait_sim_time(2.0)  # a stamp of 0 is then 2 s "old": stale unless it means "now"
    msg = JointTrajectory()  # header.stamp left at 0, like `ros2 topic pub` or rqt_joint_trajectory_controller
    msg.joint_names = list(JOINT_NAMES)  # arm joints only: the gripper keeps its target
    target = HOME + np.array([0.3, 0, 0, 0, 0, 0])
    msg.points = [JointTrajectoryPoint(positions=[*map(float, target)])]
    msg.points[0].time_from_start.nanosec = 100_000_000  # 0.1 s, well inside the watchdog
    t0 = probe.latest().stamp
    probe.cmd.publish(msg)
    wait_for(lambda: probe.latest().joint_pos[0] > HOME[0] + 0.1, 10, what="the zero-stamped command to move the arm")
    assert drv.status()["commands"]["rejected"] == 0 and probe.latest().stamp - t0 < 2.0

    # Stamped 1.5 s ahead (inside max_command_lead): it replaces the hold at once and the arm travels so as to be at
    # the point at the stamp (0.6 rad in 1.5 s), neither holding until then nor arriving early.
    probe.wait_sim_time(probe.latest().stamp + 0.6)  # the first command settled (watchdog hold)
    now = drv.now()
    q_hold = probe.latest().joint_pos.copy()
    goal = HOME[0] - 0.3
    probe.send(HOME + np.array([-0.3, 0, 0, 0, 0, 0]), stamp=now + 1.5)
    mid = probe.after(now + 0.9).joint_pos[0]  # on the way: -0.06 rad on time, +0.06 if received 0.5 s late
    assert goal + 0.1 < mid < q_hold[0] - 0.1, (mid, q_hold[0])
    assert probe.after(now + 1.7).joint_pos[0] == pytest.approx(goal, abs=0.01)
    assert drv.status()["commands"]["accepted"] == 2


def test_watchdog_holds_when_commands_stop(sim_driver, capfd):
    drv, probe = sim_driver
    log = NodeLog(capfd)
    t0 = drv.now()
    probe.send(HOME + np.array([1.5, 0, 0, 0, 0, 0]), stamp=t0)  # once: would need 1 s at 1.5 rad/s
    log.wait("watchdog: no command for")
    t_w = drv.now()  # the watchdog fired at or before this
    probe.wait_sim_time(t_w + 0.5)
    # stopped after command_timeout (0.5 s) + <= one period, well short of the target, and stays there
    stopped = probe.latest().joint_pos[0]
    assert 0.3 < stopped < 1.1, stopped
    assert _hold_still(probe, t_w + CONTROL_DT, t_w + 0.5) < 5e-3
    assert t_w - t0 < 0.5 + 3 * CONTROL_DT
    st = drv.status()
    assert st["holding"] and st["commands"]["watchdog_holds"] == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_command_rejected_nothing_moves(sim_driver, bad, capfd):
    drv, probe = sim_driver
    log = NodeLog(capfd)
    t0 = probe.latest().stamp
    q = np.tile(HOME + np.array([0.3, 0, 0, 0, 0, 0]), (3, 1))
    q[1, 2] = bad  # one bad value anywhere rejects the whole chunk
    probe.send(q, times=[0.0, 0.1, 0.2])
    line = log.wait("non-finite")
    assert "elbow" in line[0]
    probe.send(HOME, gripper=bad)  # the gripper too
    wait_for(lambda: drv.status()["commands"]["rejected"] == 2, what="second rejection")
    msg = trajectory_msg(HOME + np.array([0.3, 0, 0, 0, 0, 0]), 0.03, drv.now())
    msg.points[0].velocities = [0.0, 0.0, 0.0, bad, 0.0, 0.0, 0.0]  # and the velocities that pick the spline
    probe.cmd.publish(msg)
    assert "velocity of forearm_roll" in log.wait("velocity of")[0]
    probe.wait_sim_time(t0 + 0.4)
    assert _hold_still(probe, t0, t0 + 0.4) < 2e-3
    assert drv.status()["commands"]["rejected"] == 3
    assert drv.status()["commands"]["accepted"] == 0


def test_out_of_range_target_clamped_to_limits_and_workspace(sim_driver, capfd):
    drv, probe = sim_driver
    log = NodeLog(capfd)
    lim = kinematics.JOINT_LIMITS
    # wrist_angle past its URDF limit (123 deg): clamped to limit - margin (0.02 rad)
    probe.stream(HOME + np.array([0, 0, 0, 0, 1.2, 0]), duration=0.9)
    q = probe.latest().joint_pos
    assert q[4] == pytest.approx(lim[4, 1] - 0.02, abs=0.01)
    st = drv.status()
    assert st["safety"]["joint_clamps"] > 0 and st["safety"]["per_joint_clamps"][4] > 0 and st["commands"]["clamped"]
    assert "altered by the joint limits" in log.wait("safety: target")[0]
    # shoulder far forward would put the gripper through the table: stopped at the workspace box (z >= 0.01 m)
    t0 = probe.latest().stamp
    probe.stream(HOME + np.array([0, 0.9, 0, 0, 0, 0]), duration=1.0)
    zs = [kinematics.fk(s.joint_pos)[0][2] for s in probe.since(t0)]
    assert min(zs) > 0.01 - 0.005, min(zs)
    assert drv.status()["safety"]["workspace_limited"] > 0


def test_go_home_reaches_home(sim_driver):
    drv, probe = sim_driver
    probe.stream(HOME + np.array([0.5, -0.3, 0.3, 0.2, 0, 0]), duration=0.6, gripper=0.02)
    assert np.max(np.abs(probe.latest().joint_pos - HOME)) > 0.3
    r = call_service(probe.node, Trigger, "/robot_driver/go_home")
    assert r.success, r.message
    end = probe.after(drv.now() + 0.02)
    assert np.max(np.abs(end.joint_pos - HOME)) < 0.01
    assert end.gripper_pos[0] == pytest.approx(0.037, abs=2e-3)  # gripper opened
    assert drv.status()["holding"]


def test_reset_uses_the_seed_sequence(sim_driver, graph):
    from postbc_core.sim.registry import make

    drv, probe = sim_driver
    extra = Probe(graph, "probe_extras", extras=True)

    def pose_after(t):
        """The task object's pose from the first object_poses message stamped at or after sim time t."""
        def find():
            with extra.lock:
                return next((m for m in extra.poses if to_sec(m.header.stamp) >= t), None)
        return pose_array_arrays(wait_for(find, what=f"object poses after {t}"))[0]

    start = pose_after(0.0)
    probe.stream(HOME + np.array([0.4, 0, 0, 0, 0, 0]), duration=0.3)
    r = call_service(probe.node, Trigger, "/robot_driver/reset")
    assert r.success and r.message == "seed=0"
    t0 = drv.now() + 0.02  # the state of the tick in flight during the call may still be pre-reset
    pose0 = pose_after(t0)
    assert np.allclose(pose0[:3], start[:3], atol=2e-3)  # the startup scene is seed 0 too
    assert np.allclose(probe.after(t0).joint_pos, HOME, atol=2e-3)  # arm back home, holding there
    r = call_service(probe.node, Trigger, "/robot_driver/reset")
    assert r.success and r.message == "seed=1"
    pose1 = pose_after(drv.now() + 0.02)
    ref = make("lift_cube", action_mode="joint")
    try:
        expected = ref.reset(seed=1)["object_pose"]
    finally:
        ref.close()
    assert np.linalg.norm(pose1[:2] - pose0[:2]) > 1e-3
    assert np.allclose(pose1[:3], expected[:3], atol=2e-3)
    assert drv.status()["seed"] == 1


def test_object_poses_carry_every_free_body(graph):
    from postbc.nodes.robot_driver import RobotDriver

    drv = graph.add(RobotDriver(context=graph.context, parameter_overrides=[
        _param("task", "put_in_bowl"), _param("real_time_factor", RTF)]))
    probe = Probe(graph, extras=True)
    wait_for(lambda: probe.poses, what="object poses")
    poses = pose_array_arrays(probe.poses[-1])
    obs = drv.robot.task.observation(render=False)
    assert poses.shape == (2, 7)  # corn (the task object) first, then the bowl
    assert np.allclose(poses[0], obs["object_pose"], atol=1e-3)
    assert np.allclose(poses[1], drv.robot.sim.body_pose("bowl"), atol=1e-3)
