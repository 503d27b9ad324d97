"""Scripted SpaceMouse-style demonstrators (sim/demos.py) and `postbc sim demos`: per-task success at quality 1,
lower quality -> lower success and longer, more variable paths, multimodal choices, and the recorded store (keys,
shapes, dtypes, labels, cmd_joint_pos = what the robot was sent)."""

import os
import subprocess
import sys

import numpy as np
import pytest

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")

from _paths import BIN  # noqa: E402
from postbc_core.cli.main import main  # noqa: E402
from postbc_core.data import EpisodeStore, validate_store  # noqa: E402
from postbc_core.errors import ConfigError, StoreError  # noqa: E402
from postbc_core.robots import kinematics as K  # noqa: E402
from postbc_core.robots.actions import EEDeltaExecutor  # noqa: E402
from postbc_core.robots.safety import SafetyLayer  # noqa: E402
from postbc_core.sim import make  # noqa: E402
from postbc_core.sim.base import yaw_quat  # noqa: E402
from postbc_core.sim.demos import DEMONSTRATORS, demo_success_rate, make_demonstrator, record_demos  # noqa: E402

# Per-task intended random modes beyond approach_side (left/right, every task) and the values each must take across
# episodes. The grasp yaw is not a mode (sim/demos.py docstring).
MODES = {"lift_cube": {}, "put_in_bowl": {"grasp_point": {-0.012, 0.0, 0.012}},
         "push_to_target": {"push_yaw": {70, 110}}}
COUNTERS = {"regrasps", "reapproaches"}  # retries, recorded in mode but not random choices
ROBOT = {"timestamp": ((), np.float64), "joint_pos": ((6,), np.float32), "joint_vel": ((6,), np.float32),
         "joint_effort": ((6,), np.float32), "gripper_pos": ((1,), np.float32), "ee_pose": ((7,), np.float32),
         "cmd_ee_delta": ((7,), np.float32), "cmd_joint_pos": ((7,), np.float32), "object_pose": ((7,), np.float32),
         "reward": ((), np.float32), "done": ((), np.bool_)}
EXTRAS = {"lift_cube": {"object_pos": (3,), "object_yaw_feat": (2,), "ee_to_object": (3,), "object_height": (1,)},
          "put_in_bowl": {"object_pos": (3,), "object_yaw_feat": (2,), "bowl_pose": (7,), "bowl_pos": (3,),
                          "object_to_bowl": (3,), "ee_to_object": (3,)},
          "push_to_target": {"object_pos": (3,), "target_pos": (3,), "object_to_target": (3,), "ee_to_object": (3,)}}


@pytest.mark.parametrize("task", sorted(DEMONSTRATORS))
def test_quality_1_succeeds_and_is_multimodal(task):
    s = demo_success_rate(task, 12, seed=100)
    assert s.success_rate >= 0.9, s.summary()
    assert {m["approach_side"] for m in s.modes} == {"left", "right"}
    for key, values in MODES[task].items():
        assert {m[key] for m in s.modes} == values
    assert set().union(*s.modes) - COUNTERS == {"approach_side", *MODES[task]}
    assert all(n <= make(task).config.max_steps for n in s.lengths)


def _commanded_yaws(task, seed, values, place):
    """The demonstrator's first commanded wrist yaw (rad) per value: reset `task` with `seed`, `place(env, v)`, then
    pull commands until the operator aims its gripper (the yaw argument of its first `_rot_cmd`); the operator's yaw
    error is switched off so the result is the branch it picks, not noise. Returns (yaws, the operator's modes)."""
    env = make(task)
    out, modes = [], set()
    for v in values:
        env.reset(seed=seed)
        place(env, v)
        obs = env.observation(render=False)
        demo = make_demonstrator(task, np.random.default_rng(seed))
        demo.style.yaw_err = 0.0
        seen, rot_cmd = [], demo._rot_cmd
        demo._rot_cmd = lambda yaw: (seen.append(float(yaw)), rot_cmd(yaw))[1]
        demo.reset(obs)
        for _ in range(20):
            demo.act(obs)
            if seen:
                break
        out.append(seen[0])
        modes.add(tuple(sorted(demo.mode.items())))
    env.close()
    assert len(modes) == 1  # the same seed: the same random choices for every value
    return np.array(out), dict(modes.pop())


