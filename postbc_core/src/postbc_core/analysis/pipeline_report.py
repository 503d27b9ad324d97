"""The pipeline's results and report: per-seed runs -> pooled statistics (`aggregate`), then the summary line, the
success-vs-episodes figure and report.md rendered from that results dict (what results.json holds).

Several online finetuning algorithms (--algorithms) each get their own pooled statistics under
results["online"][<algorithm>] (pretrained, final, episodes_to_target, curves, paired), their own table and their own
panel of the figure; results.json written before that (one "algorithm", those keys at the top level) still renders
(`by_algorithm`).

Pure functions of the runs / results (nothing is trained or simulated), so a finished run's results.json can be
re-aggregated or re-rendered without rerunning it (benchmarks/results/pipeline_lift_cube_full/README.md). The
statistics are described in analysis/pipeline.py's docstring.
"""

from __future__ import annotations

from pathlib import Path

from postbc_core.analysis.pipeline_config import RECIPE_METHODS, PipelineConfig
from postbc_core.analysis.sim_demo import POLICIES
from postbc_core.stats import format_p, paired_comparison, pooled_rate, wilson_interval


NOTES = Path(__file__).with_name("pipeline_notes.md")  # the measured configurations, embedded in every report
LABELS = {"bc": "BC", "postbc": "PostBC", "sigma_bc": "sigma-BC"}
ALGORITHM_LABELS = {"dsrl_sac": "DSRL-SAC", "dsrl_na": "DSRL-NA", "dppo": "DPPO"}
ONLINE_KEYS = ("pretrained", "final", "episodes_to_target", "curves", "paired")
"""One online algorithm's pooled statistics: results["online"][<algorithm>][<key>]."""
FULL_REPORT = "benchmarks/results/pipeline_lift_cube_full/report.md"  # where the --full run's report is committed


def aggregate(cfg: PipelineConfig, runs: dict[int, dict]) -> dict:
    """Per-seed runs (runs[seed]["online"][algorithm][method]: a finetuning run's evaluation history and paired
    outcomes; runs[seed]["recipe"][method]) -> the results dict: per algorithm the pooled curves with Wilson 95%
    bands, pretrained and final rates, episodes to target and the paired comparison; the recipe's pooled table."""
    seeds = list(runs)
    online = {a: _online(cfg, {s: runs[s]["online"][a] for s in seeds}) for a in cfg.algorithms}
    return {"task": cfg.task, "seeds": seeds, "demos": cfg.demos, "alpha": cfg.alpha,
            "algorithms": list(cfg.algorithms), "finetune_episodes": cfg.finetune_episodes,
            "eval_episodes": cfg.eval_episodes, "target_success": cfg.target_success,
            "interval": "wilson95_pooled_over_seeds",
            "demo_success_rate": {str(s): runs[s]["demo_success_rate"] for s in seeds}, "online": online,
            "recipe": _recipe(cfg, runs) if cfg.recipe_methods else None,
            "runs": {str(s): {m: runs[s][m] for m in (*POLICIES, "sigma_bc", "online", "recipe") if m in runs[s]}
                     for s in seeds}, "config": cfg.to_dict()}


def _online(cfg: PipelineConfig, runs: dict[int, dict]) -> dict:
    """One algorithm's runs (seed -> method -> run) -> its ONLINE_KEYS entry."""
    seeds = list(runs)
    curves, pretrained, final, to_target = {}, {}, {}, {}
    for name in POLICIES:
        points = [e["after_episodes"] for e in runs[seeds[0]][name]["evals"]]
        k = [sum(_eval_at(runs[s][name], x)["n_success"] for s in seeds) for x in points]
        n = [sum(_eval_at(runs[s][name], x)["episodes"] for s in seeds) for x in points]
        ci = [wilson_interval(ki, ni) for ki, ni in zip(k, n)]
        per_seed = {str(s): [_eval_at(runs[s][name], x)["success_rate"] for x in points] for s in seeds}
        curves[name] = {"after_episodes": points, "n_success": k, "n": n,
                        "success_rate": [ki / ni for ki, ni in zip(k, n)], "ci_low": [c[0] for c in ci],
                        "ci_high": [c[1] for c in ci], "per_seed": per_seed}
        pretrained[name] = _point(curves[name], 0)
        final[name] = _point(curves[name], -1)
        to_target[name] = {"pooled": _first_reach(points, curves[name]["success_rate"], cfg.target_success),
                           "per_seed": {s: _first_reach(points, v, cfg.target_success) for s, v in per_seed.items()}}
    return {"pretrained": pretrained, "final": final, "episodes_to_target": to_target, "curves": curves,
            "paired": _paired(cfg, runs) if cfg.paired_episodes else None}


