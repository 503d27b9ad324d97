"""The hardware path against upstream code: postbc's InterbotixRobot and robot_driver (backend:=interbotix) over
Interbotix's real Python SDK (interbotix_xs_modules, humble) and Interbotix's own simulated xs_sdk (xs_sdk_sim.py,
run as xsarm_control.launch.py runs it with use_sim:=true, see xs_sim.py), through real rclpy. Only the Dynamixel
bus is simulated. The arm's pose is read from xs_sdk_sim's own /wx250s/joint_states by a node in this process.

Humble's SDK starts once per process (robot_startup) and uses the default ROS context, so every robot runs in its
own Python process, as on the robot. Timeouts are generous and every wait polls: a loaded machine changes how long
a test takes, not its outcome."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from postbc import topics
from postbc.conversions import joint_state_arrays, trajectory_msg
from postbc_core.robots import kinematics
from postbc_core.robots.base import JOINT_NAMES
from ros_helpers import call_service, wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory
from upstream import require, ros2_env
from xs_sim import NAMESPACE, XsSdkSim

HOME = kinematics.HOME_QPOS
SLEEP = np.array([0.0, -1.80, 1.55, 0.0, 0.8, 0.0])  # wx250s.yaml sleep_positions (arm joints)
FINGER_OPEN, FINGER_CLOSED = 0.037, 0.015  # the URDF's left_finger limits (m), where the SDK stops the PWM


@pytest.fixture
def xs_sim(tmp_path):
    require()
    with XsSdkSim(tmp_path) as sim:
        yield sim


class SimState:
    """xs_sdk_sim's /wx250s/joint_states, read by a node in this test's graph: the simulated arm's actual pose."""

    def __init__(self, graph):
        self.lock = threading.Lock()
        self.msg: JointState | None = None
        graph.node("sim_state").create_subscription(JointState, f"{NAMESPACE}/joint_states", self._cb, 10)
        wait_for(lambda: self.msg is not None, 30, what=f"{NAMESPACE}/joint_states from xs_sdk_sim")

    def _cb(self, msg):
        with self.lock:
            self.msg = msg

    def arm(self) -> np.ndarray:
        with self.lock:
            idx = {n: i for i, n in enumerate(self.msg.name)}
            return np.array([self.msg.position[idx[n]] for n in JOINT_NAMES])

    def finger(self) -> float:
        with self.lock:
            return float(self.msg.position[list(self.msg.name).index("left_finger")])

    def wait_arm(self, q, what: str, tol: float = 1e-3, timeout: float = 60.0):
        wait_for(lambda: np.max(np.abs(self.arm() - q)) < tol, timeout, what=f"{what} (at {self.arm().round(4)})")


# ------------------------------------------------------------------------------------------------ the library
PRELUDE = """
import json, sys, time
import numpy as np
from postbc_core.errors import PostBCError
from postbc_core.robots import kinematics
from postbc_core.robots.base import JointAction
from postbc_core.robots.interbotix import InterbotixConfig, InterbotixRobot
HOME = kinematics.HOME_QPOS
def out(**kw):
    print("RESULT " + json.dumps(kw, default=lambda a: np.asarray(a).tolist()), flush=True)
"""


