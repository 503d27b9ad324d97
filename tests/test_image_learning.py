"""An image policy learns from pixels: a synthetic store whose action is where a red blob is in the frame.

The policy (`postbc train`'s train(), the small conv encoder, BC) must predict the blob's position on frames it never
saw far better than the best constant; with the encoder's image input replaced by zeros the same recipe must not,
which shows the first test passes through the pixels (a broken encoder, crop or image scaling fails it) and not
through some leak. Also: the encoder choice travels in the checkpoint, and old checkpoints load as ResNet-18.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from postbc_core.data.store import EpisodeStore
from postbc_core.errors import ConfigError
from postbc_core.models import obs_encoder as obs_encoder_mod
from postbc_core.policies.checkpoint import load_policy
from postbc_core.policies.diffusion import PolicyConfig
from postbc_core.policies.settings import PolicySettings
from postbc_core.training.config import TrainConfig
from postbc_core.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, BLOB = 32, 5  # frame side and blob side, pixels
STEPS = 150
LEARNED_MAX = 0.35
"""The learned policy's RMSE must be below this fraction of the best constant's (measured: see the report)."""
BLIND_MIN = 0.7
"""With zeroed images the RMSE must stay above this fraction of the constant's (it cannot do better than it)."""


def blob_frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, SIZE, SIZE, 3) uint8 frames of a red square on a noisy grey background, and (n, 2) actions: the square's
    centre (x, y), scaled to [-1, 1] over the positions it can take."""
    lo, hi = 2, SIZE - 2 - BLOB  # keep the blob inside the center crop too
    xy = rng.integers(lo, hi + 1, size=(n, 2))
    frames = rng.integers(90, 140, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    for f, (x, y) in zip(frames, xy):
        f[y:y + BLOB, x:x + BLOB] = (230, 30, 30)
    action = (2.0 * (xy - lo) / (hi - lo) - 1.0).astype(np.float32)
    return frames, action


def make_store(path, rng: np.random.Generator, episodes: int = 16, length: int = 32):
    with EpisodeStore.create(path) as store:
        for _ in range(episodes):
            frames, action = blob_frames(rng, length)
            # An uninformative low-dim key beside the camera, as a real policy has joint positions.
            store.add_episode({"cam_rgb": frames, "noise": rng.normal(size=(length, 3)).astype(np.float32),
                               "action": action}, task="blob")
    return path


def train_and_score(tmp_path, seed: int = 0, image_encoder: str = "conv", steps: int = STEPS) -> tuple[float, float]:
    """Trains a BC policy on the blob store; returns (its RMSE, the best constant's RMSE) on new frames."""
    rng = np.random.default_rng(seed)
    store = make_store(tmp_path / "blob.zarr", rng)
    run = train(TrainConfig(dataset=store, out=tmp_path / "run", obs_keys=("cam_rgb", "noise"), action_key="action",
                            policy=PolicySettings(image_encoder=image_encoder, action_horizon=1,
                                                  mlp_hidden=(256, 256)),
                            alpha=0.0, steps=steps, batch_size=64, lr=1e-3, warmup_steps=20, seed=seed, device="cpu",
                            progress=False, log_every=steps))
    policy = load_policy(run / "policy.safetensors", device="cpu")
    assert policy.config.image_encoder == image_encoder
    frames, target = blob_frames(np.random.default_rng(seed + 1000), 128)
    obs = {"cam_rgb": frames[:, None], "noise": np.random.default_rng(2).normal(size=(128, 1, 3)).astype(np.float32)}
    # Zero initial noise: the deterministic DDIM sample, so the score does not depend on a noise draw.
    pred = policy.predict_action(obs, noise=np.zeros((128, 1, 2), np.float32))[:, 0]
    rmse = float(np.sqrt(((pred - target) ** 2).mean()))
    const = float(np.sqrt(((target - target.mean(0)) ** 2).mean()))
    print(f"blob test: policy RMSE {rmse:.3f}, best constant {const:.3f}, ratio {rmse / const:.3f}")
    return rmse, const


def test_conv_image_policy_learns_blob_position_from_pixels(tmp_path):
    rmse, const = train_and_score(tmp_path)
    assert rmse < LEARNED_MAX * const, (rmse, const)


@pytest.mark.slow
def test_resnet18_image_policy_learns_blob_position_from_pixels(tmp_path):
    """The paper's encoder on the same task: it needs twice the steps (150 gave 0.70 of the constant's RMSE, 300 gave
    0.17) at about 10x the conv encoder's time per step (here: 300 steps in 198 s vs 150 in 10 s), hence slow."""
    rmse, const = train_and_score(tmp_path, image_encoder="resnet18", steps=2 * STEPS)
    assert rmse < LEARNED_MAX * const, (rmse, const)


def test_blob_policy_fails_when_the_encoder_sees_zeros(tmp_path, monkeypatch):
    """The companion check: the same training with every image zeroed where it enters the encoder must not learn."""
    original = obs_encoder_mod.ObsEncoder.encode_rgb

    def blind(self, key, x):
        return original(self, key, torch.zeros_like(x))

    monkeypatch.setattr(obs_encoder_mod.ObsEncoder, "encode_rgb", blind)
    rmse, const = train_and_score(tmp_path)
    assert rmse > BLIND_MIN * const, (rmse, const)


def test_image_encoder_travels_in_the_checkpoint_and_old_ones_load_as_resnet18():
    cfg = PolicyConfig(obs_shapes={"cam_rgb": (16, 16, 3), "q": (2,)}, action_dim=2, image_encoder="conv")
    d = cfg.to_dict()
    assert d["image_encoder"] == "conv" and PolicyConfig.from_dict(d).image_encoder == "conv"
    # A checkpoint written before the setting existed has no such field: it was a ResNet-18 policy.
    del d["image_encoder"]
    assert PolicyConfig.from_dict(d).image_encoder == "resnet18"
    assert "image_encoder" in {f.name for f in dataclasses.fields(PolicySettings)}
    with pytest.raises(ConfigError, match="image_encoder"):
        PolicySettings(image_encoder="vit").check()
    with pytest.raises(ConfigError, match="--image-encoder"):
        TrainConfig(dataset="x.zarr", obs_keys=("q",), policy=PolicySettings(image_encoder="vit"))
