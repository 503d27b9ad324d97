"""recorder node over real rclpy: episodes from published streams (services, labels, time limit, one-step delayed
command alignment, resume appending), from the sim driver + two sim cameras (validated by `postbc data validate`,
zero late/dropped frames), and SIGKILL mid-episode in a subprocess (committed episodes survive, the partial one
is dropped on reopen)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _paths import BIN, ROOT
from geometry_msgs.msg import PoseArray, TwistStamped
from postbc import conversions as cv
from postbc import topics
from postbc.nodes.recorder import Recorder
from postbc_core.data.store import EpisodeStore
from postbc_core.errors import ConfigError, StoreError
from postbc_core.robots.kinematics import HOME_QPOS
from rclpy.parameter import Parameter
from ros_helpers import call_service, check_stream_accounting, wait_for
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory


def _params(**kw):
    out = []
    for k, v in kw.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            out.append(Parameter(k, Parameter.Type.STRING_ARRAY, v))
        else:
            out.append(Parameter(k, value=v))
    return out


def _validate_cli(store: Path) -> str:
    r = subprocess.run([str(BIN / "postbc"), "data", "validate", str(store)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


class Streams:
    """Wall-clock publishers: /joint_states at 100 Hz, /front/image_raw at 30 Hz, /postbc/command and
    /postbc/teleop/ee_delta at 10 Hz. A command's joint 5 target encodes its stamp (to check the alignment)."""

    def __init__(self, node, camera=True):
        self.node = node
        self.sent_images = 0
        self.js = node.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
        self.img = node.create_publisher(Image, topics.image_topic("front"), topics.SENSOR_QOS)
        self.cmd = node.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
        self.ee = node.create_publisher(TwistStamped, topics.TELEOP_EE_DELTA, topics.COMMAND_QOS)
        self.timers = [node.create_timer(0.01, self._state)]
        if camera:
            self.timers.append(node.create_timer(1 / 30, self._image))
        self.timers.append(node.create_timer(0.1, self._command))

    def now(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _state(self):
        t = self.now()
        self.js.publish(cv.joint_state_msg(HOME_QPOS + 0.01 * np.sin(t), 0.03, t))

    def _image(self):
        self.sent_images += 1
        img = np.full((24, 32, 3), self.sent_images % 256, np.uint8)
        img[:, :16, 0] = 200
        self.img.publish(cv.image_msg(img, self.now(), "front_color_optical_frame"))

    def _command(self):
        t = self.now()
        q = HOME_QPOS.copy()
        q[5] = t % 100.0  # the stamp, recoverable from the recorded command
        self.cmd.publish(cv.trajectory_msg(q, 0.02, t))
        m = TwistStamped()
        m.header.stamp = cv.to_time(t)
        m.twist.linear.x = 0.01
        self.ee.publish(m)

    def stop(self):
        for tm in self.timers:
            tm.cancel()


def _ok(node, name, srv=Trigger, **req):
    r = call_service(node, srv, name, srv.Request(**req))
    assert r.success, r.message
    return r.message


def test_recorder_config_errors_and_single_writer(ros_context, tmp_path):
    with pytest.raises(ConfigError, match="store is empty"):
        Recorder("rec0", context=ros_context)
    with pytest.raises(ConfigError, match="source="):
        Recorder("rec0", context=ros_context, parameter_overrides=_params(store=str(tmp_path / "s.zarr"),
                                                                            source="human"))
    with pytest.raises(ConfigError, match=r"codec='h265': unknown codec 'h265'"):
        Recorder("rec0", context=ros_context, parameter_overrides=_params(store=str(tmp_path / "s.zarr"),
                                                                            codec="h265"))
    assert not (tmp_path / "s.zarr").exists()
    a = Recorder("rec_a", context=ros_context, parameter_overrides=_params(store=str(tmp_path / "s.zarr")))
    try:
        with pytest.raises(StoreError, match=f"open for writing by pid {os.getpid()}"):
            Recorder("rec_b", context=ros_context, parameter_overrides=_params(store=str(tmp_path / "s.zarr")))
    finally:
        a.destroy_node()


def test_recorder_refuses_to_start_on_a_store_of_other_image_size(graph, tmp_path):
    """A store whose front_rgb images are 12x16 and a recorder writing the camera's native 24x32 frames: the start
    is refused naming both sizes and the fix (it used to start, then abort the episode at its first step)."""
    from postbc.nodes.recorder import OPTIONAL_KEYS, ROW_KEYS

    store = tmp_path / "small.zarr"
    spec = {**ROW_KEYS, **OPTIONAL_KEYS, "front_rgb": ((12, 16, 3), np.uint8), "front_rgb_stamp": ((), np.float64)}
    spec.pop("object_pose_stamp")
    with EpisodeStore.open(store, "a") as s:
        s.add_episode({k: np.zeros((2, *shape), dtype) for k, (shape, dtype) in spec.items()})
    rec = graph.add(Recorder("recorder", context=graph.context, parameter_overrides=_params(
        store=str(store), cameras=["front"], start_timeout=5.0)))
    helper = graph.node("helper")
    streams = Streams(helper)
    r = call_service(helper, Trigger, "/recorder/start")
    streams.stop()
    assert not r.success and "the store's front_rgb images are 12x16 (HxW) but this recorder writes 24x32" in \
        r.message and "image_size:=[12, 16]" in r.message, r.message
    assert rec.store.n_episodes == 1 and rec.status()["recording"] is False


def test_recorder_services_labels_time_limit_and_resume(graph, tmp_path):
    store = tmp_path / "demos.zarr"
    kw = {"store": str(store), "control_hz": 10.0, "cameras": ["front"], "image_size": [12, 16],
          "max_episode_s": 1.5, "task": "lift the cube", "operator": "tester", "start_timeout": 0.3}
    rec = graph.add(Recorder("recorder", context=graph.context, parameter_overrides=_params(**kw)))
    helper = graph.node("helper")
    status = []
    helper.create_subscription(String, topics.RECORDER_STATUS, lambda m: status.append(json.loads(m.data)),
                               topics.STATUS_QOS)
    r = call_service(helper, Trigger, "/recorder/start")
    assert not r.success and "/joint_states" in r.message and "/front/image_raw" in r.message
    streams = Streams(helper)
    time.sleep(0.5)

    # 1: start / stop -> committed; 2: discarded; 3: labelled while recording; 4: time limit
    _ok(helper, "/recorder/start")
    assert not call_service(helper, Trigger, "/recorder/start").success  # already recording
    wait_for(lambda: rec.status()["episode"]["steps"] >= 8, 5.0, what="8 steps")
    assert "committed" in _ok(helper, "/recorder/stop")
    _ok(helper, "/recorder/label", SetBool, data=True)  # nothing recording: relabels the last committed episode
    _ok(helper, "/recorder/start")
    time.sleep(0.5)
    _ok(helper, "/recorder/discard")
    assert not call_service(helper, Trigger, "/recorder/stop").success  # nothing to stop
    events = helper.create_publisher(String, topics.EPISODE_EVENTS, 10)
    wait_for(lambda: events.get_subscription_count() > 0, 5.0, what="recorder on /postbc/episode")
    events.publish(String(data="start"))
    wait_for(lambda: rec.status().get("episode", {}).get("steps", 0) >= 3, 5.0, what="start event")
    events.publish(String(data="failure"))
    events.publish(String(data="stop"))
    wait_for(lambda: rec.store.n_episodes == 2, 5.0, what="stop event commit")
    _ok(helper, "/recorder/start")
    t0 = time.monotonic()
    wait_for(lambda: rec.store.n_episodes == 3, 5.0, what="the time limit to commit episode 3")
    assert 1.3 < time.monotonic() - t0 < 6.0  # 1.5 s + the commit, on a loaded machine
    wait_for(lambda: status and status[-1]["episodes"] == 3 and not status[-1]["recording"], 3.0, what="status")
    st = status[-1]
    streams.stop()

    s = rec.store
    assert [s.episode_meta(i)["success"] for i in range(3)] == [True, False, None]
    assert s.episode_meta(0)["task"] == "lift the cube" and s.episode_meta(0)["source"] == "teleop"
    lengths = s.episode_lengths
    # One row per tick but the first (its command is the next tick's); a starved test machine may skip timer
    # periods, which the recorder counts: rows + missed ticks + 1 = the periods in the episode (+-1 for the phase
    # of the first tick and a late last one).
    limited = st["last_episode"]
    periods = limited["duration_s"] * kw["control_hz"]
    assert limited["duration_s"] >= 1.5 and lengths[0] >= 8, (lengths, limited)
    assert abs(lengths[2] + limited["missed_ticks"] + 1 - periods) <= 1.0, (lengths, limited)
    ep = s.episode(0)
    assert ep["front_rgb"].shape[1:] == (12, 16, 3) and ep["front_rgb"].dtype == np.uint8
    assert ep["ee_pose"].shape[1:] == (7,) and ep["cmd_ee_delta"].shape[1:] == (7,)
    assert "object_pose" not in ep  # never published here
    ts = ep["timestamp"]
    assert np.all(np.diff(ts) > 0.05) and np.median(np.diff(ts)) == pytest.approx(0.1, abs=0.01)
    # Row t holds the latest command received before tick t+1: stamped before that tick, and no older than one
    # command period before tick t (commands come every 0.1 s).
    cs = ep["command_stamp"]
    assert np.all(cs[:-1] <= ts[1:]) and np.all(cs > ts - 0.25)
    assert np.allclose(ep["cmd_joint_pos"][:, 5], cs % 100.0, atol=1e-3)
    assert np.allclose(ep["cmd_joint_pos"][:, 6], 0.02)
    assert np.allclose(ep["cmd_ee_delta"][:, 0], 0.01) and np.allclose(ep["cmd_ee_delta"][:, 6], 0.02)
    assert np.all(ep["front_rgb_stamp"] <= ts) and np.median(ts - ep["front_rgb_stamp"]) < 0.1
    assert np.all(ep["joint_states_stamp"] <= ts) and np.median(ts - ep["joint_states_stamp"]) < 0.05

    last = st["last_episode"]
    assert last["reason"] == "time limit" and last["committed"] and last["steps"] == lengths[2]
    front = last["streams"]["front_rgb"]
    # Wall-clock publishers on a shared machine: rates and counts are checked loosely here; the sim test below
    # checks the late counts against the stored stamps.
    assert 15 <= front["rate_hz"] <= 36 and front["received"] > 25
    assert 50 <= last["streams"]["joint_states"]["rate_hz"] <= 115
    assert _validate_cli(store).startswith(f"{store}: OK (3 episodes")

    # Resume: a new recorder appends to the same store; old episodes are unchanged.
    old = s.episode(0)
    graph.nodes.remove(rec)
    graph.executor.remove_node(rec)
    rec.destroy_node()
    rec2 = graph.add(Recorder("recorder", context=graph.context, parameter_overrides=_params(**kw)))
    assert rec2.store.n_episodes == 3
    streams = Streams(helper)
    time.sleep(0.3)
    _ok(helper, "/recorder/start")
    wait_for(lambda: rec2.status()["episode"]["steps"] >= 3, 5.0, what="3 steps after resuming")
    _ok(helper, "/recorder/stop")
    streams.stop()
    assert rec2.store.n_episodes == 4
    again = rec2.store.episode(0)
    assert all(np.array_equal(old[k], again[k]) for k in old)


def test_recorder_records_the_sim_tasks_state_keys(graph, tmp_path):
    """object_poses of put_in_bowl's scene (corn, bowl): a recorder with task put_in_bowl stores the task's state keys
    (its recommended object_pos, object_yaw_feat, bowl_pos and the rest of registry.task_state_keys), equal to the
    task's own computation; a store whose episodes hold object_pose only keeps that key set."""
    from postbc_core.sim.registry import recommended_obs_keys, task_state_keys

    poses = np.array([[0.25, 0.05, 0.012, *cv_yaw_quat(0.7)], [0.32, -0.08, 0.0, *cv_yaw_quat(-1.1)]])
    helper = graph.node("helper")
    streams = Streams(helper, camera=False)
    pub = helper.create_publisher(PoseArray, topics.OBJECT_POSES, topics.STATE_QOS)
    helper.create_timer(0.01, lambda: pub.publish(cv.pose_array_msg(poses, streams.now())))

    def record(store, task, name):
        rec = graph.add(Recorder(name, context=graph.context, parameter_overrides=_params(
            store=str(store), control_hz=10.0, task=task, start_timeout=5.0)))
        # the optional keys of a new store: what is published when its first episode starts
        wait_for(lambda: rec.streams["object_pose"].seq and rec.streams["joint_states"].seq, what="the streams")
        _ok(helper, f"/{name}/start")
        wait_for(lambda: rec.status()["episode"]["steps"] >= 3, 10.0, what="3 steps")
        _ok(helper, f"/{name}/stop")
        ep = rec.store.episode(rec.store.n_episodes - 1)
        graph.nodes.remove(rec)  # the store's single writer goes: the next recorder may open it
        graph.executor.remove_node(rec)
        rec.destroy_node()
        return ep

    ep = record(tmp_path / "bowl.zarr", "put_in_bowl", "rec_bowl")
    want = task_state_keys("put_in_bowl", poses)
    assert set(recommended_obs_keys("put_in_bowl")) <= set(ep) and set(want) <= set(ep)
    for k, v in want.items():
        assert ep[k].dtype == np.float32
        np.testing.assert_allclose(ep[k], np.tile(v, (len(ep[k]), 1)), atol=1e-6, err_msg=k)
    # Not a sim task: object_pose only (as before); the same store then stays object_pose only for put_in_bowl too.
    old = record(tmp_path / "old.zarr", "corn in bowl", "rec_old")
    assert "object_pose" in old and "object_pos" not in old
    again = record(tmp_path / "old.zarr", "put_in_bowl", "rec_again")
    assert set(again) == set(old)
    streams.stop()


def cv_yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


SIGKILL_SCRIPT = r"""
import sys
from postbc.nodes import recorder
sys.exit(recorder.main())
"""


def test_recorder_sigkill_keeps_committed_episodes(graph, tmp_path):
    store = tmp_path / "kill.zarr"
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'ros2_ws/src/postbc'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    # flush_bytes small (a block every ~10 steps): the partial episode is on disk, not only in memory, when the
    # process dies.
    proc = subprocess.Popen([sys.executable, "-m", "postbc.nodes.recorder", "--ros-args", "-p", f"store:={store}",
                             "-p", "control_hz:=20.0", "-p", "flush_bytes:=2000", "-p", "start_timeout:=5.0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        helper = graph.node("helper")
        status = []
        helper.create_subscription(String, topics.RECORDER_STATUS, lambda m: status.append(json.loads(m.data)),
                                   topics.STATUS_QOS)
        streams = Streams(helper, camera=False)
        _ok(helper, "/recorder/start")
        wait_for(lambda: status and (status[-1].get("episode") or {}).get("steps", 0) >= 10, 20.0,
                 what="10 steps of the first episode")
        _ok(helper, "/recorder/stop")
        _ok(helper, "/recorder/start")
        try:
            wait_for(lambda: status and (status[-1].get("episode") or {}).get("steps", 0) >= 30, 20.0,
                     what="the second episode to be well under way")
        except AssertionError:
            raise AssertionError(f"last status {status[-1:]}") from None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        streams.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = _validate_cli(store)  # committed episodes validate; the tail is only a warning
    assert out.startswith(f"{store}: OK (1 episodes") and "uncommitted tail" in out, out
    with EpisodeStore.open(store, "a") as s:  # what the next recorder does: recover, then append
        assert s.n_episodes == 1 and s.recovery is not None and s.recovery.dropped_steps
        first = s.episode(0)
        assert len(first["timestamp"]) >= 10
        s.add_episode({k: v[:3] for k, v in first.items()}, success=True, source="teleop")
    out = _validate_cli(store)
    assert out.startswith(f"{store}: OK (2 episodes") and "uncommitted" not in out, out


def test_record_from_sim_driver_and_cameras(graph, tmp_path):
    """The sim graph: robot_driver (sim) + front/wrist sim cameras (64x64 at 10 Hz) + recorder at 10 Hz, all on sim
    time; a helper commands a slow joint-0 sweep. The stream counts match the stored stamps; `postbc data validate`
    accepts it."""
    from postbc.nodes.camera import Camera
    from postbc.nodes.robot_driver import RobotDriver

    sim_time = Parameter("use_sim_time", value=True)
    store = tmp_path / "sim.zarr"
    # Sim at 0.3x real time: the whole graph shares one Python process (rclpy's executor costs ~1 ms per callback
    # and /clock alone is 100 Hz per node) on a 2-core machine that other jobs load; in deployment each node is a
    # process of its own. Physics runs on a thread of its own, so a starved renderer or timer still lags in sim time
    # too: the assertions check the recorder's accounting, not that nothing was late.
    graph.add(RobotDriver(context=graph.context, parameter_overrides=[sim_time, *_params(
        task="lift_cube", real_time_factor=0.3)]))
    for cam in ("front", "wrist"):
        graph.add(Camera(f"{cam}_camera", context=graph.context, parameter_overrides=[sim_time, *_params(
            backend="sim", camera=cam, fps=10.0, width=64, height=64, task="lift_cube")]))
    rec = graph.add(Recorder("recorder", context=graph.context, parameter_overrides=[sim_time, *_params(
        store=str(store), control_hz=10.0, cameras=["front", "wrist"], task="lift_cube", auto_label_success=True,
        start_timeout=10.0)]))
    helper = graph.add(__import__("rclpy.node", fromlist=["Node"]).Node(
        "helper", context=graph.context, parameter_overrides=[sim_time]))
    cmd = helper.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)

    def command():
        t = helper.get_clock().now().nanoseconds * 1e-9
        q = HOME_QPOS.copy()
        q[0] = 0.3 * np.sin(0.5 * t)
        cmd.publish(cv.trajectory_msg(q, 0.03, t))

    helper.create_timer(0.1, command)
    wait_for(lambda: min(rec.streams[k].seq for k in ("front_rgb", "wrist_rgb")) >= 3, 30.0, what="camera frames")
    _ok(helper, "/recorder/start")
    t0 = rec._now()
    wait_for(lambda: rec._now() - t0 >= 2.0, 30.0, what="2 s of sim time")
    _ok(helper, "/recorder/stop")
    last = rec.last_episode

    assert _validate_cli(store).startswith(f"{store}: OK (1 episodes")
    s = rec.store
    ep = s.episode(0)
    T = len(ep["timestamp"])
    # 2 s of sim time at 10 Hz: ~20 rows, less any period a starved process could not tick (counted, not hidden)
    assert T + last["missed_ticks"] >= 18, (T, last)
    assert ep["front_rgb"].shape == (T, 64, 64, 3) and ep["wrist_rgb"].shape == (T, 64, 64, 3)
    assert ep["object_pose"].shape == (T, 7) and np.allclose(ep["object_pose"][:, 2], 0.015, atol=0.005)
    # lift_cube's state keys from the object poses, as `postbc sim demos` stores them (its recommended keys)
    from postbc_core.sim.registry import recommended_obs_keys, task_state_keys

    assert set(recommended_obs_keys("lift_cube")) <= set(ep)
    for t in (0, T - 1):
        for k, v in task_state_keys("lift_cube", ep["object_pose"][t:t + 1].astype(np.float64)).items():
            np.testing.assert_allclose(ep[k][t], v, atol=1e-6, err_msg=k)
    assert s.episode_meta(0)["success"] is False and not ep["done"].any() and not ep["reward"].any()
    # Sim camera stamps are the stamps of the joint states the images show (the driver's 100 Hz sim-time grid).
    for k in ("front_rgb_stamp", "wrist_rgb_stamp", "joint_states_stamp"):
        assert np.allclose(ep[k] * 100, np.round(ep[k] * 100), atol=1e-3), k
    assert np.all(ep["command_stamp"][:-1] <= ep["timestamp"][1:])
    assert np.ptp(ep["cmd_joint_pos"][:, 0]) > 0.1 and np.ptp(ep["joint_pos"][:, 0]) > 0.05  # the arm followed
    assert np.abs(ep["front_rgb"][-1].astype(int) - ep["front_rgb"][0]).mean() > 0.5  # and the cameras saw it
    streams = last["streams"]
    assert 80 <= streams["joint_states"]["rate_hz"] <= 120, streams
    for k in ("front_rgb", "wrist_rgb"):  # never above the 10 Hz the cameras render at; below it on a starved CPU
        assert 0 < streams[k]["rate_hz"] <= 12, streams
    check_stream_accounting(ep, streams, ("joint_states", "front_rgb", "wrist_rgb", "object_pose"))


def test_recorder_codec_and_disk_space(graph, tmp_path):
    """The codec parameter compresses the camera; status reports minutes left at the store's rate; an episode that
    cannot fit is refused at start and one that reaches the reserve is stopped and committed (the free-space query is
    injected: no disk is filled)."""
    pytest.importorskip("imagecodecs")
    store = tmp_path / "d.zarr"
    free = [10_000_000_000]
    rec = graph.add(Recorder("recorder", context=graph.context, disk_free=lambda path: free[0],
                             parameter_overrides=_params(store=str(store), control_hz=10.0, cameras=["front"],
                                                         max_episode_s=2.0, start_timeout=5.0, codec="jpeg:80",
                                                         disk_reserve_mb=1.0, disk_warn_minutes=5.0)))
    helper = graph.node("helper")
    streams = Streams(helper)
    try:
        _ok(helper, "/recorder/start")
        wait_for(lambda: rec.status()["episode"]["steps"] >= 5, 10.0, what="5 steps")
        assert "committed" in _ok(helper, "/recorder/stop")
        assert rec.store.codecs()["front_rgb"] == "jpeg:80"
        disk = rec.status()["disk"]
        rate = disk["bytes_per_s"]
        assert rate > 0 and disk["minutes_left"] == pytest.approx((free[0] - 1e6) / rate / 60, rel=1e-3)
        assert not disk["low"]
        free[0] = 1_000_000 + int(rate)  # one second of recording above the reserve; an episode may take 2 s
        r = call_service(helper, Trigger, "/recorder/start")
        assert not r.success and "cannot start" in r.message and "an episode of up to 2 s needs" in r.message, \
            r.message
        assert rec.status()["disk"]["low"] and rec.store.n_episodes == 1
        free[0] = 10_000_000_000
        _ok(helper, "/recorder/start")
        wait_for(lambda: rec.status()["episode"]["steps"] >= 3, 10.0, what="3 steps")
        free[0] = 500_000  # below the reserve while recording: stopped and committed, nothing lost
        wait_for(lambda: (rec.last_episode or {}).get("reason") == "disk_full" and rec._job.done(), 10.0,
                 what="the episode stopped for the full disk")
        assert rec.last_episode["committed"] and rec.store.n_episodes == 2 and not rec.status()["recording"]
    finally:
        streams.stop()
    assert "camera codecs: front_rgb jpeg:80" in _validate_cli(store)