def _mod(a, period):
    """a (rad) wrapped to [-period/2, period/2)."""
    return (np.asarray(a) + period / 2) % period - period / 2


@pytest.mark.parametrize("seed", range(8))  # (the old operator drew face 90 on seeds 4, 6, 7)
def test_lift_cube_grasp_yaw_is_one_continuous_branch(seed):
    # The cube spawns at yaw [-45, 45) deg. Its faces repeat every 90 deg: the least wrist rotation from HOME (EE yaw 0)
    # is the cube's own yaw, one continuous branch (the old face-0/90 choice wrapped yaw+90 and jumped by 180 deg at
    # cube yaw 0, three wrist targets for one task).
    cube_yaw = np.deg2rad(np.arange(-44.5, 45.0, 1.0))

    def place(env, yaw):
        env.sim.set_free_body_pose("cube", env.sim.body_pose("cube")[:3], yaw_quat(yaw))

    g, _ = _commanded_yaws("lift_cube", seed, cube_yaw, place)
    assert np.abs(np.diff(g)).max() < np.deg2rad(10), np.rad2deg(g).round(1)
    assert np.abs(g).max() <= np.pi / 4 + 1e-9, np.rad2deg(g).round(1)
    np.testing.assert_allclose(_mod(g - cube_yaw, np.pi / 2), 0.0, atol=1e-6)  # across a pair of faces


def _jumps_only_at_cuts(g, x, cut_at, period=np.pi):
    """Neighbouring commanded yaws g (over the swept yaws x) differ by < 10 deg except across x = cut_at (mod period),
    where the two equivalent grasps need the same wrist rotation; there they jump by one period."""
    jumps = np.flatnonzero(np.abs(np.diff(g)) >= np.deg2rad(10))
    for i in jumps:
        a, b = _mod(x[i] - cut_at, period), _mod(x[i + 1] - cut_at, period)
        assert a > 0 > b or b > 0 > a, f"jump {np.rad2deg(g[i]):.1f} -> {np.rad2deg(g[i + 1]):.1f} deg between " \
            f"{np.rad2deg(x[i]):.1f} and {np.rad2deg(x[i + 1]):.1f} deg, not at the cut {np.rad2deg(cut_at):.0f}"
        assert abs(abs(g[i + 1] - g[i]) - period) < np.deg2rad(10)
    return len(jumps)


@pytest.mark.parametrize("seed", range(3))
def test_put_in_bowl_grasp_yaw_least_rotation(seed):
    # The corn (180-deg symmetric) spawns at any yaw: the grasp yaw is the corn's mod 180 deg nearest HOME, so within
    # 90 deg; it is continuous except at the one unavoidable cut (corn at +-90 deg, both grasps 90 deg away).
    corn_yaw = np.deg2rad(np.arange(-179.0, 180.0, 2.0))

    def place(env, yaw):
        env.sim.set_free_body_pose("corn", env.sim.body_pose("corn")[:3], yaw_quat(yaw))

    g, _ = _commanded_yaws("put_in_bowl", seed, corn_yaw, place)
    assert np.abs(g).max() <= np.pi / 2 + 1e-9
    np.testing.assert_allclose(_mod(g - corn_yaw, np.pi), 0.0, atol=1e-6)
    assert _jumps_only_at_cuts(g, corn_yaw, np.pi / 2) == 2  # at -90 and +90 deg over the full circle


@pytest.mark.parametrize("seed", range(4))
def test_push_yaw_least_rotation(seed):
    # The push direction covers the circle; fingers slanted s = 70 or 110 deg off it (the intended mode), on the branch
    # nearest HOME (the closed jaws push alike under a half turn): within 90 deg, one cut per half turn.
    push_dir = np.deg2rad(np.arange(-179.0, 180.0, 2.0))

    def place(env, d):
        puck = env.sim.body_pose("puck")[:3]
        env.sim.set_body_pose("target", [puck[0] + 0.1 * np.cos(d), puck[1] + 0.1 * np.sin(d), 0.0])

    g, mode = _commanded_yaws("push_to_target", seed, push_dir, place)
    s = np.deg2rad(mode["push_yaw"])
    assert np.abs(g).max() <= np.pi / 2 + 1e-9
    np.testing.assert_allclose(_mod(g - push_dir - s, np.pi), 0.0, atol=1e-6)
    assert _jumps_only_at_cuts(g, push_dir + s, np.pi / 2) == 2


