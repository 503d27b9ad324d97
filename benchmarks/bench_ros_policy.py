"""Observation-to-command latency through the ROS graph for the policy node (CPU), next to the pure predict_action
time of the same run.

One process, one rclpy context, three nodes on a MultiThreadedExecutor: a source publishing /joint_states and
/postbc/sim/object_poses at 100 Hz (stamped with the wall clock), the policy node (receding, n_action_steps 1: a chunk
every control tick at 20 Hz) and a sink on /postbc/command measuring (receive time - header.stamp), the header stamp
being the observation's /joint_states stamp. predict_action is timed inside the node's worker (the call it makes), so
`ros_overhead_ratio_p50` = obs->command p50 / predict_action p50 is what the graph adds around the model: the wait
for the next control tick (the observation is up to 10 ms old when the tick samples it, reported separately), the
hand-off to the worker, the trajectory message and DDS transport. Policy: state MLP 3 x 512, 8 DDIM steps, chunk 4
(bench_policy_latency.py's setting) on joint_pos, joint_vel, gripper_pos, ee_pose, object_pose.

    python benchmarks/bench_ros_policy.py [--quick] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import percentiles, write_result

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "postbc"))
# A private, local-only graph (as tests/ros/conftest.py does): never talk to other graphs on this host.
os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

CONTROL_HZ = 20.0
STATE_HZ = 100.0
OBS_KEYS = {"joint_pos": (6,), "joint_vel": (6,), "gripper_pos": (1,), "ee_pose": (7,), "object_pose": (7,)}


def build_checkpoint(path: Path) -> Path:
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.checkpoint import save_policy
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
    from postbc_core.robots import kinematics

    rng = np.random.default_rng(0)
    cfg = PolicyConfig(obs_shapes=OBS_KEYS, action_dim=7, n_obs_steps=1, action_horizon=4, noise_net="mlp",
                       mlp_hidden=(512, 512, 512), num_inference_steps=8)
    norm = LinearNormalizer().fit({k: rng.normal(size=(1000, *s)) for k, s in OBS_KEYS.items()},
                                  default_mode="gaussian")
    lo, hi = np.r_[kinematics.HOME_QPOS - 0.1, 0.015], np.r_[kinematics.HOME_QPOS + 0.1, 0.037]
    norm.fit({"cmd_joint_pos": rng.uniform(lo, hi, size=(1000, 7))}, default_mode="limits")
    policy = DiffusionPolicy(cfg, norm).eval()
    policy.action_key = "cmd_joint_pos"
    return save_policy(policy, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured duration (wall seconds)")
    args = ap.parse_args()
    seconds, warmup = (5.0, 1.0) if args.quick else (args.seconds, 3.0)

    import rclpy
    from geometry_msgs.msg import PoseArray
    from postbc import topics
    from postbc.conversions import joint_state_msg, pose_array_msg, to_sec
    from postbc.nodes.policy import Policy
    from postbc_core.robots import kinematics
    from rclpy.context import Context
    from postbc.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    tmp = tempfile.TemporaryDirectory()
    ckpt = build_checkpoint(Path(tmp.name) / "policy.safetensors")
    ctx = Context()
    rclpy.init(context=ctx)
    source, sink = Node("bench_source", context=ctx), Node("bench_sink", context=ctx)
    policy = Policy(context=ctx, parameter_overrides=[
        Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu"),
        Parameter("control_hz", value=CONTROL_HZ), Parameter("n_action_steps", value=1)])

    measuring = threading.Event()
    lock = threading.Lock()
    latency, predict, obs_age = [], [], []

    # predict_action timed where the worker calls it (the same call, same thread, same run).
    inner = policy.policy.predict_action

    def timed_predict(*a, **kw):
        t0 = time.perf_counter()
        out = inner(*a, **kw)
        if measuring.is_set():
            with lock:
                predict.append(time.perf_counter() - t0)
        return out

    policy.policy.predict_action = timed_predict
    inner_obs = policy.observation

    def timed_observation():
        snap = inner_obs()
        if snap is not None and measuring.is_set():
            with lock:
                obs_age.append(policy.now() - snap[1])
        return snap

    policy.observation = timed_observation

    def on_command(msg: JointTrajectory):
        now = sink.get_clock().now().nanoseconds * 1e-9
        if measuring.is_set():
            with lock:
                latency.append(now - to_sec(msg.header.stamp))

    sink.create_subscription(JointTrajectory, topics.COMMAND, on_command, topics.COMMAND_QOS)
    js_pub = source.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
    obj_pub = source.create_publisher(PoseArray, topics.OBJECT_POSES, topics.STATE_QOS)
    q = kinematics.HOME_QPOS
    obj = np.array([0.3, 0.0, 0.02, 1.0, 0.0, 0.0, 0.0])

    def publish_state():
        t = source.get_clock().now().nanoseconds * 1e-9
        js_pub.publish(joint_state_msg(q, 0.037, t))
        obj_pub.publish(pose_array_msg([obj], t))

    source.create_timer(1.0 / STATE_HZ, publish_state)
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    for n in (source, sink, policy):
        executor.add_node(n)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    time.sleep(warmup)
    load_before = os.getloadavg()[0]
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    load_after = os.getloadavg()[0]
    diag = policy.diagnostics()
    executor.shutdown(timeout_sec=2.0)
    spin.join(timeout=5.0)
    for n in (policy, source, sink):
        n.destroy_node()
    rclpy.shutdown(context=ctx)
    tmp.cleanup()

    lat, pred, age = percentiles(latency), percentiles(predict), percentiles(obs_age)
    result = {
        "setting": {"obs_keys": {k: list(v) for k, v in OBS_KEYS.items()}, "noise_net": "mlp 3x512",
                    "ddim_steps": 8, "chunk": 4, "n_obs_steps": 1, "device": "cpu", "control_hz": CONTROL_HZ,
                    "state_hz": STATE_HZ, "execution": "receding, n_action_steps 1 (a chunk every tick)",
                    "rmw": os.environ.get("RMW_IMPLEMENTATION", "default"), "seconds": seconds},
        "obs_to_command": lat, "predict_action": pred, "obs_age_at_tick": age,
        "ros_overhead_ratio_p50": lat["p50_ms"] / pred["p50_ms"],
        "ros_overhead_ms_p50": lat["p50_ms"] - pred["p50_ms"],
        "chunks_published": diag["chunks_published"], "stale_drops": diag["stale_drops"],
        "superseded_requests": diag["superseded"],
        # The host is shared: the 1-minute load average (2 cores) says how contended this measurement was.
        "load_avg_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
    }
    print(f"policy node (cpu, {CONTROL_HZ:.0f} Hz, chunk every tick): obs->command p50 {lat['p50_ms']:.2f} ms, "
          f"p99 {lat['p99_ms']:.2f} ms; predict_action p50 {pred['p50_ms']:.2f} ms, p99 {pred['p99_ms']:.2f} ms "
          f"-> ratio {result['ros_overhead_ratio_p50']:.2f}x (+{result['ros_overhead_ms_p50']:.2f} ms, of which "
          f"observation age at the tick p50 {age['p50_ms']:.2f} ms); {lat['n']} commands, "
          f"{diag['stale_drops']} stale drops")
    write_result("ros_policy_latency_cpu", result, quick=args.quick)


if __name__ == "__main__":
    main()
