"""Tests of postbc_core.models: batched ensemble, image encoder, ResNet-18, diffusion noise nets.

Shapes: K members, B batch, To obs steps, Ta action steps, Da action dim. Sizes are tiny so the suite stays fast.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from postbc_core.errors import CheckpointError, ConfigError, PostBCError
from postbc_core.models import (
    BatchedLinear,
    ConditionalUnet1D,
    ConvKeypointEncoder,
    EnsembleRegressor,
    MLPNoiseNet,
    ObsEncoder,
    SinusoidalPosEmb,
    SpatialSoftmax,
    gaussian_nll,
    load_torchvision_weights,
    resnet18,
)
from postbc_core.models import ensemble as ensemble_mod

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- helpers

def member_mlp(ens: EnsembleRegressor, k: int) -> nn.Sequential:
    """An ordinary nn.Sequential MLP holding a copy of member k's head weights (the reference implementation)."""
    return ens.head.member(k)


def lowdim_ensemble(k=3, head="mse", hidden=(16, 16), seed=0, **kw) -> EnsembleRegressor:
    torch.manual_seed(seed)
    return EnsembleRegressor(k, {"state": (5,), "gripper": (1,)}, 2, 4, hidden_dims=hidden, head=head, **kw)


def lowdim_obs(k=None, b=6, seed=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (b,) if k is None else (k, b)
    return {"state": torch.randn(*lead, 2, 5, generator=g), "gripper": torch.randn(*lead, 2, 1, generator=g)}


def flat_obs(nobs: dict[str, torch.Tensor], k: int | None = None) -> torch.Tensor:
    """What the ensemble feeds its head for low-dim keys: sorted keys, (To * Ds) flattened, concatenated."""
    parts = []
    for key in sorted(nobs):
        x = nobs[key] if k is None else nobs[key][k]
        parts.append(x.reshape(x.shape[0], -1))
    return torch.cat(parts, dim=-1)


# ---------------------------------------------------------------- BatchedLinear

@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 4), b=st.integers(1, 5), din=st.integers(1, 6), dout=st.integers(1, 6),
       shared=st.booleans())
def test_batched_linear_equals_loop_of_linears(k, b, din, dout, shared):
    torch.manual_seed(k * 100 + din)
    bl = BatchedLinear(k, din, dout)
    lins = []
    for m in range(k):
        lin = nn.Linear(din, dout)
        with torch.no_grad():
            lin.weight.copy_(bl.weight[m].T)
            lin.bias.copy_(bl.bias[m, 0])
        lins.append(lin)
    x = torch.randn(b, din) if shared else torch.randn(k, b, din)
    y = bl(x)
    ref = torch.stack([lins[m](x if shared else x[m]) for m in range(k)])
    assert y.shape == (k, b, dout)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    for m in range(k):
        torch.testing.assert_close(bl.weight.grad[m], lins[m].weight.grad.T)
        torch.testing.assert_close(bl.bias.grad[m, 0], lins[m].bias.grad)


def test_batched_linear_init_matches_nn_linear_bounds_and_members_differ():
    torch.manual_seed(0)
    bl = BatchedLinear(8, 64, 32)
    bound = 1 / 64 ** 0.5
    assert bl.weight.abs().max() <= bound and bl.bias.abs().max() <= bound
    # Uniform(-b, b) has std b / sqrt(3): the draw must use the whole nn.Linear range, not a narrower one.
    assert abs(bl.weight.std().item() - bound / 3 ** 0.5) < 0.1 * bound
    for m in range(1, 8):
        assert not torch.allclose(bl.weight[0], bl.weight[m])


def test_batched_linear_rejects_wrong_member_count():
    bl = BatchedLinear(3, 4, 2)
    with pytest.raises(PostBCError, match="neither"):
        bl(torch.randn(2, 5, 4))


# ---------------------------------------------------------------- EnsembleRegressor (low-dim)