def _paired(cfg: PipelineConfig, runs: dict[int, dict]) -> dict:
    """One algorithm's paired final evaluation pooled over seeds (runs: seed -> method -> run): per method pretrained
    vs agent, and BC vs PostBC at each stage, each a McNemar exact test on the same (seed, episode) pairs."""
    pooled = {m: {stage: [x for s in runs for x in runs[s][m]["paired"][stage]] for stage in ("pretrained", "agent")}
              for m in POLICIES}
    out = {"episodes_per_seed": cfg.paired_episodes}
    for m in POLICIES:
        out[m] = {"pretrained": pooled_rate(pooled[m]["pretrained"]), "agent": pooled_rate(pooled[m]["agent"]),
                  "agent_vs_pretrained": paired_comparison(pooled[m]["pretrained"], pooled[m]["agent"]),
                  "per_seed": {str(s): [sum(runs[s][m]["paired"][st]) for st in ("pretrained", "agent")]
                               for s in runs}}
    # "gained" = episodes PostBC succeeds in and BC does not
    out["postbc_vs_bc"] = {st: paired_comparison(pooled["bc"][st], pooled["postbc"][st])
                           for st in ("pretrained", "agent")}
    return out


def _recipe(cfg: PipelineConfig, runs: dict[int, dict]) -> dict:
    """The Best-of-N recipe pooled over seeds: per method the pretrained rate and each N's rate (McNemar vs the
    pretrained policy on the same episodes), and PostBC / sigma-BC vs BC at each N."""
    stages = ["pretrained", *(f"best_of_{n}" for n in cfg.best_of)]

    def outcomes(m: str, stage: str, seeds=None) -> list[bool]:
        rec = [runs[s]["recipe"][m] for s in (seeds or runs)]
        return [x for r in rec for x in (r["pretrained"] if stage == "pretrained" else
                                         r["best_of"][stage[len("best_of_"):]])]

    out = {"rollouts": cfg.recipe_rollouts, "best_of": list(cfg.best_of), "episodes_per_seed": cfg.paired_episodes,
           "discount": cfg.bon.discount, "expectile": cfg.bon.expectile, "fit_steps": cfg.bon.fit_steps}
    for m in cfg.recipe_methods:
        out[m] = {st: pooled_rate(outcomes(m, st)) for st in stages}
        out[m]["rollout_success_rate"] = {str(s): runs[s]["recipe"][m]["rollout_success_rate"] for s in runs}
        out[m]["vs_pretrained"] = {st: paired_comparison(outcomes(m, "pretrained"), outcomes(m, st))
                                   for st in stages[1:]}
        out[m]["per_seed"] = {str(s): [sum(outcomes(m, st, [s])) for st in stages] for s in runs}
    for m in cfg.recipe_methods:
        if m != "bc":  # "gained" = episodes the method succeeds in and BC does not
            out[f"{m}_vs_bc"] = {st: paired_comparison(outcomes("bc", st), outcomes(m, st)) for st in stages}
    return out


def _eval_at(run: dict, after: int) -> dict:
    return next(e for e in run["evals"] if e["after_episodes"] == after)


def _point(curve: dict, i: int) -> dict:
    return {"after_episodes": curve["after_episodes"][i], "n_success": curve["n_success"][i], "n": curve["n"][i],
            "success_rate": curve["success_rate"][i], "ci95": [curve["ci_low"][i], curve["ci_high"][i]],
            "per_seed": {s: v[i] for s, v in curve["per_seed"].items()}}


def _first_reach(points: list[int], rates: list[float], target: float) -> int | None:
    return next((x for x, r in zip(points, rates) if r >= target - 1e-9), None)


# ------------------------------------------------------------------------------------------------------------------
# rendering: the results dict -> the summary line, the figure and report.md
def by_algorithm(r: dict) -> dict:
    """The results dict in the current layout. results.json written before --algorithms (one "algorithm", its
    ONLINE_KEYS at the top level, e.g. the committed full run's) becomes {"algorithms": [it], "online": {it: those
    keys}, ...}, so it renders as it did; a current one is returned unchanged."""
    if "online" in r:
        return r
    rest = {k: v for k, v in r.items() if k not in (*ONLINE_KEYS, "algorithm")}
    return {**rest, "algorithms": [r["algorithm"]], "online": {r["algorithm"]: {k: r.get(k) for k in ONLINE_KEYS}}}


