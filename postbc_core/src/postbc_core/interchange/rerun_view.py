"""`postbc data view`: episodes in Rerun (cameras, joints, commands, reward / done, labels) on the timelines `step`
(the store's row index), `frame` (the step within its episode) and `time` (the stored timestamp), plus, given a
checkpoint, the action chunk the policy predicts from the recorded observations.

Entities: `cameras/<camera>` (rgb Image), `cameras/<camera>/depth` (DepthImage, mm), `state/<key>` (Scalars, one
series per dimension: joint_pos, gripper_pos, ...), `action/<key>` (cmd_joint_pos, cmd_ee_delta), `reward`, `done`,
`episode` (a text log at each start with its task, source and label), and with a policy `policy/action` (the action
it would send at the step) and `policy/chunk/<i>` (LineStrips2D: the predicted chunk of dimension i over the steps
it covers, drawn at the step it was planned).

The policy runs as it would live (control/runner.py PolicyRunner): its observation history is reset at every
episode start, it plans every `n_action_steps` steps from the recorded observations (images resized to its input
size), with noise from a generator seeded per episode, so two views of the same checkpoint agree.

Without a viewer (no display, or `--save`) everything goes to an `.rrd` file, opened later with `rerun FILE.rrd`.

Shape legend: T steps of one episode, Ta action steps (chunk), Da action dim.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from postbc_core.data.store import EpisodeStore
from postbc_core.errors import ConfigError
from postbc_core.interchange.common import (
    atomic_output,
    camera_keys,
    camera_name,
    check_output,
    read_episode,
    require,
    select_episodes,
)
from postbc_core.robots.base import JOINT_NAMES

log = logging.getLogger(__name__)

SERIES_NAMES = {"joint_pos": list(JOINT_NAMES), "joint_vel": list(JOINT_NAMES), "joint_effort": list(JOINT_NAMES),
                "gripper_pos": ["gripper"], "cmd_joint_pos": [*JOINT_NAMES, "gripper"],
                "ee_pose": ["x", "y", "z", "qw", "qx", "qy", "qz"],
                "cmd_ee_delta": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]}
ACTION_KEYS = ("cmd_joint_pos", "cmd_ee_delta")
# State keys plotted when present (other low-dim keys go under data/<key>).
STATE_KEYS = ("joint_pos", "gripper_pos", "joint_vel", "joint_effort", "ee_pose")


def view(src: str | os.PathLike, *, episodes: Sequence[int] = (0,), checkpoint: str | os.PathLike | None = None,
         save: str | os.PathLike | None = None, spawn: bool | None = None, overwrite: bool = False,
         n_action_steps: int | None = None, seed: int = 0, device: str = "cpu") -> dict:
    """Log `episodes` of the store `src` to Rerun (module docstring).

    save: write this .rrd file (refused if it exists, unless `overwrite`). spawn: open the Rerun viewer (default:
    when a display is there and no `save`); with neither, the recording goes to `<store name>.rrd` in the current
    directory. checkpoint: a policy checkpoint or run directory whose chunks to show; n_action_steps: actions run per
    chunk before replanning (default the policy's chunk length); seed: its noise seed.
    Returns {"path" (the .rrd or None), "episodes", "steps", "chunks"}.
    """
    rr = require("rerun", "rerun", "postbc data view")
    display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    spawn = (display and save is None) if spawn is None else spawn
    path = None
    if not spawn:
        path = Path(save) if save is not None else Path.cwd() / f"{Path(src).name.removesuffix('.zarr')}.rrd"
        if path.suffix != ".rrd":
            raise ConfigError(f"--save {path}: a Rerun recording file ends in .rrd")
        check_output(path, src, overwrite)
    with EpisodeStore.open(src, "r") as store:
        picked = select_episodes(store, list(episodes))
        runner = _runner(checkpoint, store, n_action_steps, device) if checkpoint is not None else None
        rec = rr.RecordingStream(application_id="postbc_data_view")
        if spawn:
            rec.spawn()
            return {"path": None, **_log_all(rr, rec, store, picked, runner, seed)}
        with atomic_output(path) as tmp:
            rec.save(str(tmp))
            result = _log_all(rr, rec, store, picked, runner, seed)
            rec.flush()
            rec.disconnect()  # closes the file sink: the .rrd is complete before it is renamed into place
    log.info("wrote %s (%d episode(s), %d steps)", path, len(picked), result["steps"])
    return {"path": str(path), **result}


def _runner(checkpoint, store: EpisodeStore, n_action_steps: int | None, device: str):
    from postbc_core.control.runner import PolicyRunner
    from postbc_core.policies.checkpoint import load_policy

    policy = load_policy(checkpoint, device=device)
    runner = PolicyRunner(policy, num_envs=1, n_action_steps=n_action_steps)
    missing = [k for k in runner.spec.obs_keys if k not in store.schema()]
    if missing:
        raise ConfigError(f"the policy {checkpoint} reads {missing}, which {store.path} does not record (it has "
                          f"{store.keys}): view a store recorded with the policy's inputs")
    return runner


def _policy_obs(runner, ep: dict, s: int) -> dict[str, np.ndarray]:
    """Step s's observation in the policy's keys, images resized to its input size as the live nodes do."""
    from postbc_core.robots.observation import resize_image

    obs = {}
    for k, shape in runner.spec.obs_shapes.items():
        x = ep[k][s]
        if x.dtype == np.uint8 and x.ndim == 3 and x.shape != tuple(shape):
            x = resize_image(x, shape, camera=k)
        obs[k] = x[None]
    return obs


def _series(rr, rec, entity: str, names: list[str] | None) -> None:
    if names:
        rec.log(entity, rr.SeriesLines(names=names), static=True)


def _log_all(rr, rec, store: EpisodeStore, picked: list[int], runner, seed: int) -> dict:
    schema = store.schema()
    rgb, depth = camera_keys(schema)
    shown = [k for k in STATE_KEYS if k in schema] + [k for k in ACTION_KEYS if k in schema]
    for k in shown:
        prefix = "action" if k in ACTION_KEYS else "state"
        _series(rr, rec, f"{prefix}/{k}", SERIES_NAMES.get(k))
    others = sorted(k for k in schema if k not in {*rgb, *depth, *shown, "timestamp", "reward", "done"}
                    and np.dtype(schema[k][1]).kind in "biuf" and int(np.prod(schema[k][0])) <= 64)
    if runner is not None:
        _series(rr, rec, "policy/action", SERIES_NAMES.get(runner.spec.action_key))
    steps = chunks = 0
    for i in picked:
        ep = read_episode(store, i)
        meta = store.episode_meta(i)
        T, start = int(meta["length"]), int(meta["start"])
        idx = [rr.TimeColumn("step", sequence=np.arange(start, start + T)),
               rr.TimeColumn("frame", sequence=np.arange(T))]
        if "timestamp" in ep:
            idx.append(rr.TimeColumn("time", timestamp=ep["timestamp"].astype(np.float64)))
        entities = {**{k: f"{'action' if k in ACTION_KEYS else 'state'}/{k}" for k in shown},
                    **{k: k for k in ("reward", "done") if k in ep}, **{k: f"data/{k}" for k in others}}
        for k, entity in entities.items():  # one column send per key and episode: every step at once
            values = ep[k].reshape(T, -1).astype(np.float64)
            rec.send_columns(entity, indexes=idx, columns=rr.Scalars.columns(scalars=values))
        label = {None: "unlabelled", True: "success", False: "failure"}[meta["success"]]
        _set_time(rr, rec, ep, start, 0)
        rec.log("episode", rr.TextLog(f"episode {i} ({label}): task {meta['task']!r}, source {meta['source']!r}, "
                                      f"{T} steps", level=rr.TextLogLevel.INFO))
        rec.log("episode/meta", rr.TextDocument(json.dumps({k: v for k, v in meta.items() if k != "index"} |
                                                           {"episode": i}, default=str), media_type="text/plain"))
        if runner is not None:
            runner.reset()
            rng = np.random.default_rng([seed, i])
        for s in range(T):
            _set_time(rr, rec, ep, start, s)
            for k in rgb:
                rec.log(f"cameras/{camera_name(k)}", rr.Image(ep[k][s]))
            for k in depth:
                rec.log(f"cameras/{camera_name(k)}/depth", rr.DepthImage(ep[k][s], meter=1000.0))
            if runner is not None:
                noise = rng.standard_normal((1, *runner.spec.noise_shape)).astype(np.float32)
                action = runner.act(_policy_obs(runner, ep, s), noise=noise)[0]
                rec.log("policy/action", rr.Scalars(action.astype(np.float64)))
                if runner.replanned[0]:
                    chunk = runner.last_chunks[0]  # (Ta, Da)
                    x = start + s + np.arange(chunk.shape[0], dtype=np.float64)
                    for d in range(chunk.shape[1]):
                        rec.log(f"policy/chunk/{d}", rr.LineStrips2D([np.stack([x, chunk[:, d]], 1)]))
                    chunks += 1
        steps += T
    return {"episodes": picked, "steps": steps, "chunks": chunks}


def _set_time(rr, rec, ep: dict, start: int, s: int) -> None:
    rec.set_time("step", sequence=start + s)
    rec.set_time("frame", sequence=s)
    if "timestamp" in ep:
        rec.set_time("time", timestamp=float(ep["timestamp"][s]))
