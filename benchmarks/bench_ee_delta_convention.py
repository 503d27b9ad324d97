"""What the EE-delta convention changes in the twin: how far a chained target leads the measured joints (tracking lag)
and how different the two readings of the same 4-step chunk are, and optionally a checkpoint's success under each.

The two readings of a stored cmd_ee_delta (robots.actions): "chained" (the convention every recorder and executor
uses now: each delta applies to the previous step's target, cut back to the measured joints past one max step) and
"reanchored" (the twin's rule before: each delta applies to the joints measured at its step). Part 1 runs the
scripted lift_cube demonstrator in the twin (chained, safety on, 10 Hz) and reports, per step, the lead of the
previous target over the measured EE (mm) and joints (rad), and for every 4-step window of the operator's deltas the
EE (mm) and joint (rad) distance between the chained targets and the reanchored ones (each delta applied to the
joints measured at its step). Part 2 (--checkpoint) evaluates a cmd_ee_delta checkpoint on the same seeds under both
readings (the reanchored one by cutting the chain before every step), paired, and a third way: chained, on the ROS
policy node's receding schedule with its usual one tick of latency (`graph_schedule`: with Ta = 4 and
n_action_steps = 4 the node plans from every third tick's observation; that tick still runs the previous chunk's last
action, the new chunk's actions 1..3 run on the next three ticks; `postbc eval` runs actions 0..3 of a chunk planned
every fourth tick). A checkpoint trained before the convention was recorded is refused by load_policy;
--legacy-checkpoint loads it anyway, for this measurement only.

    python benchmarks/bench_ee_delta_convention.py [--demos 10] [--checkpoint RUN --episodes 50 --seed 1000
        [--legacy-checkpoint]] [--out NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np
from common import write_result

CHUNK = 4


@contextlib.contextmanager
def reanchored():
    """Every task's EE deltas apply to the joints measured at their step (the pre-convention rule)."""
    from postbc_core.sim.base import Task

    orig = Task.action_to_joint_target

    def each_step_from_measured(self, action):
        self.ee_executor.reset()
        return orig(self, action)

    Task.action_to_joint_target = each_step_from_measured
    try:
        yield
    finally:
        Task.action_to_joint_target = orig


def lag_and_chunk_gap(n_demos: int) -> dict:
    from postbc_core.robots import kinematics as K
    from postbc_core.robots.actions import EEDeltaExecutor
    from postbc_core.sim import make
    from postbc_core.sim.demos import make_demonstrator

    def ee(q):
        return K.fk_matrix(q)[:3, 3]

    lead_mm, lead_rad, gap_mm, gap_rad, step_mm = [], [], [[] for _ in range(CHUNK)], [[] for _ in range(CHUNK)], []
    for seed in range(n_demos):
        env = make("lift_cube", action_mode="ee_delta")
        demo = make_demonstrator("lift_cube", np.random.default_rng(seed))
        obs = env.reset(seed=seed)
        demo.reset(obs)
        qs, acts, done = [], [], False
        while not done:
            a = demo.act(obs)
            qs.append(obs["joint_pos"].astype(np.float64))
            acts.append(np.asarray(a, np.float64))
            prev_target = env.ee_executor.q_prev
            if prev_target is not None:
                lead_mm.append(1e3 * np.linalg.norm(ee(prev_target) - ee(qs[-1])))
                lead_rad.append(float(np.abs(prev_target - qs[-1]).max()))
            step_mm.append(1e3 * np.linalg.norm(a[:3]))
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
        env.close()
        for t in range(len(acts) - CHUNK + 1):  # the same deltas and measured joints, read both ways
            chain = EEDeltaExecutor()
            for i in range(CHUNK):
                qc, _ = chain.step(acts[t + i], "ee_delta", qs[t + i])
                qr = K.apply_ee_delta(qs[t + i], acts[t + i][:6])
                gap_mm[i].append(1e3 * np.linalg.norm(ee(qc) - ee(qr)))
                gap_rad[i].append(float(np.abs(qc - qr).max()))

    def stats(x):
        x = np.asarray(x)
        return {"median": round(float(np.median(x)), 4), "p90": round(float(np.percentile(x, 90)), 4),
                "max": round(float(x.max()), 4), "n": int(x.size)}

    return {"demos": n_demos, "control_hz": 10.0, "commanded_translation_mm_per_step": stats(step_mm),
            "lead_of_previous_target_mm": stats(lead_mm), "lead_of_previous_target_joint_rad": stats(lead_rad),
            "chunk_gap_mm": {f"point_{i}": stats(g) for i, g in enumerate(gap_mm)},
            "chunk_gap_joint_rad": {f"point_{i}": stats(g) for i, g in enumerate(gap_rad)}}


