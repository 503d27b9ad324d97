#!/usr/bin/env bash
# Debian/Ubuntu packages the project needs beyond Python: Mesa EGL for MuJoCo's offscreen rendering
# (MUJOCO_GL=egl) and libusb for RealSense cameras; for the tests only, Debian's chromium-headless-shell, the browser
# Playwright drives in the operator console's tests (tests/ros/test_ros_console.py; Playwright cannot download its
# own browser here). Installs what is missing when run as root; otherwise prints the command to run (a missing test
# package is a note: those tests skip and name it).
set -euo pipefail
PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libusb-1.0-0)
TEST_PKGS=(chromium-headless-shell)
command -v dpkg-query >/dev/null || { echo "system_deps: not a Debian/Ubuntu system; install the equivalents of: ${PKGS[*]} (tests: ${TEST_PKGS[*]})"; exit 0; }
missing=()
test_missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for p in "${TEST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || test_missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && [ ${#test_missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "error: missing system packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]} ${test_missing[*]}" >&2
    exit 1
  fi
  echo "note: the console's browser tests skip without ${test_missing[*]}; run: sudo apt-get install -y --no-install-recommends ${test_missing[*]}"
  exit 0
fi
echo "installing system packages: ${missing[*]} ${test_missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" "${test_missing[@]}"
