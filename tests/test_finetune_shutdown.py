"""`postbc finetune` stopped between an episode's commit and the end of its updates keeps the episode and resumes
exactly (Ctrl-C and SIGKILL of a real process at a deterministic point); the run's budget, wall time and directory
on resume; finetune-eval's range check. The finetune manager's twin is in tests/ros/test_ros_finetune.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest
import torch
from _data_helpers import read_until_stalled
from _paths import BIN
from postbc_core.data import EpisodeStore
from postbc_core.policies.checkpoint import read_checkpoint
from postbc_core.rl import DSRLConfig, FinetuneConfig, run_finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATE = "finetune_state.safetensors"


def tiny_config(checkpoint, out, **kw) -> FinetuneConfig:
    kw = {"task": "lift_cube", "max_steps": 12, "device": "cpu", "seed": 3, "eval_every": 2, "eval_episodes": 1,
          "dsrl": DSRLConfig(warmup_episodes=1, utd=2, batch_size=32, hidden=(32, 32)), **kw}
    return FinetuneConfig(checkpoint=checkpoint, out=out, **kw)


def cli_args(checkpoint, out, episodes: int) -> list[str]:
    """tiny_config's settings as `postbc finetune` flags."""
    return ["finetune", "--checkpoint", str(checkpoint), "--task", "lift_cube", "--episodes", str(episodes),
            "--max-steps", "12", "--eval-every", "2", "--eval-episodes", "1", "--seed", "3", "--device", "cpu",
            "--dsrl.warmup-episodes", "1", "--dsrl.utd", "2", "--dsrl.batch-size", "32", "--dsrl.hidden", "32", "32",
            "--out", str(out)]


@pytest.fixture(scope="module")
def whole(lift_checkpoint, tmp_path_factory):
    """The uninterrupted reference: 3 episodes, in-process (same settings, one torch thread like the subprocesses)."""
    out = tmp_path_factory.mktemp("whole") / "ft"
    run_finetune(tiny_config(lift_checkpoint, out, episodes=3))
    return out


def metrics_rows(out) -> list[dict]:
    """metrics.jsonl without its one timing value (updates_per_s)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "updates_per_s"} for r in rows]


def assert_same_run(a, b) -> None:
    with EpisodeStore.open(a / "replay.zarr") as sa, EpisodeStore.open(b / "replay.zarr") as sb:
        assert sa.n_episodes == sb.n_episodes == 3 and np.array_equal(sa.episode_ends, sb.episode_ends)
        for i in range(3):
            ea, eb = sa.episode(i), sb.episode(i)
            for k in sa.keys:
                assert np.array_equal(ea[k], eb[k]), (i, k)
    ta, ia = read_checkpoint(a / STATE, "finetune", "")
    tb, ib = read_checkpoint(b / STATE, "finetune", "")
    ja, jb = json.loads(ia["finetune"]), json.loads(ib["finetune"])
    assert ja["counters"] == jb["counters"] and ja["evals"] == jb["evals"] and ja["state"] == jb["state"]
    strip = lambda h: [{k: v for k, v in e.items() if k != "wall_s"} for e in h]
    assert strip(ja["history"]) == strip(jb["history"])
    assert ta.keys() == tb.keys()
    for k in ta:  # networks, optimizers, temperature and RNG states
        assert torch.equal(ta[k], tb[k]), k
    assert metrics_rows(a) == metrics_rows(b)  # every row once, none lost


# -- a stop during an episode's updates ----------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl_c", "sigkill"])
def test_a_stop_during_the_updates_keeps_the_committed_episode_and_resumes_exactly(lift_checkpoint, whole, tmp_path,
                                                                                   sig):
    cut = tmp_path / "ft"
    args = cli_args(lift_checkpoint, cut, 3)
    # Stalls after the first of episode 1's four gradient steps: committed, its updates cut short.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSTBC_FINETUNE_TEST_STALL": "1:u1"}
    proc = subprocess.Popen([str(BIN / "postbc"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        read_until_stalled(proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:  # a clean exit that says what the stop costs
        assert proc.returncode == 130, err
        assert ("stopping now: episode 1 is committed and kept; its 4 updates are redone when you pass --resume"
                in err), err
    else:
        assert proc.returncode == -signal.SIGKILL
    with EpisodeStore.open(cut / "replay.zarr") as store:
        assert store.n_episodes == 2

    r = subprocess.run([str(BIN / "postbc"), *args, "--resume"], capture_output=True, text=True, check=False,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "dropping" not in r.stderr and "episode 1 was committed and checkpointed before its 4 updates" in r.stderr
    episode_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("episode ")]
    assert [ln.split()[1] for ln in episode_lines] == ["1", "2"]
    assert "(committed before the interruption)" in episode_lines[0] and episode_lines[0].endswith("4 updates")
    assert_same_run(whole, cut)


# -- resume: budget and wall time ----------------------------------------------------------------------------------
def test_resume_refuses_a_budget_below_the_episodes_done_and_accumulates_wall_time(lift_checkpoint, whole, tmp_path,
                                                                                 capsys):
    import shutil

    from postbc_core.cli.main import main

    run = tmp_path / "ft"
    shutil.copytree(whole, run)
    first = json.loads((run / "summary.json").read_text())
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main([*cli_args(lift_checkpoint, run, 2), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --episodes 2 is below the 3 episodes the run in {run} has already done (the budget "
                   "counts the whole run): give --episodes 4 or more to continue it\n")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files  # nothing touched
    # The budget reached: nothing to run, and the run's wall time is the whole run's, not this session's.
    assert main([*cli_args(lift_checkpoint, run, 3), "--resume"]) == 0
    again = json.loads((run / "summary.json").read_text())
    assert again["episodes"] == 3 and again["wall_time_s"] >= first["wall_time_s"]


# -- the run directory ---------------------------------------------------------------------------------------------
def test_a_new_run_refuses_a_directory_holding_something_else(lift_checkpoint, tmp_path, capsys):
    from postbc_core.cli.main import main

    before = sorted(p.name for p in lift_checkpoint.iterdir())
    assert "train_config.json" in before
    assert main(cli_args(lift_checkpoint, lift_checkpoint, 1)) == 2  # --out the policy's training run
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {lift_checkpoint} holds a `postbc train` run (") and err.count("\n") == 1
    assert "not a finetuning run: a new finetuning run needs a new or empty directory; choose another --out" in err
    assert sorted(p.name for p in lift_checkpoint.iterdir()) == before  # no RL output mixed in
    other = tmp_path / "notes"
    other.mkdir()
    (other / "README").write_text("mine")
    assert main(cli_args(lift_checkpoint, other, 1)) == 2
    assert f"error: --out {other} holds other files (README), not a finetuning run" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["README"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(cli_args(lift_checkpoint, afile, 1)) == 2
    assert capsys.readouterr().err == f"error: --out {afile} is a file, not a directory: choose another --out\n"


# -- finetune-eval -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", ["0", "-3"])
def test_finetune_eval_episodes_out_of_range_is_one_error_line(whole, capsys, n):
    from postbc_core.cli.main import main

    assert main(["finetune-eval", "--run", str(whole), "--episodes", n]) == 2
    out = capsys.readouterr()
    assert out.err == f"error: --episodes {n}: evaluate on at least 1 episode (--episodes >= 1)\n" and not out.out
    assert not (whole / "agent_eval.json").exists()
