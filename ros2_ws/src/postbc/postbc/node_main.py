"""`main(args=None)` shared by every node's console script: init, spin on a multi-threaded executor, clean exit.

Configuration errors (bad parameters, missing checkpoint or device) print `error: ...` and exit 2 instead of a
traceback, like the `postbc` command.
"""

from __future__ import annotations

import sys

import rclpy
from postbc_core.errors import PostBCError
from rclpy.executors import ExternalShutdownException

from postbc.executors import MultiThreadedExecutor


def run_node(node_cls, args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except PostBCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
