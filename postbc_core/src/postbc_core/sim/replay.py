"""Re-execute a recorded episode's actions in the MuJoCo twin and measure how far the replay drifts from the record.

The sim is put in the episode's recorded initial state (arm joints, joint velocities, gripper, the task object's pose
and the task's other recorded scene state: the bowl pose, the push target), then row t's action is executed for every
t. The replayed state before action t is compared with the recorded row t (the store convention: a row holds the
observation and the action taken from it). The sim is deterministic, so for an episode recorded in this sim the
drift only comes from the float32 rounding of the recorded initial state and actions.

Output: replay.json (divergence: per-step joint error = max over the 6 joints of |q_replay - q_record| (rad), object
position error = |p_replay - p_record| (m); max / mean / final) and replay.mp4 (front camera beside joint-position
and action plots with a moving time cursor).

Shape legend: T episode steps, H, W image height/width.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from postbc_core.control.loop import Actor, run_episodes
from postbc_core.control.spec import action_mode_for
from postbc_core.data.paths import make_output_dir, refuse_inside_store
from postbc_core.errors import ConfigError, StoreError
from postbc_core.sim.base import Task
from postbc_core.sim.evaluation import VIDEO_CAMERA, write_video
from postbc_core.sim.registry import list_tasks, make

logger = logging.getLogger(__name__)

REQUIRED_STATE_KEYS = ("joint_pos", "gripper_pos", "object_pose")


def restore_initial_state(task: Task, first: dict[str, np.ndarray]) -> list[str]:
    """Puts `task`'s sim in the state of a recorded row (joint_pos, gripper_pos, object_pose; optional joint_vel,
    bowl_pose, target_pos). Returns the keys used."""
    import mujoco

    sim = task.sim
    sim.reset(qpos=np.asarray(first["joint_pos"], np.float64), gripper=float(np.asarray(first["gripper_pos"])[0]))
    used = ["joint_pos", "gripper_pos"]
    if "joint_vel" in first:
        sim.data.qvel[sim._dadr] = np.asarray(first["joint_vel"], np.float64)
        used.append("joint_vel")
    pose = np.asarray(first["object_pose"], np.float64)
    sim.set_free_body_pose(task.object_body, pose[:3], pose[3:])
    used.append("object_pose")
    if "bowl_pose" in first:
        bowl = np.asarray(first["bowl_pose"], np.float64)
        sim.set_free_body_pose("bowl", bowl[:3], bowl[3:])
        used.append("bowl_pose")
    if "target_pos" in first:
        sim.data.mocap_pos[sim.model.body("target").mocapid[0]] = np.asarray(first["target_pos"], np.float64)
        used.append("target_pos")
    mujoco.mj_forward(sim.model, sim.data)
    task.steps = 0
    return used


def _stats(err: np.ndarray) -> dict:
    return {"max": float(err.max()), "mean": float(err.mean()), "final": float(err[-1])}


def replay_episode(dataset: str | Path, episode: int, *, out: str | Path, action_key: str = "cmd_joint_pos",
                   task: str | None = None, video: bool = True, video_size: tuple[int, int] = (320, 320)) -> dict:
    """Replays episode `episode` of `dataset` with its recorded `action_key` actions; writes out/replay.json and
    (video) out/replay.mp4. `task` defaults to the episode's task metadata. Returns the report dict."""
    from postbc_core.data import EpisodeStore

    mode = action_mode_for(action_key)
    out = Path(out)
    refuse_inside_store(out, [dataset], what="--out")  # before the replay: make_output_dir creates it after
    with EpisodeStore.open(dataset, "r") as store:
        n = store.n_episodes
        if not -n <= episode < n:
            raise StoreError(f"{dataset}: episode index {episode} out of range (the store has {n} episodes: "
                             f"0..{n - 1}, or negative from the end)")
        missing = [k for k in (action_key, *REQUIRED_STATE_KEYS) if k not in store]
        if missing:
            raise StoreError(f"{dataset}: replay needs data key(s) {missing}; the store records {store.keys}")
        meta = store.episode_meta(episode)
        extras = [k for k in ("joint_vel", "bowl_pose", "target_pos") if k in store]
        ep = store.episode(episode, [action_key, *REQUIRED_STATE_KEYS, *extras])
    task_name = task or meta["task"]
    if task and meta["task"] in list_tasks() and task != meta["task"]:
        # Refused, not warned: the episode's initial state and actions belong to another scene (another object, bowl
        # or target), so the replay and its divergence numbers would describe nothing that was recorded.
        raise ConfigError(f"--task {task!r}: episode {meta['index']} of {dataset} was recorded in sim task "
                          f"{meta['task']!r}; replaying it in another task's scene is meaningless. Drop --task (or "
                          f"pass --task {meta['task']}); --task is for episodes whose recorded task is not a sim task")
    if task_name not in list_tasks():
        raise ConfigError(f"episode {meta['index']} of {dataset} has task {meta['task']!r}, not a sim task; pass "
                          f"--task (one of {list_tasks()})")
    actions = np.asarray(ep[action_key], np.float64)
    T = len(actions)
    if actions.shape[1:] != (7,):
        raise ConfigError(f"{action_key} has per-step shape {actions.shape[1:]}, expected (7,)")
    # Replay every recorded action: no early termination, and the time limit at the episode's length.
    # Recorded joint targets are the commands sent after the robot's safety layer: re-execute them as sent. Recorded
    # EE deltas are the operator's, before it: they pass it again, as teleop's did.
    sim_task = make(task_name, action_mode=mode, terminate_on_success=False, max_steps=T,
                    safety=mode == "ee_delta")
    replay = _Replay(actions, {k: v[0] for k, v in ep.items()}, video_size if video else None)
    try:
        # Not clipped to the action bounds: the recorded actions are re-executed as they were.
        run_episodes([sim_task], replay, [0], clip_actions=False)
        fps = sim_task.config.control_hz
    finally:
        sim_task.close()
    q, obj = np.asarray(replay.q), np.asarray(replay.obj)  # (T + 1, 6), (T + 1, 3): before each action + the last
    rec_q = np.asarray(ep["joint_pos"], np.float64)
    rec_obj = np.asarray(ep["object_pose"], np.float64)[:, :3]
    joint_err = np.abs(q[:T] - rec_q).max(axis=1)
    obj_err = np.linalg.norm(obj[:T] - rec_obj, axis=1)
    report = {
        "dataset": str(dataset), "episode": int(meta["index"]), "task": task_name, "action_key": action_key,
        "action_mode": mode, "steps": T, "restored": replay.used, "recorded_success": meta["success"],
        "replay_success": any(replay.success),
        "joint_error_rad": _stats(joint_err), "object_pos_error_m": _stats(obj_err),
        "per_step": {"joint_error_rad": joint_err.round(8).tolist(), "object_pos_error_m": obj_err.round(8).tolist()},
    }
    make_output_dir(out)
    if video:
        plot = _PlotPanel(rec_q, q, actions, action_key, height=video_size[0])
        report["video"] = str(write_video(out / "replay.mp4", [np.concatenate([f, plot.frame(t)], axis=1)
                                                               for t, f in enumerate(replay.frames)], fps))
    (out / "replay.json").write_text(json.dumps(report, indent=2))
    report["json"] = str(out / "replay.json")
    logger.info("replay of episode %d: joint error max %.2e rad, object error max %.2e m", report["episode"],
                report["joint_error_rad"]["max"], report["object_pos_error_m"]["max"])
    return report


