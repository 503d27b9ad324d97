#!/usr/bin/env bash
# usage: bash benchmarks/results/image_bc_lift_cube_cpu/run.sh [OUT]   (after make setup)
# First image-BC measurement in the twin (issue 22 item 3, one seed): lift_cube, 20 scripted demos recorded at 96x128
# from the front and wrist cameras, BC (alpha 0) on front_rgb wrist_rgb joint_pos gripper_pos only (no object keys),
# conv encoder + MLP 3x256, batch 64, 3000 steps, checkpoints every 1000; each checkpoint evaluated on 50 episodes with
# seeds 1000-1049 (initial states no demo started from: the demos use seeds 0, 1, ...).
set -euo pipefail
P="$(cd "$(dirname "$0")/../../.." && pwd)/.venv/bin/postbc"
OUT="${1:-runs/image_bc}"  # a directory for the demos, the run and the evaluations
mkdir -p "$OUT" && cd "$OUT"
export OMP_NUM_THREADS=1 MUJOCO_GL=egl
date
$P sim demos --task lift_cube --episodes 20 --out demos.zarr --cameras front wrist --image-size 96 128 --overwrite
date
$P train --dataset demos.zarr --obs-keys front_rgb wrist_rgb joint_pos gripper_pos --action-key cmd_ee_delta \
  --alpha 0 --image-encoder conv --batch-size 64 --steps 3000 --save-every 1000 --device cpu --out bc --overwrite
date
for c in bc/checkpoints/step_*.safetensors; do
  s=$(basename $c .safetensors)
  $P eval --checkpoint $c --task lift_cube --episodes 50 --seed 1000 --num-envs 4 --videos 0 --out eval_$s --device cpu | tail -2
done
date
