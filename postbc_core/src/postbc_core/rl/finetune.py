"""`postbc finetune` in the sim: training and evaluation episodes of a `Finetuner` on control/loop.run_episodes
(`run_episode`, `evaluate`), the run (`run_finetune`; DPPO's as iterations of rl/dppo_run.py), the sim task that fits a policy (`make_task`) and the
evaluation of a run's saved agent against its pretrained policy (`evaluate_run`, `postbc finetune-eval`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from postbc_core.control.loop import Actor, EpisodeResult, Step, run_episodes
from postbc_core.data.paths import refuse_inside_store
from postbc_core.errors import ConfigError
from postbc_core.rl.agent import Mode
from postbc_core.rl.best_of_n import BestOfNAgent
from postbc_core.rl.dppo_run import dppo_iteration, export_policy
from postbc_core.rl.finetune_config import EVAL_SEED, FinetuneConfig
from postbc_core.rl.finetuner import REPLAY_DIR, STATE_FILE, TEST_STALL_ENV, Finetuner, stall_for_test
from postbc_core.rl.state import forked_torch_rng
from postbc_core.stats import paired_comparison, wilson_interval

log = logging.getLogger(__name__)


class FinetunerActor(Actor):
    """One episode of a Finetuner as the episode loop's actor (control/loop.py; one slot): the loop resets and steps
    the task, clips the actions to its bounds and builds the store rows; the Finetuner acts, records and commits.
    `summary` after the episode: end_episode's summary with the steps the safety layer altered."""

    def __init__(self, ft: Finetuner, *, record: bool, mode: Mode | None, stall_at: int | None = None):
        self.ft, self.record, self.mode, self.stall_at = ft, record, mode, stall_at
        self.summary: dict | None = None

    def start(self, slot: int, result: EpisodeResult, obs: dict, env) -> None:
        self.ft.start_episode(record=self.record, mode=self.mode)

    def act(self, slots: list[int], obs: list[dict]) -> np.ndarray:
        return self.ft.act(obs[0])[None]  # (1, Da) float32: the loop clips it and keeps the dtype

    def observe(self, slot: int, step: Step, env) -> None:
        ft = self.ft
        ft.observe(step.reward, step.terminated, step.row)
        if self.stall_at is not None and ft._episode["length"] == self.stall_at:  # TEST_STALL_ENV
            if ft._episode["held_row"] is not None:  # the open episode's steps on disk, uncommitted
                ft.replay.append(ft._episode["held_row"])
                ft._episode["held_row"] = None
            ft.replay.flush()
            stall_for_test()

    def end(self, slot: int, result: EpisodeResult, env) -> None:
        self.summary = {**self.ft.end_episode(result.success), "safety_altered": result.safety_altered}

    def abort(self, slot: int) -> None:
        self.ft.discard_episode()


def run_episode(ft: Finetuner, task, seed: int, *, record: bool = True, mode: Mode | None = None,
                stall_at: int | None = None) -> dict:
    """One episode of `task` (a sim Task, or anything with reset(seed) / step(action) -> (obs, r, term, trunc, info)
    and optionally action_bounds()) driven through the Finetuner's steps on the episode loop. Actions are clipped to
    the task's bounds; the store row records the executed command (control/rows.step_row, for tasks that report it
    in info["joint_target"]: the sim's). Returns end_episode's summary + "safety_altered" (steps)."""
    actor = FinetunerActor(ft, record=record, mode=mode, stall_at=stall_at)
    run_episodes([task], actor, [seed], record=record, clip_actions=hasattr(task, "action_bounds"))
    return actor.summary


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
                        bon = ft.agent
                        assert isinstance(bon, BestOfNAgent)  # cfg.algorithm is best_of_n (checked above)
                        bon.cfg = dataclasses.replace(cfg.bon, n_candidates=int(n))
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
    if cfg.algorithm == "dppo":  # on-policy iterations over parallel environments, not episode by episode
        return _run_dppo(cfg)
    policy = load_policy(cfg.checkpoint, device=cfg.device)
    task = make_task(cfg, policy)
    ft = Finetuner(cfg, policy=policy)
    stall_ep, stall_step = _test_stall()

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
        return write_summary(ft, cfg)
    except KeyboardInterrupt:
        log.warning("stopping now: %s", ft.stop_note())
        raise
    finally:
        ft.close()
        task.close()


