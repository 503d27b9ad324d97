"""postbc_core.stats: the Wilson interval, pooled rates, McNemar's exact test on paired outcomes, p-value text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postbc_core.errors import ConfigError, PostBCError
from postbc_core.stats import format_p, mcnemar_exact_p, paired_comparison, pooled_rate, wilson_interval


# -- Wilson interval -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.27753),  # hand-checked: centre = (0 + 1.9208/10) / 1.38415 = 0.13877, half = 0.13877
    (5, 10, 0.23659, 0.76341),
    (10, 10, 0.72247, 1.0),
    (1, 20, 0.00889, 0.23613),
])
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_matches_scipy_and_is_symmetric(kn):
    from scipy.stats import binomtest

    k, n = kn
    lo, hi = wilson_interval(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson_interval(n - k, n) == pytest.approx((1 - hi, 1 - lo), abs=1e-12)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ConfigError, match="11/10"):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError):
        wilson_interval(0, 0)


def test_pooled_rate_counts_every_episode_once_with_its_wilson_interval():
    r = pooled_rate([True, False, False, True, False])  # 2 of 5 pooled over, e.g., 2 + 3 seed episodes
    assert r == {"n_success": 2, "n": 5, "success_rate": 0.4, "ci95": list(wilson_interval(2, 5))}


# -- McNemar's exact test --------------------------------------------------------------------------------------------
def test_paired_comparison_is_mcnemars_exact_test_on_hand_computed_numbers():
    # 10 episodes: 4 gained, 1 lost, 2 both. Exact two-sided p = 2 * P(X <= 1 | n=5, 1/2) = 2 * 6 / 32.
    before = [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    after = [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]
    assert paired_comparison(before, after) == {"gained": 4, "lost": 1, "both": 2, "mcnemar_exact_p": 0.375}
    assert paired_comparison([0] * 6, [1] * 6)["mcnemar_exact_p"] == pytest.approx(2 / 64)
    assert paired_comparison([1, 0], [1, 0])["mcnemar_exact_p"] == 1.0  # no discordant pair: no evidence
    with pytest.raises(PostBCError, match="same episodes"):
        paired_comparison([True], [True, False])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_exact_p_is_scipys_two_sided_binomial_test_on_the_discordant_pairs(gained, lost):
    from scipy.stats import binomtest

    ref = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    assert mcnemar_exact_p(gained, lost) == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert mcnemar_exact_p(gained, lost) == mcnemar_exact_p(lost, gained)


@pytest.mark.parametrize("p, text", [(1.0, "1.000"), (0.375, "0.375"), (0.0312, "0.031"), (0.001, "0.001"),
                                     (4.2e-4, "4e-04"), (3.1e-6, "3e-06")])
def test_format_p_never_prints_a_zero_p_value_as_0_000(p, text):
    assert format_p(p) == text
