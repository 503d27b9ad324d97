"""`ros2 launch` as users run it: the installed launch files under the real upstream launch / launch_ros / ros2launch
(humble, ../shared/third_party), driven with the real `ros2` CLI.

For every profile on the sim backend: the README's node table is up (nodes, their topics and services), and Ctrl-C
(SIGINT to the process group, as a terminal sends it) ends every process cleanly within launch's grace period (launch
never escalates to SIGTERM), exit 0, no error lines, no orphan. SIGTERM (docker stop, systemd) too. The README's
`ros2 topic pub` / `ros2 service call` lines run exactly as written. Keyboard teleop through a pseudo-terminal, joy /
spacenav input nodes started by the launch, the launch stopping when a node exits, and colcon from ros2_ws alone.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import upstream
from _paths import BIN, ROOT
from _policies import weak_lift_policy
from ros_helpers import wait_for
from std_msgs.msg import String

pytestmark = pytest.mark.skipif(upstream.prefix() is None, reason=upstream.SKIP_REASON)

CAM_TOPICS = lambda c: {"pub": {f"/{c}/image_raw", f"/{c}/camera_info"}}  # noqa: E731
# The README's node table (README.md, "Node graph"): what each node publishes / subscribes / serves.
README_NODES = {
    "robot_driver": {"pub": {"/joint_states", "/postbc/driver/status", "/clock", "/postbc/sim/object_poses",
                             "/postbc/sim/success"},
                     "sub": {"/postbc/command", "/postbc/estop"},
                     "srv": {"/robot_driver/go_home", "/robot_driver/enable", "/robot_driver/reset"}},
    "camera_front": CAM_TOPICS("front"),
    "camera_wrist": CAM_TOPICS("wrist"),
    "teleop": {"pub": {"/postbc/command", "/postbc/teleop/ee_delta", "/postbc/episode"},
               "sub": {"/joint_states"}},  # + /teleop/keys (keyboard), /joy or /spacenav/* (checked per device)
    "recorder": {"pub": {"/postbc/recorder/status"}, "sub": {"/joint_states", "/postbc/episode"},
                 "srv": {"/recorder/start", "/recorder/stop", "/recorder/discard", "/recorder/label"}},
    "policy": {"pub": {"/postbc/command", "/postbc/policy/diagnostics"}, "sub": {"/joint_states"},
               "srv": {"/policy/enable"}},
    "finetune_manager": {"pub": {"/postbc/command", "/postbc/finetune/status"},
                         "sub": {"/joint_states", "/postbc/sim/success", "/postbc/episode"},
                         "srv": {"/finetune_manager/start", "/finetune_manager/pause", "/finetune_manager/abort",
                                 "/finetune_manager/label"}},
    # the camera images and /joint_states only while a page shows them
    "console": {"pub": {"/postbc/estop"},  # and not subscribed to it: see nodes/console.py
                "sub": {"/postbc/driver/status", "/postbc/recorder/status", "/postbc/finetune/status",
                        "/postbc/policy/diagnostics", "/rosout"}},
}
BAD_LINES = ("Traceback", "RCLError", "[ERROR]", "[FATAL]", "KeyboardInterrupt", "sending signal 'SIGTERM'",
             "sending signal 'SIGKILL'", "process has died")
STARTUP_S = 120.0  # generous: torch + mujoco imports of 4-5 processes on a loaded 2-core machine


@pytest.fixture(scope="module")
def env(colcon_install):
    return upstream.ros2_env(colcon_install, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A weak lift_cube state policy (2 scripted demos, 60 diffusion steps): seconds to train."""
    return weak_lift_policy(tmp_path_factory.mktemp("launch_ckpt"), steps=60)


def _graph_of(node, name: str) -> dict[str, set[str]]:
    pubs = node.get_publisher_names_and_types_by_node(name, "/")
    subs = node.get_subscriber_names_and_types_by_node(name, "/")
    srvs = node.get_service_names_and_types_by_node(name, "/")
    return {"pub": {t for t, _ in pubs}, "sub": {t for t, _ in subs}, "srv": {s for s, _ in srvs}}