def _run_dppo(cfg: FinetuneConfig) -> dict:
    """run_finetune for algorithm "dppo": iterations of `dppo.episodes_per_iteration` episodes on `dppo.envs`
    environments (rl/dppo_run.py), a checkpoint and the exported policy after each, the same evaluations."""
    from postbc_core.policies.checkpoint import POLICY_FILE, load_policy

    dcfg = cfg.dppo
    policy = load_policy(cfg.checkpoint, device=cfg.device)
    tasks = [make_task(cfg, policy)]
    ft = Finetuner(cfg, policy=policy)
    stall_ep, stall_step = _test_stall()
    stall_at = None if stall_ep is None else (stall_ep, stall_step)
    try:
        tasks += [make_task(cfg, policy) for _ in range(dcfg.envs - 1)]
        export_policy(ft)  # the restored (or initial) weights: a run killed before its first export has one too
        if cfg.resume and ft.episodes_done >= cfg.episodes:
            log.info("%s has done its %d episodes: nothing to run (a larger --episodes continues it)", cfg.out,
                     ft.episodes_done)
        if cfg.eval_episodes and not ft.evals:
            ft.log_eval(evaluate(ft, tasks[0], cfg.eval_episodes, mode="policy"))
            _print_eval(ft.evals[-1])
        agent = ft.agent
        while ft.episodes_done < cfg.episodes:
            first = ft.episodes_done
            metrics = dppo_iteration(ft, tasks, min(dcfg.episodes_per_iteration, cfg.episodes - first), stall_at)
            n = ft.episodes_done - first
            for h in ft.history[first:]:
                print(f"episode {h['episode']} ({h['mode']}): {'success' if h['success'] else 'failure'} in "
                      f"{h['length']} steps, return {h['return']:.3f}", flush=True)
            print(f"iteration {agent.iterations - 1}: episodes {first}..{ft.episodes_done - 1}, success "
                  f"{sum(bool(h['success']) for h in ft.history[first:])}/{n}, {metrics['gradient_steps']} PPO "
                  f"steps{'' if metrics['actor_trained'] else ' (critic warm-up)'}, approx KL "
                  f"{metrics['approx_kl']:.2e}, clip fraction {metrics['clipfrac']:.2f}", flush=True)
            every = cfg.eval_every
            due = every and ft.episodes_done // every > first // every
            if cfg.eval_episodes and (due or ft.episodes_done == cfg.episodes):
                ft.log_eval(evaluate(ft, tasks[0], cfg.eval_episodes))
                _print_eval(ft.evals[-1])
            ft.save()
            export_policy(ft)
        return write_summary(ft, cfg, policy=str(cfg.out / POLICY_FILE))
    except KeyboardInterrupt:
        saved = ft._saved.get("episodes_done", 0)
        log.warning("stopping now: the checkpoint holds the %d episodes of the finished iterations and their updates; "
                    "the iteration running from episode %d is discarded (%s runs it again)", saved, saved,
                    ft._resume_hint().removeprefix("pass "))
        raise
    finally:
        ft.close()
        for t in tasks:
            t.close()


def _test_stall() -> tuple[int, int] | tuple[None, None]:
    """TEST_STALL_ENV "EPISODE:STEP" (tests only): where a training episode stalls, or (None, None)."""
    ep, _, step = os.environ.get(TEST_STALL_ENV, "").partition(":")
    return (int(ep), int(step)) if step.isdigit() else (None, None)


def write_summary(ft: Finetuner, cfg: FinetuneConfig, **extra) -> dict:
    """<out>/summary.json of a run (returned): per-episode training success, evaluations with Wilson 95% intervals,
    counters (updates, steps), wall time; `extra` entries added (DPPO: the fine-tuned policy's path)."""
    succ = [bool(h["success"]) for h in ft.history]
    k = sum(succ)
    summary = {"task": cfg.task, "algorithm": cfg.algorithm, "checkpoint": str(cfg.checkpoint),
               "episodes": ft.episodes_done, "train_success": succ, "train_success_rate": k / len(succ),
               "train_success_ci95": list(wilson_interval(k, len(succ))), "history": ft.history, "evals": ft.evals,
               # the run's wall time at its last checkpoint: what a resume continues from, so a resumed run's
               # summary never reports less than an earlier session's
               "counters": ft.counters(), "wall_time_s": ft._saved.get("wall_time_s", round(ft.wall_time_s, 3)),
               "replay": str(cfg.out / REPLAY_DIR), "state": str(cfg.out / STATE_FILE), **extra}
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _print_eval(e: dict) -> None:
    print(f"eval after {e['after_episodes']} episodes ({e['mode']}): success {e['n_success']}/{e['episodes']} = "
          f"{e['success_rate']:.0%} (Wilson 95% {e['ci_low']:.0%}..{e['ci_high']:.0%})", file=sys.stdout, flush=True)
