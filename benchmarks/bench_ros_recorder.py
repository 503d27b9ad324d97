"""ROS recorder throughput: two 640x480 RGB streams at 30 Hz + joint states at 100 Hz + commands at 30 Hz, recorded
at control_hz 30 by the recorder node in its own process (real rclpy over Fast DDS, localhost), per camera transport.

Three processes: the recorder (`postbc.nodes.recorder`, its episode writer's block writes timed), a synthetic
publisher (camera-like frames: smooth gradients + noise, so they compress like camera images), and this one
(start/stop services, status). Measures frames received vs published in the recording window (lost), the
recorder's own late/dropped counts, the CPU use of the recorder and the publisher processes (/proc/<pid>/stat, % of
one core), the tick time, and headroom = store write rate (steps/s while the writer thread writes blocks) / arrival
rate (30 steps/s).

Transports (the candidates for moving 0.92 MB frames between processes; each run sets the environment both
processes start with):
- default: Fast DDS's built-in transports (512 KiB shared-memory segment + UDPv4), best-effort sensor QoS: the launch
  files' behaviour before config/fastdds_profile.xml, the baseline every ratio is taken against;
- reliable: the same transports with RELIABLE image QoS (depth 5) on both sides;
- shm_profile: the package's config/fastdds_profile.xml (what `ros2 launch postbc ...` sets), best-effort QoS.
Images are stored at the native 640x480 in every run, plus one run at 96x128 (image_size: a training
resolution of the cameras' aspect) on the shipped profile. Absolute times depend on the machine and its load; compare
the ratios to the baseline measured in the same invocation.

    python benchmarks/bench_ros_recorder.py [--quick] [--seconds 20] [--transports default,shm_profile]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ROS_PKG = REPO / "ros2_ws" / "src" / "postbc"
W, H, CAM_HZ, JS_HZ, CONTROL_HZ = 640, 480, 30.0, 100.0, 30.0
CAMERAS = ("front", "wrist")
TRANSPORTS = ("default", "reliable", "shm_profile")
BASELINE = "default"
sys.path.insert(0, str(ROS_PKG))

# The recorder process: the node as deployed, with EpisodeWriter._write_blocks (the disk work of the writer thread)
# and Recorder._on_tick timed; the totals go to $BENCH_STATS after every block.
RECORDER_LAUNCHER = r"""
import json, os, sys, time
import postbc_core.data.writer as writer
from postbc import topics
if os.environ.get("BENCH_IMAGE_QOS") == "reliable":
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    topics.SENSOR_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
from postbc.nodes import recorder as rec
stats = {"write_s": 0.0, "write_steps": 0, "blocks": 0, "ticks": []}
def dump():
    with open(os.environ["BENCH_STATS"] + ".tmp", "w") as f:
        json.dump(stats, f)
    os.replace(os.environ["BENCH_STATS"] + ".tmp", os.environ["BENCH_STATS"])
orig_write, orig_tick = writer.EpisodeWriter._write_blocks, rec.Recorder._on_tick
def write_blocks(self, blocks, at, n):
    t = time.perf_counter()
    orig_write(self, blocks, at, n)
    stats["write_s"] += time.perf_counter() - t
    stats["write_steps"] += n
    stats["blocks"] += 1
    dump()
def on_tick(self):
    t = time.perf_counter()
    orig_tick(self)
    if self._rec is not None:
        stats["ticks"].append(time.perf_counter() - t)