@pytest.mark.parametrize("shared", [True, False])
def test_ensemble_equals_loop_of_mlps_forward_and_grad(shared):
    k = 3
    ens = lowdim_ensemble(k)
    nobs = lowdim_obs(None if shared else k)
    target = torch.randn(k, 6, 4)
    losses = ens.loss(nobs, target)
    losses.sum().backward()
    out = ens(nobs).mean
    for m in range(k):
        mlp = member_mlp(ens, m)
        x = flat_obs(nobs, None if shared else m)
        ref = mlp(x)
        torch.testing.assert_close(out[m], ref)
        ref_loss = F.mse_loss(ref, target[m])
        torch.testing.assert_close(losses[m], ref_loss)
        ref_loss.backward()
        for i, lin in enumerate(l for l in mlp if isinstance(l, nn.Linear)):
            torch.testing.assert_close(ens.head.layers[i].weight.grad[m], lin.weight.grad.T)
            torch.testing.assert_close(ens.head.layers[i].bias.grad[m, 0], lin.bias.grad)


def test_ensemble_members_initialised_differently():
    ens = lowdim_ensemble(4)
    out = ens(lowdim_obs()).mean
    for m in range(1, 4):
        assert not torch.allclose(out[0], out[m], atol=1e-4)
        for layer in ens.head.layers:
            assert not torch.allclose(layer.weight[0], layer.weight[m])


def test_shared_and_per_member_inputs_agree():
    k = 3
    ens = lowdim_ensemble(k)
    nobs = lowdim_obs()
    expanded = {key: v.unsqueeze(0).expand(k, *v.shape) for key, v in nobs.items()}
    torch.testing.assert_close(ens(nobs).mean, ens(expanded).mean)
    # Mixed: one key per member, the other shared.
    mixed = {"state": expanded["state"], "gripper": nobs["gripper"]}
    torch.testing.assert_close(ens(nobs).mean, ens(mixed).mean)
    # Shared vs per-member targets too.
    t = torch.randn(6, 4)
    torch.testing.assert_close(ens.loss(nobs, t), ens.loss(nobs, t.expand(k, 6, 4)))


def test_ensemble_deterministic_under_seed():
    a, b = lowdim_ensemble(3, seed=7), lowdim_ensemble(3, seed=7)
    c = lowdim_ensemble(3, seed=8)
    nobs = lowdim_obs()
    torch.testing.assert_close(a(nobs).mean, b(nobs).mean)
    assert not torch.allclose(a(nobs).mean, c(nobs).mean)


def test_gaussian_nll_matches_torch_on_hand_built_tensors():
    mean = torch.tensor([[[0.0, 1.0], [2.0, -1.0]], [[0.5, 0.5], [0.0, 0.0]]])  # (K=2, B=2, D=2)
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, -3.0]]])
    log_var = torch.tensor([[[0.0, -1.0], [1.0, 2.0]], [[-2.0, 0.5], [0.0, 3.0]]])
    got = gaussian_nll(mean, log_var, target)
    assert got.shape == (2,)
    for m in range(2):
        ref = F.gaussian_nll_loss(mean[m], target[m], log_var[m].exp(), full=False, reduction="mean")
        torch.testing.assert_close(got[m], ref)
    # Hand value for member 0, first entry: 0.5 * (0 + 1 / 1) = 0.5.
    torch.testing.assert_close(gaussian_nll(mean[:1, :1, :1], log_var[:1, :1, :1], target[:1, :1, :1]),
                               torch.tensor([0.5]))


def test_gaussian_head_loss_matches_torch_and_log_var_is_bounded():
    k = 3
    ens = lowdim_ensemble(k, head="gaussian")
    nobs = lowdim_obs()
    target = torch.randn(k, 6, 4)
    out = ens(nobs)
    assert out.log_var is not None and out.log_var.shape == out.mean.shape == (k, 6, 4)
    losses = ens.loss(nobs, target)
    for m in range(k):
        ref = F.gaussian_nll_loss(out.mean[m], target[m], out.log_var[m].exp(), full=False)
        torch.testing.assert_close(losses[m], ref)
    # Drive the raw log-variance far out of range: the soft clamp keeps it inside the bounds, gradient alive.
    with torch.no_grad():
        ens.head.layers[-1].bias[:, :, 4:] = 1e4
    lv = ens(nobs).log_var
    assert lv.max() <= ensemble_mod.LOG_VAR_MAX + 1e-4
    with torch.no_grad():
        ens.head.layers[-1].bias[:, :, 4:] = -1e4
    lv = ens(nobs).log_var
    assert lv.min() >= ensemble_mod.LOG_VAR_MIN - 1e-4


