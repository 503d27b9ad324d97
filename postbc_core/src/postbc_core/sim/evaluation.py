"""Policy evaluation in the MuJoCo twin: N task instances stepped in lockstep by the episode loop
(control/loop.py) with the policy as its actor (control/runner.PolicyActor: one batched PolicyRunner).

Why a batched loop over `Task` objects rather than gymnasium.vector.SyncVectorEnv: every episode i gets the seed
`seed + i` whichever env slot runs it and finished slots are refilled at once (SyncVectorEnv autoresets with
gymnasium-chosen seeds one step late), rendering is switched on per episode (only the video episodes render the
front camera, so state-only evaluations stay fast), and the raw task observation (with task extras and success) is at
hand for recording. The physics is the same code the gymnasium envs wrap.

Paired evaluations: episode i also draws its diffusion noise from its own generator seeded with `seed + i`
(PolicyActor), so two policies evaluated with the same seed see the same initial states and the same noise stream,
which is what a paired test (McNemar, postbc_core.stats) on their per-episode outcomes needs.

Success rate: Wilson score interval (postbc_core.stats). Which task overrides a policy needs and whether a task can
feed it: sim/task_fit.py.

Shape legend: N environments, T episode steps, Ta action steps, Da action dim (7), H, W image height/width.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postbc_core.data.codecs import parse_codecs
from postbc_core.data.paths import make_output_dir, refuse_inside_store
from postbc_core.errors import ConfigError, PostBCError, check_seed
from postbc_core.control.loop import EpisodeResult, Watcher, run_episodes
from postbc_core.control.runner import PolicyActor, PolicyRunner
from postbc_core.sim.registry import make
from postbc_core.sim.task_fit import check_checkpoint_task, check_policy_fits_task, task_overrides_for_policy
from postbc_core.stats import wilson_interval

logger = logging.getLogger(__name__)

VIDEO_CAMERA = "front"


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
    record_codec: str = ""
    """Camera codec of the --record-to store (data/codecs.py: raw, jpeg, jpeg:Q, jpegxl-lossless, or per key
    front_rgb=jpeg); empty: raw for a new store, the store's own for an existing one."""
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
        try:
            parse_codecs(self.record_codec)
        except PostBCError as exc:
            raise ConfigError(f"--record-codec: {exc}") from None
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
                             record_codec=cfg.record_codec or None,
                             n_action_steps=cfg.n_action_steps, max_steps=cfg.max_steps, video_size=cfg.video_size)
    report["checkpoint"] = str(cfg.checkpoint)
    report["policy_train_info"] = getattr(policy, "info", {}).get("train", {})
    path = cfg.out / "eval.json"
    path.write_text(json.dumps(report, indent=2))
    report["json"] = str(path)
    return report


def evaluate_policy(policy, task: str, *, episodes: int, num_envs: int = 4, seed: int = 0, videos: int = 0,
                    out: str | Path | None = None, record_to: str | Path | None = None,
                    record_codec: str | None = None,
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

        store = EpisodeStore.open(record_to, "a", codecs=record_codec)
    vh, vw = video_size
    video = _Videos(out / "videos", videos, (vh, vw), envs[0].config.control_hz) if videos else None
    watchers: list[Watcher] = [_Log(), *([video] if video else [])]
    if store is not None:
        watchers.append(_Record(store, task))
    t_start = time.time()
    try:
        results = run_episodes(envs, PolicyActor(runner), [seed + i for i in range(episodes)],
                               record=store is not None, watchers=watchers)
    finally:
        if store is not None:
            store.close()
        for e in envs:
            e.close()
    video_paths = video.paths if video else []
    n_steps = sum(r.length for r in results)
    n_clipped = sum(r.clipped for r in results)
    n_safety = sum(r.safety_altered for r in results)
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
    rows = [r.summary() for r in results]
    k = sum(r["success"] for r in rows)
    lo, hi = wilson_interval(k, episodes)
    returns = [r["return"] for r in rows]
    lengths = [r["length"] for r in rows]
    return {
        "task": task, "episodes": episodes, "num_envs": runner.num_envs, "seed": seed,
        "action_key": runner.action_key, "action_mode": runner.action_mode,
        "n_obs_steps": runner.n_obs_steps, "action_horizon": runner.action_horizon,
        "n_action_steps": runner.n_action_steps,
        "n_success": k, "success_rate": k / episodes, "success_ci95": [lo, hi], "ci_method": "wilson",
        "mean_return": float(np.mean(returns)), "mean_length": float(np.mean(lengths)),
        "seeds": [r["seed"] for r in rows], "successes": [r["success"] for r in rows],
        "returns": returns, "lengths": lengths, "n_clipped_actions": n_clipped, "n_steps": n_steps,
        "n_safety_altered": n_safety, "obs_clipped": obs_clipped,
        "policy_observations": getattr(policy, "obs_count", 0) - obs_before,
        "policy_calls": runner.n_predict_calls, "wall_time_s": round(wall, 3),
        "steps_per_s": round(n_steps / max(wall, 1e-9), 1), "videos": video_paths,
        "record_to": None if record_to is None else str(record_to),
    }


class _Log(Watcher):
    def end(self, slot: int, r: EpisodeResult, env) -> None:
        logger.info("episode %d (seed %d): %s in %d steps, return %.3f", r.episode, r.seed,
                    "success" if r.success else "failure", r.length, r.ret)


class _Videos(Watcher):
    """mp4s of the first `count` episodes from the front camera, one frame after the reset and after every step."""

    def __init__(self, folder: Path, count: int, size: tuple[int, int], fps: float):
        self.folder, self.count, self.size, self.fps = folder, count, size, fps
        self.frames: dict[int, list[np.ndarray]] = {}
        self.paths: list[str] = []

    def _grab(self, slot: int, env) -> None:
        if slot in self.frames:
            h, w = self.size
            self.frames[slot].append(env.sim.render(VIDEO_CAMERA, w, h)[0])

    def start(self, slot: int, r: EpisodeResult, obs: dict, env) -> None:
        self.frames.pop(slot, None)
        if r.episode < self.count:
            self.frames[slot] = []
            self._grab(slot, env)

    def observe(self, slot: int, step, env) -> None:
        self._grab(slot, env)

    def end(self, slot: int, r: EpisodeResult, env) -> None:
        if slot in self.frames:
            p = write_video(self.folder / f"episode_{r.episode:03d}.mp4", self.frames.pop(slot), self.fps)
            self.paths.append(str(p))


class _Record(Watcher):
    """Every finished episode into the episode store (source 'policy', its success label)."""

    def __init__(self, store, task: str):
        self.store, self.task = store, task

    def end(self, slot: int, r: EpisodeResult, env) -> None:
        self.store.add_episode(r.episode_data(), success=r.success, task=self.task, source="policy",
                               start_time=r.start_time, end_time=time.time())
        r.rows = None  # on disk now: the report does not hold every episode's rows
