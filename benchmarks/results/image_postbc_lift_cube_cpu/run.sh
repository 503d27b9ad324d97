#!/usr/bin/env bash
# Image PostBC next to benchmarks/results/image_bc_lift_cube_cpu (same 20 demos at 96x128, same policy settings):
# PostBC alpha 0.5 (the pipeline's), K = 5 members sharing one conv encoder (--ensemble-encoder shared), 1000 ensemble
# steps at 32 windows, then the policy; evaluated on the BC run's unseen seeds 1000-1049.
set -euo pipefail
# usage: run.sh [OUT] [DEMOS]; DEMOS: the 20-demo store ../image_bc_lift_cube_cpu/run.sh records (its OUT/demos.zarr)
DEMOS=$(realpath "${2:-runs/image_bc/demos.zarr}")
OUT=${1:-runs/image_postbc}
P="$(cd "$(dirname "$0")/../../.." && pwd)/.venv/bin/postbc"
mkdir -p "$OUT" && cd "$OUT"
export OMP_NUM_THREADS=1 MUJOCO_GL=egl
date
$P train --dataset "$DEMOS" --obs-keys front_rgb wrist_rgb joint_pos gripper_pos --action-key cmd_ee_delta \
  --alpha 0.5 --ensemble-size 5 --ensemble-encoder shared --ensemble-steps 1000 --ensemble-batch-size 32 \
  --ensemble-hidden 256 256 --image-encoder conv --batch-size 64 --steps 3000 --save-every 1000 --device cpu \
  --out postbc --overwrite
date
$P eval --checkpoint postbc --task lift_cube --episodes 50 --num-envs 4 --videos 0 --seed 1000 --out evalu_3000 --device cpu | tail -2
date