def _rate(p: dict) -> str:
    return f"{p['success_rate']:.0%} [{p['ci95'][0]:.0%}, {p['ci95'][1]:.0%}]"


def _reach(r: dict, o: dict, name: str) -> str:
    x = o["episodes_to_target"][name]["pooled"]
    return f"not reached within {r['finetune_episodes']}" if x is None else str(x)


def _paired_text(p: dict) -> str:
    gains = ", ".join(f"{LABELS[m]} {p[m]['pretrained']['n_success']} -> {p[m]['agent']['n_success']} "
                      f"(McNemar p = {format_p(p[m]['agent_vs_pretrained']['mcnemar_exact_p'])})"
                      for m in ("bc", "postbc"))
    return f"paired final evaluation, successes of {p['bc']['agent']['n']} episodes: {gains}"


def summary_line(r: dict) -> str:
    """One line: pretrained success, then per algorithm the finetuned success (pooled, Wilson 95%), online episodes
    to the target and (when run) the paired final evaluation's successes with McNemar p; then the recipe's."""
    r = by_algorithm(r)
    # every algorithm's first point evaluates the same checkpoints on the same episodes: stated once
    pre = r["online"][r["algorithms"][0]]["pretrained"]
    reduced = "" if r["config"]["full"] else f"reduced run (the full one: --full, report {FULL_REPORT}): "
    cfg = r["config"]
    # --obs images: the keys and resolution say what was learned from (a state run's line stays as it always was)
    task = r["task"] if cfg.get("obs", "state") == "state" else (
        f"{r['task']} from images ({' '.join(cfg['obs_keys'])} at {cfg['image_size'][0]}x{cfg['image_size'][1]}, "
        f"{cfg['image_encoder']} encoder)")
    line = (f"{reduced}{task}, {r['demos']} demos, seeds {' '.join(map(str, r['seeds']))} x "
            f"{r['eval_episodes']} eval episodes: pretrained BC {_rate(pre['bc'])} vs PostBC {_rate(pre['postbc'])}")
    for a in r["algorithms"]:
        o = r["online"][a]
        fin = o["final"]
        line += (f"; after {r['finetune_episodes']} online episodes ({a}) BC {_rate(fin['bc'])} vs PostBC "
                 f"{_rate(fin['postbc'])}; episodes to {r['target_success']:.0%} success: BC {_reach(r, o, 'bc')}, "
                 f"PostBC {_reach(r, o, 'postbc')}")
        line += f"; {_paired_text(o['paired'])}" if o.get("paired") else ""
    return line + (f"; {_recipe_text(r)}" if r.get("recipe") else "")


def _recipe_text(r: dict) -> str:
    rc = r["recipe"]
    n_max = f"best_of_{max(rc['best_of'])}"
    parts = ", ".join(f"{LABELS[m]} {rc[m]['pretrained']['n_success']} -> {rc[m][n_max]['n_success']}"
                      for m in RECIPE_METHODS if m in rc)
    vs = rc["postbc_vs_bc"][n_max]
    return (f"paper's WidowX recipe ({rc['rollouts']} rollouts, offline IQL, best of {max(rc['best_of'])}), "
            f"successes of {rc['bc']['pretrained']['n']} episodes: {parts} (PostBC vs BC McNemar p = "
            f"{format_p(vs['mcnemar_exact_p'])})")


