"""RL finetuning of a pretrained (Post)BC diffusion policy: the episode loop, its checkpoints, and the sim driver.

`Finetuner` is the loop as explicit steps, driven either by `run_finetune` (the sim) or by a ROS node (the on-robot
finetune manager) from its callbacks:

    ft = Finetuner(cfg)                      # or Finetuner(cfg, policy=...); resumes when cfg.resume
    ft.start_episode()
    while running:  a = ft.act(obs);  <execute a>;  ft.observe(reward, terminated, row)
    ft.end_episode(success)                  # commits the episode to the replay store (atomic), indexes it and
                                             # checkpoints: from here a stop never loses the episode
    ft.update()                              # gradient steps between episodes (none during warm-up)
    ft.save()                                # full checkpoint after the updates

`act` returns one action of the current chunk (receding horizon: a chunk of Ta is decoded from the agent's noise every
n_action_steps calls). Algorithms (`algorithm`): dsrl_sac / dsrl_na (rl/dsrl.py) and best_of_n (rl/best_of_n.py).

Checkpoint (`<out>/finetune_state.safetensors`, written atomically by tmp file + rename): agent networks, target
networks, optimizers, entropy temperature (all tensors, safetensors) + JSON metadata in the same file: the config,
counters, replay position (= committed store episodes), RNG states of python / numpy / torch, episode and evaluation
history, whether the last episode's updates are still owed, the run's wall time so far and the size of metrics.jsonl.
A checkpoint is taken at each episode's commit (its updates owed) and after its updates, so a stop of any kind costs
at most the episode running (never committed: discarded) or the gradient steps of the last committed episode (redone
from the checkpoint taken before them). Resume: the store is recovered (uncommitted steps of a killed episode
dropped), an episode committed after the checkpoint (a kill between the commit and its checkpoint) is dropped and so
are the metrics.jsonl rows written after it, the transition index is rebuilt from the store and every state is
restored; owed updates are run first. The run goes on exactly as if it had not been interrupted (same replay contents,
counters and random streams).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from postbc_core.data.paths import refuse_inside_store
from postbc_core.errors import CheckpointError, ConfigError, PostBCError
from postbc_core.rl.best_of_n import BestOfNAgent, BestOfNConfig
from postbc_core.rl.dsrl import DSRLAgent, DSRLConfig, Mode
from postbc_core.rl.noise_env import NoisePolicy
from postbc_core.rl.replay import ReplayBuffer, trim_store
from postbc_core.rl.state import flatten, forked_torch_rng, rng_state, set_rng_state, unflatten
from postbc_core.runlog import METRICS_FILE, RunLogger
from postbc_core.stats import paired_comparison, wilson_interval

log = logging.getLogger(__name__)

STATE_FILE = "finetune_state.safetensors"
REPLAY_DIR = "replay.zarr"
ALGORITHMS = ("dsrl_sac", "dsrl_na", "best_of_n")
EVAL_SEED = 1_000_000  # evaluation episodes use seeds EVAL_SEED + i: a fixed set, disjoint from training seeds
# Test hook (the resume and shutdown tests): "EPISODE:STEP" makes run_finetune flush that training episode's steps to
# disk, print "stalled" and sleep at that step, so a test can kill it mid-episode; "EPISODE:uK" makes Finetuner.update
# do the same before gradient step K of that episode's updates (until killed, interrupted or its stop() is true).
# Never set outside tests.
TEST_STALL_ENV = "POSTBC_FINETUNE_TEST_STALL"


@dataclass
class FinetuneConfig:
    """RL finetuning of a pretrained diffusion policy checkpoint (DSRL-SAC, DSRL-NA or Best-of-N)."""

    checkpoint: Path
    """Pretrained policy checkpoint (.safetensors or the `postbc train` run directory); stays frozen."""
    task: str = "lift_cube"
    """Task name: a sim task for `postbc finetune` (postbc_core.sim.registry.list_tasks()); on the robot, a label."""
    algorithm: Literal["dsrl_sac", "dsrl_na", "best_of_n"] = "dsrl_sac"
    """dsrl_sac: SAC over the policy's noise; dsrl_na: DSRL with noise aliasing; best_of_n: IQL critic + best of N."""
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
    reward_type: Literal["sparse", "dense"] = "sparse"
    """Sim reward: sparse (1 on success) or the task's dense shaping."""
    reward_from_label: bool = False
    """The robot case: no reward signal; the final step's reward is 1 and terminal when the episode is labelled a
    success (end_episode(success=True)), 0 otherwise."""
    dsrl: DSRLConfig = field(default_factory=DSRLConfig)
    """DSRL hyperparameters (dsrl_sac, dsrl_na)."""
    bon: BestOfNConfig = field(default_factory=BestOfNConfig)
    """Best-of-N / IQL hyperparameters (best_of_n)."""

    def __post_init__(self):
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
        if isinstance(self.dsrl, dict):
            self.dsrl = DSRLConfig(**self.dsrl)
        if isinstance(self.bon, dict):
            self.bon = BestOfNConfig(**self.bon)
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
        return cls(**{**d, "dsrl": DSRLConfig(**d["dsrl"]), "bon": BestOfNConfig(**d["bon"])})

    @property
    def warmup_episodes(self) -> int:
        return self.bon.rollouts if self.algorithm == "best_of_n" else self.dsrl.warmup_episodes


