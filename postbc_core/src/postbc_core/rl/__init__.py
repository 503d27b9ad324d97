"""RL finetuning of a frozen pretrained diffusion policy: DSRL (SAC or noise aliasing over the policy's initial
noise) and Best-of-N with an IQL critic; replay in the zarr episode store; the `Finetuner` loop (sim and robot).

One file per piece: agent.py (the Agent protocol DSRL and Best-of-N share), noise_env.py (the noise-space wrapper),
sac.py, dsrl.py, iql.py, best_of_n.py, replay.py, finetune_config.py (the run's settings), finetuner.py (the
Finetuner: episode steps, updates, checkpoints), finetune.py (the sim driver on control/loop), state.py (checkpoint
serialization).
"""

from postbc_core.rl.best_of_n import BestOfNAgent, BestOfNConfig
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