def plot_success(path: Path, r: dict) -> Path:
    """Success vs online episodes, one panel per algorithm: pooled rate per method with its Wilson 95% band,
    per-seed rates as thin lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = by_algorithm(r)
    algorithms = r["algorithms"]
    fig, axes = plt.subplots(1, len(algorithms), figsize=(7 if len(algorithms) == 1 else 5 * len(algorithms), 4.2),
                             sharey=True, squeeze=False)
    title = (f"{r['task']}, {r['demos']} demos: mean over {len(r['seeds'])} seeds x {r['eval_episodes']} eval "
             "episodes\nband: Wilson 95% of pooled episodes; thin lines: single seeds")
    for ax, a in zip(axes[0], algorithms):
        for color, name in (("C0", "bc"), ("C3", "postbc")):
            c = r["online"][a]["curves"][name]
            x = c["after_episodes"]
            ax.fill_between(x, c["ci_low"], c["ci_high"], color=color, alpha=0.18, lw=0)
            for rates in c["per_seed"].values():
                ax.plot(x, rates, color=color, lw=0.7, alpha=0.35)
            label = LABELS[name] if name == "bc" else f"{LABELS[name]} (alpha {r['alpha']})"
            ax.plot(x, c["success_rate"], color=color, lw=2, marker="o", ms=4, label=label)
        ax.axhline(r["target_success"], color="0.4", ls=":", lw=1, label=f"target {r['target_success']:.0%}")
        ax.set_xlabel(f"online episodes ({a}, warm-up included)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if len(algorithms) > 1:
            ax.set_title(ALGORITHM_LABELS.get(a, a), fontsize=10)
    if len(algorithms) == 1:
        axes[0][0].set_title(title, fontsize=9)
    else:
        fig.suptitle(title, fontsize=9)
    axes[0][0].set_ylabel("success rate")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _settings(cfg: dict, a: str) -> tuple[str, str]:
    """One algorithm's settings as the report states them, and what its curve's later points evaluate."""
    if a == "dppo":
        d = cfg["dppo"]
        return (f"{d['envs']} lockstep environments, {d['episodes_per_iteration']} episodes per PPO iteration, "
                f"actor lr {d['actor_lr']}, {d['critic_warmup_iterations']} critic warm-up iterations, "
                f"eta {d['eta']}, minimum std {d['min_sampling_std']}",
                "the fine-tuned policy as deployed (deterministic DDIM)")
    dsrl = cfg["dsrl"]
    return (f"{dsrl['warmup_episodes']} warm-up episodes of the pretrained policy, UTD {dsrl['utd']}, batch "
            f"{dsrl['batch_size']}, hidden {dsrl['hidden']}", "the greedy noise policy")


def _moved(before: dict, after: dict, c: dict) -> str:
    """'k0 -> k1 of n (r0 -> r1; +gained / -lost, p = ...)' for two stages on the same episodes."""
    return (f"{before['n_success']} -> {after['n_success']} of {after['n']} ({before['success_rate']:.0%} -> "
            f"{after['success_rate']:.0%}; +{c['gained']} / -{c['lost']}, p = {format_p(c['mcnemar_exact_p'])})")


def _side_by_side(r: dict) -> str:
    """Every finetuning method on the paired episodes: the online algorithms' agents and the recipe's Best-of-N."""
    rows = []
    for a in r["algorithms"]:
        p = r["online"][a].get("paired")
        if p:
            rows.append(f"| {ALGORITHM_LABELS.get(a, a)}, {r['finetune_episodes']} online episodes | "
                        + " | ".join(_moved(p[m]["pretrained"], p[m]["agent"], p[m]["agent_vs_pretrained"])
                                     for m in ("bc", "postbc"))
                        + f" | {_vs_bc(p['postbc_vs_bc']['agent'])} |")
    rc = r.get("recipe")
    for n in (rc["best_of"] if rc else ()):
        st = f"best_of_{n}"
        rows.append(f"| Best-of-{n} ({rc['rollouts']} rollouts, offline IQL) | "
                    + " | ".join(_moved(rc[m]["pretrained"], rc[m][st], rc[m]["vs_pretrained"][st])
                                 for m in ("bc", "postbc"))
                    + f" | {_vs_bc(rc['postbc_vs_bc'][st])} |")
    if not rows:
        return "(needs the paired final evaluation: --paired-episodes > 0)\n"
    return f"""Successes on the paired episodes ({len(r['seeds'])} seeds; the same initial states and noise seeds
for every row, so the pretrained numbers are one evaluation): pretrained -> finetuned, gained / lost episodes,
McNemar's exact p. Details per algorithm and for the recipe below.

