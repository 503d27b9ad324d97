"""Sim throughput: control steps per second and real-time factor (sim time / wall time) per task.

Modes: state-only (no rendering) and both cameras ("front", "wrist") at 128x128 RGB. Random joint-target actions
at 10 Hz control (50 physics substeps of 2 ms each); task.reset between episodes is inside the timed region.
Usage: python benchmarks/bench_sim.py [--steps 500] [--image-steps 50]
Writes benchmarks/results/sim_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402

from postbc_core.sim import list_tasks, make  # noqa: E402


def measure(name: str, steps: int, cameras: tuple[str, ...]) -> dict:
    task = make(name, cameras=cameras, image_size=(128, 128))
    lo, hi = task.action_bounds()
    rng = np.random.default_rng(0)
    actions = rng.uniform(lo, hi, size=(steps, 7))
    task.reset(seed=0)
    task.step(actions[0])  # warm-up (renderer creation)
    sim_t, t0 = 0.0, time.perf_counter()
    for a in actions:
        _, _, te, tr, _ = task.step(a)
        sim_t += 1.0 / task.config.control_hz
        if te or tr:
            task.reset()
    wall = time.perf_counter() - t0
    task.close()
    return {"task": name, "cameras": list(cameras), "image_size": [128, 128] if cameras else None,
            "control_hz": task.config.control_hz, "steps": steps, "steps_per_s": steps / wall,
            "real_time_factor": sim_t / wall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--image-steps", type=int, default=50)
    args = ap.parse_args(argv)
    rows = []
    for name in list_tasks():
        for cams, n in (((), args.steps), (("front", "wrist"), args.image_steps)):
            r = measure(name, n, cams)
            print(f"{name:16s} cameras={','.join(cams) or '-':12s} {r['steps_per_s']:8.1f} steps/s  "
                  f"RTF {r['real_time_factor']:7.1f}x")
            rows.append(r)
    write_result("sim_throughput", {"physics_dt_s": 0.002, "gl": os.environ.get("MUJOCO_GL"), "results": rows,
                                    "note": "single process, one env; rendering is Mesa/EGL software on CPU-only "
                                            "machines (a GPU EGL driver is far faster)"})


if __name__ == "__main__":
    main()
