"""`postbc train` end to end (subprocess, tiny budgets), single process and under torchrun; ensemble behaviour."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from _paths import BIN
from postbc_core import load_policy
from postbc_core.training.config import TrainConfig

TINY = ["--obs-keys", "state", "--action-key", "action", "--action-horizon", "2", "--ensemble-size", "4",
        "--ensemble-hidden", "32", "32", "--ensemble-steps", "20", "--ensemble-batch-size", "16",
        "--mlp-hidden", "32", "32", "--steps", "30", "--batch-size", "16", "--log-every", "10", "--no-progress",
        "--device", "cpu"]


def run_cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([str(BIN / "postbc"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def tensor_layout(path):
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["postbc"])
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, meta


def test_train_postbc_end_to_end(coverage_store, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--dataset", str(coverage_store), "--out", str(out), *TINY, "--val-ratio", "0.1")
    assert r.returncode == 0, r.stderr
    for f in ("policy.safetensors", "ensemble.safetensors", "posterior.json", "train_config.json", "metrics.jsonl"):
        assert (out / f).exists(), f
    assert list((out / "tb").glob("events.out.tfevents.*")), "no TensorBoard log"
    tags = {json.loads(line)["tag"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert tags == {"ensemble", "policy", "policy_val"}
    layout, meta = tensor_layout(out / "ensemble.safetensors")
    assert meta["num_members"] == 4 and all(shape[0] == 4 for shape in layout.values())
    policy = load_policy(out)
    assert policy.info["train"]["alpha"] == TrainConfig.alpha == 0.5  # the default alpha reaches the checkpoint
    assert policy.info["train"]["posterior"]["n_states"] > 0
    a = policy.predict_action({"state": np.zeros((1, 1), np.float32)})
    assert a.shape == (2, 1) and np.isfinite(a).all()


def test_train_bc_skips_the_ensemble(coverage_store, tmp_path):
    out = tmp_path / "bc"
    r = run_cli("train", "--dataset", str(coverage_store), "--out", str(out), *TINY, "--alpha", "0")
    assert r.returncode == 0, r.stderr
    assert (out / "policy.safetensors").exists() and not (out / "ensemble.safetensors").exists()
    assert load_policy(out).info["train"]["perturbation"] == "none"


def test_train_errors_name_the_problem(coverage_store, tmp_path):
    r = run_cli("train", "--dataset", str(coverage_store), "--out", str(tmp_path / "x"), *TINY,
                "--obs-keys", "joint_pos")
    assert r.returncode == 2 and "no data key(s) ['joint_pos']" in r.stderr and "'state'" in r.stderr
    r = run_cli("train", "--dataset", str(coverage_store), *TINY, "--alpha", "-1")
    assert r.returncode == 2 and "--alpha must be >= 0" in r.stderr
    r = run_cli("train", "--dataset", str(tmp_path / "missing.zarr"), *TINY)
    assert r.returncode == 2 and "missing.zarr" in r.stderr
    assert "Traceback" not in r.stderr


def test_torchrun_two_processes_matches_single_process_format(coverage_store, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "ddp"
    assert run_cli("train", "--dataset", str(coverage_store), "--out", str(single), *TINY).returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--no-python",
                        str(BIN / "postbc"), "train", "--dataset", str(coverage_store), "--out", str(multi), *TINY],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("policy.safetensors", "ensemble.safetensors"):
        (ls, ms), (lm, mm) = tensor_layout(single / name), tensor_layout(multi / name)
        assert ls == lm, name  # same tensors, same shapes (ensemble: all 4 members gathered from 2 ranks)
        assert set(ms) == set(mm), name
    policy = load_policy(multi)
    assert policy.info["train"]["world_size"] == 2
    assert policy.predict_action({"state": np.zeros((1, 1), np.float32)}).shape == (2, 1)


def _posterior_std(n_episodes, seed=0, members=8):
    """Mean posterior std after fitting an ensemble on n_episodes of a noisy linear demonstrator."""
    from types import SimpleNamespace

    from postbc_core.data import WindowDataset
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
    from postbc_core.runlog import RunLogger
    from postbc_core.training.distributed import DistInfo
    from postbc_core.training.ensemble_fit import fit_ensemble, predict_windows
    from postbc_core.training.posterior import posterior_from_predictions

    rng = np.random.default_rng(seed)
    T = 10
    s = rng.uniform(-1, 1, (n_episodes * T, 2)).astype(np.float32)
    a = (s @ np.array([[0.5], [-0.3]]) + rng.normal(0, 0.3, (len(s), 1))).astype(np.float32)
    ends = np.arange(1, n_episodes + 1) * T
    ds = WindowDataset({"s": s, "a": a}, ends, obs_keys=["s"], action_key="a", n_obs_steps=1, action_horizon=1)
    norm = LinearNormalizer().fit({"s": s}, default_mode="gaussian")
    norm.fit({"a": np.array([[-2.0], [2.0]])}, default_mode="limits")  # fixed scale, comparable across sizes
    policy = DiffusionPolicy(PolicyConfig(obs_shapes={"s": (2,)}, action_dim=1, action_horizon=1, mlp_hidden=(16,)),
                             norm)
    policy.action_key = "a"
    cfg = SimpleNamespace(ensemble_size=members, ensemble_batch_size=32, seed=seed, bootstrap="trajectory",
                          action_horizon=1, n_obs_steps=1, ensemble_hidden=(32, 32), ensemble_head="mse",
                          ensemble_steps=300, ensemble_lr=3e-3, weight_decay=0.0, warmup_steps=0, log_every=100,
                          ensemble_encoder="per_member")
    info = DistInfo()
    logger = RunLogger(None, is_main=info.is_main, progress=False)
    torch.manual_seed(seed)
    model, _ = fit_ensemble(ds, policy, cfg, info, logger)
    preds = predict_windows(model, ds, policy, info)
    return preds, posterior_from_predictions(preds, "full").mean_std


def test_members_differ_and_covariance_shrinks_with_data():
    preds_small, small = _posterior_std(4)
    _, large = _posterior_std(64)
    # Members trained on different resamples disagree: clearly non-zero spread across members.
    assert float(preds_small.std(0).mean()) > 1e-3
    assert not torch.allclose(preds_small[0], preds_small[1])
    assert large < 0.5 * small, (small, large)


def test_train_image_policy_end_to_end(tmp_path):
    """RGB + state observations: per-member ResNet-18 encoders in the ensemble, U-Net denoiser in the policy."""
    from postbc_core.data import EpisodeStore

    rng = np.random.default_rng(0)
    store_path = tmp_path / "img.zarr"
    with EpisodeStore.create(store_path) as store:
        for _ in range(4):
            T = 6
            store.add_episode({"front_rgb": rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8),
                               "joint_pos": rng.normal(size=(T, 6)).astype(np.float32),
                               "cmd_joint_pos": rng.normal(size=(T, 7)).astype(np.float32)}, source="teleop")
    out = tmp_path / "run"
    r = run_cli("train", "--dataset", str(store_path), "--out", str(out), "--obs-keys", "front_rgb", "joint_pos",
                "--action-key", "cmd_joint_pos", "--action-horizon", "1", "--n-obs-steps", "2",
                "--noise-net", "unet", "--unet-down-dims", "16", "32", "--ensemble-size", "2", "--ensemble-hidden",
                "16", "--ensemble-steps", "2", "--ensemble-batch-size", "4", "--steps", "2", "--batch-size", "4",
                "--log-every", "1", "--no-progress", "--device", "cpu", "--num-inference-steps", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    policy = load_policy(out)
    assert policy.config.rgb_keys == ["front_rgb"] and policy.config.noise_net == "unet"
    obs = {"front_rgb": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
           "joint_pos": np.zeros((2, 6), np.float32)}
    assert policy.predict_action(obs).shape == (1, 7)
    layout, _ = tensor_layout(out / "ensemble.safetensors")
    assert any("rgb" in k or "conv1" in k for k in layout), "ensemble has no image encoder weights"


def test_intermediate_checkpoints_follow_save_every(coverage_store, tmp_path):
    out = tmp_path / "ckpt"
    r = run_cli("train", "--dataset", str(coverage_store), "--out", str(out), *TINY, "--alpha", "0",
                "--steps", "45", "--save-every", "20", "--val-ratio", "0.1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000020.safetensors",
                                                                       "step_0000040.safetensors"]
    assert load_policy(out / "checkpoints" / "step_0000040.safetensors").info["step"] == 40


def test_postbc_checkpoint_samples_in_a_range_covering_its_targets(coverage_store, tmp_path):
    """BC keeps DDIM's [-1, 1]; PostBC's checkpoint widens the range to its perturbed targets (1 + 3 alpha x the
    largest per-dimension posterior std, at least the largest per-state average std that posterior.json reports)."""
    out = tmp_path / "postbc"
    r = run_cli("train", "--dataset", str(coverage_store), "--out", str(out), *TINY, "--alpha", "2")
    assert r.returncode == 0, r.stderr
    policy = load_policy(out)
    max_std = policy.info["train"]["posterior"]["max_std"]
    assert policy.config.clip_sample_range >= 1 + 3 * 2 * max_std > 1.0
    assert policy.schedule.clip_sample_range == policy.config.clip_sample_range
    bc = tmp_path / "bc"
    assert run_cli("train", "--dataset", str(coverage_store), "--out", str(bc), *TINY, "--alpha", "0").returncode == 0
    assert load_policy(bc).config.clip_sample_range == 1.0


def test_sample_clip_data_keeps_the_postbc_sampler_at_the_data_range(coverage_store, tmp_path):
    """--sample-clip data: a PostBC checkpoint whose DDIM clips x0 at +-1 as BC's does; recorded with the mix."""
    out = tmp_path / "postbc"
    r = run_cli("train", "--dataset", str(coverage_store), "--out", str(out), *TINY, "--alpha", "2",
                "--sample-clip", "data", "--posterior-mix", "0.5")
    assert r.returncode == 0, r.stderr
    policy = load_policy(out)
    assert policy.config.clip_sample_range == 1.0 == policy.schedule.clip_sample_range
    assert policy.info["train"]["sample_clip"] == "data" and policy.info["train"]["posterior_mix"] == 0.5
    for bad in ("0", "1.5", "nan"):
        r = run_cli("train", "--dataset", str(coverage_store), "--out", str(tmp_path / "x"), *TINY,
                    "--posterior-mix", bad)
        assert r.returncode != 0 and "--posterior-mix" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "x").exists()


