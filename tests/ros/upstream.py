"""The real `ros2` command (upstream launch / launch_ros / ros2cli, humble) for the conformance tests.

scripts/ros_upstream.sh (run by `make test`) installs them from ../shared/third_party into a cached prefix and writes
its path to <venv>/ros-upstream.env; `ros2_env(install)` is the environment a user has after sourcing that prefix
and the colcon install of ros2_ws. Without ../shared/third_party (a user's clone) the tests that need it skip with
`SKIP_REASON`; CI always has it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _paths import ROOT

MARK = Path(sys.prefix) / "ros-upstream.env"
SKIP_REASON = ("the upstream ROS 2 tools are not installed: ../shared/third_party is absent (a user's clone) or "
               "`bash scripts/ros_upstream.sh` has not run (`make test` runs it)")


def prefix() -> Path | None:
    if not MARK.is_file():
        return None
    p = Path(MARK.read_text().strip())
    return p if (p / "env.sh").is_file() else None


def require() -> Path:
    p = prefix()
    if p is None:
        pytest.skip(SKIP_REASON)
    return p


def ros2_env(pkg_prefix: Path | None, **extra: str) -> dict[str, str]:
    """os.environ + the upstream prefix's env.sh + postbc's colcon install prefix `pkg_prefix` (install/postbc; None:
    the upstream prefix alone): what sourcing both setup files gives a user; this test process's ROS_DOMAIN_ID /
    discovery range stay."""
    p = require()
    env = dict(os.environ)
    for line in (p / "env.sh").read_text().splitlines():
        m = re.match(r'export (\w+)="(.*)"$', line)
        if not m:
            continue
        name, value = m.groups()
        value = re.sub(r"\$\{(\w+):\+:\$\1\}", lambda mm: f":{env[mm.group(1)]}" if env.get(mm.group(1)) else "",
                       value)
        env[name] = value.replace("$PATH", env.get("PATH", ""))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    if pkg_prefix is not None:
        site = next((pkg_prefix / "lib").glob("python3*/site-packages"))
        env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
        env["AMENT_PREFIX_PATH"] = f"{pkg_prefix}:{env['AMENT_PREFIX_PATH']}"
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    env.update(extra)
    return env


def ros2(args: list[str], env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """One `ros2 ...` CLI call (upstream ros2cli), never through the ros2 daemon (nothing outlives the test)."""
    return subprocess.run(["ros2", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def processes_in_group(pgid: int) -> list[str]:
    """`pid cmd` of every live process in process group `pgid` (zombies excluded)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"{d.name} {cmd[:160]}")
        except (OSError, ValueError):
            continue
    return out


class OutputProcess:
    """A command in its own session (its own process group, as a terminal's foreground job), stdout + stderr
    collected line by line on a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path | None = None, what: str = ""):
        self.cmd = cmd
        self.what = what or " ".join(cmd)
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd or ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.pgid = self.proc.pid
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self._lines)

    def wait_output(self, pattern: str, timeout: float) -> str:
        """The first output line matching regex `pattern`; fails after `timeout` s or when the process exits."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for ln in list(self._lines):
                if rx.search(ln):
                    return ln
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} after {timeout} s from {self.what}; "
                             f"output:\n{self.output[-4000:]}")


    def kill(self):
        """SIGKILL to the whole group (what is left after a failed or timed-out stop)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


class Launch(OutputProcess):
    """`ros2 launch postbc <file> args...`; `stop()` sends SIGINT to the whole group as Ctrl-C in a terminal does."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None):
        super().__init__(["ros2", "launch", "postbc", *args], env, cwd)
        self.stop_seconds: float | None = None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send `sig` to the process group; returns launch's exit code; `stop_seconds` = time to the last exit."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            os.killpg(self.pgid, sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ros2 launch did not exit {timeout} s after signal {sig}:\n{self.output[-4000:]}")
        while processes_in_group(self.pgid) and time.monotonic() - t0 < timeout:
            time.sleep(0.05)
        self.stop_seconds = time.monotonic() - t0
        self._reader.join(timeout=5)
        return rc

    def wait_exit(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ros2 launch still running after {timeout} s:\n{self.output[-4000:]}")
        self._reader.join(timeout=5)
        return rc

    def __enter__(self) -> Launch:
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None or processes_in_group(self.pgid):
            self.kill()
