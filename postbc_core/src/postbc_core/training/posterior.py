"""Posterior covariance of the action chunk at every training state from the ensemble's predictions.

Sigma(s) = unbiased covariance over members of {f_k(s)}; PostBC needs a factor L with L L^T = Sigma (full) or the
per-dimension standard deviation (diagonal). Ensemble covariances are often rank-deficient (K - 1 < D, or members
that agree exactly), so the Cholesky factorization adds diagonal jitter and escalates it where it still fails.

Shapes: K members, N training windows, D = Ta * Da flattened (normalized) action chunk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from postbc_core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Posterior:
    factor: torch.Tensor
    """(N, D, D) lower-triangular Cholesky factors (full) or (N, D) standard deviations (diagonal)."""
    kind: str
    """'full' or 'diagonal'."""
    mean_std: float
    """Mean over states of sqrt(trace(Sigma) / D): the average posterior std per action dimension."""
    jitter_escalations: int = 0
    """How many states needed more jitter than requested."""

    def summary(self) -> dict:
        std = self.std_per_state()
        return {"kind": self.kind, "n_states": int(self.factor.shape[0]), "dim": int(self.factor.shape[-1]),
                "mean_std": self.mean_std, "median_std": float(std.median()), "max_std": float(std.max()),
                "jitter_escalations": self.jitter_escalations}

    def std_per_dim(self) -> torch.Tensor:
        """(N, D) posterior standard deviation of every action dimension at every state."""
        return self.factor.pow(2).sum(-1).sqrt() if self.kind == "full" else self.factor.abs()

    def sample_range(self, alpha: float, n_sigma: float = 3.0) -> float:
        """DDIM clip range (normalized action units) that covers PostBC's targets a + alpha L z.

        The clean targets lie in [-1, 1] (the limits normalizer); the perturbation adds up to n_sigma x alpha x the
        largest per-dimension posterior std. Clipping the sampler at 1 instead would cut the perturbation off at
        every target on the edge of the data range (the gripper sits at exactly +-1), so the policy would not sample
        what it was trained on. The targets themselves are not clipped at training time: that would bias the
        perturbation inward at the edges instead of keeping it symmetric about the demonstrated action."""
        if alpha < 0 or n_sigma <= 0:
            raise ConfigError(f"sample_range needs alpha >= 0 and n_sigma > 0, got alpha={alpha}, n_sigma={n_sigma}")
        return 1.0 + n_sigma * alpha * float(self.std_per_dim().max()) if self.factor.numel() else 1.0

    def std_per_state(self) -> torch.Tensor:
        """(N,) sqrt(trace(Sigma)/D) per state."""
        # diag(L L^T)_i = sum_j L_ij^2
        var = self.factor.pow(2).sum(-1) if self.kind == "full" else self.factor.pow(2)
        return var.mean(-1).sqrt()


def posterior_from_predictions(preds: torch.Tensor, kind: str = "full", jitter: float = 1e-6,
                               max_jitter: float = 1e-1, chunk: int = 4096) -> Posterior:
    """preds (K, N, D) member predictions -> Posterior (computed in float64 chunks over N)."""
    if preds.dim() != 3:
        raise ConfigError(f"expected ensemble predictions (K, N, D), got shape {tuple(preds.shape)}")
    K, N, D = preds.shape
    if K < 2:
        raise ConfigError(f"a covariance needs >= 2 ensemble members, got {K}")
    if kind not in ("full", "diagonal"):
        raise ConfigError(f"covariance kind must be 'full' or 'diagonal', got {kind!r}")
    factors, escalations = [], 0
    for s in range(0, N, chunk):
        p = preds[:, s:s + chunk].double()
        centered = p - p.mean(0, keepdim=True)
        if kind == "diagonal":
            factors.append((centered.pow(2).sum(0) / (K - 1)).sqrt().float())
            continue
        cov = torch.einsum("kni,knj->nij", centered, centered) / (K - 1)  # (n, D, D)
        eye = torch.eye(D, dtype=cov.dtype)
        L, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        j = jitter
        while bool((info > 0).any()):
            j *= 10
            if j > max_jitter:
                raise ConfigError(f"posterior covariance is not positive semi-definite even with jitter {max_jitter}"
                                  "; are the ensemble predictions finite?")
            bad = info > 0
            escalations += int(bad.sum())
            L_bad, info_bad = torch.linalg.cholesky_ex(cov[bad] + j * eye)
            L[bad], info[bad] = L_bad, info_bad
        factors.append(L.float())
    factor = torch.cat(factors, 0)
    if escalations:
        log.warning("posterior: %d state(s) needed extra Cholesky jitter (> %g)", escalations, jitter)
    post = Posterior(factor=factor, kind=kind, mean_std=0.0, jitter_escalations=escalations)
    post.mean_std = float(post.std_per_state().mean())
    return post


def isotropic_like(post: Posterior) -> Posterior:
    """sigma-BC baseline: the same std for every state and dimension (the posterior's mean std), diagonal."""
    N, D = post.factor.shape[0], post.factor.shape[-1]
    return Posterior(factor=torch.full((N, D), post.mean_std), kind="diagonal", mean_std=post.mean_std)
