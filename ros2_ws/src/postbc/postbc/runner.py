"""In-process runner: the nodes of a bringup profile composed in one process on one executor.

  postbc ros run sim
  postbc ros run record_demos --set store=data/demos.zarr --set teleop=joy
  postbc ros run policy --set checkpoint=runs/postbc/policy.safetensors --set policy.execution=temporal_ensemble
  postbc ros graph policy --set checkpoint=X        (print the nodes and parameters, start nothing)

Same nodes and parameters as `ros2 launch postbc <profile>.launch.py` (both come from bringup.graph); this is how
the stack runs where `ros2 launch` is not installed and how the tests run it. A node whose spec says own_process (the
operator's console: a web server must not share the control nodes' GIL) runs as a child process next to the
composition instead (NodeProcess); the runner prints its URL. On the real arm start Interbotix's
xs_sdk first (`ros2 launch interbotix_xsarm_control xsarm_control.launch.py robot_model:=wx250s`), which the launch
files include for you.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time

from postbc_core.errors import ConfigError, PostBCError

from postbc import bringup


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG; a no-op elsewhere)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class NodeProcess:
    """One node of the graph run as a process of its own (NodeSpec.own_process): `python -m postbc.nodes.<exe>`
    with the spec's parameters in a params file, the same ROS environment (domain, discovery range) as this process.
    Its log lines are passed on to this process's stderr; `url` is the first http:// URL it logs (the console's)."""

    START_S = 60.0  # how long start() waits for the node's "up" line (imports on a loaded 2-core machine)

    def __init__(self, spec: bringup.NodeSpec, ready: str = "http://"):
        import os
        import subprocess
        import tempfile
        from pathlib import Path

        import yaml

        import postbc

        self.spec = spec
        self.url = ""
        self.last_error = ""
        self._ready = ready
        self._up = threading.Event()
        fd, self._params = tempfile.mkstemp(prefix=f"postbc-{spec.name}-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({spec.name: {"ros__parameters": bringup.launch_parameters(spec)}}, f)
        pkg_root = str(Path(postbc.__file__).resolve().parents[1])  # the child imports this same postbc package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p),
               "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
                                      "--params-file", self._params], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     # Its own session: the terminal's Ctrl-C reaches this process, which stops the
                                     # node in close(); and it dies with this process, never left holding its port.
                                     start_new_session=True, preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, name=f"postbc-{spec.name}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import re

        for line in self.proc.stdout:
            sys.stderr.write(line)
            text = line.strip()
            if text.startswith("error:") or "[ERROR]" in text:
                self.last_error = text
            m = re.search(r"https?://\S+", text)
            if m and not self.url:
                self.url = m.group(0).rstrip("/") + "/"
            if self._ready in text:
                self._up.set()
        self._up.set()  # exited: start() reports why

    def wait_up(self, timeout: float | None = None) -> None:
        """Wait for the node's ready line; ConfigError with its last error line if it exits first."""
        if not self._up.wait(self.START_S if timeout is None else timeout) or self.proc.poll() is not None:
            code = self.proc.poll()
            self.close()
            raise ConfigError(f"node {self.spec.name!r} " + (f"exited with code {code}" if code is not None else
                                                              f"did not come up in {self.START_S:g} s")
                              + (f": {self.last_error}" if self.last_error else ""))

    def close(self, timeout: float = 10.0) -> None:
        """SIGINT (the node's clean shutdown), then SIGKILL after `timeout` s."""
        import os
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5.0)
        if os.path.exists(self._params):
            os.unlink(self._params)


