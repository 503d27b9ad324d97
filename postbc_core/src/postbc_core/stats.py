"""Success-rate statistics, the one home of every interval and test the reports quote: the Wilson score interval of a
success rate, a rate pooled over seeds, McNemar's exact test on paired outcomes and how a p-value is printed.

Evaluation (sim/), finetuning (rl/) and the analyses (analysis/) all use it, so it sits beside errors.py, below every
package, and needs nothing but the standard library.

Success rate: Wilson score interval (Wilson, E. B. (1927), "Probable inference, the law of succession, and
statistical inference", JASA 22(158):209-212; recommended over the normal/Wald interval by Brown, Cai & DasGupta
(2001), "Interval estimation for a binomial proportion", Statistical Science 16(2):101-133).

Paired outcomes: two policies evaluated on the same episodes (same seeds: same initial states and noise) are compared
with McNemar's exact test, a two-sided binomial test (p = 1/2) on the discordant pairs only, which unlike comparing
two rates uses the pairing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from postbc_core.errors import ConfigError, PostBCError

Z95 = 1.959963984540054  # standard normal 97.5% quantile: two-sided 95%


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p = successes / n:

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    Returns (centre - half, centre + half), inside [0, 1] even at 0 or n successes (unlike the Wald interval).
    """
    if n < 1 or not 0 <= successes <= n:
        raise ConfigError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 (n) successes the lower (upper) bound is exactly 0 (1) analytically; float round-off leaves ~1e-18.
    lo = 0.0 if successes == 0 else centre - half
    hi = 1.0 if successes == n else centre + half
    return lo, hi


def pooled_rate(successes: Sequence[bool]) -> dict:
    """Outcomes pooled over seeds (one bool per episode) -> {"n_success", "n", "success_rate", "ci95": [lo, hi]}, the
    Wilson 95% interval treating the episodes as independent."""
    k, n = sum(successes), len(successes)
    return {"n_success": k, "n": n, "success_rate": k / n, "ci95": list(wilson_interval(k, n))}


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts: 2 * P(X <= min(gained, lost)) for
    X ~ Binomial(gained + lost, 1/2), capped at 1; 1.0 without discordant pairs (no evidence either way)."""
    n, k = gained + lost, min(gained, lost)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n) if n else 1.0


def paired_comparison(before: Sequence[bool], after: Sequence[bool]) -> dict:
    """Two policies on the same episodes (outcome i of each from the same seed and scene) -> the paired table
    {"gained": after only, "lost": before only, "both", "mcnemar_exact_p"}."""
    if len(before) != len(after):
        raise PostBCError(f"paired comparison needs the same episodes: {len(before)} vs {len(after)} outcomes")
    gained = sum(1 for b, a in zip(before, after) if a and not b)
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    return {"gained": gained, "lost": lost, "both": sum(1 for b, a in zip(before, after) if a and b),
            "mcnemar_exact_p": mcnemar_exact_p(gained, lost)}


def format_p(x: float) -> str:
    """A p-value for a report: 3 decimals, or 1 significant digit below 0.001 (not a misleading 0.000)."""
    return f"{x:.3f}" if x >= 1e-3 else f"{x:.0e}"