writer.EpisodeWriter._write_blocks = write_blocks
rec.Recorder._on_tick = on_tick
sys.exit(rec.main())
"""


def camera_like(rng, n, h, w):
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 / w), (yy * 255 / h), ((xx + yy) * 127 / (h + w))], -1)
    return [np.clip(base + rng.normal(0, 4, (h, w, 3)) + k, 0, 255).astype(np.uint8) for k in range(n)]


def publisher(out: str, seconds: float) -> None:
    """Publish the synthetic streams for `seconds`; write the CLOCK_MONOTONIC publish times per stream to `out`."""
    import numpy as np
    import rclpy
    from postbc import conversions as cv
    from postbc import topics
    from postbc_core.robots.kinematics import HOME_QPOS
    from postbc.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    rclpy.init()
    node = Node("bench_publisher")
    rng = np.random.default_rng(0)
    frames = {c: [cv.image_msg(f, 0.0, f"{c}_color_optical_frame") for f in camera_like(rng, 15, H, W)]
              for c in CAMERAS}
    image_qos = topics.SENSOR_QOS
    if os.environ.get("BENCH_IMAGE_QOS") == "reliable":
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        image_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {c: node.create_publisher(Image, topics.image_topic(c), image_qos) for c in CAMERAS}
    js_pub = node.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
    cmd_pub = node.create_publisher(JointTrajectory, topics.COMMAND, topics.COMMAND_QOS)
    times: dict[str, list[float]] = {"joint_states": [], "command": [], **{f"{c}_rgb": [] for c in CAMERAS}}

    def now():
        return node.get_clock().now().nanoseconds * 1e-9

    def images():
        t = now()
        for c in CAMERAS:
            msg = frames[c][len(times[f"{c}_rgb"]) % len(frames[c])]
            msg.header.stamp = cv.to_time(t)
            pubs[c].publish(msg)
            times[f"{c}_rgb"].append(time.monotonic())

    def joints():
        t = now()
        js_pub.publish(cv.joint_state_msg(HOME_QPOS + 0.01 * np.sin(t), 0.03, t))
        times["joint_states"].append(time.monotonic())

    def command():
        t = now()
        cmd_pub.publish(cv.trajectory_msg(HOME_QPOS + 0.01 * np.cos(t), 0.03, t))
        times["command"].append(time.monotonic())

    node.create_timer(1.0 / CAM_HZ, images)
    node.create_timer(1.0 / JS_HZ, joints)
    node.create_timer(1.0 / CONTROL_HZ, command)
    ex = MultiThreadedExecutor(num_threads=3)
    ex.add_node(node)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.1)
    Path(out).write_text(json.dumps(times))
    os._exit(0)  # skip rclpy teardown: the times are written


def proc_cpu_s(pid: int) -> float:
    """utime + stime (s) of a process from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transport_env(transport: str) -> dict[str, str]:
    """Environment overrides of the recorder and publisher processes for `transport` (None = unset)."""
    from postbc import bringup

    unset = {name: None for name in bringup.FASTDDS_PROFILE_ENV}
    if transport == "default":
        return unset
    if transport == "reliable":
        return {**unset, "BENCH_IMAGE_QOS": "reliable"}
    if transport == "shm_profile":  # the source tree's file is the one colcon installs to share/postbc/config
        return {**unset, **bringup.fastdds_profile_env("", str(ROS_PKG))}
    raise SystemExit(f"--transports: unknown transport {transport!r}; choose from {TRANSPORTS}")


def image_totals(run: dict) -> dict:
    """Camera frames published / received in the recording window, summed over the cameras."""
    cams = [run["streams"][f"{c}_rgb"] for c in CAMERAS]
    published = sum(c["published"] for c in cams)
    received = sum(c["received"] or 0 for c in cams)
    return {"published": published, "received": received, "ratio": received / published if published else 0.0}


