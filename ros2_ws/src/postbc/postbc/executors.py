"""The executor every postbc node and composition spins on: rclpy's MultiThreadedExecutor without its busy loop.

rclpy's MultiThreadedExecutor (Humble through Kilted 9.1.x) hands a ready callback to its thread pool and goes back
to waiting at once; the callback's task is not executing yet, so the next wait yields it again, submits it again and
returns immediately, until a worker thread has picked it up. While the spin thread loops like that it holds the GIL,
so the workers start late and the loop goes on (ros2/rclpy#1452, fixed upstream by ros2/rclpy#1547 in releases after
the pinned 9.1.2). Measured here (benchmarks/bench_ros_executor.py: a 100 Hz JointState publisher and a
subscriber in one process, 4 threads): rclpy's executor received 22-31 of the 100 msgs/s using a whole core, with
67-98 submissions per callback run; this one received all 100 using 0.23 of a core, one submission per callback.
tests/ros/test_ros_executors.py checks the one submission per callback.

The fix: after a callback is submitted, the spin thread waits (sleeping, so the GIL is free) until a worker has
started it or it is done. A callback then runs at most once per ready event, and the spin thread never has more
than one callback waiting for a worker. Everything else is rclpy's own executor.
"""

from __future__ import annotations

import time

from rclpy.executors import MultiThreadedExecutor as _RclpyMultiThreadedExecutor

_POLL_S = 2e-4  # how often the spin thread checks that a submitted callback has started


class MultiThreadedExecutor(_RclpyMultiThreadedExecutor):
    def _spin_once_impl(self, *args, **kwargs) -> None:
        futures = getattr(self, "_futures", None)  # the submitted callbacks (rclpy's own list)
        last = futures[-1] if futures else None
        super()._spin_once_impl(*args, **kwargs)
        futures = getattr(self, "_futures", None)  # re-read: some rclpy releases replace the list with a copy
        if futures and futures[-1] is not last:
            task = futures[-1]
            while not (task.executing() or task.done()) and not getattr(self, "_is_shutdown", False):
                time.sleep(_POLL_S)
