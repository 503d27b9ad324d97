"""Diffusion `predict_action` latency: state MLP policy (3 x 512), 8 DDIM steps, chunk 4, batch 1.

Target (issue 2): p99 < 5 ms on CPU, < 1 ms on a GPU. The in-run baseline is one forward of the noise network at
batch 1, so `p50 / baseline` shows what the sampler adds beyond the 8 network evaluations it cannot avoid.

    python benchmarks/bench_policy_latency.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import percentiles, write_result


def build_policy(obs_dim: int, action_dim: int, horizon: int, steps: int, device: str):
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig

    rng = np.random.default_rng(0)
    cfg = PolicyConfig(obs_shapes={"state": (obs_dim,)}, action_dim=action_dim, n_obs_steps=1,
                       action_horizon=horizon, noise_net="mlp", mlp_hidden=(512, 512, 512), num_inference_steps=steps)
    norm = LinearNormalizer().fit({"state": rng.normal(size=(1000, obs_dim))}, default_mode="gaussian")
    norm.fit({"action": rng.uniform(-1, 1, size=(1000, action_dim))}, default_mode="limits")
    return DiffusionPolicy(cfg, norm).to(device).eval()


def time_calls(fn, n: int, warmup: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, warmup = (100, 20) if args.quick else (2000, 200)
    dev = args.device
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    obs_dim, action_dim, horizon, steps = 23, 7, 4, 8  # Robomimic-like state policy, paper's chunk 4 / 8 DDIM steps
    policy = build_policy(obs_dim, action_dim, horizon, steps, dev)
    obs = {"state": np.random.default_rng(1).normal(size=(1, obs_dim)).astype(np.float32)}

    with torch.inference_mode():
        x = torch.randn(1, horizon, action_dim, device=dev)
        cond = policy.encode_obs({"state": torch.as_tensor(obs["state"], device=dev)[None]})
        t = torch.zeros(1, dtype=torch.long, device=dev)
        base = time_calls(lambda: policy.noise_net(x, t, cond), n, warmup, sync)
        full = time_calls(lambda: policy.predict_action(obs), n, warmup, sync)
    b, f = percentiles(base), percentiles(full)
    result = {
        "setting": {"obs_dim": obs_dim, "action_dim": action_dim, "chunk": horizon, "ddim_steps": steps,
                    "noise_net": "mlp 3x512", "batch": 1, "device": dev},
        "predict_action": f, "baseline_one_noise_net_forward": b,
        "ratio_p50_to_baseline": f["p50_ms"] / b["p50_ms"],
        "target_p99_ms": 1.0 if dev.startswith("cuda") else 5.0,
    }
    result["meets_target"] = f["p99_ms"] < result["target_p99_ms"]
    print(f"predict_action ({dev}, batch 1, {steps} DDIM steps, chunk {horizon}): p50 {f['p50_ms']:.3f} ms, "
          f"p99 {f['p99_ms']:.3f} ms (target < {result['target_p99_ms']} ms: "
          f"{'met' if result['meets_target'] else 'NOT met'}); one noise-net forward p50 {b['p50_ms']:.3f} ms "
          f"-> ratio {result['ratio_p50_to_baseline']:.1f}x")
    write_result(f"policy_latency_{'gpu' if dev.startswith('cuda') else 'cpu'}", result, quick=args.quick)


if __name__ == "__main__":
    main()
