#!/usr/bin/env bash
# Sources ROS 2 Humble, the Interbotix workspace and the postbc workspace, then runs the command.
set -e
source /opt/ros/humble/setup.bash
source /opt/interbotix_ws/install/setup.bash
if [ -f /opt/postbc/ros2_ws/install/setup.bash ]; then source /opt/postbc/ros2_ws/install/setup.bash; fi
exec "$@"
