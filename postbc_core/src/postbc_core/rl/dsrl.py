"""DSRL: reinforcement learning in the noise space of a frozen diffusion policy (two variants).

Wagenmaker et al. 2025, "Steering Your Diffusion Policy with Latent Space Reinforcement Learning" (arXiv 2506.15799),
reference code ajwagen/dsrl (its `cfg/robomimic/dsrl_can.yaml` holds the defaults cited below).

- DSRL-SAC: plain SAC (rl/sac.py) whose action is the initial noise w (NoiseEnv's action). The critic is Q^W(s, w).
- DSRL-NA (noise aliasing): many noises map to the same chunk, so learning Q directly over w wastes data. Instead
      Q^A(s, a):  TD on executed chunks,  y = r + gamma (1 - done) min_k Q^A'(s', pi_dp(s', w')),  w' ~ pi_W(. | s')
      Q^W(s, w):  regression onto min_k Q^A(s, pi_dp(s, w)) for w ~ N(0, I) (clipped) and w ~ pi_W(. | s)
      pi_W:       SAC's actor + temperature steps, maximizing Q^W(s, w) - alpha log pi_W(w | s)
  where pi_dp(s, w) is the frozen policy's deterministic DDIM chunk (normalized; its executed first n steps).
  Q^A is a hard (entropy-free) TD critic: the entropy bonus belongs to the noise policy and enters only its objective.

Agent inputs: the actor and the critics see the policy features clipped to [-obs_clip, obs_clip] (`agent_obs`); the
frozen policy always decodes from the unclipped features. The features are the policy's own normalization of the
observation (z-scores for low-dim keys, fitted on a handful of demos), so a quantity the demos barely varied -- the
cube's orientation quaternion, the wrist joint on lift_cube -- reaches |z| of 10^2..10^3 as soon as RL moves it.

Updates run between episodes (the robot cannot pause mid-episode for them): after an episode that produced M new
macro transitions, `utd * M` gradient steps (DSRL's UTD 20 is gradient steps per environment transition).

Shape legend: B batch, F feature size (the policy's conditioning features), D = Ta * Da noise size, n executed steps
per chunk, K critics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from postbc_core.errors import ConfigError, check_at_least_one
from postbc_core.rl.agent import Mode, clip_features
from postbc_core.rl.noise_env import DEFAULT_NOISE_MAGNITUDE, NoisePolicy
from postbc_core.rl.sac import SAC, Critics, polyak


@dataclass
class DSRLConfig:
    """DSRL hyperparameters (defaults: DESIGN.md and ajwagen/dsrl cfg/robomimic/dsrl_can.yaml)."""

    variant: Literal["sac", "na"] = "sac"
    """"sac" = DSRL-SAC (critic over noise), "na" = DSRL-NA (action critic + distilled noise critic). `postbc
    finetune` sets it from --algorithm (dsrl_sac / dsrl_na)."""
    utd: int = 20
    """Gradient steps per new macro transition (update-to-data ratio; ajwagen/dsrl utd: 20)."""
    discount: float = 0.99
    """Discount per macro-step (one chunk; ajwagen/dsrl discount: 0.99)."""
    warmup_episodes: int = 5
    """Episodes of the pretrained policy (w ~ N(0, I) clipped to the noise box) before any update (ajwagen/dsrl:
    init_rollout_steps of the base policy)."""
    target_entropy: float = 0.0
    """SAC target entropy of the noise policy (ajwagen/dsrl target_ent: 0.0)."""
    noise_magnitude: float = DEFAULT_NOISE_MAGNITUDE
    """Noise box half-width: w in [-m, m]^D via a scaled tanh (ajwagen/dsrl action_magnitude: 1.5)."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Actor / critic widths (ajwagen/dsrl: 3 x 2048 with LayerNorm on a GPU; 3 x 256 keeps CPU updates fast)."""
    batch_size: int = 256
    """Transitions per gradient step (DESIGN.md / ajwagen/dsrl: 256)."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature (DESIGN.md / ajwagen/dsrl: 3e-4)."""
    tau: float = 0.005
    """Polyak rate of the target critics (DESIGN.md / ajwagen/dsrl: 0.005)."""
    num_critics: int = 2
    """Critic ensemble size; targets use the minimum (DESIGN.md / ajwagen/dsrl n_critics: 2)."""
    init_temperature: float = 0.1
    """Initial entropy coefficient alpha, auto-tuned from there. SB3's ent_coef='auto' (ajwagen/dsrl) starts at 1,
    which suits millions of updates; within a few hundred episodes the entropy bonus alpha * H (H up to D ln 3 nats)
    would outweigh the -1 per step reward and make *not finishing* attractive until alpha has decayed. 0.1 keeps it
    below the per-chunk penalty from the start (cleanrl's fixed alpha is 0.2)."""
    reward_offset: float = 1.0
    """Subtracted from every per-step reward before learning (ajwagen/dsrl robomimic env.reward_offset: 1): a sparse
    success reward becomes -1 per step until success, so values spread over several units and the entropy term
    does not drown them. 0 learns on the raw reward."""
    noise_critic_steps: int = 1
    """DSRL-NA: noise-critic regression steps per gradient step (ajwagen/dsrl noise_critic_grad_steps: 10 per
    update round)."""
    obs_clip: float = 5.0
    """Clip the agent's input features to [-obs_clip, obs_clip] (0 disables). Ours, not ajwagen/dsrl's (robomimic's
    low-dim observations are O(1) there): our features are z-scores fitted on ~10 demos, and on lift_cube 14-26 % of
    the online transitions had some |z| > 5 (cube quaternion, wrist joint; max ~600), which drove the SAC critic loss
    to 10^1..10^2 from the first update. Clipping at 5 brought it to ~0.05-0.5 (pipeline DSRL setting, run B's seed-1
    BC checkpoint; 5 is our choice, in the spirit of SB3 VecNormalize's clip_obs=10 on running z-scores)."""

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.variant not in ("sac", "na"):
            raise ConfigError(f"dsrl variant={self.variant!r}: choose 'sac' (DSRL-SAC) or 'na' (noise aliasing)")
        check_at_least_one(self, ("utd", "batch_size", "num_critics", "noise_critic_steps"), "dsrl")
        if self.num_critics < 2:
            raise ConfigError(f"dsrl num_critics={self.num_critics}: clipped double-Q needs >= 2 (default 2)")
        if self.warmup_episodes < 0:
            raise ConfigError(f"dsrl warmup_episodes={self.warmup_episodes} must be >= 0")
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"dsrl discount={self.discount} must be in (0, 1] (default 0.99)")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"dsrl tau={self.tau} must be in (0, 1] (default 0.005)")
        if not self.lr > 0:
            raise ConfigError(f"dsrl lr={self.lr} must be > 0 (default 3e-4)")
        if not self.noise_magnitude > 0:
            raise ConfigError(f"dsrl noise_magnitude={self.noise_magnitude} must be > 0 (default 1.5)")
        if not self.init_temperature > 0:
            raise ConfigError(f"dsrl init_temperature={self.init_temperature} must be > 0 (default 1.0)")
        if not self.obs_clip >= 0:
            raise ConfigError(f"dsrl obs_clip={self.obs_clip} must be >= 0 (0 disables; default 5)")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"dsrl hidden={self.hidden}: give at least one layer width >= 1 (e.g. 256 256 256)")


