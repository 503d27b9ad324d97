"""Policy evaluation in the MuJoCo twin: N task instances stepped in lockstep by one batched `PolicyRunner`.

Why a batched loop over `Task` objects rather than gymnasium.vector.SyncVectorEnv: every episode i gets the seed
`seed + i` whichever env slot runs it and finished slots are refilled at once (SyncVectorEnv autoresets with
gymnasium-chosen seeds one step late), rendering is switched on per episode (only the video episodes render the
front camera, so state-only evaluations stay fast), and the raw task observation (with task extras and success) is at
hand for recording. The physics is the same code the gymnasium envs wrap.

Paired evaluations: episode i also draws its diffusion noise from its own generator seeded with `seed + i`, so an
episode's actions do not depend on num_envs, on which slot runs it, on the other episodes in the batch or on the
caller's torch random state. Two policies evaluated with the same seed see the same initial states and the same noise
stream, which is what a paired test (McNemar, postbc_core.stats) on their per-episode outcomes needs.

Success rate: Wilson score interval (postbc_core.stats). Which task overrides a policy needs and whether a task can
feed it: sim/task_fit.py.

Shape legend: N environments, T episode steps, Ta action steps, Da action dim (7), H, W image height/width.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postbc_core.data.paths import make_output_dir, refuse_inside_store
from postbc_core.errors import ConfigError, PostBCError, check_seed
from postbc_core.policies.runner import ENV_ACTION_DIM, PolicyRunner
from postbc_core.robots import kinematics
from postbc_core.sim.base import Task
from postbc_core.sim.registry import make
from postbc_core.sim.task_fit import check_checkpoint_task, check_policy_fits_task, task_overrides_for_policy
from postbc_core.stats import wilson_interval

logger = logging.getLogger(__name__)

VIDEO_CAMERA = "front"


def mat_to_rpy(R: np.ndarray) -> np.ndarray:
    """Inverse of kinematics.euler_to_mat: R = Rz(yaw) Ry(pitch) Rx(roll) -> (roll, pitch, yaw) rad."""
    return np.array([math.atan2(R[2, 1], R[2, 2]), -math.asin(np.clip(R[2, 0], -1.0, 1.0)),
                     math.atan2(R[1, 0], R[0, 0])])


def ee_delta_between(q, q_target) -> np.ndarray:
    """The Bridge-style EE delta (6,) [dx dy dz (m), droll dpitch dyaw (rad)] that moves FK(q) to FK(q_target), in
    the convention of kinematics.apply_ee_delta (base-frame translation, extrinsic rpy pre-multiplied)."""
    T0, T1 = kinematics.fk_matrix(np.asarray(q, float)), kinematics.fk_matrix(np.asarray(q_target, float))
    return np.concatenate([T1[:3, 3] - T0[:3, 3], mat_to_rpy(T1[:3, :3] @ T0[:3, :3].T)])


def record_row(obs: dict, action: np.ndarray, task: Task, info: dict) -> dict[str, np.ndarray]:
    """One store row: the observation before the action and the command in both conventions, as the scripted demos
    record them: cmd_joint_pos is what the arm executed (after the safety layer, `info["joint_target"]`), cmd_ee_delta
    the commanded delta (ee_delta tasks: the action; joint tasks: the delta to the executed target). Reward / done
    are added by the caller."""
    row = {k: (np.asarray(v, np.float64) if k == "timestamp" else v if v.dtype == np.uint8 else
               np.asarray(v, np.float32)) for k, v in obs.items() if k != "success"}
    q = np.asarray(obs["joint_pos"], float)
    executed = np.r_[info["joint_target"], info["gripper_target"]]
    row["cmd_joint_pos"] = executed.astype(np.float32)
    if task.config.action_mode == "joint":
        row["cmd_ee_delta"] = np.r_[ee_delta_between(q, executed[:6]), executed[6]].astype(np.float32)
    else:
        row["cmd_ee_delta"] = action.astype(np.float32)
    return row


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> Path:
    """Writes RGB frames (H, W, 3) uint8 as an mp4 (OpenCV, 'mp4v')."""
    import cv2

    if not frames:
        raise PostBCError(f"no frames to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise PostBCError(f"OpenCV cannot write {path} (no mp4v encoder in this cv2 build?); install "
                          "opencv-python-headless 4.x")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray(f[..., ::-1]))  # OpenCV wants BGR
    finally:
        writer.release()
    return path


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    """Roll out a checkpoint in a sim task."""

    checkpoint: Path
    """Policy checkpoint (.safetensors or the `postbc train` run directory)."""
    task: str
    """Sim task name (postbc_core.sim.registry.list_tasks())."""
    episodes: int = 20
    """Number of evaluation episodes; episode i uses seed `seed + i`."""
    num_envs: int = 4
    """Environments stepped in lockstep (one batched policy call per chunk)."""
    seed: int = 0
    """First episode seed."""
    videos: int = 2
    """Write mp4s of the first this-many episodes (front camera)."""
    record_to: Path | None = None
    """Append every rollout to this episode store (source 'policy', success labels)."""
    out: Path = Path("runs/eval")
    """Output directory: eval.json and videos/."""
    device: str = "auto"
    """Torch device for the policy."""
    n_action_steps: int | None = None
    """Actions of each chunk executed before replanning (default: the whole chunk, Ta)."""
    max_steps: int | None = None
    """Override the task's episode time limit (control steps)."""
    video_size: tuple[int, int] = (256, 256)
    """Video frame (height, width) in pixels."""
    allow_other_task: bool = False
    """Run a checkpoint in a sim task other than the one it was trained on (refused otherwise)."""

    def __post_init__(self):
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
        self.record_to = None if self.record_to is None else Path(self.record_to)
        self.video_size = tuple(int(v) for v in self.video_size)
        if self.episodes < 1 or self.num_envs < 1:
            raise ConfigError(f"--episodes ({self.episodes}) and --num-envs ({self.num_envs}) must be >= 1")
        check_seed(self.seed, count=self.episodes)
        if self.videos < 0:
            raise ConfigError(f"--videos must be >= 0, got {self.videos}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")
        if len(self.video_size) != 2 or min(self.video_size) < 16:
            raise ConfigError(f"--video-size {self.video_size}: give (height, width) >= 16 px")


