"""RL finetuning algorithms on toy problems small enough to learn in seconds on a CPU.

The DSRL / Best-of-N tests use a real diffusion policy trained on *bimodal* demonstrations of a 2-D point task: half
of the demonstrations go left, half go right, only "right" succeeds. The pretrained policy therefore succeeds about
half the time, and an algorithm that really steers it (DSRL through the noise, Best-of-N through its critic) must get
close to always. That is the paper's setting in miniature: the frozen policy's support contains the good behaviour.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from postbc_core.data.normalizer import LinearNormalizer
from postbc_core.data.store import EpisodeStore
from postbc_core.errors import CheckpointError, ConfigError, PostBCError
from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig
from postbc_core.rl import (
    SAC,
    BestOfNConfig,
    DSRLConfig,
    FinetuneConfig,
    Finetuner,
    evaluate,
    expectile_loss,
    run_episode,
)
from postbc_core.rl.agent import Agent
from postbc_core.rl.state import flatten, rng_state, set_rng_state, unflatten

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ForkTask:
    """2-D point from near the origin, actions are displacements (|a| <= 0.25 per axis); success = x > 0.6."""

    def __init__(self, max_steps: int = 8):
        self.max_steps = max_steps

    def action_bounds(self):
        return np.full(2, -0.25), np.full(2, 0.25)

    def reset(self, seed=None):
        self.pos = np.random.default_rng(seed).uniform(-0.05, 0.05, 2)
        self.t = 0
        return {"pos": self.pos.copy()}

    def step(self, a):
        self.pos = self.pos + np.asarray(a, float)
        self.t += 1
        ok = bool(self.pos[0] > 0.6)
        return {"pos": self.pos.copy()}, float(ok), ok, self.t >= self.max_steps and not ok, {"success": ok}


@pytest.fixture(scope="module")
def fork_policy():
    """Diffusion policy (chunk 4) on 40 demonstrations, alternately going left and right at 0.2 per step."""
    rng = np.random.default_rng(0)
    obs, act = [], []
    for i in range(40):
        side = 1.0 if i % 2 else -1.0
        p = rng.uniform(-0.05, 0.05, 2)
        steps = []
        for _ in range(12):
            a = np.array([0.2 * side, 0.0]) + rng.normal(0, 0.02, 2)
            steps.append((p.copy(), a))
            p = p + a
        for t in range(12 - 4):
            obs.append(steps[t][0])
            act.append(np.stack([steps[t + k][1] for k in range(4)]))
    obs, act = np.array(obs, np.float32), np.array(act, np.float32)
    torch.manual_seed(0)
    cfg = PolicyConfig(obs_shapes={"pos": (2,)}, action_dim=2, action_horizon=4, mlp_hidden=(64, 64),
                       num_inference_steps=8)
    norm = LinearNormalizer().fit({"pos": obs}, default_mode="limits")
    norm.fit({"action": act.reshape(-1, 2)}, default_mode="limits")
    policy = DiffusionPolicy(cfg, norm)
    opt = torch.optim.Adam(policy.parameters(), 1e-3)
    O, A = torch.as_tensor(obs)[:, None], torch.as_tensor(act)
    for _ in range(800):
        idx = torch.randint(0, len(O), (128,))
        loss = policy.compute_loss({"obs": {"pos": O[idx]}, "action": A[idx]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


def fork_config(tmp_path, algorithm: str, episodes: int, **kw) -> FinetuneConfig:
    return FinetuneConfig(
        checkpoint=tmp_path / "unused.safetensors", task="fork", algorithm=algorithm, episodes=episodes,
        out=tmp_path / "run", seed=0, device="cpu",
        dsrl=DSRLConfig(warmup_episodes=4, utd=20, batch_size=128, hidden=(64, 64)),
        bon=BestOfNConfig(rollouts=10, fit_steps=300, steps_per_episode=50, batch_size=128, hidden=(64, 64)), **kw)


def finetune_fork(ft: Finetuner, episodes: int) -> list[bool]:
    task = ForkTask()
    succ = []
    for i in range(episodes):
        succ.append(bool(run_episode(ft, task, 100 + i)["success"]))
        ft.update()
        ft.save()
    return succ


# -- IQL ---------------------------------------------------------------------------------------------------------
def test_expectile_loss_on_hand_computed_numbers():
    diff = torch.tensor([1.0, -2.0, 0.5])  # target - prediction
    # tau = 0.9: weights 0.9 (diff >= 0) and 0.1 (diff < 0): (0.9 * 1 + 0.1 * 4 + 0.9 * 0.25) / 3
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.9 + 0.4 + 0.225) / 3)
    # tau = 0.5 is half the mean squared error
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (1 + 4 + 0.25) / 3)
    # The minimiser over a constant v of targets {0, 1} (equally often) is the 0.9-expectile: 0.9 (1 - v) = 0.1 v.
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    targets = torch.tensor([0.0, 1.0])
    for _ in range(100):
        opt.zero_grad()
        expectile_loss(targets - v, 0.9).backward()
        opt.step()
    assert v.item() == pytest.approx(0.9, abs=1e-3)


# -- SAC ----------------------------------------------------------------------------------------------------------
def test_sac_learns_a_contextual_bandit():
    """One-step episodes, reward -(a - 0.5 s)^2 from uniformly random logged actions: the greedy action must move
    from ~0 to the optimum 0.5 s."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    s = torch.rand(4000, 1, generator=g) * 2 - 1
    a = torch.rand(4000, 1, generator=g) * 2 - 1
    data = {"obs": s, "action": a, "reward": -(a - 0.5 * s).squeeze(1) ** 2, "next_obs": s,
            "done": torch.ones(4000)}
    sac = SAC(1, 1, hidden=(64, 64), lr=3e-3)
    probe = torch.linspace(-1, 1, 21)[:, None]

    def error():
        return (sac.act(probe, deterministic=True) - 0.5 * probe).abs().mean().item()

    before = error()
    for _ in range(600):
        idx = torch.randint(0, 4000, (128,), generator=g)
        metrics = sac.update({k: v[idx] for k, v in data.items()})
    assert before > 0.15
    assert error() < 0.06, f"greedy action error {error():.3f} (was {before:.3f})"
    assert all(np.isfinite(list(metrics.values())))
    assert metrics["alpha"] < 1.0  # the temperature is tuned, not fixed


