"""rclpy executor cost: postbc.executors.MultiThreadedExecutor vs rclpy's own, on the recorder's heaviest input.

One process, as `postbc ros run` composes nodes: a publisher node sends /joint_states at 100 Hz from a timer (a
JointState as the driver publishes it) and a subscriber node receives it, both spun by the executor under test
(4 threads). Each executor in turn, same machine, same run: messages received per second, the CPU this process
used (process time / wall time, 1.0 = one core) and callbacks submitted to the thread pool per callback run.
rclpy's executor (pinned 9.1.2) re-submits a ready callback until a worker starts it, holding the GIL meanwhile
(ros2/rclpy#1452); ours waits for the worker instead.

    python benchmarks/bench_ros_executor.py [--quick] [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "postbc"))
sys.path.insert(0, str(HERE))


def measure(executor_cls, seconds: float) -> dict:
    import rclpy
    from postbc import conversions as cv
    from postbc import topics
    from postbc_core.robots.kinematics import HOME_QPOS
    from rclpy.context import Context
    from sensor_msgs.msg import JointState

    ctx = Context()
    rclpy.init(context=ctx)
    pub_node = rclpy.create_node("bench_joint_states", context=ctx)
    pub = pub_node.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
    pub_node.create_timer(0.01, lambda: pub.publish(cv.joint_state_msg(HOME_QPOS, 0.03, time.time())))
    node = rclpy.create_node("bench_subscriber", context=ctx)
    count = [0]
    node.create_subscription(JointState, topics.JOINT_STATES, lambda m: count.__setitem__(0, count[0] + 1),
                             topics.STATE_QOS)
    ex = executor_cls(num_threads=4, context=ctx)
    pool, submitted = ex._executor, [0]

    def submit(fn, *a, **kw):
        submitted[0] += 1
        return pool_submit(fn, *a, **kw)

    pool_submit, pool.submit = pool.submit, submit
    ex.add_node(pub_node)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 20.0
        while count[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if count[0] == 0:
            raise RuntimeError("no /joint_states received in 20 s")
        time.sleep(1.0)  # settle
        c0, n0, s0, t0 = time.process_time(), count[0], submitted[0], time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        msgs = count[0] - n0
        # two callbacks per message: the publisher's timer and the subscription
        return {"msgs_per_s": msgs / dt, "cpu_cores": (time.process_time() - c0) / dt,
                "submits_per_callback": (submitted[0] - s0) / max(2 * msgs, 1)}
    finally:
        ex.shutdown(timeout_sec=2.0)
        th.join(5.0)
        pub_node.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s per executor; writes under results/quick/")
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args(argv)
    seconds = 1.0 if a.quick else a.seconds

    import rclpy.executors
    from common import write_result
    from postbc import executors

    rows = {"rclpy": measure(rclpy.executors.MultiThreadedExecutor, seconds),
            "postbc": measure(executors.MultiThreadedExecutor, seconds)}
    for name, r in rows.items():
        print(f"{name:7s} executor: {r['msgs_per_s']:6.1f} msgs/s of 100 published, {r['cpu_cores']:.3f} cores, "
              f"{r['submits_per_callback']:.2f} submits per callback")
    cpu_ratio = rows["rclpy"]["cpu_cores"] / max(rows["postbc"]["cpu_cores"], 1e-9)
    rate_ratio = rows["postbc"]["msgs_per_s"] / max(rows["rclpy"]["msgs_per_s"], 1e-9)
    print(f"postbc vs rclpy: {cpu_ratio:.1f}x less CPU, {rate_ratio:.2f}x the received rate")
    write_result("ros_executor_cpu", {"published_hz": 100.0, "seconds": seconds, "executors": rows,
                                      "cpu_ratio_rclpy_over_postbc": cpu_ratio,
                                      "rate_ratio_postbc_over_rclpy": rate_ratio}, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
