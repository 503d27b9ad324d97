"""The finetune manager through real rclpy on the sim (the `finetune` profile: driver + manager): episodes run,
commit to the replay store and update the agent; a restarted manager resumes after the last completed episode;
the operator flow (labels, abort) on a real-arm style manager; bad parameters fail clearly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import numpy as np
import pytest
from _data_helpers import read_until_stalled
from _paths import BIN
from _policies import weak_lift_image_policy, weak_lift_policy
from postbc import runner
from postbc_core.data.store import EpisodeStore
from postbc_core.data.validate import validate_store
from ros_helpers import call_service, wait_for
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The manager's torch_threads parameter sets the process-wide value: give the next tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weak_checkpoint(tmp_path_factory):
    """A weak lift_cube state policy (2 scripted demos, 60 diffusion steps): seconds to train."""
    return weak_lift_policy(tmp_path_factory.mktemp("ft_ckpt"), steps=60)


def _run_profile(ros_context, ckpt, out, episodes: int, timeout: float, cameras: tuple[str, ...] = ()):
    # With cameras: the sim cameras render at twice the image policy's 24x32 and the manager resizes each frame, as
    # it does a RealSense's 640x480 for a policy trained at a lower resolution.
    sets = [f"checkpoint={ckpt}", f"finetune_out={out}", f"cameras=[{', '.join(cameras)}]",
            f"finetune_manager.episodes={episodes}", "finetune_manager.warmup_episodes=1",
            "finetune_manager.max_episode_s=1.2", "finetune_manager.device=cpu", "finetune_manager.utd=2",
            "finetune_manager.torch_threads=1", *(("image_width=64", "image_height=48") if cameras else ())]
    specs = runner.build("finetune", sets)
    assert [s.name for s in specs] == ["robot_driver", *(f"camera_{c}" for c in cameras), "finetune_manager",
                                          "console"]
    statuses: list[dict] = []
    with runner.Composition(specs, context=ros_context) as comp:
        from postbc import topics
        from rclpy.node import Node

        probe = Node("probe", context=ros_context)
        comp.executor.add_node(probe)
        probe.create_subscription(String, topics.FINETUNE_STATUS, lambda m: statuses.append(json.loads(m.data)),
                                  topics.STATUS_QOS)
        comp.start()
        mgr = comp["finetune_manager"]
        wait_for(lambda: mgr.status()["state"] in ("done", "error"), timeout, what="the finetuning budget")
        final = mgr.status()
        probe.destroy_node()
    return final, statuses


def test_finetune_profile_runs_episodes_updates_and_resumes(ros_context, weak_checkpoint, tmp_path):
    out = tmp_path / "ft"
    final, statuses = _run_profile(ros_context, weak_checkpoint, out, episodes=2, timeout=120)
    assert final["state"] == "done", final
    assert final["episode"] == 2 and final["updates"] > 0 and final["replay_transitions"] > 0
    assert {s["state"] for s in statuses} >= {"running", "updating"}  # the status topic follows the state machine
    assert validate_store(out / "replay.zarr").ok
    with EpisodeStore.open(out / "replay.zarr") as s:
        assert s.n_episodes == 2 and set(s.meta_table()["source"]) == {"finetune"}
        ep = s.episode(0)
        assert ep["noise"].shape[1] == 28 and ep["decision"][0]
        first = {k: v.copy() for k, v in ep.items()}
        n_steps = s.n_steps
    # A new manager on the same run directory (a restart after a crash) continues after episode 2.
    final2, _ = _run_profile(ros_context, weak_checkpoint, out, episodes=3, timeout=120)
    assert final2["state"] == "done" and final2["episode"] == 3 and final2["updates"] > final["updates"]
    with EpisodeStore.open(out / "replay.zarr") as s:
        assert s.n_episodes == 3 and s.n_steps > n_steps
        for k, v in s.episode(0).items():  # earlier episodes untouched
            np.testing.assert_array_equal(v, first[k])


@pytest.fixture(scope="module")
def weak_image_checkpoint(tmp_path_factory):
    """A weak lift_cube image policy (cameras + arm state, conv encoder, trained at 24x32): seconds to train."""
    return weak_lift_image_policy(tmp_path_factory.mktemp("ft_img_ckpt"), steps=20)


def test_finetune_profile_runs_an_image_policy_and_resumes(ros_context, weak_image_checkpoint, tmp_path):
    """The real-robot case: the policy sees only the cameras and the arm. The profile adds the two sim camera nodes;
    DSRL's replay stores the frames at the policy's resolution; a restarted manager continues after episode 2."""
    out = tmp_path / "ft"
    final, _ = _run_profile(ros_context, weak_image_checkpoint, out, episodes=2, timeout=180, cameras=("front", "wrist"))
    assert final["state"] == "done" and final["episode"] == 2 and final["updates"] > 0, final
    with EpisodeStore.open(out / "replay.zarr") as s:
        ep = s.episode(0)
        assert ep["front_rgb"].shape[1:] == (24, 32, 3) and ep["wrist_rgb"].shape[1:] == (24, 32, 3)
        assert ep["front_rgb"].dtype == np.uint8 and ep["front_rgb"].std() > 0  # rendered scenes, not blanks
        assert "object_pose" not in ep and ep["noise"].shape[1] == 28
        first = {k: v.copy() for k, v in ep.items()}
    final2, _ = _run_profile(ros_context, weak_image_checkpoint, out, episodes=3, timeout=180,
                             cameras=("front", "wrist"))
    assert final2["state"] == "done" and final2["episode"] == 3 and final2["updates"] > final["updates"], final2
    with EpisodeStore.open(out / "replay.zarr") as s:
        assert s.n_episodes == 3
        for k, v in s.episode(0).items():
            np.testing.assert_array_equal(v, first[k])

def test_ctrl_c_during_the_updates_keeps_the_committed_episode(ros_context, weak_checkpoint, tmp_path):
    """`postbc ros run finetune` (a real process) gets Ctrl-C while episode 0's updates run: it says what the stop
    costs, and the restarted manager keeps episode 0, redoes its updates and goes on; metrics.jsonl has each row once."""
    out = tmp_path / "ft"
    sets = [f"checkpoint={weak_checkpoint}", f"finetune_out={out}", "cameras=[]", "finetune_manager.episodes=2",
            "finetune_manager.warmup_episodes=1", "finetune_manager.max_episode_s=1.2", "finetune_manager.device=cpu",
            "finetune_manager.utd=2", "finetune_manager.torch_threads=1"]
    # The test hook stalls episode 0's updates after their first gradient step (until the manager is stopped).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "POSTBC_FINETUNE_TEST_STALL": "0:u1"}
    proc = subprocess.Popen([str(BIN / "postbc"), "ros", "run", "finetune", *(a for x in sets for a in ("--set", x))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = read_until_stalled(proc)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    assert re.search(r"stopping now: episode 0 is committed and kept; its \d+ updates are redone when you restart "
                     r"with resume:=true", rest), rest
    with EpisodeStore.open(out / "replay.zarr") as s:
        assert s.n_episodes == 1
        first = {k: v.copy() for k, v in s.episode(0).items()}
    final, _ = _run_profile(ros_context, weak_checkpoint, out, episodes=2, timeout=120)
    assert final["state"] == "done" and final["episode"] == 2, final
    with EpisodeStore.open(out / "replay.zarr") as s:
        assert s.n_episodes == 2
        for k, v in s.episode(0).items():  # the committed episode kept as it was
            np.testing.assert_array_equal(v, first[k])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["tag"], r["step"]) for r in rows] == [("episode", 0), ("train", 1), ("episode", 1), ("train", 2)]
    # A budget below what the run has done is refused in the manager's terms.
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc_core.errors import ConfigError
    from rclpy.parameter import Parameter

    with pytest.raises(ConfigError) as e:
        FinetuneManager(context=ros_context, parameter_overrides=[
            Parameter("checkpoint", value=str(weak_checkpoint)), Parameter("out", value=str(out)),
            Parameter("episodes", value=1), Parameter("warmup_episodes", value=1), Parameter("utd", value=2),
            Parameter("device", value="cpu")])
    assert str(e.value) == (f"episodes:=1 is below the 2 episodes the run in {out} has already done (the budget "
                            "counts the whole run): give episodes:=3 or more to continue it")


def test_a_restart_first_redoes_the_updates_a_stop_cut_short(ros_context, weak_checkpoint, tmp_path):
    """Without auto_start: the restarted manager runs the owed updates, checkpoints, then waits for ~/start."""
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc_core.rl.finetune import run_episode
    from postbc_core.sim.registry import make
    from rclpy.parameter import Parameter

    params = [Parameter("checkpoint", value=str(weak_checkpoint)), Parameter("out", value=str(tmp_path / "ft")),
              Parameter("warmup_episodes", value=0), Parameter("utd", value=1), Parameter("device", value="cpu"),
              Parameter("torch_threads", value=1)]
    mgr = FinetuneManager(context=ros_context, parameter_overrides=params)
    try:
        task = make("lift_cube", max_steps=8)
        run_episode(mgr.ft, task, 0)  # committed and checkpointed; the manager stops before its updates
        task.close()
        owed = mgr.ft.updates_owed
        assert owed > 0 and mgr.ft.stop_note() == (f"episode 0 is committed and kept; its {owed} updates are redone "
                                                   "when you restart with resume:=true")
    finally:
        mgr.destroy_node()
    mgr = FinetuneManager(context=ros_context, parameter_overrides=params)
    try:
        wait_for(lambda: mgr.status()["state"] == "idle", 60, what="the owed updates, then idle")
        assert mgr.ft.updates == owed and not mgr.ft.update_pending and mgr.ft.episodes_done == 1
        assert mgr.ft.stop_note() == "the checkpoint holds all 1 committed episodes and their updates"
    finally:
        mgr.destroy_node()


def test_operator_flow_labels_and_abort(graph, weak_checkpoint, tmp_path):
    """The real-arm flow, with the sim driver standing in for the arm: go home -> wait for start -> run -> wait for
    the operator's label; abort discards; label outside the labelling state is refused."""
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc.nodes.robot_driver import RobotDriver
    from rclpy.parameter import Parameter

    graph.add(RobotDriver(context=graph.context, parameter_overrides=[Parameter("use_sim_time", value=True)]))
    mgr = graph.add(FinetuneManager(context=graph.context, parameter_overrides=[
        Parameter("use_sim_time", value=True), Parameter("checkpoint", value=str(weak_checkpoint)),
        Parameter("out", value=str(tmp_path / "ft")), Parameter("backend", value="interbotix"),
        Parameter("max_episode_s", value=0.8), Parameter("episodes", value=1), Parameter("device", value="cpu"),
        Parameter("torch_threads", value=1)]))
    helper = graph.node("helper")
    events = helper.create_publisher(String, "/postbc/episode", 10)
    assert not call_service(helper, SetBool, "/finetune_manager/label", SetBool.Request(data=True)).success
    assert call_service(helper, Trigger, "/finetune_manager/start").success
    wait_for(lambda: mgr.status()["state"] == "waiting_start", 30, what="arm home, waiting for the operator")
    events.publish(String(data="start"))
    wait_for(lambda: mgr.status()["state"] == "running", 10, what="the episode to run")
    assert call_service(helper, Trigger, "/finetune_manager/abort").success  # discarded: nothing committed
    assert mgr.status()["state"] == "idle" and mgr.ft.replay.n_episodes == 0
    assert call_service(helper, Trigger, "/finetune_manager/start").success
    wait_for(lambda: mgr.status()["state"] == "waiting_start", 30, what="waiting for start again")
    events.publish(String(data="start"))
    wait_for(lambda: mgr.status()["state"] == "labelling", 30, what="the time limit, then the label prompt")
    events.publish(String(data="success"))  # teleop key 1
    wait_for(lambda: mgr.status()["state"] == "done", 60, what="update + checkpoint")
    with EpisodeStore.open(tmp_path / "ft" / "replay.zarr") as s:
        assert s.n_episodes == 1 and s.episode_meta(0)["success"] is True
        assert s.episode(0)["reward"][-1] == 1.0  # reward from the operator's label


