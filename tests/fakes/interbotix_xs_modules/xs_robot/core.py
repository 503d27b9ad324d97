"""Stand-in for interbotix_xs_modules.xs_robot.core.InterbotixRobotXSCore (see package docstring)."""

import threading
from types import SimpleNamespace

import numpy as np

from interbotix_xs_modules import record

ARM_JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
JS_NAMES = ARM_JOINTS + ["gripper", "left_finger", "right_finger"]
# wx250s joint velocity limits are a few rad/s; the stand-in moves at most this far per streamed command.
MAX_STEP_PER_COMMAND = 0.3


class InterbotixRobotXSCore:
    def __init__(self, robot_model: str, robot_name: str | None = None, topic_joint_states: str = "joint_states",
                 logging_level=None, node_name: str = "robot_manipulation", node=None, args=None) -> None:
        record("core.__init__", robot_model=robot_model, robot_name=robot_name, node=node)
        self.robot_model = robot_model
        self.js_mutex = threading.Lock()
        self.js_index_map = {n: i for i, n in enumerate(JS_NAMES)}
        # Interbotix sleep pose for the wx250s (approximately): shoulder back, elbow folded.
        pos = [0.0, -1.80, 1.55, 0.0, 0.8, 0.0, 0.0, 0.037, -0.037]
        self.joint_states = SimpleNamespace(name=list(JS_NAMES), position=pos, velocity=[0.0] * 9,
                                            effort=[0.0] * 9,
                                            header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0)))
        self.torque = {"arm": True, "gripper": True}
        self.n_group_commands = 0

    # --- test helpers (not part of the SDK) ---
    def _set_arm(self, q) -> None:
        with self.js_mutex:
            self.joint_states.position[:6] = [float(v) for v in q]

    def _set_finger(self, opening: float) -> None:
        with self.js_mutex:
            self.joint_states.position[7] = float(opening)
            self.joint_states.position[8] = -float(opening)

    # --- SDK surface ---
    def robot_torque_enable(self, cmd_type: str, name: str, enable: bool) -> None:
        record("core.robot_torque_enable", cmd_type, name, enable)
        self.torque[name] = bool(enable)

    def robot_reboot_motors(self, cmd_type: str, name: str, enable: bool, smart_reboot: bool = False) -> None:
        record("core.robot_reboot_motors", cmd_type, name, enable, smart_reboot)

    def robot_write_commands(self, group_name: str, commands: list) -> None:
        record("core.robot_write_commands", group_name, commands)
        if group_name != "arm":
            raise KeyError(f"unknown group {group_name!r}")
        cmd = np.asarray(commands, dtype=float)
        if cmd.shape != (6,):
            raise ValueError(f"group 'arm' takes 6 commands, got {cmd.shape}")
        self.n_group_commands += 1
        if not self.torque.get("arm", False):
            return
        with self.js_mutex:
            cur = np.asarray(self.joint_states.position[:6])
            new = cur + np.clip(cmd - cur, -MAX_STEP_PER_COMMAND, MAX_STEP_PER_COMMAND)
            self.joint_states.velocity[:6] = list((new - cur) / 0.1)
            self.joint_states.position[:6] = list(new)

    def robot_write_joint_command(self, joint_name: str, command: float) -> None:
        record("core.robot_write_joint_command", joint_name, command)
        with self.js_mutex:
            self.joint_states.position[self.js_index_map[joint_name]] = float(command)

    def robot_get_joint_states(self):
        with self.js_mutex:
            return SimpleNamespace(**vars(self.joint_states))
