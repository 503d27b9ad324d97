"""`main(args=None)` shared by every node's console script: init, spin, and a shutdown a robot can trust.

Shutdown order: SIGINT (Ctrl-C: the terminal sends it to `ros2 launch` and every node, and launch sends it again)
or SIGTERM (launch's escalation, `docker stop`, systemd) only sets a stop flag. The spin loop ends, the node's
`destroy_node` stops its threads and finishes its work (the driver parks or holds the arm, the recorder discards an
open episode, the finetune manager saves) while the ROS context is still valid, then the context is shut down. rclpy's
own handlers (installed by a plain `rclpy.init()`) instead shut the context down from the signal, before any of that
runs, so a node's last publish fails with "publisher's context is invalid" and a second Ctrl-C interrupts cleanup
with a KeyboardInterrupt traceback; here later signals are ignored while cleanup runs (launch escalates to SIGKILL
if a node ever hangs).

Configuration errors (bad parameters, missing checkpoint or device) and a node's fatal runtime error (PostBCError
raised from a callback, e.g. a camera unplugged) print `error: ...` and exit 2 instead of a traceback, like the
`postbc` command; a launch file stops the whole launch on it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import signal
import sys
import threading

import rclpy
from postbc_core.errors import PostBCError
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.signals import SignalHandlerOptions

from postbc.executors import MultiThreadedExecutor

SPIN_PERIOD_S = 0.1  # how often the spin loop looks at the stop flag (a signal is acted on within this)


class StopSignals:
    """SIGINT / SIGTERM -> `event` (the first one; later ones are ignored so cleanup can finish).
    Install from the main thread; `restore()` puts the previous handlers back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.event = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


class RosLogHandler(logging.Handler):
    """postbc_core's Python logging -> the ROS log (console + /rosout), at most one line per second per severity.
    The library warns per control step (a step shortened by the safety layer, an IK residual); a node that
    printed each would flood the operator's terminal at 10-100 Hz, while the nodes report what matters on their own
    logs. One rclpy call site per severity: rclpy refuses a call site whose severity changes."""

    def __init__(self, name: str = "postbc_core"):
        super().__init__(logging.INFO)
        self.ros_logger = get_logger(name)

    def emit(self, record: logging.LogRecord) -> None:
        msg = self.format(record)
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(msg, throttle_duration_sec=1.0)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(msg, throttle_duration_sec=1.0)
        else:
            self.ros_logger.info(msg, throttle_duration_sec=1.0)


def route_library_logs() -> None:
    lib = logging.getLogger("postbc_core")
    if not any(isinstance(h, RosLogHandler) for h in lib.handlers):
        lib.addHandler(RosLogHandler())
        lib.propagate = False


def init(args: list[str] | None = None, context=None) -> StopSignals:
    """rclpy.init without rclpy's signal handlers (see the module doc) + our StopSignals; postbc_core's Python
    logging goes to the ROS log, rate-limited (RosLogHandler)."""
    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
    route_library_logs()
    # After init: rclpy.init(..., NO) puts the handlers rclpy found at import back in place (Python's defaults).
    return StopSignals().install()


def exit_now(code: int) -> None:
    """End the process once its cleanup is done: run the atexit handlers, flush, and skip the interpreter's module
    teardown, which takes about a second with torch and mujoco loaded (more on a loaded 2-core machine) and
    would eat into launch's 5 s SIGINT grace for nothing (measured: ~1 s of the ~2.3 s a finetune_manager needed
    from SIGINT to exit)."""
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def construct(node_cls, *args, **kwargs):
    """`node_cls(*args, **kwargs)`; when its __init__ fails (a bad parameter, a device or store it cannot open),
    the half-built node is destroyed as a plain rclpy Node before the error goes up. Otherwise the context keeps it
    and destroys it again at shutdown, through the node's own destroy_node, which expects a finished __init__: a
    second traceback after the node's error line."""
    from rclpy.node import Node

    while isinstance(node_cls, functools.partial):  # a node class with bound arguments (tests, Composition)
        node_cls, args, kwargs = node_cls.func, (*node_cls.args, *args), {**node_cls.keywords, **kwargs}
    if not isinstance(node_cls, type):  # any other factory: nothing half-built is reachable from here
        return node_cls(*args, **kwargs)
    node = node_cls.__new__(node_cls)
    try:
        node.__init__(*args, **kwargs)
    except BaseException:
        with contextlib.suppress(Exception):  # Node.__init__ itself may have failed, or the node cleaned up already
            Node.destroy_node(node)
        raise
    return node


def main(node_cls, args: list[str] | None = None) -> None:
    """A node's console-script entry point: run it, then exit_now with its exit code."""
    exit_now(run_node(node_cls, args))


def run_node(node_cls, args: list[str] | None = None, context=None) -> int:
    """Run `node_cls` until SIGINT / SIGTERM or the context ends (context None: rclpy's default one)."""
    stop = init(args, context=context)
    node = None
    executor = None
    code = 0
    try:
        node = construct(node_cls, **({"context": context} if context is not None else {}))
        executor = MultiThreadedExecutor(context=context)
        executor.add_node(node)
        while not stop.event.is_set() and rclpy.ok(context=context):
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except PostBCError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if executor is not None:
                executor.shutdown(timeout_sec=5.0)  # running callbacks finish before the node goes away
            if node is not None:
                node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
            stop.restore()
    return code
