"""Sim tasks, one file each (XML in sim/assets). Use postbc_core.sim.registry.make(name) to build one."""

from postbc_core.sim.tasks.lift_cube import LiftCube, LiftCubeConfig
from postbc_core.sim.tasks.push_to_target import PushToTarget, PushToTargetConfig
from postbc_core.sim.tasks.put_in_bowl import PutInBowl, PutInBowlConfig

__all__ = ["LiftCube", "LiftCubeConfig", "PushToTarget", "PushToTargetConfig", "PutInBowl", "PutInBowlConfig"]
