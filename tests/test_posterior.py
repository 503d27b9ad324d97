"""Posterior covariance and the PostBC target perturbation."""

import numpy as np
import pytest
import torch

from postbc_core.policies.diffusion import TargetNoise
from postbc_core.training.ensemble_fit import bootstrap_counts
from postbc_core.training.posterior import isotropic_like, posterior_from_predictions


def test_full_covariance_matches_numpy_and_factors_it():
    g = torch.Generator().manual_seed(0)
    preds = torch.randn(50, 7, 3, generator=g) @ torch.randn(3, 3, generator=g)  # correlated dims
    post = posterior_from_predictions(preds, "full", jitter=1e-9)
    for n in range(7):
        ref = np.cov(preds[:, n].numpy().T)  # unbiased, over members
        L = post.factor[n].double()
        np.testing.assert_allclose((L @ L.T).numpy(), ref, rtol=1e-4, atol=1e-6)
        assert torch.allclose(L, L.tril())
    diag = posterior_from_predictions(preds, "diagonal")
    np.testing.assert_allclose(diag.factor.numpy() ** 2, preds.var(0, unbiased=True).numpy(), rtol=1e-5)


def test_rank_deficient_covariance_is_factored_with_jitter():
    # K=3 members in D=6: covariance rank <= 2, and one state where all members agree exactly (rank 0).
    preds = torch.randn(3, 5, 6, dtype=torch.float64)
    preds[:, 0] = 0.5
    post = posterior_from_predictions(preds.float(), "full", jitter=1e-6)
    assert torch.isfinite(post.factor).all()
    assert float(post.std_per_state()[0]) < 1e-2  # agreeing members -> (almost) no posterior noise


def test_too_few_members_is_an_error():
    with pytest.raises(ValueError, match=">= 2 ensemble members"):
        posterior_from_predictions(torch.zeros(1, 4, 2))


def test_target_noise_has_the_posterior_covariance():
    Sigma = torch.tensor([[0.04, 0.03], [0.03, 0.09]])
    L = torch.linalg.cholesky(Sigma)
    a = torch.zeros(200_000, 2)
    for alpha in (0.5, 2.0):
        x = TargetNoise(L.expand(len(a), 2, 2), alpha).sample(a, torch.Generator().manual_seed(0))
        emp = torch.cov(x.T)
        torch.testing.assert_close(emp, alpha**2 * Sigma, rtol=0.03, atol=2e-4)
    # alpha = 0 leaves targets untouched (plain BC through the same path).
    assert torch.equal(TargetNoise(L.expand(4, 2, 2), 0.0).sample(torch.ones(4, 2)), torch.ones(4, 2))


def test_posterior_mix_perturbs_that_fraction_of_targets_and_leaves_the_rest_exact():
    """--posterior-mix m: each target is perturbed with probability m (whole chunk), else it stays the demonstrated
    action, so the policy fits (1 - m) BC + m PostBC; the perturbed ones keep the posterior covariance."""
    Sigma = torch.tensor([[0.04, 0.03], [0.03, 0.09]])
    L = torch.linalg.cholesky(Sigma)
    a = torch.randn(100_000, 2)
    x = TargetNoise(L.expand(len(a), 2, 2), 1.0, mix=0.3).sample(a, torch.Generator().manual_seed(1))
    clean = (x == a).all(-1)
    assert ((x == a).any(-1) == clean).all()  # a row is either untouched or perturbed in every dimension
    assert abs(float((~clean).float().mean()) - 0.3) < 0.01
    torch.testing.assert_close(torch.cov((x - a)[~clean].T), Sigma, rtol=0.05, atol=5e-4)
    assert torch.equal(TargetNoise(L.expand(8, 2, 2), 1.0, mix=1.0).sample(a[:8], torch.Generator().manual_seed(0)),
                       TargetNoise(L.expand(8, 2, 2), 1.0).sample(a[:8], torch.Generator().manual_seed(0)))


def test_isotropic_baseline_matches_mean_posterior_std():
    preds = torch.randn(20, 30, 4) * torch.linspace(0.1, 1, 30).view(1, 30, 1)
    post = posterior_from_predictions(preds, "full")
    iso = isotropic_like(post)
    assert iso.kind == "diagonal"
    assert torch.allclose(iso.factor, torch.full_like(iso.factor, post.mean_std))
    assert abs(float(iso.std_per_state().mean()) - post.mean_std) < 1e-6


def test_bootstrap_resamples_whole_trajectories():
    window_episode = np.repeat(np.arange(6), [3, 4, 5, 2, 6, 1])
    rng = np.random.default_rng(0)
    counts = bootstrap_counts(window_episode, 6, 200, "trajectory", rng)
    for k in range(200):  # constant within an episode, and 6 episodes drawn in total
        per_ep = [counts[k, window_episode == e] for e in range(6)]
        assert all(len(set(c)) == 1 for c in per_ep)
        assert sum(c[0] for c in per_ep) == 6
    assert len({tuple(c) for c in counts}) > 100  # members get different resamples (462 multisets possible)
    sa = bootstrap_counts(window_episode, 6, 50, "state_action", rng)
    assert (sa.sum(1) == len(window_episode)).all()
    assert any(len(set(sa[k, window_episode == 4])) > 1 for k in range(50))  # windows resampled individually
