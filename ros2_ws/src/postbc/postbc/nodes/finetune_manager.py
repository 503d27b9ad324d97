"""finetune_manager: on-robot RL finetuning of a pretrained diffusion policy (DSRL-SAC, DSRL-NA or Best-of-N),
episode by episode, around postbc_core.rl.finetuner.Finetuner (the same loop `postbc finetune` runs in the sim).

Episode state machine (status JSON on /postbc/finetune/status, ~2 Hz):
  idle ──~/start──> resetting ──> running ──(success | time limit | operator stop)──> labelling ──> updating ──┐
    ^                   ^                                                                                      │
    └──~/abort (episode discarded)           paused <──~/pause (after the current episode) / e-stop <──────────┘
  resetting  sim: the driver's ~/reset (a new seeded scene); real arm: the driver's ~/go_home, then the operator
             resets the scene and presses start (teleop's Enter / START, /postbc/episode "start", or ~/start).
  running    every control tick (control_hz, node clock = sim time in sim): observation from the topics
             (observation.py: the keys `postbc eval` feeds the policy) -> Finetuner.act -> one JointTrajectory point
             due now on /postbc/command (stamped with the observation's /joint_states stamp); the previous action's
             reward is 1 when /postbc/sim/success holds (sim, sparse, terminal) and 0 otherwise.
  labelling  sim: the success detector's verdict; real arm: wait for the operator (teleop keys 1 / 0, /postbc/episode
             "success" / "failure", or ~/label true|false). With the real arm the reward comes from the label
             (FinetuneConfig.reward_from_label): 1 and terminal on the last step of a success.
  updating   Finetuner.end_episode (commit to <out>/replay.zarr) -> update() (the gradient steps owed, on a worker
             thread, GPU when present) -> save() (full checkpoint); then the next episode, or done at the budget.
Crash safety: every completed episode is committed and checkpointed at once (before its updates); a restarted
manager with resume:=true (default) continues after the last committed episode, first redoing its updates when a stop
cut them short (an episode interrupted mid-way is dropped by the store's recovery). Ctrl-C logs what the stop costs.
E-stop (/postbc/estop true) or ~/abort discards the running episode. Metrics: <out>/metrics.jsonl + TensorBoard.

Why the manager runs the frozen diffusion policy itself instead of steering the policy node through its noise topic:
a DSRL transition is (s, w, chunk, r, s'); computing w, decoding the chunk and executing it in one process keeps
every replay transition exact (two nodes would race on which noise met which observation).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from postbc_core.robots.actions import EEDeltaExecutor
from postbc_core.errors import ConfigError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from postbc import topics
from postbc.conversions import trajectory_msg
from postbc.node_main import main as node_main
from postbc.observation import ObservationSource
from postbc.params import declare

BACKENDS = ("sim", "interbotix")
ALGORITHMS = ("dsrl_sac", "dsrl_na", "best_of_n")
# DPPO (postbc finetune --algorithm dppo) is sim-only: said at startup rather than run badly on the arm.
DPPO_REFUSAL = (
    "algorithm='dppo' is not run by the finetune manager: DPPO is on-policy PPO, each update needs a fresh batch of "
    "episodes of the current policy (the reference collects ~15000 decisions from 50 parallel environments per "
    "iteration for 300 iterations; the measured lift_cube runs here use 16 episodes per update and still need "
    "hundreds of episodes), and uses each batch once, while one real arm with operator resets and labels collects "
    "tens of episodes an hour; it also moves the policy's own weights, so every update changes what the arm does "
    "next, unlike DSRL / Best-of-N which keep the deployed policy frozen. Finetune on the robot with this node's "
    "algorithm parameter set to dsrl_sac, dsrl_na or best_of_n (in the params_file, or --set "
    "finetune_manager.algorithm=dsrl_sac), or run DPPO in the twin (postbc finetune --algorithm dppo) and deploy "
    "its <out>/policy.safetensors with the policy node")
RESET_TIMEOUT_S = 30.0  # wall seconds before a reset / go-home request is sent again (go_home takes a few seconds)
STATES = ("idle", "resetting", "waiting_start", "running", "labelling", "updating", "paused", "done", "error")
# The FinetuneConfig fields this node sets, by the parameter that sets each: the Finetuner's refusals (a resume with
# changed settings, an existing run with resume:=false, a budget below the episodes done) name these, never a
# `postbc finetune` flag. Fields absent here keep postbc_core's defaults and are named as not settable.
CONFIG_PARAMS = {"checkpoint": "checkpoint", "task": "task", "algorithm": "algorithm", "episodes": "episodes",
                 "out": "out", "seed": "seed", "resume": "resume", "device": "device",
                 "dsrl.warmup_episodes": "warmup_episodes", "bon.rollouts": "warmup_episodes", "dsrl.utd": "utd",
                 "reward_from_label": "backend"}


@dataclass
class Params:
    checkpoint: str = ""
    """Pretrained policy checkpoint (.safetensors or a `postbc train` run directory); stays frozen. Required."""
    out: str = "runs/finetune"
    """Run directory: replay.zarr (every episode), finetune_state.safetensors, metrics.jsonl, tb/."""
    algorithm: str = "dsrl_sac"
    """dsrl_sac | dsrl_na | best_of_n (postbc_core.rl); dppo is refused here (DPPO_REFUSAL says why)."""
    episodes: int = 50
    """Training episode budget (warm-up episodes with the pretrained policy included)."""
    backend: str = "sim"
    """"sim": reset and success from the sim driver; "interbotix": operator resets the scene and labels episodes."""
    task: str = "lift_cube"
    """Task name stored with the episodes (sim: must be the driver's task; the policy's object keys, e.g. object_pos,
    object_yaw_feat, are computed from /postbc/sim/object_poses as that task computes them)."""
    control_hz: float = 10.0
    """Control rate (Hz): one action per tick (the driver's rate)."""
    max_episode_s: float = 0.0
    """Episode time limit (s, node clock); 0 = the sim task's max_steps / control_hz (sim) or 60 s (real arm)."""
    seed: int = 0
    """Seeds the agent and its sampling."""
    device: str = "auto"
    """Torch device for the policy and the agent: auto (CUDA when present), cpu, cuda, cuda:N."""
    resume: bool = True
    """Continue the run in `out` when it holds one (after the last completed episode); false refuses an existing run."""
    auto_start: bool = False
    """Start episodes without waiting for ~/start (sim experiments)."""
    warmup_episodes: int = -1
    """DSRL: episodes with the pretrained policy before learning starts (-1 = postbc_core's default)."""
    utd: int = 0
    """DSRL: gradient steps per collected transition (0 = postbc_core's default, DSRL's 20)."""
    torch_threads: int = 0
    """CPU intra-op threads for the updates (0 = torch's default; 1 avoids spin-waiting on a busy 2-core CPU)."""
    cameras: tuple[str, ...] = ()
    """Cameras feeding the policy's <camera>_rgb keys (empty: those the keys name)."""
    codec: str = ""
    """Camera codec of replay.zarr's <camera>_rgb keys: raw, jpeg, jpeg:Q, jpegxl-lossless or per key
    (front_rgb=jpeg); empty: raw for a new run, the replay store's own when resuming."""
    status_hz: float = 2.0
    """Rate (Hz, steady clock) of /postbc/finetune/status."""

    def __post_init__(self):
        if not self.checkpoint:
            raise ConfigError("checkpoint is required: checkpoint:=<policy .safetensors | postbc train run dir>")
        if self.algorithm == "dppo":
            raise ConfigError(DPPO_REFUSAL)
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm={self.algorithm!r}: choose one of {ALGORITHMS}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: choose one of {BACKENDS}")
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes}: give a budget of at least 1 episode")
        if not 0 < self.control_hz <= 50:
            raise ConfigError(f"control_hz={self.control_hz}: use (0, 50] Hz")
        if self.utd < 0 or self.torch_threads < 0:
            raise ConfigError(f"utd={self.utd} and torch_threads={self.torch_threads} must be >= 0 (0 = default)")
        if self.max_episode_s < 0 or self.status_hz <= 0:
            raise ConfigError(f"max_episode_s={self.max_episode_s} must be >= 0 and status_hz={self.status_hz} > 0")