def test_training_state_round_trips_through_tensors_and_json():
    import json

    sac = SAC(3, 2, hidden=(8,))
    batch = {"obs": torch.randn(4, 3), "action": torch.rand(4, 2) * 2 - 1, "reward": torch.randn(4),
             "next_obs": torch.randn(4, 3), "done": torch.zeros(4)}
    sac.update(batch)
    np_rng = np.random.default_rng(5)
    state = {"agent": sac.training_state(), "rng": rng_state(np_rng)}
    expected = (np_rng.random(), torch.rand(1).item())  # the draws that follow the captured state
    tensors, skeleton = flatten(state)
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    opt = back["agent"]["critic_opt"]
    assert set(opt["state"]) == set(sac.critic_opt.state_dict()["state"])  # int keys survive JSON
    assert isinstance(opt["param_groups"][0]["betas"], tuple)
    twin = SAC(3, 2, hidden=(8,))
    twin.load_training_state(back["agent"])
    for k, v in sac.state_dict().items():
        assert torch.equal(v, twin.state_dict()[k]), k
    other = np.random.default_rng(0)
    set_rng_state(back["rng"], other)
    assert (other.random(), torch.rand(1).item()) == expected


# -- DSRL / Best-of-N end to end on the fork task -----------------------------------------------------------------
def test_dsrl_sac_steers_a_bimodal_policy_to_the_rewarded_mode(tmp_path, fork_policy):
    ft = Finetuner(fork_config(tmp_path, "dsrl_sac", 30), policy=fork_policy)
    try:
        base = evaluate(ft, ForkTask(), 20, mode="pretrained")
        succ = finetune_fork(ft, 30)
        final = evaluate(ft, ForkTask(), 20)
        assert base["success_rate"] <= 0.6, base
        assert final["success_rate"] >= 0.9, (final, succ)
        assert ft.updates == 20 * sum(  # utd x transitions of every episode from the end of warm-up on
            h["transitions"] for h in ft.history[3:])
        # the replay store holds every training episode with its noise
        store = ft.replay.store
        assert store.n_episodes == 30 and list(store.meta_table()["success"]) == [int(s) for s in succ]
        ep = store.episode(0)
        assert ep["decision"][0] and ep["noise"].shape[1] == 8
        assert not ep["noise"][~ep["decision"]].any()
    finally:
        ft.close()