def wait_nodes_up(probe, launch, names: list[str]) -> None:
    """Every node of `names` is in the graph with the README's topics and services."""
    def up():
        if launch.proc.poll() is not None:
            raise AssertionError(f"ros2 launch exited ({launch.proc.returncode}):\n{launch.output[-4000:]}")
        present = set(probe.get_node_names())
        if not set(names) <= present:
            return False
        for n in names:
            g = _graph_of(probe, n)
            if any(not README_NODES[n].get(k, set()) <= g[k] for k in ("pub", "sub", "srv")):
                return False
        return True

    try:
        wait_for(up, STARTUP_S, period=0.5, what=f"nodes {names} with their README topics and services")
    except AssertionError:
        detail = {n: {k: sorted(README_NODES[n].get(k, set()) - _graph_of(probe, n)[k]) for k in ("pub", "sub", "srv")}
                  for n in names}
        raise AssertionError(f"missing (node: what): {detail}\npresent: {probe.get_node_names()}\n"
                             f"{launch.output[-3000:]}") from None


def joint_states_rate(probe, seconds: float = 3.0) -> float:
    from sensor_msgs.msg import JointState

    from postbc import topics

    stamps: list[float] = []
    sub = probe.create_subscription(JointState, topics.JOINT_STATES, lambda m: stamps.append(time.monotonic()),
                                    topics.STATE_QOS)
    time.sleep(seconds)
    probe.destroy_subscription(sub)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0


def assert_clean_stop(launch, rc: int, names: list[str], expected_errors: tuple[str, ...] = ()) -> None:
    """Exit 0, every node "finished cleanly" (no SIGTERM / SIGKILL escalation), no error line but the test's own
    `expected_errors`, no process left in the group."""
    out = launch.output
    assert rc == 0, f"ros2 launch exited {rc}:\n{out[-4000:]}"
    bad = [ln for ln in out.splitlines() if any(b in ln for b in BAD_LINES)
           and not any(e in ln for e in expected_errors)]
    assert not bad, "unclean shutdown:\n" + "\n".join(bad[:20]) + "\n---\n" + out[-3000:]
    clean = re.findall(r"\[INFO\] \[([a-z_]+)-\d+\]: process has finished cleanly", out)
    execs = {n: n.split("_")[0] if n.startswith("camera_") else n for n in names}
    assert sorted(clean) == sorted(execs.values()), f"clean exits {clean} for nodes {names}:\n{out[-3000:]}"
    assert not upstream.processes_in_group(launch.pgid), upstream.processes_in_group(launch.pgid)


PROFILE_ARGS = {  # the README's lines, on the sim backend (paths into the test's tmp dir)
    "sim": lambda tmp, ck: [],
    "record_demos": lambda tmp, ck: [f"store:={tmp}/demos.zarr"],
    "policy": lambda tmp, ck: [f"checkpoint:={ck}", "record:=true", f"store:={tmp}/rollouts.zarr", "cameras:=none"],
    "finetune": lambda tmp, ck: [f"checkpoint:={ck}", f"finetune_out:={tmp}/ft", "cameras:=none"],
}
PROFILE_NODES = {
    "sim": ["robot_driver", "camera_front", "camera_wrist", "console"],
    "record_demos": ["robot_driver", "camera_front", "camera_wrist", "teleop", "recorder", "console"],
    "policy": ["robot_driver", "policy", "recorder", "console"],
    "finetune": ["robot_driver", "finetune_manager", "console"],
}