def summarize(runs: list[dict]) -> list[dict]:
    """Per run: images received / published, and its CPU and received ratio relative to the baseline run stored at
    the same size (the same invocation, so the same machine and about the same load)."""
    rows = []
    for r in runs:
        base = next((b for b in runs
                     if b["transport"] == BASELINE and b["stored_image_size"] == r["stored_image_size"]), None)
        img = image_totals(r)
        row = {"transport": r["transport"], "stored_image_size": r["stored_image_size"],
               "images_received_ratio": img["ratio"], "missed_ticks": r["missed_ticks"],
               "expected_steps": r["expected_steps"], "episode_steps": r["episode_steps"],
               "headroom": r["headroom"], "cpu_percent": r["cpu_percent_of_one_core"]}
        if base is not None:
            b = image_totals(base)
            row["vs_baseline"] = {
                "images_received": img["ratio"] / b["ratio"] if b["ratio"] else None,
                "recorder_cpu": r["cpu_percent_of_one_core"]["recorder"] / base["cpu_percent_of_one_core"]["recorder"],
                "publisher_cpu": (r["cpu_percent_of_one_core"]["publisher"]
                                  / base["cpu_percent_of_one_core"]["publisher"]),
                "headroom": r["headroom"] / base["headroom"]}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s of recording instead of --seconds")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--transports", default=",".join(TRANSPORTS),
                    help=f"comma-separated subset of {','.join(TRANSPORTS)} (the baseline {BASELINE!r} is always run)")
    ap.add_argument("--publisher", help=argparse.SUPPRESS)  # internal: run the publisher process
    ap.add_argument("--publish-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.publisher:
        publisher(args.publisher, args.publish_seconds)
        return 0
    seconds = 5.0 if args.quick else args.seconds
    chosen = [t.strip() for t in args.transports.split(",") if t.strip()]
    for t in chosen:
        transport_env(t)  # an unknown name fails before anything runs
    transports = [BASELINE] + [t for t in chosen if t != BASELINE]
    from importlib.metadata import PackageNotFoundError, version

    from common import write_result

    plan = [(t, (0, 0)) for t in transports]
    if "shm_profile" in transports:
        plan.append(("shm_profile", (96, 128)))
    runs = []
    for transport, size in plan:
        load = os.getloadavg()
        r = run_once(seconds, size, transport)
        r["loadavg_1min_before"] = load[0]
        runs.append(r)
    summary = summarize(runs)
    print(f"\n{'transport':12s} {'stored':8s} {'images recv/pub':>15s} {'vs base':>8s} {'missed':>7s} "
          f"{'headroom':>8s} {'rec CPU%':>8s} {'pub CPU%':>8s}")
    for row in summary:
        vs = row.get("vs_baseline", {}).get("images_received")
        cpu = row["cpu_percent"]
        print(f"{row['transport']:12s} {'x'.join(map(str, row['stored_image_size'])):8s} "
              f"{100 * row['images_received_ratio']:14.1f}% {'' if vs is None else f'x{vs:.2f}':>8s} "
              f"{row['missed_ticks']:7d} {row['headroom']:8.1f} {cpu['recorder']:8.0f} {cpu['publisher']:8.0f}")
    try:
        fastdds = version("ros-fastdds")
    except PackageNotFoundError:  # an apt ROS install: no wheel metadata
        fastdds = "unknown (not the ros-fastdds wheel)"
    write_result("ros_recorder_throughput", {
        "seconds": seconds, "published_image_size": [H, W], "cameras": list(CAMERAS), "camera_hz": CAM_HZ,
        "joint_states_hz": JS_HZ, "control_hz": CONTROL_HZ, "fastdds": fastdds,
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
        "discovery_range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"), "baseline": BASELINE,
        "summary": summary, "runs": runs,
        "note": ("recorder, publisher and this process on one machine; loadavg_1min_before is the machine's load "
                 "(other jobs) when the run started: with load > cores every number here is a lower bound. The "
                 "vs_baseline ratios compare runs of this one invocation; absolute CPU and headroom vary with the "
                 "machine. received counts the recorder's episode (start to stop service), published this process's "
                 "window between the two calls, so a stream's ratio can read a frame or two above 100 %")},
        quick=args.quick)
    ok = all(r["store_valid"] for r in runs)
    return 0 if ok else 1