def test_lower_quality_fails_more_and_wanders_more():
    good, bad = demo_success_rate("lift_cube", 12, quality=1.0), demo_success_rate("lift_cube", 12, quality=0.0)
    assert bad.success_rate <= good.success_rate - 0.3, (good.summary(), bad.summary())
    assert np.mean(bad.path_lengths) > 1.3 * np.mean(good.path_lengths)
    assert np.std(bad.path_lengths) > np.std(good.path_lengths)
    assert bad.mean_length > good.mean_length


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(DEMONSTRATORS))
def test_quality_sweep_monotone(task):
    rates = [demo_success_rate(task, 30, seed=1000, quality=q).success_rate for q in (1.0, 0.2)]
    assert rates[0] >= 0.9 and rates[1] <= rates[0] - 0.2, rates


def test_quality_out_of_range_and_action_mode(tmp_path):
    with pytest.raises(ConfigError, match="quality"):
        demo_success_rate("lift_cube", 1, quality=1.5)
    with pytest.raises(ConfigError, match="action_mode"):
        record_demos("lift_cube", 1, tmp_path / "x.zarr", action_mode="ee_delta")
    with pytest.raises(ConfigError, match="available: lift_cube, push_to_target, put_in_bowl"):
        record_demos("stack_blocks", 1, tmp_path / "x.zarr")


@pytest.mark.parametrize("task", sorted(DEMONSTRATORS))
def test_recorded_store_keys_labels_and_commands(task, tmp_path):
    out = tmp_path / "demos.zarr"
    stats = record_demos(task, 2, out, seed=3, cameras=("front",), image_size=(24, 32))
    assert stats.successes == stats.stored == 2 and stats.attempts >= 2
    assert validate_store(out).ok
    store = EpisodeStore.open(out)
    want = {**{k: s for k, (s, _) in ROBOT.items()}, **EXTRAS[task], "front_rgb": (24, 32, 3)}
    assert store.schema().keys() == want.keys()
    for k, (shape, dtype) in store.schema().items():
        assert shape == want[k], k
        assert dtype == (ROBOT[k][1] if k in ROBOT else np.uint8 if k.endswith("_rgb") else np.float32), k
    assert store.n_episodes == 2
    for i in range(2):
        meta = store.episode_meta(i)
        assert meta["success"] is True or meta["success"] == 1
        assert (meta["source"], meta["task"], meta["operator"]) == ("scripted", task, "scripted")
        ep = store.episode(i)
        assert ep["done"][-1] and not ep["done"][:-1].any() and ep["reward"][-1] == 1.0
        assert ep["front_rgb"].std() > 0
        # Observation is recorded BEFORE the command: the first step is the reset pose.
        np.testing.assert_allclose(ep["joint_pos"][0], K.HOME_QPOS, atol=1e-4)
        np.testing.assert_allclose(ep["timestamp"][1:] - ep["timestamp"][:-1], 0.1, atol=1e-9)
        # cmd_joint_pos = the teleop path applied to the recorded commands: each delta chained from the previous
        # step's target (EEDeltaExecutor, fed the measured joints of every step) + safety.
        safety, chain = SafetyLayer(), EEDeltaExecutor()
        for t in range(len(ep["timestamp"])):
            q = ep["joint_pos"][t].astype(np.float64)
            target, g = chain.step(ep["cmd_ee_delta"][t].astype(np.float64), "ee_delta", q)
            sent = safety.filter(target, g, q)
            np.testing.assert_allclose(ep["cmd_joint_pos"][t, :6], sent.joint_pos, atol=2e-3)
            assert ep["cmd_joint_pos"][t, 6] == pytest.approx(sent.gripper, abs=1e-6)
    # ... and it is what the robot executed: replaying cmd_joint_pos open loop reproduces the free-space motion
    # (first 10 steps; after contact, float32 rounding of the commands is amplified, so not compared).
    ep = store.episode(0)
    env = make(task)
    env.reset(seed=3)
    for t, a in enumerate(ep["cmd_joint_pos"][:10].astype(np.float64)):
        obs = env.step(a)[0]
        np.testing.assert_allclose(obs["joint_pos"], ep["joint_pos"][t + 1], atol=1e-3)
    store.close()