def test_best_of_n_picks_the_rewarded_mode_after_fitting_iql(tmp_path, fork_policy):
    ft = Finetuner(fork_config(tmp_path, "best_of_n", 14), policy=fork_policy)
    try:
        base = evaluate(ft, ForkTask(), 20, mode="pretrained")
        finetune_fork(ft, 14)
        final = evaluate(ft, ForkTask(), 20)
        assert base["success_rate"] <= 0.6, base
        assert final["success_rate"] >= 0.9, final
        assert ft.updates == 300 + 4 * 50  # first fit after 10 rollouts, then a refit after every episode
        assert [h["mode"] for h in ft.history] == ["pretrained"] * 10 + ["explore"] * 4
    finally:
        ft.close()


@pytest.mark.slow
def test_dsrl_na_steers_a_bimodal_policy_to_the_rewarded_mode(tmp_path, fork_policy):
    ft = Finetuner(fork_config(tmp_path, "dsrl_na", 30), policy=fork_policy)
    try:
        base = evaluate(ft, ForkTask(), 20, mode="pretrained")
        finetune_fork(ft, 30)
        final = evaluate(ft, ForkTask(), 20)
        assert base["success_rate"] <= 0.6 and final["success_rate"] >= 0.9, (base, final)
    finally:
        ft.close()


def test_dsrl_na_update_trains_the_action_and_noise_critics(tmp_path, fork_policy):
    cfg = fork_config(tmp_path, "dsrl_na", 3)
    cfg.dsrl.warmup_episodes, cfg.dsrl.utd = 2, 3
    ft = Finetuner(cfg, policy=fork_policy)
    try:
        agent = ft.agent
        before = {k: v.clone() for k, v in agent.action_critic_target.state_dict().items()}
        finetune_fork(ft, 3)
        batch = ft.replay.sample(16, np.random.default_rng(0))
        metrics = agent.update(batch)
        assert {"action_critic_loss", "noise_critic_loss", "actor_loss", "alpha"} <= set(metrics)
        assert all(np.isfinite(list(metrics.values())))
        after = agent.action_critic_target.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)  # Polyak moved the targets
        assert batch["action"].shape == (16, 4 * 2)  # executed chunk, normalized, flattened
    finally:
        ft.close()


# -- checkpoints and resume (in-process) --------------------------------------------------------------------------
def _rows(out):
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _same_state(a: Finetuner, b: Finetuner) -> None:
    strip = lambda h: [{k: v for k, v in e.items() if k != "wall_s"} for e in h]
    assert a.counters() == b.counters() and strip(a.history) == strip(b.history)
    for k, v in a.agent.sac.state_dict().items():
        assert torch.equal(v, b.agent.sac.state_dict()[k]), k
    assert np.array_equal(a.rng.bit_generator.state["state"]["state"], b.rng.bit_generator.state["state"]["state"])


