"""Test stand-in for Interbotix's `interbotix_xs_modules` (ROS 2 Humble API), used only via sys.path in tests.

It mirrors the documented signatures (InterbotixManipulatorXS, bot.arm, bot.core, bot.gripper), records every call
in `CALLS` as (qualified name, args, kwargs), and integrates commanded joint positions so tests can observe motion.
No ROS, no hardware.
"""

CALLS: list = []


def record(name: str, *args, **kwargs) -> None:
    CALLS.append((name, args, kwargs))


def calls(name: str) -> list:
    """The (args, kwargs) of every recorded call to `name`."""
    return [(a, k) for n, a, k in CALLS if n == name]
