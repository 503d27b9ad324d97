"""The coverage claim on the 1-D problem with a known demonstrator (the paper's Figure 1 situation):
dense demos -> BC and PostBC agree; one or two demos -> BC collapses onto them, PostBC spreads towards the
demonstrator's range. Runs the same configuration as `make demo` (about 2 minutes on 2 cores)."""

import json

from postbc_core.analysis.coverage import CoverageConfig, run_coverage


def test_postbc_spreads_where_demos_are_sparse_and_agrees_where_dense(tmp_path):
    m = run_coverage(CoverageConfig(out=tmp_path, progress=False, device="cpu"))
    dense, one, two = m["dense"], m["one_demo"], m["two_demos"]
    # Dense half: same spread, nearly the same distribution (W1 small against the demonstrator's std 0.29).
    assert 0.85 < dense["spread_ratio"] < 1.15, dense
    assert dense["w1_bc_postbc"] < 0.05, dense
    # One or two demos per state: PostBC's samples are markedly wider than BC's and cover more of the range.
    assert one["spread_ratio"] > 1.3, one
    assert two["spread_ratio"] > 1.8, two
    for r in (one, two):
        assert r["postbc_range_coverage"] > r["bc_range_coverage"] + 0.15, r
    assert (tmp_path / "coverage.png").stat().st_size > 20_000
    assert json.loads((tmp_path / "coverage.json").read_text())["alpha"] == 1.0
