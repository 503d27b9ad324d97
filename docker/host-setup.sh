#!/usr/bin/env bash
# Robot PC host setup, once (README "Host setup"): the udev rules the robot image carries, and the dialout group.
#   docker/host-setup.sh [IMAGE]        (default postbc-robot:latest; asks for sudo)
# udev runs on the host, not in a container, so Interbotix's installer step that copies its rule and reloads udev
# (xsarm_amd64_install.sh L345-347) has to happen here:
# - 99-interbotix-udev.rules (interbotix_xs_sdk, the commit the image pins): /dev/ttyDXL -> the arm's U2D2 (FTDI
#   0403:6014) with its latency timer at 1 ms, serial devices readable by everyone.
# - 99-realsense-libusb.rules (librealsense v2.55.1, the release of the pinned pyrealsense2): RealSense USB access
#   without root.
set -euo pipefail

image="${1:-postbc-robot:latest}"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "error: image $image not found; build it first (make docker) or give its name: $0 IMAGE" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for rule in 99-interbotix-udev.rules 99-realsense-libusb.rules; do
  # Into a temporary file first: a failed `docker run` must not leave an empty rule behind.
  docker run --rm --entrypoint cat "$image" "/etc/udev/rules.d/$rule" >"$tmp/$rule"
  sudo install -m 0644 "$tmp/$rule" "/etc/udev/rules.d/$rule"
  echo "installed /etc/udev/rules.d/$rule"
done
sudo udevadm control --reload-rules
sudo udevadm trigger

# The rule opens ttyUSB*/ttyACM* to everyone; dialout is the distribution's own grant for serial ports and keeps
# the arm usable if the rule is ever missing.
if id -nG "$USER" | tr ' ' '\n' | grep -qx dialout; then
  echo "$USER is in dialout"
else
  sudo usermod -aG dialout "$USER"
  echo "added $USER to dialout: log out and in again (or reboot) for it to take effect"
fi

if [ -e /dev/ttyDXL ]; then
  echo "ok: /dev/ttyDXL -> $(readlink -f /dev/ttyDXL), latency timer" \
       "$(cat "/sys/bus/usb-serial/devices/$(basename "$(readlink -f /dev/ttyDXL)")/latency_timer" 2>/dev/null || echo '?') ms"
else
  echo "no /dev/ttyDXL yet: plug the U2D2 in (USB) and power the arm, then check again with: ls -l /dev/ttyDXL"
fi
