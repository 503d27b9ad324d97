#!/usr/bin/env bash
# The upstream ROS 2 and Interbotix code the conformance tests run against: `ros2 launch` (launch, launch_xml,
# launch_yaml, launch_ros, ros2launch), the `ros2` CLI (ros2cli + its verbs), rosidl_runtime_py, Interbotix's Python
# SDK (interbotix_xs_modules, interbotix_common_modules, tf_transformations), the message packages they import that
# no registry serves as a wheel (composition_interfaces: launch_ros imports it at module level; interbotix_xs_msgs:
# the SDK's and xs_sdk_sim's messages), and the share/lib files of the packages the tests run the way
# xsarm_control.launch.py does (interbotix_xs_sdk's xs_sdk_sim.py, interbotix_xsarm_control's motor/mode configs,
# interbotix_xsarm_descriptions' URDF xacro), each with its ament index entry so `$(find ...)` / FindPackageShare
# resolve them. Sources: ../shared/third_party (humble snapshots, see its README); they never become part of the
# project.
#
#   scripts/ros_upstream.sh [VENV]     (default .venv; prints the prefix it made or found)
#
# Output: a prefix under ${POSTBC_CACHE:-~/.cache/postbc}/ros-upstream-<key> with
#   site/      the Python packages (pip --target, so the project's venv stays as requirements/ci.txt pins it)
#   install/   colcon install space of the message packages + the Interbotix share/lib files above
#   env.sh     the environment (PATH, PYTHONPATH, AMENT_PREFIX_PATH, LD_LIBRARY_PATH) that makes `ros2` work
# <key> hashes everything that goes into it (sources, pins, this script, the interpreter), so CI builds once per
# machine and rebuilds when any input changes. The venv gets the build-time wheels and the SDK's PyPI dependencies
# of requirements/ros-upstream.txt and its <venv>/ros-upstream.env points at the prefix (tests/ros/upstream.py
# reads it).
# Where ../shared/third_party is absent (a user's clone) this prints why and exits 0: the tests that need it skip
# with the same message.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY="$PWD/$VENV/bin/python"
TP=${POSTBC_THIRD_PARTY:-$PWD/../shared/third_party}
MARK="$VENV/ros-upstream.env"
if [ ! -d "$TP/ros2/launch_ros" ]; then
  echo "ros_upstream: $TP not found: the ros2 launch / ros2 CLI conformance tests will skip (CI always has it)"
  rm -f "$MARK"
  exit 0
fi
TP=$(cd "$TP" && pwd)
R="$TP/ros2"
PY_PKGS=("$R/launch/launch" "$R/launch/launch_xml" "$R/launch/launch_yaml" "$R/launch_ros/launch_ros"
         "$R/launch_ros/ros2launch" "$R/rosidl_runtime_py")
for d in "$R"/ros2cli/ros2*; do PY_PKGS+=("$d"); done
IX="$TP/interbotix"
PY_PKGS+=("$IX/interbotix_ros_toolboxes/interbotix_xs_toolbox/interbotix_xs_modules"
          "$IX/interbotix_ros_toolboxes/interbotix_common_toolbox/interbotix_common_modules"
          "$TP/tf_transformations")
MSG_PKGS=("$R/rcl_interfaces/composition_interfaces" "$IX/interbotix_ros_core/interbotix_ros_xseries/interbotix_xs_msgs")
# Packages whose files are copied into the install space as colcon would install them (they have no Python
# package to pip-install, and their CMake builds would need the Dynamixel driver): <package>=<source folder>.
XSARMS="$IX/interbotix_ros_manipulators/interbotix_ros_xsarms"
SHARE_PKGS=("interbotix_xsarm_descriptions=$XSARMS/interbotix_xsarm_descriptions"
            "interbotix_xsarm_control=$XSARMS/interbotix_xsarm_control"
            "interbotix_xs_sdk=$IX/interbotix_ros_core/interbotix_ros_xseries/interbotix_xs_sdk")
REQS=requirements/ros-upstream.txt

# The build needs rosidl's generators and ament_cmake (wheels pinned in $REQS) in the venv itself: colcon's cmake
# finds them through the venv's prefix. Installing an already-satisfied pin is a no-op.
# A failed install stops here with pip's message (its warnings about this machine's absent local index folders aside).
if ! pip_log=$("$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS" 2>&1); then
  grep -v "^WARNING: Location" <<<"$pip_log" >&2
  echo "ros_upstream: pip install -r $REQS failed (above)" >&2
  exit 1
fi