def run_robot(body: str, timeout: float = 180.0) -> dict:
    """Run `body` (after PRELUDE) in its own Python process in the upstream environment; returns the merged
    `out(...)` results; fails with the process's output when it exits non-zero."""
    r = subprocess.run([sys.executable, "-c", PRELUDE + body], env=ros2_env(None), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"robot process exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    results = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            results.update(json.loads(line[7:]))
    results["_stderr"] = r.stderr
    return results


def test_connect_observe_stream_and_park(xs_sim, graph):
    """Connect (the SDK on its own InterbotixRobotNode), observation names/order/units, a streamed chunk reaches
    the simulated servos joint by joint, go_home after streaming really moves, close parks in the sleep pose."""
    sim = SimState(graph)
    res = run_robot("""
robot = InterbotixRobot(InterbotixConfig(settle_timeout=30.0))
robot.connect()
obs = robot.get_observation()
out(obs={k: v for k, v in obs.items()}, sdk_node=robot.bot.get_node().get_name(),
    sdk_node_type=type(robot.bot.get_node()).__name__)
robot.go_home()
out(after_home=robot.measure().joint_pos)
# a chunk, one target per control period (what a policy's action chunk becomes), each within the speed limit
chunk = HOME + np.outer(np.linspace(0.03, 0.3, 10), [1.0, 0.3, -0.2, 0.5, -0.3, 0.8])
sent = []
for q in chunk:
    sent.append(robot.send_action(JointAction(joint_pos=q, gripper=0.037)).joint_pos)
    time.sleep(0.1)
out(sent=sent, sdk_last_command=robot.bot.arm.joint_commands)
print("STREAMED", flush=True)
robot.go_home()  # after streaming: the SDK's speed check must see the home move's timing
out(home_again=robot.measure().joint_pos)
robot.close()
out(closed=True)
""")
    obs = {k: np.asarray(v) for k, v in res["obs"].items()}
    assert res["sdk_node_type"] == "InterbotixRobotNode"
    assert obs["joint_pos"].shape == (6,) and obs["joint_vel"].shape == (6,) and obs["joint_effort"].shape == (6,)
    assert obs["gripper_pos"].shape == (1,) and obs["ee_pose"].shape == (7,) and obs["timestamp"].shape == ()
    # joint order is JOINT_NAMES whatever xs_sdk's order, in rad: the sim starts in wx250s.yaml's sleep pose
    np.testing.assert_allclose(obs["joint_pos"], SLEEP, atol=1e-6)
    # gripper in metres (left finger slide), inside the finger's range; efforts N·m (xs_sdk_sim publishes none)
    assert FINGER_CLOSED - 1e-3 <= obs["gripper_pos"][0] <= FINGER_OPEN + 1e-3
    assert not obs["joint_effort"].any()
    np.testing.assert_allclose(obs["ee_pose"][:3], kinematics.fk(SLEEP)[0], atol=1e-9)
    np.testing.assert_allclose(res["after_home"], HOME, atol=0.02)
    sent = np.asarray(res["sent"])
    np.testing.assert_allclose(sent[-1], HOME + 0.3 * np.array([1.0, 0.3, -0.2, 0.5, -0.3, 0.8]), atol=1e-9)
    np.testing.assert_allclose(res["sdk_last_command"], sent[-1], atol=1e-9)  # the SDK's own record stays true
    np.testing.assert_allclose(res["home_again"], HOME, atol=0.02)
    # close() parked the arm: xs_sdk_sim itself reports the sleep pose after the robot process exited
    sim.wait_arm(SLEEP, "the sleep pose after close()")


def test_go_home_refused_by_the_sdk_is_reported(xs_sim, graph):
    """The SDK's set_joint_positions returns False (and does not move) for a move faster than a joint's velocity
    limit: go_home raises naming the joint and the fix instead of returning as if home."""
    sim = SimState(graph)
    res = run_robot("""
robot = InterbotixRobot(InterbotixConfig(home_moving_time=0.2, sleep_on_close=False))
robot.connect()
try:
    robot.go_home()
    out(raised=None)
except PostBCError as e:
    out(raised=str(e))
out(q=robot.measure().joint_pos)
robot.close()
""")
    assert res["raised"] is not None, "go_home returned although the SDK refused the move"
    assert "refused" in res["raised"] and "velocity limit" in res["raised"] and "shoulder" in res["raised"]
    np.testing.assert_allclose(res["q"], SLEEP, atol=1e-6)
    np.testing.assert_allclose(sim.arm(), SLEEP, atol=1e-6)


def test_gripper_open_close_partial(xs_sim, graph):
    """The xs gripper runs in PWM mode: fully open / closed at the finger limits, a partial target stops the
    fingers there (gripper_pressure 0: the SDK's slowest PWM, so one control period moves them a few mm)."""
    sim = SimState(graph)
    res = run_robot("""
robot = InterbotixRobot(InterbotixConfig(gripper_pressure=0.0, sleep_on_close=False))
robot.connect()
robot.go_home()
def drive(target, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        robot.send_action(JointAction(joint_pos=HOME, gripper=target))
        time.sleep(0.1)
    return robot.measure().gripper
out(opened=drive(0.037, 3.0))
out(closed=drive(0.015, 3.0))
out(partial=drive(0.026, 3.0))
time.sleep(1.0)
out(partial_later=robot.measure().gripper)
robot.close()
""")
    assert res["opened"] == pytest.approx(FINGER_OPEN, abs=2e-3)
    assert res["closed"] == pytest.approx(FINGER_CLOSED, abs=2e-3)
    assert res["partial"] == pytest.approx(0.026, abs=5e-3)
    assert res["partial_later"] == pytest.approx(res["partial"], abs=1e-4)  # stopped there, not drifting on
    assert sim.finger() == pytest.approx(res["partial_later"], abs=1e-4)


def test_startup_errors_name_the_cause(xs_sim):
    """No xs_sdk in the namespace: a timeout that names the namespace and the launch command (the SDK itself waits
    forever). The SDK failing inside (here: a robot_model it has no kinematics for, the xs_sdk running): its own
    error, not "is xsarm_control running"."""
    res = run_robot("""
try:
    InterbotixRobot(InterbotixConfig(robot_name="other_arm", connect_timeout=2.0)).connect()
except PostBCError as e:
    out(absent=str(e))
servos = {"waist": ("XM430-W350", 1), "shoulder": ("XM430-W350", 2), "elbow": ("XM430-W350", 2),
          "forearm_roll": ("XM430-W350", 1), "wrist_angle": ("XM430-W350", 1), "wrist_rotate": ("XL430-W250", 1)}
try:
    InterbotixRobot(InterbotixConfig(robot_model="wx999", robot_name="wx250s", servos=servos)).connect()
except PostBCError as e:
    out(inside=str(e))
""")
    assert "no xs_sdk under /other_arm" in res["absent"] and "xsarm_control.launch.py" in res["absent"]
    assert "AttributeError" in res["inside"] and "wx999" in res["inside"]
    assert "the xs_sdk is running there" in res["inside"] and "xsarm_control.launch.py" not in res["inside"]


# ------------------------------------------------------------------------------------------------ the driver
class Driver:
    """robot_driver (backend:=interbotix) from the colcon install, in its own process group."""

    def __init__(self, colcon_install, *params: str):
        exe = colcon_install / "lib" / "postbc" / "robot_driver"
        args = [sys.executable, str(exe), "--ros-args", "-p", "backend:=interbotix", "-p", "state_hz:=50.0"]
        for p in params:
            args += ["-p", p]
        self.proc = subprocess.Popen(args, env=ros2_env(colcon_install), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(ln.rstrip()) for ln in self.proc.stdout],
                         daemon=True).start()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"robot_driver still running after {timeout} s:\n{self.output[-4000:]}") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def hw_driver(xs_sim, graph, colcon_install):
    """(driver process, probe node state, SimState) with the driver connected to xs_sdk_sim and at home."""
    sim = SimState(graph)
    drv = Driver(colcon_install)
    probe = Probe(graph)
    try:
        wait_for(lambda: probe.js, 90, what=f"/joint_states from robot_driver:\n{drv.output[-3000:]}")
        r = call_service(probe.node, Trigger, "/robot_driver/go_home", timeout=60)
        assert r.success, r.message
        sim.wait_arm(HOME, "home after ~/go_home", tol=0.01)
        yield drv, probe, sim
    finally:
        drv.kill()


