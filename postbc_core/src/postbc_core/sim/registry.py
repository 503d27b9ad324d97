"""Task registry: `make(name, **overrides)` builds a task; unknown names raise a ConfigError listing the known ones."""

from __future__ import annotations

from postbc_core.errors import ConfigError
from postbc_core.sim.base import Task
from postbc_core.sim.tasks import LiftCube, PushToTarget, PutInBowl

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (LiftCube, PutInBowl, PushToTarget)}


def list_tasks() -> list[str]:
    return sorted(TASKS)


def make(name: str, **overrides) -> Task:
    """Build task `name` with TaskConfig field overrides (e.g. cameras=("front",), action_mode="ee_delta")."""
    if name not in TASKS:
        raise ConfigError(f"unknown sim task {name!r}; available: {', '.join(list_tasks())}")
    return TASKS[name](**overrides)
