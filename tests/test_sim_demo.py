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
