"""policy: a diffusion policy checkpoint (postbc_core.policies.checkpoint.load_policy) closing the loop through the
graph, inference off the control thread.

Control tick (control_hz, node clock, so sim time in sim): snapshot the observation from the latest messages
(joint_pos, joint_vel, joint_effort, gripper_pos from /joint_states; ee_pose = FK of joint_pos; the sim
task's state keys, object_pose, object_pos, object_yaw_feat, bowl_pos, target_pos, ..., from /postbc/sim/object_poses
(postbc_core.sim.registry.task_state_keys of the `task` parameter; object_pose = poses[0] alone without one);
<camera>_rgb from /<camera>/image_raw resized to the policy's shape), append it
to postbc_core's PolicyRunner history (To steps at the control rate, first observation repeated after an episode
start: the padding `postbc eval` uses), and when a plan is due hand the stacked history to the inference worker
through a one-slot mailbox (the newest request replaces one not yet started).

Worker thread: predict_action -> chunk (Ta, Da) -> drop it (logged, counted) when now - observation stamp >
max_action_age -> cmd_joint_pos policies: the chunk's joint targets -> /postbc/command with header.stamp = the
observation's stamp and point i due at i / control_hz (below). cmd_ee_delta policies: the chunk becomes the plan of
the ticks it covers (postbc_core.control.runner.ChunkStepper), and every control tick converts ITS action with the
joints measured at that tick through one postbc_core.robots.actions.EEDeltaExecutor (the delta applies to the previous
tick's target, cut back to the measured joints as the twin's task cuts it: the reference rule of `postbc eval`, so the
same chunk and measured joints give the twin's targets) and publishes that single point, due now, stamped with the
tick's observation; the schedule below decides which chunk covers which tick in the same way:
  receding           PolicyRunner's schedule (n_action_steps actions of each chunk, then replan) made latency-aware:
                     when a chunk is published its first L points are already due (L = 1 + floor(age / dt), the
                     median over recent chunks; usually 1, because the observation is sampled at a control step and
                     the driver has run that step before inference ends). The driver skips points whose time has
                     passed (diffusion_policy's real-robot rule), so the node publishes min(n_action_steps + L, Ta)
                     points and plans the next chunk L ticks before they run out: every published point from L on
                     runs at its own time, none is held, n_action_steps actions per chunk (n_action_steps - L when
                     n_action_steps + L > Ta, e.g. the default n_action_steps = Ta).
  temporal_ensemble  plan every tick; publish one point: the ACT-weighted mean of every stored prediction for the
                     first control step still ahead (runner.TemporalEnsembler, weights exp(-k i), i = 0 oldest).
Diagnostics JSON on /postbc/policy/diagnostics (~1 Hz): inference ms and obs->command ms (observation stamp to
publish, node clock; EE-delta policies: to the chunk's plan being ready) p50/p99, chunks published (EE-delta: planned),
ticks_without_action (EE-delta), stale drops, device, and per camera the frames received / used /
dropped / refused / pending (ObservationSource.frames: a 30 Hz camera under a 10 Hz control rate uses about one frame
in three). ~/enable (SetBool): false publishes nothing (the driver's watchdog holds); true starts afresh (history and
ensemble cleared, as at an episode start).
Shape legend: To obs steps, Ta action steps, Da action dim (7).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from postbc_core.robots.actions import joint_targets
from postbc_core.control.runner import ChunkStepper, PolicyRunner, TemporalEnsembler
from postbc_core.errors import ConfigError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from postbc import topics
from postbc.conversions import trajectory_msg
from postbc.node_main import main as node_main
from postbc.observation import ObservationSource
from postbc.params import declare

EXECUTIONS = ("receding", "temporal_ensemble")
LATENCY_WINDOW = 500  # samples kept for the diagnostics percentiles
LEAD_WINDOW = 9  # recent chunks whose median lead (points already due at publish) sets the receding schedule


@dataclass
class Params:
    checkpoint: str = ""
    """Policy checkpoint: the .safetensors file written by `postbc train` or its run directory (required)."""
    device: str = "auto"
    """Torch device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N"."""
    control_hz: float = 10.0
    """Control rate (Hz): observations are sampled and chunk points spaced at this rate (the driver's rate)."""
    execution: str = "receding"
    """"receding" (execute n_action_steps of each chunk, then replan) or "temporal_ensemble" (ACT: a chunk every
    tick, overlapping predictions averaged)."""
    n_action_steps: int = 0
    """receding: actions of each chunk executed before replanning (0 = the policy's Ta)."""
    ensemble_decay: float = 0.01
    """temporal_ensemble: k in w_i = exp(-k * i), i = 0 the oldest prediction (ACT's value 0.01)."""
    max_action_age: float = 0.5
    """A chunk computed from an observation older than this (s, node clock) when inference ends is dropped;
    also the freshness limit of noise_topic messages."""
    cameras: tuple[str, ...] = ()
    """Cameras whose /<camera>/image_raw feed `<camera>_rgb` keys (empty: the cameras the policy's keys name)."""
    task: str = ""
    """Sim backend: the driver's task (postbc_core.sim.registry name); the policy's object keys (object_pos,
    object_yaw_feat, bowl_pos, target_pos, ...: the task's recommended_obs_keys) are computed from
    /postbc/sim/object_poses as the task computes them. "" (real arm) = object_pose only."""
    noise_topic: str = ""
    """std_msgs/Float32MultiArray of Ta*Da initial DDIM noise for the next chunks (DSRL); "" = off (N(0, I))."""
    enabled_on_start: bool = True
    """Act as soon as observations arrive (false: wait for ~/enable true)."""
    inference_delay: float = 0.0
    """Extra wall seconds slept before each prediction (tests / what-if studies of a slower model); 0 = off."""

    def __post_init__(self):
        if not self.checkpoint:
            raise ConfigError("checkpoint is required: pass checkpoint:=<run dir or policy .safetensors> (written by "
                              "`postbc train`)")
        if self.execution not in EXECUTIONS:
            raise ConfigError(f"execution={self.execution!r} is unknown; choose one of {', '.join(EXECUTIONS)}")
        if not self.control_hz > 0:
            raise ConfigError(f"control_hz={self.control_hz} must be > 0 Hz")
        if self.n_action_steps < 0:
            raise ConfigError(f"n_action_steps={self.n_action_steps} must be >= 0 (0 = the policy's Ta)")
        if not self.ensemble_decay >= 0:
            raise ConfigError(f"ensemble_decay={self.ensemble_decay} must be >= 0")
        if not self.max_action_age > 0:
            raise ConfigError(f"max_action_age={self.max_action_age} must be > 0 s")
        if not self.inference_delay >= 0:
            raise ConfigError(f"inference_delay={self.inference_delay} must be >= 0 s")


