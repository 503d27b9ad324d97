"""DSRL's view of a frozen diffusion policy: the action is the policy's initial DDIM noise.

DSRL (Wagenmaker et al. 2025, "Steering Your Diffusion Policy with Latent Space Reinforcement Learning",
arXiv 2506.15799; reference code ajwagen/dsrl `env_utils.py` DiffusionPolicyEnvWrapper + ActionChunkWrapper) keeps the
pretrained diffusion policy frozen and lets an RL agent choose the noise w that DDIM starts from. DDIM is
deterministic, so (s, w) -> action chunk is a fixed function and the agent sees an ordinary MDP whose actions are
noise vectors. Conventions here:

- action: w in [-noise_magnitude, noise_magnitude]^D, D = Ta * Da, in the policy's *normalized* action space
  (magnitude 1.5 from DESIGN.md / ajwagen/dsrl `action_magnitude`). w = 0 is the policy's "mode" chunk; w ~ N(0, I)
  is the pretrained policy itself.
- one macro-step executes the first n_action_steps actions of the decoded chunk (receding horizon, as PolicyRunner).
- reward of a macro-step: the plain sum of the per-step rewards inside it (ajwagen/dsrl ActionChunkWrapper sums them
  the same way); the RL discount then applies per macro-step.
- observation: the frozen policy's conditioning features, `policy.encode_obs` of the last To observations (padded at
  an episode start by repeating the first observation, as PolicyRunner and the training windows do). For state
  policies that is the normalized low-dim observation flattened over To; for image policies it includes the frozen
  ResNet features.

`NoisePolicy` is the reusable part (features + decode; the finetuner drives it step by step); `NoiseEnv` wraps a sim
`Task` (or anything with `reset(seed) -> obs` and `step(action) -> (obs, reward, terminated, truncated, info)`) into
the macro-step environment. Both keep their observation windows in control/history.py (ObsHistory live,
windows_from_rows from the store). NoiseEnv runs its own few-line macro-step, not control/loop.run_episodes: a gym
environment hands control back to its caller after every macro-step, while the loop runs whole episodes around an
actor; inverting that (a thread or generator per episode) would cost more than the step it saves.

Shape legend: B batch, To obs steps, Ta action steps, Da action dim, D = Ta * Da (noise size), F feature size,
n = n_action_steps (actions executed per chunk), T episode steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from postbc_core.control.history import ObsHistory
from postbc_core.control.spec import ControlSpec
from postbc_core.errors import ConfigError

DEFAULT_NOISE_MAGNITUDE = 1.5  # DESIGN.md "noise magnitude 1.5"; ajwagen/dsrl cfg train.action_magnitude: 1.5


class NoisePolicy:
    """A frozen `DiffusionPolicy` as a map (observation window, noise) -> action chunk.

    features(windows) -> (B, F) torch features; decode(features, noise) -> normalized and raw chunks (B, Ta, Da).
    Exactly the computation of `policy.predict_action(obs, noise=w)`, split in two so an agent can condition on the
    features and so a chunk can be recomputed from stored (features, noise). `spec` (ControlSpec) says what the
    policy reads (`spec.step_obs`: one raw observation -> the policy's keys in store dtypes, so a feature computed
    live equals one recomputed from the store) and how its chunks run; the windows come from control/history.py
    (ObsHistory live, windows_from_rows from the store).
    """

    def __init__(self, policy, n_action_steps: int | None = None):
        self.policy = policy.eval()
        self.policy.requires_grad_(False)
        # any action (the toy 2-D policies of the RL tests too): the arm's checks run where a policy meets it
        self.spec = spec = ControlSpec.from_policy(policy, n_action_steps, robot=False)
        self.obs_shapes = spec.obs_shapes
        self.obs_keys = spec.obs_keys
        self.n_obs_steps, self.action_horizon, self.action_dim = spec.n_obs_steps, spec.action_horizon, spec.action_dim
        self.noise_dim = self.action_horizon * self.action_dim
        self.n_action_steps = spec.n_action_steps
        self.feature_dim = int(policy.obs_encoder.output_dim)
        self.action_key = spec.action_key
        self.device = policy.device

    @torch.no_grad()
    def features(self, windows: Mapping[str, np.ndarray]) -> torch.Tensor:
        """key: (B, To, *shape) raw observations -> (B, F) conditioning features (the RL observation)."""
        tobs = {k: torch.as_tensor(np.asarray(windows[k])).to(self.device) for k in self.obs_keys}
        return self.policy.encode_obs(tobs)

    # -- actions -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, feats: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, F) and noise (B, Ta, Da) or (B, D) -> (normalized chunk, raw chunk), each (B, Ta, Da)."""
        noise = noise.reshape(-1, self.action_horizon, self.action_dim).to(feats.device, torch.float32)
        naction = self.policy.sample_normalized(feats, noise)
        return naction, self.policy.normalizer.unnormalize(self.action_key, naction)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions (..., Da) -> the policy's normalized action space."""
        return self.policy.normalizer.normalize(self.action_key, actions.float())


