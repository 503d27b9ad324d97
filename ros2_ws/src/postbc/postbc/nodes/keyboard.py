"""keyboard: the operator's terminal -> key presses for the teleop node (`ros2 run postbc keyboard`).

`ros2 launch` gives every node a pipe on stdin, never the terminal, so a launched node cannot read keys (the same
reason teleop_twist_keyboard is started with `ros2 run` in a terminal of its own). Run this next to
`ros2 launch postbc record_demos.launch.py` (or finetune on the real arm): it puts its terminal in cbreak mode,
publishes every key as a std_msgs/String on `keys_topic` (the teleop node's ~/keys; arrow keys as the letters bound
to the same axes), and restores the terminal on exit (Ctrl-C). Bindings: postbc/nodes/teleop.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from postbc_core.errors import ConfigError
from rclpy.node import Node
from std_msgs.msg import String

from postbc.node_main import main as node_main
from postbc.nodes.teleop import KEY_BINDINGS, TerminalReader
from postbc.params import declare

# Arrow keys are multi-byte escape sequences in the terminal and single keys on the topic: send the letter bound to
# the same axis and direction.
ARROW_KEYS = {name: next(k for k, b in KEY_BINDINGS.items() if len(k) == 1 and b == KEY_BINDINGS[name])
              for name in ("up", "down", "left", "right")}

HELP = ("keys: w/s a/d r/f move x/y/z, i/k j/l u/o pitch/yaw/roll (arrows: pitch/yaw), space gripper, x stop, "
        "Enter start/stop episode, Backspace discard, 1 success, 0 failure, h home; Ctrl-C quits")


@dataclass
class Params:
    keys_topic: str = "/teleop/keys"
    """std_msgs/String topic the teleop node reads key presses from (its ~/keys)."""

    def __post_init__(self):
        if not self.keys_topic:
            raise ConfigError("keys_topic is empty: give the teleop node's keys topic (default /teleop/keys)")


class Keyboard(Node):
    def __init__(self, node_name: str = "keyboard", *, context=None, parameter_overrides=None, namespace=""):
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides or [])
        self.params = p = declare(self, Params)
        if sys.stdin is None or not sys.stdin.isatty():
            self.destroy_node()
            raise ConfigError("the keyboard node reads key presses from its terminal, but its stdin is not one "
                              "(ros2 launch gives nodes a pipe): run `ros2 run postbc keyboard` in a terminal of its "
                              "own while the launch runs")
        self._pub = self.create_publisher(String, p.keys_topic, 10)
        self.n_keys = 0
        self._terminal = TerminalReader(self._on_key)
        self.get_logger().info(f"keyboard -> {p.keys_topic}; {HELP}")

    def _on_key(self, key: str) -> None:
        self._pub.publish(String(data=ARROW_KEYS.get(key, key)))
        self.n_keys += 1

    def destroy_node(self):
        terminal = getattr(self, "_terminal", None)
        if terminal is not None:
            terminal.close()  # the terminal gets its settings back, whatever ends the node
            self._terminal = None
        super().destroy_node()


def main(args=None):
    node_main(Keyboard, args)


if __name__ == "__main__":
    main()