# Settings a resumed run must share with the run that wrote the checkpoint (the rest may change, e.g. --episodes).
RESUME_FIXED = ("checkpoint", "task", "algorithm", "seed", "n_action_steps", "reward_type", "reward_from_label",
                "dsrl", "bon", "max_steps")


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


class Finetuner:
    """The finetuning loop as explicit steps (see the module docstring). One episode at a time."""

    def __init__(self, cfg: FinetuneConfig, policy=None, *, read_only: bool = False,
                 names: SettingNames | None = None):
        """read_only (with cfg.resume): load the run's last saved agent to act with, for evaluation, while the run
        may still be going: nothing on disk is touched, no episode is recorded, update() and save() refuse.
        names: how the caller's user sets the config (for error messages); default `postbc finetune`'s flags."""
        from postbc_core.policies.checkpoint import load_policy, resolve_device, tensors_sha256

        self.cfg = cfg
        self.names = names = names or SettingNames()
        self.device = resolve_device(cfg.device)
        self.read_only = read_only
        state_path = cfg.out / STATE_FILE
        out = names.name("out")
        if read_only and not cfg.resume:
            raise ConfigError("read_only opens an existing run: set resume=True and point out at the run directory")
        if cfg.out.exists() and not cfg.out.is_dir():
            raise ConfigError(f"{out} {cfg.out} is a file, not a directory: choose another {out}")
        if not cfg.resume and state_path.exists():
            raise ConfigError(f"{cfg.out} already holds a finetuning run; {self._resume_hint()} to continue it, or "
                              f"choose another {out}")
        if not cfg.resume and _has_episodes(cfg.out / REPLAY_DIR):  # a resume could not tell where they stand
            raise ConfigError(f"{cfg.out} holds finetuning episodes ({REPLAY_DIR}) but no {STATE_FILE} to resume "
                              f"from: move them away, or choose another {out}")
        if not cfg.resume:
            _require_empty_run_dir(cfg.out, out)
        if not read_only:
            refuse_inside_store(cfg.out, what=out)
        if cfg.resume and not state_path.exists():
            raise CheckpointError(f"--resume: no finetuning checkpoint {state_path}; start the run without --resume "
                                  "(or point --out at the run directory)")
        self.policy = load_policy(cfg.checkpoint, device=self.device) if policy is None else policy.to(self.device)
        # What the run starts from, by content: a resume refuses other weights even at the same path.
        self.policy_sha256 = tensors_sha256(self.policy.state_dict())
        self.noise_policy = NoisePolicy(self.policy, cfg.n_action_steps)
        random.seed(cfg.seed)  # nothing here draws from it, but libraries might: keep runs reproducible
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        if cfg.algorithm == "best_of_n":
            self.agent = BestOfNAgent(cfg.bon, self.noise_policy, self.device)
            self.batch_size = cfg.bon.batch_size
        else:
            self.agent = DSRLAgent(cfg.dsrl, self.noise_policy, self.device)
            self.batch_size = cfg.dsrl.batch_size
        # counters (all saved)
        self.episodes_done = 0
        self.env_steps = 0
        self.decisions = 0
        self.updates = 0
        self.pending_transitions = 0  # indexed by end_episode, not yet consumed by update()
        self.update_pending = False  # the last committed episode's updates are not done yet
        self.history: list[dict] = []  # one entry per training episode
        self.evals: list[dict] = []
        self._wall_before = 0.0  # wall time of the earlier sessions of the run, up to their last checkpoint
        self._t0 = time.monotonic()
        self._mid_update = False  # an update was cut short: the agent is between two checkpointed states
        self._saved: dict = {}  # what the last checkpoint on disk holds (episodes_done, update_pending)
        saved = None
        if cfg.resume:
            saved = self._read_state(state_path)
            if not read_only:
                done = int(saved["counters"]["episodes_done"])
                if cfg.episodes < done:  # refused before anything on disk changes
                    raise ConfigError(f"{names.assign('episodes', cfg.episodes)} is below the {done} episodes the "
                                      f"run in {cfg.out} has already done (the budget counts the whole run): give "
                                      f"{names.assign('episodes', done + 1)} or more to continue it")
                trim_store(cfg.out / REPLAY_DIR, saved["counters"]["replay_episodes"])
        self.replay: ReplayBuffer | None = None
        if not read_only:
            cfg.out.mkdir(parents=True, exist_ok=True)
            self.replay = ReplayBuffer(cfg.out / REPLAY_DIR, self.noise_policy, task=cfg.task, device=self.device)
        self._episode: dict | None = None
        self._logger = None
        if saved is not None:
            self._restore(saved)
        else:
            self.save()  # episode-0 state, so a run killed during its first episode can resume too

    # -- episode steps -----------------------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        """How the next training episode acts: the pretrained policy during warm-up, then the learned agent."""
        return "pretrained" if self.episodes_done < self.cfg.warmup_episodes else "explore"

    def start_episode(self, *, record: bool = True, mode: Mode | None = None) -> None:
        """Begin an episode. record=False (evaluation): nothing is written or learned. mode None = `self.mode`."""
        if self._episode is not None:
            raise PostBCError("an episode is already running: call end_episode() or discard_episode() first")
        if record:
            self._require_writable("record an episode")
            self.replay.begin_episode()
        self._episode = {"record": record, "mode": mode or self.mode, "history": deque(
            maxlen=self.noise_policy.n_obs_steps), "queue": deque(), "pending": None, "held_row": None,
            "return": 0.0, "length": 0, "t0": time.time()}

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Current observation (raw, the task's / robot's keys) -> the action (Da,) to execute now, in the policy's
        units (joint targets + gripper for cmd_joint_pos policies). Decodes a new chunk when the last is used up."""
        ep = self._require_episode()
        npol = self.noise_policy
        step = npol.step_obs(obs)
        ep["history"].append(step)
        noise = None
        if not ep["queue"]:
            feats = npol.features(npol.window(ep["history"]))
            if ep["mode"] == "policy":  # the frozen policy as deployed: w ~ N(0, I), no agent involved
                w, chunk = torch.randn(feats.shape[0], npol.noise_dim, device=feats.device), None
            else:
                w, chunk = self.agent.choose(feats, ep["mode"])
            if chunk is None:
                chunk = npol.decode(feats, w)[1]
            ep["queue"].extend(chunk[0, : npol.n_action_steps].cpu().numpy().astype(np.float32))
            noise = w.reshape(-1).cpu().numpy().astype(np.float32)
            if ep["record"]:
                self.decisions += 1
        a = ep["queue"].popleft()
        ep["pending"] = {"obs": step, "policy_action": a, "noise": noise}
        return a.copy()

    def observe(self, reward: float, terminated: bool, row: dict[str, np.ndarray] | None = None) -> None:
        """After executing the action `act` returned: its reward and whether the episode terminated there.
        row: the store row for this step (observation before the action + executed command keys, e.g. from
        sim.evaluation.record_row); default: the policy's observation keys + the action under the policy's key."""
        ep = self._require_episode()
        p = ep["pending"]
        if p is None:
            raise PostBCError("observe() without a preceding act()")
        ep["pending"] = None
        ep["return"] += float(reward)
        ep["length"] += 1
        if not ep["record"]:
            return
        self.env_steps += 1
        r = dict(p["obs"], **{self.noise_policy.action_key: p["policy_action"]}) if row is None else dict(row)
        d = self.noise_policy.noise_dim
        r.update(policy_action=p["policy_action"],
                 noise=p["noise"] if p["noise"] is not None else np.zeros(d, np.float32),
                 decision=np.bool_(p["noise"] is not None), reward=np.float32(reward), done=np.bool_(terminated))
        # hold one row back so end_episode can still set the final reward from an operator's label
        if ep["held_row"] is not None:
            self.replay.append(ep["held_row"])
        ep["held_row"] = r

    def end_episode(self, success: bool | None) -> dict:
        """Close the episode: commit it (with its success label) and index its transitions. Returns its summary."""
        ep = self._require_episode()
        summary = {"episode": self.episodes_done if ep["record"] else None, "success": success,
                   "return": round(ep["return"], 6), "length": ep["length"], "mode": ep["mode"]}
        if not ep["record"]:
            self._episode = None
            return summary
        if ep["held_row"] is None:
            self.discard_episode()
            raise PostBCError("end_episode() on an episode without steps; nothing was recorded (discarded)")
        last = ep["held_row"]
        if self.cfg.reward_from_label:
            last["reward"] = np.float32(1.0 if success else 0.0)
            last["done"] = np.bool_(bool(success))
            summary["return"] = float(last["reward"])
        self.replay.append(last)
        n_new = self.replay.commit(success)
        self._episode = None
        self.pending_transitions += n_new
        self.episodes_done += 1
        summary.update(transitions=n_new, wall_s=round(time.time() - ep["t0"], 3))
        self.history.append(summary)
        self._log("episode", summary["episode"], {"success": float(bool(success)), "return": summary["return"],
                                                  "length": summary["length"], "transitions": n_new})
        # Checkpoint the commit with its updates owed: a stop during the updates (many seconds at a high UTD) then
        # keeps the episode and redoes the updates on resume, from exactly this state.
        self.update_pending = True
        self.save()
        return summary

    def discard_episode(self) -> None:
        """Abandon the running episode (operator abort, e-stop): nothing of it is kept."""
        if self._episode is not None and self._episode["record"]:
            self.replay.discard()
        self._episode = None

    @property
    def updates_owed(self) -> int:
        """Gradient steps the next update() runs."""
        return self.agent.updates_due(self.episodes_done, self.pending_transitions)

    def update(self, stop: Callable[[], bool] | None = None) -> dict:
        """Gradient steps owed for the episodes ended since the last call (see the agents' `updates_due`).
        stop: checked before every step; when it returns True the remaining steps are skipped (a node shutting
        down) and {"updates": steps done, "interrupted": True} is returned: this Finetuner then refuses to save or
        update again, the checkpoint taken at the episode's commit is the resume point (it redoes the updates)."""
        self._require_writable("update the agent")
        if self._episode is not None:
            raise PostBCError("update() during an episode: call it between end_episode() and start_episode()")
        n = self.updates_owed
        if n == 0 or len(self.replay) == 0:
            self.pending_transitions, self.update_pending = 0, False
            return {"updates": 0}
        stall = _test_stall_update(self.episodes_done - 1)
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        self._mid_update = True  # until the last step (a KeyboardInterrupt may end it anywhere)
        for i in range(n):
            if i == stall:
                _stall(stop)
            if stop is not None and stop():
                return {"updates": i, "interrupted": True}
            for k, v in self.agent.update(self.replay.sample(self.batch_size, self.rng)).items():
                sums[k] = sums.get(k, 0.0) + v
        self._mid_update = False
        self.pending_transitions, self.update_pending = 0, False
        dt = time.perf_counter() - t0
        self.updates += n
        metrics = {k: v / n for k, v in sums.items()}
        metrics.update(updates=n, updates_per_s=n / max(dt, 1e-9), total_updates=self.updates,
                       replay_transitions=len(self.replay))
        self._log("train", self.episodes_done, metrics)
        return metrics

    def _require_writable(self, what: str) -> None:
        if self.replay is None:
            raise PostBCError(f"cannot {what}: this Finetuner was opened read_only (for evaluation); open the run "
                              "with --resume to continue it")
        if self._mid_update:
            raise PostBCError(f"cannot {what}: an update was cut short, the agent is part-way between two "
                              f"checkpoints; {self._resume_hint()} to redo the updates from the last checkpoint")

    def _resume_hint(self) -> str:
        return ("pass " if self.names.params is None else "restart with ") + self.names.assign("resume", True)

    @property
    def wall_time_s(self) -> float:
        """Wall time of the run: every session's, up to its last checkpoint, and this one's so far."""
        return self._wall_before + time.monotonic() - self._t0

    def _progress(self) -> dict:
        """What a checkpoint of the current state records for `stop_note` (kept as `_saved`, with the run's wall time
        at that checkpoint, once it is on disk)."""
        return {"episodes_done": self.episodes_done, "update_pending": self.update_pending,
                "updates_owed": self.updates_owed if self.update_pending else 0}

    def stop_note(self) -> str:
        """What stopping the run now costs, from what the last checkpoint on disk holds (said at Ctrl-C)."""
        resume = self._resume_hint()
        saved_eps, owed = self._saved.get("episodes_done", 0), self._saved.get("update_pending", False)
        if self._episode is not None and self._episode["record"]:
            lost = (f"episode {self.episodes_done} ({self._episode['length']} steps) is discarded (not committed; "
                    f"{resume} runs it again)")
        elif self.episodes_done > saved_eps:  # committed, its checkpoint not written (a failed save)
            return (f"episode {saved_eps} was committed after the last checkpoint: {resume} drops it and runs it "
                    "again")
        else:
            lost = ""
        if owed:
            kept = (f"episode {saved_eps - 1} is committed and kept; its {self._saved['updates_owed']} updates are "
                    f"redone when you {resume}")
        else:
            kept = f"the checkpoint holds all {saved_eps} committed episodes and their updates"
        return f"{kept}; {lost}" if lost else kept

    def _require_episode(self) -> dict:
        if self._episode is None:
            raise PostBCError("no episode running: call start_episode() first")
        return self._episode

    # -- logging -----------------------------------------------------------------------------------------------
    def _log(self, tag: str, step: int, values: dict) -> None:
        if self._logger is None:
            self._logger = RunLogger(self.cfg.out, progress=False)
        self._logger.scalars(tag, step, {k: float(v) for k, v in values.items()})

    def log_eval(self, result: dict) -> None:
        self.evals.append(result)
        self._log("eval", result["after_episodes"], {k: result[k] for k in ("success_rate", "ci_low", "ci_high",
                                                                            "mean_return")})

    # -- checkpoints -------------------------------------------------------------------------------------------
    def counters(self) -> dict:
        return {"episodes_done": self.episodes_done, "env_steps": self.env_steps, "decisions": self.decisions,
                "updates": self.updates, "pending_transitions": self.pending_transitions,
                "replay_episodes": self.replay.n_episodes, "replay_transitions": len(self.replay),
                "replay_steps": self.replay.store.n_steps}

    def save(self) -> Path:
        """Full checkpoint between episodes (atomic; see the module docstring)."""
        from postbc_core.policies.checkpoint import save_checkpoint

        self._require_writable("save a checkpoint")
        if self._episode is not None:
            raise PostBCError("save() during an episode: checkpoints are taken between episodes")
        tensors, skeleton = flatten({"agent": self.agent.training_state(), "rng": rng_state(self.rng)})
        metrics = self.cfg.out / METRICS_FILE
        saved = {**self._progress(), "wall_time_s": round(self.wall_time_s, 3)}
        info = {"config": self.cfg.to_dict(), "counters": self.counters(), "state": skeleton,
                "history": self.history, "evals": self.evals, "policy_sha256": self.policy_sha256,
                "update_pending": self.update_pending, "wall_time_s": saved["wall_time_s"],
                "metrics_bytes": metrics.stat().st_size if metrics.exists() else 0}
        path = save_checkpoint(self.cfg.out / STATE_FILE, "finetune", tensors, {"finetune": json.dumps(info)})
        self._saved = saved
        return path

    def _read_state(self, path: Path) -> dict:
        from postbc_core.policies.checkpoint import read_checkpoint

        tensors, info = read_checkpoint(path, "finetune", STATE_FILE)
        saved = json.loads(info["finetune"])
        old, new = saved["config"], json.loads(json.dumps(self.cfg.to_dict()))  # tuples -> lists, as saved
        diff = []
        unused = "dsrl" if self.cfg.algorithm == "best_of_n" else "bon"  # the other algorithm's settings
        for k in RESUME_FIXED:
            if k == unused and old.get("algorithm") == new.get("algorithm"):
                continue
            a, b = old.get(k), new.get(k)
            if k == "checkpoint" and Path(a).resolve() == Path(b).resolve():
                continue  # the same file, spelled relative or absolute
            if isinstance(a, dict) and isinstance(b, dict):  # (dsrl.variant follows algorithm: compared there)
                diff += [self._changed(f"{k}.{f}", a.get(f), b.get(f)) for f in sorted(set(a) | set(b))
                         if a.get(f) != b.get(f) and f"{k}.{f}" != "dsrl.variant"]
            elif a != b:
                diff.append(self._changed(k, a, b))
        if diff:
            names = self.names
            free = [n for n in (names.name("episodes"), names.name("eval_every"), names.name("eval_episodes"),
                                names.name("device")) if n]
            raise ConfigError(f"{names.name('resume')}: {', '.join(diff)}; resume with the run's original settings "
                              f"(only {', '.join(free[:-1])} and {free[-1]} may change) or start a new run with "
                              f"another {names.name('out')}")
        recorded = saved.get("policy_sha256")
        if recorded is None:  # a run started before runs recorded their policy's hash
            log.warning("%s was started before finetuning runs recorded their pretrained policy's hash: cannot check "
                        "that %s still holds the same weights", self.cfg.out, self.cfg.checkpoint)
        elif recorded != self.policy_sha256:
            raise CheckpointError(f"--resume: {self.cfg.checkpoint} now holds other weights than the run in "
                                  f"{self.cfg.out} started from (started from sha256 {recorded}, now "
                                  f"{self.policy_sha256}); restore the original checkpoint, or start a new run "
                                  "with another --out")
        saved["tensors"] = tensors
        return saved

    def _changed(self, key: str, was, now) -> str:
        """One changed setting of a resume, as the user sets it (or saying the user cannot)."""
        name, v = self.names.name(key), self.names.value
        if name is None:  # a run started by `postbc finetune` with settings this user (a ROS node) does not set
            return f"{key} was {was!r}, here {now!r} (not a setting here: continue that run with postbc finetune)"
        return f"{name} was {v(key, was)!r}, now {v(key, now)!r}"

    def _restore(self, saved: dict) -> None:
        c = saved["counters"]
        r = self.replay
        if r is not None and (r.n_episodes != c["replay_episodes"] or len(r) != c["replay_transitions"]):
            raise CheckpointError(f"{self.cfg.out}: the replay store has {self.replay.n_episodes} episodes / "
                                  f"{len(self.replay)} transitions, the checkpoint expects {c['replay_episodes']} / "
                                  f"{c['replay_transitions']}; the store was modified outside postbc finetune")
        state = unflatten(saved["state"], saved["tensors"])
        try:
            self.agent.load_training_state(state["agent"])
        except (RuntimeError, KeyError, ValueError) as e:  # torch: size mismatch / missing keys
            raise CheckpointError(f"--resume: the agent saved in {self.cfg.out / STATE_FILE} does not fit the one "
                                  f"built from {self.cfg.checkpoint} ({str(e).splitlines()[0][:300]}); resume with "
                                  "the checkpoint the run started from, or start a new run with another --out"
                                  ) from None
        set_rng_state(state["rng"], self.rng)
        for k in ("episodes_done", "env_steps", "decisions", "updates", "pending_transitions"):
            setattr(self, k, int(c[k]))
        self.history, self.evals = list(saved["history"]), list(saved["evals"])
        self.update_pending = bool(saved.get("update_pending", False))
        self._wall_before = float(saved.get("wall_time_s", 0.0))
        self._saved = {**self._progress(), "wall_time_s": self._wall_before}
        if self.read_only:
            log.info("opened %s after episode %d (%d updates)", self.cfg.out, self.episodes_done, self.updates)
            return
        if "metrics_bytes" in saved:
            _truncate_metrics(self.cfg.out / METRICS_FILE, int(saved["metrics_bytes"]))
        log.info("resumed %s after episode %d (%d updates, %d transitions)", self.cfg.out, self.episodes_done,
                 self.updates, c["replay_transitions"])
        if self.update_pending:
            log.warning("episode %d was committed and checkpointed before its %d updates finished: they are redone "
                        "now", self.episodes_done - 1, self.updates_owed)

    def close(self) -> None:
        self.discard_episode()
        if self.replay is not None:
            self.replay.close()
        if self._logger is not None:
            self._logger.close()
            self._logger = None


def _require_empty_run_dir(out: Path, flag: str) -> None:
    """A new run writes only into a new or empty directory (nothing of another run or command gets mixed in); an
    empty replay store of our own (a run stopped before its first checkpoint) is no content."""
    if not out.is_dir():
        return
    ours = {REPLAY_DIR, REPLAY_DIR + ".lock"}
    found = sorted(p.name for p in out.iterdir())
    if set(found) <= ours:
        return
    what = "a `postbc train` run" if (out / "train_config.json").exists() else "other files"
    shown = ", ".join(found[:6]) + (f", ... ({len(found)} entries)" if len(found) > 6 else "")
    raise ConfigError(f"{flag} {out} holds {what} ({shown}), not a finetuning run: a new finetuning run needs a new "
                      f"or empty directory; choose another {flag}")


def _truncate_metrics(path: Path, size: int) -> None:
    """metrics.jsonl back to its size at the checkpoint: the rows after it belong to work that resume redoes."""
    if not path.exists() or path.stat().st_size <= size:
        return
    with open(path, "r+b") as f:
        f.seek(size)
        rows = f.read().count(b"\n")
        f.truncate(size)
    log.warning("%s: dropped %d row(s) written after the last checkpoint (the resumed run writes them again)", path,
                rows)


def _test_stall_update(episode: int) -> int | None:
    """TEST_STALL_ENV "EPISODE:uK": K when `episode` is EPISODE."""
    spec = os.environ.get(TEST_STALL_ENV, "")
    ep, _, at = spec.partition(":")
    return int(at[1:]) if at.startswith("u") and int(ep) == episode else None


def _has_episodes(store_path: Path) -> bool:
    from postbc_core.data.store import EpisodeStore

    if not store_path.exists():
        return False
    with EpisodeStore.open(store_path, "r") as store:
        return store.n_episodes > 0


# ------------------------------------------------------------------------------------------------------------------
# The sim driver
def run_episode(ft: Finetuner, task, seed: int, *, record: bool = True, mode: Mode | None = None,
                stall_at: int | None = None) -> dict:
    """One episode of `task` (a sim Task, or anything with reset(seed) / step(action) -> (obs, r, term, trunc, info)
    and optionally action_bounds()) driven through the Finetuner's steps. Actions are clipped to the task's bounds;
    the store row records the executed command (cmd_joint_pos and cmd_ee_delta for sim tasks)."""
    from postbc_core.sim.base import Task
    # Evaluation's row builder: finetuning and evaluation store the same keys (the control package's, once it exists)
    from postbc_core.sim.evaluation import record_row

    obs = task.reset(seed=seed)
    bounds = task.action_bounds() if hasattr(task, "action_bounds") else None
    ft.start_episode(record=record, mode=mode)
    success, altered = False, 0
    try:
        while True:
            a = ft.act(obs)
            a_exec = a if bounds is None else np.clip(a, *bounds).astype(np.float32)
            prev = obs
            obs, reward, terminated, truncated, info = task.step(a_exec)
            success |= bool(info.get("success", False))
            altered += bool(info.get("safety_altered", False))
            row = record_row(prev, a_exec, task, info) if (record and isinstance(task, Task)) else None
            ft.observe(reward, terminated, row)
            if stall_at is not None and ft._episode["length"] == stall_at:
                if ft._episode["held_row"] is not None:  # the open episode's steps on disk, uncommitted
                    ft.replay.append(ft._episode["held_row"])
                    ft._episode["held_row"] = None
                ft.replay.flush()
                _stall()
            if terminated or truncated:
                break
    except BaseException:
        ft.discard_episode()
        raise
    return {**ft.end_episode(success), "safety_altered": altered}


def _stall(stop: Callable[[], bool] | None = None) -> None:
    """Test hook (TEST_STALL_ENV): say so, and wait to be killed, interrupted or stopped."""
    print("stalled", flush=True)
    while not (stop is not None and stop()):
        time.sleep(0.05)


def evaluate(ft: Finetuner, task, episodes: int, *, mode: Mode = "eval", seed: int = EVAL_SEED) -> dict:
    """Success rate of the current agent (or mode="policy": the frozen pretrained policy) over `episodes` unrecorded
    episodes with seeds seed..seed+episodes-1, with a Wilson 95% interval. Episode i also draws its noise (the
    pretrained policy's w ~ N(0, I), Best-of-N's candidates) from torch seeded with seed + i, inside fork_rng: an
    evaluation repeats exactly whatever the training's random state, and leaves that state as it was."""
    res = []
    for i in range(episodes):
        with forked_torch_rng(ft.device, seed + i):
            res.append(run_episode(ft, task, seed + i, record=False, mode=mode))
    k = sum(bool(r["success"]) for r in res)
    lo, hi = wilson_interval(k, episodes)
    return {"after_episodes": ft.episodes_done, "mode": mode, "episodes": episodes, "n_success": k,
            "success_rate": k / episodes, "ci_low": lo, "ci_high": hi,
            "mean_return": float(np.mean([r["return"] for r in res])),
            "mean_length": float(np.mean([r["length"] for r in res])),
            "successes": [bool(r["success"]) for r in res]}


def evaluate_run(run: Path, episodes: int = 40, seed: int = EVAL_SEED, device: str = "cpu",
                 best_of: tuple[int, ...] = ()) -> dict:
    """Evaluates a finetuning run's last saved agent (`postbc finetune` or the finetune manager: the same state file)
    against its frozen pretrained policy on the same `episodes` sim episodes (seeds seed..seed+episodes-1), greedy
    (the actor's mean noise / best of N). Reads the run's settings from its state and leaves the run as it is (it may
    still be going) and the caller's torch random state. Writes and returns <run>/agent_eval.json: {"pretrained":
    evaluate(), "agent": evaluate(), "paired": paired_comparison(), "episodes_done", "updates", ...}.
    best_of (Best-of-N runs only): also evaluate the same critic choosing among N candidates for each N given (the
    paper's WidowX table: N = 4 and 16), as res["best_of"][str(N)] = {"eval": evaluate(), "paired": vs pretrained}."""
    from postbc_core.policies.checkpoint import load_policy, read_checkpoint, resolve_device

    run = Path(run)
    if episodes < 1:
        raise ConfigError(f"--episodes {episodes}: evaluate on at least 1 episode (--episodes >= 1)")
    if not (run / STATE_FILE).exists():
        raise ConfigError(f"{run} has no {STATE_FILE}: give the --out of `postbc finetune` or the finetune "
                          "manager's out directory, after at least one completed episode")
    _, info = read_checkpoint(run / STATE_FILE, "finetune", STATE_FILE)
    saved = json.loads(info["finetune"])["config"]
    cfg = FinetuneConfig.from_dict({**saved, "out": str(run), "resume": True, "eval_episodes": 0, "device": device})
    if not cfg.checkpoint.is_absolute() and not cfg.checkpoint.exists():
        raise ConfigError(f"{run} was finetuned from the relative checkpoint path {str(cfg.checkpoint)!r}, which "
                          f"does not exist from {Path.cwd()}: run finetune-eval from the directory the run was "
                          "started in")
    # Finetuner seeds and restores the process's random states (a resume does): keep the caller's.
    with forked_torch_rng(resolve_device(device)):
        policy = load_policy(cfg.checkpoint, device=device)
        task = make_task(cfg, policy)
        ft = Finetuner(cfg, policy=policy, read_only=True)
        try:
            res = {"run": str(run), "checkpoint": str(cfg.checkpoint), "task": cfg.task, "algorithm": cfg.algorithm,
                   "episodes_done": ft.episodes_done, "updates": ft.updates,
                   "train_successes": sum(bool(h["success"]) for h in ft.history), "eval_seed": seed}
            for key, mode in (("pretrained", "policy"), ("agent", "eval")):
                res[key] = evaluate(ft, task, episodes, mode=mode, seed=seed)
                log.info("%s: %d/%d", key, res[key]["n_success"], episodes)
            res["paired"] = paired_comparison(res["pretrained"]["successes"], res["agent"]["successes"])
            if best_of:
                if cfg.algorithm != "best_of_n":
                    raise ConfigError(f"best_of={best_of}: {run} was finetuned with {cfg.algorithm}, not best_of_n")
                res["best_of"] = {}
                for n in best_of:
                    if int(n) < 1:
                        raise ConfigError(f"best_of: N={n} must be >= 1")
                    if int(n) == cfg.bon.n_candidates:  # the run's own N: that is the "agent" evaluation
                        e = res["agent"]
                    else:
                        ft.agent.cfg = dataclasses.replace(cfg.bon, n_candidates=int(n))
                        e = evaluate(ft, task, episodes, mode="eval", seed=seed)
                    res["best_of"][str(n)] = {"eval": e, "paired": paired_comparison(res["pretrained"]["successes"],
                                                                                     e["successes"])}
                    log.info("best of %d: %d/%d", n, e["n_success"], episodes)
        finally:
            ft.close()
            task.close()
    (run / "agent_eval.json").write_text(json.dumps(res, indent=2))
    return res


def make_task(cfg: FinetuneConfig, policy):
    """The sim task for a policy: its cameras, its action mode, the config's time limit and reward type."""
    from postbc_core.control.spec import action_mode_for
    from postbc_core.sim.registry import make
    from postbc_core.sim.task_fit import check_checkpoint_task, check_policy_fits_task, task_overrides_for_policy

    # Finetuning in another task than the demos' is a legitimate transfer experiment: said, not refused.
    check_checkpoint_task(getattr(policy, "info", {}), cfg.task, cfg.checkpoint, allow_other_task=True)

    shapes = {k: tuple(v) for k, v in policy.config.obs_shapes.items()}
    overrides = {**task_overrides_for_policy(shapes), "action_mode": action_mode_for(policy.action_key),
                 "reward_type": cfg.reward_type}
    if cfg.max_steps is not None:
        overrides["max_steps"] = int(cfg.max_steps)
    task = make(cfg.task, **overrides)
    check_policy_fits_task(shapes, task)
    lo, _ = task.action_bounds()
    if policy.config.action_dim != lo.shape[0]:
        raise ConfigError(f"the checkpoint's action has {policy.config.action_dim} dims per step; task {cfg.task!r} "
                          f"takes {lo.shape[0]}: finetune a policy trained on this robot's actions")
    return task


def run_finetune(cfg: FinetuneConfig) -> dict:
    """Finetune in the sim until `cfg.episodes` training episodes are done (resuming if asked). Evaluates the
    pretrained policy before the first episode, then the agent (greedy: the actor's mean noise / best of N) every
    `eval_every` episodes and at the end. Prints one line per episode; writes <out>/summary.json and returns it:
    per-episode training success, evaluations with Wilson 95% intervals, counters (updates, steps), wall time."""
    from postbc_core.policies.checkpoint import load_policy
    from postbc_core.sim.registry import list_tasks

    if cfg.task not in list_tasks():
        raise ConfigError(f"unknown sim task {cfg.task!r}; available: {', '.join(list_tasks())}")
    refuse_inside_store(cfg.out, what="--out")  # before loading anything (the Finetuner checks it for the manager)
    policy = load_policy(cfg.checkpoint, device=cfg.device)
    task = make_task(cfg, policy)
    ft = Finetuner(cfg, policy=policy)
    stall = os.environ.get(TEST_STALL_ENV, "")
    stall_ep, _, stall_step = stall.partition(":")
    stall_ep, stall_step = (int(stall_ep), int(stall_step)) if stall_step.isdigit() else (None, None)

    def after_episode(ep: dict, note: str = "") -> None:
        """An episode is committed (and checkpointed): its updates, the evaluation due, the next checkpoint."""
        upd = ft.update()
        altered = f" ({ep['safety_altered']} altered by the safety layer)" if "safety_altered" in ep else ""
        print(f"episode {ep['episode']} ({ep['mode']}): {'success' if ep['success'] else 'failure'} in "
              f"{ep['length']} steps{altered}{note}, return {ep['return']:.3f}, {upd['updates']} updates", flush=True)
        due = cfg.eval_every and ft.episodes_done % cfg.eval_every == 0
        if cfg.eval_episodes and (due or ft.episodes_done == cfg.episodes):
            ft.log_eval(evaluate(ft, task, cfg.eval_episodes))
            _print_eval(ft.evals[-1])
        ft.save()

    try:
        if ft.update_pending:  # committed before an interruption that cut its updates short
            after_episode(ft.history[-1], " (committed before the interruption)")
        elif cfg.resume and ft.episodes_done >= cfg.episodes:
            log.info("%s has done its %d episodes: nothing to run (a larger --episodes continues it)", cfg.out,
                     ft.episodes_done)
        if cfg.eval_episodes and not ft.evals:
            ft.log_eval(evaluate(ft, task, cfg.eval_episodes, mode="policy"))
            _print_eval(ft.evals[-1])
        while ft.episodes_done < cfg.episodes:
            i = ft.episodes_done
            after_episode(run_episode(ft, task, cfg.seed + i, stall_at=stall_step if i == stall_ep else None))
        succ = [bool(h["success"]) for h in ft.history]
        k = sum(succ)
        summary = {"task": cfg.task, "algorithm": cfg.algorithm, "checkpoint": str(cfg.checkpoint),
                   "episodes": ft.episodes_done, "train_success": succ, "train_success_rate": k / len(succ),
                   "train_success_ci95": list(wilson_interval(k, len(succ))), "history": ft.history, "evals": ft.evals,
                   # the run's wall time at its last checkpoint: what a resume continues from, so a resumed run's
                   # summary never reports less than an earlier session's
                   "counters": ft.counters(), "wall_time_s": ft._saved.get("wall_time_s", round(ft.wall_time_s, 3)),
                   "replay": str(cfg.out / REPLAY_DIR), "state": str(cfg.out / STATE_FILE)}
        (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    except KeyboardInterrupt:
        log.warning("stopping now: %s", ft.stop_note())
        raise
    finally:
        ft.close()
        task.close()


def _print_eval(e: dict) -> None:
    print(f"eval after {e['after_episodes']} episodes ({e['mode']}): success {e['n_success']}/{e['episodes']} = "
          f"{e['success_rate']:.0%} (Wilson 95% {e['ci_low']:.0%}..{e['ci_high']:.0%})", file=sys.stdout, flush=True)

