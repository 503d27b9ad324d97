"""Image training step throughput and memory: ResNet-18 vs the small conv encoder, diffusion policy and ensemble.

One training step as `postbc train` runs it, on two uint8 cameras (front, wrist: H x W x 3) + joint_pos (6) +
gripper_pos (1), action 7, To = 1, Ta = 1 (the paper's WidowX setting), data already in memory (loading excluded):
- policy_unet: DiffusionPolicy with the U-Net [256, 512, 1024] (the paper's WidowX denoiser, 78 M parameters)
            compute_loss + backward + gradient clipping + AdamW + EMA update, batch --policy-batch (diffusion_policy's
            image batch: 64);
- policy_mlp: the same with `postbc train`'s default MLP denoiser (3 x 256);
- ensemble: EnsembleRegressor of K members (heads 3 x 512, each member its own encoders, run under vmap) loss on
            per-member batches + backward + clipping + AdamW, --ensemble-batch windows per member.
Variants, each in its own subprocess so its memory is its own:
- resnet18, loop Adam: before this benchmark's changes (AdamW's per-parameter loop): the baseline, ratio 1.0;
- resnet18:            as `postbc train` runs image models now (one fused AdamW kernel; training/loop.py);
- conv:                `--image-encoder conv` (models/conv_encoder.py), fused AdamW.
Memory: peak RSS (resource.getrusage ru_maxrss, Linux KiB) of the worker, and the step's growth of it (the
high-water mark after the steps minus the one after building the model and data, before the first step): the model's
and data's own bytes are not counted, gradients, AdamW's state and activations are.
GPU: not measured unless run on one (`gpu` in the JSON says).

Usage: python benchmarks/bench_image.py [--quick] [--sizes 84 96] [--members 5] [--threads 1] [--repeats 2]
Writes benchmarks/results/image_training_cpu.json (--quick: results/quick/, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys

from common import machine, run_worker, time_steps, write_result

MODELS = ("policy_unet", "policy_mlp", "ensemble")
VARIANTS = (("resnet18", False), ("resnet18", True), ("conv", True))  # (encoder, fused AdamW)
LOWDIM = {"joint_pos": (6,), "gripper_pos": (1,)}
ACTION_DIM = 7
N_BATCHES = 2  # distinct pre-generated batches, cycled


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(args: argparse.Namespace) -> dict:
    """Times one (model, encoder, size, Adam) variant in this process; returns a result dict."""
    import numpy as np
    import torch

    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.models.ensemble import EnsembleRegressor
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
    from postbc_core.training.ema import EMA

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = args.size
    shapes = {"front_rgb": (size, size, 3), "wrist_rgb": (size, size, 3), **LOWDIM}
    cfg = PolicyConfig(obs_shapes=shapes, action_dim=ACTION_DIM, action_horizon=1, image_encoder=args.encoder,
                       noise_net="mlp" if args.model == "policy_mlp" else "unet")
    g = torch.Generator().manual_seed(1)

    def obs(*lead: int) -> dict:
        return {k: (torch.randint(0, 256, (*lead, 1, *s), dtype=torch.uint8, generator=g) if len(s) == 3
                    else torch.randn(*lead, 1, *s, generator=g)) for k, s in shapes.items()}

    if args.model != "ensemble":
        norm = LinearNormalizer()
        rng = np.random.default_rng(0)
        norm.fit({k: rng.normal(size=(64, *s)) for k, s in LOWDIM.items()}, default_mode="gaussian")
        norm.fit({"action": rng.normal(size=(64, ACTION_DIM))}, default_mode="limits")
        model = DiffusionPolicy(cfg, norm).train()
        ema = EMA(model)
        b = args.policy_batch
        data = [{"obs": obs(b), "action": torch.randn(b, 1, ACTION_DIM, generator=g)} for _ in range(N_BATCHES)]

        def loss_of(batch):
            return model.compute_loss(batch)
    else:
        model = EnsembleRegressor(args.members, shapes, 1, ACTION_DIM, hidden_dims=(512, 512, 512),
                                  image_encoder=args.encoder).train()
        ema = None
        k, b = args.members, args.ensemble_batch
        data = [{"obs": obs(k, b), "action": torch.randn(k, b, ACTION_DIM, generator=g)} for _ in range(N_BATCHES)]

        def loss_of(batch):
            return model.loss(batch["obs"], batch["action"]).sum()

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-6, fused=True if args.fused else None)

    def step(i: int) -> float:
        loss = loss_of(data[i % N_BATCHES])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema.update(model)
        return float(loss)

    rss_before = rss_mib()
    step(0)  # untimed: Adam allocates its state, oneDNN picks its kernels
    load_before = os.getloadavg()[0]
    times, _ = time_steps(step, 1, args.min_steps, args.min_seconds, args.max_steps)
    return {
        "model": args.model, "encoder": args.encoder, "fused_adam": args.fused, "size": size,
        "batch": args.ensemble_batch if args.model == "ensemble" else args.policy_batch,
        "members": args.members if args.model == "ensemble" else None,
        "params_m": sum(p.numel() for p in params) / 1e6,
        "steps_timed": len(times), "step_s_median": statistics.median(times), "step_s_min": min(times),
        "steps_per_s": 1.0 / statistics.median(times),
        "peak_rss_mib": rss_mib(), "step_rss_growth_mib": rss_mib() - rss_before,
        "torch_threads": torch.get_num_threads(),
        "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 64 px, K=2, batch 4, one timed step")
    p.add_argument("--sizes", type=int, nargs="+", default=[84, 96], help="square camera frames, pixels")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--members", type=int, default=5, help="ensemble K (paper: 5 Libero, 10 WidowX)")
    p.add_argument("--policy-batch", type=int, default=64, help="windows per policy step")
    p.add_argument("--ensemble-batch", type=int, default=32, help="windows per member per ensemble step")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=10.0)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2, help="sweeps; each variant keeps its fastest")
    # internal: run one variant in this process
    p.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--encoder", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--fused", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.members, args.policy_batch, args.ensemble_batch = [64], 2, 4, 4
        args.min_steps, args.min_seconds, args.repeats = 1, 0.0, 1
    if args.model:
        print(json.dumps(worker(args)))
        return

    # The whole sweep runs --repeats times and each variant keeps its fastest repeat: on a shared machine other jobs
    # slow whichever variant they overlap, and interleaving the repeats spreads that over all of them.
    all_runs, best = [], {}
    for repeat in range(args.repeats):
        for model in args.models:
            for size in args.sizes:
                for encoder, fused in VARIANTS:
                    cmd = [sys.executable, __file__, "--model", model, "--encoder", encoder, "--size", str(size),
                           "--fused", str(int(fused)), "--members", str(args.members),
                           "--policy-batch", str(args.policy_batch), "--ensemble-batch", str(args.ensemble_batch),
                           "--threads", str(args.threads), "--min-steps", str(args.min_steps),
                           "--min-seconds", str(args.min_seconds), "--max-steps", str(args.max_steps)]
                    r = run_worker(cmd, f"bench_image: worker {model} {encoder} {size} px")
                    r["repeat"] = repeat
                    all_runs.append(r)
                    key = (model, size, encoder, fused)
                    if key not in best or r["step_s_median"] < best[key]["step_s_median"]:
                        best[key] = r
                    print(f"  {repeat}: {model:11s} {size:>3d} px {encoder:8s} {'fused' if fused else 'loop':5s} "
                          f"Adam: {r['step_s_median']:.3f} s/step ({r['steps_timed']} steps, load "
                          f"{r['loadavg_1min_before']:.1f})", flush=True)
    runs = list(best.values())

    # Ratios against the baseline measured in this same run: ResNet-18 with the per-parameter AdamW loop.
    table = []
    for r in runs:
        base = next(b for b in runs if b["model"] == r["model"] and b["size"] == r["size"]
                    and b["encoder"] == "resnet18" and not b["fused_adam"])
        table.append({
            "model": r["model"], "size": r["size"], "encoder": r["encoder"],
            "adam": "fused" if r["fused_adam"] else "loop", "batch": r["batch"], "members": r["members"],
            "params_m": round(r["params_m"], 2), "step_s": r["step_s_median"], "steps_per_s": r["steps_per_s"],
            "speedup_vs_resnet18_loop_adam": base["step_s_median"] / r["step_s_median"],
            "peak_rss_mib": r["peak_rss_mib"], "step_rss_growth_mib": r["step_rss_growth_mib"],
            "rss_growth_ratio_vs_baseline": r["step_rss_growth_mib"] / max(base["step_rss_growth_mib"], 1e-9),
            "max_loadavg_1min": max(r["loadavg_1min_before"], r["loadavg_1min_after"]),
        })
    print(f"\ntwo {'/'.join(map(str, args.sizes))} px cameras + 7 low-dim, crop 0.9, policy batch "
          f"{args.policy_batch}, ensemble K={args.members} x {args.ensemble_batch}/member, {args.threads} thread(s), "
          f"float32 CPU")
    print(f"{'model':11s} {'px':>3s} {'encoder':8s} {'adam':5s} {'params M':>8s} {'s/step':>7s} {'steps/s':>7s} "
          f"{'x base':>6s} {'peak RSS MiB':>12s} {'step RSS +MiB':>13s} {'load':>4s}")
    for t in table:
        print(f"{t['model']:11s} {t['size']:>3d} {t['encoder']:8s} {t['adam']:5s} {t['params_m']:>8.1f} "
              f"{t['step_s']:>7.3f} {t['steps_per_s']:>7.2f} {t['speedup_vs_resnet18_loop_adam']:>6.2f} "
              f"{t['peak_rss_mib']:>12.0f} {t['step_rss_growth_mib']:>13.0f} {t['max_loadavg_1min']:>4.1f}")
    if any(t["max_loadavg_1min"] > (os.cpu_count() or 1) + 0.5 for t in table):
        print("warning: the 1-min load average exceeded the core count during some runs: other processes competed "
              "for the CPU, so absolute times are pessimistic; ratios within one run are the comparable numbers")
    info = machine()
    write_result("image_training_cpu", {
        "what": "one image training step (data in memory): ResNet-18 vs conv encoder, diffusion policy and "
                "K-member ensemble; ratios vs ResNet-18 with AdamW's per-parameter loop measured in this run",
        "memory": "peak RSS = resource.getrusage ru_maxrss of the worker process; step RSS growth = ru_maxrss "
                  "after the timed steps minus ru_maxrss after building model and data",
        "gpu": info.get("gpu", "not measured (no GPU lent to this run)"),
        "cameras": ["front_rgb", "wrist_rgb"], "lowdim": {k: list(v) for k, v in LOWDIM.items()},
        "action_dim": ACTION_DIM, "policy_batch": args.policy_batch, "members": args.members,
        "ensemble_batch_per_member": args.ensemble_batch, "threads": args.threads, "repeats": args.repeats,
        "table": table, "runs": all_runs,
    }, quick=args.quick)


if __name__ == "__main__":
    main()
