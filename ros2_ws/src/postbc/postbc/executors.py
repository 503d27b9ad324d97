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
than one callback waiting for a worker. Everything else is rclpy's own executor, with two Humble gaps closed:
- thread count: without `num_threads`, Humble uses `multiprocessing.cpu_count()` (every core of the host) and Kilted
  `os.cpu_count()`, more threads than a pinned or CPU-limited process (taskset, a container's cpu quota) can run.
  Here the default is the CPUs this process may use (`usable_cpus`), at least 2 so a blocking service callback
  (the driver's go_home) never starves the others.
- `shutdown()`: Humble's MultiThreadedExecutor inherits Executor.shutdown, which never stops its thread pool, so
  a process's last executor threads outlive it; here shutdown also shuts the pool down (Kilted does the same).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from rclpy.executors import MultiThreadedExecutor as _RclpyMultiThreadedExecutor

_POLL_S = 2e-4  # how often the spin thread checks that a submitted callback has started
MIN_THREADS = 2


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets), capped by a cgroup v2 cpu quota
    (`docker run --cpus`, Kubernetes limits), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: the affinity mask is the limit
    return max(1, n)


class MultiThreadedExecutor(_RclpyMultiThreadedExecutor):
    def __init__(self, num_threads: int | None = None, **kwargs):
        super().__init__(num_threads=num_threads or max(MIN_THREADS, usable_cpus()), **kwargs)

    def shutdown(self, timeout_sec: float | None = None, **kwargs) -> bool:
        done = super().shutdown(timeout_sec, **kwargs)
        pool = getattr(self, "_executor", None)  # rclpy's ThreadPoolExecutor (Humble never shuts it down)
        if pool is not None:
            pool.shutdown(wait=done)  # join the threads unless a callback outlived the timeout
        return done

    def _spin_once_impl(self, *args, **kwargs) -> None:
        futures = getattr(self, "_futures", None)  # the submitted callbacks (rclpy's own list)
        last = futures[-1] if futures else None
        super()._spin_once_impl(*args, **kwargs)
        futures = getattr(self, "_futures", None)  # re-read: some rclpy releases replace the list with a copy
        if futures and futures[-1] is not last:
            task = futures[-1]
            while not (task.executing() or task.done()) and not getattr(self, "_is_shutdown", False):
                time.sleep(_POLL_S)
