"""ament_python package `postbc`: ROS 2 nodes over postbc_core.

Launch files live in the repository's top-level `launch/` (one place for users to read them) and are installed into
share/postbc/launch, so `ros2 launch postbc <name>.launch.py` works from the colcon install space.
"""

import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGE = "postbc"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _rel(pattern: str) -> list[str]:
    """Files matching `pattern` (relative to the repository root), as paths relative to this setup.py."""
    return sorted(os.path.relpath(p, HERE) for p in glob(str(REPO / pattern)))


LAUNCH_FILES = _rel("launch/*.launch.py")


class BuildPy(build_py):
    """build_py that refuses to build without the launch files: colcon would otherwise report success and install an
    empty share/postbc/launch, and `ros2 launch postbc ...` would fail later on the robot with "file not found".
    (Checked here, not at import: colcon runs setup.py to identify the package, and hides that run's output.)"""

    def run(self):
        if not LAUNCH_FILES:
            raise SystemExit(f"error: no launch/*.launch.py under {REPO}: the postbc package installs the "
                             f"repository's top-level launch/ folder; build from the repository's ros2_ws (`cd "
                             f"<repo>/ros2_ws && colcon build`), or symlink ros2_ws/src/postbc from a clone so that "
                             f"../../../launch exists")
        super().run()


NODES = ("robot_driver", "camera", "teleop", "keyboard", "recorder", "policy", "finetune_manager", "console")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # *.xml: fastdds_profile.xml, which the launch files give every process (postbc.bringup.FASTDDS_PROFILE)
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        (f"share/{PACKAGE}/launch", LAUNCH_FILES),
    ],
    install_requires=["setuptools"],
    cmdclass={"build_py": BuildPy},
    zip_safe=True,
    maintainer="PostBC robot stack",
    maintainer_email="dev@postbc.example",
    description="ROS 2 nodes for PostBC on the WidowX 250s (driver, cameras, teleop, recorder, policy, finetune, console)",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + [f"postbc_ros = {PACKAGE}.runner:main"],
    },
)
