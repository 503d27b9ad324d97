"""MuJoCo twin of the WidowX 250s: the robot model, tasks behind a registry, gymnasium envs (postbc_core.sim.env)."""

from postbc_core.sim.base import PHYSICS_DT, RandomizedQuantity, Task, TaskConfig, WidowXSim
from postbc_core.sim.registry import (
    TASKS,
    list_tasks,
    make,
    missing_randomized_keys,
    recommended_obs_keys,
    scene_bodies,
    task_state_keys,
    task_state_shapes,
)

__all__ = ["PHYSICS_DT", "TASKS", "RandomizedQuantity", "Task", "TaskConfig", "WidowXSim", "list_tasks", "make",
           "missing_randomized_keys", "recommended_obs_keys", "scene_bodies", "task_state_keys", "task_state_shapes"]
