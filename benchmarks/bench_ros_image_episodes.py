"""An image policy closing the loop through the ROS graph of the policy profile: the sim driver, two sim camera nodes
rendering the twin at a RealSense's 640x480, and the policy node running a checkpoint trained at a lower resolution
(its frames resized by the node, robots.observation.resize_image). Reports the task's success per seed, next to
`postbc eval`'s on the same seeds when its report is given, and the latency and frame figures of the run.

The graph is the one `ros2 launch postbc policy.launch.py backend:=sim` starts, composed in one process by the
launch profile's own node list (postbc.runner.build / Composition, as `postbc ros run policy` does), plus a probe
node that runs the episodes: the driver's ~/reset (seed, seed + 1, ...: `postbc eval --seed`'s sequence), the
policy's ~/enable, success from /postbc/sim/success within the task's max_steps control periods of sim time,
~/enable false. Latency: the probe's wall-clock time from receiving the /joint_states message a command is stamped
with (the policy's observation) to receiving that /postbc/command, p50 / p99; beside it the node's own
predict_action time (wall) and its frame counts per camera (ObservationSource.frames: received, used by a tick,
dropped unused, refused, pending). The sim runs at --real-time-factor (default 1, the robot's pace); each node shares
one Python process here, where on the robot each is a process of its own.

    python benchmarks/bench_ros_image_episodes.py --checkpoint RUN [--episodes 50] [--seed 1000] \
        [--width 640 --height 480] [--real-time-factor 1] [--eval-report eval.json] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="image policy: run dir or .safetensors")
    ap.add_argument("--task", default="lift_cube")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000, help="first episode's seed (postbc eval --seed)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--camera-fps", type=float, default=10.0, help="sim camera rate (Hz of sim time)")
    ap.add_argument("--real-time-factor", type=float, default=1.0)
    ap.add_argument("--eval-report", type=Path, help="`postbc eval`'s eval.json on the same seeds, for the pairing")
    ap.add_argument("--out", default="ros_image_episodes_cpu", help="results name (benchmarks/results/NAME.json)")
    ap.add_argument("--quick", action="store_true", help="3 episodes, results under results/quick")
    args = ap.parse_args()
    n = 3 if args.quick else args.episodes

    import rclpy
    from postbc import runner, topics
    from postbc.conversions import to_sec
    from postbc_core.sim.registry import make
    from rclpy.context import Context
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool
    from std_srvs.srv import SetBool, Trigger
    from trajectory_msgs.msg import JointTrajectory

    max_steps = make(args.task).config.max_steps
    sets = [f"checkpoint={args.checkpoint}", "backend=sim", f"task={args.task}", f"seed={args.seed}",
            f"image_width={args.width}", f"image_height={args.height}", f"camera_fps={args.camera_fps}",
            f"real_time_factor={args.real_time_factor}", "device=cpu", "policy.enabled_on_start=false"]
    specs = runner.build("policy", sets)
    ctx = Context()
    rclpy.init(context=ctx)
    lock = threading.Lock()
    state = {"t": 0.0, "success_at": []}
    js_wall: dict[float, float] = {}  # /joint_states stamp -> wall time the probe received it
    latency: list[float] = []
    missing_obs = [0]

    def on_js(msg):
        stamp, now = to_sec(msg.header.stamp), time.perf_counter()
        with lock:
            state["t"] = stamp
            js_wall[stamp] = now
            if len(js_wall) > 2000:  # keep ~20 s of sim time at 100 Hz
                for k in sorted(js_wall)[:1000]:
                    del js_wall[k]

    def on_success(msg):
        if msg.data:
            with lock:
                state["success_at"].append(state["t"])

    def on_command(msg):
        now = time.perf_counter()
        with lock:
            t = js_wall.get(to_sec(msg.header.stamp))
            if t is None:
                missing_obs[0] += 1
            elif measuring.is_set():
                latency.append(now - t)

    measuring = threading.Event()
    results, lengths = [], []
    t_start = time.perf_counter()
    with runner.Composition(specs, context=ctx) as comp:
        comp.start()
        probe = Node("episode_probe", context=ctx)
        comp.executor.add_node(probe)
        probe.create_subscription(JointState, topics.JOINT_STATES, on_js, topics.STATE_QOS)
        probe.create_subscription(Bool, topics.SUCCESS, on_success, topics.STATE_QOS)
        probe.create_subscription(JointTrajectory, topics.COMMAND, on_command, topics.COMMAND_QOS)
        policy = comp["policy"]
        control_hz = policy.params.control_hz
        limit = max_steps / control_hz

        def call(srv, name, req):
            cli = probe.create_client(srv, name)
            if not cli.wait_for_service(timeout_sec=30):
                raise SystemExit(f"error: service {name} did not come up")
            fut = cli.call_async(req)
            deadline = time.monotonic() + 60
            while not fut.done():
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: no response from {name}")
                time.sleep(0.01)
            probe.destroy_client(cli)
            return fut.result()

        while time.monotonic() - t_start < 120 and state["t"] <= 0.5:
            time.sleep(0.05)
        for i in range(n):
            r = call(Trigger, "/robot_driver/reset", Trigger.Request())
            if not (r.success and r.message == f"seed={args.seed + i}"):
                raise SystemExit(f"error: reset {i}: {r.message}")
            # The cameras render at camera_fps on sim time: wait for a frame of the new scene (two camera periods)
            # before the policy's first tick samples one; the driver holds the arm meanwhile.
            with lock:
                t_reset = state["t"]
            while True:
                with lock:
                    if state["t"] >= t_reset + 2.0 / args.camera_fps:
                        break
                time.sleep(0.01)
            assert call(SetBool, "/policy/enable", SetBool.Request(data=True)).success
            measuring.set()
            with lock:
                t0 = state["t"]
            while True:
                with lock:
                    done_at = next((t for t in state["success_at"] if t > t0), None)
                    t_now = state["t"]
                if done_at is not None or t_now > t0 + limit:
                    break
                time.sleep(0.01)
            measuring.clear()
            assert call(SetBool, "/policy/enable", SetBool.Request(data=False)).success
            ok = done_at is not None and done_at <= t0 + limit
            results.append(ok)
            lengths.append(round(((done_at if ok else t0 + limit) - t0) * control_hz))
            print(f"episode {i} seed {args.seed + i}: {'success' if ok else 'failure'} "
                  f"({sum(results)}/{len(results)})", flush=True)
        diag = policy.diagnostics()
        probe.destroy_node()
    rclpy.shutdown(context=ctx)
    wall = time.perf_counter() - t_start

    k = sum(results)
    from postbc_core.stats import paired_comparison, wilson_interval

    lo, hi = wilson_interval(k, n)
    out = {
        "task": args.task, "checkpoint": str(args.checkpoint), "episodes": n, "seeds": [args.seed, args.seed + n - 1],
        "cameras": {"size": [args.height, args.width], "fps_sim": args.camera_fps},
        "policy_obs_shapes": {key: list(v) for key, v in policy.policy.config.obs_shapes.items()},
        "real_time_factor": args.real_time_factor, "control_hz": control_hz,
        "n_success": k, "success_rate": round(k / n, 3), "success_ci95": [round(lo, 3), round(hi, 3)],
        "successes": results, "lengths": lengths,
        "obs_to_command_wall": percentiles(latency), "commands_without_probe_obs": missing_obs[0],
        "node": {key: diag[key] for key in ("inference_ms", "obs_to_command_ms", "frames", "execution",
                                            "n_action_steps")},
        "node_counts": {key: v for key, v in diag.items() if isinstance(v, int) and not isinstance(v, bool)},
        "wall_s": round(wall, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
        "command": " ".join(["python", *sys.argv]),
    }
    if args.eval_report:
        ev = json.loads(args.eval_report.read_text())
        seeds = list(range(args.seed, args.seed + n))
        by_seed = dict(zip(ev["seeds"], ev["successes"]))
        if not all(s in by_seed for s in seeds):
            raise SystemExit(f"error: {args.eval_report} lacks some of seeds {seeds[0]}..{seeds[-1]}")
        ev_s = [bool(by_seed[s]) for s in seeds]
        out["eval"] = {"report": str(args.eval_report), "n_success": sum(ev_s), "successes": ev_s,
                       "paired_eval_to_ros": paired_comparison(ev_s, results)}
    path = write_result(args.out, out, quick=args.quick)
    print(json.dumps({k2: out[k2] for k2 in ("n_success", "episodes", "success_ci95", "obs_to_command_wall")}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
