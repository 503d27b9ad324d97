"""Node parameters from every source are checked before anything starts (issue 20): a params file like `--set`
(unknown nodes and parameters, wrong types, malformed YAML and the layouts ROS 2 would not apply, named with the
file and the key), `--set` values of the wrong type, a node's own parameters under `ros2 run`, `--duration`;
and the recorder refuses, at start-up and with one error, a store it cannot write or whose keys differ from its
rows."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from _paths import BIN, ROOT
from postbc import bringup, runner
from postbc_core.errors import ConfigError, StoreError
from rclpy.parameter import Parameter

WIDOWX = ROOT / "ros2_ws/src/postbc/config/widowx.yaml"


def _graph(capsys, *args) -> tuple[int, dict, str]:
    """`postbc ros graph ARGS` in-process (ros_cmd hands its arguments to runner.main): (rc, {node: parameters},
    stderr)."""
    rc = runner.main(["graph", *args])
    out, err = capsys.readouterr()
    return rc, ({n["name"]: n["parameters"] for n in json.loads(out)} if rc == 0 else {}), err


def _one_error(err: str) -> str:
    """The one line of stderr besides log lines (Python logging's `INFO ...`, the nodes' `[INFO] ...`)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO ", "[INFO]"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err, err
    return lines[0]


# (case, params file text, regex of the one error line after "error: <file>: ")
BAD_FILES = [
    ("misspelt_node", "robot_drivr:\n  ros__parameters:\n    max_joint_speed: 1.0\n",
     r"'robot_drivr' is not a node of this stack \(did you mean 'robot_driver'\?\); its nodes: \["),
    ("misspelt_parameter", "robot_driver:\n  ros__parameters:\n    max_joint_sped: 1.0\n",
     r"node 'robot_driver': unknown parameter\(s\) \['max_joint_sped'\] \('max_joint_sped': did you mean "
     r"'max_joint_speed'\?\)"),
    ("non_numeric_value", "robot_driver:\n  ros__parameters:\n    max_joint_speed: fast\n",
     r"node 'robot_driver': max_joint_speed='fast': expected a number \(float\)"),
    ("list_of_wrong_length", "robot_driver:\n  ros__parameters:\n    workspace_min: [0.1, 0.2]\n",
     r"node 'robot_driver': workspace_min=\[0.1, 0.2\]: expected a list of 3 numbers"),
    ("unquoted_serial", "camera_front:\n  ros__parameters:\n    serial: 123456789\n",
     r"node 'camera_front': serial=123456789: expected a string \(quote"),
    ("wildcard_misspelt_parameter", "/**:\n  ros__parameters:\n    contrl_hz: 5.0\n",
     r"/\*\*: contrl_hz: no node of this stack has this parameter \(did you mean 'control_hz'\?\)"),
    ("wildcard_wrong_type", "/**:\n  ros__parameters:\n    control_hz: fast\n",
     r"/\*\*: node '\w+': control_hz='fast': expected a number \(float\)"),
    # a node this profile (sim) does not start is still checked: the site file is shared by every profile
    ("not_started_node_misspelt_parameter", "recorder:\n  ros__parameters:\n    max_episod_s: 30.0\n",
     r"node 'recorder': unknown parameter\(s\) \['max_episod_s'\]"),
    ("malformed_yaml", "robot_driver:\n  ros__parameters:\n    workspace_min: [0.1, 0.2\n",
     r"not valid YAML at line \d+, column \d+: "),
    ("no_ros__parameters", "robot_driver:\n  max_joint_speed: 1.0\n",
     r"robot_driver/max_joint_speed: 1.0 is not under a `ros__parameters:` key; write `<node>:`"),
    ("ros__parameters_without_node", "ros__parameters:\n  max_joint_speed: 1.0\n",
     r"`ros__parameters:` with no node name above it"),
    ("parameters_not_a_mapping", "robot_driver:\n  ros__parameters: [1, 2]\n",
     r"robot_driver.ros__parameters holds \[1, 2\], not parameters"),
    ("not_a_mapping", "- robot_driver\n", r"holds a list, not a mapping of node names"),
    # rclpy applies `/**` and the node's own name only: other wildcards and namespaces would be ignored
    ("other_wildcard", "/**/robot_driver:\n  ros__parameters:\n    max_joint_speed: 1.0\n",
     r"'/\*\*/robot_driver': rclpy nodes take only `/\*\*:`"),
    ("single_star", "/*:\n  ros__parameters:\n    control_hz: 5.0\n", r"'/\*': rclpy nodes take only `/\*\*:`"),
    ("namespaced", "/arm/robot_driver:\n  ros__parameters:\n    max_joint_speed: 1.0\n",
     r"'/arm/robot_driver': the postbc nodes run in the root namespace; name the node alone \(`robot_driver:`\)"),
    ("nested_namespace", "arm:\n  robot_driver:\n    ros__parameters:\n      max_joint_speed: 1.0\n",
     r"'/arm/robot_driver': the postbc nodes run in the root namespace"),
    ("nested_parameter_namespace", "robot_driver:\n  ros__parameters:\n    limits:\n      speed: 1.0\n",
     r"node 'robot_driver': unknown parameter\(s\) \['limits.speed'\]"),
]


