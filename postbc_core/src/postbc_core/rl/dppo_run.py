"""DPPO's on-policy iterations (rl/dppo.py) over parallel twin environments stepped in lockstep by
control/loop.run_episodes, recorded in a Finetuner, and the fine-tuned policy's export; rl/finetune.run_finetune runs
them for `postbc finetune --algorithm dppo` with the Finetuner's checkpoints, logs and evaluation.

One iteration: `episodes_per_iteration` whole training episodes (episode i resets with seed `seed + i`, as every
algorithm's) run over `envs` environments; every decision samples the fine-tuned policy's stochastic denoising chain
(`DPPOCollector`, one batched call for every environment due a new chunk); then GAE per episode over its decisions
(an episode's end, success or time limit, ends its return: no bootstrap), the old
log-probabilities of the chains, and `update_epochs` PPO passes (`DPPOAgent.ppo_update`). Only then does the run
checkpoint (`Finetuner.save`: networks, optimizers, reward statistics, RNG states, counters), so a stop loses at most
the iteration running and a resume redoes it exactly: the same seeds, the same random streams, the same result as an
uninterrupted run. After every checkpoint the fine-tuned policy is written as an ordinary policy checkpoint,
<out>/policy.safetensors (`postbc eval --checkpoint <out>` loads it like a `postbc train` run). The evaluation and
the paired final test are the ones every algorithm uses (rl/finetune.py `evaluate`, `evaluate_run`): the fine-tuned
policy acting as deployed (deterministic DDIM from w ~ N(0, I)) against the frozen pretrained policy.

Shape legend: M decisions of an episode, N decisions of an iteration, F features, k fine-tuned denoising steps,
Ta action steps, Da action dim.
"""

from __future__ import annotations

import numpy as np
import torch

from postbc_core.control.history import ChunkQueue, ObsHistory
from postbc_core.control.loop import Actor, EpisodeResult, Step, run_episodes
from postbc_core.errors import ConfigError
from postbc_core.policies.checkpoint import POLICY_FILE, save_policy
from postbc_core.rl.dppo import DPPOAgent, gae
from postbc_core.rl.finetuner import Finetuner, stall_for_test

# checkpoint metadata that save_policy writes anew (the rest of the pretrained policy's info travels on)
_WRITTEN_BY_SAVE = ("format", "format_version", "postbc_core_version", "torch_version", "created", "content_sha256",
                    "policy_config", "action_key", "normalizer_keys")


class DPPOCollector(Actor):
    """Training episodes of the fine-tuned policy on N lockstep environments: per episode, the features, denoising
    chains and summed rewards of its decisions and whether it terminated.
    `first_episode` is the run's index of the loop's episode 0 (for the test stall hook, "EPISODE:STEP")."""

    def __init__(self, agent: DPPOAgent, n_slots: int, first_episode: int, stall: tuple[int, int] | None = None):
        self.agent, self.np = agent, agent.np
        self.hist = ObsHistory(self.np.obs_keys, self.np.n_obs_steps, n_slots)
        self.queue = ChunkQueue(self.np.n_action_steps, n_slots)
        self.first_episode, self.stall = first_episode, stall
        self.open: dict[int, dict] = {}
        self.episodes: dict[int, dict] = {}

    def start(self, slot: int, result: EpisodeResult, obs: dict, env) -> None:
        self.hist.reset([slot])
        self.queue.reset([slot])
        self.open[slot] = self.episodes[result.episode] = {
            "index": self.first_episode + result.episode, "feats": [], "chains": [], "rewards": [], "length": 0,
            "terminal": False}

    def act(self, slots: list[int], obs: list[dict]) -> np.ndarray:
        for j, o in zip(slots, obs):
            self.hist.append(j, self.np.spec.step_obs(o))
        due = [slots[r] for r in self.queue.due(slots)]
        if due:
            feats = self.np.features(self.hist.stacked(due))  # (n, F)
            naction, chain = self.agent.sample(feats)
            raw = self.np.policy.normalizer.unnormalize(self.np.action_key, naction).cpu().numpy()
            for r, j in enumerate(due):
                self.queue.put(j, raw[r])
                rec = self.open[j]
                rec["feats"].append(feats[r])
                rec["chains"].append(chain[r])
                rec["rewards"].append(0.0)
        return self.queue.pop(slots)

    def observe(self, slot: int, step: Step, env) -> None:
        rec = self.open[slot]
        rec["rewards"][-1] += float(step.reward)  # a decision's reward: the plain sum over its chunk's steps
        rec["terminal"] |= step.terminated
        rec["length"] += 1
        if self.stall is not None and (rec["index"], rec["length"]) == self.stall:  # TEST_STALL_ENV, tests only
            stall_for_test()

    def end(self, slot: int, result: EpisodeResult, env) -> None:
        rec = self.open.pop(slot)
        rec["result"] = result


