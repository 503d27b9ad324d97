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

--images (issue 22, item 5): what a RealSense setup feeds the node. Two camera topics, /front/image_raw and
/wrist/image_raw, publish 640x480 rgb8 at 30 Hz (synthetic frames, wall-clock stamps, one thread per camera as a
camera driver would be); /joint_states at 100 Hz; the policy (front_rgb wrist_rgb joint_pos gripper_pos at 96x128,
the cameras' aspect; ResNet-18 per camera, the default encoder, untrained; MLP noise net 3 x 512, 8 DDIM steps, chunk
4, the state setting above; --noise-net unet: the README's WidowX setting, U-Net [256, 512, 1024], chunk 1, 16 DDIM
steps; --image-encoder picks another encoder where PolicyConfig has one) at 10 Hz. Reported
next to the obs->command latency: predict_action, the node's per-frame resize (640x480 -> 96x128, INTER_AREA) and
whole image callback (conversion + resize), the age of each camera's newest frame when a tick samples it, and the
frames each camera delivered / the ticks used / dropped (ObservationSource.frames) over the measured window.
max_action_age is raised to 10 s so a slow CPU prediction is measured rather than dropped as stale.

    python benchmarks/bench_ros_policy.py [--quick] [--seconds 60] [--images [--noise-net unet] [--image-encoder E]]
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
# --images: a RealSense's colour stream (640x480 rgb8, 30 Hz) per camera; the policy at a lower size of that aspect.
CAMERAS = ("front", "wrist")
CAMERA_SHAPE = (480, 640, 3)
CAMERA_HZ = 30.0
IMAGE_CONTROL_HZ = 10.0
IMAGE_OBS_KEYS = {"front_rgb": (96, 128, 3), "wrist_rgb": (96, 128, 3), "joint_pos": (6,), "gripper_pos": (1,)}


# noise net -> (PolicyConfig settings, the label results carry)
NOISE_NETS = {
    "mlp": (dict(noise_net="mlp", mlp_hidden=(512, 512, 512), action_horizon=4, num_inference_steps=8),
            {"noise_net": "mlp 3x512", "ddim_steps": 8, "chunk": 4}),
    "unet": (dict(noise_net="unet", unet_down_dims=(256, 512, 1024), action_horizon=1, num_inference_steps=16),
             {"noise_net": "unet [256, 512, 1024]", "ddim_steps": 16, "chunk": 1}),
}


def build_checkpoint(path: Path, obs_keys: dict = OBS_KEYS, image_encoder: str = "", noise_net: str = "mlp") -> Path:
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.checkpoint import save_policy
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
    from postbc_core.robots import kinematics

    rng = np.random.default_rng(0)
    # image_encoder only when asked: PolicyConfig gains that setting with issue 22's small encoder.
    cfg = PolicyConfig(obs_shapes=obs_keys, action_dim=7, n_obs_steps=1, **NOISE_NETS[noise_net][0],
                       **({"image_encoder": image_encoder} if image_encoder else {}))
    low_dim = {k: s for k, s in obs_keys.items() if len(s) == 1}  # RGB keys are not normalized
    norm = LinearNormalizer().fit({k: rng.normal(size=(1000, *s)) for k, s in low_dim.items()},
                                  default_mode="gaussian")
    lo, hi = np.r_[kinematics.HOME_QPOS - 0.1, 0.015], np.r_[kinematics.HOME_QPOS + 0.1, 0.037]
    norm.fit({"cmd_joint_pos": rng.uniform(lo, hi, size=(1000, 7))}, default_mode="limits")
    policy = DiffusionPolicy(cfg, norm).eval()
    policy.action_key = "cmd_joint_pos"
    return save_policy(policy, path)


