"""The coverage claim on the 1-D problem with a known demonstrator (the paper's Figure 1 situation):
dense demos -> BC and PostBC agree; one or two demos -> BC collapses onto them, PostBC spreads towards the
demonstrator's range.

The default test runs a reduced budget (K = 32 members as in `make demo`, about 1/2 of its ensemble and diffusion
steps: ~75 CPU-seconds, under 2 minutes of wall time on a loaded 2-core machine) with thresholds that still fail when
PostBC stops spreading (a PostBC equal to BC gives ratios near 1). Measured at this budget, seeds 0 / 1: one-demo
spread ratio 1.57 / 1.57, two-demo 1.80 / 5.97, range coverage gain +0.23 / +0.19 and +0.34 / +0.53. (Fewer members
do not work: K = 16 gave a one-demo ratio of 1.15 to 1.33.) The full-budget version with the stricter thresholds is
marked slow (`make test-all`).
"""

import json

import pytest

from postbc_core.analysis.coverage import CoverageConfig, run_coverage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def check_claim(m: dict, *, one_ratio: float, two_ratio: float, coverage_gain: float) -> None:
    dense, one, two = m["dense"], m["one_demo"], m["two_demos"]
    # Dense half: same spread, nearly the same distribution (W1 small against the demonstrator's std 0.29).
    assert 0.85 < dense["spread_ratio"] < 1.15, dense
    assert dense["w1_bc_postbc"] < 0.05, dense
    # One or two demos per state: PostBC's samples are markedly wider than BC's and cover more of the range.
    assert one["spread_ratio"] > one_ratio, one
    assert two["spread_ratio"] > two_ratio, two
    for r in (one, two):
        assert r["postbc_range_coverage"] > r["bc_range_coverage"] + coverage_gain, r


def test_postbc_spreads_where_demos_are_sparse_and_agrees_where_dense(tmp_path):
    m = run_coverage(CoverageConfig(out=tmp_path, alpha=1.0, ensemble_steps=800, steps=1500, samples=128,
                                    progress=False, device="cpu"))
    check_claim(m, one_ratio=1.3, two_ratio=1.3, coverage_gain=0.1)
    assert (tmp_path / "coverage.png").stat().st_size > 20_000
    assert json.loads((tmp_path / "coverage.json").read_text())["ensemble_size"] == 32


@pytest.mark.slow
def test_postbc_coverage_claim_at_the_make_demo_budget(tmp_path):
    """The same configuration as `make demo` (about 2 minutes on 2 idle cores: alpha 0.5, K = 32; a fresh clone's
    `make demo` printed 1.35 / 1.74 and range coverage 0.49 -> 0.65 / 0.40 -> 0.70)."""
    m = run_coverage(CoverageConfig(out=tmp_path, progress=False, device="cpu"))
    check_claim(m, one_ratio=1.2, two_ratio=1.5, coverage_gain=0.1)
    assert json.loads((tmp_path / "coverage.json").read_text())["alpha"] == 0.5
