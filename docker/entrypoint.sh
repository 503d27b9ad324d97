#!/usr/bin/env bash
# Sources ROS 2 Humble, the Interbotix workspace and the postbc workspace, then runs the command.
set -e
# shellcheck source=/dev/null
source /opt/ros/humble/setup.bash
# shellcheck source=/dev/null
source /opt/interbotix_ws/install/setup.bash
# shellcheck source=/dev/null
if [ -f /opt/postbc/ros2_ws/install/setup.bash ]; then source /opt/postbc/ros2_ws/install/setup.bash; fi
exec "$@"
