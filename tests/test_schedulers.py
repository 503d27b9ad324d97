"""Our tensor-only DDPM/DDIM against diffusers' reference schedulers (the ones diffusion_policy uses)."""

import numpy as np
import pytest
import torch

from postbc_core.policies.schedulers import NoiseSchedule

diffusers = pytest.importorskip("diffusers")


def _reference(T):
    kw = dict(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
              prediction_type="epsilon")
    return diffusers.DDPMScheduler(**kw), diffusers.DDIMScheduler(**kw, set_alpha_to_one=True, steps_offset=0)


@pytest.mark.parametrize("T", [100, 20])
def test_alphas_and_add_noise_match_diffusers(T):
    ddpm, _ = _reference(T)
    ours = NoiseSchedule(T)
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), ddpm.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 4, 3, generator=g), torch.randn(16, 4, 3, generator=g)
    t = torch.randint(0, T, (16,), generator=g)
    torch.testing.assert_close(ours.add_noise(x0, noise, t), ddpm.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [8, 16, 1, 100])
def test_ddim_sampling_matches_diffusers(steps):
    T = 100
    _, ddim = _reference(T)
    ours = NoiseSchedule(T)
    ddim.set_timesteps(steps)
    assert ours.ddim_timesteps(steps) == ddim.timesteps.tolist()

    w = torch.randn(8, 20)

    def eps_fn(x, t):  # an arbitrary smooth "network" that depends on x and t
        return torch.tanh(x @ w[: x.shape[-1], : x.shape[-1]] * 0.3 + t.float().view(-1, 1, 1) / T)

    x_T = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(1))
    ref = x_T.clone()
    for t in ddim.timesteps:
        ref = ddim.step(eps_fn(ref, t.repeat(8)), t, ref, eta=0.0).prev_sample
    got = ours.ddim_sample(eps_fn, x_T, steps)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # Deterministic: the same initial noise gives the same result.
    torch.testing.assert_close(ours.ddim_sample(eps_fn, x_T, steps), got)


def test_bad_step_counts_are_rejected():
    with pytest.raises(ValueError, match="num_inference_steps must be in"):
        NoiseSchedule(100).ddim_timesteps(101)
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(100, beta_schedule="nope")
