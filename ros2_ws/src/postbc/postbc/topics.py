"""Topic and service names and QoS profiles of the postbc graph, defined once (DESIGN.md "ROS 2 graph").

Relative names resolve in the node's namespace, `~/x` in the node's private namespace (`/<node>/x`). Standard
message types only. Joint order everywhere: postbc_core.robots.base.JOINT_NAMES; the gripper travels as the
`left_finger` joint (finger opening, metres, as the Interbotix URDF and our sim report it).
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# -- topics ---------------------------------------------------------------------------------------------------------
JOINT_STATES = "/joint_states"  # sensor_msgs/JointState, ~100 Hz, JOINT_NAMES + left_finger, right_finger
COMMAND = "/postbc/command"  # trajectory_msgs/JointTrajectory: one target or a chunk with time_from_start
ESTOP = "/postbc/estop"  # std_msgs/Bool; True latches the e-stop (cleared by the driver's ~/enable true)
DRIVER_STATUS = "/postbc/driver/status"  # diagnostic_msgs would need another package: std_msgs/String JSON
# geometry_msgs/PoseArray (world): postbc_core.sim.registry.scene_bodies(task) order, task object first; nodes derive
# the task's state keys from it with registry.task_state_keys (observation.object_keys)
OBJECT_POSES = "/postbc/sim/object_poses"
SUCCESS = "/postbc/sim/success"  # std_msgs/Bool, the sim task's success detector (control rate)
CLOCK = "/clock"  # rosgraph_msgs/Clock, published by the sim driver (nodes run with use_sim_time)
EPISODE_EVENTS = "/postbc/episode"  # std_msgs/String: teleop episode keys (start, stop, discard, success, failure)
TELEOP_EE_DELTA = "/postbc/teleop/ee_delta"  # geometry_msgs/TwistStamped: the operator's EE delta per control step
RECORDER_STATUS = "/postbc/recorder/status"  # std_msgs/String JSON
POLICY_DIAGNOSTICS = "/postbc/policy/diagnostics"  # std_msgs/String JSON (latency percentiles, stale drops)
FINETUNE_STATUS = "/postbc/finetune/status"  # std_msgs/String JSON


def image_topic(camera: str) -> str:
    """`/<camera>/image_raw` (sensor_msgs/Image, rgb8), realsense2_camera's `color/image_raw` remapped here."""
    return f"/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


def depth_topic(camera: str) -> str:
    """`/<camera>/depth/image_raw` (sensor_msgs/Image 16UC1, mm, aligned to color)."""
    return f"/{camera}/depth/image_raw"


# -- services (std_srvs) --------------------------------------------------------------------------------------------
# robot_driver: ~/go_home Trigger, ~/enable SetBool, ~/reset Trigger (sim: new episode, next seed)
# recorder: ~/start ~/stop ~/discard Trigger, ~/label SetBool (success)
# policy: ~/enable SetBool;  finetune_manager: ~/start ~/pause ~/abort Trigger, ~/label SetBool

# -- QoS ------------------------------------------------------------------------------------------------------------
SENSOR_QOS = qos_profile_sensor_data  # best effort, keep last 5: images (what realsense2_camera uses)
STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Latched: a late joiner (a restarted driver) still sees the last e-stop state.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
STATUS_QOS = LATCHED_QOS