class Composition:
    """The nodes of `specs` in `context`, spun by a MultiThreadedExecutor (on a background thread after start());
    a spec with own_process (the console) runs as a NodeProcess next to it."""

    def __init__(self, specs: list[bringup.NodeSpec], context=None):
        import rclpy
        from postbc.executors import MultiThreadedExecutor
        from postbc.node_main import construct
        from rclpy.parameter import Parameter

        self.context = context or rclpy.get_default_context()
        self.specs = specs
        self.nodes = {}
        self.processes: dict[str, NodeProcess] = {}
        # A thread per node and two spare: a slow callback (a camera render, an inference) must not starve the
        # 100 Hz joint-state subscriptions of the other nodes (the default is one thread per CPU core).
        self.executor = MultiThreadedExecutor(num_threads=len(specs) + 2, context=self.context)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stopped = threading.Event()  # set when spin() returns
        self.error: BaseException | None = None
        # Other packages' nodes (joy / spacenav input drivers) are separate executables: ros2 launch starts them.
        self.external = [s for s in specs if not s.ours]
        try:
            for spec in (s for s in specs if s.ours and not s.own_process):
                overrides = [Parameter(k, value=v) for k, v in spec.parameters.items()]
                node = construct(spec.node_class(), spec.name, context=self.context, parameter_overrides=overrides)
                self.nodes[spec.name] = node
                self.executor.add_node(node)
            for spec in (s for s in specs if s.ours and s.own_process):
                self.processes[spec.name] = NodeProcess(spec)
            for proc in self.processes.values():
                proc.wait_up()
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str):
        return self.nodes[name] if name in self.nodes else self.processes[name]

    def start(self) -> Composition:
        self._thread = threading.Thread(target=self.spin, name="postbc-executor", daemon=True)
        self._thread.start()
        return self

    def spin(self) -> None:
        """Spin until close() or the context ends. A callback's exception (a node's fatal error, e.g. a camera
        unplugged) ends the spin and is kept in `self.error` for the caller, never lost with the thread."""
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok() and not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.1)
                for name, p in self.processes.items():  # every node is required, as under ros2 launch
                    if p.proc.poll() is not None and not self._stop.is_set():
                        raise PostBCError(f"{name} exited with code {p.proc.returncode}"
                                          + (f": {p.last_error}" if p.last_error else ""))
        except ExternalShutdownException:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the caller (main() prints it)
            self.error = e
        finally:
            self.stopped.set()

    def close(self) -> None:
        """Stop spinning (joins the executor thread), let running callbacks finish and stop the executor's threads,
        then destroy the nodes (each stops its own threads while the context is still valid)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for p in self.processes.values():
            p.close()
        self.processes.clear()
        self.executor.shutdown(timeout_sec=5.0)
        for node in reversed(list(self.nodes.values())):
            node.destroy_node()
        self.nodes.clear()

    def __enter__(self) -> Composition:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build(profile: str, sets: list[str] = (), params_file: str = "") -> list[bringup.NodeSpec]:
    settings, _ = bringup.parse_sets(list(sets))
    specs = bringup.graph(profile, bringup.make_settings(settings))
    _, node_overrides = bringup.parse_sets(list(sets), specs)
    merged: dict[str, dict] = bringup.apply_params_file(specs, params_file) if params_file else {}
    for node, vals in node_overrides.items():
        merged.setdefault(node, {}).update(vals)
    return bringup._apply_overrides(specs, merged)


class _Parser(argparse.ArgumentParser):
    """Argument errors as ConfigError: one `error: ...` line (exit 2) like every other user error, not argparse's
    usage block."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None, prog: str = "postbc ros") -> int:
    ap = _Parser(prog=prog, description="Run or show a bringup profile's ROS 2 node graph in one "
                                        "process (the same graph as launch/<profile>.launch.py).")
    ap.add_argument("verb", choices=("run", "graph"), help="run: start the nodes; graph: print them")
    ap.add_argument("profile", choices=bringup.PROFILES)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a bringup setting (e.g. control_hz=5, backend=interbotix) or node.param=value")
    ap.add_argument("--params-file", default="", help="ROS 2 parameters YAML (per-node overrides), checked like "
                                                      "--set: unknown nodes, parameters and wrong types are refused")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    try:
        args = ap.parse_args(argv)
        if not math.isfinite(args.duration) or args.duration < 0:
            raise ConfigError(f"--duration {args.duration}: give seconds >= 0 (0 = run until Ctrl-C)")
        specs = build(args.profile, args.sets, args.params_file)
    except PostBCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verb == "graph":
        print(json.dumps([{"package": s.package, "executable": s.executable, "name": s.name,
                           "parameters": s.parameters} for s in specs], indent=2))
        return 0
    import rclpy

    from postbc.node_main import init

    stop = init()  # SIGINT / SIGTERM end the loop below; the nodes are destroyed before the context goes down
    comp = None
    code = 0
    try:
        comp = Composition(specs)
        print(f"running {args.profile}: {', '.join([*comp.nodes, *comp.processes])} (Ctrl-C to stop)", flush=True)
        for name, p in comp.processes.items():
            if p.url:
                print(f"{name}: open {p.url} in a browser", flush=True)
        for ext in comp.external:
            print(f"note: {ext.package}'s {ext.executable} is not part of this process; start it with "
                  f"`ros2 run {ext.package} {ext.executable}` (ros2 launch starts it for you)", flush=True)
        comp.start()
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop.event.wait(0.1) and rclpy.ok() and not comp.stopped.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
        if comp.error is not None:
            raise comp.error
    except PostBCError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        pass
    finally:
        try:
            if comp is not None:
                comp.close()
        finally:
            rclpy.try_shutdown()
            stop.restore()
    return code

if __name__ == "__main__":
    sys.exit(main())
