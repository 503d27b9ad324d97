"""Bad input on the command line, round two (issue 20): every rejected command line is ONE `error:` line on stderr
with exit status 2 (tyro's parse errors and the flag-range checks tyro runs while it builds a config included), the
line names the value and the fix, and nothing is created or changed.

The cases form one table like tests/test_bad_input.py's (`Case`, built in a temporary directory, run in-process);
the checks that need a separate process (--help, the console script's stderr) and the library-level ones follow.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from _paths import BIN
from postbc_core import load_policy
from postbc_core.cli.main import main
from postbc_core.data import EpisodeStore
from test_bad_input import TRAIN, tree_digest

T = 12  # steps per episode


def write_store(path: Path, lengths=(T, T, T), task: str = "lift_cube") -> Path:
    """state / action plus the per-step bookkeeping keys a recorder writes (timestamp, done)."""
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path) as s:
        for n in lengths:
            s.add_episode({"state": rng.normal(size=(n, 2)).astype(np.float32),
                           "action": rng.normal(size=(n, 2)).astype(np.float32),
                           "timestamp": np.arange(n, dtype=np.float64) * 0.1,
                           "done": np.arange(n) == n - 1},
                          success=True, task=task, source="synthetic")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_cli_base")
    store = write_store(root / "demos.zarr")
    assert main(["train", "--dataset", str(store), "--out", str(root / "run"), *TRAIN]) == 0
    return {"store": store, "run": root / "run"}


@pytest.fixture
def work(base, tmp_path) -> dict[str, Path]:
    return {**base, "tmp": tmp_path}


@dataclass
class Case:
    id: str
    setup: Callable[[dict], list[str]]  # builds the fault, returns the argv
    match: str  # regex the one stderr line must match (from its start)
    check: Callable[[dict], None] = field(default=lambda w: None)  # what must still be (or not be) on disk


def absent(name: str):
    def check(w):
        assert not (w["tmp"] / name).exists(), f"{name} was created"
    return check


def _train(*extra, out="t_run"):
    return lambda w: ["train", "--dataset", str(w["store"]), "--out", str(w["tmp"] / out), *TRAIN, *extra]


def _eval(*extra, out="ev"):
    return lambda w: ["eval", "--checkpoint", str(w["run"]), "--task", "lift_cube", "--episodes", "1", "--videos",
                      "0", "--device", "cpu", "--out", str(w["tmp"] / out), *extra]


def _demos(*extra, out="q.zarr"):
    return lambda w: ["sim", "demos", "--task", "lift_cube", "--episodes", "1", "--out", str(w["tmp"] / out), *extra]


SEED_RANGE = r"is out of range: a seed is an integer in \[0, 2\*\*32 - 1\] = \[0, 4294967295\]$"


def _a_file(w) -> Path:
    f = w["tmp"] / "notes.txt"
    f.write_text("mine")
    return f


def _file_kept(w):
    assert (w["tmp"] / "notes.txt").read_text() == "mine"


def _through_file(argv_for: Callable[[Path], list[str]]):
    return lambda w: argv_for(w, _a_file(w) / "out")


THROUGH_FILE = r".*: (Not a directory|File exists) \(.*notes.txt.*\); .*notes.txt is a file where a directory is needed: " \
               r"choose another path \(or move that file away\)$"


def _pipeline_out_not_empty(w):
    d = w["tmp"] / "p"
    (d / "seed_0").mkdir(parents=True)
    (d / "seed_0" / "demos.txt").write_text("old")
    (d / "notes.txt").write_text("mine")
    w["before"] = tree_digest(d)
    return ["pipeline", "--out", str(d), "--seeds", "0", "--no-coverage"]


def _pipeline_unchanged(w):
    assert tree_digest(w["tmp"] / "p") == w["before"]


def _inside_a_store(argv_for: Callable[[dict, Path], list[str]]):
    """The command's --out inside (a copy of) an episode store: refused before anything is written there."""
    def setup(w):
        import shutil

        shutil.copytree(w["store"], w["tmp"] / "in.zarr")
        w["before"] = tree_digest(w["tmp"] / "in.zarr")
        return argv_for(w, w["tmp"] / "in.zarr" / "out")
    return setup


def _store_unchanged(w):
    assert tree_digest(w["tmp"] / "in.zarr") == w["before"]


INSIDE = r"error: --out .*in.zarr/out is inside the (input|zarr) store .*in.zarr: nothing is written inside a store; " \
         r"choose a path outside .*in.zarr$"


