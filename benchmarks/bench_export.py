"""Exports of a recording to other tools (issue 24): time and size of `postbc data export --format mcap` (raw and
jpeg frames), `--format lerobot` (H.264 videos) and `postbc data view --save` (Rerun .rrd), on two 480x640 cameras
at 10 Hz with camera-like frames. Times are ratios to reading the same episodes from the store in the same run, sizes
ratios to the raw frames, so the figures compare across machines and loads.

    python benchmarks/bench_export.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_store import camera_like
from common import write_result


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    from postbc_core.data import EpisodeStore
    from postbc_core.interchange.lerobot import export_lerobot
    from postbc_core.interchange.mcap_export import export_mcap
    from postbc_core.interchange.rerun_view import view

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_episodes, T, (H, W) = (2, 20, (480, 640)) if args.quick else (2, 100, (480, 640))
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp())
    try:
        src = root / "demos.zarr"
        with EpisodeStore.create(src) as store:
            for e in range(n_episodes):
                t = 1.7e9 + 100 * e + 0.1 * np.arange(T)
                store.add_episode({"timestamp": t, "front_rgb": camera_like(rng, T, H, W),
                                   "wrist_rgb": camera_like(rng, T, H, W),
                                   **{k: rng.normal(size=(T, d)).astype(np.float32) for k, d in
                                      (("joint_pos", 6), ("gripper_pos", 1), ("cmd_joint_pos", 7),
                                       ("cmd_ee_delta", 7))}}, success=True, task="lift_cube", source="teleop")
        steps = n_episodes * T
        raw_frames = steps * 2 * H * W * 3

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        def read_all():
            with EpisodeStore.open(src) as s:
                for i in range(s.n_episodes):
                    s.episode(i)

        baseline = timed(read_all)
        rows = [{"what": "store (raw frames, Blosc lz4)", "seconds": baseline, "bytes": size(src)}]
        cases = [("mcap, raw sensor_msgs/Image", root / "raw.mcap", lambda p: export_mcap(src, p)),
                 ("mcap, jpeg q90 CompressedImage", root / "jpeg.mcap", lambda p: export_mcap(src, p, images="jpeg")),
                 ("lerobot v3.0, H.264 crf 23 gop 2", root / "lerobot", lambda p: export_lerobot(src, p)),
                 ("rerun .rrd (raw images)", root / "view.rrd",
                  lambda p: view(src, episodes=tuple(range(n_episodes)), save=p, spawn=False))]
        for name, path, fn in cases:
            rows.append({"what": name, "seconds": timed(lambda: fn(path)), "bytes": size(path)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{steps} steps, 2 cameras {H}x{W}, raw frames {raw_frames / 2**20:.0f} MiB; reading the store took "
          f"{baseline:.2f} s (load average {os.getloadavg()[0]:.1f})")
    print(f"{'output':36s} {'s':>7s} {'x read':>7s} {'MiB':>8s} {'raw / size':>10s}")
    for r in rows:
        r["time_vs_store_read"] = r["seconds"] / baseline
        r["raw_frames_over_bytes"] = raw_frames / r["bytes"]
        print(f"{r['what']:36s} {r['seconds']:7.2f} {r['time_vs_store_read']:7.1f} {r['bytes'] / 2**20:8.1f} "
              f"{r['raw_frames_over_bytes']:10.1f}")
    write_result("export_formats", {"steps": steps, "cameras": 2, "image_hw": [H, W], "fps": 10,
                                    "raw_frame_bytes": raw_frames, "load_average": os.getloadavg()[0],
                                    "results": rows}, quick=args.quick)


if __name__ == "__main__":
    main()
