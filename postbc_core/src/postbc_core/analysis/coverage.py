"""The coverage experiment (the paper's Figure 1 situation) on a 1-D problem with a known demonstrator.

Demonstrator: at state s in [-1, 1] it acts a = f(s) + u + e, f(s) = 0.5 sin(pi s), with a per-demonstration style
offset u ~ U(-w, w) (w = 0.5: an operator keeps a consistent style through one demonstration) and small per-step
noise e ~ N(0, 0.02^2). So the demonstrator's action distribution at any state is ~U[f(s) - w, f(s) + w].
Data: many demonstrations sweep the dense half s in [-1, 0]; in the sparse half one demonstration covers
(0, 1] and a second covers [0.5, 1], so states have one or two demos there.

Expected (and measured by `run_coverage`): where demos are dense, BC and PostBC sample distributions agree; where a
state has one or two demos, BC collapses onto them while PostBC spreads towards the demonstrator's range.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from postbc_core.training.config import TrainConfig

log = logging.getLogger(__name__)

SAMPLE_STORE = Path(__file__).resolve().parents[4] / "data" / "sample_coverage.zarr"
"""The bundled coverage demonstrations in a source checkout (absent from an installed wheel: the experiment then
writes the same synthetic store itself)."""
STYLE_HALF_WIDTH = 0.5  # w: half-width of the demonstrator's action range at every state
STEP_NOISE = 0.02


def demonstrator_mean(s: np.ndarray) -> np.ndarray:
    return 0.5 * np.sin(np.pi * s)


@dataclass
class CoverageData:
    n_dense: int = 30
    """Demonstrations sweeping the dense half [-1, 0]."""
    steps_per_demo: int = 20
    """Steps per demonstration."""
    seed: int = 0


def write_coverage_dataset(path: str | Path, data: CoverageData = CoverageData(), overwrite: bool = True) -> Path:
    """Writes the synthetic demonstrations as an episode store (keys `state` (1,), `action` (1,))."""
    from postbc_core.data import EpisodeStore

    rng = np.random.default_rng(data.seed)
    segments = [(-1.0, 0.0)] * data.n_dense + [(0.05, 1.0), (0.5, 1.0)]
    with EpisodeStore.create(path, overwrite=overwrite) as store:
        for i, (lo, hi) in enumerate(segments):
            T = data.steps_per_demo
            s = np.clip(np.linspace(lo, hi, T) + rng.normal(0, 0.01, T), -1, 1)
            u = rng.uniform(-STYLE_HALF_WIDTH, STYLE_HALF_WIDTH)
            a = demonstrator_mean(s) + u + rng.normal(0, STEP_NOISE, T)
            store.add_episode({"state": s[:, None].astype(np.float32), "action": a[:, None].astype(np.float32),
                               "timestamp": np.arange(T, dtype=np.float64) * 0.2},
                              success=True, task="coverage_1d", source="synthetic",
                              operator="dense" if i < data.n_dense else "sparse")
    return Path(path)


@dataclass
class CoverageConfig:
    """Train BC and PostBC on the 1-D coverage problem and compare their action samples against the demos."""

    out: Path = Path("runs/coverage")
    """Output directory (runs, coverage.png, coverage.json)."""
    dataset: Path | None = None
    """Episode store to use; None writes the synthetic one into the output directory."""
    alpha: float = TrainConfig.alpha
    """PostBC posterior noise weight (`postbc train`'s default)."""
    ensemble_size: int = 32
    """K ensemble members."""
    bootstrap: Literal["trajectory", "state_action"] = TrainConfig.bootstrap
    """PostBC ensemble resampling (postbc train --bootstrap)."""
    posterior_mix: float = TrainConfig.posterior_mix
    """Fraction of PostBC's training targets perturbed (postbc train --posterior-mix)."""
    sample_clip: Literal["data", "posterior"] = TrainConfig.sample_clip
    """PostBC's DDIM x0 clip (postbc train --sample-clip)."""
    ensemble_steps: int = 1500
    """Ensemble gradient steps."""
    steps: int = 3000
    """Diffusion gradient steps per policy."""
    samples: int = 256
    """Action samples per query state."""
    seed: int = 0
    """Seed for data, training and sampling."""
    device: str = "auto"
    """Torch device."""
    progress: bool = True
    """Show progress bars."""


def _train_pair(cfg: CoverageConfig, dataset: Path) -> dict[str, Path]:
    from postbc_core.policies.settings import PolicySettings
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import train

    runs = {}
    for name, alpha in (("bc", 0.0), ("postbc", cfg.alpha)):
        tcfg = TrainConfig(dataset=dataset, out=cfg.out / name, obs_keys=("state",), action_key="action",
                           policy=PolicySettings(n_obs_steps=1, action_horizon=1, mlp_hidden=(256, 256, 256)),
                           alpha=alpha, ensemble_size=cfg.ensemble_size, ensemble_hidden=(256, 256),
                           ensemble_steps=cfg.ensemble_steps, ensemble_batch_size=128, steps=cfg.steps,
                           bootstrap=cfg.bootstrap, posterior_mix=cfg.posterior_mix, sample_clip=cfg.sample_clip,
                           batch_size=256, lr=1e-3, warmup_steps=100,
                           ema_max_decay=0.999, seed=cfg.seed, device=cfg.device, log_every=250,
                           progress=cfg.progress, overwrite=True)  # this experiment owns cfg.out
        runs[name] = train(tcfg)
    return runs


def _sample(run: Path, states: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(Q,) states -> (Q, n) sampled actions."""
    import torch

    from postbc_core import load_policy

    torch.manual_seed(seed)
    policy = load_policy(run, device="cpu")
    obs = {"state": states.reshape(-1, 1, 1).astype(np.float32)}
    return policy.predict_action(obs, num_samples=n).reshape(len(states), n)


def _wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(x, y))


def coverage_metrics(states: np.ndarray, bc: np.ndarray, post: np.ndarray, n_demos: np.ndarray) -> dict:
    """Per-region sample spread (std) and agreement; `n_demos[q]` = demonstrations near state q."""
    demo_std = 2 * STYLE_HALF_WIDTH / np.sqrt(12)
    lo, hi = demonstrator_mean(states) - STYLE_HALF_WIDTH, demonstrator_mean(states) + STYLE_HALF_WIDTH

    def range_coverage(samples, lo, hi):  # fraction of [lo, hi] covered by the samples' 5..95% interval
        q5, q95 = np.quantile(samples, 0.05, axis=1), np.quantile(samples, 0.95, axis=1)
        return np.clip(np.minimum(q95, hi) - np.maximum(q5, lo), 0, None) / (hi - lo)

    out = {"demonstrator_std": float(demo_std)}
    for region, mask in (("dense", n_demos >= 10), ("one_demo", n_demos == 1), ("two_demos", n_demos == 2)):
        if not mask.any():
            continue
        sb, sp = bc[mask].std(1), post[mask].std(1)
        out[region] = {
            "n_states": int(mask.sum()),
            "bc_std": float(sb.mean()), "postbc_std": float(sp.mean()),
            "spread_ratio": float(np.median(sp / sb)),
            "bc_range_coverage": float(range_coverage(bc[mask], lo[mask], hi[mask]).mean()),
            "postbc_range_coverage": float(range_coverage(post[mask], lo[mask], hi[mask]).mean()),
            "w1_bc_postbc": float(np.mean([_wasserstein1(b, p) for b, p in zip(bc[mask], post[mask])])),
        }
    return out


def run_coverage(cfg: CoverageConfig) -> dict:
    """Trains both policies, samples them, writes coverage.json and coverage.png; returns the metrics."""
    from postbc_core.data import EpisodeStore
    from postbc_core.data.paths import make_output_dir

    make_output_dir(cfg.out)
    dataset = cfg.dataset or write_coverage_dataset(cfg.out / "coverage_demos.zarr",
                                                    CoverageData(seed=cfg.seed))
    runs = _train_pair(cfg, Path(dataset))
    with EpisodeStore.open(dataset, "r") as store:
        d = store.load(["state", "action"])
        ends = np.asarray(store.episode_ends)
    s_demo, a_demo = d["state"][:, 0], d["action"][:, 0]
    episode = np.searchsorted(ends, np.arange(len(s_demo)), side="right")
    states = np.concatenate([np.linspace(-0.9, -0.1, 9), np.linspace(0.2, 0.45, 6), np.linspace(0.65, 0.95, 7)])
    # Demonstrations whose sweep passes within 0.05 of the query state.
    n_demos = np.array([len(np.unique(episode[np.abs(s_demo - q) < 0.05])) for q in states])
    bc = _sample(runs["bc"], states, cfg.samples, cfg.seed)
    post = _sample(runs["postbc"], states, cfg.samples, cfg.seed)
    metrics = coverage_metrics(states, bc, post, n_demos)
    metrics.update(alpha=cfg.alpha, ensemble_size=cfg.ensemble_size, seed=cfg.seed, bootstrap=cfg.bootstrap,
                   posterior_mix=cfg.posterior_mix, sample_clip=cfg.sample_clip,
                   posterior=json.loads((runs["postbc"] / "posterior.json").read_text()))
    (cfg.out / "coverage.json").write_text(json.dumps(metrics, indent=2))
    plot_coverage(cfg.out / "coverage.png", s_demo, a_demo, states, bc, post, metrics)
    return metrics


def plot_coverage(path: Path, s_demo, a_demo, states, bc, post, metrics: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-1, 1, 200)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, samples, title in ((axes[0], bc, "BC (alpha = 0)"), (axes[1], post, f"PostBC (alpha = {metrics['alpha']})")):
        ax.fill_between(grid, demonstrator_mean(grid) - STYLE_HALF_WIDTH, demonstrator_mean(grid) + STYLE_HALF_WIDTH,
                        color="0.88", label="demonstrator's action range")
        ax.scatter(np.repeat(states, samples.shape[1]), samples.ravel(), s=3, alpha=0.08, color="C0",
                   label="policy samples")
        ax.scatter(s_demo, a_demo, s=6, color="C3", label="demonstrations")
        ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_xlabel("state s")
    axes[0].set_ylabel("action a")
    one, two = metrics.get("one_demo", {}), metrics.get("two_demos", {})
    fig.suptitle(f"dense half: std ratio PostBC/BC {metrics['dense']['spread_ratio']:.2f}; "
                 f"1-demo states: {one.get('spread_ratio', float('nan')):.1f}x; "
                 f"2-demo states: {two.get('spread_ratio', float('nan')):.1f}x", fontsize=10)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, markerscale=3)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
