"""`postbc eval` and `postbc replay`: typed functions (tyro builds the flags; postbc_core.cli.main prints errors)."""

from __future__ import annotations

from pathlib import Path


def evaluate(checkpoint: Path, task: str, episodes: int = 20, num_envs: int = 4, seed: int = 0, videos: int = 2,
             record_to: Path | None = None, record_codec: str = "", out: Path = Path("runs/eval"),
             device: str = "auto",
             n_action_steps: int | None = None, max_steps: int | None = None, allow_other_task: bool = False) -> int:
    """Roll out a policy checkpoint in a sim task: success rate (Wilson 95% interval), returns, lengths, videos.

    Args:
        checkpoint: Policy checkpoint (.safetensors) or `postbc train` run directory.
        task: Sim task (lift_cube, put_in_bowl, push_to_target).
        episodes: Evaluation episodes; episode i uses seed `seed + i`.
        num_envs: Environments stepped in lockstep (one batched policy call per chunk).
        seed: First episode seed.
        videos: mp4s of the first this-many episodes (front camera) under OUT/videos.
        record_to: Append every rollout to this episode store (source 'policy', success labels).
        record_codec: Camera codec of the RECORD_TO store: raw, jpeg, jpeg:Q, jpegxl-lossless or per camera
            (front_rgb=jpeg); empty: raw for a new store, the store's own for an existing one.
        out: Output directory (eval.json, videos/).
        device: Torch device: auto, cpu, cuda, cuda:N.
        n_action_steps: Actions of each chunk executed before replanning (default: the whole chunk).
        max_steps: Override the task's episode time limit (control steps).
        allow_other_task: Evaluate a checkpoint in a sim task other than the one it was trained on (refused
            otherwise: checkpoints record their training store's task).
    """
    from postbc_core.sim.evaluation import EvalConfig, run_evaluation

    cfg = EvalConfig(checkpoint=checkpoint, task=task, episodes=episodes, num_envs=num_envs, seed=seed,
                     videos=videos, record_to=record_to, record_codec=record_codec, out=out, device=device,
                     n_action_steps=n_action_steps, max_steps=max_steps, allow_other_task=allow_other_task)
    r = run_evaluation(cfg)
    lo, hi = r["success_ci95"]
    print(f"{r['task']}: success {r['n_success']}/{r['episodes']} = {r['success_rate']:.1%} "
          f"(Wilson 95% CI {lo:.1%}..{hi:.1%}), mean return {r['mean_return']:.3f}, "
          f"mean length {r['mean_length']:.1f} steps, {r['wall_time_s']:.1f} s; report: {r['json']}")
    return 0


def replay(dataset: Path, episode: int, out: Path = Path("runs/replay"), action_key: str = "cmd_joint_pos",
           task: str | None = None, video: bool = True) -> int:
    """Re-execute a recorded episode's actions in the sim from its recorded initial state; writes replay.mp4 (video
    + joint/action plots) and replay.json (divergence from the recorded states).

    Args:
        dataset: Episode store (.zarr).
        episode: Episode index (negative counts from the end).
        out: Output directory.
        action_key: Recorded actions to execute: cmd_joint_pos (joint targets) or cmd_ee_delta (EE deltas).
        task: Sim task (default: the episode's task metadata).
        video: Write replay.mp4.
    """
    from postbc_core.sim.replay import replay_episode

    r = replay_episode(dataset, episode, out=out, action_key=action_key, task=task, video=video)
    j, o = r["joint_error_rad"], r["object_pos_error_m"]
    print(f"replayed episode {r['episode']} ({r['task']}, {r['steps']} steps, {r['action_key']}): joint error "
          f"max {j['max']:.2e} / mean {j['mean']:.2e} / final {j['final']:.2e} rad, object error max "
          f"{o['max']:.2e} / final {o['final']:.2e} m; success recorded {r['recorded_success']}, replayed "
          f"{r['replay_success']}; report: {r['json']}" + (f", video: {r['video']}" if "video" in r else ""))
    return 0