def pct(samples: list[float]) -> dict | None:
    """common.percentiles, None when nothing was measured (e.g. no command in a short run on a slow CPU)."""
    return percentiles(samples) if samples else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured duration (wall seconds)")
    ap.add_argument("--images", action="store_true",
                    help="two 640x480 30 Hz cameras and a 96x128 image policy at 10 Hz (see the module docstring)")
    ap.add_argument("--image-encoder", default="", help="--images: PolicyConfig's image_encoder (default: its own)")
    ap.add_argument("--noise-net", choices=sorted(NOISE_NETS), default="mlp",
                    help="--images: mlp (3 x 512, chunk 4, 8 DDIM steps) or unet (the README's WidowX setting)")
    args = ap.parse_args()
    seconds, warmup = (5.0, 1.0) if args.quick else (args.seconds, 3.0)
    if args.images:
        warmup = max(warmup, 10.0)  # first ResNet calls (allocator, oneDNN kernels) are slower than the rest

    import rclpy
    from geometry_msgs.msg import PoseArray
    from postbc import observation, topics
    from postbc.conversions import image_msg, joint_state_msg, pose_array_msg, to_sec
    from postbc.nodes.policy import Policy
    from postbc_core.robots import kinematics
    from rclpy.context import Context
    from postbc.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    obs_keys = IMAGE_OBS_KEYS if args.images else OBS_KEYS
    control_hz = IMAGE_CONTROL_HZ if args.images else CONTROL_HZ
    tmp = tempfile.TemporaryDirectory()
    if args.noise_net != "mlp" and not args.images:
        ap.error("--noise-net applies to --images (the state run keeps bench_policy_latency's MLP)")
    ckpt = build_checkpoint(Path(tmp.name) / "policy.safetensors", obs_keys, args.image_encoder, args.noise_net)
    ctx = Context()
    rclpy.init(context=ctx)
    source, sink = Node("bench_source", context=ctx), Node("bench_sink", context=ctx)
    params = [Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu"),
              Parameter("control_hz", value=control_hz), Parameter("n_action_steps", value=1)]
    if args.images:
        params.append(Parameter("max_action_age", value=10.0))
    policy = Policy(context=ctx, parameter_overrides=params)

    measuring = threading.Event()
    lock = threading.Lock()
    latency, predict, obs_age = [], [], []
    resize, callback = [], []
    frame_age = {c: [] for c in CAMERAS}
    last_frame = {}  # camera -> stamp of the newest frame the node's callback has finished with

    def timed(fn, samples: list):
        """fn, its wall time appended to `samples` while measuring (same call, same thread, same run)."""
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            if measuring.is_set():
                with lock:
                    samples.append(time.perf_counter() - t0)
            return out
        return wrapper

    # predict_action timed where the worker calls it.
    policy.policy.predict_action = timed(policy.policy.predict_action, predict)
    inner_obs = policy.observation

    def timed_observation():
        snap = inner_obs()
        if snap is not None and measuring.is_set():
            now = policy.now()
            with lock:
                obs_age.append(now - snap[1])
                for c, t in last_frame.items():  # approximate: a frame may land between the snapshot and here
                    frame_age[c].append(now - t)
        return snap

    policy.observation = timed_observation

    if args.images:  # the node's resize (a module-level call in its image callback) and the whole callback
        observation.resize_image = timed(observation.resize_image, resize)
        inner_cb = timed(policy.source._on_image, callback)

        def on_image(camera, msg):
            inner_cb(camera, msg)
            with lock:
                last_frame[camera] = to_sec(msg.header.stamp)

        policy.source._on_image = on_image

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

    stop = threading.Event()
    published = dict.fromkeys(CAMERAS, 0)
    cam_threads = []
    if args.images:
        def camera(name: str, seed: int):
            pub = source.create_publisher(Image, topics.image_topic(name), topics.SENSOR_QOS)
            frames = np.random.default_rng(seed).integers(0, 256, (4, *CAMERA_SHAPE), dtype=np.uint8)
            period, i, due = 1.0 / CAMERA_HZ, 0, time.monotonic()
            while not stop.is_set():
                pub.publish(image_msg(frames[i % len(frames)], source.get_clock().now().nanoseconds * 1e-9,
                                      frame_id=f"{name}_color_optical_frame"))
                if measuring.is_set():
                    published[name] += 1
                i += 1
                due = max(due + period, time.monotonic())  # a late frame is not made up by a burst
                stop.wait(max(0.0, due - time.monotonic()))

        cam_threads = [threading.Thread(target=camera, args=(c, k), daemon=True) for k, c in enumerate(CAMERAS)]
        for t in cam_threads:
            t.start()

    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    for n in (source, sink, policy):
        executor.add_node(n)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    time.sleep(warmup)
    load_before = os.getloadavg()[0]
    frames_before, counts_before = policy.source.frames(), dict(policy.counts)
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    frames_after, counts_after = policy.source.frames(), dict(policy.counts)
    load_after = os.getloadavg()[0]
    diag = policy.diagnostics()
    stop.set()
    for t in cam_threads:
        t.join(timeout=2.0)
    executor.shutdown(timeout_sec=2.0)
    spin.join(timeout=5.0)
    for n in (policy, source, sink):
        n.destroy_node()
    rclpy.shutdown(context=ctx)
    tmp.cleanup()

    lat, pred, age = pct(latency), pct(predict), pct(obs_age)
    window = {k: counts_after[k] - counts_before[k] for k in counts_after}
    setting = {"obs_keys": {k: list(v) for k, v in obs_keys.items()}, **NOISE_NETS[args.noise_net][1],
               "n_obs_steps": 1, "device": "cpu", "control_hz": control_hz, "state_hz": STATE_HZ,
               "execution": "receding, n_action_steps 1 (a chunk every tick)",
               "rmw": os.environ.get("RMW_IMPLEMENTATION", "default"), "seconds": seconds}
    result = {"setting": setting, "obs_to_command": lat, "predict_action": pred, "obs_age_at_tick": age}
    if lat and pred:
        result["ros_overhead_ratio_p50"] = lat["p50_ms"] / pred["p50_ms"]
        result["ros_overhead_ms_p50"] = lat["p50_ms"] - pred["p50_ms"]
    if args.images:
        setting.update({"cameras": {c: {"shape": list(CAMERA_SHAPE), "encoding": "rgb8", "hz": CAMERA_HZ}
                                    for c in CAMERAS},
                        "image_encoder": args.image_encoder or "resnet18 (PolicyConfig's default), untrained",
                        "max_action_age_s": 10.0, "gpu": "not measured"})
        result.update({
            "resize_640x480_to_96x128": pct(resize), "image_callback": pct(callback),
            "frame_age_at_tick": {c: pct(v) for c, v in frame_age.items()},
            # measured window only: frames a camera thread published, and what the node made of them
            "frames": {c: {"published": published[c],
                           **{k: frames_after[c][k] - frames_before[c][k] for k in ("received", "used", "dropped",
                                                                                    "refused")},
                           "pending_at_end": frames_after[c]["pending"]} for c in CAMERAS},
            "ticks": window["ticks"], "superseded_requests": window["superseded"],
            "chunks_published": window["chunks_published"], "stale_drops": window["stale_drops"],
        })
    else:
        result.update({"chunks_published": diag["chunks_published"], "stale_drops": diag["stale_drops"],
                       "superseded_requests": diag["superseded"]})
    # The host is shared: the 1-minute load average (2 cores) says how contended this measurement was.
    result["load_avg_1min"] = {"before": round(load_before, 2), "after": round(load_after, 2)}

    def ms(d, k):
        return f"{d[k]:.2f} ms" if d else "n/a"

    print(f"policy node (cpu, {control_hz:.0f} Hz, {args.noise_net}, chunk every tick): obs->command p50 "
          f"{ms(lat, 'p50_ms')}, p99 {ms(lat, 'p99_ms')}; predict_action p50 {ms(pred, 'p50_ms')}, p99 "
          f"{ms(pred, 'p99_ms')}; observation age at the tick p50 {ms(age, 'p50_ms')}; {len(latency)} commands, "
          f"{diag['stale_drops']} stale drops")
    if args.images:
        print(f"resize 640x480 -> 96x128 p50 {ms(result['resize_640x480_to_96x128'], 'p50_ms')}, p99 "
              f"{ms(result['resize_640x480_to_96x128'], 'p99_ms')}; image callback p50 "
              f"{ms(result['image_callback'], 'p50_ms')}; {window['ticks']} ticks, "
              f"{window['superseded']} superseded requests")
        for c, f in result["frames"].items():
            print(f"  {c}: published {f['published']}, received {f['received']}, used {f['used']}, dropped "
                  f"{f['dropped']}, refused {f['refused']}")
    name = "ros_policy_latency_cpu"
    if args.images:
        name = ("ros_policy_image_latency_cpu" + ("" if args.noise_net == "mlp" else f"_{args.noise_net}")
                + (f"_{args.image_encoder}" if args.image_encoder else ""))
    write_result(name, result, quick=args.quick)


if __name__ == "__main__":
    main()
