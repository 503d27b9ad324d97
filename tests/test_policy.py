"""Diffusion policy: the two verbs, determinism given the initial noise, checkpoints, and bad input."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from postbc_core import load_policy
from postbc_core.data.normalizer import LinearNormalizer
from postbc_core.errors import CheckpointError, ConfigError
from postbc_core.policies.checkpoint import save_checkpoint, save_policy
from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig, TargetNoise


def make_policy(noise_net="mlp", rgb=False, horizon=4, steps=8):
    rng = np.random.default_rng(0)
    shapes = {"state": (5,)}
    if rgb:
        shapes["cam_rgb"] = (24, 24, 3)
    cfg = PolicyConfig(obs_shapes=shapes, action_dim=3, n_obs_steps=2, action_horizon=horizon, noise_net=noise_net,
                       mlp_hidden=(64, 64), unet_down_dims=(16, 32), rgb_feature_dim=32, num_inference_steps=steps)
    norm = LinearNormalizer().fit({"state": rng.normal(2.0, 3.0, (500, 5))}, default_mode="gaussian")
    norm.fit({"action": rng.uniform(-2, 5, (500, 3))}, default_mode="limits")
    torch.manual_seed(0)
    return DiffusionPolicy(cfg, norm).eval()


def obs_for(policy, batch=None):
    rng = np.random.default_rng(1)
    out = {}
    for k, shape in policy.config.obs_shapes.items():
        lead = (policy.config.n_obs_steps,) if batch is None else (batch, policy.config.n_obs_steps)
        if len(shape) == 3:
            out[k] = rng.integers(0, 256, (*lead, *shape), dtype=np.uint8)
        else:
            out[k] = rng.normal(size=(*lead, *shape)).astype(np.float32)
    return out


@pytest.mark.parametrize("noise_net,rgb", [("mlp", False), ("unet", False), ("mlp", True)])
def test_predict_action_shapes_and_determinism(noise_net, rgb):
    p = make_policy(noise_net, rgb)
    one, many = obs_for(p), obs_for(p, batch=3)
    assert p.predict_action(one).shape == (4, 3)
    assert p.predict_action(one, num_samples=5).shape == (5, 4, 3)
    assert p.predict_action(many).shape == (3, 4, 3)
    assert p.predict_action(many, num_samples=2).shape == (3, 2, 4, 3)
    w = np.random.default_rng(2).normal(size=(3, 4, 3)).astype(np.float32)
    a1, a2 = p.predict_action(many, noise=w), p.predict_action(many, noise=w)
    np.testing.assert_array_equal(a1, a2)  # DSRL relies on this
    assert not np.allclose(a1, p.predict_action(many, noise=w + 0.5))
    # Outputs are unnormalized into the demonstrated action range (sampler clips to [-1, 1] normalized).
    assert a1.min() >= -2.0 - 1e-3 and a1.max() <= 5.0 + 1e-3


def test_compute_loss_trains_and_perturbation_changes_targets():
    p = make_policy().train()
    batch = {"obs": {k: torch.as_tensor(v) for k, v in obs_for(p, batch=16).items()},
             "action": torch.rand(16, 4, 3) * 7 - 2}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    base = p.compute_loss(batch, None, g())
    same = p.compute_loss(batch, TargetNoise(torch.ones(16, 12), 0.0), g())
    assert torch.equal(base, same)  # alpha = 0 is BC exactly
    perturbed = p.compute_loss(batch, TargetNoise(torch.ones(16, 12), 1.0), g())
    assert not torch.equal(base, perturbed)
    opt = torch.optim.Adam([q for q in p.parameters() if q.requires_grad], lr=1e-3)
    first = None
    for _ in range(60):
        loss = p.compute_loss(batch)
        opt.zero_grad(), loss.backward(), opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < first


def test_checkpoint_round_trip(tmp_path):
    p = make_policy("unet", rgb=True)
    path = save_policy(p, tmp_path / "policy.safetensors", {"train": {"alpha": 1.0}})
    q = load_policy(tmp_path)  # the run directory is enough
    assert q.info["train"]["alpha"] == 1.0 and q.config == p.config
    o = obs_for(p, batch=2)
    w = np.random.default_rng(3).normal(size=(2, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(p.predict_action(o, noise=w), q.predict_action(o, noise=w), atol=1e-6)
    assert not q.training
    # The file is plain safetensors: no pickle anywhere.
    assert path.read_bytes()[8:9] == b"{"


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nope.safetensors")
    bad = tmp_path / "trunc.safetensors"
    save_policy(make_policy(), bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_policy(bad)
    pt = tmp_path / "model.pt"
    torch.save({"a": 1}, pt)
    with pytest.raises(CheckpointError, match="pickle"):
        load_policy(pt)
    ens = save_checkpoint(tmp_path / "ens.safetensors", "ensemble", {"w": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="expected 'postbc-policy'"):
        load_policy(ens)
    future = tmp_path / "future.safetensors"
    save_checkpoint(future, "policy", {"w": torch.zeros(2)}, {"policy_config": {}})
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(future), "pt") as f:
        meta = json.loads(f.metadata()["postbc"])
    meta["format_version"] = 99
    save_file({"w": torch.zeros(2)}, str(future), metadata={"postbc": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="upgrade postbc_core"):
        load_policy(future)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_device_is_named(tmp_path):
    save_policy(make_policy(), tmp_path / "policy.safetensors")
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_policy(tmp_path, device="cuda")


def test_bad_observations_and_noise_are_rejected():
    p = make_policy()
    o = obs_for(p)
    with pytest.raises(ConfigError, match="missing keys"):
        p.predict_action({})
    with pytest.raises(ConfigError, match=r"has shape \(5,\)"):
        p.predict_action({"state": np.zeros(5, np.float32)})
    nan = {"state": o["state"].copy()}
    nan["state"][0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        p.predict_action(nan)
    with pytest.raises(ConfigError, match="noise has shape"):
        p.predict_action(o, noise=np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="noise contains NaN"):
        p.predict_action(o, noise=np.full((4, 3), np.nan))


def test_policy_config_validation():
    with pytest.raises(ConfigError, match="obs_shapes is empty"):
        PolicyConfig(obs_shapes={}, action_dim=2)
    with pytest.raises(ConfigError, match="num_inference_steps"):
        PolicyConfig(obs_shapes={"s": (2,)}, action_dim=2, num_inference_steps=200)
    with pytest.raises(ConfigError, match="unknown fields"):
        PolicyConfig.from_dict({"obs_shapes": {"s": [2]}, "action_dim": 2, "flux_capacitor": 1})


# -- issue 15: normalizer floor, policy-side input clipping, DDIM range covering PostBC's targets ---------------------
def test_normalizer_floor_keeps_near_constant_features_from_being_amplified():
    """A cube's tilt quaternion components barely vary in demos (std ~0.002) while its yaw components do (~0.2):
    plain z-scoring multiplies the tilt by ~500, so a nudged cube reads hundreds of standard deviations out."""
    from postbc_core.policies.settings import PolicySettings
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import build_policy

    rng = np.random.default_rng(0)
    n = 400
    yaw = rng.uniform(-0.7, 0.7, n)
    quat = np.stack([np.cos(yaw / 2), rng.normal(0, 0.002, n), rng.normal(0, 0.002, n), np.sin(yaw / 2)], 1)
    data = {"object_pose": quat.astype(np.float32), "action": rng.uniform(-1, 1, (n, 7)).astype(np.float32)}
    cfg = TrainConfig(dataset="unused.zarr", obs_keys=("object_pose",), action_key="action",
                      policy=PolicySettings(action_horizon=1))
    policy = build_policy(cfg, data, np.arange(n))
    scale = policy.normalizer.scale_of("object_pose").numpy()
    yaw_std = quat[:, 3].std()
    assert scale[3] == pytest.approx(1 / yaw_std, rel=1e-4)  # features that vary keep their z-score
    assert scale[1] <= 1 / (0.1 * yaw_std) * 1.001 and scale[1] < 100  # plain z-score: ~500
    # The floor is a documented, settable fraction; 0 gives back the plain z-score.
    plain = build_policy(dataclasses.replace(cfg, obs_std_floor=0.0), data, np.arange(n))
    assert plain.normalizer.scale_of("object_pose")[1] > 300


def test_policy_clips_out_of_distribution_inputs_and_counts_them(caplog):
    """The frozen policy itself clips its normalized inputs (not only the RL agent), and says so."""
    policy = make_policy()
    mean = -policy.normalizer.params["state__offset"] / policy.normalizer.params["state__scale"]
    std = 1 / policy.normalizer.params["state__scale"]
    base = np.tile(mean.numpy(), (2, 1)).astype(np.float32)
    far, edge = base.copy(), base.copy()
    far[:, 2] += 300 * std[2].item()
    edge[:, 2] += 5 * std[2].item()
    noise = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="postbc_core.policies.diffusion"):
        a_far = policy.predict_action({"state": far}, noise=noise)
    a_edge = policy.predict_action({"state": edge}, noise=noise)
    np.testing.assert_allclose(a_far, a_edge, atol=1e-5)  # 300 std out acts like 5 std out
    assert policy.obs_clip_counts == {"state": 1} and policy.obs_count == 2
    assert "'state' feature 2 is 300.0 training-data standard deviations out" in caplog.text
    policy.predict_action({"state": base}, noise=noise)
    assert policy.obs_clip_counts == {"state": 1}  # in-distribution inputs are not counted


def test_ddim_clip_range_covers_postbc_targets():
    """PostBC trains on a + alpha L z, which leaves [-1, 1] (the gripper sits at exactly +-1); a sampler that clips
    its x0 estimate to [-1, 1] cuts that perturbation off."""
    from postbc_core.policies.schedulers import NoiseSchedule
    from postbc_core.training.posterior import Posterior

    target = torch.full((1, 4, 2), 1.3)

    def eps_for(schedule):  # the epsilon of a network that is sure x0 = target
        abar = schedule.alphas_cumprod.float()
        return lambda x, t: (x - abar[t].sqrt().view(-1, 1, 1) * target) / (1 - abar[t]).sqrt().view(-1, 1, 1)

    post = Posterior(factor=torch.full((10, 8), 0.1), kind="diagonal", mean_std=0.1)
    wide = post.sample_range(alpha=1.0)
    assert wide == pytest.approx(1.3)
    assert Posterior(factor=torch.zeros(10, 8), kind="diagonal", mean_std=0.0).sample_range(1.0) == 1.0
    for rng_, expect in ((1.0, 1.0), (wide, 1.3)):
        s = NoiseSchedule(100, clip_sample_range=rng_)
        x = s.ddim_sample(eps_for(s), torch.randn(1, 4, 2, generator=torch.Generator().manual_seed(0)), 8)
        np.testing.assert_allclose(x.numpy(), expect, atol=1e-4)
    # The policy carries the range in its config, so a reloaded checkpoint samples the same way.
    policy = make_policy()
    policy.set_sample_range(wide)
    assert policy.schedule.clip_sample_range == pytest.approx(1.3)
    assert PolicyConfig.from_dict(policy.config.to_dict()).clip_sample_range == pytest.approx(1.3)
    with pytest.raises(ConfigError, match="clip_sample_range must be >= 1"):
        policy.set_sample_range(0.5)
