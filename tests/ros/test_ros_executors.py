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
