"""RL finetuning of a pretrained diffusion policy: DSRL (SAC or noise aliasing over the frozen policy's initial
noise) and Best-of-N with an IQL critic, with replay in the zarr episode store; DPPO (PPO through the denoising chain,
fine-tuning the policy's weights, sim only); the `Finetuner` loop (sim and robot).

One file per piece: agent.py (the Agent protocol the algorithms share), noise_env.py (the noise-space wrapper),
sac.py, dsrl.py, iql.py, best_of_n.py, dppo.py (DPPO's agent and PPO pieces), dppo_run.py (its on-policy iterations
over lockstep sim environments), replay.py, finetune_config.py (the run's settings), finetuner.py (the
Finetuner: episode steps, updates, checkpoints), finetune.py (the sim driver on control/loop), state.py (checkpoint
serialization).
"""

from postbc_core.rl.best_of_n import BestOfNAgent, BestOfNConfig
from postbc_core.rl.dppo import DPPOAgent, DPPOConfig
from postbc_core.rl.dsrl import DSRLAgent, DSRLConfig
from postbc_core.rl.finetune import evaluate, run_episode, run_finetune
from postbc_core.rl.finetune_config import FinetuneConfig
from postbc_core.rl.finetuner import Finetuner
from postbc_core.rl.iql import IQL, expectile_loss
from postbc_core.rl.noise_env import NoiseEnv, NoisePolicy
from postbc_core.rl.replay import ReplayBuffer, episode_transitions
from postbc_core.rl.sac import SAC

__all__ = [
           "IQL",
           "SAC",
           "BestOfNAgent",
           "BestOfNConfig",
           "DPPOAgent",
           "DPPOConfig",
           "DSRLAgent",
           "DSRLConfig",
           "FinetuneConfig",
           "Finetuner",
           "NoiseEnv",
           "NoisePolicy",
           "ReplayBuffer",
           "episode_transitions",
           "evaluate",
           "expectile_loss",
           "run_episode",
           "run_finetune",
]
