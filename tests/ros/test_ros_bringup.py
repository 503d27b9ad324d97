"""Whole profiles composed by the in-process runner (`postbc ros run`), exactly the graph the launch files start:
an operator records a demonstration through the record_demos profile (keyboard teleop -> driver -> cameras ->
recorder) and the store validates; `postbc ros run sim` starts and stops cleanly as a command."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
from _paths import BIN
from postbc import runner, topics
from postbc_core.data.store import EpisodeStore
from postbc_core.robots import kinematics
from ros_helpers import check_stream_accounting, wait_for
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String


def test_record_demos_profile_end_to_end(ros_context, tmp_path):
    store = tmp_path / "demos.zarr"
    specs = runner.build("record_demos", [f"store={store}", "image_width=64", "image_height=64",
                                          "real_time_factor=0.4", "task=lift_cube"])
    assert [s.name for s in specs] == ["robot_driver", "camera_front", "camera_wrist", "teleop", "recorder",
                                          "console"]
    with runner.Composition(specs, context=ros_context) as comp:
        comp.start()
        from rclpy.node import Node

        probe = Node("probe", context=ros_context)
        comp.executor.add_node(probe)  # spun by the composition's executor
        joints: list[JointState] = []
        frames = {"front": 0, "wrist": 0}
        probe.create_subscription(JointState, "/joint_states", joints.append, 10)
        for cam in frames:
            probe.create_subscription(Image, f"/{cam}/image_raw",
                                      lambda m, c=cam: frames.__setitem__(c, frames[c] + 1), topics.SENSOR_QOS)
        keys = probe.create_publisher(String, "/teleop/keys", 10)
        wait_for(lambda: joints and all(frames.values()), 20, what="joint states and both cameras")

        def press(k: str, times: int = 1, period: float = 0.05):
            for _ in range(times):
                keys.publish(String(data=k))
                time.sleep(period)

        rec = comp["recorder"]
        press("\n")  # Enter: episode start
        wait_for(lambda: rec.status()["recording"], 10, what="recording to start")
        x0 = kinematics.fk(np.array(joints[-1].position[:6]))[0][0]
        press("w", times=100)  # 5 s wall = 2 s of sim time of +x at full speed (autorepeat-like presses)
        press(" ")  # gripper toggle: close
        time.sleep(2.0)
        press("\n")  # stop -> commit
        press("1")  # success label of the last committed episode
        wait_for(lambda: rec.last_episode and rec.last_episode.get("committed"), 20, what="the episode commit")
        x1 = kinematics.fk(np.array(joints[-1].position[:6]))[0][0]
        summary = rec.last_episode
        probe.destroy_node()
    assert x1 - x0 > 0.03, f"teleop +x moved the EE only {x1 - x0:.3f} m"
    assert summary["steps"] >= 10, summary

    r = subprocess.run([str(BIN / "postbc"), "data", "validate", str(store)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    s = EpisodeStore.open(store)
    ep = s.episode(0)
    assert ep["front_rgb"].shape[1:] == (64, 64, 3) and ep["wrist_rgb"].shape[1:] == (64, 64, 3)
    assert ep["cmd_ee_delta"][:, 0].max() > 0  # the operator's +x deltas were recorded
    assert ep["cmd_joint_pos"][-1, 6] < kinematics.GRIPPER_LIMITS[1]  # gripper commanded closed
    assert s.episode_meta(0)["success"] is True and s.episode_meta(0)["source"] == "teleop"
    # Every camera frame and joint state the recorder sampled is accounted for: late / dropped are what a loaded
    # machine makes them, the counts must match the stamps the episode stored.
    check_stream_accounting(ep, summary["streams"], ("front_rgb", "wrist_rgb", "joint_states"))
    # One row per control step of sim time: the timer runs on /clock (advancing in 10 ms physics ticks) and keeps
    # its phase, so a tick is never early and never drifts; how late it runs depends on the CPU the executor gets
    # (a starved process fires it late, or skips the period: a missed tick). So: n rows and m missed periods span
    # at most (n - 1 + m) periods, plus the last tick's delay, and at least n - 1 periods, less the first's. A timer on the wall
    # clock instead (0.04 s of sim time per tick at this real-time factor) or at another rate fails this.
    t, m = ep["timestamp"], summary["missed_ticks"]
    assert np.all(np.diff(t) > 0), t
    span = t[-1] - t[0]
    assert (len(t) - 2) * 0.1 - 0.0101 <= span <= (len(t) + m) * 0.1 + 0.0101, (span, len(t), m)


def test_postbc_ros_run_command_starts_and_stops(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([str(BIN / "postbc"), "ros", "run", "sim", "--duration", "4", "--set", "cameras=[]",
                        "--set", "real_time_factor=2"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "running sim: robot_driver" in r.stdout
    r = subprocess.run([str(BIN / "postbc"), "ros", "graph", "record_demos", "--set", "teleop=joy"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    nodes = {n["name"]: n for n in json.loads(r.stdout)}
    assert nodes["teleop"]["parameters"]["device"] == "joy"
    assert (nodes["joy"]["package"], nodes["joy"]["executable"]) == ("joy", "game_controller_node")
    # In one process the input driver (another package's executable) is not composed: the runner says how to start it.
    r = subprocess.run([str(BIN / "postbc"), "ros", "run", "record_demos", "--duration", "3", "--set", "teleop=joy",
                        "--set", "cameras=[]", "--set", f"store={tmp_path / 'd.zarr'}"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "running record_demos: robot_driver, teleop, recorder" in r.stdout
    assert "`ros2 run joy game_controller_node`" in r.stdout
