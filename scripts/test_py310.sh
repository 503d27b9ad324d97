#!/usr/bin/env bash
# The robot-environment run: the library and ROS suites under Python 3.10 with the versions a ROS 2 Humble PC ends
# up with (requirements/robot-py310.txt: numpy < 2, zarr 2, mujoco 3, OpenCV 4.11, torch 2.13, rclpy wheels for
# cp310). The venv (~5.5 GB: PyPI's cp310 torch is the CUDA build) is built once per machine under
# ~/.cache/postbc/venv-py310-<hash of the requirements, postbc_core's pyproject, the interpreter>, shared by every
# checkout and CI clone on the machine, and rebuilt only when one of those changes; a run then re-points its editable
# postbc_core at this checkout (~5 s). .venv-py310 in the checkout links to it.
#
#   bash scripts/test_py310.sh               set up (if needed) and run the robot-environment subset
#   bash scripts/test_py310.sh --setup-only  only set up
#   bash scripts/test_py310.sh ARGS...       pytest ARGS; if they name tests (a path under tests/), instead of the
#                                            default subset, else added to it (e.g. --durations=20, -x)
#
# Environment: PY310 (the interpreter; default: python3.10 on PATH, else pyenv's newest 3.10, else /usr/bin),
# POSTBC_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/postbc), REQUIRE_PY310=1 (fail instead of skipping when no 3.10
# interpreter exists).
set -uo pipefail
cd "$(dirname "$0")/.."

CACHE=${POSTBC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/postbc}
LINK=.venv-py310
REQS=requirements/robot-py310.txt
# pip itself pinned too: the resolver's behaviour is part of what makes the install repeatable.
PIP_VERSION=26.3

find_py310() {
  # Candidates in order; the first that really runs 3.10 wins (a pyenv shim named python3.10 exists even when the
  # active pyenv version is another one, and then fails).
  local root cand
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for cand in ${PY310:-} $(command -v python3.10 2>/dev/null) \
              $(ls -d "$root"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -rV) /usr/bin/python3.10; do
    if [ -x "$cand" ] && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
      echo "$cand"; return
    fi
  done
}

PY=$(find_py310)
if [ -z "$PY" ]; then
  msg="robot-environment run SKIPPED: no Python 3.10 interpreter (set PY310=/path/to/python3.10, or install it: apt-get install python3.10 python3.10-venv on Ubuntu 22.04, or pyenv install 3.10)"
  if [ "${REQUIRE_PY310:-0}" = 1 ]; then echo "error: $msg" >&2; exit 1; fi
  echo "$msg" >&2
  exit 0
fi

# The venv's key: hash of everything it is built from.
KEY=$( { cat "$REQS" requirements/robot-constraints.txt postbc_core/pyproject.toml; "$PY" -VV; echo "pip $PIP_VERSION"; } \
       | sha256sum | cut -c1-16)
VENV="$CACHE/venv-py310-$KEY"
STAMP="$VENV/.installed"

mkdir -p "$CACHE" || exit 1
# One run at a time per machine: the shared venv's editable install points at one checkout while its tests run.
exec 9>"$CACHE/venv-py310.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  echo "robot-environment run: waiting for another checkout's run to finish ($CACHE/venv-py310.lock)"
  flock 9
fi

