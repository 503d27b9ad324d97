"""DPPO: PPO through the diffusion policy's denoising chain (the paper's third finetuning method).

Ren et al. 2024, "Diffusion Policy Policy Optimization" (arXiv 2409.00588), reference code irom-lab/dppo
(model/diffusion/diffusion_vpg.py + diffusion_ppo.py, agent/finetune/train_ppo_diffusion_agent.py; the defaults cited
below come from its cfg/robomimic/finetune/*/ft_ppo_diffusion_mlp.yaml and, for DDIM, cfg/furniture/finetune/*).
Unlike DSRL and Best-of-N, DPPO changes the diffusion policy's own weights: the result is an ordinary policy
checkpoint (rl/dppo_run.py writes it), acting as every policy does (deterministic DDIM from w ~ N(0, I)).

Two-layer MDP. Every environment decision is an inner episode of K denoising steps x_K -> x_{K-1} -> ... -> x_0 (our
sampler: DDIM over the policy's K = num_inference_steps). During training each step is the Gaussian
    x_{i-1} ~ N(mu_i, std_i^2),   mu_i = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_i^2) eps,
    sigma_i = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev),  std_i = max(sigma_i, min_std)
(DDIM with eta: DPPOConfig.eta in training, 0 by default where the reference uses 1 (the field says why); eta = 0
at evaluation, which is our deterministic sampler exactly). The minimum std gives DDIM's deterministic steps
(sigma = 0) a density, so every transition has a log-probability. x0_hat is clipped as our sampler clips it, and
eps stays the network's (diffusers' use_clipped_model_output=False, like schedulers.ddim_sample), so eta = 0 with no
noise reproduces the deployed policy.
PPO treats the last `ft_denoising_steps` transitions of each chain as the policy's actions at that decision:
    ratio_{i} = exp(log p_new(x_{i-1} | x_i, s) - log p_old(...)),  the log density averaged over the executed steps
    of the chunk and Da and clamped to [-5, 2] (the reference's reward_horizon and clamp);
    loss = mean over samples and steps of max(-A_i r_i, -A_i clip(r_i, 1 - c_i, 1 + c_i)),  A_i = gamma_d^(k-1-j) A
for the j-th of the k fine-tuned steps (the denoising discount: noisier steps count less), with a clip coefficient
c growing exponentially from clip_coef_base at the first fine-tuned step to clip_coef at the last. A is GAE over
environment decisions (`gae`) from a critic V(s) on the environment observation (the policy's features, clipped as
DSRL's are), trained by 0.5 * MSE onto the GAE returns.

Deviation from the reference (so the result stays one ordinary checkpoint): the reference keeps a frozen copy of the
network for the first K - ft_denoising_steps steps; here one network (the fine-tuned one) runs every step, and only
the last ft_denoising_steps transitions enter the loss (default: all K, which is what the reference's DDIM
configs do: ddim_steps = ft_denoising_steps). Only the noise network is fine-tuned; the observation encoder (and its
normalizer) stays the pretrained one, so the features the critic and the policy see do not drift.

Shape legend: B batch (decisions), K DDIM steps, k fine-tuned steps, Ta action steps, Da action dim, n executed
steps per chunk, F feature size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from postbc_core.errors import ConfigError, PostBCError, check_at_least_one
from postbc_core.rl.agent import Mode, clip_features
from postbc_core.rl.noise_env import NoisePolicy

LOGPROB_CLAMP = (-5.0, 2.0)  # irom-lab/dppo diffusion_ppo.py loss(): new and old log-probs clamped to this range


@dataclass
class DPPOConfig:
    """DPPO hyperparameters. Defaults: the reference's robomimic state configs (irom-lab/dppo
    cfg/robomimic/finetune/*/ft_ppo_diffusion_mlp.yaml) unless a line says why ours differ (CPU budget)."""

    envs: int = 8
    """Parallel sim environments stepped in lockstep (reference n_envs: 50; 8 fits this 2-core CPU)."""
    episodes_per_iteration: int = 16
    """Whole episodes collected per PPO iteration (the reference collects n_steps = 300 decisions per environment,
    episodes running across iterations). Whole episodes keep every checkpoint between episodes and need no value
    bootstrap at an iteration's edge; 16 is ours (CPU)."""
    ft_denoising_steps: int = 0
    """Fine-tuned denoising steps k, the last k of the policy's K DDIM steps (0 = all K; the reference's DDIM
    configs set ddim_steps = ft_denoising_steps, i.e. all)."""
    eta: float = 0.0
    """DDIM eta during training rollouts; evaluation and deployment use eta = 0. The reference trains at eta = 1
    (EtaFixed base_eta: 1) for hundreds of iterations; in a CPU budget of ~10 iterations, training the sampler the
    deployed policy runs (eta = 0, so each step is DDIM's deterministic update plus the minimum std) carried over
    better to the deployed policy: BC seed 0 of the pipeline, 160 episodes, the same 30 evaluation episodes:
    eta 0 / lr 1e-4 60 % -> 67 % -> 70 %, eta 1 / lr 3e-4 60 % -> 63 % -> 67 % (one pilot each: a hint, not a
    measurement)."""
    min_sampling_std: float = 0.1
    """Minimum std of every denoising step during training rollouts (reference min_sampling_denoising_std: 0.1
    robomimic, 0.04 furniture DDIM)."""
    min_logprob_std: float = 0.1
    """Minimum std in the transitions' log-probabilities (reference min_logprob_denoising_std: 0.1)."""
    randn_clip: float = 3.0
    """Rollout noise draws clipped to +-this (reference randn_clip_value: 3)."""
    gamma_denoising: float = 0.99
    """Denoising discount: the j-th of k fine-tuned steps' advantage is scaled by gamma_denoising^(k-1-j)
    (reference robomimic: 0.99)."""
    clip_coef: float = 0.01
    """PPO ratio clip at the last denoising step (reference clip_ploss_coef: 0.01)."""
    clip_coef_base: float = 0.001
    """PPO ratio clip at the first fine-tuned step (reference clip_ploss_coef_base: 0.001)."""
    clip_coef_rate: float = 3.0
    """Exponential rate of the clip's growth over the fine-tuned steps (reference clip_ploss_coef_rate: 3)."""
    gamma: float = 0.999
    """Discount per environment decision (one chunk; reference gamma: 0.999)."""
    gae_lambda: float = 0.95
    """GAE lambda (reference gae_lambda: 0.95)."""
    update_epochs: int = 10
    """Passes over an iteration's decisions (reference update_epochs: 10)."""
    batch_size: int = 256
    """Decisions per gradient step (reference batch_size 7500 = half of its 15000 decisions per iteration; ours
    collects a few hundred per iteration, so a few minibatches of 256). An iteration's remainder below a full batch
    is skipped as the reference does, unless it has fewer than one batch: then it is one batch."""
    actor_lr: float = 1e-4
    """Adam learning rate of the noise network (reference actor_lr: 1e-5 over 300 iterations of 15000 decisions;
    10x for a CPU budget of ~10 iterations of a few hundred decisions)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic (reference critic_lr: 1e-3)."""
    critic_warmup_iterations: int = 2
    """Iterations that train only the critic before the actor moves (reference n_critic_warmup_itr: 2)."""
    vf_coef: float = 0.5
    """Value-loss weight (reference vf_coef: 0.5)."""
    target_kl: float = 1.0
    """Stop an iteration's updates once the approximate KL of a minibatch exceeds this (reference target_kl: 1)."""
    norm_adv: bool = True
    """Normalize advantages within each minibatch (reference norm_adv: True)."""
    reward_scale_running: bool = True
    """Divide rewards by a running std of the discounted return (reference reward_scale_running: True)."""
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    """Critic widths, Mish activations (reference CriticObs mlp_dims: [256, 256, 256], Mish)."""
    obs_clip: float = 5.0
    """Clip the critic's input features to +-obs_clip (0 disables): the demo-fitted z-scores DSRLConfig.obs_clip
    explains. The policy itself always sees its own (unclipped) features."""

    def __post_init__(self):
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)
        check_at_least_one(self, ("envs", "episodes_per_iteration", "update_epochs", "batch_size"), "dppo")
        if self.ft_denoising_steps < 0:
            raise ConfigError(f"dppo ft_denoising_steps={self.ft_denoising_steps} must be >= 0 (0 = all of the "
                              "policy's DDIM steps)")
        if self.critic_warmup_iterations < 0:
            raise ConfigError(f"dppo critic_warmup_iterations={self.critic_warmup_iterations} must be >= 0")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"dppo eta={self.eta} must be in [0, 1] (1 = DDPM-like noise, the reference's)")
        for name in ("min_sampling_std", "min_logprob_std", "randn_clip", "clip_coef", "clip_coef_base",
                     "actor_lr", "critic_lr", "target_kl"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"dppo {name}={getattr(self, name)} must be > 0 (default "
                                  f"{getattr(DPPOConfig, name)})")
        for name in ("gamma", "gamma_denoising", "gae_lambda"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"dppo {name}={getattr(self, name)} must be in (0, 1] (default "
                                  f"{getattr(DPPOConfig, name)})")
        if not self.vf_coef >= 0 or not self.obs_clip >= 0 or not self.clip_coef_rate >= 0:
            raise ConfigError(f"dppo vf_coef={self.vf_coef}, obs_clip={self.obs_clip} and clip_coef_rate="
                              f"{self.clip_coef_rate} must be >= 0")
        if not self.critic_hidden or min(self.critic_hidden) < 1:
            raise ConfigError(f"dppo critic_hidden={self.critic_hidden}: give at least one layer width >= 1")


# -- the PPO pieces, as functions (tests check each against a direct computation) ------------------------------------
def gae(rewards: np.ndarray, values: np.ndarray, last_value: float, terminal: bool, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation over one episode's M decisions.

    rewards, values: (M,); last_value: V of the observation after the last decision (used only when the episode was
    cut by the time limit, not `terminal`). Returns (advantages (M,), returns = advantages + values (M,)), float64:
        delta_j = r_j + gamma V_{j+1} - V_j  (V_M = 0 when terminal),  A_j = delta_j + gamma lam A_{j+1}."""
    r = np.asarray(rewards, np.float64)
    v = np.asarray(values, np.float64)
    if r.shape != v.shape or r.ndim != 1:
        raise PostBCError(f"gae: rewards {r.shape} and values {v.shape} must be the same (M,)")
    next_v = np.append(v[1:], 0.0 if terminal else float(last_value))
    adv = np.zeros_like(r)
    running = 0.0
    for j in reversed(range(len(r))):
        running = r[j] + gamma * next_v[j] - v[j] + gamma * lam * running
        adv[j] = running
    return adv, adv + v


def clip_schedule(k: int, clip: float, base: float, rate: float) -> torch.Tensor:
    """(k,) PPO clip coefficients over the k fine-tuned steps, first (noisiest) to last: base + (clip - base) *
    (exp(rate t) - 1) / (exp(rate) - 1), t = 0..1 (irom-lab/dppo diffusion_ppo.py); k = 1: just `clip`."""
    if k == 1:
        return torch.tensor([clip])
    t = torch.arange(k, dtype=torch.float64) / (k - 1)
    denom = math.expm1(rate) if rate > 0 else 1.0
    growth = torch.expm1(rate * t) / denom if rate > 0 else t
    return (base + (clip - base) * growth).float()


def clipped_policy_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: torch.Tensor,
                        gamma_denoising: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate over denoising steps.

    new_logp, old_logp: (B, k) log-probabilities of the k fine-tuned transitions; adv (B,) advantages (already
    normalized if wanted); clip (k,) per-step clip coefficients. Returns (loss, {"approx_kl", "clipfrac",
    "ratio"})."""
    k = new_logp.shape[1]
    disc = gamma_denoising ** torch.arange(k - 1, -1, -1, dtype=adv.dtype, device=adv.device)  # (k,)
    a = adv[:, None] * disc[None]  # (B, k)
    logratio = new_logp - old_logp
    ratio = logratio.exp()
    c = clip.to(ratio)[None]
    loss = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - c, 1 + c)).mean()
    with torch.no_grad():  # k3 estimator of KL (reference: approx_kl = ((ratio - 1) - logratio).mean())
        stats = {"approx_kl": float(((ratio - 1) - logratio).mean()),
                 "clipfrac": float(((ratio - 1).abs() > c).float().mean()), "ratio": float(ratio.mean())}
    return loss, stats


class RunningReturnStd:
    """Running variance of the discounted return, to scale rewards (irom-lab/dppo util/reward_scaling.py
    RunningRewardScaler, reward_scale_running): reward / sqrt(var + 1e-8), clipped to +-10, the statistics updated
    once per iteration with the returns of all its decisions (each episode's return restarting at its start)."""

    CLIP = 10.0  # the reference's cliprew

    def __init__(self):
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0  # the reference's (baselines') RunningMeanStd start

    def scale(self, episodes: list[np.ndarray], gamma: float) -> list[np.ndarray]:
        """The (M_e,) rewards of an iteration's episodes -> the same scaled, after updating the statistics."""
        rets = []
        for r in episodes:
            acc = 0.0
            for x in np.asarray(r, np.float64):
                acc = acc * gamma + x
                rets.append(acc)
        if rets:
            ret = np.asarray(rets)
            m, v, n = float(ret.mean()), float(ret.var()), len(ret)
            delta, tot = m - self.mean, self.count + n
            self.mean += delta * n / tot
            self.var = (self.var * self.count + v * n + delta ** 2 * self.count * n / tot) / tot
            self.count = tot
        d = math.sqrt(self.var + 1e-8)
        return [np.clip(np.asarray(r, np.float64) / d, -self.CLIP, self.CLIP) for r in episodes]

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load(self, s: dict) -> None:
        self.count, self.mean, self.var = float(s["count"]), float(s["mean"]), float(s["var"])


class ValueNet(nn.Module):
    """V(s): features (B, F) -> (B,), an MLP with Mish activations."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        layers, d = [], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Mish()]
            d = h
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class DPPOAgent:
    """The fine-tuned policy, its critic and their PPO update (see the module docstring); an rl/agent.py `Agent` for
    acting (evaluation goes through the Finetuner as DSRL's does), while its learning runs per iteration
    (`ppo_update`, driven by rl/dppo_run.py) instead of from replay batches."""

    def __init__(self, cfg: DPPOConfig, noise_policy: NoisePolicy, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.np = noise_policy
        self.device = torch.device(device)
        base = noise_policy.policy
        self.K = int(base.config.num_inference_steps)
        k = cfg.ft_denoising_steps or self.K
        if k > self.K:
            raise ConfigError(f"dppo ft_denoising_steps={k} exceeds the policy's {self.K} DDIM steps "
                              f"(num_inference_steps); use 1..{self.K} (0 = all)")
        self.k = k
        # the fine-tuned policy: a copy of the pretrained one (the NoisePolicy keeps the frozen original, which is
        # what "the pretrained policy" evaluates everywhere); only its noise network learns
        self.policy = copy.deepcopy(base).to(self.device).eval()
        self.policy.requires_grad_(False)
        self.policy.noise_net.requires_grad_(True)
        self.schedule = self.policy.schedule
        self.coefs = self.schedule.ddim_coefficients(self.K)
        self.critic = ValueNet(noise_policy.feature_dim, cfg.critic_hidden).to(self.device)
        self.actor_opt = torch.optim.Adam(self.policy.noise_net.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.clips = clip_schedule(k, cfg.clip_coef, cfg.clip_coef_base, cfg.clip_coef_rate).to(self.device)
        self.reward_scaler = RunningReturnStd()
        self.iterations = 0
        self.warmup_episodes = 0

    # -- the denoising steps -----------------------------------------------------------------------------------
    def step_mean_std(self, x: torch.Tensor, i: int, feats: torch.Tensor, eta: float) -> tuple[torch.Tensor, float]:
        """Denoising step i (0 = the first, noisiest, of K) from x (B, Ta, Da): (mean of x_{next} (B, Ta, Da),
        sigma (DDIM's eta-scaled std, before any minimum))."""
        t, a_t, s_t, a_prev, s_prev = self.coefs[i]
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = self.policy.noise_net(x, tt, feats)
        x0 = (x - s_t * eps) / a_t
        if self.schedule.clip_sample:
            r = self.schedule.clip_sample_range
            x0 = x0.clamp(-r, r)
        abar_t, abar_prev = a_t ** 2, a_prev ** 2
        sigma = eta * math.sqrt(max((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev), 0.0))
        direction = math.sqrt(max(1 - abar_prev - sigma ** 2, 0.0))
        return a_prev * x0 + direction * eps, sigma

    @torch.no_grad()
    def sample(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training rollout: features (B, F) -> (normalized chunk x_0 (B, Ta, Da), chain (B, k+1, Ta, Da) = the
        states from x_k (before the first fine-tuned step) to x_0). Draws from torch's global generator."""
        cfg = self.cfg
        B = feats.shape[0]
        Ta, Da = self.policy.chunk_shape
        x = torch.randn(B, Ta, Da, device=feats.device)
        chain = []
        for i in range(self.K):
            if i == self.K - self.k:
                chain.append(x)
            mean, sigma = self.step_mean_std(x, i, feats, cfg.eta)
            z = torch.randn_like(x).clamp_(-cfg.randn_clip, cfg.randn_clip)
            x = mean + max(sigma, cfg.min_sampling_std) * z
            if i >= self.K - self.k:
                chain.append(x)
        return x, torch.stack(chain, 1)

    def chain_logprob(self, feats: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """log p(x_next | x_prev, s) of the k fine-tuned transitions: features (B, F), chain (B, k+1, Ta, Da) ->
        (B, k), each the Gaussian log density averaged over the executed n steps and Da, clamped elementwise to
        LOGPROB_CLAMP first (the reference's reward_horizon and clamp). Differentiable in the noise network."""
        cfg = self.cfg
        B, n = chain.shape[0], self.np.n_action_steps
        out = []
        for j in range(self.k):
            mean, sigma = self.step_mean_std(chain[:, j], self.K - self.k + j, feats, cfg.eta)
            std = max(sigma, cfg.min_logprob_std)
            x_next = chain[:, j + 1]
            lp = -((x_next - mean) ** 2) / (2 * std ** 2) - math.log(std) - 0.5 * math.log(2 * math.pi)
            out.append(lp.clamp(*LOGPROB_CLAMP)[:, :n].reshape(B, -1).mean(1))
        return torch.stack(out, 1)

    def value(self, feats: torch.Tensor) -> torch.Tensor:
        """V(s): features (B, F) -> (B,) (inputs clipped, see DPPOConfig.obs_clip)."""
        return self.critic(clip_features(feats.to(self.device), self.cfg.obs_clip))

    # -- the Agent protocol (acting) ---------------------------------------------------------------------------
    @torch.no_grad()
    def choose(self, feats: torch.Tensor, mode: Mode) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, F) -> (initial noise (B, D), raw chunk (B, Ta, Da)). eval: the fine-tuned policy as deployed
        (deterministic DDIM from w ~ N(0, I)); pretrained: the frozen policy; explore: a training rollout's draw
        (its chain is not kept: training rollouts go through rl/dppo_run.py)."""
        w = torch.randn(feats.shape[0], self.np.noise_dim, device=feats.device)
        if mode == "explore":
            naction, _ = self.sample(feats)
        elif mode == "eval":
            naction = self.policy.sample_normalized(feats, w.reshape(-1, *self.policy.chunk_shape))
        else:
            return w, self.np.decode(feats, w)[1]
        return w, self.policy.normalizer.unnormalize(self.np.action_key, naction)

    def updates_due(self, episodes_done: int, new_transitions: int) -> int:
        return 0  # DPPO's updates run per iteration of on-policy episodes (rl/dppo_run.py), never from replay

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise PostBCError("DPPO learns from on-policy iterations (rl/dppo_run.dppo_iteration), not from replay batches")

    # -- learning ----------------------------------------------------------------------------------------------
    def ppo_update(self, data: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, float]:
        """One iteration's PPO updates. data: feats (N, F), chain (N, k+1, Ta, Da), old_logp (N, k), adv (N,),
        returns (N,), values (N,) (the critic's at collection). Minibatches are drawn with `rng` (checkpointed by the
        Finetuner). The actor steps only after critic_warmup_iterations iterations. Returns mean metrics and
        "gradient_steps"."""
        cfg = self.cfg
        N = data["feats"].shape[0]
        bs = min(cfg.batch_size, N)
        n_batches = max(1, N // bs)
        train_actor = self.iterations >= cfg.critic_warmup_iterations
        sums: dict[str, float] = {}
        steps = 0
        stop = False
        # the network stays in eval mode: old and new log-probs must be one function until the weights move
        for _ in range(cfg.update_epochs):
            perm = rng.permutation(N)
            for b in range(n_batches):
                idx = torch.as_tensor(perm[b * bs:(b + 1) * bs], device=self.device)
                feats, chain = data["feats"][idx], data["chain"][idx]
                adv = data["adv"][idx]
                if cfg.norm_adv and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                new_logp = self.chain_logprob(feats, chain)
                pg_loss, stats = clipped_policy_loss(new_logp, data["old_logp"][idx], adv, self.clips,
                                                     cfg.gamma_denoising)
                v_loss = 0.5 * ((self.value(feats) - data["returns"][idx]) ** 2).mean()
                loss = pg_loss + cfg.vf_coef * v_loss
                self.actor_opt.zero_grad(set_to_none=True)
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                if train_actor:
                    self.actor_opt.step()
                self.critic_opt.step()
                steps += 1
                for key, v in {"pg_loss": pg_loss.item(), "v_loss": v_loss.item(), **stats}.items():
                    sums[key] = sums.get(key, 0.0) + v
                if stats["approx_kl"] > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.iterations += 1
        out = {k: v / steps for k, v in sums.items()}
        out.update(gradient_steps=steps, actor_trained=float(train_actor), kl_stop=float(stop))
        ret, val = data["returns"].double(), data["values"].double()
        var = float(ret.var()) if N > 1 else 0.0
        if var > 0:  # undefined when every return is the same: no metric rather than a NaN in metrics.jsonl
            out["explained_variance"] = 1 - float((ret - val).var()) / var
        return out

    # -- checkpointing -----------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        return {"noise_net": self.policy.noise_net.state_dict(), "critic": self.critic.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "reward_scaler": self.reward_scaler.state(), "iterations": self.iterations}

    def load_training_state(self, state: dict) -> None:
        self.policy.noise_net.load_state_dict(state["noise_net"])
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.reward_scaler.load(state["reward_scaler"])
        self.iterations = int(state["iterations"])