@pytest.mark.parametrize("head", ["mse", "gaussian"])
def test_member_losses_are_independent(head):
    k = 3
    ens = lowdim_ensemble(k, head=head)
    nobs = lowdim_obs(k)
    target = torch.randn(k, 6, 4)
    for m in range(k):
        ens.zero_grad()
        ens.loss(nobs, target)[m].backward()
        for name, p in ens.named_parameters():
            others = torch.cat([p.grad[j].flatten() for j in range(k) if j != m])
            assert torch.count_nonzero(others) == 0, f"{name}: member {m}'s loss touched another member"
            assert torch.count_nonzero(p.grad[m]) > 0, f"{name}: member {m}'s loss does not reach its parameters"


@pytest.mark.parametrize("head", ["mse", "gaussian"])
def test_training_lowers_loss_on_tiny_regression(head):
    torch.manual_seed(0)
    k, n = 4, 64
    x = torch.rand(n, 1, 3) * 2 - 1
    y = torch.cat([torch.sin(3 * x[:, 0, :1]), x[:, 0, 1:2] * x[:, 0, 2:3]], dim=-1)  # (n, 2)
    ens = EnsembleRegressor(k, {"state": (3,)}, 1, 2, hidden_dims=(32, 32), head=head, activation="mish")
    # Bootstrap-style per-member resamples: every member gets its own index set.
    idx = torch.randint(0, n, (k, n))
    nobs, target = {"state": x[idx]}, y[idx]
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    with torch.no_grad():
        first_mse = F.mse_loss(ens(nobs).mean, target).item()
        first_loss = ens.loss(nobs, target)
    for _ in range(300):
        opt.zero_grad()
        ens.loss(nobs, target).sum().backward()
        opt.step()
    with torch.no_grad():
        mse = (ens(nobs).mean - target).square().mean(dim=(1, 2))
        loss = ens.loss(nobs, target)
    # Every member learns (its own objective drops), and its mean fits the function far better than at init.
    # (The NLL head spends part of its budget on the variance, so its mean fit is held to a looser bar.)
    assert (loss < first_loss - (0.5 if head == "gaussian" else 0.0)).all(), (first_loss, loss)
    assert (mse < (0.1 if head == "mse" else 0.3) * first_mse).all(), (first_mse, mse)


def test_predict_chunks_match_forward_and_restore_mode():
    ens = lowdim_ensemble(2)
    nobs = lowdim_obs(b=7)
    ens.train()
    full = ens(nobs).mean.detach()
    got = ens.predict(nobs, batch_size=3)
    torch.testing.assert_close(got, full)
    assert ens.training and not got.requires_grad
    per_member = lowdim_obs(k=2, b=5)
    torch.testing.assert_close(ens.predict(per_member, batch_size=2), ens(per_member).mean.detach())


def test_ensemble_input_errors_name_the_problem():
    ens = lowdim_ensemble(3)
    with pytest.raises(PostBCError, match="gripper"):
        ens({"state": torch.randn(4, 2, 5)})
    with pytest.raises(PostBCError, match=r"nobs\['state'\]"):
        ens({"state": torch.randn(4, 3, 5), "gripper": torch.randn(4, 2, 1)})
    with pytest.raises(PostBCError, match="ntarget"):
        ens.loss(lowdim_obs(), torch.randn(6, 5))
    with pytest.raises(ConfigError, match="head"):
        EnsembleRegressor(2, {"s": (3,)}, 1, 2, head="laplace")
    with pytest.raises(ConfigError, match="activation"):
        EnsembleRegressor(2, {"s": (3,)}, 1, 2, activation="swishy")


# ---------------------------------------------------------------- RGB ensemble

