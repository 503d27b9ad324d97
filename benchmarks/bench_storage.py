"""Camera storage per codec: two 640x480 cameras at 30 Hz recorded in real time through the EpisodeWriter (what the
recorder node does), one codec per run, every figure also as a ratio against raw measured in the same run.

Frames: the MuJoCo twin's front and wrist cameras rendered at 640x480 during a scripted lift_cube demonstration, each
recorded frame with fresh Gaussian sensor noise (sigma --noise grey levels, default 2), so no two frames are equal.
Each codec runs in its own interpreter (its CPU time is its own): a loop at 30 Hz appends a step (two frames, joint
positions, a timestamp) per tick to `episode_writer(background=True)` for --seconds, then commits. Reported per codec:

    bytes_per_minute      store bytes on disk per minute of recorded steps (du of the store directory)
    writer_cpu_core       process CPU seconds (all threads, the commit included) per second of recorded steps
    frames_offered/kept   ticks of the loop / steps recorded; a tick whose slot passed before the loop got to it
                          (the writer blocked it, or the machine did not run the loop: see loadavg) is dropped
    save_s                seconds from stop to the episode committed (the last block written + metadata)
    load_s                training load: EpisodeStore.load of both camera keys (what the sampler does), seconds
                          (load_ms_per_frame: per decoded frame, the figure compared against raw)
    random_frame_ms       one frame at a random step read and decoded (EpisodeStore.rows), mean over 200
    psnr_db               of the stored frames against what was appended (lossless: inf)

The machine is shared (other processes load its 2 cores), so each codec runs --repeats times, interleaved with the
others, the table shows medians (frame counts summed), and a control run of the same loop storing nothing counts
the frames the machine itself drops.

    python benchmarks/bench_storage.py [--quick] [--seconds 20] [--repeats 3] [--noise 2] [--codecs raw jpeg ...]

Writes benchmarks/results/storage_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_result

HZ = 30.0
H, W = 480, 640
CAMERAS = ("front_rgb", "wrist_rgb")
POOL = 48  # distinct noisy frames per camera, cycled (memory: 48 x 2 x 0.9 MB)


def render_pool(path: Path, noise: float) -> None:
    """(POOL, 2, H, W, 3) uint8 twin frames with sensor noise, saved to `path` (.npy)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from postbc_core.sim.demos import _make_demo_task, make_demonstrator, run_demo_episode

    env = _make_demo_task("lift_cube", cameras=("front", "wrist"), image_size=(H, W))
    try:
        ep = run_demo_episode(env, make_demonstrator("lift_cube", np.random.default_rng([0, 0]), 1.0), 0)
    finally:
        env.close()
    clean = np.stack([ep.data["front_rgb"], ep.data["wrist_rgb"]], axis=1)  # (T, 2, H, W, 3)
    rng = np.random.default_rng(1)
    idx = np.arange(POOL) % clean.shape[0]
    noisy = clean[idx].astype(np.float32) + rng.normal(0, noise, (POOL, *clean.shape[1:])).astype(np.float32)
    np.save(path, np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def loop_only(pool: np.ndarray, seconds: float) -> dict:
    """The control: the same 30 Hz loop copying each step's frames (as append does) and storing nothing. Its
    dropped frames are the machine's (other processes on its cores), not a writer's."""
    n = int(round(seconds * HZ))
    kept, dropped, period = [], 0, 1.0 / HZ
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        tick = t0 + i * period
        now = time.perf_counter()
        if now >= tick + period:
            dropped += 1
            continue
        if now < tick:
            time.sleep(tick - now)
        f = pool[i % POOL]
        kept.append((np.array(f[0]), np.array(f[1])))
        if len(kept) > 20:
            kept.pop(0)
    rec_s = time.perf_counter() - t0
    return {"codec": "none", "seconds": round(rec_s, 3), "frames_offered": n * len(CAMERAS),
            "frames_kept": (n - dropped) * len(CAMERAS), "frames_dropped": dropped * len(CAMERAS),
            "loadavg_1min_after": os.getloadavg()[0],
            "loop_cpu_core": (time.process_time() - c0) / ((n - dropped) / HZ)}


def worker(codec: str, pool_path: Path, seconds: float, root: Path) -> dict:
    """Record one episode with `codec` in real time, commit it, read it back; the figures of one table row."""
    from postbc_core.data import EpisodeStore

    pool = np.load(pool_path)
    if codec == "none":
        return loop_only(pool, seconds)
    path = root / f"{codec.replace(':', '_')}.zarr"
    store = EpisodeStore.create(path, codecs=codec)
    w = store.episode_writer(background=True)
    n = int(round(seconds * HZ))
    kept_idx = []
    dropped = 0
    period = 1.0 / HZ
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        tick = t0 + i * period
        now = time.perf_counter()
        if now >= tick + period:  # this tick's slot is gone: a camera frame arriving now would be lost
            dropped += 1
            continue
        if now < tick:
            time.sleep(tick - now)
        f = pool[i % POOL]
        w.append(front_rgb=f[0], wrist_rgb=f[1], joint_pos=np.full(6, i, np.float32), timestamp=np.float64(i / HZ))
        kept_idx.append(i)
    t_stop = time.perf_counter()
    c_rec = time.process_time() - c0
    w.commit()
    save_s = time.perf_counter() - t_stop
    cpu = time.process_time() - c0
    store.close()
    rec_s = t_stop - t0
    bytes_total = du(path)
    camera_bytes = sum(du(path / "data" / k) for k in CAMERAS)

    with EpisodeStore.open(path) as s:
        t = time.perf_counter()
        frames = s.load(list(CAMERAS))
        load_s = time.perf_counter() - t
        rng = np.random.default_rng(0)
        rows = rng.integers(0, s.n_steps, 200)
        t = time.perf_counter()
        for r in rows:
            s.rows(CAMERAS[int(r) % 2], int(r), int(r) + 1)
        random_ms = (time.perf_counter() - t) / len(rows) * 1e3
    sample = list(range(0, len(kept_idx), max(1, len(kept_idx) // 40)))
    p = [psnr(frames[k][j], pool[kept_idx[j] % POOL][c]) for j in sample for c, k in enumerate(CAMERAS)]
    raw_bytes = len(kept_idx) * len(CAMERAS) * H * W * 3
    # Per recorded second (kept steps / HZ), so a tick the loaded machine lost does not make a codec look cheaper.
    recorded_s = len(kept_idx) / HZ
    return {"codec": codec, "seconds": round(rec_s, 3), "frames_offered": n * len(CAMERAS),
            "frames_kept": len(kept_idx) * len(CAMERAS), "frames_dropped": dropped * len(CAMERAS),
            "loadavg_1min_after": os.getloadavg()[0],
            "bytes_per_minute": bytes_total / recorded_s * 60, "camera_bytes": camera_bytes,
            "compression_vs_uncompressed": raw_bytes / camera_bytes,
            "writer_cpu_core": cpu / recorded_s, "writer_cpu_core_while_recording": c_rec / recorded_s,
            "save_s": save_s, "load_s": load_s, "load_ms_per_frame": load_s / (len(kept_idx) * len(CAMERAS)) * 1e3,
            "random_frame_ms": random_ms, "psnr_db": min(p) if p else None, "psnr_db_mean": float(np.mean(p))}


def x264_reference(pool_path: Path, seconds: float) -> dict:
    """The alternative not built: each camera as an H.264 stream (PyAV libx264, preset veryfast, crf 20, GOP 10, no
    B-frames, one encoder thread per camera as the issue measured), encoded as fast as it goes: CPU per second of
    video, bytes per minute, and the cost of reaching one frame (seek to its keyframe, decode up to it)."""
    import io

    import av

    pool = np.load(pool_path)
    n = int(round(seconds * HZ))
    c0 = time.process_time()
    bufs = []
    for c in range(len(CAMERAS)):
        buf = io.BytesIO()
        out = av.open(buf, "w", format="matroska")
        st = out.add_stream("libx264", rate=int(HZ))
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "20", "g": "10", "bf": "0"}
        st.codec_context.thread_count = 1
        for i in range(n):
            for pkt in st.encode(av.VideoFrame.from_ndarray(pool[i % POOL][c], format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
        out.close()
        bufs.append(buf.getvalue())
    cpu = time.process_time() - c0
    # Random access: decode from the stream start up to a random frame in the first GOP-aligned window (a frame index
    # would let a reader seek to the keyframe before it; at GOP 10 that is up to 10 decodes per frame).
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    k = 20
    for _ in range(k):
        target = int(rng.integers(0, 10))
        with av.open(io.BytesIO(bufs[0])) as cont:
            for j, _frame in enumerate(cont.decode(video=0)):
                if j == target:
                    break
    random_ms = (time.perf_counter() - t) / k * 1e3
    t = time.perf_counter()
    with av.open(io.BytesIO(bufs[0])) as cont:
        decoded = sum(1 for _ in cont.decode(video=0))
    load_ms = (time.perf_counter() - t) / decoded * 1e3
    total = sum(len(b) for b in bufs)
    return {"codec": "x264 video (reference, not built)", "frames_offered": n * len(CAMERAS),
            "bytes_per_minute": total / seconds * 60,
            "compression_vs_uncompressed": n * len(CAMERAS) * H * W * 3 / total,
            "encoder_cpu_core": cpu / seconds, "load_ms_per_frame": load_ms, "random_frame_ms_gop10": random_ms,
            "av": av.__version__}


def summarize(runs: list[dict]) -> dict:
    """One table row from the repeats of a codec: medians of the numbers, sums of the frame counts, every run kept."""
    row = {"codec": runs[0]["codec"], "repeats": len(runs)}
    for k in ("frames_offered", "frames_kept", "frames_dropped"):
        row[k] = int(sum(r[k] for r in runs))
    for k, v in runs[0].items():
        if k not in row and isinstance(v, (int, float)):
            row[k] = float(np.median([r[k] for r in runs]))
    row["runs"] = runs
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 s per codec (a smoke run; results under results/quick)")
    ap.add_argument("--seconds", type=float, default=20.0, help="recording length per codec")
    ap.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma, grey levels")
    ap.add_argument("--codecs", nargs="+", default=["raw", "jpeg", "jpeg:80", "jpegxl-lossless"])
    ap.add_argument("--repeats", type=int, default=3, help="runs per codec, interleaved; the table shows medians")
    ap.add_argument("--worker", nargs=3, metavar=("CODEC", "POOL", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        codec, pool, root = args.worker
        print(json.dumps(worker(codec, Path(pool), args.seconds, Path(root))))
        return
    seconds = 4.0 if args.quick else args.seconds
    if "raw" not in args.codecs:
        args.codecs.insert(0, "raw")
    root = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        pool = root / "pool.npy"
        t = time.perf_counter()
        render_pool(pool, args.noise)
        print(f"rendered {POOL} x 2 twin frames at {W}x{H} with noise sigma {args.noise} "
              f"({time.perf_counter() - t:.1f} s)")
        runs: dict[str, list[dict]] = {c: [] for c in ["none", *args.codecs]}
        repeats = 1 if args.quick else args.repeats
        for _ in range(repeats):  # interleaved, so a burst of load elsewhere on the machine hits every codec alike
            for codec in runs:
                proc = subprocess.run([sys.executable, __file__, "--seconds", str(seconds), "--worker", codec,
                                       str(pool), str(root)], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.exit(f"{codec} failed:\n{proc.stderr}")
                runs[codec].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                shutil.rmtree(root / f"{codec.replace(':', '_')}.zarr", ignore_errors=True)
        control = runs.pop("none")
        rows = [summarize(rs) for rs in runs.values()]
        try:
            video = x264_reference(pool, seconds)
        except ImportError:
            video = {"codec": "x264 video (reference, not built)", "skipped": "PyAV (av) is not installed"}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    raw = rows[0]
    for r in rows:
        r["vs_raw"] = {"bytes": raw["bytes_per_minute"] / r["bytes_per_minute"],
                       "writer_cpu": r["writer_cpu_core"] / raw["writer_cpu_core"],
                       "save_time": r["save_s"] / raw["save_s"],
                       "load_time": r["load_ms_per_frame"] / raw["load_ms_per_frame"],
                       "random_frame": r["random_frame_ms"] / raw["random_frame_ms"]}
    dropped_control = sum(r["frames_dropped"] for r in control)
    print(f"control (the 30 Hz loop alone, storing nothing): {dropped_control} of "
          f"{sum(r['frames_offered'] for r in control)} frames dropped by the machine itself; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'codec':<16} {'MB/min':>8} {'x smaller':>9} {'CPU core':>8} {'CPU/raw':>7} {'kept':>9} {'save s':>7} "
          f"{'load s':>7} {'load/raw':>8} {'rand ms':>7} {'PSNR dB':>7}")
    for r in rows:
        v = r["vs_raw"]
        print(f"{r['codec']:<16} {r['bytes_per_minute'] / 1e6:>8.1f} {v['bytes']:>9.1f} {r['writer_cpu_core']:>8.3f} "
              f"{v['writer_cpu']:>7.2f} {r['frames_kept']:>4}/{r['frames_offered']:<4} {r['save_s']:>7.3f} "
              f"{r['load_s']:>7.2f} {v['load_time']:>8.2f} {r['random_frame_ms']:>7.2f} {r['psnr_db']:>7.1f}")
    if "skipped" not in video:
        video["vs_raw"] = {"bytes": raw["bytes_per_minute"] / video["bytes_per_minute"],
                           "cpu": video["encoder_cpu_core"] / raw["writer_cpu_core"],
                           "load_time": video["load_ms_per_frame"] / raw["load_ms_per_frame"]}
        print(f"reference, not built: x264 video {video['bytes_per_minute'] / 1e6:.1f} MB/min, "
              f"{video['vs_raw']['bytes']:.1f}x smaller, encoder {video['encoder_cpu_core']:.3f} core "
              f"({video['vs_raw']['cpu']:.2f} of raw's writer), decode {video['load_ms_per_frame']:.2f} ms/frame, "
              f"a random frame (GOP 10) {video['random_frame_ms_gop10']:.1f} ms")
    write_result("storage_cpu", {
        "setup": {"cameras": list(CAMERAS), "size": [H, W], "hz": HZ, "seconds_per_codec": seconds,
                  "noise_sigma": args.noise, "frames": "MuJoCo twin lift_cube demo, front + wrist, 640x480, "
                  "fresh Gaussian noise per frame", "writer": "EpisodeStore.episode_writer(background=True), "
                  "default flush_bytes; one interpreter per codec"},
        "load_average": list(os.getloadavg()), "repeats": repeats, "control_loop_only": control,
        "rows": rows, "video_reference": video}, quick=args.quick)


if __name__ == "__main__":
    main()