key=$({ for p in "${PY_PKGS[@]}" "${MSG_PKGS[@]}" "${SHARE_PKGS[@]#*=}"; do (cd "$p" && find . -type f ! -name '*.pyc' -print0 | sort -z |
          xargs -0 sha256sum); done
        sha256sum "$REQS" requirements/ci.txt "$0"; "$PY" -c "import sys; print(sys.version, sys.prefix)"; uname -m; } |
      sha256sum | cut -c1-16)
CACHE=${POSTBC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/postbc}
PREFIX="$CACHE/ros-upstream-$key"

if [ ! -f "$PREFIX/.complete" ]; then
  echo "ros_upstream: building $PREFIX (once per machine and input set; a few minutes on 2 cores)"
  mkdir -p "$CACHE"
  WORK=$(mktemp -d "$CACHE/.build-XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation --target "$WORK/site" \
    "${PY_PKGS[@]}" 2>&1 | grep -v -e "^WARNING: Location" -e "SetuptoolsDeprecationWarning" -e "BuildBackendWarning" \
    -e "warnings.warn" -e "^\s*$" -e "^\s*!!" -e "\*\*\*\*" -e "License ::" -e "Please consider" -e "See https://packaging" \
    -e "_finalize_license_expression" || true
  # Trap (third_party/README): the rosidl wheels' *Export.cmake files carry the wheel build container's Python and
  # numpy include paths; point them at this interpreter's before cmake reads them.
  pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$PY" -c 'import numpy; print(numpy.get_include())')
  pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  # (`|| true`: on a venv already rewritten by an earlier build grep finds nothing, which must not end the script.)
  { grep -rl --include='*Export.cmake' "/opt/python/" "$VENV/share" 2>/dev/null || true; } | while read -r f; do
    sed -i -e "s#/opt/python/[^/;\"]*/lib/python$pyver/site-packages/numpy/_core/include#$npinc#g" \
           -e "s#/opt/python/[^/;\"]*/include/python$pyver#$pyinc#g" "$f"
  done
  venv_prefix=$(cd "$VENV" && pwd)
  mkdir -p "$WORK/src"
  for p in "${MSG_PKGS[@]}"; do cp -r "$p" "$WORK/src/"; done
  chmod -R u+w "$WORK/src"  # the snapshots are read-only; the build and the cleanup write here
  # BUILD_TESTING=OFF: the packages' lint tests would need ament_lint_auto (not shipped as a wheel).
  (cd "$WORK" && PATH="$venv_prefix/bin:$PATH" AMENT_PREFIX_PATH="$venv_prefix" CMAKE_PREFIX_PATH="$venv_prefix" \
     "$venv_prefix/bin/colcon" --log-base log build --base-paths src --build-base build --install-base install \
     --merge-install --event-handlers console_direct- \
     --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$PY" >"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log" >&2
    echo "ros_upstream: colcon build of ${MSG_PKGS[*]##*/} failed (full log above, last 40 lines)" >&2
    exit 1
  }
  rm -rf "$WORK/build" "$WORK/src" "$WORK/log" "$WORK/build.log"
  # The install layout of ament_cmake/ament_python packages: share/<pkg>/ (package.xml, urdf/, config/, launch/),
  # lib/<pkg>/ (executables, where `ros2 run` and launch_ros look), and the ament index marker.
  for entry in "${SHARE_PKGS[@]}"; do
    pkg=${entry%%=*} src=${entry#*=}
    mkdir -p "$WORK/install/share/$pkg" "$WORK/install/share/ament_index/resource_index/packages"
    touch "$WORK/install/share/ament_index/resource_index/packages/$pkg"
    for d in "$src"/*; do
      case ${d##*/} in
        scripts) mkdir -p "$WORK/install/lib/$pkg" && cp -r "$d"/. "$WORK/install/lib/$pkg/" ;;
        *) cp -r "$d" "$WORK/install/share/$pkg/" ;;
      esac
    done
  done
  chmod -R u+w "$WORK/install"  # copies of read-only sources: a later rebuild must be able to delete them
  site_rel=$(cd "$WORK/install" && ls -d lib/python3*/site-packages)
  cat >"$WORK/env.sh" <<EOF
# Source to use the upstream ros2 tools built by scripts/ros_upstream.sh (with the venv's python first on PATH).
export PATH="$PREFIX/site/bin:\$PATH"
export PYTHONPATH="$PREFIX/site:$PREFIX/install/$site_rel\${PYTHONPATH:+:\$PYTHONPATH}"
export AMENT_PREFIX_PATH="$PREFIX/install:$PREFIX/site\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export LD_LIBRARY_PATH="$PREFIX/install/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
  touch "$WORK/.complete"
  rm -rf "$PREFIX"
  mv "$WORK" "$PREFIX"  # atomic: a killed build never leaves a prefix that looks complete
  trap - EXIT
fi
echo "$PREFIX" >"$MARK"
echo "$PREFIX"
