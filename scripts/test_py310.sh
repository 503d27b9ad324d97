#!/usr/bin/env bash
# The robot-environment run: the library and ROS suites under Python 3.10 with the versions a ROS 2 Humble PC ends
# up with (requirements/robot-py310.txt: numpy < 2, zarr 2, mujoco 3, OpenCV 4.11, torch 2.13, rclpy wheels for
# cp310). Creates .venv-py310 once; it is rebuilt only when the requirements, postbc_core's pyproject or the
# interpreter change (a stamp keyed on their hash), so repeated runs pay only for the tests.
#
#   bash scripts/test_py310.sh               set up (if needed) and run the robot-environment subset
#   bash scripts/test_py310.sh --setup-only  only set up
#   bash scripts/test_py310.sh ARGS...       pytest ARGS instead of the default subset (e.g. tests/test_data_store.py)
#
# Environment: PY310 (the interpreter; default: python3.10 on PATH, else pyenv's newest 3.10, else /usr/bin), VENV310 (default
# .venv-py310), REQUIRE_PY310=1 (fail instead of skipping when no 3.10 interpreter exists).
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV310:-.venv-py310}
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

# The stamp: hash of everything the venv is built from.
KEY=$( { cat "$REQS" requirements/robot-constraints.txt postbc_core/pyproject.toml; "$PY" -VV; echo "pip $PIP_VERSION"; } \
       | sha256sum | cut -c1-16)
STAMP="$VENV/.installed-$KEY"

if [ ! -f "$STAMP" ]; then
  echo "robot-environment venv: building $VENV with $("$PY" -V) ($REQS)"
  start=$SECONDS
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || { echo "error: $PY -m venv failed (Ubuntu: apt-get install python3.10-venv)" >&2; exit 1; }
  pip_q() {  # quiet pip, minus the warnings about this machine's pip config naming absent local index folders
    "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
  }
  pip_q "pip==$PIP_VERSION" || exit 1
  pip_q -r "$REQS" || exit 1
  pip_q --no-deps --no-build-isolation -e postbc_core || exit 1
  "$VENV/bin/python" -m pip check || exit 1
  touch "$STAMP"
  echo "robot-environment venv: ready in $((SECONDS - start)) s"
fi

export MPLBACKEND=Agg MUJOCO_GL=${MUJOCO_GL:-egl}
# One intra-op thread: this run may overlap the 3.11 suite on a 2-core machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS_PY310:-1}

# Fail loudly if the venv is not the robot's environment (a silently upgraded numpy / zarr would make this run test
# the 3.11 configuration again), and print what was used.
"$VENV/bin/python" - <<'EOF' || exit 1
import sys
import cv2, mujoco, numcodecs, numpy, rclpy, scipy, torch, zarr
from importlib.metadata import version
from postbc_core.data.store import ZARR_MAJOR

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

if [ $# -gt 0 ]; then
  ARGS=("$@")
else
  # The default subset (measured: see README "Robot environment"): the suites whose code depends on the versions
  # that differ on the robot (store/zarr, training/torch, policy, sim/mujoco, calibration/OpenCV, ROS), without the
  # slow-marked ones and without the long statistical / end-to-end pipeline tests the 3.11 run already covers.
  ARGS=(-m "not slow" tests/ros
        tests/test_data_store.py tests/test_data_sampler.py tests/test_data_tools.py
        tests/test_models.py tests/test_policy.py tests/test_schedulers.py tests/test_train.py
        tests/test_sim.py tests/test_kinematics.py tests/test_safety.py tests/test_robots.py
        tests/test_calibration.py tests/test_cameras.py)
fi

start=$SECONDS
# -p no:cacheprovider: leave .pytest_cache (the 3.11 run's last-failed state) alone.
"$VENV/bin/python" -m pytest -p no:cacheprovider "${ARGS[@]}"
rc=$?
echo "robot-environment run (Python 3.10): exit $rc in $((SECONDS - start)) s"
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); check the selection" >&2
  exit 1
fi
exit "$rc"