def test_train_config_round_trips_through_its_json_with_overrides(coverage_store, tmp_path):
    from postbc_core.errors import ConfigError

    cfg = TrainConfig(dataset=coverage_store, out=tmp_path / "a", obs_keys=("state",), action_key="action",
                      ensemble_hidden=(32, 32), alpha=0.5)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(d).to_dict() == cfg.to_dict()
    other = TrainConfig.from_dict(d, bootstrap="state_action", out=tmp_path / "b")
    assert other.bootstrap == "state_action" and other.policy == cfg.policy and other.ensemble_hidden == (32, 32)
    with pytest.raises(ConfigError, match="no_such_setting"):
        TrainConfig.from_dict({**d, "no_such_setting": 1})


def test_train_warns_when_obs_keys_miss_what_the_sim_task_randomizes(tmp_path):
    """put_in_bowl places the bowl at random: trained on joint_pos gripper_pos object_pose the policy never sees it
    (1/50 successes). `postbc train` says so and names the task's recommended keys; the recommended keys are quiet."""
    from postbc_core.sim.demos import record_demos

    store = tmp_path / "pib.zarr"
    record_demos("put_in_bowl", 2, store, seed=0)
    assert TINY[:4] == ["--obs-keys", "state", "--action-key", "action"]
    base = TINY[4:]  # the budget flags, with this store's keys instead
    r = run_cli("train", "--dataset", str(store), "--out", str(tmp_path / "a"), *base, "--alpha", "0",
                "--action-key", "cmd_ee_delta", "--obs-keys", "joint_pos", "gripper_pos", "object_pose")
    assert r.returncode == 0, r.stderr
    assert "bowl position (x, y)" in r.stderr and "put_in_bowl" in r.stderr
    assert "--obs-keys joint_pos gripper_pos object_pos object_yaw_feat bowl_pos" in r.stderr
    r = run_cli("train", "--dataset", str(store), "--out", str(tmp_path / "b"), *base, "--alpha", "0",
                "--action-key", "cmd_ee_delta", "--obs-keys", "joint_pos", "gripper_pos", "object_pos",
                "object_yaw_feat", "bowl_pos")
    assert r.returncode == 0, r.stderr
    assert "randomizes" not in r.stderr