def test_an_episode_committed_before_its_updates_is_kept_and_its_updates_redone(tmp_path, fork_policy):
    """end_episode checkpoints the commit: a stop before the updates finish keeps the episode, and the resume redoes
    them from that state, ending where an uninterrupted run ends (and metrics.jsonl has each row once)."""
    def cfg_at(out, **kw):
        c = fork_config(tmp_path, "dsrl_sac", 4, **kw)
        c.out, c.dsrl.warmup_episodes, c.dsrl.utd = tmp_path / out, 1, 5
        return c

    whole = Finetuner(cfg_at("whole"), policy=fork_policy)
    finetune_fork(whole, 3)
    ft = Finetuner(cfg_at("cut"), policy=fork_policy)
    finetune_fork(ft, 2)
    run_episode(ft, ForkTask(), 102)  # committed ...
    owed = ft.updates_owed
    assert owed > 0
    assert ft.update(stop=lambda: True) == {"updates": 0, "interrupted": True}  # ... and stopped before its updates
    with pytest.raises(PostBCError, match="update was cut short.*pass --resume"):
        ft.save()  # the agent is mid-update: the checkpoint of the commit stays the resume point
    assert f"episode 2 is committed and kept; its {owed} updates are redone" in ft.stop_note()
    ft.close()
    ft2 = Finetuner(cfg_at("cut", resume=True), policy=fork_policy)
    try:
        assert ft2.replay.n_episodes == 3 and ft2.update_pending and ft2.updates_owed == owed
        assert ft2.update()["updates"] == owed
        ft2.save()
        _same_state(whole, ft2)
        strip = lambda rows: [(r["tag"], r["step"]) for r in rows]
        assert strip(_rows(ft2.cfg.out)) == strip(_rows(whole.cfg.out))  # no row twice, none lost
    finally:
        ft2.close()
        whole.close()


@pytest.mark.parametrize("before", [2, 0])
def test_resume_drops_an_episode_committed_after_the_last_checkpoint(tmp_path, fork_policy, monkeypatch, before):
    """A kill between an episode's commit and its checkpoint: the episode and its metrics rows are dropped together
    (also when it is the run's first: the store then has no episode left)."""
    cfg = fork_config(tmp_path, "dsrl_sac", 4)
    cfg.dsrl.warmup_episodes = 1
    ft = Finetuner(cfg, policy=fork_policy)
    finetune_fork(ft, before)  # episodes, each checkpointed
    counters = ft.counters()
    weights = {k: v.clone() for k, v in ft.agent.sac.state_dict().items()}
    rows = _rows(cfg.out)
    monkeypatch.setattr(ft, "save", lambda: None)  # the process "dies" before the commit's checkpoint
    run_episode(ft, ForkTask(), 999)
    assert f"episode {before} was committed after the last checkpoint" in ft.stop_note()
    ft.close()
    with EpisodeStore.open(cfg.out / "replay.zarr") as store:
        assert store.n_episodes == before + 1
    assert len(_rows(cfg.out)) == len(rows) + 1
    cfg.resume = True
    ft2 = Finetuner(cfg, policy=fork_policy)
    try:
        assert ft2.counters() == counters
        assert ft2.replay.n_episodes == before and _rows(cfg.out) == rows
        for k, v in ft2.agent.sac.state_dict().items():
            assert torch.equal(v, weights[k]), k
        assert finetune_fork(ft2, 1) and ft2.replay.n_episodes == before + 1  # and the run goes on
    finally:
        ft2.close()
    (cfg.out / "finetune_state.safetensors").unlink()  # episodes without the checkpoint: nothing to resume from
    cfg.resume = False
    with pytest.raises(ConfigError, match=r"holds finetuning episodes \(replay.zarr\) but no "
                                          r"finetune_state.safetensors to resume from: move them away"):
        Finetuner(cfg, policy=fork_policy)


def test_run_directory_and_resume_misuse_is_explained(tmp_path, fork_policy):
    cfg = fork_config(tmp_path, "dsrl_sac", 2)
    with pytest.raises(CheckpointError, match="no finetuning checkpoint.*without --resume"):
        Finetuner(fork_config(tmp_path, "dsrl_sac", 2, resume=True), policy=fork_policy)
    Finetuner(cfg, policy=fork_policy).close()
    with pytest.raises(ConfigError, match="already holds a finetuning run; pass --resume"):
        Finetuner(cfg, policy=fork_policy)
    with pytest.raises(ConfigError, match="algorithm was 'dsrl_sac', now 'best_of_n'"):
        Finetuner(fork_config(tmp_path, "best_of_n", 2, resume=True), policy=fork_policy)
    changed = fork_config(tmp_path, "dsrl_sac", 2, resume=True)
    changed.dsrl.utd = 5
    with pytest.raises(ConfigError, match="dsrl.utd was 20, now 5"):
        Finetuner(changed, policy=fork_policy)
    changed = fork_config(tmp_path, "dsrl_sac", 2, resume=True)
    changed.bon.n_candidates = 3  # Best-of-N settings do not matter to a DSRL run: it resumes
    Finetuner(changed, policy=fork_policy).close()
    ft = Finetuner(fork_config(tmp_path, "dsrl_sac", 2, resume=True), policy=fork_policy)
    try:
        with pytest.raises(PostBCError, match="start_episode"):
            ft.act({"pos": np.zeros(2)})
        ft.start_episode()
        with pytest.raises(ConfigError, match="missing keys \\['pos'\\]"):
            ft.act({"position": np.zeros(2)})
        with pytest.raises(PostBCError, match="between end_episode"):
            ft.update()
    finally:
        ft.close()