def run_evaluation(cfg: EvalConfig) -> dict:
    """Loads the checkpoint and evaluates it (see `evaluate_policy`); writes out/eval.json."""
    from postbc_core import load_policy

    refuse_inside_store(cfg.out, what="--out")  # before the work: make_output_dir checks again where it creates it
    policy = load_policy(cfg.checkpoint, device=cfg.device)
    check_checkpoint_task(policy.info, cfg.task, cfg.checkpoint, cfg.allow_other_task)
    report = evaluate_policy(policy, cfg.task, episodes=cfg.episodes, num_envs=cfg.num_envs, seed=cfg.seed,
                             videos=cfg.videos, out=cfg.out, record_to=cfg.record_to,
                             n_action_steps=cfg.n_action_steps, max_steps=cfg.max_steps, video_size=cfg.video_size)
    report["checkpoint"] = str(cfg.checkpoint)
    report["policy_train_info"] = getattr(policy, "info", {}).get("train", {})
    path = cfg.out / "eval.json"
    path.write_text(json.dumps(report, indent=2))
    report["json"] = str(path)
    return report


def evaluate_policy(policy, task: str, *, episodes: int, num_envs: int = 4, seed: int = 0, videos: int = 0,
                    out: str | Path | None = None, record_to: str | Path | None = None,
                    n_action_steps: int | None = None, max_steps: int | None = None,
                    video_size: tuple[int, int] = (256, 256)) -> dict:
    """Runs `episodes` episodes of `policy` in `task` over min(num_envs, episodes) lockstep envs.

    Returns the report dict: success rate + Wilson 95% interval, per-episode seeds / successes / returns / lengths,
    timings, video paths. Videos go to out/videos/episode_XXX.mp4 (needs `out` when videos > 0).
    """
    runner = PolicyRunner(policy, num_envs=min(num_envs, episodes), n_action_steps=n_action_steps)
    clip_before, obs_before = dict(getattr(policy, "obs_clip_counts", {})), getattr(policy, "obs_count", 0)
    overrides = {**task_overrides_for_policy(runner.obs_shapes), "action_mode": runner.action_mode}
    if max_steps is not None:
        overrides["max_steps"] = int(max_steps)
    envs = [make(task, **overrides) for _ in range(runner.num_envs)]
    check_policy_fits_task(runner.obs_shapes, envs[0])
    if videos and out is None:
        raise ConfigError("videos > 0 needs an output directory (out=...)")
    out = None if out is None else Path(out)
    if out is not None:
        make_output_dir(out)
    store = None
    if record_to is not None:
        from postbc_core.data import EpisodeStore

        store = EpisodeStore.open(record_to, "a")
    lows_highs = [e.action_bounds() for e in envs]
    vh, vw = video_size
    fps = envs[0].config.control_hz

    pending = list(range(episodes))
    slot_ep = [-1] * runner.num_envs  # episode index each env runs (-1 = idle)
    obs: list[dict | None] = [None] * runner.num_envs
    ep_state: list[dict] = [{} for _ in range(runner.num_envs)]
    noise_rng: list[np.random.Generator | None] = [None] * runner.num_envs  # episode seed + i's noise stream
    results: list[dict | None] = [None] * episodes
    video_paths: list[str] = []
    n_clipped = n_steps = n_safety = 0

    def start(j: int) -> None:
        ep = pending.pop(0)
        slot_ep[j] = ep
        obs[j] = envs[j].reset(seed=seed + ep)
        noise_rng[j] = np.random.default_rng(seed + ep)
        runner.reset([j])
        ep_state[j] = {"ret": 0.0, "len": 0, "success": False, "rows": [] if store is not None else None,
                       "frames": [envs[j].sim.render(VIDEO_CAMERA, vw, vh)[0]] if ep < videos else None,
                       "t0": time.time()}

    for j in range(runner.num_envs):
        start(j)
    t_start = time.time()
    try:
        while True:
            active = [j for j in range(runner.num_envs) if slot_ep[j] >= 0]
            if not active:
                break
            batch = {k: np.stack([np.asarray(obs[j][k], np.uint8 if k.endswith("_rgb") else np.float32)
                                  for j in active]) for k in runner.obs_shapes}
            # One draw per step per episode (used when that episode replans): the stream depends on the episode only.
            noise = np.stack([noise_rng[j].standard_normal((runner.action_horizon, ENV_ACTION_DIM))
                              for j in active]).astype(np.float32)
            actions = runner.act(batch, env_ids=active, noise=noise)  # (n, 7)
            for a, j in zip(actions, active):
                st, env = ep_state[j], envs[j]
                lo, hi = lows_highs[j]
                a64 = np.asarray(a, np.float64)
                clipped = np.clip(a64, lo, hi)
                if np.any(clipped != a64):
                    n_clipped += 1
                    logger.debug("episode %d step %d: action %s clipped to the action bounds", slot_ep[j],
                                 st["len"], np.round(a64, 4))
                prev = obs[j]
                obs[j], reward, terminated, truncated, info = env.step(clipped)
                n_steps += 1
                n_safety += bool(info.get("safety_altered", False))
                st["ret"] += reward
                st["len"] += 1
                st["success"] |= bool(info["success"])
                if st["rows"] is not None:
                    row = record_row(prev, clipped, env, info)
                    row["policy_action"] = np.asarray(a, np.float32)  # before clipping, in policy units
                    row["reward"] = np.float32(reward)
                    row["done"] = np.bool_(terminated)  # a time-limit truncation is not terminal (as demos)
                    st["rows"].append(row)
                if st["frames"] is not None:
                    st["frames"].append(env.sim.render(VIDEO_CAMERA, vw, vh)[0])
                if terminated or truncated:
                    ep = slot_ep[j]
                    results[ep] = {"episode": ep, "seed": seed + ep, "success": st["success"],
                                   "return": round(st["ret"], 6), "length": st["len"]}
                    logger.info("episode %d (seed %d): %s in %d steps, return %.3f", ep, seed + ep,
                                "success" if st["success"] else "failure", st["len"], st["ret"])
                    if st["frames"] is not None:
                        p = write_video(out / "videos" / f"episode_{ep:03d}.mp4", st["frames"], fps)
                        video_paths.append(str(p))
                    if store is not None:
                        data = {k: np.stack([r[k] for r in st["rows"]]) for k in st["rows"][0]}
                        store.add_episode(data, success=st["success"], task=task, source="policy",
                                          start_time=st["t0"], end_time=time.time())
                    if pending:
                        start(j)
                    else:
                        slot_ep[j] = -1
    finally:
        if store is not None:
            store.close()
        for e in envs:
            e.close()
    wall = time.time() - t_start
    if n_clipped:
        logger.warning("%d of %d policy actions were outside the task's action bounds and were clipped",
                       n_clipped, n_steps)
    if n_safety:
        logger.warning("the safety layer altered %d of %d commands (%.0f%%: joint limits, the %.2f rad/s joint "
                       "speed limit or the workspace box), as robot_driver would on the arm", n_safety, n_steps,
                       100.0 * n_safety / max(n_steps, 1), envs[0].config.max_joint_speed)
    # Policy inputs outside +-obs_clip training-data stds (diffusion.py): observations per key that were clipped.
    obs_clipped = {key: n - clip_before.get(key, 0) for key, n in getattr(policy, "obs_clip_counts", {}).items()
                   if n > clip_before.get(key, 0)}
    k = sum(r["success"] for r in results)
    lo, hi = wilson_interval(k, episodes)
    returns = [r["return"] for r in results]
    lengths = [r["length"] for r in results]
    return {
        "task": task, "episodes": episodes, "num_envs": runner.num_envs, "seed": seed,
        "action_key": runner.action_key, "action_mode": runner.action_mode,
        "n_obs_steps": runner.n_obs_steps, "action_horizon": runner.action_horizon,
        "n_action_steps": runner.n_action_steps,
        "n_success": k, "success_rate": k / episodes, "success_ci95": [lo, hi], "ci_method": "wilson",
        "mean_return": float(np.mean(returns)), "mean_length": float(np.mean(lengths)),
        "seeds": [r["seed"] for r in results], "successes": [r["success"] for r in results],
        "returns": returns, "lengths": lengths, "n_clipped_actions": n_clipped, "n_steps": n_steps,
        "n_safety_altered": n_safety, "obs_clipped": obs_clipped,
        "policy_observations": getattr(policy, "obs_count", 0) - obs_before,
        "policy_calls": runner.n_predict_calls, "wall_time_s": round(wall, 3),
        "steps_per_s": round(n_steps / max(wall, 1e-9), 1), "videos": video_paths,
        "record_to": None if record_to is None else str(record_to),
    }
