"""BC vs PostBC under DPPO on lift_cube: the pipeline's online comparison with --algorithms dppo, on the BC and PostBC
checkpoints an earlier `postbc pipeline` run pretrained (the low-data regime it uses: 10 scripted demos, alpha 0.5,
10k diffusion steps, matched seeds), so the CPU spends its time on DPPO instead of on pretraining again.

Per seed and method: `postbc finetune --algorithm dppo` for the same online budget (analysis/pipeline.finetune_method,
the code the pipeline runs), evaluations every --eval-every episodes on the fixed evaluation seeds, then the paired
final test (rl/finetune.evaluate_run: pretrained vs fine-tuned on the same episodes, McNemar exact); pooled and
rendered by the pipeline's own report code (analysis/pipeline_report: aggregate, plot_success, render_report).

    python benchmarks/bench_dppo.py --pretrained runs/demo --out benchmarks/results/dppo_lift_cube_cpu \
        [--seeds 0 1 2] [--episodes 160] [--eval-every 80] [--eval-episodes 30] [--paired-episodes 40] \
        [--actor-lr 1e-4] [--workers 2] [--json-name dppo_lift_cube]

Writes OUT/results.json, OUT/report.md, OUT/success_vs_episodes.png and benchmarks/results/<json-name>.json (the
headline numbers, the command and the wall times); the runs themselves under OUT/seed_<s>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

from common import pool_map, write_result

os.environ.setdefault("MUJOCO_GL", "egl")


def one(args: tuple) -> tuple:
    """One (seed, method) job in a worker process: DPPO finetuning + the paired final test."""
    import torch

    cfg, seed, name, checkpoint = args
    torch.set_num_threads(1)
    from postbc_core.analysis.pipeline import finetune_method

    t0, c0 = time.time(), time.process_time()
    out = finetune_method(cfg, seed, "dppo", name, checkpoint)
    return (*out, time.time() - t0, time.process_time() - c0)


DPPO_NOTE = """## Reading this run

A first, reduced measurement (issue 25): {episodes} online episodes = {iterations} PPO iterations per run, where the
reference runs 300 iterations of ~15000 decisions. The DPPO settings are DPPOConfig's CPU defaults (rl/dppo.py says which differ
from irom-lab/dppo and why). The pretrained checkpoints are those of the `make demo` pipeline run named in the
command (results.json "pretrained_from"); `postbc pipeline --algorithms dsrl_sac dppo` runs the same comparison from
scratch, beside DSRL.
"""


def report(res: dict) -> str:
    """report.md: the command, then the pipeline's report of these results, with this run's note in place of the
    pipeline's notes (which describe its DSRL settings)."""
    from postbc_core.analysis.pipeline_report import NOTES, render_report

    text = render_report(res)
    notes = NOTES.read_text() if NOTES.exists() else ""
    if notes and text.endswith(notes):
        eps = res["finetune_episodes"]
        its = -(-eps // res["config"]["dppo"]["episodes_per_iteration"])
        text = text[: -len(notes)] + DPPO_NOTE.format(episodes=eps, iterations=its)
    return f"Command: `{res['command']}`\n\n" + text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", type=Path, required=True,
                    help="a `postbc pipeline` output directory with seed_<s>/bc and seed_<s>/postbc checkpoints")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dppo_lift_cube_cpu"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=160)
    ap.add_argument("--eval-every", type=int, default=80)
    ap.add_argument("--eval-episodes", type=int, default=30)
    ap.add_argument("--paired-episodes", type=int, default=40)
    ap.add_argument("--actor-lr", type=float, default=None, help="DPPOConfig.actor_lr (default: its own)")
    ap.add_argument("--eta", type=float, default=None, help="DPPOConfig.eta (default: its own)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json-name", default="dppo_lift_cube", help="benchmarks/results/<name>.json")
    ap.add_argument("--rerender", action="store_true",
                    help="only rewrite OUT/report.md from OUT/results.json (the report is a pure function of it)")
    a = ap.parse_args()
    if a.rerender:
        res = json.loads((a.out / "results.json").read_text())
        (a.out / "report.md").write_text(report(res))
        return 0

    from postbc_core.analysis.pipeline_config import PipelineConfig
    from postbc_core.analysis.pipeline_report import aggregate, plot_success
    from postbc_core.rl.dppo import DPPOConfig

    src = json.loads((a.pretrained / "results.json").read_text())
    s_cfg = src["config"]
    over = {k: v for k, v in (("actor_lr", a.actor_lr), ("eta", a.eta)) if v is not None}
    cfg = PipelineConfig(out=a.out, task=s_cfg["task"], seeds=tuple(a.seeds), demos=s_cfg["demos"],
                         alpha=s_cfg["alpha"], steps=s_cfg["steps"], action_key=s_cfg["action_key"],
                         algorithms=("dppo",), finetune_episodes=a.episodes, eval_every=a.eval_every,
                         eval_episodes=a.eval_episodes, paired_episodes=a.paired_episodes, recipe_rollouts=0,
                         coverage=False, device="cpu", dppo=DPPOConfig(**over))
    runs = {s: {"demo_success_rate": src["demo_success_rate"][str(s)], "online": {"dppo": {}}} for s in a.seeds}
    jobs = [(cfg, s, name, str(a.pretrained / f"seed_{s}" / name)) for s in a.seeds for name in ("bc", "postbc")]
    t_start, load_start = time.time(), os.getloadavg()[0]
    timings, cpu = {}, 0.0
    results = pool_map(one, jobs, a.workers)
    for seed, _, name, run, t, _, wall, cpu_s in results:
        runs[seed]["online"]["dppo"][name] = run
        timings.update(t)
        cpu += cpu_s
    res = aggregate(cfg, runs)
    machine = {"cpus": os.cpu_count(), "workers": a.workers, "load_avg_1min": [load_start, os.getloadavg()[0]]}
    timings["total"] = round(time.time() - t_start, 1)
    timings["cpu_all_runs"] = round(cpu, 1)
    cmd = "python benchmarks/bench_dppo.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    o = res["online"]["dppo"]
    p = o["paired"]
    moved = ", ".join(f"{label} {p[m]['pretrained']['success_rate']:.0%} -> {p[m]['agent']['success_rate']:.0%} "
                      f"(McNemar p = {p[m]['agent_vs_pretrained']['mcnemar_exact_p']:.3g})"
                      for m, label in (("bc", "BC"), ("postbc", "PostBC")))
    res.update(coverage=None, timings_s=timings, machine=machine,
               summary_line=(f"{cfg.task} DPPO, {len(a.seeds)} seeds, {a.episodes} online episodes each: paired "
                             f"final test (n = {len(a.seeds)} x {a.paired_episodes}): {moved}"),
               command=cmd, pretrained_from=str(a.pretrained))
    a.out.mkdir(parents=True, exist_ok=True)
    plot_success(a.out / "success_vs_episodes.png", res)
    (a.out / "results.json").write_text(json.dumps(res, indent=2))
    (a.out / "report.md").write_text(report(res))
    paired = {m: {k: p[m][k] for k in ("pretrained", "agent", "agent_vs_pretrained")} for m in ("bc", "postbc")}
    write_result(a.json_name, {"command": cmd, "summary_line": res["summary_line"],
                                    "pretrained": o["pretrained"], "final": o["final"], "paired": paired,
                                    "postbc_vs_bc": p["postbc_vs_bc"], "curves": o["curves"],
                                    "dppo": dataclasses.asdict(cfg.dppo), "timings_s": timings,
                                    "report": str(a.out / "report.md")})
    print(res["summary_line"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