def test_reward_from_label_turns_the_operator_label_into_the_terminal_reward(tmp_path, fork_policy):
    """The robot case (no reward signal): steps observe reward 0, the label sets the last step's reward and done."""
    ft = Finetuner(fork_config(tmp_path, "dsrl_sac", 2, reward_from_label=True), policy=fork_policy)
    try:
        for success in (True, False):
            ft.start_episode()
            obs = {"pos": np.zeros(2)}
            for _ in range(6):
                a = ft.act(obs)
                obs = {"pos": obs["pos"] + a}
                ft.observe(0.0, False)
            summary = ft.end_episode(success)
            assert summary["return"] == float(success)
        ok, failed = ft.replay.store.episode(0), ft.replay.store.episode(1)
        assert ok["reward"].tolist() == [0] * 5 + [1] and ok["done"].tolist() == [False] * 5 + [True]
        assert not failed["reward"].any() and not failed["done"].any()
        assert "action" in ok and np.array_equal(ok["action"], ok["policy_action"])  # default row: policy's key
        assert list(ft.replay.store.meta_table()["success"]) == [1, 0]
        # 6 steps with chunk 4: decisions at rows 0 and 4; the terminal chunk is indexed, the cut-off one is not
        assert ft.counters()["replay_transitions"] == 2 + 1
    finally:
        ft.close()


def _dppo_config(**kw):
    from postbc_core.rl.dppo import DPPOConfig

    return DPPOConfig(**kw)


