"""Robot interface and backends. Layers, bottom up: base (joint names, actions, readings) -> kinematics -> actions (the
one action -> joint-target conversion) and observation (the robot's observation keys) -> safety (the layer and
`make_safety_layer`) -> robot (the `Robot` interface) -> the backends. Heavy backends load on first
use: SimRobot drives a sim task its caller builds (postbc_core.sim.make, which imports mujoco), InterbotixRobot
imports interbotix_xs_modules only in connect()."""

from postbc_core.robots.base import (
    JOINT_NAMES,
    N_JOINTS,
    EEDeltaAction,
    JointAction,
    JointReading,
    SentCommand,
)
from postbc_core.robots.robot import Robot

_LAZY = {
    "SafetyLayer": "postbc_core.robots.safety",
    "SafetyLimits": "postbc_core.robots.safety",
    "SafetyStats": "postbc_core.robots.safety",
    "make_safety_layer": "postbc_core.robots.safety",
    "SimRobot": "postbc_core.robots.sim_robot",
    "InterbotixRobot": "postbc_core.robots.interbotix",
    "InterbotixConfig": "postbc_core.robots.interbotix",
    "TrajectoryExecutor": "postbc_core.robots.controller",
    "ExecutorConfig": "postbc_core.robots.controller",
}

__all__ = [
    "JOINT_NAMES",
    "N_JOINTS",
    "EEDeltaAction",
    "ExecutorConfig",
    "InterbotixConfig",
    "InterbotixRobot",
    "JointAction",
    "JointReading",
    "Robot",
    "SafetyLayer",
    "SafetyLimits",
    "SafetyStats",
    "SentCommand",
    "SimRobot",
    "TrajectoryExecutor",
    "make_safety_layer",
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'postbc_core.robots' has no attribute {name!r}")