class _Replay(Actor):
    """The episode loop's actor for a replay: puts the sim in the recorded initial state right after the loop's reset
    (so the loop's first observation, which it never reads, is the reset's), then returns recorded action t at step
    t. Keeps the trajectory before each action and after the last: joint positions `q` (T + 1) x (6,) rad, object
    positions `obj` (T + 1) x (3,) m, front-camera `frames` when video_size (H, W) is given, and `success` per step."""

    def __init__(self, actions: np.ndarray, first: dict[str, np.ndarray], video_size: tuple[int, int] | None):
        self.actions, self.first, self.video_size = actions, first, video_size
        self.used: list[str] = []
        self.q: list[np.ndarray] = []
        self.obj: list[np.ndarray] = []
        self.frames: list[np.ndarray] = []
        self.success: list[bool] = []

    def _keep(self, task: Task) -> None:
        self.q.append(task.sim.joint_pos())
        self.obj.append(task.sim.body_pose(task.object_body)[:3])
        if self.video_size:
            vh, vw = self.video_size
            self.frames.append(task.sim.render(VIDEO_CAMERA, vw, vh)[0])

    def start(self, slot: int, result, obs: dict, env) -> None:
        self.used = restore_initial_state(env, self.first)
        self._keep(env)

    def act(self, slots: list[int], obs: list[dict]) -> np.ndarray:
        return self.actions[len(self.success)][None]  # one environment; steps so far = len(success)

    def observe(self, slot: int, step, env) -> None:
        self.success.append(bool(step.info["success"]))
        self._keep(env)


class _PlotPanel:
    """The plots rendered once with matplotlib; `frame(t)` draws the time cursor at step t on a copy (fast)."""

    def __init__(self, rec_q: np.ndarray, q: np.ndarray, actions: np.ndarray, action_key: str, height: int):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        dpi = 100
        fig, (ax_q, ax_a) = plt.subplots(2, 1, figsize=(2 * height / dpi, height / dpi), dpi=dpi, sharex=True)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for j in range(rec_q.shape[1]):
            ax_q.plot(np.arange(len(rec_q)), rec_q[:, j], "--", color=colors[j % len(colors)], lw=1)
            ax_q.plot(np.arange(len(q)), q[:, j], "-", color=colors[j % len(colors)], lw=1, label=f"q{j}")
        ax_q.set_ylabel("joint pos (rad)", fontsize=7)
        ax_q.set_title("replayed (solid) vs recorded (dashed)", fontsize=7)
        for j in range(actions.shape[1]):
            ax_a.plot(np.arange(len(actions)), actions[:, j], color=colors[j % len(colors)], lw=1)
        ax_a.set_ylabel(action_key, fontsize=7)
        ax_a.set_xlabel("step", fontsize=7)
        for ax in (ax_q, ax_a):
            ax.tick_params(labelsize=6)
        fig.tight_layout()
        fig.canvas.draw()
        self.image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        H = self.image.shape[0]
        # Display coordinates have y up from the bottom; image rows go down from the top.
        self._axes = []
        for ax in (ax_q, ax_a):
            bb = ax.get_window_extent()
            self._axes.append((ax, int(H - bb.y1), int(H - bb.y0)))
        plt.close(fig)

    def frame(self, t: int) -> np.ndarray:
        import cv2

        img = self.image.copy()
        for ax, top, bottom in self._axes:
            x = round(float(ax.transData.transform((t, 0.0))[0]))
            cv2.line(img, (x, top), (x, bottom), (0, 0, 0), 1)
        return img