def test_run_logger_writes_the_main_ranks_curves_only(tmp_path):
    from postbc_core.runlog import METRICS_FILE, TB_DIR, RunLogger

    main, other = RunLogger(tmp_path / "main", progress=False), RunLogger(tmp_path / "other", is_main=False)
    for logger in (main, other):
        logger.scalars("policy", 10, {"loss": 0.5})
        logger.scalars("policy", 20, {"loss": 0.25, "lr": 1e-4})
        logger.close()
    rows = [json.loads(line) for line in (tmp_path / "main" / METRICS_FILE).read_text().splitlines()]
    assert rows == [{"tag": "policy", "step": 10, "loss": 0.5}, {"tag": "policy", "step": 20, "loss": 0.25, "lr": 1e-4}]
    assert list((tmp_path / "main" / TB_DIR).glob("events.out.tfevents.*"))
    assert not (tmp_path / "other").exists() and not other.progress  # a non-main rank writes and shows nothing


# -- --image-size: the training resolution chosen at training time ---------------------------------------------------
IMG_BUDGET = ["--action-key", "cmd_ee_delta", "--action-horizon", "2", "--n-obs-steps", "1", "--noise-net", "unet",
              "--unet-down-dims", "16", "32", "--ensemble-size", "2", "--ensemble-hidden", "16", "--ensemble-steps",
              "2", "--ensemble-batch-size", "4", "--steps", "2", "--batch-size", "4", "--log-every", "1",
              "--no-progress", "--device", "cpu", "--num-inference-steps", "2"]