class Probe:
    def __init__(self, graph):
        self.node = n = graph.node("probe")
        self.js: list = []
        self.status: list = []
        n.create_subscription(JointState, topics.JOINT_STATES, lambda m: self.js.append(joint_state_arrays(m)), 10)
        n.create_subscription(String, topics.DRIVER_STATUS, lambda m: self.status.append(json.loads(m.data)),
                              topics.STATUS_QOS)
        self.cmd = n.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
        self.estop = n.create_publisher(Bool, topics.ESTOP, topics.LATCHED_QOS)

    def latest_status(self) -> dict:
        wait_for(lambda: self.status, 30, what="/postbc/driver/status")
        return self.status[-1]

    def send(self, q, gripper=0.037, times=None):
        # stamp 0: start on receipt (joint_trajectory_controller's convention): no clock shared with the driver
        self.cmd.publish(trajectory_msg(q, gripper, 0.0, times=times))


def test_driver_streams_chunks_holds_and_homes(hw_driver):
    drv, probe, sim = hw_driver
    js = probe.js[-1]
    np.testing.assert_allclose(js.joint_pos, sim.arm(), atol=1e-6)  # /joint_states = the sim's, in our order
    # a 3-point chunk, each point within a control period's speed limit of the previous one
    chunk = HOME + np.outer([0.1, 0.2, 0.3], [1.0, 0.5, -0.3, 0.0, 0.0, 0.5])
    probe.send(chunk, gripper=[0.037, 0.037, 0.015], times=[0.0, 0.2, 0.4])
    sim.wait_arm(chunk[-1], "the chunk's last point")
    wait_for(lambda: abs(sim.finger() - FINGER_CLOSED) < 2e-3, 30, what="the gripper closing")
    # watchdog: the chunk ended; the arm stays where it is and the driver says it holds
    wait_for(lambda: probe.latest_status()["commands"]["watchdog_holds"] == 1, 30, what="a watchdog hold")
    held = sim.arm()
    # e-stop: latched hold; further commands are ignored and the arm does not move
    probe.estop.publish(Bool(data=True))
    wait_for(lambda: probe.latest_status()["estop"], 30, what="e-stop latched")
    for _ in range(5):
        probe.send(HOME)
        time.sleep(0.1)
    wait_for(lambda: probe.latest_status()["commands"]["ignored"] >= 5, 30, what="commands ignored under e-stop")
    np.testing.assert_allclose(sim.arm(), held, atol=1e-6)
    probe.estop.publish(Bool(data=False))
    time.sleep(0.5)  # the latched e-stop topic's False must arrive before ~/enable (polled below)
    wait_for(lambda: call_service(probe.node, SetBool, "/robot_driver/enable", SetBool.Request(data=True)).success,
             30, period=0.5, what="~/enable true after the e-stop released")
    r = call_service(probe.node, Trigger, "/robot_driver/go_home", timeout=60)
    assert r.success, r.message
    sim.wait_arm(HOME, "home again", tol=0.01)
    st = probe.latest_status()
    assert st["backend"] == "interbotix" and st["commands"]["rejected"] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_driver_signal_parks_the_arm_and_exits_0(hw_driver, sig):
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) or SIGTERM (launch's escalation,
    docker stop): the SDK parks the arm in the sleep pose while the ROS context is still valid, then exit 0."""
    drv, probe, sim = hw_driver
    import os

    os.killpg(drv.proc.pid, sig)
    rc = drv.wait_exit(60)
    assert rc == 0, drv.output[-4000:]
    sim.wait_arm(SLEEP, f"the sleep pose after signal {sig.name}", timeout=30)
    assert "Traceback" not in drv.output and "context is invalid" not in drv.output, drv.output[-4000:]


def test_driver_without_xs_sdk_exits_2_naming_it(colcon_install):
    require()
    drv = Driver(colcon_install, "connect_timeout:=2.0")
    rc = drv.wait_exit(90)
    assert rc == 2, drv.output[-3000:]
    assert "error: no xs_sdk under /wx250s" in drv.output and "xsarm_control.launch.py" in drv.output
