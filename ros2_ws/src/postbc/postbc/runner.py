"""In-process runner: the nodes of a bringup profile composed in one process on one executor.

  postbc ros run sim
  postbc ros run record_demos --set store=data/demos.zarr --set teleop=joy
  postbc ros run policy --set checkpoint=runs/postbc/policy.safetensors --set policy.execution=temporal_ensemble
  postbc ros graph policy --set checkpoint=X        (print the nodes and parameters, start nothing)

Same nodes and parameters as `ros2 launch postbc <profile>.launch.py` (both come from bringup.graph); this is how
the stack runs where `ros2 launch` is not installed and how the tests run it. On the real arm start Interbotix's
xs_sdk first (`ros2 launch interbotix_xsarm_control xsarm_control.launch.py robot_model:=wx250s`), which the launch
files include for you.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from postbc_core.errors import PostBCError

from postbc import bringup


class Composition:
    """The nodes of `specs` in `context`, spun by a MultiThreadedExecutor (on a background thread after start())."""

    def __init__(self, specs: list[bringup.NodeSpec], context=None):
        import rclpy
        from postbc.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter

        self.context = context or rclpy.get_default_context()
        self.specs = specs
        self.nodes = {}
        # A thread per node and two spare: a slow callback (a camera render, an inference) must not starve the
        # 100 Hz joint-state subscriptions of the other nodes (the default is one thread per CPU core).
        self.executor = MultiThreadedExecutor(num_threads=len(specs) + 2, context=self.context)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            for spec in specs:
                overrides = [Parameter(k, value=v) for k, v in spec.parameters.items()]
                node = spec.node_class()(spec.name, context=self.context, parameter_overrides=overrides)
                self.nodes[spec.name] = node
                self.executor.add_node(node)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str):
        return self.nodes[name]

    def start(self) -> Composition:
        self._thread = threading.Thread(target=self.spin, name="postbc-executor", daemon=True)
        self._thread.start()
        return self

    def spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok() and not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        """Stop spinning (joins the executor thread), then destroy the nodes (they stop their own threads)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for name, node in reversed(list(self.nodes.items())):
            try:
                self.executor.remove_node(node)
            finally:
                node.destroy_node()
        self.nodes.clear()
        self.executor.shutdown(timeout_sec=2.0)

    def __enter__(self) -> Composition:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build(profile: str, sets: list[str] = (), params_file: str = "") -> list[bringup.NodeSpec]:
    settings, node_overrides = bringup.parse_sets(list(sets))
    specs = bringup.graph(profile, bringup.make_settings(settings))
    merged: dict[str, dict] = {}
    if params_file:
        merged = bringup.merge_params_file(specs, bringup.load_params_file(params_file))
    for node, vals in node_overrides.items():
        merged.setdefault(node, {}).update(vals)
    return bringup._apply_overrides(specs, merged)


def main(argv: list[str] | None = None, prog: str = "postbc ros") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Run or show a bringup profile's ROS 2 node graph in one "
                                                        "process (the same graph as launch/<profile>.launch.py).")
    ap.add_argument("verb", choices=("run", "graph"), help="run: start the nodes; graph: print them")
    ap.add_argument("profile", choices=bringup.PROFILES)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a bringup setting (e.g. control_hz=5, backend=interbotix) or node.param=value")
    ap.add_argument("--params-file", default="", help="ROS 2 parameters YAML (per-node overrides)")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    args = ap.parse_args(argv)
    try:
        specs = build(args.profile, args.sets, args.params_file)
    except PostBCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verb == "graph":
        print(json.dumps([{"executable": s.executable, "name": s.name, "parameters": s.parameters} for s in specs],
                         indent=2))
        return 0
    import rclpy

    rclpy.init()
    comp = None
    try:
        comp = Composition(specs)
        print(f"running {args.profile}: {', '.join(comp.nodes)} (Ctrl-C to stop)", flush=True)
        comp.start()
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)
    except PostBCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if comp is not None:
            comp.close()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