class NoiseEnv:
    """Macro-step environment over a task: action w (D,) -> decode with the frozen policy -> execute n actions.

    reset(seed) -> features (F,) float32; step(w) -> (features, summed reward, terminated, truncated, info) with
    info["chunk"] (Ta, Da) the decoded raw chunk, info["actions"] (k, Da) the executed (bound-clipped) actions,
    info["policy_actions"] (k, Da) the same before clipping, info["rewards"], info["success"], info["obs"] the last
    raw observation. w outside the box is clipped to it (the actor is tanh-bounded, so only hand-made noise is).
    """

    def __init__(self, task, policy, n_action_steps: int | None = None,
                 noise_magnitude: float = DEFAULT_NOISE_MAGNITUDE):
        import gymnasium

        if not noise_magnitude > 0:
            raise ConfigError(f"noise_magnitude must be > 0 (DSRL: 1.5), got {noise_magnitude}")
        self.task = task
        self.noise_policy = policy if isinstance(policy, NoisePolicy) else NoisePolicy(policy, n_action_steps)
        np_ = self.noise_policy
        self.noise_magnitude = float(noise_magnitude)
        self.action_space = gymnasium.spaces.Box(-self.noise_magnitude, self.noise_magnitude, (np_.noise_dim,),
                                                 np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (np_.feature_dim,), np.float32)
        self._bounds = task.action_bounds() if hasattr(task, "action_bounds") else None
        self._history = ObsHistory(np_.obs_keys, np_.n_obs_steps)
        self.obs: dict | None = None

    def _features(self, final: bool = False) -> np.ndarray:
        """(F,) features of the current window; final: with the last observation appended (it is not kept: the
        episode is over)."""
        extra = {0: self.noise_policy.spec.step_obs(self.obs)} if final else None
        return self.noise_policy.features(self._history.stacked(extra=extra))[0].cpu().numpy()

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.obs = self.task.reset(seed=seed)
        self._history.reset()
        self._history.append(0, self.noise_policy.spec.step_obs(self.obs))
        return self._features()

    def step(self, w):
        np_ = self.noise_policy
        w = np.asarray(w, np.float32).reshape(-1)
        if w.shape != (np_.noise_dim,) or not np.all(np.isfinite(w)):
            raise ConfigError(f"noise must be {np_.noise_dim} finite values (Ta={np_.action_horizon} x "
                              f"Da={np_.action_dim}), got shape {np.shape(w)}")
        w = np.clip(w, -self.noise_magnitude, self.noise_magnitude)
        feats = np_.features(self._history.stacked())
        _, chunk = np_.decode(feats, torch.as_tensor(w)[None])
        chunk = chunk[0].cpu().numpy()
        rewards, executed, raw = [], [], []
        terminated = truncated = success = False
        info: dict = {}
        for a in chunk[: np_.n_action_steps]:
            a_exec = a if self._bounds is None else np.clip(a, *self._bounds)
            self.obs, r, terminated, truncated, info = self.task.step(a_exec)
            rewards.append(float(r))
            executed.append(np.asarray(a_exec, np.float32))
            raw.append(a)
            success |= bool(info.get("success", False))
            if terminated or truncated:
                break
            self._history.append(0, np_.spec.step_obs(self.obs))
        info = dict(info, chunk=chunk, actions=np.stack(executed), policy_actions=np.stack(raw), rewards=rewards,
                    success=success, obs=self.obs)
        feats_next = self._features(final=terminated or truncated)
        return feats_next, float(sum(rewards)), bool(terminated), bool(truncated), info
