"""How far a chunked policy's joint targets jump from one chunk to the next, in closed loop in the sim.

A diffusion policy draws a fresh initial noise for every chunk; where the demonstrations are multimodal (lift_cube's
two grasp yaws, 90 deg apart) consecutive chunks can land in different modes, and the target of a joint jumps at the
chunk boundary although no demonstration ever moved it that fast. This measures it: for every chunk boundary, the
change of each joint target between the last executed action of the previous chunk and the first of the new one, and
for reference the largest per-step change in the demonstrations (commanded target minus measured joint).

    python -m postbc_core.analysis.chunk_jumps runs/demo/seed_0/bc runs/demo/seed_0/postbc --episodes 20 \
        --demos runs/demo/seed_0/demos.zarr

Units: rad. Needs a joint-target policy (action key cmd_joint_pos).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from postbc_core.control.loop import EpisodeResult, Step, Watcher
from postbc_core.errors import ConfigError
from postbc_core.robots.base import JOINT_NAMES

THRESHOLDS = (0.5, 1.0)  # rad


class _Jumps(Watcher):
    """At every chunk boundary of each episode (step t with t % n == 0, t > 0; t counted from the episode start), the
    change |a_t[:6] - a_(t-1)[:6]| (6,) rad of the joint targets the policy chose (before clipping) between the last
    action of the previous chunk and the first of the new one."""

    def __init__(self, n_action_steps: int):
        self.n = n_action_steps
        self.jumps: list[np.ndarray] = []
        self._last: dict[int, np.ndarray] = {}
        self._running: dict[int, EpisodeResult] = {}

    def start(self, slot: int, result: EpisodeResult, obs: dict, env) -> None:
        self._last.pop(slot, None)
        self._running[slot] = result

    def observe(self, slot: int, step: Step, env) -> None:
        t = self._running[slot].length - 1  # the loop has counted this step
        a = np.asarray(step.action[:6], np.float64)
        if t % self.n == 0 and slot in self._last:
            self.jumps.append(np.abs(a - self._last[slot]))
        if t % self.n == self.n - 1:
            self._last[slot] = a


def chunk_jumps(policy, task: str = "lift_cube", episodes: int = 20, seed: int = 3000) -> dict:
    """Closed-loop rollouts of `policy` (the sim task with the driver's safety layer; episode i has seed `seed + i`
    and draws its diffusion noise from its own generator seeded with it, control.runner.PolicyActor) on the episode
    loop, actions clipped to the task's bounds.

    Returns per joint: the fraction of chunk boundaries whose target jump exceeds each of THRESHOLDS and the
    median jump, plus the boundaries counted and the success count."""
    from postbc_core.control.loop import run_episodes
    from postbc_core.control.runner import PolicyActor, PolicyRunner
    from postbc_core.sim.registry import make
    from postbc_core.sim.task_fit import check_policy_fits_task, task_overrides_for_policy

    runner = PolicyRunner(policy, num_envs=1)
    if runner.action_mode != "joint":
        raise ConfigError(f"chunk_jumps measures joint targets; this policy commands {runner.action_key} "
                          "(train on cmd_joint_pos)")
    env = make(task, **task_overrides_for_policy(runner.obs_shapes), action_mode="joint")
    check_policy_fits_task(runner.obs_shapes, env)
    watch = _Jumps(runner.n_action_steps)
    try:
        results = run_episodes([env], PolicyActor(runner), [seed + ep for ep in range(episodes)], watchers=[watch])
    finally:
        env.close()
    j = np.asarray(watch.jumps).reshape(-1, 6)
    per_joint = {name: {**{f"frac_above_{th}": float(np.mean(j[:, i] > th)) if len(j) else 0.0 for th in THRESHOLDS},
                        "median": float(np.median(j[:, i])) if len(j) else 0.0}
                 for i, name in enumerate(JOINT_NAMES)}
    return {"task": task, "episodes": episodes, "seed": seed, "successes": sum(r.success for r in results),
            "boundaries": len(j), "n_action_steps": runner.n_action_steps, "joints": per_joint}


def demo_max_step(store_path: str | Path) -> dict[str, float]:
    """Per joint, the largest |cmd_joint_pos - joint_pos| in a demonstration store (rad): how far the demonstrated
    targets ever were from the measured joints."""
    from postbc_core.data.store import EpisodeStore

    with EpisodeStore.open(store_path, "r") as store:
        steps = [np.abs(e["cmd_joint_pos"][:, :6] - e["joint_pos"]) for e in
                 (store.episode(i, ["cmd_joint_pos", "joint_pos"]) for i in range(store.n_episodes))]
    m = np.concatenate(steps).max(axis=0)
    return {name: float(m[i]) for i, name in enumerate(JOINT_NAMES)}


def main(argv: list[str] | None = None) -> int:
    from postbc_core import load_policy

    ap = argparse.ArgumentParser(prog="python -m postbc_core.analysis.chunk_jumps", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="policy run directories or .safetensors files")
    ap.add_argument("--task", default="lift_cube")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3000, help="first episode seed")
    ap.add_argument("--demos", type=Path, help="a demonstration store: also report its largest per-step targets")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    a = ap.parse_args(argv)
    results = {}
    for ckpt in a.checkpoints:
        r = chunk_jumps(load_policy(ckpt, device="cpu"), a.task, a.episodes, a.seed)
        results[str(ckpt)] = r
        worst = max(r["joints"], key=lambda k: r["joints"][k]["frac_above_0.5"])
        w = r["joints"][worst]
        print(f"{ckpt}: {r['successes']}/{r['episodes']} successes, {r['boundaries']} chunk boundaries; {worst} target "
              f"jumps > 0.5 rad at {w['frac_above_0.5']:.1%}, > 1.0 rad at {w['frac_above_1.0']:.1%} "
              f"(median {w['median']:.3f} rad)")
    if a.demos is not None:
        results["demos_max_step"] = demo_max_step(a.demos)
        print("demonstrations, largest target - measured per step: "
              + ", ".join(f"{k} {v:.3f}" for k, v in results["demos_max_step"].items()))
    if a.out is not None:
        a.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