IMG_KEYS = ("front_rgb", "wrist_rgb", "joint_pos", "gripper_pos")


@pytest.fixture(scope="module")
def store_64(tmp_path_factory):
    """2 lift_cube demos with both cameras recorded at 64x64."""
    from postbc_core.sim.demos import record_demos

    path = tmp_path_factory.mktemp("img64") / "demos.zarr"
    record_demos("lift_cube", 2, path, seed=0, cameras=("front", "wrist"), image_size=(64, 64))
    return path


def test_load_resizes_chunk_by_chunk_to_the_training_resolution(tmp_path, monkeypatch):
    """--image-size 32 32 from a 64x64 store (4 x 100 steps, two cameras): the arrays the sampler holds are 32x32 (a
    quarter of the stored bytes), the stored frames are read a bounded chunk at a time, so the peak of the load
    (tracemalloc: numpy's buffers) stays near the training-resolution arrays, far below the stored frames (11 MB peak
    at the stored size), and the frames equal resize_image of the stored ones."""
    import tracemalloc

    from postbc_core.data import EpisodeStore
    from postbc_core.robots.observation import resize_image
    from postbc_core.training import train as train_mod
    from postbc_core.training.config import TrainConfig

    rng = np.random.default_rng(0)
    path, n, frame_bytes = tmp_path / "img64.zarr", 400, 64 * 64 * 3
    with EpisodeStore.create(path) as store:
        for _ in range(4):
            store.add_episode({k: rng.integers(0, 256, (100, 64, 64, 3), dtype=np.uint8) for k in ("front_rgb",
                                                                                                "wrist_rgb")} |
                              {"joint_pos": rng.normal(size=(100, 6)).astype(np.float32),
                               "cmd_joint_pos": rng.normal(size=(100, 7)).astype(np.float32)}, source="teleop")
        stored = store.rows("front_rgb", 0, n)
    monkeypatch.setattr(train_mod, "FRAME_CHUNK_BYTES", 10 * frame_bytes)  # the default 64 MiB holds this store
    reads = []
    rows = EpisodeStore.rows
    monkeypatch.setattr(EpisodeStore, "rows", lambda self, key, a, b: reads.append((key, b - a)) or
                        rows(self, key, a, b))
    cfg = TrainConfig(dataset=path, out=tmp_path / "x", obs_keys=("front_rgb", "wrist_rgb", "joint_pos"),
                      action_key="cmd_joint_pos", image_size=(32, 32), alpha=0)
    train_mod.load_training_data(cfg)  # first: the modules it imports on first use (the sim registry, cv2)
    reads.clear()
    tracemalloc.start()
    try:
        data, _, train_ds, _, _, images = train_mod.load_training_data(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images == {k: {"stored": [64, 64], "trained": [32, 32]} for k in ("front_rgb", "wrist_rgb")}
    held = 0
    for k in ("front_rgb", "wrist_rgb"):
        arr = train_ds.sampler.data[k]
        assert arr.shape == (n, 32, 32, 3) and arr.dtype == np.uint8 and arr.nbytes == n * frame_bytes // 4
        held += arr.nbytes
    assert peak < held + 0.15 * 2 * n * frame_bytes, (peak, held)  # measured: 3.2 MB for 2.5 MB held, 9.8 MB stored
    image_reads = [r for k, r in reads if k.endswith("_rgb")]
    assert len(image_reads) == 2 * n // 10 and max(image_reads) == 10
    assert np.array_equal(data["front_rgb"], np.stack([resize_image(f, (32, 32)) for f in stored]))


def test_train_at_a_lower_image_size_records_it_and_evaluates_in_the_twin(store_64, tmp_path):
    """`postbc train --image-size 32 32` on 64x64 frames: policy and ensemble take 32x32 images, the checkpoint
    records both sizes, and `postbc eval` renders the twin's cameras at 32x32 to run it."""
    out = tmp_path / "run"
    r = run_cli("train", "--dataset", str(store_64), "--out", str(out), "--obs-keys", *IMG_KEYS, *IMG_BUDGET,
                "--image-size", "32", "32")
    assert r.returncode == 0, r.stderr[-3000:]
    policy = load_policy(out)
    assert policy.config.obs_shapes["front_rgb"] == policy.config.obs_shapes["wrist_rgb"] == (32, 32, 3)
    assert policy.info["train"]["image_size"] == {k: {"stored": [64, 64], "trained": [32, 32]}
                                                  for k in ("front_rgb", "wrist_rgb")}
    _, meta = tensor_layout(out / "ensemble.safetensors")
    assert meta["obs_shapes"]["front_rgb"] == [32, 32, 3]
    assert json.loads((out / "train_config.json").read_text())["image_size"] == [32, 32]
    r = run_cli("eval", "--checkpoint", str(out), "--task", "lift_cube", "--episodes", "1", "--max-steps", "3",
                "--out", str(tmp_path / "eval"), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["episodes"] == 1


def test_image_size_refusals_name_the_camera_both_shapes_and_the_fix(store_64, tmp_path):
    """A squash (64x64 into 32x48) and non-RGB frames (RGBA, grayscale) are refused before training, naming the
    camera key, both shapes and the fix."""
    from postbc_core.data import EpisodeStore
    from postbc_core.errors import ConfigError
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import image_sizes

    r = run_cli("train", "--dataset", str(store_64), "--out", str(tmp_path / "sq"), "--obs-keys", *IMG_KEYS,
                *IMG_BUDGET, "--image-size", "32", "48")
    assert r.returncode == 2 and "front_rgb: frame 64x64 (HxW) and the policy's 32x48 image have different aspect" \
        in r.stderr and "--image-size 32 32 or --image-size 48 48" in r.stderr, r.stderr
    assert not (tmp_path / "sq").exists()
    with pytest.raises(ConfigError, match=r"--image-size 7 7: give H W, each at least 8 px"):
        TrainConfig(dataset=store_64, obs_keys=IMG_KEYS, image_size=(7, 7))
    cfg = TrainConfig(dataset=store_64, obs_keys=("front_rgb",), image_size=(24, 32))
    with pytest.raises(ConfigError, match=r"front_rgb: frames of shape \(48, 64, 4\) are RGBA, the policy takes RGB "
                                          r"\(24, 32, 3\); publish / record rgb8"):
        image_sizes(cfg, {"front_rgb": ((48, 64, 4), np.dtype(np.uint8))})
    with pytest.raises(ConfigError, match=r"frames of shape \(48, 64\) are grayscale"):
        image_sizes(cfg, {"front_rgb": ((48, 64), np.dtype(np.uint8))})
    # rounding is not a squash: 48x64 -> 24x32 exactly, 100x133 from 480x640 within a pixel
    assert image_sizes(cfg, {"front_rgb": ((48, 64, 3), np.dtype(np.uint8))})["front_rgb"]["trained"] == [24, 32]
    cfg = TrainConfig(dataset=store_64, obs_keys=("front_rgb",), image_size=(100, 133))
    assert image_sizes(cfg, {"front_rgb": ((480, 640, 3), np.dtype(np.uint8))})["front_rgb"]["stored"] == [480, 640]
    with EpisodeStore.open(store_64) as s:  # without --image-size: the stored size, recorded as both
        schema = s.schema()
    cfg = TrainConfig(dataset=store_64, obs_keys=IMG_KEYS)
    assert image_sizes(cfg, schema)["wrist_rgb"] == {"stored": [64, 64], "trained": [64, 64]}


def test_postbc_with_a_shared_image_encoder(store_64, tmp_path):
    """--ensemble-encoder shared: the ensemble holds one encoder (not K), its metadata and the checkpoint say so, the
    posterior is computed as usual; a state-only run and a run under several ranks are refused with the reason."""
    out = tmp_path / "run"
    r = run_cli("train", "--dataset", str(store_64), "--out", str(out), "--obs-keys", *IMG_KEYS, *IMG_BUDGET,
                "--image-size", "32", "32", "--image-encoder", "conv", "--ensemble-encoder", "shared")
    assert r.returncode == 0, r.stderr[-3000:]
    layout, meta = tensor_layout(out / "ensemble.safetensors")
    assert meta["shared_encoder"] is True
    from postbc_core.models.obs_encoder import ObsEncoder

    policy = load_policy(out)
    one = ObsEncoder(policy.config.obs_shapes, 1, rgb_feature_dim=policy.config.rgb_feature_dim, norm="group",
                     image_encoder="conv")
    stored = sum(math.prod(shape) for k, shape in layout.items() if k.startswith("encoder."))
    assert stored == sum(p.numel() for p in one.parameters()), "the K members must share one encoder's weights"
    assert layout["head.layers.0.weight"][0] == meta["num_members"] == 2  # K heads
    assert policy.info["train"]["ensemble_encoder"] == "shared"
    assert (out / "posterior.json").is_file()
    r = run_cli("train", "--dataset", str(store_64), "--out", str(tmp_path / "state"), "--obs-keys", "joint_pos",
                "gripper_pos", *IMG_BUDGET, "--ensemble-encoder", "shared")
    assert r.returncode == 2 and "--ensemble-encoder shared applies to image policies" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "state" / "train_config.json").exists()  # refused before anything was written


def test_demo_resampling_spreads_the_posterior_at_seen_states_windows_do_not(coverage_store, tmp_path):
    """Issue 23's mechanism: with whole-demo resampling (the default) a member's prediction at a training state whose
    demo it left out is its error on an unseen demo, so where states are covered by few demos the spread at the demos'
    own states is that leave-out error; resampling windows keeps every demo in every member and gives a markedly
    smaller spread on the same data, ensemble and seed (a bootstrap that ignored --bootstrap fails this)."""
    ens = ["--ensemble-size", "8", "--ensemble-hidden", "64", "64", "--ensemble-steps", "600",
           "--ensemble-batch-size", "64", "--steps", "2", "--batch-size", "8"]
    tiny = list(TINY)
    for flag in ("--ensemble-size", "--ensemble-steps", "--ensemble-batch-size", "--steps", "--batch-size"):
        i = tiny.index(flag)
        del tiny[i:i + 2]
    i = tiny.index("--ensemble-hidden")
    del tiny[i:i + 3]
    std = {}
    for name, extra in (("demos", []), ("windows", ["--bootstrap", "state_action"])):
        r = run_cli("train", "--dataset", str(coverage_store), "--out", str(tmp_path / name), *tiny, *ens, *extra)
        assert r.returncode == 0, r.stderr
        std[name] = json.loads((tmp_path / name / "posterior.json").read_text())["mean_std"]
    assert std["windows"] < 0.7 * std["demos"], std