@pytest.mark.parametrize("image_encoder", ["resnet18", "conv"])
def test_rgb_ensemble_forward_backward_and_own_encoders(tmp_path, image_encoder):
    torch.manual_seed(0)
    k, b = 2, 2
    ens = EnsembleRegressor(k, {"cam": (32, 32, 3), "state": (3,)}, 1, 4, hidden_dims=(16,), head="gaussian",
                            image_encoder=image_encoder)
    backbone = ens.encoder.rgb_encoders["cam"]
    conv = (backbone.conv1 if image_encoder == "resnet18" else backbone.conv[0]).weight  # both 7x7 to 64 channels
    assert conv.shape == (k, 64, 3, 7, 7)
    assert not torch.allclose(conv[0], conv[1]), "members must not share encoder weights"
    g = torch.Generator().manual_seed(1)
    nobs = {"cam": torch.randint(0, 256, (b, 1, 32, 32, 3), dtype=torch.uint8, generator=g),
            "state": torch.randn(b, 1, 3, generator=g)}
    target = torch.randn(b, 4, generator=g)
    out = ens(nobs)
    assert out.mean.shape == (k, b, 4) and torch.isfinite(out.mean).all()
    # Member 0's loss trains member 0's encoder only.
    ens.loss(nobs, target)[0].backward()
    for name, p in ens.encoder.named_parameters():
        assert torch.count_nonzero(p.grad[1]) == 0, name
    assert torch.count_nonzero(conv.grad[0]) > 0
    # Per-member image batches give each member its own images: member 1 sees different pixels -> its output moves.
    ens.eval()
    per_member = {"cam": torch.stack([nobs["cam"], 255 - nobs["cam"]]), "state": nobs["state"]}
    with torch.no_grad():
        shared_out, member_out = ens(nobs).mean, ens(per_member).mean
    torch.testing.assert_close(shared_out[0], member_out[0])
    assert not torch.allclose(shared_out[1], member_out[1])
    # Augmentation is per member: with identical encoder weights, eval features agree, train-mode crops differ.
    with torch.no_grad():
        for p in ens.encoder.parameters():
            p[1] = p[0]
        ens.eval()
        f_eval = ens.features(nobs)
        ens.train()
        f_train = ens.features(nobs)
    torch.testing.assert_close(f_eval[0], f_eval[1])
    assert not torch.allclose(f_train[0], f_train[1])
    # A state dict round-trips into a freshly built ensemble of the same config (what checkpoints rely on).
    torch.manual_seed(5)
    clone = EnsembleRegressor(k, {"cam": (32, 32, 3), "state": (3,)}, 1, 4, hidden_dims=(16,), head="gaussian",
                              image_encoder=image_encoder)
    clone.load_state_dict(ens.state_dict())
    torch.testing.assert_close(clone.predict(nobs), ens.predict(nobs))
    # Pretrained weights go into every member's encoder (ResNet-18 only: the conv encoder has none).
    src = resnet18(norm="batch")
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    if image_encoder == "conv":
        with pytest.raises(ConfigError, match="torchvision"):
            ens.load_torchvision_weights(tmp_path / "r18.pth")
        return
    ens.load_torchvision_weights(tmp_path / "r18.pth")
    for m in range(k):
        torch.testing.assert_close(ens.encoder.rgb_encoders["cam"].layer3[1].conv2.weight[m],
                                   src.layer3[1].conv2.weight)


# ---------------------------------------------------------------- conv encoder

def test_spatial_softmax_keypoint_is_where_the_bright_pixel_is():
    ss = SpatialSoftmax(1, num_keypoints=1)
    with torch.no_grad():  # one keypoint map = 50 x the input: a single bright pixel takes all the softmax mass
        ss.keypoints.weight.fill_(50.0)
        ss.keypoints.bias.zero_()
    x = torch.zeros(3, 1, 9, 17)  # non-square, so x and y cannot be swapped unnoticed
    x[0, 0, 0, 0] = x[1, 0, 8, 16] = x[2, 0, 2, 12] = 1.0
    out = ss(x)
    assert out.shape == (3, 2)
    # (x, y) on a [-1, 1] grid: column 12 of 17 -> 0.5, row 2 of 9 -> -0.5
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.5, -0.5]]), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError):
        SpatialSoftmax(4, num_keypoints=0)


