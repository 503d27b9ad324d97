"""The operator console's cost to the control loop: control-tick jitter and /joint_states rate with the console off,
on with no browser, and on with two headless Chromium pages each showing both camera views at the full camera rate.

`postbc ros run record_demos` composes the sim driver (100 Hz /joint_states, its control step), teleop (one command
per control tick, 10 Hz) and the recorder in ONE process (one GIL) and starts the console as a process of its own
(NodeSpec.own_process). Two 640x480 RGB camera streams at 30 Hz come from another process (what RealSense camera
nodes are); the console streams them at stream_hz 30 (every frame), and in one phase at its default of 10. A probe node in the control process records the
arrival time of every /joint_states and /postbc/command message. Per phase: /joint_states rate (Hz), the command
(control tick) interval's deviation from 1/control_hz (p50 / p99 / max ms), the driver's real-time factor, the CPU
of the control process and of the console + browser processes (% of one core, /proc), and the JPEG encodes per
second (composed console only). The last phase is the design the runner does not use, kept as the evidence for
own_process: the console composed into the control process, same two browsers. Ratios are against the
"no browser" phase of the same run; absolute numbers depend on the machine and its load.

    python benchmarks/bench_ros_console.py [--quick] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "postbc"))
sys.path.insert(0, str(HERE))
W, H, CAM_HZ, CONTROL_HZ = 640, 480, 30.0, 10.0
CAMERAS = ("front", "wrist")

CAMERA_PUBLISHER = r"""
import sys, time
import numpy as np
import rclpy
from postbc import conversions as cv, topics
from sensor_msgs.msg import Image
W, H, HZ = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rclpy.init()
node = rclpy.create_node("bench_cameras")
pubs = [node.create_publisher(Image, topics.image_topic(c), topics.SENSOR_QOS) for c in sys.argv[4:]]
rng = np.random.default_rng(0)
base = (np.linspace(0, 255, W)[None, :, None] * np.ones((H, 1, 3))).astype(np.uint8)
frames = [np.clip(base + rng.integers(0, 24, (H, W, 3)), 0, 255).astype(np.uint8) for _ in range(8)]
i, t0 = 0, time.monotonic()
while rclpy.ok():
    for p in pubs:
        p.publish(cv.image_msg(frames[i % 8], time.time()))
    i += 1
    time.sleep(max(0.0, t0 + i / HZ - time.monotonic()))
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (s), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (the browser's renderer / GPU processes)."""
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        todo += [int(k) for k in kids]
    return out


def tree_cpu(root: int) -> float:
    total = 0.0
    for p in tree_pids(root):
        try:
            total += cpu_seconds(p)
        except (OSError, IndexError):
            pass
    return total


def phase(name: str, console: bool | str, browsers: int, seconds: float, store: Path, browser_exe: str,
          stream_hz: float = CAM_HZ) -> dict:
    import rclpy
    from postbc import runner, topics
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    # console True: as `postbc ros run` starts it (a process of its own); "composed": in the control process
    specs = runner.build("record_demos", [f"store={store}", "cameras=[]", f"control_hz={CONTROL_HZ}",
                                          f"console={'true' if console is True else 'false'}", "console_port=0",
                                          *([f"console.cameras=[{', '.join(CAMERAS)}]",
                                             f"console.stream_hz={stream_hz}"] if console is True else [])])
    url = ""
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    js_t: list[float] = []
    cmd_t: list[float] = []
    pw = browser = None
    try:
        with runner.Composition(specs, context=ctx) as comp:
            probe = Node("bench_probe", context=ctx)
            comp.executor.add_node(probe)
            probe.create_subscription(JointState, topics.JOINT_STATES, lambda m: js_t.append(time.monotonic()),
                                      topics.STATE_QOS)
            probe.create_subscription(JointTrajectory, topics.COMMAND, lambda m: cmd_t.append(time.monotonic()),
                                      topics.COMMAND_QOS)
            comp.start()
            con = None
            if console == "composed":  # the rejected design: the console's web server in the control process
                from functools import partial

                from postbc.node_main import construct
                from postbc.nodes.console import Console
                from rclpy.parameter import Parameter

                con = construct(partial(Console, "console", context=ctx, parameter_overrides=[
                    Parameter("port", value=0), Parameter("cameras", value=list(CAMERAS)),
                    Parameter("stream_hz", value=stream_hz), Parameter("profile", value="record_demos")]))
                comp.executor.add_node(con)
                url = con.server.url
            elif console:
                url = comp["console"].url
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (js_t and cmd_t):
                time.sleep(0.1)
            if browsers:
                from playwright.sync_api import sync_playwright

                pw = sync_playwright().start()
                browser = pw.chromium.launch(executable_path=browser_exe, headless=True)
                pages = [browser.new_page(viewport={"width": 1280, "height": 1000}) for _ in range(browsers)]
                for pg in pages:
                    pg.goto(url, timeout=60000)
                for pg in pages:
                    pg.wait_for_function("['front', 'wrist'].every(c => { const i = document.getElementById("
                                         "'cam-' + c); return i && i.naturalWidth > 0; })", timeout=60000)
            time.sleep(2.0)  # settle
            enc0 = sum(con.hub.encodes.values()) if con else 0
            js0, cmd0 = len(js_t), len(cmd_t)
            c0, w0 = time.process_time(), time.monotonic()
            b0 = browser_cpu()
            time.sleep(seconds)
            wall = time.monotonic() - w0
            cpu = (time.process_time() - c0) / wall
            bcpu = (browser_cpu() - b0) / wall
            rtf = comp["robot_driver"].status().get("real_time_factor")
            enc = (sum(con.hub.encodes.values()) - enc0) / wall if con else 0.0
            js = js_t[js0:]
            cmd = np.diff(cmd_t[cmd0:])
            probe.destroy_node()
            if con is not None:
                comp.executor.remove_node(con)
                con.destroy_node()
        dev = np.abs(cmd - 1.0 / CONTROL_HZ) * 1e3
        row = {"phase": name, "console": console, "browsers": browsers, "stream_hz": stream_hz,
               "seconds": round(wall, 2),
               "joint_states_hz": round(len(js) / wall, 2),
               "tick_dev_p50_ms": round(float(np.percentile(dev, 50)), 2),
               "tick_dev_p99_ms": round(float(np.percentile(dev, 99)), 2),
               "tick_dev_max_ms": round(float(dev.max()), 2), "ticks": int(cmd.size + 1),
               "control_hz_measured": round(float(1.0 / cmd.mean()), 3),
               "real_time_factor": rtf, "control_process_cpu_pct": round(100 * cpu, 1),
               "console_and_browser_cpu_pct": round(100 * bcpu, 1), "jpeg_encodes_per_s": round(enc, 1)}
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        rclpy.try_shutdown(context=ctx)
    return row


CAMERA_PID = [0]  # the camera publisher: a child of this process that is not a browser


def browser_cpu() -> float:
    """CPU seconds of the processes under this one other than the camera publisher: the console's process (as
    `postbc ros run` starts it), Playwright's driver and the chromium processes it started."""
    kids = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return sum(tree_cpu(int(k)) for k in kids if int(k) != CAMERA_PID[0])


def main() -> int:
    from common import write_result

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s phases (a smoke run; results/quick/)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase")
    args = ap.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if exe is None:
        sys.exit("needs Debian's chromium-headless-shell (apt-get install --no-install-recommends "
                 "chromium-headless-shell) and playwright (requirements/ci.txt)")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "ros2_ws/src/postbc"),
                                                        os.environ.get("PYTHONPATH", "")])}
    cams = subprocess.Popen([sys.executable, "-c", CAMERA_PUBLISHER, str(W), str(H), str(CAM_HZ), *CAMERAS], env=env)
    CAMERA_PID[0] = cams.pid
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, (name, console, browsers, hz) in enumerate((
                    ("console off", False, 0, CAM_HZ), ("no browser", True, 0, CAM_HZ),
                    ("two browsers", True, 2, CAM_HZ), ("2 br. 10 fps", True, 2, 10.0),
                    ("2 br. composed", "composed", 2, CAM_HZ))):
                rows.append(phase(name, console, browsers, seconds, Path(tmp) / f"d{i}.zarr", exe, hz))
                print(rows[-1], flush=True)
    finally:
        cams.terminate()
        cams.wait(10)
    base = next(r for r in rows if r["phase"] == "no browser")
    for r in rows:
        r["joint_states_rate_ratio"] = round(r["joint_states_hz"] / base["joint_states_hz"], 3)
        r["tick_dev_p99_ratio"] = round(r["tick_dev_p99_ms"] / max(base["tick_dev_p99_ms"], 1e-3), 2)
    print(f"\n{'phase':14s} {'js Hz':>7s} {'ratio':>6s} {'tick dev p50/p99/max ms':>24s} {'p99 ratio':>9s} "
          f"{'rtf':>5s} {'ctl cpu%':>8s} {'cons+br cpu%':>12s} {'enc/s':>6s}")
    for r in rows:
        print(f"{r['phase']:14s} {r['joint_states_hz']:7.1f} {r['joint_states_rate_ratio']:6.3f} "
              f"{r['tick_dev_p50_ms']:7.2f} / {r['tick_dev_p99_ms']:6.2f} / {r['tick_dev_max_ms']:6.2f} "
              f"{r['tick_dev_p99_ratio']:9.2f} {r['real_time_factor'] or 0:5.2f} {r['control_process_cpu_pct']:8.1f} "
              f"{r['console_and_browser_cpu_pct']:12.1f} {r['jpeg_encodes_per_s']:6.1f}")
    write_result("ros_console", {"cameras": {"n": len(CAMERAS), "width": W, "height": H, "hz": CAM_HZ},
                                 "control_hz": CONTROL_HZ, "seconds_per_phase": seconds,
                                 "baseline": "no browser", "rows": rows}, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