class DSRLAgent:
    """Chooses noise for the frozen policy and learns from macro transitions (see the module docstring); an
    rl/agent.py `Agent`."""

    def __init__(self, cfg: DSRLConfig, noise_policy: NoisePolicy, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.np = noise_policy
        self.device = torch.device(device)
        fdim, ddim = noise_policy.feature_dim, noise_policy.noise_dim
        self.sac = SAC(fdim, ddim, hidden=cfg.hidden, action_scale=cfg.noise_magnitude, num_critics=cfg.num_critics,
                       lr=cfg.lr, tau=cfg.tau, discount=cfg.discount, target_entropy=cfg.target_entropy,
                       init_temperature=cfg.init_temperature).to(self.device)
        self.warmup_episodes = cfg.warmup_episodes
        if cfg.variant == "na":
            adim = noise_policy.n_action_steps * noise_policy.action_dim
            self.action_critic = Critics(fdim, adim, cfg.hidden, cfg.num_critics).to(self.device)
            self.action_critic_target = copy.deepcopy(self.action_critic).requires_grad_(False)
            self.action_critic_opt = torch.optim.Adam(self.action_critic.parameters(), lr=cfg.lr)

    def agent_obs(self, feats: torch.Tensor) -> torch.Tensor:
        """Policy features (B, F) -> the actor's / critics' input (clipped; see DSRLConfig.obs_clip)."""
        return clip_features(feats, self.cfg.obs_clip)

    # -- acting ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def choose(self, feats: torch.Tensor, mode: Mode) -> tuple[torch.Tensor, None]:
        """features (B, F) -> (noise (B, D), None: the caller decodes it). pretrained: w ~ N(0, I) clipped to the
        box; explore: a sample of the noise policy; eval: its mean, squashed."""
        if mode == "pretrained":
            m = self.cfg.noise_magnitude
            w = torch.randn(feats.shape[0], self.np.noise_dim, device=feats.device).clamp_(-m, m)
            return w, None
        return self.sac.act(self.agent_obs(feats.to(self.device)), deterministic=(mode == "eval")), None

    # -- learning ----------------------------------------------------------------------------------------------
    def updates_due(self, episodes_done: int, new_transitions: int) -> int:
        """Gradient steps to run after an episode: none during warm-up, then utd per new transition."""
        return 0 if episodes_done < self.warmup_episodes else self.cfg.utd * new_transitions

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step. batch: obs/next_obs (B, F), noise (B, D), action (B, n*Da) normalized executed chunk,
        reward (B,) summed over the chunk's steps (B,), done (B,)."""
        batch = dict(batch, reward=batch["reward"] - self.cfg.reward_offset * batch["steps"])
        if self.cfg.variant == "sac":
            return self.sac.update({"obs": self.agent_obs(batch["obs"]), "action": batch["noise"],
                                    "reward": batch["reward"], "next_obs": self.agent_obs(batch["next_obs"]),
                                    "done": batch["done"]})
        return self._update_na(batch)

    def _exec_chunk(self, feats: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """pi_dp(s, w): the normalized executed part of the chunk, flattened (B, n*Da)."""
        naction, _ = self.np.decode(feats, w)
        return naction[:, : self.np.n_action_steps].reshape(feats.shape[0], -1)

    def _update_na(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg, sac = self.cfg, self.sac
        feats, B = batch["obs"], batch["obs"].shape[0]  # raw features: the frozen policy decodes from these
        obs, next_obs = self.agent_obs(feats), self.agent_obs(batch["next_obs"])  # the agent's inputs
        # 1. action critic: TD on the executed chunks
        with torch.no_grad():
            w2 = sac.act(next_obs)
            q2 = self.action_critic_target(next_obs, self._exec_chunk(batch["next_obs"], w2)).min(0).values
            y = batch["reward"] + cfg.discount * (1.0 - batch["done"]) * q2
        qa = self.action_critic(obs, batch["action"])
        qa_loss = F.mse_loss(qa, y.expand_as(qa), reduction="none").mean(1).sum()
        self.action_critic_opt.zero_grad(set_to_none=True)
        qa_loss.backward()
        self.action_critic_opt.step()
        # 2. noise critic: distil Q^A through the frozen policy, on base noise and on the actor's noise
        for _ in range(cfg.noise_critic_steps):
            with torch.no_grad():
                half = B // 2
                m = cfg.noise_magnitude
                w = torch.cat([torch.randn(half, self.np.noise_dim, device=obs.device).clamp_(-m, m),
                               sac.act(obs[half:])])
                target = self.action_critic(obs, self._exec_chunk(feats, w)).min(0).values
            qw = sac.critic(obs, w)
            qw_loss = F.mse_loss(qw, target.expand_as(qw), reduction="none").mean(1).sum()
            sac.critic_opt.zero_grad(set_to_none=True)
            qw_loss.backward()
            sac.critic_opt.step()
        # 3. noise policy and temperature against Q^W
        sac.critic.requires_grad_(False)
        try:
            metrics = sac.actor_and_alpha_step(sac.critic, obs)
        finally:
            sac.critic.requires_grad_(True)
        polyak(self.action_critic_target, self.action_critic, cfg.tau)
        return {"action_critic_loss": qa_loss.item(), "noise_critic_loss": qw_loss.item(), **metrics}

    # -- checkpointing -----------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        state = {"sac": self.sac.training_state()}
        if self.cfg.variant == "na":
            state["action_critic"] = self.action_critic.state_dict()
            state["action_critic_target"] = self.action_critic_target.state_dict()
            state["action_critic_opt"] = self.action_critic_opt.state_dict()
        return state

    def load_training_state(self, state: dict) -> None:
        self.sac.load_training_state(state["sac"])
        if self.cfg.variant == "na":
            self.action_critic.load_state_dict(state["action_critic"])
            self.action_critic_target.load_state_dict(state["action_critic_target"])
            self.action_critic_opt.load_state_dict(state["action_critic_opt"])

