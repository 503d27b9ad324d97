"""Best-of-N: pick among N sampled chunks of the frozen pretrained policy the one an IQL critic values most.

PostBC paper (arXiv 2512.16911), WidowX finetuning: roll out the pretrained policy (100 rollouts), fit IQL's Q on the
rollouts (rl/iql.py), then at every decision sample N candidate chunks (N = 4..16) and execute argmax_a Q(s, a); the
run can keep collecting with the improved policy and refit. Only the critic learns; the diffusion policy stays
frozen, so the executed behaviour stays in the support of the pretrained policy.

Every candidate is the policy's DDIM chunk from its own noise w ~ N(0, I); the chosen candidate's noise is recorded
like DSRL's (the replay layout is shared), and the chunk is deterministic given it.

Shape legend: F features, N candidates, Ta action steps, Da action dim, D = Ta * Da, n executed steps per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from postbc_core.errors import ConfigError, check_at_least_one
from postbc_core.rl.agent import Mode, clip_features
from postbc_core.rl.iql import IQL
from postbc_core.rl.noise_env import NoisePolicy


@dataclass
class BestOfNConfig:
    """Best-of-N + IQL hyperparameters (DESIGN.md; PostBC paper on WidowX; IQL paper)."""

    n_candidates: int = 8
    """N chunks sampled per decision; the argmax-Q one is executed (paper, WidowX: 4..16)."""
    rollouts: int = 20
    """Episodes of the pretrained policy before the first fit (paper, WidowX: 100; fewer keep sim runs short)."""
    fit_steps: int = 2000
    """IQL gradient steps of the first fit, after the rollouts."""
    steps_per_episode: int = 200
    """IQL gradient steps after every later episode (keep collecting and refitting; 0 = fit once)."""
    expectile: float = 0.9
    """IQL expectile tau (IQL paper: 0.9 AntMaze-like sparse goals, 0.7 locomotion; DESIGN.md 0.7-0.9)."""
    discount: float = 0.97
    """Discount per macro-step (paper, WidowX: 0.97)."""
    hidden: tuple[int, ...] = (256, 256)
    """Q and V widths (DESIGN.md: 2 x 256)."""
    batch_size: int = 256
    """Transitions per IQL step (IQL paper: 256)."""
    lr: float = 3e-4
    """Adam learning rate (IQL paper: 3e-4)."""
    tau: float = 0.005
    """Polyak rate of the target Q (IQL paper: 0.005)."""
    obs_clip: float = 5.0
    """Clip the critic's input features to [-obs_clip, obs_clip] (0 disables): the same demo-fitted z-scores as
    DSRL's (see DSRLConfig.obs_clip), which reach |z| ~ 10^2 on rollouts."""

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        check_at_least_one(self, ("n_candidates", "batch_size", "fit_steps"), "best_of_n")
        if self.rollouts < 1:
            raise ConfigError(f"best_of_n rollouts={self.rollouts}: IQL needs pretrained rollouts to fit on; "
                              "use >= 1 (paper: 100)")
        if self.steps_per_episode < 0:
            raise ConfigError(f"best_of_n steps_per_episode={self.steps_per_episode} must be >= 0")
        if not 0.5 <= self.expectile < 1.0:
            raise ConfigError(f"best_of_n expectile={self.expectile} must be in [0.5, 1) (DESIGN.md: 0.7-0.9)")
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"best_of_n discount={self.discount} must be in (0, 1] (paper: 0.97)")
        if not 0.0 < self.tau <= 1.0 or not self.lr > 0:
            raise ConfigError(f"best_of_n tau={self.tau} must be in (0, 1] and lr={self.lr} > 0")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"best_of_n hidden={self.hidden}: give at least one layer width >= 1 (e.g. 256 256)")
        if not self.obs_clip >= 0:
            raise ConfigError(f"best_of_n obs_clip={self.obs_clip} must be >= 0 (0 disables; default 5)")


class BestOfNAgent:
    """Picks the best of N candidate chunks under an IQL critic (see the module docstring); an rl/agent.py `Agent`."""

    def __init__(self, cfg: BestOfNConfig, noise_policy: NoisePolicy, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.np = noise_policy
        self.device = torch.device(device)
        adim = noise_policy.n_action_steps * noise_policy.action_dim
        self.iql = IQL(noise_policy.feature_dim, adim, hidden=cfg.hidden, expectile=cfg.expectile,
                       discount=cfg.discount, tau=cfg.tau, lr=cfg.lr).to(self.device)
        self.warmup_episodes = cfg.rollouts

    @torch.no_grad()
    def choose(self, feats: torch.Tensor, mode: Mode) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features (1, F) -> (noise (1, D), raw chunk (1, Ta, Da) or None). pretrained: one w ~ N(0, I) (the
        pretrained policy); explore / eval: the best of N candidates under Q."""
        if feats.shape[0] != 1:
            raise ConfigError(f"Best-of-N chooses for one observation at a time, got a batch of {feats.shape[0]}")
        if mode == "pretrained":
            return torch.randn(1, self.np.noise_dim, device=feats.device), None
        N = self.cfg.n_candidates
        w = torch.randn(N, self.np.noise_dim, device=feats.device)
        f = feats.expand(N, -1)
        naction, raw = self.np.decode(f, w)
        q = self.iql.q_value(clip_features(f.to(self.device), self.cfg.obs_clip),
                             naction[:, : self.np.n_action_steps].reshape(N, -1).to(self.device))
        best = int(torch.argmax(q))
        return w[best: best + 1], raw[best: best + 1]

    def updates_due(self, episodes_done: int, new_transitions: int) -> int:
        if episodes_done < self.cfg.rollouts:
            return 0
        return self.cfg.fit_steps if episodes_done == self.cfg.rollouts else self.cfg.steps_per_episode

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.cfg.obs_clip
        return self.iql.update(dict(batch, obs=clip_features(batch["obs"], c),
                                    next_obs=clip_features(batch["next_obs"], c)))

    def training_state(self) -> dict:
        return {"iql": self.iql.training_state()}

    def load_training_state(self, state: dict) -> None:
        self.iql.load_training_state(state["iql"])