@pytest.mark.parametrize("make, match", [
    (lambda: DSRLConfig(utd=0), "utd=0 must be >= 1"),
    (lambda: DSRLConfig(discount=1.5), "discount=1.5 must be in \\(0, 1\\]"),
    (lambda: DSRLConfig(noise_magnitude=0), "noise_magnitude=0 must be > 0"),
    (lambda: DSRLConfig(variant="ppo"), "variant='ppo'"),
    (lambda: BestOfNConfig(expectile=1.0), "expectile=1.0 must be in \\[0.5, 1\\)"),
    (lambda: BestOfNConfig(n_candidates=0), "n_candidates=0 must be >= 1"),
    (lambda: DSRLConfig(obs_clip=-1), "obs_clip=-1 must be >= 0"),
    (lambda: BestOfNConfig(obs_clip=-1), "obs_clip=-1 must be >= 0"),
    (lambda: FinetuneConfig(checkpoint="x", episodes=0), "episodes=0"),
    (lambda: FinetuneConfig(checkpoint="x", algorithm="ppo"), "algorithm='ppo': choose one of dsrl_sac"),
    (lambda: _dppo_config(envs=0), "dppo envs=0 must be >= 1 \\(default 8\\)"),
    (lambda: _dppo_config(eta=2.0), "dppo eta=2.0 must be in \\[0, 1\\]"),
    (lambda: _dppo_config(gae_lambda=0.0), "dppo gae_lambda=0.0 must be in \\(0, 1\\]"),
    (lambda: _dppo_config(min_sampling_std=0.0), "dppo min_sampling_std=0.0 must be > 0"),
])
def test_bad_config_values_name_the_value_and_the_fix(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_algorithm_sets_the_dsrl_variant():
    assert FinetuneConfig(checkpoint="x", algorithm="dsrl_na").dsrl.variant == "na"
    assert FinetuneConfig(checkpoint="x", algorithm="dsrl_sac", dsrl=DSRLConfig(variant="na")).dsrl.variant == "sac"


@pytest.mark.parametrize("algorithm", ["dsrl_sac", "dsrl_na", "best_of_n"])
def test_agent_networks_see_clipped_features(tmp_path, fork_policy, algorithm):
    """Features of |z| ~ 10^3 (a demo-fitted normalizer far from the demos) reach the actor / critics clipped to
    obs_clip, in acting and in updates; the frozen policy still decodes from the raw features."""
    ft = Finetuner(fork_config(tmp_path, algorithm, 1), policy=fork_policy)
    agent, clip = ft.agent, 2.0
    assert isinstance(agent, Agent)  # what the Finetuner calls on every agent (rl/agent.py)
    agent.cfg.obs_clip = clip
    seen = []
    nets = [agent.iql.q, agent.iql.v] if algorithm == "best_of_n" else [agent.sac.actor, agent.sac.critic]
    if algorithm == "dsrl_na":
        nets.append(agent.action_critic)
    for net in nets:
        net.register_forward_pre_hook(lambda m, args: seen.append(args[0].abs().max().item()))
    decoded = []
    orig_decode = agent.np.decode
    agent.np.decode = lambda f, w: decoded.append(f.abs().max().item()) or orig_decode(f, w)
    feats = torch.full((1, agent.np.feature_dim), 1000.0)
    agent.choose(feats, "eval")
    B = 8
    D, A = agent.np.noise_dim, agent.np.n_action_steps * agent.np.action_dim
    agent.update({"obs": feats.expand(B, -1), "next_obs": -feats.expand(B, -1), "noise": torch.zeros(B, D),
                  "action": torch.zeros(B, A), "reward": torch.zeros(B), "done": torch.zeros(B),
                  "steps": torch.ones(B)})
    assert seen and max(seen) <= clip + 1e-6, seen
    if decoded:  # Best-of-N / DSRL-NA decode chunks: from the raw features
        assert max(decoded) == 1000.0


# -- DPPO: the PPO pieces in isolation, then end to end on the fork task -------------------------------------------
def dppo_agent(policy, **kw):
    from postbc_core.rl.dppo import DPPOAgent, DPPOConfig
    from postbc_core.rl.noise_env import NoisePolicy

    return DPPOAgent(DPPOConfig(**kw), NoisePolicy(policy), "cpu")


def test_dppo_denoising_log_probabilities_match_a_direct_gaussian_computation(fork_policy):
    """log p(x_{i-1} | x_i, s) of every fine-tuned DDIM step, recomputed here from the schedule's alphas in float64:
    x0 = clip((x - sqrt(1 - abar_t) eps) / sqrt(abar_t)), sigma = eta sqrt((1 - abar_p) / (1 - abar_t))
    sqrt(1 - abar_t / abar_p), mean = sqrt(abar_p) x0 + sqrt(1 - abar_p - sigma^2) eps, std = max(sigma, min)."""
    torch.manual_seed(0)
    agent = dppo_agent(fork_policy, ft_denoising_steps=5, eta=0.7, min_logprob_std=0.05)
    feats = agent.np.features({"pos": np.random.default_rng(1).uniform(-0.1, 0.1, (6, 1, 2))})
    _, chain = agent.sample(feats)
    assert chain.shape == (6, 6, 4, 2)  # k + 1 states, x_k .. x_0
    got = agent.chain_logprob(feats, chain)  # (B, k)

    abar = fork_policy.schedule.alphas_cumprod  # float64
    K, ratio = 8, 100 // 8
    ts = [i * ratio for i in reversed(range(K))]
    want = torch.zeros(6, 5, dtype=torch.float64)
    for j in range(5):
        t = ts[K - 5 + j]
        ab_t = abar[t]
        ab_p = abar[t - ratio] if t - ratio >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x = chain[:, j].double()
        with torch.no_grad():
            eps = fork_policy.noise_net(chain[:, j], torch.full((6,), t), feats).double()
        x0 = ((x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)
        sigma = 0.7 * ((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)).sqrt()
        mean = ab_p.sqrt() * x0 + (1 - ab_p - sigma ** 2).clamp(min=0).sqrt() * eps
        std = max(float(sigma), 0.05)
        lp = torch.distributions.Normal(mean, std).log_prob(chain[:, j + 1].double())
        want[:, j] = lp.clamp(-5, 2)[:, :4].mean((1, 2))  # all 4 steps executed (n_action_steps = Ta)
    assert torch.allclose(got.double(), want, atol=1e-4), (got, want)


def test_dppo_eta_zero_mean_chain_is_the_deployed_ddim_sampler(fork_policy):
    """With eta = 0 and no noise the denoising steps DPPO trains are exactly the deterministic DDIM the deployed
    policy runs, so the fine-tuned weights mean the same thing in a `postbc eval` of the checkpoint."""
    agent = dppo_agent(fork_policy)
    feats = agent.np.features({"pos": np.zeros((3, 1, 2), np.float32)})
    x = xT = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(agent.K):
            x, sigma = agent.step_mean_std(x, i, feats, eta=0.0)
            assert sigma == 0.0
        assert torch.allclose(x, fork_policy.sample_normalized(feats, xT), atol=1e-6)


def test_ppo_clipped_surrogate_stops_the_gradient_outside_the_clip_range():
    from postbc_core.rl.dppo import clip_schedule, clipped_policy_loss

    clip = clip_schedule(2, clip=0.1, base=0.01, rate=3.0)
    assert torch.allclose(clip, torch.tensor([0.01, 0.1]))  # the first fine-tuned step is clipped tighter
    old = torch.zeros(4, 2)
    # ratios: exp(0.2) > 1.1 and 1.01 (clipped for A > 0), exp(-0.2) < 0.9 (clipped for A < 0), exp(0.05) inside
    new = torch.tensor([[0.2, 0.2], [-0.2, -0.2], [0.05, 0.05], [0.2, -0.2]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, stats = clipped_policy_loss(new, old, adv, clip, gamma_denoising=0.5)
    loss.backward()
    g = new.grad
    # A > 0 and ratio above 1 + c: the clipped term wins, no gradient; likewise A < 0 below 1 - c
    assert g[0].abs().max() == 0 and g[1].abs().max() == 0
    # inside the range (0.05 < 0.1 at the last step) the gradient is -A gamma_d^(k-1-j) ratio / (B k)
    assert float(g[2, 1]) == pytest.approx(-math.exp(0.05) / 8)
    assert g[2, 0] == 0  # exp(0.05) - 1 > 0.01: clipped at the first step
    # A < 0 with the ratio above 1 + c: the unclipped term is the max, its gradient flows (pessimistic bound)
    assert float(g[3, 0]) == pytest.approx(0.5 * math.exp(0.2) / 8)
    r = torch.exp(new.detach())
    c = clip[None]
    a = adv[:, None] * torch.tensor([0.5, 1.0])[None]
    assert torch.isclose(loss, torch.max(-a * r, -a * r.clamp(1 - c, 1 + c)).mean())
    assert stats["clipfrac"] == pytest.approx(7 / 8)


def test_gae_equals_the_discounted_sum_of_td_errors():
    from postbc_core.rl.dppo import gae

    rng = np.random.default_rng(0)
    r, v = rng.normal(size=6), rng.normal(size=6)
    g, lam = 0.9, 0.8
    for terminal, last in ((True, 0.0), (False, 1.7)):
        adv, ret = gae(r, v, last, terminal, g, lam)
        nv = np.append(v[1:], 0.0 if terminal else last)
        delta = r + g * nv - v
        want = [sum((g * lam) ** (m - j) * delta[m] for m in range(j, 6)) for j in range(6)]
        assert np.allclose(adv, want) and np.allclose(ret, adv + v)
    # lambda = 1: the advantage is the Monte-Carlo discounted return minus V
    adv, _ = gae(r, v, 0.0, True, g, 1.0)
    mc = [sum(g ** (m - j) * r[m] for m in range(j, 6)) for j in range(6)]
    assert np.allclose(adv, np.array(mc) - v)


def test_dppo_improves_a_weak_policy_and_leaves_the_pretrained_one_alone(tmp_path, fork_policy):
    """The fork policy succeeds 40 % of the time; ten DPPO iterations (160 episodes, a few seconds on a CPU core) must
    make the policy *as deployed* (deterministic DDIM) clearly better on the same evaluation
    episodes, while "the pretrained policy" every comparison uses stays the frozen original."""
    from postbc_core.rl.dppo import DPPOConfig
    from postbc_core.rl.dppo_run import dppo_iteration

    # a learning rate for ten iterations of a 2 x 64 network (the lift_cube default, 1e-4, needs more)
    cfg = fork_config(tmp_path, "dppo", 160, dppo=DPPOConfig(actor_lr=3e-3, critic_hidden=(64, 64)))
    ft = Finetuner(cfg, policy=fork_policy)
    try:
        base = evaluate(ft, ForkTask(), 40, mode="eval")
        pre = evaluate(ft, ForkTask(), 40, mode="policy")
        assert base["successes"] == pre["successes"]  # before any update the fine-tuned copy is the original
        tasks = [ForkTask() for _ in range(8)]
        for _ in range(10):
            dppo_iteration(ft, tasks, 16)
        final = evaluate(ft, ForkTask(), 40, mode="eval")
        after = evaluate(ft, ForkTask(), 40, mode="policy")
        assert after["successes"] == pre["successes"]
        assert base["success_rate"] <= 0.5 and final["success_rate"] >= base["success_rate"] + 0.25, (base, final)
        late = [h["success"] for h in ft.history[-32:]]
        assert sum(late) >= 0.7 * len(late)  # the stochastic training policy too
        assert ft.episodes_done == 160 and ft.agent.iterations == 10 and ft.updates == 100
    finally:
        ft.close()


def test_dppo_resume_from_a_checkpoint_continues_exactly(tmp_path, fork_policy):
    from postbc_core.rl.dppo import DPPOConfig
    from postbc_core.rl.dppo_run import dppo_iteration

    tasks = [ForkTask() for _ in range(3)]
    dcfg = DPPOConfig(actor_lr=1e-3, critic_hidden=(32,), batch_size=8, update_epochs=2, critic_warmup_iterations=1)
    whole = Finetuner(fork_config(tmp_path / "a", "dppo", 15, dppo=dcfg), policy=fork_policy)
    for _ in range(3):
        dppo_iteration(whole, tasks, 5)
    whole.save()
    cut = Finetuner(fork_config(tmp_path / "b", "dppo", 15, dppo=dcfg), policy=fork_policy)
    for _ in range(2):
        dppo_iteration(cut, tasks, 5)
    cut.save()
    dppo_iteration(cut, tasks, 5)  # an iteration that is lost (never saved)
    cut.close()
    resumed = Finetuner(fork_config(tmp_path / "b", "dppo", 15, dppo=dcfg, resume=True), policy=fork_policy)
    assert resumed.episodes_done == 10 and resumed.agent.iterations == 2
    dppo_iteration(resumed, tasks, 5)
    resumed.save()
    strip = lambda h: [{k: v for k, v in e.items() if k != "wall_s"} for e in h]
    assert whole.counters() == resumed.counters() and strip(whole.history) == strip(resumed.history)
    ta, sa = flatten({"agent": whole.agent.training_state(), "rng": rng_state(whole.rng)})
    tb, sb = flatten({"agent": resumed.agent.training_state(), "rng": rng_state(resumed.rng)})
    assert sa == sb and ta.keys() == tb.keys()
    for k in ta:  # the fine-tuned network, critic, optimizers, reward statistics and random states
        assert torch.equal(ta[k], tb[k]), k
    whole.close()
    resumed.close()


def test_dppo_refuses_more_fine_tuned_steps_than_the_policy_samples(tmp_path, fork_policy):
    from postbc_core.rl.dppo import DPPOConfig

    with pytest.raises(ConfigError, match="dppo ft_denoising_steps=9 exceeds the policy's 8 DDIM steps"):
        Finetuner(fork_config(tmp_path, "dppo", 1, dppo=DPPOConfig(ft_denoising_steps=9)), policy=fork_policy)
    with pytest.raises(PostBCError, match="not from replay batches"):  # DSRL's per-episode update path
        dppo_agent(fork_policy).update({})
