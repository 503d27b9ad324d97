"""Shared helpers for benchmarks: machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# Smoke runs (--quick) land here (git-ignored), so they never overwrite the recorded results.
QUICK_RESULTS = RESULTS / "quick"


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(name: str, payload: dict, quick: bool = False) -> Path:
    folder = QUICK_RESULTS if quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "quick": quick,
               **payload}
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def percentiles(samples_s: list[float]) -> dict:
    import numpy as np

    a = np.asarray(samples_s) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": int(a.size)}


def run_worker(cmd: list[str], what: str) -> dict:
    """Runs one benchmark variant in a fresh interpreter (so its peak RSS is its own) and returns the JSON object
    it printed last; exits naming `what` and the worker's stderr if it failed."""
    import subprocess
    import sys

    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_steps(step, first: int, min_steps: int, min_seconds: float, max_steps: int) -> tuple[list[float], float]:
    """Calls step(i) for i = first, first + 1, ... until at least `min_steps` calls and `min_seconds` have passed
    (at most `max_steps` calls); returns (each call's seconds, total seconds)."""
    import time

    times: list[float] = []
    t_start = time.perf_counter()
    i = first
    while len(times) < max_steps and (len(times) < min_steps or time.perf_counter() - t_start < min_seconds):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
        i += 1
    return times, time.perf_counter() - t_start


def pool_map(fn, jobs: list, workers: int) -> list:
    """[fn(job) for job in jobs], over up to `workers` spawned processes (a clean interpreter each: no forked torch
    or MuJoCo state) when there is more than one job and worker; in order."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs))
