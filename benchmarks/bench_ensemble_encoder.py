"""Does a PostBC ensemble whose members share one image encoder keep the coverage property, and what does it save?

The bundled coverage problem (analysis/coverage.py: a 1-D state, 30 demonstrations over the dense half [-1, 0], one
and two over the sparse half) seen through a camera: each state s is rendered as a 16x32 RGB frame with a bright bar
at the column s maps to (plus sensor noise), so an image ensemble must read s from pixels. Three ensembles of K
members on the same demonstrations, the same bootstrap resamples (whole demonstrations) and steps:
  state       the members read s itself (MLPs: the bundled experiment's ensemble)
  per_member  every member owns a conv encoder (robomimic's, `--image-encoder conv`): the paper's ensemble
  shared      one conv encoder for all members, K heads (`--ensemble-encoder shared`)
Reported per ensemble: the posterior spread (std over the members' mean predictions, normalized action units) at
query states in the dense region, where a state has one demonstration and where it has two, their ratio to the dense
spread (the coverage property: larger where demos are sparse), and the ensemble's training time relative to the
per-member one in the same run.

    python benchmarks/bench_ensemble_encoder.py [--quick] [--members 8] [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_result

H, W = 16, 32


def render(s: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """States (N,) in [-1, 1] -> frames (N, H, W, 3) uint8: a Gaussian bar centred on the state's column."""
    cols = (np.asarray(s, np.float64) + 1.0) / 2.0 * (W - 1)
    x = np.arange(W)[None, :]
    bar = np.exp(-0.5 * ((x - cols[:, None]) / 1.2) ** 2)  # (N, W)
    img = 30.0 + 200.0 * bar[:, None, :, None] * np.array([1.0, 0.8, 0.3])  # (N, 1, W, 3)
    img = np.broadcast_to(img, (len(cols), H, W, 3)).copy()
    if rng is not None:
        img += rng.normal(0.0, 3.0, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def image_store(src: Path, dst: Path, seed: int) -> Path:
    """The coverage store with a camera key `cam_rgb` rendered from each step's state (and the state kept)."""
    from postbc_core.data import EpisodeStore

    rng = np.random.default_rng(seed)
    with EpisodeStore.open(src) as s_in, EpisodeStore.create(dst, overwrite=True) as s_out:
        for i in range(s_in.n_episodes):
            ep = s_in.episode(i)
            meta = s_in.episode_meta(i)
            s_out.add_episode({**ep, "cam_rgb": render(ep["state"][:, 0], rng)}, success=True, task=meta["task"],
                              source="synthetic", operator=meta["operator"])
    return dst


def fit(dataset: Path, obs_key: str, encoder: str, members: int, steps: int, batch: int, seed: int, out: Path):
    """Trains one ensemble the way `postbc train` does (its data loading, normalizer, bootstrap and loop) -> (the
    model, the policy whose normalizer it uses, seconds)."""
    import torch

    from postbc_core.policies.settings import PolicySettings
    from postbc_core.runlog import RunLogger
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.distributed import init_distributed
    from postbc_core.training.ensemble_fit import fit_ensemble
    from postbc_core.training.train import build_policy, load_training_data

    cfg = TrainConfig(dataset=dataset, out=out, obs_keys=(obs_key,), action_key="action",
                      policy=PolicySettings(n_obs_steps=1, action_horizon=1, image_encoder="conv"), alpha=1.0,
                      ensemble_size=members, ensemble_hidden=(256, 256), ensemble_steps=steps,
                      ensemble_batch_size=batch, ensemble_encoder=encoder, val_ratio=0.0, seed=seed, device="cpu",
                      log_every=max(1, steps // 4), progress=False, overwrite=True)
    torch.manual_seed(seed)
    data, train_steps, train_ds, _, _, _ = load_training_data(cfg)
    policy = build_policy(cfg, data, train_steps)
    dist = init_distributed("cpu")
    out.mkdir(parents=True, exist_ok=True)
    logger = RunLogger(out, is_main=True, progress=False)
    t0 = time.perf_counter()
    model, _ = fit_ensemble(train_ds, policy, cfg, dist, logger)
    seconds = time.perf_counter() - t0
    logger.close()
    return model, policy, seconds


def spreads(model, policy, obs_key: str, states: np.ndarray) -> np.ndarray:
    """Std over the members of their mean predictions at `states` (Q,) -> (Q,), normalized action units."""
    import torch

    raw = render(states) if obs_key == "cam_rgb" else states.reshape(-1, 1).astype(np.float32)
    with torch.no_grad():
        nobs = policy.normalize_obs({obs_key: torch.from_numpy(raw).unsqueeze(1)})
        preds = model.predict(nobs)  # (K, Q, D)
    return preds.std(dim=0).mean(dim=-1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64, help="windows per step (per member for per_member / state)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    members, steps = (4, 60) if args.quick else (args.members, args.steps)

    import torch

    from postbc_core.analysis.coverage import CoverageData, write_coverage_dataset

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ens_enc_"))
    src = write_coverage_dataset(tmp / "coverage.zarr", CoverageData(seed=args.seed))
    img = image_store(src, tmp / "coverage_img.zarr", args.seed)
    # query states: the dense half, where only the first sparse demo passes, where both do (analysis/coverage.py)
    regions = {"dense": np.linspace(-0.9, -0.1, 17), "one_demo": np.linspace(0.1, 0.45, 8),
               "two_demos": np.linspace(0.55, 0.95, 9)}
    arms = {"state": ("state", "per_member"), "per_member": ("cam_rgb", "per_member"),
            "shared": ("cam_rgb", "shared")}
    results = {}
    for name, (key, enc) in arms.items():
        model, policy, seconds = fit(src if key == "state" else img, key, enc, members, steps, args.batch,
                                     args.seed, tmp / name)
        r = {"train_s": round(seconds, 1),
             "ensemble_parameters": int(sum(p.numel() for p in model.parameters()))}
        for region, states in regions.items():
            r[f"{region}_spread"] = round(float(spreads(model, policy, key, states).mean()), 4)
        for region in ("one_demo", "two_demos"):
            r[f"{region}_over_dense"] = round(r[f"{region}_spread"] / r["dense_spread"], 2)
        results[name] = r
        print(name, json.dumps(r), flush=True)
    base = results["per_member"]["train_s"]
    for r in results.values():
        r["train_time_vs_per_member"] = round(r["train_s"] / base, 3)
    path = write_result("ensemble_encoder_coverage", {
        "setup": {"members": members, "steps": steps, "batch": args.batch, "image": [H, W, 3], "encoder": "conv",
                  "bootstrap": "trajectory", "regions": {k: [float(v[0]), float(v[-1])] for k, v in regions.items()},
                  "seed": args.seed, "torch_threads": 1},
        "results": results, "command": "python benchmarks/bench_ensemble_encoder.py"
                                       + (" --quick" if args.quick else "")}, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
