#!/usr/bin/env bash
# Debian/Ubuntu packages the project needs beyond Python: Mesa EGL for MuJoCo's offscreen rendering
# (MUJOCO_GL=egl) and libusb for RealSense cameras. Installs what is missing when run as root; otherwise
# prints the command to run.
set -euo pipefail
PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libusb-1.0-0)
command -v dpkg-query >/dev/null || { echo "system_deps: not a Debian/Ubuntu system; install the equivalents of: ${PKGS[*]}"; exit 0; }
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing system packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