def test_obs_encoder_conv_backbone(tmp_path):
    from typing import get_args

    from postbc_core.models.obs_encoder import IMAGE_ENCODERS
    from postbc_core.policies.settings import ImageEncoder

    assert set(IMAGE_ENCODERS) == set(get_args(ImageEncoder)), "the setting and the builder must name the same"
    torch.manual_seed(0)
    shapes = {"front": (24, 24, 3), "wrist": (24, 24, 3), "q": (2,)}
    enc = ObsEncoder(shapes, 1, rgb_feature_dim=16, image_encoder="conv")
    assert isinstance(enc.rgb_encoders["front"], ConvKeypointEncoder)
    assert set(enc.rgb_proj) == {"front", "wrist"} and enc.rgb_proj["front"].in_features == 64  # 32 keypoints (x, y)
    assert enc.output_dim == 16 + 16 + 2
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (3, 1, 24, 24, 3), dtype=torch.uint8, generator=g)
    nobs = {"front": img, "wrist": img.flip(2), "q": torch.randn(3, 1, 2, generator=g)}
    enc.eval()
    out = enc(nobs)
    assert out.shape == (3, enc.output_dim) and torch.isfinite(out).all()
    # uint8 frames are scaled inside: the same values as float give the same features.
    torch.testing.assert_close(enc({**nobs, "front": img.float()}), out)
    enc.train()
    enc(nobs).sum().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in enc.rgb_encoders.parameters())
    shared = ObsEncoder(shapes, 1, share_rgb_encoder=True, image_encoder="conv")
    assert list(shared.rgb_encoders) == ["shared"]
    with pytest.raises(ConfigError, match="image_encoder"):
        ObsEncoder(shapes, 1, image_encoder="vit")
    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="torchvision"):
        enc.load_torchvision_weights(tmp_path / "r18.pth")


# ---------------------------------------------------------------- ObsEncoder

def test_obs_encoder_output_dim_and_crops():
    torch.manual_seed(0)
    enc = ObsEncoder({"wrist": (20, 20, 3), "front": (20, 20, 3), "q": (2, 3)}, n_obs_steps=2,
                     rgb_feature_dim=8, crop_ratio=0.8)
    assert enc.output_dim == 2 * (8 + 8 + 6)
    nobs = {"wrist": torch.randint(0, 256, (3, 2, 20, 20, 3), dtype=torch.uint8),
            "front": torch.randint(0, 256, (3, 2, 20, 20, 3), dtype=torch.uint8),
            "q": torch.randn(3, 2, 2, 3)}
    out = enc(nobs)
    assert out.shape == (3, enc.output_dim)
    # Low-dim keys are passed through flattened (sorted key order: front, q, wrist).
    torch.testing.assert_close(out[:, 16:28], nobs["q"].reshape(3, -1))
    # Train: random crops differ between calls; eval: center crop is deterministic.
    assert not torch.allclose(enc(nobs), enc(nobs))
    enc.eval()
    torch.testing.assert_close(enc(nobs), enc(nobs))
    # uint8 and float 0..255 inputs are the same images.
    as_float = dict(nobs, wrist=nobs["wrist"].float(), front=nobs["front"].float())
    torch.testing.assert_close(enc(as_float), enc(nobs))


def test_obs_encoder_shared_encoder_and_errors():
    shapes = {"a": (16, 16, 3), "b": (16, 16, 3)}
    shared = ObsEncoder(shapes, 1, share_rgb_encoder=True)
    separate = ObsEncoder(shapes, 1)
    n_shared = sum(p.numel() for p in shared.parameters())
    assert 2 * n_shared == sum(p.numel() for p in separate.parameters())
    with pytest.raises(ConfigError, match="channel-last"):
        ObsEncoder({"cam": (3, 16, 16)}, 1)
    with pytest.raises(PostBCError, match="expected"):
        separate({"a": torch.zeros(1, 1, 16, 16, 3), "b": torch.zeros(1, 1, 15, 16, 3)})


def test_crop_images_random_per_image_and_center():
    from postbc_core.models.obs_encoder import crop_images
    x = torch.arange(2 * 6 * 6 * 1, dtype=torch.float32).reshape(2, 6, 6, 1).repeat(20, 1, 1, 1)
    c = crop_images(x, (4, 4), random=False)
    torch.testing.assert_close(c, x[:, 1:5, 1:5])
    torch.manual_seed(0)
    r = crop_images(x, (4, 4), random=True)
    # Every random crop is a contiguous window of its own image; windows vary across images.
    tops = set()
    for i in range(x.shape[0]):
        found = [(t, l) for t in range(3) for l in range(3) if torch.equal(r[i], x[i, t:t + 4, l:l + 4])]
        assert len(found) == 1
        tops.add(found[0])
    assert len(tops) > 1