pip_q() {  # quiet pip, minus the warnings about this machine's pip config naming absent local index folders
  "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

if [ ! -f "$STAMP" ]; then
  echo "robot-environment venv: building $VENV with $("$PY" -V) ($REQS)"
  start=$SECONDS
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || { echo "error: $PY -m venv failed (Ubuntu: apt-get install python3.10-venv)" >&2; exit 1; }
  pip_q "pip==$PIP_VERSION" || exit 1
  pip_q -r "$REQS" || exit 1
  pip_q --no-deps --no-build-isolation -e postbc_core || exit 1
  "$VENV/bin/python" -m pip check || exit 1
  touch "$STAMP"
  echo "robot-environment venv: ready in $((SECONDS - start)) s"
  # venvs of older requirements: 5.5 GB each, never used again
  for old in "$CACHE"/venv-py310-*; do [ "$old" = "$VENV" ] || rm -rf "$old"; done
fi
# The editable postbc_core must be this checkout's (another checkout or CI clone may have run last).
if ! grep -qxF "$PWD/postbc_core/src" "$VENV"/lib/python3.10/site-packages/__editable__.postbc_core-*.pth 2>/dev/null; then
  pip_q --no-deps --no-build-isolation -e postbc_core || exit 1
fi
[ -L "$LINK" ] || rm -rf "$LINK"  # a link for humans: .venv-py310/bin/python
ln -sfn "$VENV" "$LINK"

export MPLBACKEND=Agg MUJOCO_GL=${MUJOCO_GL:-egl}
# What a sourced ROS 2 setup script sets, for the distribution whose wheels the venv has (rclpy 7.1 = Jazzy, Fast DDS
# 2.14): code that keys off it (the Fast DDS 2.x profile variable, Humble's discovery variable) sees the truth.
export ROS_DISTRO=jazzy
# One intra-op thread: this run may overlap the 3.11 suite on a 2-core machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS_PY310:-1}

# Fail loudly if the venv is not the robot's environment (a silently upgraded numpy / zarr would make this run test
# the 3.11 configuration again), and print what was used.
"$VENV/bin/python" - <<'EOF' || exit 1
import sys
import cv2, mujoco, numcodecs, numpy, rclpy, scipy, torch, zarr
from importlib.metadata import version
from postbc_core.data.zarr_compat import ZARR_MAJOR

checks = {
    "Python 3.10": sys.version_info[:2] == (3, 10),
    "numpy < 2": int(numpy.__version__.split(".")[0]) < 2,
    "zarr 2 (store's ZARR_MAJOR branch)": ZARR_MAJOR == 2,
    "mujoco 3": mujoco.__version__.startswith("3."),
    "OpenCV 4": cv2.__version__.startswith("4."),
}
bad = [k for k, ok in checks.items() if not ok]
print("robot-environment versions: Python %s, numpy %s, scipy %s, zarr %s, numcodecs %s, mujoco %s, opencv %s, "
      "torch %s, rclpy %s" % (sys.version.split()[0], numpy.__version__, scipy.__version__, zarr.__version__,
                              numcodecs.__version__, mujoco.__version__, cv2.__version__, torch.__version__,
                              version("ros-rclpy")))
if bad:
    sys.exit("error: the venv is not the robot environment: " + ", ".join(bad))
EOF

[ "${1:-}" = "--setup-only" ] && exit 0

selects=0
for a in "$@"; do [[ "$a" == tests* || -e "${a%%::*}" ]] && selects=1; done
if [ "$selects" = 1 ]; then
  ARGS=("$@")
else
  # The default subset: the suites whose code depends on the versions that differ on the robot (store/zarr and the
  # data tools, training/torch, policy, posterior, RL finetuning in the twin, sim/mujoco, calibration/OpenCV, cameras,
  # CLI, ROS, the interchange formats: rerun-sdk / pyarrow / PyAV on numpy 1), not slow-marked. Left to the 3.11
  # run: the statistical / end-to-end suites (coverage, scripted demos' success rates, RL on toy problems, the
  # pipeline), about as long again, and the suites on the upstream harness (`ros2 launch`, `ros2` CLI, Interbotix
  # SDK + xs_sdk_sim: scripts/ros_upstream.sh), which is built for the 3.11 venv's Kilted wheels.
  ARGS=(-m "not slow" tests/ros --ignore=tests/ros/test_ros_launch.py --ignore=tests/ros/test_interbotix_upstream.py
        tests/test_data_store.py tests/test_data_sampler.py tests/test_data_tools.py
        tests/test_models.py tests/test_policy.py tests/test_posterior.py tests/test_schedulers.py tests/test_train.py
        tests/test_rl_sim.py tests/test_eval.py tests/test_sim.py tests/test_kinematics.py tests/test_safety.py
        tests/test_robots.py tests/test_calibration.py tests/test_cameras.py tests/test_cli.py tests/test_bad_input.py
        tests/test_interchange.py "$@")
fi

# -p no:cacheprovider: leave .pytest_cache (the 3.11 run's last-failed state) alone.
"$VENV/bin/python" -m pytest -p no:cacheprovider "${ARGS[@]}"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); check the selection" >&2
  exit 1
fi
exit "$rc"
