"""RL finetuning of a pretrained (Post)BC diffusion policy: the `Finetuner` (the episode steps) and its checkpoints.

`Finetuner` is the loop as explicit steps, driven either by rl/finetune.py (the sim, on control/loop.run_episodes) or
by a ROS node (the on-robot finetune manager) from its callbacks:

    ft = Finetuner(cfg)                      # or Finetuner(cfg, policy=...); resumes when cfg.resume
    ft.start_episode()
    while running:  a = ft.act(obs);  <execute a>;  ft.observe(reward, terminated, row)
    ft.end_episode(success)                  # commits the episode to the replay store (atomic), indexes it and
                                             # checkpoints: from here a stop never loses the episode
    ft.update()                              # gradient steps between episodes (none during warm-up)
    ft.save()                                # full checkpoint after the updates

`act` returns one action of the current chunk (receding horizon: a chunk of Ta is decoded from the agent's noise every
n_action_steps calls). Algorithms (`algorithm`): dsrl_sac / dsrl_na (rl/dsrl.py) and best_of_n (rl/best_of_n.py);
dppo (rl/dppo.py) acts through the same steps for evaluation, but trains in on-policy iterations over parallel
environments (rl/dppo_run.py), recorded with `record_iteration` instead of episode by episode.

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

import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from postbc_core.control.history import ChunkQueue, ObsHistory
from postbc_core.data.paths import refuse_inside_store
from postbc_core.errors import CheckpointError, ConfigError, PostBCError
from postbc_core.rl.agent import Agent, Mode
from postbc_core.rl.best_of_n import BestOfNAgent
from postbc_core.rl.dppo import DPPOAgent
from postbc_core.rl.dsrl import DSRLAgent
from postbc_core.rl.finetune_config import ALGORITHM_SETTINGS, RESUME_FIXED, FinetuneConfig, SettingNames
from postbc_core.rl.noise_env import NoisePolicy
from postbc_core.rl.replay import ReplayBuffer, trim_store
from postbc_core.rl.state import flatten, rng_state, set_rng_state, unflatten
from postbc_core.runlog import METRICS_FILE, RunLogger

log = logging.getLogger(__name__)

STATE_FILE = "finetune_state.safetensors"
REPLAY_DIR = "replay.zarr"
# Test hook (the resume and shutdown tests): "EPISODE:STEP" makes run_finetune flush that training episode's steps to
# disk, print "stalled" and sleep at that step, so a test can kill it mid-episode; "EPISODE:uK" makes Finetuner.update
# do the same before gradient step K of that episode's updates (until killed, interrupted or its stop() is true).
# Never set outside tests.
TEST_STALL_ENV = "POSTBC_FINETUNE_TEST_STALL"


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
        self.noise_policy = npol = NoisePolicy(self.policy, cfg.n_action_steps)
        # the running episode's observation window and the rest of its current chunk (reset at each start)
        self.obs_history = ObsHistory(npol.obs_keys, npol.n_obs_steps)
        self.chunk_queue = ChunkQueue(npol.n_action_steps)
        random.seed(cfg.seed)  # nothing here draws from it, but libraries might: keep runs reproducible
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.agent: Agent
        if cfg.algorithm == "best_of_n":
            self.agent = BestOfNAgent(cfg.bon, self.noise_policy, self.device)
            self.batch_size = cfg.bon.batch_size
        elif cfg.algorithm == "dppo":
            self.agent = DPPOAgent(cfg.dppo, self.noise_policy, self.device)
            self.batch_size = cfg.dppo.batch_size
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
            self.replay = ReplayBuffer(cfg.out / REPLAY_DIR, self.noise_policy, task=cfg.task, device=self.device,
                                       codecs=cfg.codec or None)
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
        self.obs_history.reset()
        self.chunk_queue.reset()
        self._episode = {"record": record, "mode": mode or self.mode, "pending": None, "held_row": None,
                         "return": 0.0, "length": 0, "t0": time.time()}

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Current observation (raw, the task's / robot's keys) -> the action (Da,) to execute now, in the policy's
        units (joint targets + gripper for cmd_joint_pos policies). Decodes a new chunk when the last is used up."""
        ep = self._require_episode()
        npol = self.noise_policy
        step = npol.spec.step_obs(obs)
        self.obs_history.append(0, step)
        noise = None
        if self.chunk_queue.due([0]):
            feats = npol.features(self.obs_history.stacked())  # (1, F)
            if ep["mode"] == "policy":  # the frozen policy as deployed: w ~ N(0, I), no agent involved
                w, chunk = torch.randn(feats.shape[0], npol.noise_dim, device=feats.device), None
            else:
                w, chunk = self.agent.choose(feats, ep["mode"])
            if chunk is None:
                chunk = npol.decode(feats, w)[1]
            self.chunk_queue.put(0, chunk[0].cpu().numpy())
            noise = w.reshape(-1).cpu().numpy().astype(np.float32)
            if ep["record"]:
                self.decisions += 1
        a = self.chunk_queue.pop([0])[0]
        ep["pending"] = {"obs": step, "policy_action": a, "noise": noise}
        return a.copy()

    def observe(self, reward: float, terminated: bool, row: dict[str, np.ndarray] | None = None) -> None:
        """After executing the action `act` returned: its reward and whether the episode terminated there.
        row: the store row for this step (observation before the action + executed command keys, e.g. from
        control/rows.step_row); default: the policy's observation keys + the action under the policy's key."""
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
                stall_for_test(stop)
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

    def record_iteration(self, episodes: list[dict], metrics: dict[str, float]) -> None:
        """An on-policy iteration (DPPO, rl/dppo_run.py) is done: its episodes (summaries: success, return, length,
        transitions = decisions, wall_s; in episode order) and its update's metrics (with "gradient_steps") join the
        history, the counters and the logs. On-policy data is used once: nothing goes to the replay store. The
        caller checkpoints (save) after."""
        self._require_writable("record an iteration")
        for ep in episodes:
            ep = {"episode": self.episodes_done, "mode": "explore", **ep}
            self.history.append(ep)
            self.episodes_done += 1
            self.env_steps += int(ep["length"])
            self.decisions += int(ep["transitions"])
            self._log("episode", ep["episode"], {"success": float(bool(ep["success"])), "return": ep["return"],
                                                 "length": ep["length"], "transitions": ep["transitions"]})
        self.updates += int(metrics["gradient_steps"])
        self._log("train", self.episodes_done, {**metrics, "total_updates": self.updates})

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
        used = ALGORITHM_SETTINGS[self.cfg.algorithm]
        for k in RESUME_FIXED:  # (the other algorithms' nested settings are unused: not compared)
            if k in ALGORITHM_SETTINGS.values() and k != used and old.get("algorithm") == new.get("algorithm"):
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


def stall_for_test(stop: Callable[[], bool] | None = None) -> None:
    """Test hook (TEST_STALL_ENV): say so, and wait to be killed, interrupted or stopped."""
    print("stalled", flush=True)
    while not (stop is not None and stop()):
        time.sleep(0.05)