def test_demo_commands_pass_the_tasks_one_safety_layer():
    """The teleop path through the task's own layer, once per step: its count is the steps taken, and at 5 Hz the
    step limit is the task's max_joint_speed / control_hz (0.3 rad), not a second layer's 10 Hz default."""
    from postbc_core.sim.demos import run_demo_episode

    env = make("lift_cube", action_mode="ee_delta", control_hz=5.0)
    ep = run_demo_episode(env, make_demonstrator("lift_cube", np.random.default_rng([0, 1])), 1)
    assert env.safety.stats.commands == ep.length
    steps = np.abs(ep.data["cmd_joint_pos"][:, :6] - ep.data["joint_pos"]).max()
    assert 0.15 < steps <= 0.3 + 1e-6
    with pytest.raises(ConfigError, match="safety layer on"):
        run_demo_episode(make("lift_cube", safety=False), make_demonstrator("lift_cube", np.random.default_rng(0)), 0)
    with pytest.raises(ConfigError, match="EE-delta path"):
        run_demo_episode(make("lift_cube"), make_demonstrator("lift_cube", np.random.default_rng(0)), 0)


def test_keep_failures_labels_and_append(tmp_path):
    out = tmp_path / "d.zarr"
    s = record_demos("lift_cube", 3, out, quality=0.0, max_attempts=5, keep_failures=True)
    assert s.attempts == s.stored and not all(s.successes_per_attempt)
    with EpisodeStore.open(out) as store:
        labels = [bool(store.episode_meta(i)["success"]) for i in range(store.n_episodes)]
    assert labels == s.successes_per_attempt
    with pytest.raises(StoreError, match="--overwrite"):
        record_demos("lift_cube", 1, out)
    s2 = record_demos("lift_cube", 1, out, seed=50, append=True)
    assert EpisodeStore.open(out).n_episodes == s.stored + s2.stored


def test_cli_writes_store_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    r = subprocess.run([str(BIN / "postbc"), "sim", "demos", "--task", "push_to_target", "--episodes", "2",
                        "--out", str(out), "--seed", "7"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MUJOCO_GL": "egl"})
    assert r.returncode == 0, r.stderr
    assert "success rate" in r.stdout
    assert "--obs-keys joint_pos gripper_pos object_pos target_pos --action-key cmd_ee_delta" in r.stdout
    assert validate_store(out).ok and EpisodeStore.open(out).n_episodes == 2
    assert main(["sim", "demos", "--task", "push_to_target", "--episodes", "1", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["sim", "demos", "--task", "push_to_target", "--episodes", "1", "--out", str(out),
                 "--overwrite", "--json-output"]) == 0
    printed = capsys.readouterr().out
    assert '"success_rate"' in printed and EpisodeStore.open(out).n_episodes == 1
    assert '"recommended_obs_keys"' in printed and '"target_pos"' in printed
    assert main(["sim", "demos", "--task", "fly", "--episodes", "1", "--out", str(tmp_path / "y.zarr")]) == 2
    assert "available: lift_cube" in capsys.readouterr().err


def test_an_interrupted_overwrite_through_a_symlink_leaves_no_empty_store(tmp_path, monkeypatch):
    """`sim demos --overwrite --out LINK` interrupted before its first episode: the store it made (in the link's
    target) is removed like one made at a plain path, not left behind empty because rmtree refuses a symlink."""
    import postbc_core.sim.demos as demos

    target = tmp_path / "real.zarr"
    with EpisodeStore.create(target) as s:
        s.add_episode({"a": np.zeros((3, 2), np.float32)})
    link = tmp_path / "link.zarr"
    link.symlink_to(target)

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(demos, "run_demo_episode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        record_demos("lift_cube", 1, link, overwrite=True)
    assert not target.exists(), sorted(p.name for p in target.iterdir())
