"""Interbotix's own simulated xs_sdk (`xs_sdk_sim.py`, interbotix_xs_sdk humble) run as xsarm_control.launch.py
runs it with `robot_model:=wx250s use_sim:=true`: node `xs_sdk_sim` in namespace `/wx250s`, parameters
`motor_configs` (interbotix_xsarm_control/config/wx250s.yaml), `mode_configs` (config/modes.yaml),
`robot_description` (`xacro wx250s.urdf.xacro` with the launch file's robot-description arguments) and
`use_sim_time` false, handed over in a parameters file as launch_ros does. Everything comes from the upstream prefix
that scripts/ros_upstream.sh builds from ../shared/third_party (tests skip without it, see upstream.py).

It stands in for the Dynamixel bus only (the one thing that cannot run here): the SDK, its messages and its node
code are Interbotix's. Positions follow commands on its 30 Hz timer (moves longer than 300 ms interpolated), the
gripper integrates its PWM command, velocity and effort are empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from upstream import OutputProcess, processes_in_group, require, ros2_env

ROBOT_MODEL = "wx250s"
NAMESPACE = f"/{ROBOT_MODEL}"
# xsarm_control.launch.py's robot_description: the xacro command of interbotix_xs_modules.xs_launch
# (DeclareInterbotixXSArmRobotDescriptionLaunchArgument) with its defaults (use_world_frame true, hardware_type actual).
XACRO_ARGS = {"robot_name": ROBOT_MODEL, "base_link_frame": "base_link", "use_gripper": "true",
              "show_ar_tag": "false", "show_gripper_bar": "true", "show_gripper_fingers": "true",
              "use_world_frame": "true", "external_urdf_loc": "", "hardware_type": "actual"}


def share(pkg: str) -> Path:
    return require() / "install" / "share" / pkg


def render_urdf(env: dict[str, str]) -> str:
    """`xacro wx250s.urdf.xacro ...` as the launch file runs it ($(find interbotix_xsarm_descriptions) resolves
    through the ament index entry in the upstream prefix)."""
    xacro = share("interbotix_xsarm_descriptions") / "urdf" / f"{ROBOT_MODEL}.urdf.xacro"
    r = subprocess.run([str(Path(sys.executable).parent / "xacro"), str(xacro),
                        *[f"{k}:={v}" for k, v in XACRO_ARGS.items()]],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"xacro failed:\n{r.stderr[-3000:]}"
    return r.stdout


class XsSdkSim(OutputProcess):
    """The simulated xs_sdk in its own process group; `output` collects its log; `stop()` is Ctrl-C."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None):
        self.env = env or ros2_env(None)
        control = share("interbotix_xsarm_control") / "config"
        params = {"motor_configs": str(control / f"{ROBOT_MODEL}.yaml"), "mode_configs": str(control / "modes.yaml"),
                  "robot_description": render_urdf(self.env), "use_sim_time": False}
        params_file = tmp_path / "xs_sdk_sim_params.yaml"
        params_file.write_text(yaml.safe_dump({f"{NAMESPACE}/xs_sdk_sim": {"ros__parameters": params}}))
        script = require() / "install" / "lib" / "interbotix_xs_sdk" / "xs_sdk_sim.py"
        super().__init__([sys.executable, str(script), "--ros-args", "-r", "__node:=xs_sdk_sim", "-r",
                          f"__ns:={NAMESPACE}", "--params-file", str(params_file)], self.env, what="xs_sdk_sim")
        self.wait_output("'xs_sdk_sim' node is up", 60.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None or processes_in_group(self.proc.pid):
            self.kill()

    def __enter__(self) -> XsSdkSim:
        return self

    def __exit__(self, *exc):
        self.stop()
