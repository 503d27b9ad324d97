"""postbc.executors.MultiThreadedExecutor: each ready callback is handed to the thread pool once (rclpy's own
executor of the pinned version hands a callback over again and again until a worker starts it: ros2/rclpy#1452).
Counts, not timings: the speed and CPU figures are in benchmarks/bench_ros_executor.py."""

from __future__ import annotations

import threading

import rclpy.executors
from postbc import executors
from ros_helpers import wait_for
from std_msgs.msg import Int32

N = 200


class CountingPool:
    """Wraps the executor's ThreadPoolExecutor and counts what the spin thread submits to it."""

    def __init__(self, pool):
        self.pool, self.submitted = pool, 0

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, *args, **kwargs):
        return self.pool.shutdown(*args, **kwargs)


def _submissions_per_message(ros_context, executor_cls) -> tuple[list[int], int]:
    """Publish N messages (reliable, depth N: none is lost) to a subscription spun by `executor_cls`; return
    (the messages received, callbacks submitted to the pool)."""
    pub_node = rclpy.create_node("pub", context=ros_context)
    sub_node = rclpy.create_node("sub", context=ros_context)
    got = []
    sub_node.create_subscription(Int32, "/postbc_test/count", lambda m: got.append(m.data), N)
    pub = pub_node.create_publisher(Int32, "/postbc_test/count", N)
    ex = executor_cls(num_threads=4, context=ros_context)
    pool = ex._executor = CountingPool(ex._executor)
    ex.add_node(sub_node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        wait_for(lambda: pub.get_subscription_count() > 0, 10.0, what="the subscription to match")
        for i in range(N):
            pub.publish(Int32(data=i))
        wait_for(lambda: len(got) == N, 30.0, what=f"{N} messages")
        return got, pool.submitted
    finally:
        ex.shutdown(timeout_sec=2.0)
        spin.join(5.0)
        sub_node.destroy_node()
        pub_node.destroy_node()


def test_each_callback_is_submitted_once(ros_context):
    received, submitted = _submissions_per_message(ros_context, executors.MultiThreadedExecutor)
    assert sorted(received) == list(range(N))  # each message's callback ran exactly once
    # One submission per message, plus at most a few for the executor's own guard conditions / waitables.
    assert N <= submitted <= N + 10, submitted


def test_is_rclpys_executor(ros_context):
    """A drop-in: the same class hierarchy, so code written against rclpy's executor API keeps working."""
    ex = executors.MultiThreadedExecutor(context=ros_context)
    try:
        assert isinstance(ex, rclpy.executors.MultiThreadedExecutor)
    finally:
        ex.shutdown(timeout_sec=1.0)


def test_default_thread_count_is_the_usable_cpus(monkeypatch, ros_context):
    """Without num_threads: the CPUs this process may use (at least 2), not every core of the host (Humble:
    multiprocessing.cpu_count(), Jazzy/Kilted: os.cpu_count())."""
    for usable, expected in ((3, 3), (1, executors.MIN_THREADS)):
        monkeypatch.setattr(executors, "usable_cpus", lambda n=usable: n)
        ex = executors.MultiThreadedExecutor(context=ros_context)
        try:
            assert ex._executor._max_workers == expected
        finally:
            ex.shutdown(timeout_sec=1.0)
    ex = executors.MultiThreadedExecutor(num_threads=5, context=ros_context)
    assert ex._executor._max_workers == 5
    ex.shutdown(timeout_sec=1.0)


def test_usable_cpus_follows_affinity_and_cgroup_quota(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker run --cpus 1.5
    assert executors.usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert executors.usable_cpus(tmp_path) == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("20000 100000\n")
    assert executors.usable_cpus(tmp_path) == 1
    # taskset -c 0: one CPU whatever the host has
    code = ("import os; os.sched_setaffinity(0, {0}); from postbc import executors; "
            f"print(executors.usable_cpus(__import__('pathlib').Path({str(tmp_path / 'none')!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_shutdown_stops_the_thread_pool(ros_context):
    """Humble's and Jazzy's MultiThreadedExecutor inherit Executor.shutdown, which leaves the thread pool running."""
    from rclpy.node import Node

    ex = executors.MultiThreadedExecutor(num_threads=2, context=ros_context)
    node = Node("pool_probe", context=ros_context)
    ran = threading.Event()
    node.create_timer(0.01, ran.set)
    ex.add_node(node)
    while not ran.is_set():
        ex.spin_once(timeout_sec=0.1)
    pool = ex._executor
    assert ex.shutdown(timeout_sec=5.0)
    assert pool._shutdown and not any(t.is_alive() for t in pool._threads)
    node.destroy_node()