def test_bad_parameters_fail_clearly(ros_context, tmp_path):
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc_core.errors import ConfigError, PostBCError
    from rclpy.parameter import Parameter

    with pytest.raises(ConfigError, match="checkpoint is required"):
        FinetuneManager(context=ros_context)
    with pytest.raises(ConfigError, match="algorithm='ppo'"):
        FinetuneManager(context=ros_context, parameter_overrides=[Parameter("checkpoint", value="x"),
                                                                  Parameter("algorithm", value="ppo")])
    with pytest.raises(ConfigError, match="algorithm='dppo' is not run by the finetune manager: DPPO is on-policy.*"
                                          "--set finetune_manager.algorithm=dsrl_sac"):
        FinetuneManager(context=ros_context, parameter_overrides=[Parameter("checkpoint", value="x"),
                                                                  Parameter("algorithm", value="dppo")])
    with pytest.raises(PostBCError, match="nope.safetensors"):
        FinetuneManager(context=ros_context, parameter_overrides=[
            Parameter("checkpoint", value=str(tmp_path / "nope.safetensors")), Parameter("out", value=str(tmp_path))])


def test_a_checkpoint_whose_action_cannot_drive_the_arm_is_refused_at_startup(ros_context, tmp_path):
    """A policy trained on another action key (here a 2-D "action") is refused when the manager starts, naming the
    key, instead of its actions being sent as joint targets."""
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.errors import ConfigError
    from postbc_core.policies.checkpoint import save_policy
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
    from rclpy.parameter import Parameter

    rng = np.random.default_rng(0)
    norm = LinearNormalizer()
    norm.fit({"joint_pos": rng.normal(size=(32, 6)).astype(np.float32),
              "action": rng.normal(size=(32, 2)).astype(np.float32)}, default_mode="gaussian")
    cfg = PolicyConfig(obs_shapes={"joint_pos": (6,)}, action_dim=2, n_obs_steps=1, action_horizon=4,
                       mlp_hidden=(16,), num_train_timesteps=10, num_inference_steps=3)
    policy = DiffusionPolicy(cfg, norm)
    policy.action_key = "action"
    ckpt = save_policy(policy, tmp_path / "toy.safetensors")
    with pytest.raises(ConfigError, match="policy action key 'action' cannot drive the WidowX"):
        FinetuneManager(context=ros_context, parameter_overrides=[
            Parameter("checkpoint", value=str(ckpt)), Parameter("out", value=str(tmp_path / "run")),
            Parameter("device", value="cpu")])


