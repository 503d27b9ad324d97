"""What a finetuning run is asked to do: `FinetuneConfig` (the settings of `postbc finetune` and the finetune
manager), which of them a resume may not change (`RESUME_FIXED`), how the caller's user spells them in refusals
(`SettingNames`), the algorithms and the evaluation seeds."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from postbc_core.data.codecs import parse_codecs
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.rl.best_of_n import BestOfNConfig
from postbc_core.rl.dppo import DPPOConfig
from postbc_core.rl.dsrl import DSRLConfig

ALGORITHMS = ("dsrl_sac", "dsrl_na", "best_of_n", "dppo")
ALGORITHM_SETTINGS = {"dsrl_sac": "dsrl", "dsrl_na": "dsrl", "best_of_n": "bon", "dppo": "dppo"}
"""Each algorithm's nested settings field (the others' are unused by its runs)."""
EVAL_SEED = 1_000_000  # evaluation episodes use seeds EVAL_SEED + i: a fixed set, disjoint from training seeds


@dataclass
class FinetuneConfig:
    """RL finetuning of a pretrained diffusion policy checkpoint (DSRL-SAC, DSRL-NA, Best-of-N or DPPO)."""

    checkpoint: Path
    """Pretrained policy checkpoint (.safetensors or the `postbc train` run directory); stays as it is (DPPO
    fine-tunes a copy and writes it to <out>/policy.safetensors)."""
    task: str = "lift_cube"
    """Task name: a sim task for `postbc finetune` (postbc_core.sim.registry.list_tasks()); on the robot, a label."""
    algorithm: Literal["dsrl_sac", "dsrl_na", "best_of_n", "dppo"] = "dsrl_sac"
    """dsrl_sac: SAC over the policy's noise; dsrl_na: DSRL with noise aliasing; best_of_n: IQL critic + best of N;
    dppo: PPO through the denoising chain (fine-tunes the policy's weights; sim only)."""
    episodes: int = 100
    """Training episode budget of the whole run (a resume counts the episodes done), warm-up / rollout episodes
    included."""
    out: Path = Path("runs/finetune")
    """Run directory, new or empty for a new run: replay.zarr (every episode), finetune_state.safetensors,
    metrics.jsonl, tb/, summary.json."""
    seed: int = 0
    """Seeds networks and sampling; training episode i resets the task with seed `seed + i`."""
    eval_every: int = 10
    """Evaluate every this-many training episodes (0: only before the first and after the last)."""
    eval_episodes: int = 10
    """Episodes per evaluation (sim only; seeds 1000000+, never trained on; not recorded). 0 disables evaluation."""
    resume: bool = False
    """Continue the run in `out` from its last checkpoint (an interrupted episode is discarded; the updates of a
    committed episode that a stop cut short are redone)."""
    device: str = "auto"
    """Torch device for the policy and the agent: auto, cpu, cuda, cuda:N."""
    n_action_steps: int | None = None
    """Actions of each chunk executed before the next decision (default: the whole chunk, Ta)."""
    max_steps: int | None = None
    """Override the sim task's episode time limit (control steps)."""
    codec: str = ""
    """Camera codec of the replay store's <camera>_rgb keys (data/codecs.py: raw, jpeg, jpeg:Q, jpegxl-lossless, or
    per key front_rgb=jpeg); empty: raw for a new run, the replay store's own when resuming."""
    reward_type: Literal["sparse", "dense"] = "sparse"
    """Sim reward: sparse (1 on success) or the task's dense shaping."""
    reward_from_label: bool = False
    """The robot case: no reward signal; the final step's reward is 1 and terminal when the episode is labelled a
    success (end_episode(success=True)), 0 otherwise."""
    dsrl: DSRLConfig = field(default_factory=DSRLConfig)
    """DSRL hyperparameters (dsrl_sac, dsrl_na)."""
    bon: BestOfNConfig = field(default_factory=BestOfNConfig)
    """Best-of-N / IQL hyperparameters (best_of_n)."""
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    """DPPO hyperparameters (dppo)."""

    def __post_init__(self):
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
        if isinstance(self.dsrl, dict):
            self.dsrl = DSRLConfig(**self.dsrl)
        if isinstance(self.bon, dict):
            self.bon = BestOfNConfig(**self.bon)
        if isinstance(self.dppo, dict):
            self.dppo = DPPOConfig(**self.dppo)
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm={self.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
        if self.algorithm.startswith("dsrl"):
            # --algorithm is the one switch; the nested variant follows it
            self.dsrl = dataclasses.replace(self.dsrl, variant="na" if self.algorithm == "dsrl_na" else "sac")
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes}: give a training budget of at least 1 episode")
        if self.eval_every < 0 or self.eval_episodes < 0:
            raise ConfigError(f"eval_every={self.eval_every} and eval_episodes={self.eval_episodes} must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 1 (or unset for the task's limit)")
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ConfigError(f"n_action_steps={self.n_action_steps} must be >= 1 (or unset for the whole chunk)")
        try:
            parse_codecs(self.codec)
        except PostBCError as exc:
            raise ConfigError(f"codec: {exc}") from None
        if self.reward_type not in ("sparse", "dense"):
            raise ConfigError(f"reward_type={self.reward_type!r}: choose 'sparse' or 'dense'")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["checkpoint"], d["out"] = str(self.checkpoint), str(self.out)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        """The inverse of to_dict (a run's saved settings)."""
        d = dict(d)
        d["checkpoint"], d["out"] = Path(d["checkpoint"]), Path(d["out"])
        # runs saved before DPPO existed have no "dppo" settings: the defaults (unused by their algorithm)
        return cls(**{**d, "dsrl": DSRLConfig(**d["dsrl"]), "bon": BestOfNConfig(**d["bon"]),
                      "dppo": DPPOConfig(**d.get("dppo", {}))})

    @property
    def warmup_episodes(self) -> int:
        if self.algorithm == "dppo":  # on-policy from the first iteration (its critic warm-up is in iterations)
            return 0
        return self.bon.rollouts if self.algorithm == "best_of_n" else self.dsrl.warmup_episodes


# Settings a resumed run must share with the run that wrote the checkpoint (the rest may change, e.g. --episodes).
RESUME_FIXED = ("checkpoint", "task", "algorithm", "seed", "n_action_steps", "reward_type", "reward_from_label",
                "dsrl", "bon", "dppo", "max_steps")


@dataclass(frozen=True)
class SettingNames:
    """How the user of a Finetuner sets FinetuneConfig's fields, so that its refusals name only settings that user
    can change: `postbc finetune`'s flags by default (--dsrl.utd 5); a ROS node passes `params`, its parameter for
    each field it sets (dotted for nested fields; fields it does not set are absent) and `values`, how a field's value
    reads as that parameter's."""

    params: dict[str, str] | None = None
    values: dict[str, Callable[[object], object]] = field(default_factory=dict)

    def name(self, key: str) -> str | None:
        """The setting for field `key` (None: the user cannot set it)."""
        if self.params is None:
            return "--" + key.replace("_", "-")
        return self.params.get(key)

    def value(self, key: str, value) -> object:
        return self.values[key](value) if key in self.values else value

    def assign(self, key: str, value) -> str:
        """How the user sets field `key` to `value` (--episodes 4 / episodes:=4)."""
        v = self.value(key, value)
        if self.params is None:
            return f"{self.name(key)}" if v is True else f"{self.name(key)} {v}"
        return f"{self.name(key)}:={json.dumps(v) if isinstance(v, bool) else v}"