@pytest.mark.parametrize("text,match", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_params_file_is_refused_naming_file_and_key(text, match, tmp_path, capsys):
    f = tmp_path / "site.yaml"
    f.write_text(text)
    rc, _, err = _graph(capsys, "sim", "--params-file", str(f))
    line = _one_error(err)
    assert rc == 2 and line.startswith(f"error: {f}: "), err
    assert re.search(match, line), line


def test_missing_params_file(tmp_path, capsys):
    rc, _, err = _graph(capsys, "sim", "--params-file", str(tmp_path / "nope.yaml"))
    assert rc == 2 and _one_error(err) == f"error: params file {tmp_path / 'nope.yaml'} not found"


def test_params_file_forms_upstream_accepts(tmp_path, capsys):
    """`/**` reaches every node that has the parameter; `node:` and `/node:` are the same node (file order, the
    node's own entry over `/**`, as rclpy applies them); an integer for a float parameter arrives as a float
    (ROS refuses an INTEGER for a DOUBLE parameter); a started-elsewhere node's valid entry is left out."""
    f = tmp_path / "site.yaml"
    f.write_text("/**:\n  ros__parameters:\n    control_hz: 5\n    use_sim_time: true\n"
                 "robot_driver:\n  ros__parameters:\n    max_joint_speed: 1\n    control_hz: 8.0\n"
                 "/robot_driver:\n  ros__parameters:\n    joint_margin: 0.1\n"
                 "recorder:\n  ros__parameters:\n    max_episode_s: 30.0\n"
                 "camera_front:\n  ros__parameters:\n    serial: '0123'\n")
    rc, nodes, err = _graph(capsys, "sim", "--set", "backend=interbotix", "--params-file", str(f))
    assert rc == 0, err
    driver = nodes["robot_driver"]
    assert driver["max_joint_speed"] == 1.0 and isinstance(driver["max_joint_speed"], float)
    assert driver["control_hz"] == 8.0 and driver["joint_margin"] == 0.1 and driver["use_sim_time"] is True
    assert nodes["camera_front"]["serial"] == "0123" and "control_hz" not in nodes["camera_front"]
    assert "recorder" not in nodes
    # --set wins over the file
    rc, nodes, err = _graph(capsys, "sim", "--params-file", str(f), "--set", "robot_driver.max_joint_speed=0.5")
    assert rc == 0 and nodes["robot_driver"]["max_joint_speed"] == 0.5, err


@pytest.mark.parametrize("profile", bringup.PROFILES)
@pytest.mark.parametrize("settings", [["backend=interbotix"], ["backend=sim"], ["backend=interbotix", "cameras=none"]])
def test_shipped_widowx_yaml_passes_and_applies(profile, settings, capsys):
    """config/widowx.yaml sets the safety limits in the `robot_driver:` form: they reach the driver."""
    rc, nodes, err = _graph(capsys, profile, "--set", "checkpoint=/m.safetensors", *(f"--set={s}" for s in settings),
                            "--params-file", str(WIDOWX))
    assert rc == 0, err
    d = nodes["robot_driver"]
    assert d["max_joint_speed"] == 1.0 and d["workspace_min"] == [0.10, -0.35, 0.02] and d["joint_margin"] == 0.05


SET_CASES = [
    ("bringup_setting", "control_hz=abc", r"error: bringup setting control_hz='abc': expected a number \(float\)$"),
    ("node_parameter", "robot_driver.max_joint_speed=abc",
     r"error: node 'robot_driver': max_joint_speed='abc': expected a number \(float\)$"),
    ("node_bool", "robot_driver.real_time_factor=true",
     r"error: node 'robot_driver': real_time_factor=True: expected a number \(float\)$"),
]


@pytest.mark.parametrize("item,match", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_set_of_the_wrong_type_is_one_error_line(item, match, capsys):
    rc, _, err = _graph(capsys, "sim", "--set", item)
    assert rc == 2 and re.match(match, _one_error(err)), err


def test_set_string_parameter_keeps_its_text(capsys):
    """A serial is a string: `--set camera_front.serial=0123` is "0123", not YAML's octal 83 (which the node would
    then refuse as an INTEGER for a STRING parameter)."""
    rc, nodes, err = _graph(capsys, "sim", "--set", "backend=interbotix", "--set", "camera_front.serial=0123")
    assert rc == 0 and nodes["camera_front"]["serial"] == "0123", err


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "abc"])
def test_bad_duration_is_refused(value, capsys):
    rc, _, err = _graph(capsys, "sim", f"--duration={value}")
    assert rc == 2 and "--duration" in _one_error(err), err


