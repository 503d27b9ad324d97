"""Ensemble training throughput: one batched EnsembleRegressor vs a Python loop over K separate MLPs.

Both variants do the same work per step on the same data: K members, each with its own bootstrap batch of B
(obs dim 23 -> out dim 28 = chunk 4 x 7 action), MLP 3x512 hidden, forward + backward + Adam step, float32.
- batched: postbc_core.models.EnsembleRegressor (weights stacked over K, one baddbmm per layer), one Adam.
- loop:    K nn.Sequential MLPs initialised with the SAME weights, each with its own Adam, stepped in a loop.
Each (variant, batch size) runs in its own subprocess so peak RSS (resource.getrusage ru_maxrss) is its own.

Usage: python benchmarks/bench_ensemble.py [--quick] [--members 100] [--batch-sizes 32 256] [--threads 1 2]
Writes benchmarks/results/ensemble_throughput.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from common import run_worker, time_steps

OBS_DIM, OUT_DIM, HIDDEN = 23, 28, (512, 512, 512)
N_BATCHES = 4  # distinct pre-generated batches, cycled, so data generation is outside the timed region
RESULTS = Path(__file__).resolve().parent / "results" / "ensemble_throughput.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def macs_per_sample() -> int:
    dims = [OBS_DIM, *HIDDEN, OUT_DIM]
    return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def n_params_per_member() -> int:
    dims = [OBS_DIM, *HIDDEN, OUT_DIM]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def step_flops(k: int, b: int) -> float:
    # forward 2 MACs-flops, backward ~4 (grad wrt input and weight); the first layer needs no input grad, ignored.
    return 6.0 * macs_per_sample() * k * b


def make_adam(params, lr: float, impl: str) -> torch.optim.Optimizer:
    kw = {"fused": True} if impl == "fused" else {"foreach": True} if impl == "foreach" else {}
    return torch.optim.Adam(params, lr=lr, **kw)


def worker(args: argparse.Namespace) -> dict:
    """Times one variant in this process; returns a result dict (printed as JSON by main)."""
    from postbc_core.models import EnsembleRegressor

    if args.threads:
        torch.set_num_threads(args.threads)
    k, b = args.members, args.batch
    torch.manual_seed(0)
    ens = EnsembleRegressor(k, {"state": (OBS_DIM,)}, 1, OUT_DIM, hidden_dims=HIDDEN, head="mse")
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(k, b, 1, OBS_DIM, generator=g), torch.randn(k, b, OUT_DIM, generator=g))
            for _ in range(N_BATCHES)]

    if args.variant == "batched":
        model = ens
        opt = make_adam(ens.parameters(), 1e-4, args.adam)

        def step(i: int) -> float:
            x, y = data[i % N_BATCHES]
            opt.zero_grad(set_to_none=True)
            loss = model.loss({"state": x}, y).sum()
            loss.backward()
            opt.step()
            return loss.item()
    else:
        mlps, opts = [], []
        for m in range(k):  # same initial weights as the batched module
            mlps.append(ens.head.member(m))
            opts.append(make_adam(mlps[-1].parameters(), 1e-4, args.adam))
        del ens
        # Per-member views made once: the loop then pays only its own per-member overhead.
        data_m = [([x[m, :, 0] for m in range(k)], [y[m] for m in range(k)]) for x, y in data]

        def step(i: int) -> float:
            xs, ys = data_m[i % N_BATCHES]
            total = 0.0
            for mlp, opt, x, y in zip(mlps, opts, xs, ys):
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(mlp(x), y)
                loss.backward()
                opt.step()
                total += loss.item()
            return total

    first_loss = step(0)
    for i in range(1, args.warmup):
        step(i)
    load_before = os.getloadavg()[0]
    times, total = time_steps(step, args.warmup, args.min_steps, args.min_seconds, args.max_steps)
    return {
        "variant": args.variant, "members": k, "batch_per_member": b, "adam": args.adam,
        "steps_timed": len(times),
        "steps_per_s": len(times) / total,
        "steps_per_s_median": 1.0 / statistics.median(times),
        "step_ms_median": 1e3 * statistics.median(times), "step_ms_min": 1e3 * min(times),
        "step_ms_max": 1e3 * max(times),
        "gflops_per_step": step_flops(k, b) / 1e9,
        "achieved_gflop_s_median": step_flops(k, b) / statistics.median(times) / 1e9,
        "first_step_loss_sum": first_loss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # Linux: KiB
        "torch_threads": torch.get_num_threads(),
        "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
    }


def gemm_roof(threads: int) -> float:
    """Achieved GFLOP/s of one large square float32 matmul: a practical compute ceiling for this machine."""
    torch.set_num_threads(threads)
    a = torch.randn(1024, 1024)
    a @ a
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024 ** 3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: K=10, batch 32, 1 thread, 3 timed steps")
    p.add_argument("--members", type=int, default=100, help="ensemble size K (paper: 100 on Robomimic)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256], help="batch per member")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch intra-op thread counts to measure (each a separate pair of runs)")
    p.add_argument("--adam", choices=["fused", "foreach", "default"], default="fused",
                   help="Adam implementation, the same for both variants (fused is by far the fastest on CPU)")
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (Adam allocates its state)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON path (default {RESULTS}; --quick runs default to results/quick/, git-ignored)")
    # internal: run one variant in this process
    p.add_argument("--variant", choices=["batched", "loop"], help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.members, args.batch_sizes, args.threads = min(args.members, 10), [32], [1]
        args.min_steps, args.min_seconds = 3, 0.0

    if args.variant:
        args.threads = args.threads[0]
        print(json.dumps(worker(args)))
        return

    runs = []
    for threads in args.threads:
        for b in args.batch_sizes:
            for variant in ("batched", "loop"):
                cmd = [sys.executable, __file__, "--variant", variant, "--batch", str(b), "--members",
                       str(args.members), "--threads", str(threads), "--adam", args.adam,
                       "--min-steps", str(args.min_steps), "--min-seconds", str(args.min_seconds),
                       "--max-steps", str(args.max_steps), "--warmup", str(args.warmup)]
                r = run_worker(cmd, f"bench_ensemble: worker {variant} B={b} threads={threads}")
                runs.append(r)
                print(f"  threads={r['torch_threads']} {variant:8s} B={b:<4d} {r['steps_per_s']:.3f} steps/s "
                      f"({r['steps_timed']} steps, 1-min load {r['loadavg_1min_before']:.1f})", flush=True)

    roofs = {t: gemm_roof(t) for t in args.threads}
    table = []
    for threads in args.threads:
        for b in args.batch_sizes:
            bat, loop = (next(r for r in runs if r["variant"] == v and r["batch_per_member"] == b
                              and r["torch_threads"] == threads) for v in ("batched", "loop"))
            table.append({
                "torch_threads": threads, "batch_per_member": b,
                "batched_steps_per_s": bat["steps_per_s"], "loop_steps_per_s": loop["steps_per_s"],
                "speedup": bat["steps_per_s"] / loop["steps_per_s"],
                "speedup_median": bat["steps_per_s_median"] / loop["steps_per_s_median"],
                "batched_peak_rss_mib": bat["peak_rss_mib"], "loop_peak_rss_mib": loop["peak_rss_mib"],
                "gflops_per_step": bat["gflops_per_step"], "dense_gemm_roof_gflop_s": roofs[threads],
                "batched_gflop_s": bat["achieved_gflop_s_median"], "loop_gflop_s": loop["achieved_gflop_s_median"],
                # Upper bound for ANY implementation: the step's FLOPs at the dense-GEMM roof (Adam ignored).
                "ceiling_steps_per_s": roofs[threads] / bat["gflops_per_step"],
                "max_possible_speedup_vs_loop": roofs[threads] / bat["gflops_per_step"] / loop["steps_per_s"],
                # Same init and data: both variants must see the same first-step loss (a correctness cross-check).
                "first_loss_match": abs(bat["first_step_loss_sum"] - loop["first_step_loss_sum"])
                <= 1e-4 * abs(loop["first_step_loss_sum"]),
                "max_loadavg_1min": max(r[f"loadavg_1min_{w}"] for r in (bat, loop) for w in ("before", "after")),
            })
    print(f"\nK={args.members} members, MLP {OBS_DIM}->{'x'.join(map(str, HIDDEN))}->{OUT_DIM} "
          f"({n_params_per_member() * args.members / 1e6:.1f} M params), Adam={args.adam}, float32, {cpu_model()} "
          f"({os.cpu_count()} CPUs)")
    print(f"{'threads':>7} {'B/member':>8} {'batched st/s':>12} {'loop st/s':>10} {'speedup':>8} {'GFLOP/st':>9} "
          f"{'bat GF/s':>9} {'loop GF/s':>9} {'GEMM roof':>9} {'RSS bat MiB':>11} {'RSS loop MiB':>12} {'load':>5}")
    for t in table:
        print(f"{t['torch_threads']:>7} {t['batch_per_member']:>8} {t['batched_steps_per_s']:>12.3f} "
              f"{t['loop_steps_per_s']:>10.3f} {t['speedup']:>7.2f}x {t['gflops_per_step']:>9.2f} "
              f"{t['batched_gflop_s']:>9.1f} {t['loop_gflop_s']:>9.1f} {t['dense_gemm_roof_gflop_s']:>9.1f} "
              f"{t['batched_peak_rss_mib']:>11.0f} {t['loop_peak_rss_mib']:>12.0f} {t['max_loadavg_1min']:>5.1f}")
    print("ceiling = step FLOPs at the dense-GEMM roof: the most steps/s any implementation could reach here; "
          "max speedup vs loop = ceiling / loop steps/s:")
    for t in table:
        print(f"  threads={t['torch_threads']} B={t['batch_per_member']}: ceiling {t['ceiling_steps_per_s']:.2f} "
              f"steps/s -> max {t['max_possible_speedup_vs_loop']:.1f}x over the loop")
    if any(t["max_loadavg_1min"] > os.cpu_count() + 0.5 for t in table):
        print("warning: the 1-min load average exceeded the core count during some runs: other processes competed "
              "for the CPU, so absolute numbers are pessimistic (and multi-threaded small GEMMs suffer most)")
    if not all(t["first_loss_match"] for t in table):
        print("warning: the variants disagree on the first-step loss: they are not computing the same thing")
    result = {
        "benchmark": "ensemble_training_throughput", "quick": args.quick,
        "members": args.members, "obs_dim": OBS_DIM, "out_dim": OUT_DIM, "hidden": list(HIDDEN),
        "params_per_member": n_params_per_member(), "adam": args.adam, "dtype": "float32",
        "torch_threads": args.threads, "torch_version": torch.__version__, "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "table": table, "runs": runs,
    }
    out = args.out or (RESULTS.parent / "quick" / RESULTS.name if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
