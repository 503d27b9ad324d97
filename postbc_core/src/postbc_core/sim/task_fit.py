"""Which sim task a policy can run in: the task overrides that make a task render a policy's cameras at its image
size, the check that a task provides every observation key the policy needs (shape for shape), and the check that a
checkpoint runs in a task it was trained on.

Evaluation (sim/evaluation.py), finetuning's sim driver (rl/finetune.py) and the chunk analysis build their tasks
through it, so none of them needs another's module to know what a policy asks of the sim.
"""

from __future__ import annotations

import logging

import numpy as np

from postbc_core.errors import ConfigError
from postbc_core.sim.base import CAMERAS, Task
from postbc_core.sim.registry import list_tasks

logger = logging.getLogger(__name__)


def task_keys(task: Task) -> dict[str, tuple[int, ...]]:
    """Observation keys (per-step shapes) a task can provide: its state keys plus `<camera>_rgb` for every camera
    (at the configured image size)."""
    obs = task.observation(render=False)
    keys = {k: tuple(np.shape(v)) for k, v in obs.items() if k != "success"}
    h, w = task.config.image_size
    keys.update({f"{c}_rgb": (h, w, 3) for c in CAMERAS})
    return keys


def task_overrides_for_policy(obs_shapes: dict[str, tuple[int, ...]]) -> dict:
    """TaskConfig overrides that make the task render the policy's cameras at the policy's image size."""
    cams = [k[: -len("_rgb")] for k in obs_shapes if k.endswith("_rgb") and k[: -len("_rgb")] in CAMERAS]
    if not cams:
        return {}
    sizes = {tuple(obs_shapes[f"{c}_rgb"][:2]) for c in cams}
    if len(sizes) > 1:
        raise ConfigError(f"policy cameras {cams} have different image sizes {sorted(sizes)}; the sim renders every "
                          "camera at one image_size")
    return {"cameras": tuple(cams), "image_size": sizes.pop()}


def check_policy_fits_task(obs_shapes: dict[str, tuple[int, ...]], task: Task) -> None:
    """ConfigError naming every policy key the task cannot provide (missing, or with another shape)."""
    have = task_keys(task)
    missing = [k for k in obs_shapes if k not in have]
    wrong = [f"{k}: policy {tuple(obs_shapes[k])} vs task {have[k]}" for k in obs_shapes
             if k in have and tuple(obs_shapes[k]) != have[k]]
    if missing or wrong:
        raise ConfigError(f"the checkpoint needs observation keys the task {task.name!r} cannot provide: "
                          f"missing {missing}, shape mismatch {wrong}; the task provides "
                          f"{sorted(have)} (retrain with --obs-keys from these, or pick the task it was trained on)")


def check_checkpoint_task(info: dict, task: str, checkpoint, allow_other_task: bool = False) -> None:
    """Refuse to run a checkpoint in a sim task other than the one(s) it was trained on (its info["train"]["tasks"]:
    the task names of its training store's metadata) unless `allow_other_task` (then warn). Nothing to check for
    checkpoints that record no sim task: trained before tasks were recorded, or on a store without task metadata
    (diffusion_policy's layout) or with a real-robot task."""
    trained = [t for t in (info.get("train", {}).get("tasks") or []) if t in list_tasks()]
    if not trained or task in trained:
        return
    names = " / ".join(map(repr, trained))
    if allow_other_task:
        logger.warning("%s was trained on sim task %s and runs in %r: its success rate there says nothing about what "
                       "it learned", checkpoint, names, task)
        return
    raise ConfigError(f"--task {task!r}: the checkpoint {checkpoint} was trained on sim task {names} (its training "
                      f"store's metadata), so its success rate on {task!r} measures nothing it learned; evaluate it "
                      f"with --task {trained[0]}, or pass --allow-other-task to run it on {task!r} anyway")
