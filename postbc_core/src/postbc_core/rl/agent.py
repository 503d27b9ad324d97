"""What every finetuning agent is to the `Finetuner`: the `Agent` protocol, the acting `Mode`s and the agents' input
clipping (`clip_features`).

DSRLAgent (rl/dsrl.py) and BestOfNAgent (rl/best_of_n.py) conform; the Finetuner (rl/finetuner.py) calls nothing
else on them, so a new method plugs in by implementing these five methods.

Shape legend: B batch, F feature size (the frozen policy's conditioning features), D = Ta * Da noise size,
Ta action steps, Da action dim.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

Mode = Literal["policy", "pretrained", "explore", "eval"]
"""How an episode chooses the frozen policy's noise: "policy" = the pretrained policy exactly as trained and deployed,
w ~ N(0, I) (every evaluation of "the pretrained policy", whatever the algorithm, so all comparisons share one
baseline); "pretrained" = the agent's warm-up (DSRL: w ~ N(0, I) clipped to its noise box, so the replay holds only
noise its actor can produce; Best-of-N: as "policy"); "explore" / "eval" = the learned agent, sampling / greedy."""


def clip_features(feats: torch.Tensor, clip: float) -> torch.Tensor:
    """The RL networks' input: the frozen policy's features clipped to [-clip, clip] (0 = unclipped). The features
    are z-scores fitted on a few demos and reach |z| ~ 10^2 online (DSRLConfig.obs_clip); the policy itself always
    decodes from the unclipped features."""
    return feats.clamp(-clip, clip) if clip > 0 else feats


@runtime_checkable
class Agent(Protocol):
    """A finetuning agent over a frozen policy's noise (see the module docstring)."""

    def choose(self, feats: torch.Tensor, mode: Mode) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features (B, F) -> (noise (B, D), the raw chunk (B, Ta, Da) decoded from it, or None: the caller
        decodes it)."""
        ...

    def updates_due(self, episodes_done: int, new_transitions: int) -> int:
        """Gradient steps to run after an episode, given the episodes done and the transitions indexed since the
        last updates."""
        ...

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on a replay batch (rl/replay.py TRANSITION_FIELDS) -> its scalar metrics."""
        ...

    def training_state(self) -> dict:
        """Everything a resume needs (networks, targets, optimizers, temperatures), for rl/state.flatten."""
        ...

    def load_training_state(self, state: dict) -> None:
        """The inverse of training_state."""
        ...