def iteration_batch(agent: DPPOAgent, episodes: list[dict]) -> dict[str, torch.Tensor]:
    """The PPO data of one iteration's episodes (DPPOCollector records, in episode order): feats (N, F), chain
    (N, k+1, Ta, Da), old_logp (N, k), values (N,), adv (N,), returns (N,) (GAE per episode, on rewards scaled by
    the running return std when reward_scale_running)."""
    cfg = agent.cfg
    feats = torch.stack([f for e in episodes for f in e["feats"]])
    chain = torch.stack([c for e in episodes for c in e["chains"]])
    with torch.no_grad():
        values = agent.value(feats).double().cpu().numpy()
        old_logp = agent.chain_logprob(feats, chain)
    rewards = [np.asarray(e["rewards"], np.float64) for e in episodes]
    if cfg.reward_scale_running:
        rewards = agent.reward_scaler.scale(rewards, cfg.gamma)
    adv, ret = [], []
    at = 0
    for e, r in zip(episodes, rewards):
        M = len(r)
        # An episode's end ends its return, a time limit too: the horizon is part of the task (nothing is earned
        # after it) and the observation does not hold the time, so V(final observation) would be an average over
        # episodes that go on. Bootstrapping from it made V chase its own extrapolation (the critic loss grew
        # 10x every 5 iterations on the fork task of tests/test_rl_algorithms.py).
        a, g = gae(r, values[at: at + M], 0.0, True, cfg.gamma, cfg.gae_lambda)
        adv.append(a)
        ret.append(g)
        at += M
    dev = agent.device
    as_t = lambda x: torch.as_tensor(np.concatenate(x), dtype=torch.float32, device=dev)  # noqa: E731
    return {"feats": feats.to(dev), "chain": chain.to(dev), "old_logp": old_logp,
            "values": torch.as_tensor(values, dtype=torch.float32, device=dev), "adv": as_t(adv),
            "returns": as_t(ret)}


def export_policy(ft: Finetuner) -> None:
    """The fine-tuned policy as an ordinary policy checkpoint, <out>/policy.safetensors (atomic): the pretrained
    checkpoint's metadata (its training settings, task) plus "finetune": what made it."""
    agent = ft.agent
    assert isinstance(agent, DPPOAgent)
    cfg = ft.cfg
    info = {k: v for k, v in getattr(ft.policy, "info", {}).items() if k not in _WRITTEN_BY_SAVE}
    info["finetune"] = {"algorithm": "dppo", "from_checkpoint": str(cfg.checkpoint), "from_sha256": ft.policy_sha256,
                        "task": cfg.task, "episodes_done": ft.episodes_done, "iterations": agent.iterations,
                        "updates": ft.updates, "seed": cfg.seed}
    save_policy(agent.policy, cfg.out / POLICY_FILE, info)


def dppo_iteration(ft: Finetuner, tasks: list, n: int, stall: tuple[int, int] | None = None) -> dict[str, float]:
    """One DPPO iteration of a Finetuner (algorithm "dppo"): its next `n` training episodes (seeds cfg.seed + i) on
    the environments `tasks` in lockstep, then the PPO update; recorded in the Finetuner (not yet saved). Returns
    the update's metrics. tasks: sim Tasks or anything run_episodes steps."""
    agent, cfg = ft.agent, ft.cfg
    if not isinstance(agent, DPPOAgent):
        raise ConfigError(f"dppo_iteration needs a Finetuner with algorithm 'dppo', this one runs {cfg.algorithm!r}")
    first = ft.episodes_done
    collector = DPPOCollector(agent, min(len(tasks), n), first, stall)
    results = run_episodes(tasks, collector, [cfg.seed + first + i for i in range(n)],
                           clip_actions=hasattr(tasks[0], "action_bounds"))
    eps = [collector.episodes[i] for i in range(n)]
    metrics = agent.ppo_update(iteration_batch(agent, eps), ft.rng)
    ft.record_iteration([{"success": bool(r.success), "return": round(r.ret, 6), "length": r.length,
                          "transitions": len(e["rewards"]), "safety_altered": r.safety_altered,
                          "wall_s": round(r.end_time - r.start_time, 3)} for r, e in zip(results, eps)], metrics)
    return metrics