def test_refusals_name_only_the_managers_own_parameters(ros_context, weak_checkpoint, tmp_path):
    """A restart that cannot resume the run in `out` says which manager parameter to change: never a `postbc
    finetune` flag (--resume, --dsrl.utd, --out) or a setting the manager does not have."""
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc_core.errors import ConfigError
    from postbc_core.rl.finetuner import STATE_FILE
    from rclpy.parameter import Parameter

    out = tmp_path / "ft"
    base = {"checkpoint": str(weak_checkpoint), "out": str(out), "device": "cpu", "utd": 2, "backend": "sim"}

    def manager(**changes):
        return FinetuneManager(context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {**base, **changes}.items()])

    manager().destroy_node()  # the run (its episode-0 checkpoint)
    assert (out / STATE_FILE).exists()
    for changes, expected in [
        ({"utd": 3}, "resume: utd was 2, now 3; resume with the run's original settings (only episodes and device "
                     "may change) or start a new run with another out"),
        ({"backend": "interbotix"}, "resume: backend was 'sim', now 'interbotix'; resume with"),
        ({"resume": False}, f"{out} already holds a finetuning run; restart with resume:=true to continue it, or "
                            "choose another out"),
    ]:
        with pytest.raises(ConfigError) as e:
            manager(**changes)
        assert str(e.value).startswith(expected) and "--" not in str(e.value), str(e.value)
    manager().destroy_node()  # unchanged settings resume


