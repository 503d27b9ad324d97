"""The ament_python package: colcon build installs nodes, launch files and configs; the launch files (evaluated
with stand-ins for launch/launch_ros, which cannot be installed here) produce exactly the bringup graph; the
runner's `--set` / params-file handling; the config YAML matches the nodes' parameters."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _paths import BIN, ROOT
from postbc import bringup
from postbc_core.errors import ConfigError

LAUNCH_STANDIN = ROOT / "tests" / "fakes" / "launch_api"
PROFILES = bringup.PROFILES
EXECUTABLES = ("robot_driver", "camera", "teleop", "recorder", "policy", "finetune_manager")


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """`colcon build` of ros2_ws into a temporary build/install space (what CI and the Dockerfile run)."""
    root = tmp_path_factory.mktemp("colcon")
    colcon = shutil.which("colcon", path=str(BIN)) or shutil.which("colcon")
    assert colcon, "colcon is not installed; `make setup` installs colcon-common-extensions (requirements/ci.txt)"
    r = subprocess.run([colcon, "--log-base", str(root / "log"), "build", "--base-paths", str(ROOT / "ros2_ws/src"),
                        "--build-base", str(root / "build"), "--install-base", str(root / "install")],
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "install" / "postbc"


def test_colcon_installs_nodes_launch_files_and_configs(install):
    share = install / "share" / "postbc"
    assert (share / "package.xml").is_file()
    assert (install / "share/ament_index/resource_index/packages/postbc").is_file()
    launch = sorted(p.name for p in (share / "launch").glob("*.launch.py"))
    assert launch == sorted(f"{p}.launch.py" for p in PROFILES)
    configs = sorted(p.name for p in (share / "config").glob("*.yaml"))
    assert configs == sorted(p.name for p in (ROOT / "ros2_ws/src/postbc/config").glob("*.yaml")) and configs
    for exe in (*EXECUTABLES, "postbc_ros"):
        assert (install / "lib" / "postbc" / exe).is_file(), f"`ros2 run postbc {exe}` would not find {exe}"
    site = next((install / "lib").glob("python3*/site-packages"))
    assert (site / "postbc" / "bringup.py").is_file()


def _evaluate(launch_file: Path, args: dict[str, str], monkeypatch) -> list:
    """Run generate_launch_description() like `ros2 launch` would (arguments -> context -> OpaqueFunction)."""
    monkeypatch.syspath_prepend(str(LAUNCH_STANDIN))
    for mod in [m for m in sys.modules if m == "launch" or m.startswith(("launch.", "launch_ros"))]:
        monkeypatch.delitem(sys.modules, mod)
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchContext

    ld = runpy.run_path(str(launch_file))["generate_launch_description"]()
    declared = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    unknown = set(args) - set(declared)
    assert not unknown, f"launch arguments {unknown} are not declared"
    assert all(e.description for e in declared.values()), "every launch argument documents itself"
    ctx = LaunchContext({**{k: e.default_value for k, e in declared.items()}, **args})
    actions = []
    for e in ld.entities:
        if isinstance(e, OpaqueFunction):
            actions += e.function(ctx, *e.args, **e.kwargs)
    return actions


def _nodes(actions) -> list[tuple[str, str, dict]]:
    from launch_ros.actions import Node

    return [(a.executable, a.name, a.parameters[0]) for a in actions if isinstance(a, Node)]


def _ckpt_args(profile: str) -> dict[str, str]:
    return {"checkpoint": "/models/policy.safetensors"} if profile in ("policy", "finetune") else {}


@pytest.mark.parametrize("profile", PROFILES)
def test_launch_files_produce_the_bringup_graph(install, profile, monkeypatch):
    args = {**_ckpt_args(profile), "control_hz": "5.0", "cameras": "front"}
    actions = _evaluate(install / "share/postbc/launch" / f"{profile}.launch.py", args, monkeypatch)
    expected = bringup.graph(profile, bringup.make_settings(args))
    assert _nodes(actions) == [(n.executable, n.name, n.parameters) for n in expected]
    assert all(a.package == "postbc" for a in actions)
    names = [n.name for n in expected]
    assert names[:2] == ["robot_driver", "camera_front"] and "camera_wrist" not in names
    assert all(n.parameters["use_sim_time"] is True for n in expected)  # sim: the driver's /clock


def test_launch_includes_xsarm_control_for_the_real_arm(install, tmp_path, monkeypatch):
    # A real ament index entry for interbotix_xsarm_control (ament_index_python is the real wheel).
    prefix = tmp_path / "interbotix_ws"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/interbotix_xsarm_control").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    args = {"backend": "interbotix", "checkpoint": "/models/p.safetensors", "camera_serials": "111,222"}
    actions = _evaluate(install / "share/postbc/launch/policy.launch.py", args, monkeypatch)
    from launch.actions import IncludeLaunchDescription

    includes = [a for a in actions if isinstance(a, IncludeLaunchDescription)]
    assert len(includes) == 1
    assert includes[0].launch_description_source.location == str(
        prefix / "share/interbotix_xsarm_control/launch/xsarm_control.launch.py")
    assert dict(includes[0].launch_arguments)["robot_model"] == "wx250s"
    nodes = {name: params for _, name, params in _nodes(actions)}
    assert nodes["robot_driver"]["backend"] == "interbotix" and "use_sim_time" not in nodes["robot_driver"]
    assert (nodes["camera_front"]["backend"], nodes["camera_front"]["serial"]) == ("realsense", "111")
    assert (nodes["camera_wrist"]["width"], nodes["camera_wrist"]["fps"]) == (640, 30.0)


def test_bringup_checks_settings_and_node_parameters():
    with pytest.raises(ConfigError, match="checkpoint"):
        bringup.graph("policy")
    with pytest.raises(ConfigError, match="unknown profile 'polcy'"):
        bringup.graph("polcy")
    with pytest.raises(ConfigError, match="backend='ur5'"):
        bringup.make_settings({"backend": "ur5"})
    with pytest.raises(ConfigError, match="one serial per camera"):
        bringup.make_settings({"backend": "interbotix", "camera_serials": "1"})
    with pytest.raises(ConfigError, match="node 'robot_driver'.*unknown parameter.*bogus"):
        bringup.graph("sim", node_overrides={"robot_driver": {"bogus": 1}})
    with pytest.raises(ConfigError, match="does not run"):
        bringup.graph("sim", node_overrides={"recorder": {"store": "x"}})
    settings, nodes = bringup.parse_sets(["control_hz=5", "cameras=[front]", "recorder.max_episode_s=30"])
    assert settings == {"control_hz": 5, "cameras": ["front"]} and nodes == {"recorder": {"max_episode_s": 30}}
    with pytest.raises(ConfigError, match="not a bringup setting"):
        bringup.parse_sets(["max_episode_s=3"])


def test_config_yaml_matches_the_nodes(tmp_path):
    """Every shipped params file applies cleanly to the real-arm profiles (names and types checked)."""
    for cfg in sorted((ROOT / "ros2_ws/src/postbc/config").glob("*.yaml")):
        file_params = bringup.load_params_file(str(cfg))
        for profile in ("record_demos", "policy"):
            s = bringup.make_settings({"backend": "interbotix", "checkpoint": "/m.safetensors"})
            specs = bringup.graph(profile, s)
            bringup._apply_overrides(specs, bringup.merge_params_file(specs, file_params))
    bad = tmp_path / "bad.yaml"
    bad.write_text("robot_driver:\n  max_joint_speed: 2.0\n")
    with pytest.raises(ConfigError, match="ros__parameters"):
        bringup.load_params_file(str(bad))


def _postbc(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "postbc"), "ros", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_cli_graph_and_errors():
    r = _postbc("graph", "policy", "--set", "checkpoint=/m.safetensors", "--set", "backend=interbotix",
                "--set", "record=true", "--set", "recorder.max_episode_s=20")
    assert r.returncode == 0, r.stderr
    nodes = {n["name"]: n for n in json.loads(r.stdout)}
    assert list(nodes) == ["robot_driver", "camera_front", "camera_wrist", "policy", "recorder"]
    assert nodes["recorder"]["parameters"]["max_episode_s"] == 20
    assert nodes["recorder"]["parameters"]["source"] == "policy"
    r = _postbc("graph", "sim", "--set", "robot_driver.nope=1")
    assert r.returncode == 2 and "unknown parameter" in r.stderr and "nope" in r.stderr
    r = _postbc("graph", "policy")
    assert r.returncode == 2 and "checkpoint" in r.stderr
