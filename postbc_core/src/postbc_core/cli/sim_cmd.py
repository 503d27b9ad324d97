"""`postbc sim <verb>`: the simulated WidowX. Each verb is a typed function (tyro builds its flags); user errors
propagate as PostBCError (the main CLI prints them and exits 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import tyro

from postbc_core.analysis.learning_curve import CurveConfig  # stdlib-only at import: keeps `postbc sim` fast


def demos(task: str, episodes: int, out: Path, quality: float = 1.0, seed: int = 0, cameras: tuple[str, ...] = (),
          image_size: tuple[int, int] = (128, 128), keep_failures: bool = False, max_attempts: int | None = None,
          operator: str = "scripted", overwrite: bool = False, append: bool = False, codec: str = "",
          json_output: bool = False) -> int:
    """Record scripted demonstrations (a simulated SpaceMouse operator) into an episode store.

    Keeps attempting until EPISODES successful demos (at most MAX_ATTEMPTS, default 3x), then prints the stats.
    An existing OUT is refused: pass --overwrite to replace it or --append to add episodes to it. Exit code 1 when
    fewer than EPISODES successes were recorded. Ends with the task's recommended `--obs-keys` for `postbc train`
    (state keys that cover everything the task's reset randomizes; sim.registry.recommended_obs_keys).

    Args:
        task: Sim task (lift_cube, put_in_bowl, push_to_target).
        episodes: Successful demonstrations to record.
        out: Episode store directory to write (e.g. demos.zarr).
        quality: Operator quality in [0, 1]: 1 = clean, lower = noisier, hesitant, sloppier grasps.
        seed: Attempt i uses seed SEED + i (task layout and operator choices).
        cameras: Cameras to record as <camera>_rgb (front, wrist); none = state only.
        image_size: Image height and width in pixels.
        keep_failures: Also store failed attempts (success=False) instead of discarding them.
        max_attempts: Upper bound on attempts (default 3 * episodes).
        operator: Operator name written to each episode's metadata.
        overwrite: Replace an existing store at OUT.
        append: Add episodes to an existing store at OUT (its keys must match).
        codec: Camera codec of a new store: raw (default, exact), jpeg (quality 90, ~30x smaller on noisy camera
            frames), jpeg:Q, jpegxl-lossless (exact, ~2x), or per camera: front_rgb=jpeg,wrist_rgb=raw. Empty: raw for
            a new store, the store's own with --append.
        json_output: Print the stats as JSON.
    """
    from postbc_core.errors import check_seed
    from postbc_core.sim.demos import record_demos
    from postbc_core.sim.registry import recommended_obs_keys

    check_seed(seed, count=3 * episodes if max_attempts is None else max_attempts)  # attempt i uses seed + i
    stats = record_demos(task, episodes, out, seed=seed, quality=quality, cameras=tuple(cameras),
                         image_size=tuple(image_size), keep_failures=keep_failures, max_attempts=max_attempts,
                         operator=operator, overwrite=overwrite, append=append, codec=codec or None)
    keys = recommended_obs_keys(task)
    if json_output:
        print(json.dumps({**stats.to_dict(), "recommended_obs_keys": list(keys)}, indent=2, default=str))
    else:
        print(stats.summary())
        print(f"success rate: {stats.success_rate:.3f} ({stats.successes}/{stats.attempts}); store: {out}")
        print(f"train on it with (state keys covering what {task}'s reset randomizes): --obs-keys {' '.join(keys)} "
              "--action-key cmd_ee_delta")
    return 0 if stats.successes >= episodes else 1


def curve(cfg: Annotated[CurveConfig, tyro.conf.arg(name="")]) -> int:
    """Success vs diffusion training steps: scripted demos per seed, a policy per (budget, method) trained through
    the pipeline's own path, each evaluated on the same fixed initial states; pooled rates (Wilson 95%), per-seed
    counts, McNemar tests vs BC and vs the previous budget. Writes OUT/curve.json (and --json) and prints a table."""
    from postbc_core.analysis.learning_curve import render_table, run_curve

    r = run_curve(cfg)
    print(render_table(r))
    print(f"results: {cfg.out / 'curve.json'}" + (f" and {cfg.json}" if cfg.json else ""))
    return 0


SIM_COMMANDS: dict[str, Callable[..., int]] = {"demos": demos, "curve": curve}