def graph_schedule_actor(runner):
    """PolicyActor on the policy node's receding schedule at lead L = 1 (module docstring)."""
    from postbc_core.control.runner import PolicyActor
    from postbc_core.robots.actions import GRIPPER_OPEN

    class GraphSchedule(PolicyActor):
        def __init__(self, runner):
            super().__init__(runner)
            n = runner.num_envs
            self.t, self.plan, self.start_tick = [0] * n, [None] * n, [0] * n
            ta, lead = runner.action_horizon, 1
            self.period = max(1, min(runner.n_action_steps + lead, ta) - lead)  # the node's _next_plan step

        def start(self, slot, result, obs, env):
            super().start(slot, result, obs, env)
            self.t[slot], self.plan[slot] = 0, None

        def act(self, slots, obs):
            spec = self.runner.spec
            noise = np.stack([self._noise_rng[j].standard_normal(spec.noise_shape) for j in slots]).astype(np.float32)
            self.runner.observe(spec.batch(obs), slots)
            out = np.zeros((len(slots), spec.action_dim))
            out[:, 6] = GRIPPER_OPEN  # no plan yet (the episode's first tick): the driver holds
            for r, j in enumerate(slots):
                k = self.t[j] - self.start_tick[j]
                if self.plan[j] is not None and 0 <= k < len(self.plan[j]):
                    out[r] = self.plan[j][k]
            due = [r for r, j in enumerate(slots) if self.t[j] % self.period == 0]
            if due:  # planned now, arriving after this tick's command: from index 1 on
                chunks = self.runner.policy.predict_action(self.runner.stacked_history([slots[r] for r in due]),
                                                           noise=noise[due])
                for r, chunk in zip(due, chunks):
                    self.plan[slots[r]], self.start_tick[slots[r]] = np.asarray(chunk, np.float64), self.t[slots[r]]
            for j in slots:
                self.t[j] += 1
            return out

    return GraphSchedule(runner)


def checkpoint_both_ways(checkpoint: str, episodes: int, seed: int, legacy: bool) -> dict:
    from unittest import mock

    from postbc_core.policies import checkpoint as ck
    from postbc_core.sim.evaluation import evaluate_policy
    from postbc_core.stats import wilson_interval

    with mock.patch.object(ck, "check_ee_delta_convention", lambda info, path: None) if legacy else \
            contextlib.nullcontext():
        policy = ck.load_policy(checkpoint, device="cpu")
    if policy.action_key != "cmd_ee_delta":
        raise SystemExit(f"{checkpoint}: action key {policy.action_key!r}; this compares EE-delta readings")
    out = {}
    task = policy.info.get("train", {}).get("task") or "lift_cube"
    for name, ctx in (("chained", contextlib.nullcontext()), ("reanchored", reanchored()),
                      ("graph_schedule", mock.patch("postbc_core.sim.evaluation.PolicyActor", graph_schedule_actor))):
        t0 = time.time()
        with ctx:
            r = evaluate_policy(policy, task, episodes=episodes, num_envs=4, seed=seed)
        out[name] = {"n_success": r["n_success"], "episodes": episodes,
                     "ci95": [round(v, 3) for v in wilson_interval(r["n_success"], episodes)],
                     "successes": r["successes"], "mean_length": r["mean_length"],
                     "n_safety_altered": r["n_safety_altered"], "wall_s": round(time.time() - t0, 1)}
        print(f"{name}: {r['n_success']}/{episodes}")
    a, b, c = (np.array(out[k]["successes"]) for k in ("chained", "reanchored", "graph_schedule"))
    out["paired"] = {"chained_only": int((a & ~b).sum()), "reanchored_only": int((b & ~a).sum()),
                     "chained_not_graph_schedule": int((a & ~c).sum()), "graph_schedule_not_chained": int((c & ~a).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demos", type=int, default=10, help="scripted lift_cube episodes for part 1")
    ap.add_argument("--checkpoint", help="a cmd_ee_delta policy (run dir or .safetensors) for part 2")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--legacy-checkpoint", action="store_true",
                    help="load a checkpoint trained before the convention was recorded (measurement only)")
    ap.add_argument("--out", default="ee_delta_convention")
    args = ap.parse_args()
    res = {"command": "python benchmarks/bench_ee_delta_convention.py " + " ".join(sys.argv[1:]),
           "lag": lag_and_chunk_gap(args.demos)}
    lag = res["lag"]
    print(f"lead of the previous target over the measured EE: {lag['lead_of_previous_target_mm']} mm")
    for i in range(CHUNK):
        print(f"chunk point {i}: chained vs reanchored {lag['chunk_gap_mm'][f'point_{i}']} mm, "
              f"{lag['chunk_gap_joint_rad'][f'point_{i}']} rad")
    if args.checkpoint:
        res["checkpoint"] = {"path": args.checkpoint, "seed": args.seed, "legacy": args.legacy_checkpoint,
                             **checkpoint_both_ways(args.checkpoint, args.episodes, args.seed, args.legacy_checkpoint)}
    write_result(args.out, res)


if __name__ == "__main__":
    main()