# ---------------------------------------------------------------- ResNet-18

# (name, shape) pairs from torchvision's resnet18 state dict.
TORCHVISION_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.1.bn2.bias": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer2.0.downsample.1.weight": (128,),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.0.downsample.0.weight": (512, 256, 1, 1),
    "layer4.1.bn2.weight": (512,),
}


def test_resnet18_names_shapes_and_count_match_torchvision():
    m = resnet18(norm="batch")
    params = dict(m.named_parameters())
    for name, shape in TORCHVISION_SHAPES.items():
        assert tuple(params[name].shape) == shape, name
    assert sum(p.numel() for p in m.parameters()) == 11_176_512  # torchvision's 11,689,512 minus fc (513,000)
    assert len(params) == 62 - 2  # torchvision's 62 parameter tensors minus fc.weight/fc.bias
    assert "layer1.0.bn1.running_mean" in m.state_dict()
    assert not any(n.startswith("fc.") for n in m.state_dict())
    gn = resnet18()
    assert [n for n, _ in gn.named_parameters()] == list(params)
    assert isinstance(gn.layer3[0].bn1, nn.GroupNorm) and gn.layer3[0].bn1.num_groups == 256 // 16
    assert gn(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert resnet18(in_channels=1)(torch.randn(1, 1, 40, 24)).shape == (1, 512)


def test_load_torchvision_weights_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    src = resnet18(norm="batch")
    state = dict(src.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    for norm in ("batch", "group"):
        dst = load_torchvision_weights(resnet18(norm=norm), path)
        torch.testing.assert_close(dst.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
        torch.testing.assert_close(dst.layer4[1].bn2.bias, src.layer4[1].bn2.bias)
    bad = dict(state)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    del bad["layer4.1.conv2.weight"]
    bad["layer1.2.conv1.weight"] = torch.zeros(64, 64, 3, 3)  # a resnet34 block
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_torchvision_weights(resnet18(), tmp_path / "bad.pth")
    msg = str(err.value)
    assert "layer1.0.conv1.weight" in msg and "layer4.1.conv2.weight" in msg and "layer1.2.conv1.weight" in msg
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torchvision_weights(resnet18(), tmp_path / "missing.pth")


# ---------------------------------------------------------------- noise nets

def test_sinusoidal_pos_emb():
    emb = SinusoidalPosEmb(8)(torch.tensor([0.0, 1.0]))
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    torch.testing.assert_close(emb[1, 0], torch.sin(torch.tensor(1.0)))


def small_unet(cond_dim=6, da=3):
    return ConditionalUnet1D(da, cond_dim, down_dims=(16, 32, 64), kernel_size=3, n_groups=8,
                             diffusion_step_embed_dim=16)


@pytest.mark.parametrize("make", [lambda h: MLPNoiseNet(3, h, 6, hidden_dims=(32, 32, 32), time_embed_dim=16),
                                  lambda h: small_unet()], ids=["mlp", "unet"])
@pytest.mark.parametrize("horizon", [1, 3, 4, 16])
def test_noise_net_shapes_and_sensitivity(make, horizon):
    torch.manual_seed(0)
    net = make(horizon)
    b = 2
    x, cond = torch.randn(b, horizon, 3), torch.randn(b, 6)
    t = torch.tensor([3, 40])
    y = net(x, t, cond)
    assert y.shape == (b, horizon, 3) and torch.isfinite(y).all()
    assert not torch.allclose(y, net(x, t, cond + 1.0), atol=1e-5), "ignores the condition"
    assert not torch.allclose(y, net(x, torch.tensor([50, 90]), cond), atol=1e-5), "ignores the timestep"
    assert not torch.allclose(y, net(x + 1.0, t, cond), atol=1e-5), "ignores the sample"
    # A scalar timestep (int or 0-dim tensor) means the same step for the whole batch.
    torch.testing.assert_close(net(x, 7, cond), net(x, torch.tensor([7, 7]), cond))
    torch.testing.assert_close(net(x, torch.tensor(7.0), cond), net(x, 7, cond))
    # Samples in a batch do not interact (no batch-statistics norm layers).
    torch.testing.assert_close(net(x[:1], t[:1], cond[:1]), y[:1], rtol=1e-4, atol=1e-5)


def test_unet_gradients_flow_and_padding_crops_back():
    torch.manual_seed(0)
    net = small_unet()
    x = torch.randn(2, 3, 3, requires_grad=True)
    y = net(x, torch.tensor([1, 2]), torch.randn(2, 6))
    y.square().sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    assert all(p.grad is not None for p in net.parameters())


def test_unet_parameter_names_follow_diffusion_policy():
    names = {n for n, _ in small_unet().named_parameters()}
    for n in ("diffusion_step_encoder.1.weight", "down_modules.0.0.blocks.0.block.0.weight",
              "down_modules.0.0.cond_encoder.1.weight", "down_modules.0.2.conv.weight",
              "mid_modules.1.blocks.1.block.1.weight",
              "up_modules.0.2.conv.weight", "final_conv.1.weight"):
        assert n in names, n


def test_noise_net_errors():
    net = MLPNoiseNet(3, 4, 6, hidden_dims=(8,), time_embed_dim=8)
    with pytest.raises(PostBCError, match="global_cond"):
        net(torch.randn(2, 4, 3), 1, torch.randn(2, 5))
    with pytest.raises(PostBCError, match="sample"):
        net(torch.randn(2, 3, 3), 1, torch.randn(2, 6))
    with pytest.raises(ConfigError, match="n_groups"):
        ConditionalUnet1D(3, 6, down_dims=(12, 24))


def test_modules_are_deterministic_under_seed():
    def build():
        torch.manual_seed(3)
        return MLPNoiseNet(3, 2, 4, hidden_dims=(8, 8)), small_unet(cond_dim=4)
    (m1, u1), (m2, u2) = build(), build()
    for a, b in ((m1, m2), (u1, u2)):
        for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(pa, pb), na


def test_ensemble_with_a_shared_image_encoder():
    """--ensemble-encoder shared: one encoder's parameters for all K members (not K), one batch for all, and each
    member's bootstrap as loss weights: integer weights give exactly the member's loss on the batch with every window
    repeated that many times (its resample)."""
    torch.manual_seed(0)
    shapes, K, D = {"cam_rgb": (16, 16, 3), "q": (2,)}, 4, 3
    per = EnsembleRegressor(K, shapes, 1, D, hidden_dims=(16,), rgb_feature_dim=8, image_encoder="conv")
    shared = EnsembleRegressor(K, shapes, 1, D, hidden_dims=(16,), rgb_feature_dim=8, image_encoder="conv",
                               shared_encoder=True)
    n_enc = sum(p.numel() for p in shared.encoder.parameters())
    assert sum(p.numel() for p in per.encoder.parameters()) == K * n_enc
    g = torch.Generator().manual_seed(1)
    B = 6
    nobs = {"cam_rgb": torch.randint(0, 256, (B, 1, 16, 16, 3), dtype=torch.uint8, generator=g),
            "q": torch.randn(B, 1, 2, generator=g)}
    target = torch.randn(B, D, generator=g)
    shared.eval()  # center crops: the same features on every call
    assert shared(nobs).mean.shape == (K, B, D)
    w = torch.randint(0, 3, (K, B), generator=g).float()
    w[0] = 0.0
    w[0, 2] = 1.0  # member 0 drew one window of the batch
    got = shared.loss(nobs, target, weights=w)
    for k in range(K):
        rep = torch.repeat_interleave(torch.arange(B), w[k].long())
        if len(rep) == 0:
            assert got[k] == 0
            continue
        ref = shared.loss({key: v[rep] for key, v in nobs.items()}, target[rep])[k]
        torch.testing.assert_close(got[k], ref)
    assert torch.equal(shared.loss(nobs, target, weights=torch.ones(K, B)), shared.loss(nobs, target))
    with pytest.raises(PostBCError, match="one batch for all members"):
        shared({k: v.unsqueeze(0).expand(K, *v.shape) for k, v in nobs.items()})
    with pytest.raises(PostBCError, match="weights have shape"):
        shared.loss(nobs, target, weights=torch.ones(K, B + 1))
    with pytest.raises(ConfigError, match="no camera"):
        EnsembleRegressor(K, {"q": (2,)}, 1, D, shared_encoder=True)