| finetuning | BC | PostBC | PostBC vs BC after finetuning |
|---|---|---|---|
{chr(10).join(rows)}
"""


def _vs_bc(c: dict) -> str:
    return f"+{c['gained']} / -{c['lost']}, p = {format_p(c['mcnemar_exact_p'])}"


def _algorithm_section(r: dict, a: str) -> str:
    """One online algorithm's table (pretrained -> finetuned with intervals, the paired test, episodes to target,
    per seed) and its curve's points."""
    cfg, o = r["config"], r["online"][a]
    names = ("bc", "postbc")
    seeds = [str(s) for s in r["seeds"]]
    label = ALGORITHM_LABELS.get(a, a)
    settings, later = _settings(cfg, a)
    p = o.get("paired")

    def paired_cells(m: str) -> str:
        if not p:
            return "- | - | - | -"
        c = p[m]["agent_vs_pretrained"]
        return (f"{_rate(p[m]['pretrained'])} -> {_rate(p[m]['agent'])} | {c['gained']} / {c['lost']} | "
                f"{format_p(c['mcnemar_exact_p'])} | " + " ".join(f"{x}->{y}" for x, y in p[m]["per_seed"].values()))

    rows = "\n".join(
        f"| {LABELS[m]} | {_rate(o['pretrained'][m])} | {_rate(o['final'][m])} | {paired_cells(m)} | "
        f"{_reach(r, o, m)} | "
        + " ".join("-" if v is None else str(v) for v in o["episodes_to_target"][m]["per_seed"].values()) + " |"
        for m in names)
    if p:
        vs = "; ".join(f"{st}: PostBC succeeds where BC fails in {c['gained']}, BC where PostBC fails in "
                       f"{c['lost']} (p = {format_p(c['mcnemar_exact_p'])})" for st, c in p["postbc_vs_bc"].items())
        paired_note = (f"Paired columns: the pretrained policy and the agent after {r['finetune_episodes']} online "
                       f"episodes on the same {p['episodes_per_seed']} initial states and noise seeds per seed "
                       f"(greedy agent, as `postbc finetune-eval`), Wilson 95% over the pooled episodes, McNemar's "
                       f"exact test on the pairs. BC vs PostBC on the same episodes, {vs}.\n")
    else:
        paired_note = "(paired final evaluation skipped: --paired-episodes 0)\n"
    head = " | ".join(["method", "pretrained", f"after {r['finetune_episodes']} episodes",
                       "paired: pretrained -> finetuned", "gained / lost", "McNemar p",
                       f"paired successes per seed ({' '.join(seeds)})",
                       f"episodes to {r['target_success']:.0%} (pooled)", "per seed (- = not reached)"])
    pts = o["curves"]["bc"]["after_episodes"]
    curve_rows = "\n".join(
        f"| {x} | " + " | ".join(f"{o['curves'][m]['success_rate'][i]:.0%} [{o['curves'][m]['ci_low'][i]:.0%}, "
                                 f"{o['curves'][m]['ci_high'][i]:.0%}]" for m in names) + " | "
        + " | ".join(" ".join(f"{o['curves'][m]['per_seed'][s][i]:.0%}" for s in seeds) for m in names) + " |"
        for i, x in enumerate(pts))
    return f"""## {label}: {r['finetune_episodes']} online episodes per method and seed

Settings: {settings}. Curve points after episode 0 evaluate {later}.

| {head} |
|---|---|---|---|---|---|---|---|---|
{rows}

{paired_note}
### {label}: success vs online episodes

| online episodes | BC | PostBC | BC per seed ({' '.join(seeds)}) | PostBC per seed |
|---|---|---|---|---|
{curve_rows}
"""


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def render_report(r: dict) -> str:
    """The results dict (with summary_line, coverage, timings_s, machine) -> report.md's Markdown: the summary, the
    methods side by side, one section per online algorithm, the recipe, the coverage experiment, ending with
    pipeline_notes.md."""
    r = by_algorithm(r)
    cfg = r["config"]
    seeds = [str(s) for s in r["seeds"]]
    labels = [ALGORITHM_LABELS.get(a, a) for a in r["algorithms"]]
    timings = ", ".join(f"{k} {v:.0f} {'CPU s' if k.endswith('cpu') else 's'}" for k, v in r["timings_s"].items())
    m = r["machine"]
    cov = r.get("coverage")
    cov_text = ("(coverage experiment skipped: --no-coverage)\n" if not cov else
                f"![coverage]({cov['figure']})\n\nPosterior spread of the action samples (std PostBC / BC): dense "
                f"region {cov['dense']['spread_ratio']:.2f}, states with one demo "
                f"{cov.get('one_demo', {}).get('spread_ratio', float('nan')):.2f}, two demos "
                f"{cov.get('two_demos', {}).get('spread_ratio', float('nan')):.2f} (metrics: {cov['json']}).\n")
    notes = NOTES.read_text() if NOTES.exists() else "(pipeline_notes.md not found)\n"
    recipe_text = "(the Best-of-N recipe was skipped: --recipe-rollouts 0)\n"
    if r.get("recipe"):
        rc = r["recipe"]
        stages = ["pretrained", *(f"best_of_{n}" for n in rc["best_of"])]
        methods = [m for m in RECIPE_METHODS if m in rc]
        head = " | ".join(["pretrained", *(f"best of {n} (gained / lost, p)" for n in rc["best_of"])])
        rows = "\n".join(
            f"| {LABELS[m]} | {_rate(rc[m]['pretrained'])} | "
            + " | ".join(f"{_rate(rc[m][st])} ({rc[m]['vs_pretrained'][st]['gained']} / "
                         f"{rc[m]['vs_pretrained'][st]['lost']}, "
                         f"{format_p(rc[m]['vs_pretrained'][st]['mcnemar_exact_p'])})"
                         for st in stages[1:])
            + " | " + " ".join(f"{'/'.join(map(str, v))}" for v in rc[m]["per_seed"].values())
            + " | " + " ".join(f"{v:.0%}" for v in rc[m]["rollout_success_rate"].values()) + " |" for m in methods)
        vs_rows = "\n".join(
            f"| {LABELS[m]} vs BC | " + " | ".join(
                f"+{rc[f'{m}_vs_bc'][st]['gained']} / -{rc[f'{m}_vs_bc'][st]['lost']}, p = "
                f"{format_p(rc[f'{m}_vs_bc'][st]['mcnemar_exact_p'])}" for st in stages) + " |"
            for m in methods if m != "bc")
        recipe_text = f"""The paper's own WidowX experiment (App. D): {rc['rollouts']} rollouts of each pretrained policy
per seed labelled 0/1 by success, one IQL critic fitted on them offline ({rc['fit_steps']} steps, discount
{rc['discount']}, expectile {rc['expectile']}, no further collection), then at every decision the critic picks the
best of N chunks sampled from the frozen policy.
sigma-BC is the paper's baseline: the same average noise magnitude as PostBC's posterior, for every state. All are
evaluated on the same {rc['episodes_per_seed']} initial states and noise seeds per seed as the online comparison.

| method | {head} | successes per seed ({' / '.join(stages)}) | rollout success per seed |
|---|{'---|' * (len(stages) + 2)}
{rows}

| paired on the same episodes | {' | '.join(stages)} |
|---|{'---|' * len(stages)}
{vs_rows}
"""
    sections = "\n".join(_algorithm_section(r, a) for a in r["algorithms"])
    return f"""# PostBC vs BC: pretraining and {' / '.join(labels)} finetuning on {r['task']}

**Result:** {r['summary_line']}

Setup: per seed ({', '.join(seeds)}), {r['demos']} scripted demonstrations (operator quality {cfg['quality']}) ->
BC (alpha 0) and PostBC (alpha {r['alpha']}, K = {cfg['ensemble_size']}, {cfg['ensemble_steps']} ensemble steps) with
{cfg['steps']} diffusion steps each, the same seed for both -> finetuning of each with {_and(labels)} for
{r['finetune_episodes']} online episodes (the same seeds for every algorithm; each one's settings in its section). Every
point evaluates {r['eval_episodes']} episodes per seed on the same fixed initial states (never trained on); episode 0
is the pretrained policy (w ~ N(0, I)). Intervals: Wilson 95% over the episodes pooled across seeds
(n = {len(seeds)} x {r['eval_episodes']}); they ignore between-seed variance, which the per-seed columns show.
Scripted demonstrator success per seed: {', '.join(f'{v:.0%}' for v in r['demo_success_rate'].values())}.

![success vs online episodes](success_vs_episodes.png)

## Finetuning methods side by side

{_side_by_side(r)}
{sections}
## The paper's WidowX recipe: offline IQL on labelled rollouts, Best-of-N

{recipe_text}
## Coverage (1-D problem, analysis/coverage.py)

{cov_text}
Wall time ({m['cpus']} CPUs, {m['workers']} worker processes, 1-min load average {m['load_avg_1min'][0]:.1f} at the
start and {m['load_avg_1min'][1]:.1f} at the end): {timings}.

{notes}"""