class FinetuneManager(Node):
    def __init__(self, node_name: str = "finetune_manager", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace, parameter_overrides=parameter_overrides or [])
        self.ft = None
        try:
            self.params = p = declare(self, Params)
            self.ft = self._make_finetuner(p)
            self.ft.noise_policy.spec.check_robot()  # a checkpoint whose action cannot drive the arm: refused here
            self.sim = p.backend == "sim"
            # sim: the task's state keys from /postbc/sim/object_poses (the driver runs p.task)
            self.source = ObservationSource(self, self.ft.policy.config.obs_shapes, p.cameras,
                                            p.task if self.sim else "")
            self.dt = 1.0 / p.control_hz
            self.max_steps = self._max_steps(p)
            self._lock = threading.RLock()
            self.state = "idle"
            self.error = ""
            self._pause_requested = False
            self._steps = 0
            self._acted = False
            self._success = False  # latest /postbc/sim/success
            self._label: bool | None = None
            self._ee = EEDeltaExecutor()  # the episode's chain of EE-delta targets
            self._reset_future = None
            self._reset_sent = 0.0
            self._stop = threading.Event()
            self._work: threading.Thread | None = None
            self.last_update: dict = {}
            self._cmd_pub = self.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
            self._status_pub = self.create_publisher(String, topics.FINETUNE_STATUS, topics.STATUS_QOS)
            self.create_subscription(Bool, topics.SUCCESS, self._on_success, topics.STATE_QOS)
            self.create_subscription(Bool, topics.ESTOP, self._on_estop, topics.LATCHED_QOS)
            self.create_subscription(String, topics.EPISODE_EVENTS, self._on_event, 10)
            services = ReentrantCallbackGroup()
            self.create_service(Trigger, "~/start", self._srv_start, callback_group=services)
            self.create_service(Trigger, "~/pause", self._srv_pause, callback_group=services)
            self.create_service(Trigger, "~/abort", self._srv_abort, callback_group=services)
            self.create_service(SetBool, "~/label", self._srv_label, callback_group=services)
            self._client_group = MutuallyExclusiveCallbackGroup()
            self._reset_cli = self.create_client(Trigger, "/robot_driver/reset", callback_group=self._client_group)
            self._home_cli = self.create_client(Trigger, "/robot_driver/go_home", callback_group=self._client_group)
            self.create_timer(self.dt, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
            self.create_timer(1.0 / p.status_hz, self.publish_status, callback_group=MutuallyExclusiveCallbackGroup(),
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
        except BaseException:
            # A manager that failed to start leaves nothing behind: its finetuner closed, the node out of the context
            # (a lingering half-built node would be destroyed, and fail, when the context shuts down).
            if self.ft is not None:
                self.ft.close()
            Node.destroy_node(self)
            raise
        done = self.ft.episodes_done
        if self.ft.update_pending:  # a stop cut the last committed episode's updates short: they come first
            self.state = "updating"
            self._work = threading.Thread(target=self._update, name="finetune_update", daemon=True,
                                          kwargs={"then_reset": p.auto_start})
        self.get_logger().info(
            f"finetune manager up: {p.algorithm} on {p.checkpoint} -> {p.out} ({done}/{p.episodes} episodes done), "
            f"{'sim' if self.sim else 'real arm: operator resets and labels'}, episode limit {self.max_steps} steps"
            + ("" if p.auto_start else "; call ~/start (or press start) to begin"))
        if self._work is not None:
            self._work.start()  # its end goes on to the next episode (auto_start) or waits for ~/start
        elif done >= p.episodes:
            self.state = "done"
        elif p.auto_start:
            self._begin_reset()

    # -- setup ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _make_finetuner(p: Params):
        from postbc_core.rl.finetune_config import FinetuneConfig, SettingNames
        from postbc_core.rl.finetuner import STATE_FILE, Finetuner

        out = Path(p.out)
        resume = p.resume and (out / STATE_FILE).exists()
        cfg = FinetuneConfig(checkpoint=Path(p.checkpoint), task=p.task, algorithm=p.algorithm, episodes=p.episodes,
                             out=out, seed=p.seed, eval_episodes=0, resume=resume, device=p.device,
                             reward_from_label=p.backend != "sim", codec=p.codec)
        import dataclasses

        if p.warmup_episodes >= 0:
            if p.algorithm == "best_of_n":
                cfg.bon = dataclasses.replace(cfg.bon, rollouts=p.warmup_episodes)
            else:
                cfg.dsrl = dataclasses.replace(cfg.dsrl, warmup_episodes=p.warmup_episodes)
        if p.utd > 0 and p.algorithm != "best_of_n":
            cfg.dsrl = dataclasses.replace(cfg.dsrl, utd=p.utd)
        if p.torch_threads > 0:
            import torch

            torch.set_num_threads(p.torch_threads)
        names = SettingNames(CONFIG_PARAMS, {"reward_from_label": lambda v: "interbotix" if v else "sim"})
        return Finetuner(cfg, names=names)

    def _max_steps(self, p: Params) -> int:
        if p.max_episode_s > 0:
            return max(1, round(p.max_episode_s * p.control_hz))
        if self.sim:
            from postbc_core.sim.registry import TASKS

            return int(TASKS[p.task].config_cls().max_steps) if p.task in TASKS else 80
        return round(60.0 * p.control_hz)

    # -- inputs ---------------------------------------------------------------------------------------------------
    def _on_success(self, msg: Bool) -> None:
        self._success = bool(msg.data)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                if self.state in ("running", "labelling", "resetting", "waiting_start"):
                    self.ft.discard_episode()
                    self.get_logger().warning("e-stop: episode discarded; finetuning paused (~/start resumes)")
                    self.state = "paused"

    def _on_event(self, msg: String) -> None:
        ev = msg.data.strip().lower()
        if ev == "start":
            self._start()
        elif ev in ("success", "failure"):
            self._give_label(ev == "success")
        elif ev == "discard":
            self._abort("operator discard")
        elif ev == "stop":
            with self._lock:
                if self.state == "running":
                    self._finish_running("operator stop")

    # -- services -------------------------------------------------------------------------------------------------
    def _srv_start(self, req, resp):
        resp.success, resp.message = self._start()
        return resp

    def _srv_pause(self, req, resp):
        with self._lock:
            self._pause_requested = True
            resp.success, resp.message = True, f"pausing after the current episode (state {self.state})"
        return resp

    def _srv_abort(self, req, resp):
        resp.success, resp.message = self._abort("~/abort")
        return resp

    def _srv_label(self, req, resp):
        resp.success, resp.message = self._give_label(bool(req.data))
        return resp

    def _start(self) -> tuple[bool, str]:
        with self._lock:
            self._pause_requested = False
            if self.state in ("idle", "paused"):
                self._begin_reset()
                return True, "starting an episode"
            if self.state == "waiting_start":
                self._begin_episode()
                return True, "episode started"
            return False, f"cannot start in state {self.state}"

    def _abort(self, why: str) -> tuple[bool, str]:
        with self._lock:
            if self.state not in ("running", "labelling", "resetting", "waiting_start"):
                return False, f"no episode to abort (state {self.state})"
            self.ft.discard_episode()
            self.state = "idle"
            self.get_logger().warning(f"{why}: episode discarded (replay and counters unchanged)")
            return True, "episode discarded"

    def _give_label(self, success: bool) -> tuple[bool, str]:
        with self._lock:
            if self.state != "labelling" or self.sim:
                why = ", the sim labels its episodes" if self.sim else ""
                return False, f"no episode awaiting a label (state {self.state}{why})"
            self._label = success
            self._end_episode(success)
            return True, f"labelled {'success' if success else 'failure'}"

    # -- episode flow ---------------------------------------------------------------------------------------------
    def _begin_reset(self) -> None:
        """Lock held. Sim: new scene from the driver; real arm: home, then wait for the operator's start. The call
        itself is made by the tick once the driver's service is discovered (a request sent before that is lost)."""
        self.state = "resetting"
        self._reset_future = None

    def _request_reset(self) -> None:
        """Lock held, state resetting: (re)send the reset / go-home request when none is in flight (or it timed out)."""
        cli = self._reset_cli if self.sim else self._home_cli
        fut = self._reset_future
        # A cancelled rclpy Future is not done() (Humble through Kilted): test both, and forget a cancelled
        # request, or every later tick would find it "pending", time it out and warn again.
        if fut is not None and not (fut.done() or fut.cancelled()):
            if time.monotonic() - self._reset_sent < RESET_TIMEOUT_S:
                return
            self.get_logger().warning(f"{cli.srv_name}: no answer in {RESET_TIMEOUT_S:.0f} s, asking again")
            fut.cancel()
            self._reset_future = None
        if not cli.service_is_ready():
            self.get_logger().info(f"waiting for {cli.srv_name} (is the robot_driver running?)",
                                   throttle_duration_sec=5.0)
            return
        self._reset_future, self._reset_sent = cli.call_async(Trigger.Request()), time.monotonic()
        self._reset_future.add_done_callback(self._after_reset)

    def _after_reset(self, fut) -> None:
        if fut.cancelled():
            return
        try:
            res = fut.result()
            ok, msg = bool(res.success), res.message
        except Exception as e:  # noqa: BLE001 - report, stay recoverable
            ok, msg = False, repr(e)
        with self._lock:
            if self.state != "resetting":
                return
            if not ok:
                self.state, self.error = "paused", f"reset failed: {msg}"
                self.get_logger().error(f"{self.error}; fix and call ~/start")
                return
            if self.sim:
                self._begin_episode()
            else:
                self.state = "waiting_start"
                self.get_logger().info("arm home: reset the scene, then press start (teleop Enter / START)")

    def _begin_episode(self) -> None:
        self.ft.start_episode()
        self._ee.reset()  # the episode's first delta applies to the measured joints
        self._steps, self._acted, self._success, self._label = 0, False, False, None
        self.state = "running"

    def _tick(self) -> None:
        with self._lock:
            if self.state == "resetting":
                self._request_reset()
                return
            if self.state != "running":
                return
            step = self.source.step()
            if step is None:
                self.get_logger().info(f"waiting for {self.source.missing()}", throttle_duration_sec=5.0)
                return
            success = self.sim and self._success
            if self._acted:  # the previous action's outcome, seen at this tick
                self.ft.observe(1.0 if success else 0.0, bool(success))
                self._steps += 1
                if success or self._steps >= self.max_steps:
                    self._finish_running("success" if success else "time limit")
                    return
            a = self.ft.act(step.obs)
            # the policy's action (7,) -> joint target (6,) rad and gripper m: EE deltas chain from the previous
            # step's target given this step's measured joints (robots.actions.EEDeltaExecutor: the twin's rule)
            q, g = self._ee.step(a, self.ft.noise_policy.spec.action_mode, step.joint_pos)
            self._cmd_pub.publish(trajectory_msg(q, g, step.stamp))
            self._acted = True

    def _finish_running(self, why: str) -> None:
        """Lock held: the episode's actions are over; label it (sim: now) or wait for the operator."""
        if not self._acted:
            self.ft.discard_episode()
            self.state = "idle"
            return
        if self._steps == 0:  # stopped before the first outcome: count the last action as a step without reward
            self.ft.observe(0.0, False)
            self._steps = 1
        self.get_logger().info(f"episode {self.ft.episodes_done} ended ({why}) after {self._steps} steps")
        self.state = "labelling"
        if self.sim:
            self._end_episode(why == "success")
        else:
            self.get_logger().info("label the episode: teleop 1 (success) / 0 (failure) or ~/label true|false")

    def _end_episode(self, success: bool) -> None:
        """Lock held: commit the episode, then update + checkpoint on the worker thread."""
        try:
            summary = self.ft.end_episode(success)  # committed and checkpointed: a stop from here keeps it
        except Exception as e:  # noqa: BLE001 - e.g. a full disk: stop in the error state, never crash the node
            self.state, self.error = "error", f"ending the episode failed: {e}"
            self.get_logger().error(f"{self.error}; committed episodes and the last checkpoint are intact (an "
                                    "episode committed without its checkpoint is dropped on restart with "
                                    "resume:=true)")
            return
        self.state = "updating"
        n = self.ft.updates_owed
        self.get_logger().info(f"episode {summary['episode']} ({summary['mode']}): "
                               f"{'success' if success else 'failure'}, {summary['length']} steps; committed"
                               + (f", {n} updates now (a stop during them keeps the episode and redoes them on "
                                  "restart)" if n else ""))
        self._work = threading.Thread(target=self._update, name="finetune_update", daemon=True)
        self._work.start()

    def _update(self, then_reset: bool = True) -> None:
        """Worker thread: the committed episode's updates, then the checkpoint; then the next episode (then_reset)
        or idle until ~/start."""
        try:
            metrics = self.ft.update(stop=self._stop.is_set)
            if metrics.get("interrupted"):  # shutting down: the commit's checkpoint is the resume point
                return
            self.ft.save()
        except Exception as e:  # noqa: BLE001 - the run stays resumable from the last checkpoint
            with self._lock:
                self.state, self.error = "error", f"update failed: {e!r}"
            self.get_logger().error(f"{self.error}; the last checkpoint is intact (restart with resume:=true)")
            return
        with self._lock:
            self.last_update = {k: metrics[k] for k in ("updates", "updates_per_s") if k in metrics}
            if self._stop.is_set():
                return
            if self.ft.episodes_done >= self.params.episodes:
                self.state = "done"
                self.get_logger().info(f"finetuning done: {self.ft.episodes_done} episodes, "
                                       f"{self.ft.updates} updates; checkpoint {Path(self.params.out)}")
            elif self._pause_requested:
                self.state = "paused"
            elif then_reset:
                self._begin_reset()
            else:
                self.state = "idle"

    # -- status ---------------------------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            hist = self.ft.history
            succ = [bool(h["success"]) for h in hist]
            recent = succ[-10:]
            return {"state": self.state, "episode": self.ft.episodes_done, "budget": self.params.episodes,
                    "mode": self.ft.mode, "steps": self._steps, "successes": int(sum(succ)),
                    "success_rate": (sum(succ) / len(succ)) if succ else None,
                    "success_rate_last10": (sum(recent) / len(recent)) if recent else None,
                    "episode_success": succ,  # per finished episode, in order: the console's success curve
                    "updates": self.ft.updates, "replay_transitions": len(self.ft.replay),
                    "last_update": self.last_update, "paused_requested": self._pause_requested,
                    "error": self.error, "out": self.params.out}

    def publish_status(self) -> None:
        self._status_pub.publish(String(data=json.dumps(self.status())))

    def destroy_node(self):
        self._stop.set()
        if self._work is not None:
            self._work.join()  # an update in flight stops at its next gradient step (resume: the last checkpoint)
        with self._lock:
            if self.state != "done":
                self.get_logger().warning(f"stopping now: {self.ft.stop_note()}")
            self.ft.close()  # a running episode is discarded (never committed half)
        super().destroy_node()


def main(args=None):
    node_main(FinetuneManager, args)


if __name__ == "__main__":
    raise SystemExit(main())
