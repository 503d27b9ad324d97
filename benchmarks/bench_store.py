"""Episode store write throughput: 100-step episodes with two RGB streams + low-dim keys, appended step by step and
committed (what a recorder does), against the arrival rate a 10 Hz / 30 Hz recorder needs.

    python benchmarks/bench_store.py [--quick] [--size 128]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_result


def camera_like(rng, T, H, W):
    """Smooth images with a little noise (compress like camera frames; pure noise would not)."""
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([(xx * 255 / W), (yy * 255 / H), ((xx + yy) * 127 / (H + W))], -1)
    frames = base[None] + rng.normal(0, 4, (T, H, W, 3)) + np.arange(T)[:, None, None, None]
    return np.clip(frames, 0, 255).astype(np.uint8)


def main() -> None:
    from postbc_core.data import EpisodeStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=128, help="image height = width")
    args = ap.parse_args()
    n_episodes, T, S = (2, 50, args.size) if args.quick else (8, 100, args.size)
    rng = np.random.default_rng(0)
    rates = []
    root = Path(tempfile.mkdtemp())
    try:
        for image_kind in ("camera_like", "noise"):
            store_path = root / f"{image_kind}.zarr"
            per_episode = []
            with EpisodeStore.create(store_path) as store:
                for _ in range(n_episodes):
                    if image_kind == "camera_like":
                        front, wrist = camera_like(rng, T, S, S), camera_like(rng, T, S, S)
                    else:
                        front = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
                        wrist = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
                    low = {k: rng.normal(size=(T, d)).astype(np.float32) for k, d in
                           (("joint_pos", 6), ("joint_vel", 6), ("joint_effort", 6), ("gripper_pos", 1),
                            ("cmd_joint_pos", 7), ("ee_pose", 7))}
                    t0 = time.perf_counter()
                    with store.episode_writer(source="teleop") as ep:
                        for t in range(T):
                            ep.append(front_rgb=front[t], wrist_rgb=wrist[t], timestamp=float(t),
                                      **{k: v[t] for k, v in low.items()})
                        ep.commit(success=True)
                    per_episode.append(T / (time.perf_counter() - t0))
            rates.append({"images": image_kind, "median_steps_per_s": float(np.median(per_episode)),
                          "min_steps_per_s": float(np.min(per_episode)), "episodes": n_episodes})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for r in rates:
        r["headroom_vs_10hz"] = r["median_steps_per_s"] / 10.0
        r["headroom_vs_30hz"] = r["median_steps_per_s"] / 30.0
        print(f"{r['images']:12s}: {r['median_steps_per_s']:.0f} steps/s median (min {r['min_steps_per_s']:.0f}); "
              f"headroom x{r['headroom_vs_10hz']:.0f} over a 10 Hz recorder, x{r['headroom_vs_30hz']:.0f} over 30 Hz")
    write_result("store_write_throughput", {"image_size": S, "steps_per_episode": T, "streams": 2, "results": rates},
                 quick=args.quick)


if __name__ == "__main__":
    main()