def run_once(seconds: float, image_size: tuple[int, int], transport: str = BASELINE) -> dict:
    """One recording of `seconds` with the recorder storing images at `image_size` ((0, 0) = native), the camera
    frames carried by `transport` (TRANSPORTS)."""
    import numpy as np
    import rclpy
    from postbc import topics
    from postbc_core.data.validate import validate_store
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    tmp = Path(tempfile.mkdtemp(prefix="bench_ros_recorder_"))
    env = dict(os.environ, PYTHONPATH=f"{ROS_PKG}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", str(1 + os.getpid() % 100)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", BENCH_STATS=str(tmp / "writer.json"))
    for name, value in transport_env(transport).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    store = tmp / "bench.zarr"
    rec = subprocess.Popen([sys.executable, "-c", RECORDER_LAUNCHER, "--ros-args", "-p", f"store:={store}",
                            "-p", f"control_hz:={CONTROL_HZ}", "-p", f"cameras:=[{','.join(CAMERAS)}]",
                            "-p", f"image_size:=[{image_size[0]},{image_size[1]}]",
                            "-p", "max_episode_s:=0.0", "-p", "start_timeout:=10.0", "-p", "task:=bench"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pub = subprocess.Popen([sys.executable, __file__, "--publisher", str(tmp / "published.json"),
                            "--publish-seconds", str(seconds + 25.0)], env=env)
    rclpy.init()
    node = Node("bench_ros_recorder")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    status: list[dict] = []
    node.create_subscription(String, topics.RECORDER_STATUS, lambda m: status.append(json.loads(m.data)),
                             topics.STATUS_QOS)

    def call(name):
        cli = node.create_client(Trigger, name)
        if not cli.wait_for_service(timeout_sec=30.0):
            raise SystemExit(f"{name} is not available: the recorder did not come up")
        fut = cli.call_async(Trigger.Request())
        ex.spin_until_future_complete(fut, timeout_sec=60.0)
        return fut.result()

    try:
        r = call("/recorder/start")
        if not r.success:
            raise SystemExit(f"start failed: {r.message}")
        t_start, cpu0, pub_cpu0 = time.monotonic(), proc_cpu_s(rec.pid), proc_cpu_s(pub.pid)
        end = t_start + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
        cpu1, pub_cpu1, t_stop = proc_cpu_s(rec.pid), proc_cpu_s(pub.pid), time.monotonic()
        r = call("/recorder/stop")
        if not r.success:
            raise SystemExit(f"stop failed: {r.message}")
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not (status and (status[-1].get("last_episode") or {}).get("committed")):
            ex.spin_once(timeout_sec=0.1)
        last = status[-1]["last_episode"]
    finally:
        rec.send_signal(signal.SIGINT)
        try:
            log = rec.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            rec.kill()
            log = rec.communicate()[0]
        pub.wait(timeout=seconds + 60)
        node.destroy_node()
        rclpy.shutdown()
    published = json.loads((tmp / "published.json").read_text())
    writer = json.loads((tmp / "writer.json").read_text())
    report = validate_store(store, scan_values=False)

    wall = t_stop - t_start
    streams = {}
    for name, ts in published.items():
        sent = int(np.sum((np.asarray(ts) >= t_start) & (np.asarray(ts) < t_stop)))
        got = last["streams"].get(name, {})
        streams[name] = {"published": sent, "received": got.get("received"),
                         "lost": None if got.get("received") is None else max(0, sent - got["received"]),
                         "published_hz": sent / wall, "received_rate_hz": got.get("rate_hz"),
                         "recorder_dropped_estimate": got.get("dropped"), "out_of_order": got.get("out_of_order"),
                         "late_ticks": got.get("late"),
                         "repeated_ticks": got.get("repeated")}
    steps = last["steps"]
    write_rate = writer["write_steps"] / writer["write_s"] if writer["write_s"] > 0 else float("nan")
    stored = (H, W) if not image_size[0] else image_size
    ticks = np.asarray(writer["ticks"]) * 1e3
    result = {
        "transport": transport, "stored_image_size": list(stored), "episode_steps": steps,
        "expected_steps": round(wall * CONTROL_HZ) - 1, "missed_ticks": last["missed_ticks"],
        "streams": streams,
        "cpu_percent_of_one_core": {"recorder": 100.0 * (cpu1 - cpu0) / wall,
                                    "publisher": 100.0 * (pub_cpu1 - pub_cpu0) / wall},
        "tick_ms": {"p50": float(np.percentile(ticks, 50)), "p99": float(np.percentile(ticks, 99)),
                    "max": float(ticks.max())} if ticks.size else None,
        "store_write": {"steps": writer["write_steps"], "blocks": writer["blocks"], "seconds": writer["write_s"],
                        "steps_per_s": write_rate,
                        "mb_per_s_raw": write_rate * len(CAMERAS) * stored[0] * stored[1] * 3 / 1e6},
        "headroom": write_rate / CONTROL_HZ,
        "store_valid": report.ok, "store_episodes": report.n_episodes, "store_steps": report.n_steps,
    }
    print(f"== {transport}, images stored at {stored[0]}x{stored[1]}: recorded {steps} steps in {wall:.1f} s (expected "
          f"~{result['expected_steps']}, missed ticks {last['missed_ticks']}); store valid={report.ok}")
    for name, s in streams.items():
        print(f"  {name:13s} published {s['published']:5d} ({s['published_hz']:.1f} Hz)  received {s['received']}  "
              f"lost {s['lost']}  late ticks {s['late_ticks']}  "
              f"recorder drop estimate {s['recorder_dropped_estimate']}")
    if result["tick_ms"]:
        print(f"  recorder CPU {result['cpu_percent_of_one_core']['recorder']:.0f}% of one core, publisher "
              f"{result['cpu_percent_of_one_core']['publisher']:.0f}%; tick p50 "
              f"{result['tick_ms']['p50']:.1f} ms p99 {result['tick_ms']['p99']:.1f} ms")
    print(f"  store writes {write_rate:.0f} steps/s ({result['store_write']['mb_per_s_raw']:.0f} MB/s raw) "
          f"-> headroom x{result['headroom']:.1f} over {CONTROL_HZ:.0f} Hz")
    if not report.ok:
        print(log[-3000:], file=sys.stderr)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
