"""Task registry: `make(name, **overrides)` builds a task; unknown names raise a ConfigError listing the known ones.

Also the observation-key advice of the tasks (the class attributes `recommended_obs_keys` and `randomized_keys`, see
sim/base.py Task): `recommended_obs_keys(task)` for `--obs-keys`, and `missing_randomized_keys(task, obs_keys)`, what a
key set leaves unseen of what the task's reset randomizes.
"""

from __future__ import annotations

from collections.abc import Iterable

from postbc_core.errors import ConfigError
from postbc_core.sim.base import Task
from postbc_core.sim.tasks import LiftCube, PushToTarget, PutInBowl

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (LiftCube, PutInBowl, PushToTarget)}
# Observation keys that show the whole scene: a policy that sees a camera image sees every randomized object.
IMAGE_KEY_SUFFIXES = ("_rgb", "_depth")


def list_tasks() -> list[str]:
    return sorted(TASKS)


def make(name: str, **overrides) -> Task:
    """Build task `name` with TaskConfig field overrides (e.g. cameras=("front",), action_mode="ee_delta")."""
    if name not in TASKS:
        raise ConfigError(f"unknown sim task {name!r}; available: {', '.join(list_tasks())}")
    return TASKS[name](**overrides)


def recommended_obs_keys(task_name: str) -> tuple[str, ...]:
    """The state observation keys to train `task_name` on (`--obs-keys`), e.g. lift_cube: joint_pos gripper_pos
    object_pos object_yaw_feat. They cover everything its reset randomizes. ConfigError for an unknown task."""
    if task_name not in TASKS:
        raise ConfigError(f"unknown sim task {task_name!r}; available: {', '.join(list_tasks())}")
    return TASKS[task_name].recommended_obs_keys


def missing_randomized_keys(task_name: str, obs_keys: Iterable[str]) -> list[str]:
    """What `task_name`'s reset randomizes that none of `obs_keys` carries: one human-readable line per quantity,
    e.g. "bowl position (x, y): put_in_bowl's reset randomizes it; add one of --obs-keys bowl_pos, bowl_pose,
    object_to_bowl". Empty when the keys cover every needed quantity, when they include a camera image (`*_rgb`,
    `*_depth`: the image shows the scene), and for a task name that is not a sim task (real-robot stores)."""
    cls = TASKS.get(task_name)
    if cls is None:
        return []
    keys = set(obs_keys)
    if any(k.endswith(IMAGE_KEY_SUFFIXES) for k in keys):
        return []
    return [f"{q.what}: {task_name}'s reset randomizes it; add one of --obs-keys {', '.join(q.keys)}"
            for q in cls.randomized_keys if q.needed and not keys.intersection(q.keys)]
