"""The ROS 2 message definitions (`.msg` text, comments removed) of the types an MCAP export writes, each with the
definitions it depends on in the `ros2msg` schema layout (the type's own fields, then `MSG: pkg/Type` sections
separated by `=====` lines) that rosbag2, Foxglove and `mcap-ros2-support` read. They are the standard interfaces of
ROS 2 (std_msgs, sensor_msgs, geometry_msgs, trajectory_msgs, builtin_interfaces); a test compares them with the
.msg files the installed ROS packages ship.
"""

from __future__ import annotations

# pkg/Type -> its fields (the standard .msg text without comments and constants' documentation)
FIELDS: dict[str, str] = {
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
    "builtin_interfaces/Duration": "int32 sec\nuint32 nanosec",
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "std_msgs/Bool": "bool data",
    "std_msgs/Float32": "float32 data",
    "std_msgs/String": "string data",
    "std_msgs/MultiArrayDimension": "string label\nuint32 size\nuint32 stride",
    "std_msgs/MultiArrayLayout": "MultiArrayDimension[] dim\nuint32 data_offset",
    "std_msgs/Float64MultiArray": "MultiArrayLayout layout\nfloat64[] data",
    "sensor_msgs/Image": ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\n"
                          "uint32 step\nuint8[] data"),
    "sensor_msgs/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data",
    "sensor_msgs/JointState": ("std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n"
                               "float64[] effort"),
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Twist": "Vector3 linear\nVector3 angular",
    "geometry_msgs/TwistStamped": "std_msgs/Header header\nTwist twist",
    "trajectory_msgs/JointTrajectoryPoint": ("float64[] positions\nfloat64[] velocities\nfloat64[] accelerations\n"
                                             "float64[] effort\nbuiltin_interfaces/Duration time_from_start"),
    "trajectory_msgs/JointTrajectory": ("std_msgs/Header header\nstring[] joint_names\n"
                                        "JointTrajectoryPoint[] points"),
}

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string", "wstring"}


def _field_types(datatype: str) -> list[str]:
    """The complex types `datatype`'s fields name, as pkg/Type (a bare name is in the same package)."""
    pkg = datatype.split("/")[0]
    out = []
    for line in FIELDS[datatype].splitlines():
        base = line.split()[0].split("[")[0]
        if base in _PRIMITIVES:
            continue
        out.append(base if "/" in base else f"{pkg}/{base}")
    return out


def schema_text(datatype: str) -> str:
    """The `ros2msg` schema of `datatype` ("pkg/Type" or "pkg/msg/Type"): its fields, then every dependency once."""
    datatype = datatype.replace("/msg/", "/")
    seen: list[str] = []
    todo = list(_field_types(datatype))
    while todo:
        t = todo.pop(0)
        if t not in seen:
            seen.append(t)
            todo.extend(_field_types(t))
    parts = [FIELDS[datatype]]
    for t in seen:
        parts.append("=" * 80 + f"\nMSG: {t}\n" + FIELDS[t])
    return "\n".join(parts)
