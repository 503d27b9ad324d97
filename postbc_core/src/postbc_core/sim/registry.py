"""Task registry: `make(name, **overrides)` builds a task; unknown names raise a ConfigError listing the known ones.

Also the observation-key advice of the tasks (the class attributes `recommended_obs_keys` and `randomized_keys`, see
sim/base.py Task): `recommended_obs_keys(task)` for `--obs-keys`, and `missing_randomized_keys(task, obs_keys)`, what a
key set leaves unseen of what the task's reset randomizes.

And the task's state keys outside the sim: `task_state_keys(task, poses)` computes, from the scene bodies' poses the
ROS sim driver publishes (/postbc/sim/object_poses, in `scene_bodies(task)` order), every observation key that
depends on those poses alone (object_pose, object_pos, object_yaw_feat, bowl_pos, target_pos, ...), with the task's
own code (Task.scene_observation), so a ROS node feeds a policy exactly what the sim's `observation()` gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from postbc_core.errors import ConfigError, PostBCError
from postbc_core.sim.base import Task
from postbc_core.sim.tasks import LiftCube, PushToTarget, PutInBowl

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (LiftCube, PutInBowl, PushToTarget)}
# Observation keys that show the whole scene: a policy that sees a camera image sees every randomized object.
IMAGE_KEY_SUFFIXES = ("_rgb", "_depth")


def list_tasks() -> list[str]:
    return sorted(TASKS)


def make(name: str, **overrides) -> Task:
    """Build task `name` with TaskConfig field overrides (e.g. cameras=("front",), action_mode="ee_delta") and
    optionally `limits=` the SafetyLimits of its safety layer (Task)."""
    return task_class(name)(**overrides)


def task_class(task_name: str) -> type[Task]:
    """The Task class of `task_name`; ConfigError listing the sim tasks for any other name."""
    if task_name not in TASKS:
        raise ConfigError(f"unknown sim task {task_name!r}; available: {', '.join(list_tasks())}")
    return TASKS[task_name]


def scene_bodies(task_name: str) -> tuple[str, ...]:
    """The scene bodies of `task_name` in the order the ROS sim driver publishes their poses on
    /postbc/sim/object_poses: the task object first, then the other free bodies, then mocap bodies (e.g.
    push_to_target: ("puck", "target"))."""
    return task_class(task_name).scene_body_names()


def task_state_keys(task_name: str, poses: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """The observation keys of `task_name` computed from its scene bodies' world poses alone, exactly as the task's
    `observation()` computes them (Task.scene_observation): object_pose (7,), object_pos (3,) m, object_yaw_feat (2,)
    (cube, corn), and the task's own (lift_cube: object_height (1,); put_in_bowl: bowl_pose (7,), bowl_pos (3,),
    object_to_bowl (3,); push_to_target: target_pos (3,), object_to_target (3,)), float64.

    `poses`: {body: (7,) [x y z m, qw qx qy qz]}, or an (N, 7) array in `scene_bodies(task_name)` order (a
    /postbc/sim/object_poses message). ConfigError for an unknown task; PostBCError when the poses do not match the
    task's scene bodies (a node configured with another task than the driver's)."""
    cls = task_class(task_name)
    if not isinstance(poses, Mapping):
        arr = np.asarray(poses, np.float64)
        names = cls.scene_body_names()
        if arr.ndim != 2 or arr.shape != (len(names), 7):
            raise PostBCError(f"{task_name}: got poses of shape {arr.shape}, need ({len(names)}, 7), one per scene "
                              f"body {list(names)} (/postbc/sim/object_poses of a driver running task {task_name!r}; "
                              "run every node with the driver's task)")
        poses = dict(zip(names, arr))
    return cls.scene_observation(poses)


def task_state_shapes(task_name: str) -> dict[str, tuple[int, ...]]:
    """{key: shape} of `task_state_keys(task_name, ...)` (what a ROS node can derive from the published poses)."""
    names = task_class(task_name).scene_body_names()
    identity = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    return {k: v.shape for k, v in task_state_keys(task_name, {b: identity for b in names}).items()}


def recommended_obs_keys(task_name: str) -> tuple[str, ...]:
    """The state observation keys to train `task_name` on (`--obs-keys`), e.g. lift_cube: joint_pos gripper_pos
    object_pos object_yaw_feat. They cover everything its reset randomizes. ConfigError for an unknown task."""
    return task_class(task_name).recommended_obs_keys


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
