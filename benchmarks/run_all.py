"""Runs every benchmark in this folder (each prints a table and writes benchmarks/results/<name>.json).

    python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Benchmarks of a trained policy: they need its run directory, which no benchmark here trains (hours on a CPU).
NEEDS_INPUT = {"bench_ros_image_episodes.py": "a trained image policy: python benchmarks/bench_ros_image_episodes.py "
                                              "--checkpoint RUN (benchmarks/results/image_bc_lift_cube_cpu/run.sh "
                                              "trains one)"}


def main() -> int:
    extra = sys.argv[1:]
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        if script.name in NEEDS_INPUT:
            print(f"skipped: needs {NEEDS_INPUT[script.name]}", flush=True)
            continue
        if subprocess.run([sys.executable, str(script), *extra], cwd=HERE).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