CASES = [
    # --out inside an episode store (train, eval, finetune, pipeline, coverage): written into the store before
    Case("train_out_inside_a_store",
         _inside_a_store(lambda w, out: ["train", "--dataset", str(w["tmp"] / "in.zarr"), "--out", str(out), *TRAIN]),
         INSIDE, _store_unchanged),
    Case("eval_out_inside_a_store", _inside_a_store(lambda w, out: _eval(out=out)(w)), INSIDE, _store_unchanged),
    Case("finetune_out_inside_a_store",
         _inside_a_store(lambda w, out: ["finetune", "--checkpoint", str(w["run"]), "--task", "lift_cube",
                                         "--episodes", "1", "--out", str(out), "--device", "cpu"]),
         INSIDE, _store_unchanged),
    Case("pipeline_out_inside_a_store",
         _inside_a_store(lambda w, out: ["pipeline", "--out", str(out), "--seeds", "0", "--no-coverage"]),
         INSIDE, _store_unchanged),
    Case("replay_out_inside_the_store",
         _inside_a_store(lambda w, out: ["replay", "--dataset", str(w["tmp"] / "in.zarr"), "--episode", "0",
                                         "--out", str(out)]),
         INSIDE, _store_unchanged),
    Case("coverage_out_inside_a_store", _inside_a_store(lambda w, out: ["coverage", "--out", str(out)]),
         INSIDE, _store_unchanged),
    # --seed outside [0, 2**32 - 1]: numpy's seeding raised a raw ValueError; split left an empty directory
    Case("train_seed_negative", _train("--seed", "-1"), r"error: --seed -1 " + SEED_RANGE, absent("t_run")),
    Case("train_seed_too_large", _train("--seed", "5000000000"), r"error: --seed 5000000000 " + SEED_RANGE,
         absent("t_run")),
    Case("eval_seed_negative", _eval("--seed", "-1"), r"error: --seed -1 " + SEED_RANGE, absent("ev")),
    Case("eval_seeds_of_the_episodes_past_the_range", _eval("--seed", "4294967295", "--episodes", "2"),
         r"error: --seed 4294967295 with 2 episodes uses seeds up to 4294967296, past 2\*\*32 - 1 = 4294967295; "
         r"use --seed <= 4294967294$", absent("ev")),
    Case("sim_demos_seed_negative", _demos("--seed", "-1"), r"error: --seed -1 " + SEED_RANGE, absent("q.zarr")),
    Case("sim_demos_seed_too_large", _demos("--seed", "5000000000"), r"error: --seed 5000000000 " + SEED_RANGE,
         absent("q.zarr")),
    Case("finetune_seed_too_large",
         lambda w: ["finetune", "--checkpoint", str(w["run"]), "--task", "lift_cube", "--episodes", "1", "--out",
                    str(w["tmp"] / "ft"), "--device", "cpu", "--seed", "5000000000"],
         r"error: --seed 5000000000 " + SEED_RANGE, absent("ft")),
    Case("finetune_eval_seed_negative", lambda w: ["finetune-eval", "--run", str(w["tmp"] / "ft"), "--seed", "-1"],
         r"error: --seed -1 " + SEED_RANGE),
    Case("data_split_seed_negative",
         lambda w: ["data", "split", str(w["store"]), str(w["tmp"] / "split"), "--seed", "-1"],
         r"error: --seed -1 " + SEED_RANGE, absent("split")),
    Case("calibrate_handeye_seed_negative",
         lambda w: ["calibrate", "handeye", "--out", str(w["tmp"] / "h.yaml"), "--sim", "--seed", "-1"],
         r"error: --seed -1 " + SEED_RANGE, absent("h.yaml")),
    Case("pipeline_seeds_negative", lambda w: ["pipeline", "--out", str(w["tmp"] / "p"), "--seeds", "-1"],
         r"error: --seeds -1 " + SEED_RANGE, absent("p")),
    Case("sim_curve_seeds_too_large",
         lambda w: ["sim", "curve", "--out", str(w["tmp"] / "c"), "--seeds", "0", "5000000000"],
         r"error: --seeds 5000000000 " + SEED_RANGE, absent("c")),
    Case("coverage_seed_negative", lambda w: ["coverage", "--out", str(w["tmp"] / "c"), "--seed", "-1"],
         r"error: --seed -1 " + SEED_RANGE, absent("c")),
    # --device: torch's RuntimeError listing its 20 backends
    Case("train_device_unknown", _train("--device", "foo"),
         r"error: device 'foo' is not a device postbc can use; use one of auto, cpu, cuda, cuda:N \(N = GPU index\), "
         r"mps$", absent("t_run")),
    # --out through a regular file: raw NotADirectoryError / FileExistsError
    Case("train_out_through_a_file", _through_file(lambda w, out: _train(out=out)(w)),
         r"error: writing the run directory " + THROUGH_FILE, _file_kept),
    Case("coverage_out_through_a_file", _through_file(lambda w, out: ["coverage", "--out", str(out)]),
         r"error" + THROUGH_FILE, _file_kept),
    Case("sim_demos_out_through_a_file", _through_file(lambda w, out: _demos(out=out / "q.zarr")(w)),
         r"error: taking the writer lock of .*q.zarr" + THROUGH_FILE, _file_kept),
    Case("data_export_out_through_a_file",
         _through_file(lambda w, out: ["data", "export", str(w["store"]), str(out / "x.zarr")]),
         r"error: creating the output directory of .*x.zarr" + THROUGH_FILE, _file_kept),
    # train settings no episode can serve, non-finite floats, repeated keys, bookkeeping keys as actions
    Case("train_action_horizon_longer_than_every_episode", _train("--action-horizon", "20"),
         r"error: .*demos.zarr: every training episode is shorter than one window \(--n-obs-steps 1 \+ "
         r"--action-horizon 20 - 1 = 20 steps; the longest has 12\), so every action chunk would be padding; lower "
         r"--action-horizon or --n-obs-steps so that To \+ Ta - 1 <= 12$", absent("t_run")),
    Case("train_obs_steps_longer_than_every_episode", _train("--n-obs-steps", "13", "--action-horizon", "1"),
         r"error: .*every training episode is shorter than one window \(--n-obs-steps 13 \+ --action-horizon 1 - 1 "
         r"= 13 steps; the longest has 12\)", absent("t_run")),
    Case("train_alpha_inf", _train("--alpha", "inf"), r"error: --alpha must be a finite number, got inf$",
         absent("t_run")),
    Case("train_lr_nan", _train("--lr", "nan"), r"error: --lr must be a finite number, got nan$", absent("t_run")),
    Case("train_obs_keys_repeated", _train("--obs-keys", "state", "state"),
         r"error: --obs-keys names 'state' more than once \(the policy would see the key twice\); give each key "
         r"once$", absent("t_run")),
    Case("train_action_key_timestamp", _train("--action-key", "timestamp"),
         r"error: --action-key 'timestamp' is a bookkeeping key of .*demos.zarr \(timestamp, \*_stamp, reward and done "
         r"record when a step happened and how it went\), not a command a policy can output. Vector keys in this "
         r"store: \['action', 'state'\]$", absent("t_run")),
    Case("train_action_key_done", _train("--action-key", "done"),
         r"error: --action-key 'done' is a bookkeeping key of .* not a command a policy can output. Vector keys in "
         r"this store: \['action', 'state'\]$", absent("t_run")),
    # a checkpoint evaluated in another sim task than its store's
    Case("eval_other_task", _eval("--task", "put_in_bowl"),
         r"error: --task 'put_in_bowl': the checkpoint .*run was trained on sim task 'lift_cube' \(its training "
         r"store's metadata\), so its success rate on 'put_in_bowl' measures nothing it learned; evaluate it with "
         r"--task lift_cube, or pass --allow-other-task to run it on 'put_in_bowl' anyway$", absent("ev")),
    # pipeline --out an existing directory
    Case("pipeline_out_not_empty", _pipeline_out_not_empty,
         r"error: --out .*p is not empty \(notes.txt, seed_0\); pass --overwrite to replace the pipeline's outputs "
         r"there, or choose another --out$", _pipeline_unchanged),
    # tyro's own parse errors and the range checks it runs while building a config: boxes before
    Case("tyro_wrong_type", _train("--steps", "abc"),
         r"error: --steps: invalid literal for int\(\) with base 10: 'abc' \(expects INT\); `postbc train --help` "
         r"lists the flags$", absent("t_run")),
    Case("tyro_unknown_flag", _train("--stepz", "3"),
         r"error: unrecognized argument\(s\): --stepz 3; `postbc train --help` lists the flags$", absent("t_run")),
    Case("tyro_invalid_choice", _train("--noise-net", "transformer"),
         r"error: --noise-net: invalid choice 'transformer'; choose one of mlp, unet; `postbc train --help` lists "
         r"the flags$", absent("t_run")),
    Case("tyro_missing_required", lambda w: ["train", "--obs-keys", "state"],
         r"error: missing required argument\(s\): --dataset; `postbc train --help` lists the flags$"),
    Case("tyro_missing_positional", lambda w: ["data", "split", str(w["store"])],
         r"error: missing required argument\(s\): OUT_DIR; `postbc data split --help` lists the flags$"),
    Case("tyro_missing_value", _train("--steps"),
         r"error: --steps expects 1 value\(s\); `postbc train --help` lists the flags$", absent("t_run")),
    Case("tyro_wrong_type_in_a_verb", lambda w: ["data", "split", str(w["store"]), str(w["tmp"] / "s"), "--seed", "x"],
         r"error: --seed: invalid literal for int\(\) with base 10: 'x' \(expects INT\); `postbc data split --help` "
         r"lists the flags$", absent("s")),
    Case("flag_range_in_a_config_tyro_builds", _train("--steps", "0"), r"error: --steps must be >= 1, got 0$",
         absent("t_run")),
    Case("flag_range_in_a_nested_config",
         lambda w: ["finetune", "--checkpoint", str(w["run"]), "--task", "lift_cube", "--episodes", "0", "--out",
                    str(w["tmp"] / "ft")],
         r"error: episodes=0: give a training budget of at least 1 episode", absent("ft")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_error_is_one_line(case: Case, work, capsys):
    argv = case.setup(work)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line: no traceback, no tyro box
    assert re.match(case.match, lines[0]), lines[0]
    case.check(work)


# ---------------------------------------------------------------------------------------------------------------
# as a user meets them: the console script, and --help still works
# ---------------------------------------------------------------------------------------------------------------
def test_help_still_works_and_a_process_prints_one_error_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POSTBC_LOG": "WARNING"}
    env.pop("POSTBC_DEBUG", None)
    for argv in (["train", "--help"], ["data", "split", "--help"], ["finetune", "--help"], ["eval", "--help"]):
        r = subprocess.run([str(BIN / "postbc"), *argv], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: postbc {' '.join(argv[:-1])}"), r.stderr
    assert "--allow-other-task" in subprocess.run([str(BIN / "postbc"), "eval", "--help"], capture_output=True,
                                                  text=True, timeout=120, env=env).stdout
    r = subprocess.run([str(BIN / "postbc"), "train", "--dataset", str(tmp_path / "d.zarr"), "--obs-keys", "s",
                        "--alpha", "1e999"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr == "error: --alpha must be a finite number, got inf\n", r.stderr


# ---------------------------------------------------------------------------------------------------------------
# train: some episodes shorter than a window (a warning with the numbers), the task in the checkpoint
# ---------------------------------------------------------------------------------------------------------------
def test_train_says_how_many_episodes_are_shorter_than_a_window(tmp_path, caplog):
    store = write_store(tmp_path / "s.zarr", lengths=(T, 3, T, 2))
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--dataset", str(store), "--out", str(tmp_path / "run"), *TRAIN,
                     "--action-horizon", "4"]) == 0
    assert re.search(r"2 of 4 training episodes of .*s.zarr are shorter than one window \(--n-obs-steps 1 \+ "
                     r"--action-horizon 4 - 1 = 4 steps; the shortest has 2\): their windows are padded", caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # every episode holds a window: quiet
        assert main(["train", "--dataset", str(store), "--out", str(tmp_path / "run2"), *TRAIN,
                     "--action-horizon", "2"]) == 0
    assert "shorter than one window" not in caplog.text


def test_checkpoint_records_its_stores_task(base):
    assert load_policy(base["run"], device="cpu").info["train"]["tasks"] == ["lift_cube"]


def test_policy_config_refuses_non_finite_floats():
    from postbc_core.errors import ConfigError
    from postbc_core.policies.diffusion import PolicyConfig

    for name in ("obs_clip", "clip_sample_range", "crop_ratio"):
        with pytest.raises(ConfigError, match=rf"{name} must be a finite number, got inf"):
            PolicyConfig(obs_shapes={"s": (2,)}, action_dim=2, **{name: float("inf")})


# ---------------------------------------------------------------------------------------------------------------
# pipeline --overwrite removes the pipeline's own outputs, nothing else
# ---------------------------------------------------------------------------------------------------------------
def test_pipeline_overwrite_removes_only_its_outputs(tmp_path):
    from postbc_core.analysis.pipeline import PipelineConfig, prepare_out
    from postbc_core.errors import ConfigError

    out = tmp_path / "p"
    for d in ("seed_0", "seed_7", "coverage", "seed_notes"):
        (out / d).mkdir(parents=True)
        (out / d / "x").write_text("x")
    for f in ("report.md", "results.json", "success_vs_episodes.png", "notes.txt"):
        (out / f).write_text("x")
    prepare_out(PipelineConfig(out=out, seeds=(0,), overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "seed_notes"]
    with pytest.raises(ConfigError, match=r"is not empty \(notes.txt, seed_notes\)"):  # only others' files: refused
        prepare_out(PipelineConfig(out=out, seeds=(0,)))
