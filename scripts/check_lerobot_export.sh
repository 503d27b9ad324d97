#!/usr/bin/env bash
# Load a LeRobot v3 export (`postbc data export STORE --format lerobot --out DIR`) with LeRobot's own dataset class,
# in a separate venv (requirements/lerobot-check.txt; lerobot needs Python >= 3.12 and pins versions that conflict
# with postbc_core's), and check what it reads against the export's meta/info.json.
#
#   bash scripts/check_lerobot_export.sh DIR           set up the venv (if needed) and load DIR
#   bash scripts/check_lerobot_export.sh --setup-only  only set up
#
# Exit status: 0 loaded and checked; 1 LeRobot could not load the export, or read something else than it holds;
# 3 skipped: no Python >= 3.12 here, or lerobot could not be installed (offline, no wheel): the reason is printed.
# The venv (~6 GB: PyPI's torch is the CUDA build) is built once per machine under
# ${POSTBC_CACHE:-~/.cache/postbc}/venv-lerobot-<hash of the requirements and the interpreter>.
# Environment: PY312 (the interpreter; default: python3.13 / python3.12 on PATH, else pyenv's newest 3.12+).
set -uo pipefail
cd "$(dirname "$0")/.."

CACHE=${POSTBC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/postbc}
REQS=requirements/lerobot-check.txt

find_py() {
  local root cand
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for cand in ${PY312:-} $(command -v python3.13 2>/dev/null) $(command -v python3.12 2>/dev/null) \
              $(ls -d "$root"/versions/3.1[2-9].*/bin/python3 2>/dev/null | sort -rV); do
    if [ -x "$cand" ] && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      echo "$cand"; return
    fi
  done
}

skip() { echo "LeRobot check SKIPPED: $*" >&2; exit 3; }

PY=$(find_py)
[ -n "$PY" ] || skip "no Python >= 3.12 interpreter (lerobot >= 0.5 requires it): set PY312=/path/to/python3.12"
KEY=$( { cat "$REQS"; "$PY" -VV; } | sha256sum | cut -c1-16)
VENV="$CACHE/venv-lerobot-$KEY"
STAMP="$VENV/.installed"
mkdir -p "$CACHE" || exit 1
exec 9>"$CACHE/venv-lerobot.lock"
command -v flock >/dev/null 2>&1 && flock 9

if [ ! -f "$STAMP" ]; then
  echo "lerobot venv: building $VENV with $("$PY" -V) ($REQS)"
  start=$SECONDS
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || skip "$PY -m venv failed"
  "$VENV/bin/python" -m pip install -q -r "$REQS" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2) \
    || { rm -rf "$VENV"
         skip "pip could not install $(grep -v '^#' "$REQS" | xargs) (offline, or no wheel for $("$PY" -V))"; }
  touch "$STAMP"
  echo "lerobot venv: ready in $((SECONDS - start)) s"
  # venvs of older requirements: ~6 GB each, never used again
  for old in "$CACHE"/venv-lerobot-*; do [ "$old" = "$VENV" ] || rm -rf "$old"; done
fi
[ "${1:-}" = "--setup-only" ] && exit 0
DIR=${1:?usage: scripts/check_lerobot_export.sh DIR}

"$VENV/bin/python" - "$DIR" <<'PYEOF'
import json, sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

root = Path(sys.argv[1]).resolve()
info = json.loads((root / "meta/info.json").read_text())
# pyav: torchcodec needs a system FFmpeg, which a machine may lack; LeRobot falls back to the same decoder.
ds = LeRobotDataset("local/postbc_export", root=root, video_backend="pyav")
problems = []
if ds.num_frames != info["total_frames"] or len(ds) != info["total_frames"]:
    problems.append(f"frames: LeRobot reads {ds.num_frames} / len {len(ds)}, info.json says {info['total_frames']}")
if ds.num_episodes != info["total_episodes"]:
    problems.append(f"episodes: LeRobot reads {ds.num_episodes}, info.json says {info['total_episodes']}")
video_keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
if sorted(ds.meta.video_keys) != sorted(video_keys):
    problems.append(f"video keys: {ds.meta.video_keys} vs {video_keys}")
checked = 0
for idx in sorted({0, len(ds) // 2, len(ds) - 1}):
    item = ds[idx]
    for k, f in info["features"].items():
        if k not in item:
            problems.append(f"item {idx} lacks {k}")
            continue
        if f["dtype"] == "video":
            h, w, c = f["shape"]
            if tuple(item[k].shape) != (c, h, w):
                problems.append(f"{k} of item {idx}: shape {tuple(item[k].shape)}, expected {(c, h, w)}")
    if int(item["index"]) != idx:
        problems.append(f"item {idx} has index {int(item['index'])}")
    checked += 1
# What training asks for: an action chunk and two camera frames per item (LeRobot pads past an episode's ends).
dt = 1.0 / ds.fps
deltas = {"action": [i * dt for i in range(4)], **{k: [-dt, 0.0] for k in video_keys}}
chunked = LeRobotDataset("local/postbc_export", root=root, video_backend="pyav", delta_timestamps=deltas)
for idx in sorted({0, len(chunked) // 2, len(chunked) - 1}):
    item = chunked[idx]
    if tuple(item["action"].shape) != (4, info["features"]["action"]["shape"][0]):
        problems.append(f"action chunk of item {idx}: shape {tuple(item['action'].shape)}")
    for k in video_keys:
        h, w, c = info["features"][k]["shape"]
        if tuple(item[k].shape) != (2, c, h, w):
            problems.append(f"{k} frames of item {idx}: shape {tuple(item[k].shape)}, expected {(2, c, h, w)}")
# LeRobot's default decoder where it loads (torchcodec needs the system's FFmpeg libraries): the same frames. Only
# loading the library may fail quietly; a decode error of the export fails the check.
try:
    from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads libtorchcodec and FFmpeg)
    torchcodec = "ok"
except (ImportError, OSError, RuntimeError) as exc:
    torchcodec = f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
if torchcodec == "ok":
    tc = LeRobotDataset("local/postbc_export", root=root, video_backend="torchcodec")
    for idx in sorted({0, len(ds) - 1}):
        for k in video_keys:
            a, b = tc[idx][k].float(), ds[idx][k].float()
            if a.shape != b.shape or (a - b).abs().mean() > 2 / 255:
                problems.append(f"{k} of item {idx}: torchcodec and pyav decode different frames")
task = ds[0]["task"]
print(json.dumps({"torchcodec": torchcodec, "lerobot_loaded": str(root), "frames": ds.num_frames, "episodes": ds.num_episodes, "fps": ds.fps,
                  "video_keys": ds.meta.video_keys, "items_checked": checked, "task_of_item_0": task,
                  "problems": problems}))
sys.exit(1 if problems else 0)
PYEOF
