"""Helpers for the rclpy tests: a background-spun graph of nodes, polling, service calls."""

from __future__ import annotations

import threading
import time

import numpy as np

from postbc.executors import MultiThreadedExecutor


class Graph:
    """Nodes in one context spun by postbc.executors.MultiThreadedExecutor on a background thread."""

    def __init__(self, context):
        self.context = context
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.nodes = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok():
                    return
                raise

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str):
        """A plain helper node (test publishers/subscribers/clients) in this graph."""
        from rclpy.node import Node

        return self.add(Node(name, context=self.context))

    def close(self):
        for n in reversed(self.nodes):
            self.executor.remove_node(n)
            n.destroy_node()
        self.executor.shutdown(timeout_sec=2.0)


def wait_for(predicate, timeout: float = 10.0, period: float = 0.02, what: str = "condition"):
    """Poll `predicate()` until truthy (returns its value) or fail after `timeout` s naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


def call_service(node, srv_type, name: str, request=None, timeout: float = 10.0):
    """Call a service from a node already spun by a Graph; returns the response."""
    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=timeout):
        raise AssertionError(f"service {name} not available after {timeout} s")
    fut = client.call_async(request if request is not None else srv_type.Request())
    wait_for(fut.done, timeout, what=f"response of {name}")
    node.destroy_client(client)
    return fut.result()


def check_stream_accounting(ep: dict, streams: dict, names, max_age: float = 0.25) -> None:
    """The recorder's per-stream counts agree with the episode it wrote, whatever the machine's load.

    How fresh a stream is at a tick depends on the CPU the publisher got (a starved renderer on a loaded 2-core
    runner delivers a frame after the tick that wanted it), so tests assert the accounting, not the timing: every
    row's `<stream>_stamp` is causal (never after the row's tick) and never goes back, the stream kept arriving
    during the episode, and "late" counts exactly the rows whose stamp was older than `max_age` (plus at most the
    last tick, sampled at stop and never written)."""
    t = ep["timestamp"]
    for name in names:
        stamp = ep[f"{name}_stamp"]
        c = streams[name]
        assert np.all(stamp >= 0) and np.all(stamp <= t + 1e-9), (name, t - stamp)
        assert np.all(np.diff(stamp) >= 0), (name, stamp)
        assert stamp[-1] > stamp[0] and c["received"] >= 2, (name, c)
        late_rows = int(np.sum(t - stamp > max_age))  # the recorder's own test, on the same float64s
        assert late_rows <= c["late"] <= late_rows + 1, (name, late_rows, c)
        assert c["dropped"] >= 0 and c["repeated"] >= 0, (name, c)
