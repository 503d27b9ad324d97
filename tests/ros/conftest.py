"""Real rclpy over Fast DDS (no mocks): every test gets its own rclpy Context on a domain private to this pytest
process, discovery limited to localhost, and an executor spinning in a background thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from _paths import ROOT

ROS_PKG = ROOT / "ros2_ws" / "src" / "postbc"


def _claim_domain() -> str:
    """A ROS domain no other pytest process on this host holds (flock on /tmp/postbc-ros-domain-N.lock, released
    when this process exits), so parallel CI jobs / developers never see each other's graphs."""
    import fcntl
    import tempfile

    for domain in range(1, 101):
        f = open(Path(tempfile.gettempdir()) / f"postbc-ros-domain-{domain}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _claim_domain.lock = f  # held for the life of the process
        return str(domain)
    raise RuntimeError("ROS domains 1-100 are all held by other test processes on this host")


os.environ.setdefault("ROS_DOMAIN_ID", _claim_domain())
# Discovery on this host only. ROS_AUTOMATIC_DISCOVERY_RANGE exists from Iron on (the pip wheels here: Kilted; the
# Python 3.10 run: Jazzy); Humble only knows ROS_LOCALHOST_ONLY (newer distros warn that it is deprecated).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
if str(ROS_PKG) not in sys.path:
    sys.path.insert(0, str(ROS_PKG))

try:
    import rclpy
except ImportError as e:  # the ROS tests are part of the default suite: say how to get rclpy, never skip silently
    raise ImportError(f"rclpy is not importable ({e}); `make setup` installs the ROS 2 wheels "
                      "(requirements/ros.txt), or source your ROS 2 Humble install") from e

from rclpy.context import Context
from ros_helpers import Graph


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> Path:
    """`colcon build` of ros2_ws into a temporary build/install space (what CI and the Dockerfile run); returns
    the package's install prefix (install/postbc)."""
    import shutil
    import subprocess

    from _paths import BIN

    root = tmp_path_factory.mktemp("colcon")
    colcon = shutil.which("colcon", path=str(BIN)) or shutil.which("colcon")
    assert colcon, "colcon is not installed; `make setup` installs colcon-common-extensions (requirements/ci.txt)"
    r = subprocess.run([colcon, "--log-base", str(root / "log"), "build", "--base-paths", str(ROOT / "ros2_ws/src"),
                        "--build-base", str(root / "build"), "--install-base", str(root / "install")],
                       cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "install" / "postbc"


@pytest.fixture
def ros_context():
    """A fresh rclpy Context (init/shutdown around the test)."""
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


@pytest.fixture
def graph(ros_context):
    """A Graph (ros_helpers.py) in the test's context: `graph.add(node)`, `graph.node("helper")`."""
    g = Graph(ros_context)
    yield g
    g.close()


def pytest_collection_modifyitems(config, items):
    """The rclpy tests run real-time graphs (physics thread, renderers, 100 Hz callbacks) in one Python process on
    a 2-core runner; a scheduling stall of a second can starve one measurement. Each such test gets two reruns
    (pytest-rerunfailures): a real defect fails three times in a row, a stall does not."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))


@pytest.fixture(scope="session")
def recommended_keys_policy(tmp_path_factory) -> Path:
    """A weak lift_cube policy as `postbc pipeline` trains it (a few seconds): the task's recommended obs keys
    (joint_pos gripper_pos object_pos object_yaw_feat), action key cmd_ee_delta; 2 scripted demos, 60 steps, 2 x 64
    MLP. Returns the run directory."""
    import torch
    from postbc_core.policies.settings import PolicySettings
    from postbc_core.sim.demos import record_demos
    from postbc_core.sim.registry import recommended_obs_keys
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import train

    root = tmp_path_factory.mktemp("recommended_keys")
    record_demos("lift_cube", 2, root / "demos.zarr", seed=0)
    threads = torch.get_num_threads()  # train sets its own: give the tests theirs back
    try:
        return train(TrainConfig(dataset=root / "demos.zarr", out=root / "bc",
                                 obs_keys=recommended_obs_keys("lift_cube"), action_key="cmd_ee_delta",
                                 policy=PolicySettings(action_horizon=4, mlp_hidden=(64, 64)), alpha=0.0, steps=60,
                                 batch_size=64, lr=1e-4, warmup_steps=5, device="cpu", progress=False, log_every=30))
    finally:
        torch.set_num_threads(threads)