@pytest.mark.parametrize("profile", list(PROFILE_ARGS))
def test_profile_up_and_ctrl_c_ends_every_process_cleanly(profile, env, checkpoint, graph, tmp_path):
    probe = graph.node("launch_probe")
    names = PROFILE_NODES[profile]
    with upstream.Launch([f"{profile}.launch.py", *PROFILE_ARGS[profile](tmp_path, checkpoint)], env) as launch:
        wait_nodes_up(probe, launch, names)
        rate = joint_states_rate(probe)
        assert rate > 30.0, f"/joint_states at {rate:.1f} Hz (100 Hz nominal)"
        if profile == "finetune":  # Ctrl-C while an episode runs: discarded, never committed half
            launch.wait_output(r"finetune_manager.*(new episode|episode 0)", STARTUP_S)
        rc = launch.stop(signal.SIGINT)
        print(f"\n{profile}: nodes {names} up; /joint_states {rate:.1f} Hz; SIGINT -> last exit "
              f"{launch.stop_seconds:.2f} s; ros2 launch exit {rc}")
        assert_clean_stop(launch, rc, names)


def test_sigterm_ends_every_node_cleanly(env, colcon_install, graph, tmp_path):
    """SIGTERM (systemd stops a unit by signalling its whole cgroup; launch's own escalation after 5 s) ends every
    node as cleanly as SIGINT: exit 0, no RCLError from an invalid context, no error line, the recorder's store
    closed. Each node's installed executable runs as launch starts it, so its own exit code and output are seen
    (upstream ros2 launch answers SIGTERM by cancelling without waiting for its children, and `ros2 run` dies on
    SIGTERM leaving its child, so through either they cannot be)."""
    probe = graph.node("launch_probe")
    runs = {
        "robot_driver": ["-p", "use_sim_time:=true"],
        "recorder": ["-p", f"store:={tmp_path}/d.zarr", "-p", "use_sim_time:=true"],
        "teleop": ["-p", "use_sim_time:=true"],
    }
    tag = f"_{os.getpid()}_{time.monotonic_ns()}"  # names no other process in this domain has (e.g. a killed run's)
    procs = {n: subprocess.Popen([str(colcon_install / "lib/postbc" / n), "--ros-args", "-r", f"__node:={n}{tag}", *a],
                                 env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
             for n, a in runs.items()}
    try:
        wait_for(lambda: {n + tag for n in runs} <= set(probe.get_node_names()), STARTUP_S, period=0.5,
                 what=f"nodes {list(runs)}")
        time.sleep(1.0)  # the recorder's and teleop's subscriptions see /joint_states
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            out, _ = p.communicate(timeout=30)
            bad = [ln for ln in out.splitlines() if any(b in ln for b in BAD_LINES)]
            assert p.returncode == 0 and not bad, f"{name} exited {p.returncode} on SIGTERM:\n{out[-3000:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def readme_cli_lines() -> list[str]:
    """Every `ros2 topic pub` / `ros2 service call` command in the README, as written."""
    text = (ROOT / "README.md").read_text()
    lines = re.findall(r"^(ros2 (?:topic pub|service call) .+?)\s*(?:#.*)?$", text, flags=re.M)
    return [ln.strip() for ln in lines]


def _status(probe, topic: str) -> dict:
    from postbc import topics

    got: list[dict] = []
    sub = probe.create_subscription(String, topic, lambda m: got.append(json.loads(m.data)), topics.STATUS_QOS)
    try:
        return wait_for(lambda: got[-1] if got else None, 20, what=f"a message on {topic}")
    finally:
        probe.destroy_subscription(sub)


def test_readme_cli_lines_run_as_written(env, graph, tmp_path):
    """The README's e-stop / enable / recorder lines, executed exactly as written against record_demos."""
    lines = readme_cli_lines()
    expected = {  # README line -> what it must do (checked on the node's status topic after running it)
        "/postbc/estop std_msgs/msg/Bool \"{data: true}\"": ("/postbc/driver/status", lambda s: s["estop"]),
        "/postbc/estop std_msgs/msg/Bool \"{data: false}\"": ("/postbc/driver/status", lambda s: s["estop"]),
        "/robot_driver/enable": ("/postbc/driver/status", lambda s: not s["estop"] and s["enabled"]),
        "/recorder/start": ("/postbc/recorder/status", lambda s: s["recording"]),
        "/recorder/stop": ("/postbc/recorder/status", lambda s: not s["recording"] and s["episodes"] == 1),
        "/recorder/label": ("/postbc/recorder/status", lambda s: s["episodes"] == 1),
        "/recorder/discard": ("/postbc/recorder/status", lambda s: not s["recording"] and s["episodes"] == 0),
    }
    covered = {ln: next((k for k in expected if k in ln), None) for ln in lines}
    assert lines and all(covered.values()), f"README CLI lines without a check here: {covered}"
    probe = graph.node("launch_probe")
    store = tmp_path / "demos.zarr"
    names = ["robot_driver", "teleop", "recorder", "console"]
    with upstream.Launch(["record_demos.launch.py", f"store:={store}", "cameras:=none"], env) as launch:
        wait_nodes_up(probe, launch, names)
        for ln in lines:
            if "/recorder/stop" in ln:
                time.sleep(1.0)  # some rows to commit
            r = subprocess.run(shlex.split(ln), env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert r.returncode == 0, f"`{ln}` failed:\n{r.stdout}{r.stderr}"
            topic, check = expected[covered[ln]]
            wait_for(lambda: check(_status(probe, topic)), 20, what=f"the effect of `{ln}`")
        rc = launch.stop()
        assert_clean_stop(launch, rc, names, expected_errors=("E-STOP latched",))  # the README's e-stop line
    from postbc_core.data.store import EpisodeStore

    s = EpisodeStore.open(store)
    assert s.n_episodes == 1 and s.episode_meta(0)["success"] is True


def test_keyboard_teleop_from_its_own_terminal(env, graph, tmp_path):
    """record_demos under ros2 launch + `ros2 run postbc keyboard` on a pseudo-terminal: keys drive the twin and
    the recorder's episode keys; without a terminal the keyboard node says how to run it."""
    r = subprocess.run(["ros2", "run", "postbc", "keyboard"], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ros2 run postbc keyboard" in r.stderr and "Traceback" not in r.stderr, r.stderr
    probe = graph.node("launch_probe")
    store = tmp_path / "kb.zarr"
    names = ["robot_driver", "teleop", "recorder", "console"]
    with upstream.Launch(["record_demos.launch.py", f"store:={store}", "cameras:=none"], env) as launch:
        wait_nodes_up(probe, launch, names)
        assert "/teleop/keys" in _graph_of(probe, "teleop")["sub"]
        launch.wait_output(r"run `ros2 run postbc keyboard`", 30)  # teleop says where the keys come from
        master, slave = pty.openpty()
        kb = subprocess.Popen(["ros2", "run", "postbc", "keyboard"], env=env, stdin=slave, stdout=slave,
                              stderr=slave, start_new_session=True)
        os.close(slave)
        try:
            wait_for(lambda: "/keyboard" in [f"/{n}" for n in probe.get_node_names()], 60, what="the keyboard node")
            time.sleep(1.0)  # discovery between keyboard and teleop
            os.write(master, b"\n")  # Enter: episode start
            wait_for(lambda: _status(probe, "/postbc/recorder/status")["recording"], 20, what="recording")
            for _ in range(30):  # held 'w': +x, as the terminal's autorepeat sends it
                os.write(master, b"w")
                time.sleep(0.05)
            os.write(master, b"\n")  # stop -> commit
            wait_for(lambda: _status(probe, "/postbc/recorder/status")["episodes"] == 1, 30, what="the commit")
            os.write(master, b"1")  # success label
            time.sleep(1.0)
        finally:
            os.killpg(kb.pid, signal.SIGINT)  # Ctrl-C in that terminal
            kb_rc = kb.wait(timeout=30)
            os.close(master)
        assert kb_rc == 0
        rc = launch.stop()
        assert_clean_stop(launch, rc, names)
    from postbc_core.data.store import EpisodeStore

    s = EpisodeStore.open(store)
    ep = s.episode(0)
    assert ep["cmd_ee_delta"][:, 0].max() > 0, "the keys' +x deltas were not recorded"
    assert s.episode_meta(0)["success"] is True


def _device_prefix(root: Path, package: str, executable: str, publisher: str) -> Path:
    """An install prefix with `package`'s `executable`: a stand-in for an input-device driver (no gamepad or
    SpaceMouse exists here). It publishes what the real node publishes (`publisher`: Python code creating its
    messages) and writes the parameters the launch gave it to params.json."""
    prefix = root / package
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / f"share/ament_index/resource_index/packages/{package}").write_text("")
    (prefix / f"share/{package}").mkdir(parents=True)
    exe = prefix / f"lib/{package}/{executable}"
    exe.parent.mkdir(parents=True)
    exe.write_text(f"""#!{BIN / 'python'}
import json, os, signal, sys, threading
import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
stop = threading.Event()  # SIGINT (twice: the terminal's and launch's) ends the loop, like the C++ node's handler
signal.signal(signal.SIGINT, lambda *a: stop.set())
signal.signal(signal.SIGTERM, lambda *a: stop.set())
node = Node("{executable}", automatically_declare_parameters_from_overrides=True)
(open({str(root / (package + '_params.json'))!r}, "w")
 .write(json.dumps({{k: p.value for k, p in node._parameters.items()}})))
{publisher}
while not stop.is_set():
    tick()
    rclpy.spin_once(node, timeout_sec=0.05)
node.destroy_node()
rclpy.try_shutdown()
# Exit now, as the C++ node does: Python's interpreter teardown restores SIGINT's default action, so launch's second
# SIGINT arriving then (it sends one when the required driver exits first) would kill this process (exit -2).
os._exit(0)
""")
    exe.chmod(0o755)
    return prefix


JOY_PUBLISHER = """from sensor_msgs.msg import Joy
pub = node.create_publisher(Joy, "joy", 10)  # joy's game_controller_node: relative topic "joy"
def tick():
    pub.publish(Joy(axes=[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], buttons=[0] * 15))  # left stick pushed up: +x
"""
SPACENAV_PUBLISHER = """from geometry_msgs.msg import Twist
from sensor_msgs.msg import Joy
pub = node.create_publisher(Twist, "spacenav/twist", 10)  # spacenav_node: spacenav/twist, spacenav/joy
jpub = node.create_publisher(Joy, "spacenav/joy", 10)
def tick():
    t = Twist(); t.linear.x = 1.0
    pub.publish(t); jpub.publish(Joy(axes=[1.0, 0, 0, 0, 0, 0], buttons=[0, 0]))
"""


@pytest.mark.parametrize("device,package,executable,node_name,publisher,params,topics_in", [
    ("joy", "joy", "game_controller_node", "joy", JOY_PUBLISHER, {"device_id": 0, "autorepeat_rate": 20.0},
     {"/joy"}),
    ("spacemouse", "spacenav", "spacenav_node", "spacenav", SPACENAV_PUBLISHER, {"zero_when_static": True},
     {"/spacenav/twist", "/spacenav/joy"}),
])
def test_joy_and_spacemouse_start_their_input_node(device, package, executable, node_name, publisher, params,
                                                   topics_in, env, graph, tmp_path):
    from geometry_msgs.msg import TwistStamped

    from postbc import topics

    prefix = _device_prefix(tmp_path, package, executable, publisher)
    env = {**env, "AMENT_PREFIX_PATH": f"{prefix}:{env['AMENT_PREFIX_PATH']}"}
    probe = graph.node("launch_probe")
    deltas: list[float] = []
    probe.create_subscription(TwistStamped, topics.TELEOP_EE_DELTA, lambda m: deltas.append(m.twist.linear.x), 50)
    names = ["robot_driver", "teleop", "recorder", "console"]
    with upstream.Launch(["record_demos.launch.py", f"teleop:={device}", f"store:={tmp_path}/d.zarr",
                          "cameras:=none"], env) as launch:
        wait_nodes_up(probe, launch, names)
        wait_for(lambda: node_name in probe.get_node_names(), 60, what=f"{package}'s {executable}")
        assert topics_in <= _graph_of(probe, "teleop")["sub"]
        wait_for(lambda: sum(d > 0 for d in deltas) >= 5, 30, what=f"teleop's +x deltas from the {device}")
        rc = launch.stop()
        assert_clean_stop(launch, rc, names + [executable])
    given = json.loads((tmp_path / f"{package}_params.json").read_text())
    assert params.items() <= given.items(), given


def test_launch_stops_when_a_node_exits_and_shows_its_error_last(env, graph, tmp_path):
    """A node that cannot work (here: the policy's checkpoint does not exist) ends the whole launch; its error is
    the last line. A crashed driver (SIGKILL) likewise stops teleop and the recorder."""
    missing = tmp_path / "nope.safetensors"
    with upstream.Launch(["policy.launch.py", f"checkpoint:={missing}", "cameras:=none"], env) as launch:
        rc = launch.wait_exit(STARTUP_S)
    lines = [ln for ln in launch.output.splitlines() if ln.strip()]
    assert "launch stopped because policy exited with code 2" in lines[-1] and str(missing) in lines[-1], \
        launch.output[-3000:]
    assert not upstream.processes_in_group(launch.pgid)
    del rc  # ros2 launch's own exit code is 0 after a Shutdown action (upstream behaviour)

    probe = graph.node("launch_probe")
    names = ["robot_driver", "teleop", "recorder", "console"]
    with upstream.Launch(["record_demos.launch.py", f"store:={tmp_path}/d.zarr", "cameras:=none"], env) as launch:
        wait_nodes_up(probe, launch, names)
        driver = next(p for p in upstream.processes_in_group(launch.pgid) if "lib/postbc/robot_driver" in p)
        os.kill(int(driver.split()[0]), signal.SIGKILL)
        launch.wait_exit(60)
    assert "launch stopped because robot_driver exited with code -9" in launch.output.splitlines()[-1]
    assert not upstream.processes_in_group(launch.pgid)


def test_every_documented_launch_argument_is_accepted(env, colcon_install):
    """`--show-args` lists every Bringup setting with its doc; each README-documented argument parses."""
    r = upstream.ros2(["launch", "postbc", "record_demos.launch.py", "--show-args"], env)
    assert r.returncode == 0, r.stderr
    from postbc import bringup

    import dataclasses

    for f in dataclasses.fields(bringup.Bringup):
        assert f"'{f.name}':" in r.stdout, f"launch argument {f.name} not declared"
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"\b([a-z_]+):=", readme))
    declared = {f.name for f in dataclasses.fields(bringup.Bringup)} | {"params_file", "fastdds_profile"}
    assert documented <= declared, f"README arguments that no launch file declares: {documented - declared}"


