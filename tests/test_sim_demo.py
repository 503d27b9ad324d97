"""The sim half of `make demo` at a tiny budget: demos -> BC and PostBC -> evaluation -> report."""

import json

from postbc_core.analysis.sim_demo import SimDemoConfig, run_sim_demo, summary_line


def test_sim_demo_pipeline_writes_a_report(tmp_path):
    cfg = SimDemoConfig(out=tmp_path, demos=2, ensemble_size=2, ensemble_steps=10, steps=20, eval_episodes=2,
                        num_envs=2, videos=0, progress=False, device="cpu")
    r = run_sim_demo(cfg)
    assert set(r["policies"]) == {"bc", "postbc"}
    for p in r["policies"].values():
        lo, hi = p["success_ci95"]
        assert 0.0 <= lo <= p["success_rate"] <= hi <= 1.0
    assert r["demo_success_rate"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == r
    report = (tmp_path / "report.md").read_text()
    assert "| bc | " in report and "| postbc | " in report and "Wilson 95%" in report
    assert (tmp_path / "postbc" / "ensemble.safetensors").exists() and not (tmp_path / "bc" / "ensemble.safetensors").exists()
    assert summary_line(r).startswith("lift_cube after 2 demos: bc ")


def test_learning_curve_end_to_end_at_a_tiny_budget(tmp_path):
    """`postbc sim curve`: every (seed, budget, method) trained through the pipeline's path and evaluated on the same
    fixed states; pooled rates, per-seed counts and paired tests against BC and against the previous budget."""
    from postbc_core.analysis.learning_curve import CurveConfig, render_table, run_curve

    cfg = CurveConfig(out=tmp_path / "curve", demos=2, seeds=(0, 1), steps=(20, 10), methods=("bc", "sigma_bc"),
                      episodes=2, policy_hidden=(32, 32), ensemble_size=2, ensemble_steps=10, workers=1,
                      json=tmp_path / "results" / "curve.json")
    r = run_curve(cfg)
    assert [(row["method"], row["steps"]) for row in r["table"]] == [("bc", 10), ("bc", 20), ("sigma_bc", 10),
                                                                     ("sigma_bc", 20)]
    for row in r["table"]:
        assert row["n"] == 4 and len(row["per_seed"]) == 2 and row["ci95"][0] <= row["rate"] <= row["ci95"][1]
        assert ("vs_bc" in row) == (row["method"] != "bc")
        assert ("vs_previous_budget" in row) == (row["steps"] == 20)
    assert r["action_key"] == "cmd_ee_delta" and r["obs_keys"]
    assert json.loads((tmp_path / "results" / "curve.json").read_text())["table"] == r["table"]
    run = tmp_path / "curve" / "seed_1" / "sigma_bc_20"
    info = json.loads((run / "eval.json").read_text())
    assert info["seeds"] == [1_000_000, 1_000_001]  # the pipeline's evaluation states, shared by every policy
    assert "| sigma_bc | 20 |" in render_table(r)
