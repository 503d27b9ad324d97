"""Stand-in for interbotix_xs_modules.xs_robot.arm (InterbotixManipulatorXS, InterbotixArmXSInterface)."""

from interbotix_xs_modules import record
from interbotix_xs_modules.xs_robot.core import InterbotixRobotXSCore
from interbotix_xs_modules.xs_robot.gripper import InterbotixGripperXSInterface

SLEEP = [0.0, -1.80, 1.55, 0.0, 0.8, 0.0]


class InterbotixManipulatorXS:
    def __init__(self, robot_model: str, group_name: str = "arm", gripper_name: str = "gripper",
                 robot_name: str | None = None, moving_time: float = 2.0, accel_time: float = 0.3,
                 gripper_pressure: float = 0.5, gripper_pressure_lower_limit: int = 150,
                 gripper_pressure_upper_limit: int = 350, topic_joint_states: str = "joint_states",
                 logging_level=None, node_name: str = "robot_manipulation", node=None,
                 iterative_update_fk: bool = True) -> None:
        record("InterbotixManipulatorXS.__init__", robot_model=robot_model, group_name=group_name,
               gripper_name=gripper_name, robot_name=robot_name, moving_time=moving_time, node=node)
        self.core = InterbotixRobotXSCore(robot_model=robot_model, robot_name=robot_name, node=node)
        self.arm = InterbotixArmXSInterface(self.core, robot_model, group_name, moving_time, accel_time)
        self.gripper = None
        if gripper_name is not None:
            self.gripper = InterbotixGripperXSInterface(self.core, gripper_name, gripper_pressure,
                                                        gripper_pressure_lower_limit, gripper_pressure_upper_limit)

    def shutdown(self) -> None:
        record("InterbotixManipulatorXS.shutdown")


class InterbotixArmXSInterface:
    def __init__(self, core, robot_model: str, group_name: str, moving_time: float = 2.0,
                 accel_time: float = 0.3) -> None:
        self.core = core
        self.group_name = group_name
        self.moving_time, self.accel_time = moving_time, accel_time

    def set_trajectory_time(self, moving_time: float | None = None, accel_time: float | None = None) -> None:
        record("arm.set_trajectory_time", moving_time=moving_time, accel_time=accel_time)
        if moving_time is not None:
            self.moving_time = moving_time
        if accel_time is not None:
            self.accel_time = accel_time

    def set_joint_positions(self, joint_positions: list[float], moving_time: float | None = None,
                            accel_time: float | None = None, blocking: bool = True) -> bool:
        record("arm.set_joint_positions", joint_positions, moving_time=moving_time, accel_time=accel_time,
               blocking=blocking)
        self.set_trajectory_time(moving_time, accel_time)
        self.core._set_arm(joint_positions)  # a blocking time-profiled move ends at the target
        return True

    def go_to_home_pose(self, moving_time: float | None = None, accel_time: float | None = None, blocking: bool = True) -> None:
        record("arm.go_to_home_pose", moving_time=moving_time, accel_time=accel_time, blocking=blocking)
        self.core._set_arm([0.0] * 6)

    def go_to_sleep_pose(self, moving_time: float | None = None, accel_time: float | None = None, blocking: bool = True) -> None:
        record("arm.go_to_sleep_pose", moving_time=moving_time, accel_time=accel_time, blocking=blocking)
        self.core._set_arm(SLEEP)

    def get_joint_commands(self) -> list[float]:
        return list(self.core.joint_states.position[:6])