def test_colcon_from_ros2_ws_alone_fails_and_says_why(tmp_path):
    """Building a copy of ros2_ws without the repository's launch/ folder next to it must not install an empty
    share/postbc/launch and report success."""
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "ros2_ws/src", ws / "src")
    colcon = shutil.which("colcon", path=str(BIN))
    r = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "no launch/*.launch.py" in out and "build from the repository" in out, out


def test_bad_params_file_ends_the_launch_before_any_node_starts(env, tmp_path):
    """params_file:= is checked by the launch description itself (bringup._launch_setup, before any process
    starts), like `postbc ros run --params-file` (test_ros_params.py has the other cases, through the same
    bringup.apply_params_file): a misspelt node is refused with the file and the key named, no node starts."""
    bad = tmp_path / "site.yaml"
    bad.write_text("robot_drivr:\n  ros__parameters:\n    max_joint_speed: 1.0\n")
    with upstream.Launch(["sim.launch.py", f"params_file:={bad}", "cameras:=none"], env) as launch:
        rc = launch.wait_exit(STARTUP_S)
    out = launch.output
    assert rc != 0 and f"{bad}: 'robot_drivr' is not a node of this stack (did you mean 'robot_driver'?)" in out, out
    assert "process started" not in out and "Traceback" not in out, out
    assert not upstream.processes_in_group(launch.pgid)
