"""Stand-in for interbotix_xs_modules.xs_robot.gripper.InterbotixGripperXSInterface."""

from interbotix_xs_modules import record

OPEN, CLOSED = 0.037, 0.015  # left_finger joint state (m) when fully open / closed


class InterbotixGripperXSInterface:
    def __init__(self, core, gripper_name: str, gripper_pressure: float = 0.5,
                 gripper_pressure_lower_limit: int = 150, gripper_pressure_upper_limit: int = 350) -> None:
        record("gripper.__init__", gripper_name=gripper_name, gripper_pressure=gripper_pressure)
        self.core = core
        self.gripper_name = gripper_name
        self.gripper_pressure = gripper_pressure

    def set_pressure(self, pressure: float) -> None:
        record("gripper.set_pressure", pressure)
        if not 0.0 <= pressure <= 1.0:
            raise ValueError("pressure must be in [0, 1]")
        self.gripper_pressure = pressure

    def grasp(self, delay: float = 1.0) -> None:
        record("gripper.grasp", delay=delay)
        self.core._set_finger(CLOSED)

    def release(self, delay: float = 1.0) -> None:
        record("gripper.release", delay=delay)
        self.core._set_finger(OPEN)