def test_ros_run_negative_duration_exits_at_once():
    """`postbc ros run sim --duration -5` ran until Ctrl-C; now it is one error line, exit 2, nothing started."""
    r = subprocess.run([str(BIN / "postbc"), "ros", "run", "sim", "--duration", "-5"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "running sim" not in r.stdout, r.stdout + r.stderr
    assert _one_error(r.stderr) == "error: --duration -5.0: give seconds >= 0 (0 = run until Ctrl-C)"


def test_params_file_values_reach_the_running_node(ros_context, tmp_path):
    """An integer for a float parameter in a params file used to pass the check, then fail in the node (rclpy:
    INTEGER for a DOUBLE parameter, a traceback); it arrives as the float."""
    f = tmp_path / "site.yaml"
    f.write_text("teleop:\n  ros__parameters:\n    control_hz: 5\n")
    specs = [s for s in runner.build("record_demos", ["cameras=none"], str(f)) if s.name == "teleop"]
    with runner.Composition(specs, context=ros_context) as comp:
        assert comp["teleop"].get_parameter("control_hz").value == 5.0


def test_node_parameter_of_the_wrong_type_names_it(ros_context):
    """`ros2 run postbc teleop --ros-args -p control_hz:=5` (an INTEGER for a DOUBLE parameter): a ConfigError
    naming the node, parameter, value and type (node_main prints it as one error line), not rclpy's exception."""
    from postbc.nodes.teleop import Teleop

    with pytest.raises(ConfigError, match=r"node 'teleop': control_hz=5: expected a number \(float\)"):
        Teleop("teleop", context=ros_context, parameter_overrides=[Parameter("control_hz", value=5)])
    with pytest.raises(ConfigError, match=r"node 'teleop': control_hz='abc': expected a number \(float\)"):
        Teleop("teleop", context=ros_context, parameter_overrides=[Parameter("control_hz", value="abc")])


# -- the recorder's store -----------------------------------------------------------------------------------------
def test_recorder_that_cannot_open_its_store_leaves_nothing_behind(ros_context, tmp_path, monkeypatch):
    """A read-only filesystem: the recorder's one error, then nothing (the half-built node used to be destroyed
    again by the context's shutdown: an AttributeError traceback after the error line)."""
    import rclpy
    from postbc.nodes import recorder

    def read_only(path, mode="r", **_kw):
        raise StoreError(f"creating {path}: Read-only file system; the filesystem is mounted read-only")

    monkeypatch.setattr(recorder.EpisodeStore, "open", read_only)
    # The error's traceback keeps the half-built node alive, as while the runner reports it.
    with pytest.raises(StoreError, match="Read-only") as failed:
        recorder.Recorder("recorder", context=ros_context,
                          parameter_overrides=[Parameter("store", value=str(tmp_path / "d.zarr"))])
    rclpy.shutdown(context=ros_context)  # destroys the context's nodes: must not touch the failed one
    del failed


def test_ros_run_recorder_store_error_is_one_line(tmp_path):
    """The same through `postbc ros run`: a store path it cannot open (here below a regular file) -> one error
    line, exit 2, no traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = subprocess.run([str(BIN / "postbc"), "ros", "run", "record_demos", "--duration", "30", "--set", "cameras=none",
                        "--set", f"store={blocker / 'demos.zarr'}"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(blocker) in _one_error(r.stderr)


def test_recorder_refuses_a_sim_demos_store_at_start_up(ros_context, tmp_path):
    """A store written by `postbc sim demos` has other keys (no per-stream stamps, ee_to_object): the recorder used to
    start, then abort every episode at step 0; it now refuses to start, naming the keys and the fix."""
    from postbc.nodes.recorder import Recorder
    from postbc_core.sim.demos import record_demos

    store = tmp_path / "sim.zarr"
    record_demos("lift_cube", 1, store)
    with pytest.raises(ConfigError) as e:
        Recorder("recorder", context=ros_context, parameter_overrides=[
            Parameter("store", value=str(store)), Parameter("task", value="lift_cube")])
    msg = str(e.value)
    assert f"store {store}: its episodes lack [" in msg and "'joint_states_stamp'" in msg, msg
    assert "have ['ee_to_object'], which this recorder does not write" in msg, msg
    assert "record into another store (store:=...)" in msg and "\n" not in msg, msg
    # the failed recorder released the store: a `postbc data` command or another recorder may take it
    from postbc_core.data.store import EpisodeStore

    EpisodeStore.open(store, "a").close()


@pytest.mark.parametrize("executable,bad", [("teleop", {"control_hz": -1.0}), ("camera", {"fps": -1.0})])
def test_any_node_that_fails_to_start_leaves_nothing_behind(ros_context, executable, bad):
    """The recorder's second traceback has twins in every node whose __init__ can fail after rclpy's (a camera
    without its device, a bad parameter under `ros2 run`): `ros2 run` / `ros2 launch` (node_main) and `postbc ros
    run` (Composition) build nodes through node_main.construct, which destroys the half-built node, so the context's
    shutdown does not call the node's destroy_node on it."""
    import rclpy

    spec = bringup.NodeSpec(executable, executable, bad)  # unchecked: as if the check had passed
    with pytest.raises(ConfigError) as failed:
        runner.Composition([spec], context=ros_context)
    rclpy.shutdown(context=ros_context)  # must not touch the failed node
    del failed


def test_ros_run_node_with_a_parameter_of_the_wrong_type_is_one_error_line():
    """`ros2 run postbc teleop --ros-args -p control_hz:=5` (node_main): an INTEGER for a DOUBLE parameter is one
    error line naming the node, parameter, value and type, exit 2 (rclpy's exception was a traceback, exit 1)."""
    import sys

    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'ros2_ws/src/postbc'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run([sys.executable, "-c", "from postbc.nodes.teleop import main; main()", "--ros-args", "-p",
                        "control_hz:=5"], capture_output=True, text=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert _one_error(r.stderr) == ("error: node 'teleop': control_hz=5: expected a number (float) (ROS 2 types a "
                                    "value as written: 1 is an integer, 1.0 a double)")


def test_node_main_destroys_a_node_that_fails_to_start(monkeypatch):
    """node_main.run_node (every `ros2 run` / `ros2 launch` node) builds the node through construct(): an error
    while the node starts (here a device driver's RuntimeError after rclpy's Node.__init__) goes up as itself; the
    context's shutdown used to run the half-built node's destroy_node and replace it with an AttributeError."""
    from postbc.node_main import run_node
    from postbc.nodes import teleop
    from rclpy.context import Context

    def broken(node, cls):
        raise RuntimeError("the input device went away")

    monkeypatch.setattr(teleop, "declare", broken)
    with pytest.raises(RuntimeError, match="the input device went away"):
        run_node(teleop.Teleop, [], context=Context())


def test_driver_parameters_take_their_defaults_from_the_executor_and_safety_dataclasses():
    """One default per value: robot_driver's parameters for the executor and the safety layer are ExecutorConfig's and
    SafetyLimits' fields (every ExecutorConfig field is a parameter), each still documented for --show-args."""
    import dataclasses

    from postbc.nodes.robot_driver import Params
    from postbc.params import field_docs
    from postbc_core.robots.controller import ExecutorConfig
    from postbc_core.robots.safety import SafetyLimits

    p = Params()
    assert p.executor_config() == ExecutorConfig() and p.limits() == SafetyLimits()
    names = {f.name for f in dataclasses.fields(Params)}
    assert {f.name for f in dataclasses.fields(ExecutorConfig)} <= names
    assert {"joint_margin", "workspace_min", "workspace_max", "max_joint_speed"} <= names
    docs = field_docs(Params)
    assert all(docs.get(n) for n in names), sorted(n for n in names if not docs.get(n))
