"""The ament_python package: colcon build installs nodes, launch files and configs; the bringup's settings and
node-parameter checks; the runner's `--set` / params-file handling; the config YAML matches the nodes' parameters.
The launch files themselves run under the real `ros2 launch` in test_ros_launch.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from _paths import BIN, ROOT
from postbc import bringup
from postbc_core.errors import ConfigError

PROFILES = bringup.PROFILES
EXECUTABLES = ("robot_driver", "camera", "teleop", "recorder", "policy", "finetune_manager", "console")


@pytest.fixture(scope="module")
def install(colcon_install) -> Path:
    return colcon_install


def test_colcon_installs_nodes_launch_files_and_configs(install):
    share = install / "share" / "postbc"
    assert (share / "package.xml").is_file()
    assert (install / "share/ament_index/resource_index/packages/postbc").is_file()
    launch = sorted(p.name for p in (share / "launch").glob("*.launch.py"))
    assert launch == sorted(f"{p}.launch.py" for p in PROFILES)
    configs = sorted(p.name for p in (share / "config").glob("*.yaml"))
    assert configs == sorted(p.name for p in (ROOT / "ros2_ws/src/postbc/config").glob("*.yaml")) and configs
    for exe in (*EXECUTABLES, "keyboard", "postbc_ros"):
        assert (install / "lib" / "postbc" / exe).is_file(), f"`ros2 run postbc {exe}` would not find {exe}"
    site = next((install / "lib").glob("python3*/site-packages"))
    assert (site / "postbc" / "bringup.py").is_file()


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
    # codec:= reaches the nodes that create stores: the recorder and the finetune manager (its replay)
    rec = {n.name: n.parameters for n in bringup.graph("record_demos", bringup.make_settings({"codec": "jpeg:85"}))}
    ft = {n.name: n.parameters for n in bringup.graph("finetune", bringup.make_settings({"codec": "jpeg",
                                                                                        "checkpoint": "x"}))}
    assert rec["recorder"]["codec"] == "jpeg:85" and ft["finetune_manager"]["codec"] == "jpeg"
    assert "codec" not in {n.name: n.parameters for n in bringup.graph("record_demos")}["recorder"]


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
    assert list(nodes) == ["robot_driver", "camera_front", "camera_wrist", "policy", "recorder", "console"]
    assert nodes["recorder"]["parameters"]["max_episode_s"] == 20
    assert nodes["recorder"]["parameters"]["source"] == "policy"
    r = _postbc("graph", "sim", "--set", "robot_driver.nope=1")
    assert r.returncode == 2 and "unknown parameter" in r.stderr and "nope" in r.stderr
    r = _postbc("graph", "policy")
    assert r.returncode == 2 and "checkpoint" in r.stderr