def percentile_summary(samples) -> dict:
    """Milliseconds p50/p99 of samples in seconds (None when empty)."""
    if not samples:
        return {"p50": None, "p99": None, "n": 0}
    a = np.asarray(samples) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "n": int(a.size)}


@dataclass
class _Request:
    epoch: int
    tick: int  # control tick of the observation (the chunk's first step)
    stamp: float  # observation stamp (s, node clock)
    obs: dict  # {key: (1, To, *shape)}
    q: np.ndarray  # measured joints (6,) at the observation
    noise: np.ndarray | None  # (1, Ta, Da)
    n_points: int  # receding: chunk points to publish


class Policy(Node):
    def __init__(self, node_name: str = "policy", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        try:
            self._load()
        except BaseException:
            Node.destroy_node(self)  # a node that failed to start leaves nothing behind in the context
            raise
        p = self.params

        self._lock = threading.Lock()
        self._noise: tuple[float, np.ndarray] | None = None  # (receive time, (Ta, Da))
        self._enabled = bool(p.enabled_on_start)
        self._epoch = 0
        self._tick_no = 0
        self._next_plan = 0
        self._mailbox: _Request | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        # chunks_published: EE-delta policies count the chunks planned (their points go out one per tick);
        # ticks_without_action: EE-delta ticks no chunk covered (the driver held the last target)
        self.counts = {"ticks": 0, "requests": 0, "superseded": 0, "chunks_published": 0, "stale_drops": 0,
                       "errors": 0, "ticks_without_action": 0}
        self._inference_s: deque = deque(maxlen=LATENCY_WINDOW)
        self._latency_s: deque = deque(maxlen=LATENCY_WINDOW)
        self._leads: deque = deque([1], maxlen=LEAD_WINDOW)  # points already due at publish, recent chunks

        keys = self.runner.obs_shapes
        self._cmd_pub = self.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
        self._diag_pub = self.create_publisher(String, topics.POLICY_DIAGNOSTICS, topics.STATUS_QOS)
        if p.noise_topic:
            self.create_subscription(Float32MultiArray, p.noise_topic, self._on_noise, 10)
        self.create_service(SetBool, "~/enable", self._srv_enable)
        self.create_timer(self.dt, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="policy_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy up: {p.checkpoint} on {self.device}, keys {list(keys)}, action {self.runner.action_key} "
            f"(To={self.runner.n_obs_steps}, Ta={self.Ta}), {p.execution}"
            + (f" n_action_steps={self.runner.n_action_steps}" if p.execution == "receding" else
               f" decay={p.ensemble_decay}") + f", {'enabled' if self._enabled else 'disabled (call ~/enable)'}")

    def _load(self):
        """Parameters, checkpoint, runner; every start-up error (ConfigError, CheckpointError) is raised here."""
        from postbc_core.policies.checkpoint import load_policy, resolve_device

        self.params = p = declare(self, Params)
        self.device = str(resolve_device(p.device))
        self.policy = load_policy(p.checkpoint, device=self.device)  # CheckpointError names the path and the fix
        self.runner = PolicyRunner(self.policy, num_envs=1, n_action_steps=p.n_action_steps or None)
        self.dt = 1.0 / p.control_hz
        self.Ta, self.Da = self.runner.action_horizon, self.policy.config.action_dim
        self.ensembler = TemporalEnsembler(self.Ta, p.ensemble_decay)
        # EE-delta policies execute one action per tick against that tick's measured joints (module docstring)
        self.stepwise = self.runner.action_mode == "ee_delta"
        self.stepper = ChunkStepper(self.runner.action_mode)
        # subscriptions for the policy's keys; ConfigError naming any key no topic provides
        self.source = ObservationSource(self, self.runner.obs_shapes, p.cameras, p.task)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs -------------------------------------------------------------------------------------------------
    def _on_noise(self, msg: Float32MultiArray):
        a = np.asarray(msg.data, np.float32)
        if a.size != self.Ta * self.Da or not np.all(np.isfinite(a)):
            self.get_logger().error(f"{self.params.noise_topic}: {a.size} values (finite: {bool(np.isfinite(a).all())})"
                                    f"; need {self.Ta * self.Da} finite values (Ta={self.Ta} x Da={self.Da}); ignored",
                                    throttle_duration_sec=2.0)
            return
        with self._lock:
            self._noise = (self.now(), a.reshape(self.Ta, self.Da))

    def _srv_enable(self, req, resp):
        with self._lock:
            self._enabled = bool(req.data)
            self._epoch += 1  # chunks in flight belong to the previous run: dropped
            self.runner.reset()
            self.ensembler.reset()
            self.stepper.reset()
            self._next_plan = self._tick_no
        resp.success = True
        resp.message = "enabled (history cleared)" if req.data else "disabled: publishing nothing"
        self.get_logger().info(f"~/enable {req.data}: {resp.message}")
        return resp

    # -- control tick -------------------------------------------------------------------------------------------
    def observation(self) -> tuple[dict, float, np.ndarray] | None:
        """The current step's observation {key: (1, *shape)}, its stamp and the measured joints, or None while a
        source has not published yet (observation.py: the keys `postbc eval` feeds the policy)."""
        step = self.source.step()
        if step is None:
            return None
        return {k: v[None] for k, v in step.obs.items()}, step.stamp, step.joint_pos

    def _tick(self):
        if not self._enabled:
            return
        snap = self.observation()
        if snap is None:
            self.get_logger().info(f"waiting for {self.source.missing()}", throttle_duration_sec=5.0)
            return
        obs, stamp, q = snap
        p = self.params
        with self._lock:
            if not self._enabled:
                return
            self.runner.observe(obs)
            tick = self._tick_no
            self._tick_no += 1
            self.counts["ticks"] += 1
            req = None
            if p.execution != "receding" or tick >= self._next_plan:
                n_points = 1
                if p.execution == "receding":
                    lead = self.lead_ticks()
                    n_points = min(self.runner.n_action_steps + lead, self.Ta)
                    self._next_plan = tick + max(1, n_points - lead)
                noise = None
                if self._noise is not None and self.now() - self._noise[0] <= p.max_action_age:
                    noise = self._noise[1][None]
                req = _Request(self._epoch, tick, stamp, self.runner.stacked_history(), q, noise, n_points)
            if self.stepwise:
                self._step_command(tick, stamp, q)
        if req is None:
            return
        with self._cond:
            if self._mailbox is not None:
                self.counts["superseded"] += 1
            self._mailbox = req
            self.counts["requests"] += 1
            self._cond.notify()

    def _step_command(self, tick: int, stamp: float, q: np.ndarray) -> None:
        """Lock held, EE-delta policies: convert and publish the action planned for `tick` (q: its measured joints)."""
        action = self.ensembler.action(tick) if self.params.execution == "temporal_ensemble" else None
        if self.params.execution == "temporal_ensemble" and action is None:
            cmd = None
        else:
            cmd = self.stepper.command(tick, q, action)
        if cmd is None:
            self.counts["ticks_without_action"] += 1
            return
        self._cmd_pub.publish(trajectory_msg(cmd[0], cmd[1], stamp))  # one point, due now

    # -- inference worker ---------------------------------------------------------------------------------------
    def _work(self):
        while not self._stop.is_set():
            with self._cond:
                while self._mailbox is None and not self._stop.is_set():
                    self._cond.wait(0.1)
                req, self._mailbox = self._mailbox, None
            if req is None:
                continue
            try:
                self._infer(req)
            except Exception as e:  # noqa: BLE001 - keep serving; the driver's watchdog holds meanwhile
                self.counts["errors"] += 1
                self.get_logger().error(f"inference failed: {e!r}", throttle_duration_sec=2.0)

    def _infer(self, req: _Request):
        p, log = self.params, self.get_logger()
        if p.inference_delay:
            time.sleep(p.inference_delay)
        t0 = time.perf_counter()
        chunk = self.policy.predict_action(req.obs, noise=req.noise)[0]  # (Ta, Da)
        self._inference_s.append(time.perf_counter() - t0)
        age = self.now() - req.stamp
        if age > p.max_action_age:
            self.counts["stale_drops"] += 1
            log.warning(f"chunk dropped: its observation (stamp {req.stamp:.3f} s) is {age:.3f} s old > "
                        f"max_action_age {p.max_action_age} s (inference too slow for the control rate, or the clock "
                        f"jumped); {self.counts['stale_drops']} dropped so far", throttle_duration_sec=1.0)
            return
        lead = int(np.floor(age / self.dt + 1e-9)) + 1  # points 0 .. lead-1 are due already
        with self._lock:
            if req.epoch != self._epoch or not self._enabled:
                return  # disabled or restarted while inferring
            self._leads.append(lead)
            if self.stepwise:  # the control ticks execute it (_step_command)
                if p.execution == "temporal_ensemble":
                    self.ensembler.add(req.tick, chunk)
                else:
                    self.stepper.plan(req.tick, chunk[: req.n_points])
                self.counts["chunks_published"] += 1
                self._latency_s.append(self.now() - req.stamp)
                return
            if p.execution == "temporal_ensemble":
                self.ensembler.add(req.tick, chunk)
                action = self.ensembler.action(req.tick + lead)  # the first control step still ahead
                if action is None:
                    return
                actions, times = action[None], np.array([lead * self.dt])
            else:
                actions, times = chunk[: req.n_points], np.arange(req.n_points) * self.dt
        q, g = joint_targets(actions, self.runner.spec.action_mode, req.q)  # "joint": the chunk's own targets
        msg = trajectory_msg(q, g, req.stamp, times=times)
        with self._lock:
            if req.epoch != self._epoch or not self._enabled:
                return
            self._cmd_pub.publish(msg)
        self.counts["chunks_published"] += 1
        self._latency_s.append(self.now() - req.stamp)

    def lead_ticks(self) -> int:
        """Median number of a chunk's first points already due when it is published (recent chunks)."""
        return int(np.median(self._leads))

    # -- diagnostics --------------------------------------------------------------------------------------------
    def diagnostics(self) -> dict:
        return {
            "device": self.device, "checkpoint": self.params.checkpoint, "enabled": self._enabled,
            "execution": self.params.execution, "n_action_steps": self.runner.n_action_steps,
            "lead_ticks": self.lead_ticks(), "action_key": self.runner.action_key,
            "n_obs_steps": self.runner.n_obs_steps, "action_horizon": self.Ta,
            "inference_ms": percentile_summary(list(self._inference_s)),
            "obs_to_command_ms": percentile_summary(list(self._latency_s)),
            "frames": self.source.frames(),
            **self.counts,
        }

    def _publish_diagnostics(self):
        self._diag_pub.publish(String(data=json.dumps(self.diagnostics())))

    def destroy_node(self):
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args=None):
    node_main(Policy, args)