def test_manager_accepts_the_sim_tasks_recommended_keys(ros_context, recommended_keys_policy, tmp_path):
    """A policy on lift_cube's recommended keys (object_pos, object_yaw_feat): on the sim backend the manager derives
    them from the driver's object poses; on the real arm nothing publishes them, and it says so."""
    from postbc.nodes.finetune_manager import FinetuneManager
    from postbc_core.errors import ConfigError
    from rclpy.parameter import Parameter

    params = [Parameter("checkpoint", value=str(recommended_keys_policy)), Parameter("task", value="lift_cube"),
              Parameter("device", value="cpu"), Parameter("episodes", value=1)]
    mgr = FinetuneManager(context=ros_context,
                          parameter_overrides=[*params, Parameter("out", value=str(tmp_path / "a"))])
    try:
        assert mgr.source.pose_keys == ["object_pos", "object_yaw_feat"] and mgr.status()["state"] == "idle"
    finally:
        mgr.destroy_node()
    with pytest.raises(ConfigError, match=r"\['object_pos', 'object_yaw_feat'\] that no topic provides"):
        FinetuneManager(context=ros_context, parameter_overrides=[
            *params, Parameter("out", value=str(tmp_path / "b")), Parameter("backend", value="interbotix")])


class _CountingLogger:
    """Stands in for a node's logger: counts calls per severity (rclpy's own logger only prints)."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __getattr__(self, severity):
        def log(msg, **kw):
            self.calls[severity] = self.calls.get(severity, 0) + 1
        return log


def test_unreachable_driver_is_reported_once_not_every_tick(ros_context, weak_checkpoint, tmp_path, monkeypatch):
    """A reset request in flight when the driver goes away: warn once, then wait quietly. A cancelled rclpy Future
    is not done() (Humble through Kilted), so a loop that only tests done() re-cancels and warns on every tick."""
    from postbc.nodes import finetune_manager as fm
    from rclpy.parameter import Parameter

    mgr = fm.FinetuneManager(context=ros_context, parameter_overrides=[
        Parameter("checkpoint", value=str(weak_checkpoint)), Parameter("out", value=str(tmp_path / "ft")),
        Parameter("auto_start", value=False), Parameter("device", value="cpu")])
    try:
        log = _CountingLogger()
        monkeypatch.setattr(mgr, "get_logger", lambda: log)
        monkeypatch.setattr(fm, "RESET_TIMEOUT_S", 0.0)  # every tick finds the request timed out
        ready = {"driver": True}
        monkeypatch.setattr(mgr._reset_cli, "service_is_ready", lambda: ready["driver"])
        with mgr._lock:
            mgr._begin_reset()
            mgr._request_reset()  # sent; no answer comes
            assert mgr._reset_future is not None
            ready["driver"] = False  # the driver is gone
            for _ in range(50):  # 5 s of 10 Hz ticks
                mgr._request_reset()
        assert log.calls.get("warning", 0) == 1, log.calls
    finally:
        mgr.destroy_node()


def test_a_failed_commit_puts_the_manager_in_error_instead_of_crashing(ros_context, weak_checkpoint, tmp_path,
                                                                     monkeypatch):
    """A full disk while an episode is committed (or its checkpoint written) happens on the label service or the
    tick: the manager goes to its error state and says what is kept, as a failed update does, instead of raising
    out of the ROS callback (which ends the node)."""
    import errno

    from postbc.nodes import finetune_manager as fm
    from postbc_core.errors import storage_error
    from rclpy.parameter import Parameter

    mgr = fm.FinetuneManager(context=ros_context, parameter_overrides=[
        Parameter("checkpoint", value=str(weak_checkpoint)), Parameter("out", value=str(tmp_path / "ft")),
        Parameter("auto_start", value=False), Parameter("device", value="cpu")])
    try:
        def full_disk(success):
            raise storage_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ft")),
                                f"writing {tmp_path / 'ft'}")

        monkeypatch.setattr(mgr.ft, "end_episode", full_disk)
        with mgr._lock:
            mgr.state = "labelling"
            mgr._end_episode(True)  # raised out of the callback before the fix
        status = mgr.status()
        assert status["state"] == "error", status
        assert "ending the episode failed" in mgr.error and "No space left on device" in mgr.error, mgr.error
        assert mgr._work is None  # no update thread started for an episode that was not committed
    finally:
        mgr.destroy_node()
