"""MuJoCo twin: every registered task (make, reset, random steps, determinism, success reachable), the robot's
joint limits in physics, rendering, and the gymnasium wrappers (single and vectorised)."""

import logging
import os
import sys

import numpy as np
import pytest

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # before the first mujoco import anywhere in this process
pytest.importorskip("mujoco")
gym = pytest.importorskip("gymnasium")

from postbc_core.errors import ConfigError, PostBCError  # noqa: E402
from postbc_core.robots import kinematics as K  # noqa: E402
from postbc_core.sim import TASKS, WidowXSim, list_tasks, make  # noqa: E402
from postbc_core.sim import missing_randomized_keys, recommended_obs_keys  # noqa: E402
from postbc_core.sim.base import quat_yaw, yaw_quat  # noqa: E402
from postbc_core.sim.env import GYM_IDS, WidowXEnv  # noqa: E402

ROBOT_KEYS = {"joint_pos": (6,), "joint_vel": (6,), "joint_effort": (6,), "gripper_pos": (1,), "ee_pose": (7,),
              "timestamp": ()}


def rollout(task, seed, n, action_seed=0):
    obs = [task.reset(seed=seed)]
    lo, hi = task.action_bounds()
    rng = np.random.default_rng(action_seed)
    for _ in range(n):
        o, r, te, tr, info = task.step(rng.uniform(lo, hi))
        assert np.isfinite(r) and isinstance(info["success"], bool)
        obs.append(o)
    return obs


def test_registry_lists_tasks_and_rejects_unknown():
    assert set(list_tasks()) == {"lift_cube", "put_in_bowl", "push_to_target"}
    with pytest.raises(ConfigError, match="lift_cube.*push_to_target.*put_in_bowl"):
        make("stack_blocks")
    with pytest.raises(ConfigError, match="colour"):
        make("lift_cube", colour="red")


@pytest.mark.parametrize("kw, field", [({"control_hz": 30}, "control_hz"), ({"reward_type": "shaped"}, "reward_type"),
                                       ({"action_mode": "cartesian"}, "action_mode"), ({"cameras": ("top",)}, "cameras"),
                                       ({"max_steps": 0}, "max_steps"), ({"image_size": (4, 4)}, "image_size"),
                                       ({"max_joint_speed": 0.0}, "max_joint_speed")])
def test_task_config_validation(kw, field):
    with pytest.raises(ConfigError, match=field):
        make("lift_cube", **kw)


def test_twin_renders_what_a_realsense_publishes_and_refuses_beyond_its_buffer():
    """480x640 (HxW), a RealSense's colour stream, is the offscreen buffer wx250s.xml declares: the task renders it;
    one pixel more in either direction is refused naming the buffer and where it is set."""
    from postbc_core.sim.base import OFFSCREEN_SIZE

    assert OFFSCREEN_SIZE == (480, 640)
    task = make("lift_cube", cameras=("front", "wrist"), image_size=(480, 640))
    try:
        obs = task.reset(seed=0)
        assert obs["front_rgb"].shape == obs["wrist_rgb"].shape == (480, 640, 3) and obs["front_rgb"].std() > 0
    finally:
        task.close()
    for size in ((481, 640), (480, 641)):
        with pytest.raises(ConfigError, match=r"exceeds the twin's offscreen buffer of 480x640 .*wx250s\.xml"):
            make("lift_cube", cameras=("front",), image_size=size)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_random_rollout_finite_and_deterministic(name):
    task = make(name)
    a = rollout(task, seed=7, n=200)
    for key, shape in ROBOT_KEYS.items():
        assert a[0][key].shape == shape, key
    assert a[0]["object_pose"].shape == (7,)
    for o in a:
        for k, v in o.items():
            assert np.all(np.isfinite(v)), (k, v)
    np.testing.assert_allclose(a[-1]["timestamp"], 200 * 0.1, atol=1e-9)
    b = rollout(make(name), seed=7, n=200)  # a fresh instance, same seed and actions
    for oa, ob in zip(a, b):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)
    c = task.reset(seed=8)
    assert not np.allclose(c["object_pose"], a[0]["object_pose"]), "different seeds must randomise the object"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_recommended_obs_keys_are_observed(name):
    task = make(name)
    obs = task.reset(seed=0)
    keys = recommended_obs_keys(name)
    assert keys == TASKS[name].recommended_obs_keys and {"joint_pos", "gripper_pos", "object_pos"} <= set(keys)
    assert set(keys) <= set(obs), sorted(set(keys) - set(obs))
    assert missing_randomized_keys(name, keys) == []
    np.testing.assert_array_equal(obs["object_pos"], obs["object_pose"][:3])
    n = task.object_yaw_symmetry
    assert ("object_yaw_feat" in obs) == bool(n) == ("object_yaw_feat" in keys)
    if n:
        y = task.object_yaw()
        np.testing.assert_allclose(obs["object_yaw_feat"], [np.sin(n * y), np.cos(n * y)])


def _yaw_gap(a, b, period):
    """|a - b| (rad) modulo period."""
    d = (a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_observations_cover_what_reset_randomizes(name):
    # Every scene body's position / yaw that reset draws is declared in randomized_keys, and each declared quantity's
    # keys change whenever the quantity does (so a policy given any one of them can tell the episodes apart).
    task = make(name)
    sym = {task.object_body: task.object_yaw_symmetry}
    declared = {(q.body, q.dof): q for q in task.randomized_keys}
    seeds = range(8)
    obs, state = [], []
    for seed in seeds:
        obs.append(task.reset(seed=seed))
        state.append({b: (task.sim.body_pose(b)[:2].copy(),
                          task.object_yaw() if b == task.object_body else quat_yaw(task.sim.body_pose(b)[3:]))
                      for b in task.sim.scene_bodies(task.object_body)})
    for b in state[0]:
        period = 2 * np.pi / (sym.get(b) or 1)
        varies = {"pos": max(np.linalg.norm(s[b][0] - state[0][b][0]) for s in state) > 1e-3,
                  "yaw": max(_yaw_gap(s[b][1], state[0][b][1], period) for s in state) > 1e-3}
        for dof, v in varies.items():
            assert v == ((b, dof) in declared), f"{name}: {b} {dof} varies={v} but declared={(b, dof) in declared}"
    for (b, dof), q in declared.items():
        period = 2 * np.pi / (sym.get(b) or 1)
        if q.needed:
            assert set(q.keys) & set(task.recommended_obs_keys), f"{name}: no recommended key carries {q.what}"
        for key in q.keys:
            for i in seeds:
                for j in seeds:
                    if i < j:
                        gap = (np.linalg.norm(state[i][b][0] - state[j][b][0]) if dof == "pos"
                               else _yaw_gap(state[i][b][1], state[j][b][1], period))
                        if gap > 1e-3:
                            assert not np.allclose(obs[i][key], obs[j][key], atol=1e-5), (name, q.what, key, i, j)
        # ... and because of it: move only this body's position (or turn only its yaw, by a quarter symmetry period).
        task.reset(seed=0)
        before = task.observation(render=False)
        pose = task.sim.body_pose(b)
        if dof == "pos":
            task.sim.set_body_pose(b, pose[:3] + [0.02, -0.015, 0.0], pose[3:])
        else:
            task.sim.set_body_pose(b, pose[:3], yaw_quat(quat_yaw(pose[3:]) + period / 4))
        after = task.observation(render=False)
        for key in q.keys:
            assert not np.allclose(before[key], after[key], atol=1e-5), f"{name}: {key} does not carry {q.what}"


@pytest.mark.parametrize("name, body, n", [("lift_cube", "cube", 4), ("put_in_bowl", "corn", 2)])
def test_object_yaw_feat_is_invariant_under_the_objects_symmetry(name, body, n):
    task = make(name)
    task.reset(seed=0)
    pos = task.sim.body_pose(body)[:3]

    def feat(quat):
        task.sim.set_free_body_pose(body, pos, quat)
        return task.observation(render=False)["object_yaw_feat"]

    for y in np.deg2rad([-170.0, -44.0, 0.0, 13.0, 89.0]):
        f = feat(yaw_quat(y))
        for k in range(1, n):
            np.testing.assert_allclose(feat(yaw_quat(y + k * 2 * np.pi / n)), f, atol=1e-9)
        assert np.linalg.norm(feat(yaw_quat(y + np.pi / n)) - f) > 1.9  # half a period apart: opposite features
    if name == "lift_cube":  # tipped onto a side (local x vertical): same faces about vertical, same feature
        tipped = K.mat_to_quat(K.euler_to_mat([0.0, 0.0, 0.3]) @ K.euler_to_mat([0.0, np.pi / 2, 0.0]))
        np.testing.assert_allclose(feat(tipped), feat(yaw_quat(0.3)), atol=1e-6)


def test_missing_randomized_keys_names_what_the_policy_cannot_see():
    # The README's old put_in_bowl example: the bowl is placed at random, the policy never saw it (1/50 success).
    missing = missing_randomized_keys("put_in_bowl", ["joint_pos", "gripper_pos", "object_pose"])
    assert len(missing) == 1 and "bowl position" in missing[0] and "bowl_pos" in missing[0]
    assert missing_randomized_keys("put_in_bowl", ["joint_pos", "gripper_pos", "object_pose", "bowl_pos"]) == []
    assert [m.split(":")[0] for m in missing_randomized_keys("lift_cube", ["joint_pos", "gripper_pos"])] == \
        ["cube position (x, y)", "cube yaw"]
    assert missing_randomized_keys("push_to_target", ["joint_pos", "object_pos"])[0].startswith("target position")
    assert missing_randomized_keys("put_in_bowl", ["front_rgb", "joint_pos"]) == []  # the image shows the bowl
    assert missing_randomized_keys("real_pick_place", ["joint_pos"]) == []  # real-robot task names: no advice
    with pytest.raises(ConfigError, match="available: lift_cube"):
        recommended_obs_keys("real_pick_place")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_initial_state_not_success_and_success_reachable(name):
    task = make(name)
    for seed in range(20):
        task.reset(seed=seed)
        assert not task.success(), seed
        assert task.reward() == 0.0
    sim = task.sim
    if name == "lift_cube":
        sim.set_free_body_pose("cube", [0.3, 0.0, 0.015 + task.config.lift_height + 0.01])
    elif name == "put_in_bowl":
        bowl = sim.body_pose("bowl")[:3]
        sim.set_free_body_pose("corn", bowl + [0.0, 0.0, 0.02])
        sim.step_control(sim.joint_pos(), K.GRIPPER_LIMITS[1])  # let it settle on the bowl floor
    else:
        sim.set_free_body_pose("puck", [*task.target_pos()[:2], 0.015])
    assert task.success(), name
    task.config.reward_type = "dense"
    assert task.reward() == 1.0
    assert bool(task.observation(render=False)["success"])


def test_dense_reward_in_unit_interval():
    for name in sorted(TASKS):
        task = make(name, reward_type="dense")
        obs = rollout(task, seed=1, n=5)
        assert 0.0 <= task.dense_reward() <= 1.0 and obs


def test_scripted_lift_succeeds():
    """Physics can actually grasp and lift: top-down IK waypoints over the cube."""
    task = make("lift_cube")
    task.reset(seed=0)
    cube = task.sim.body_pose("cube")
    yaw = 2 * np.arctan2(cube[6], cube[3])
    down = K.mat_to_quat(K.euler_to_mat([0, 0, yaw]) @ K.euler_to_mat([0, np.pi / 2, 0]))
    q, info = task.sim.joint_pos(), {}
    for dz, grip, n in [(0.08, 0.037, 10), (0.0, 0.037, 10), (0.0, 0.015, 5), (0.10, 0.015, 10)]:
        q = K.ik(cube[:3] + [0, 0, dz], down, q_init=q).q
        for _ in range(n):
            _, _, _, _, info = task.step(np.r_[q, grip])
    assert info["success"] and task.grasped()


@pytest.mark.parametrize("hz", [10.0, 5.0])
def test_task_steps_pass_the_drivers_safety_layer(hz):
    """A task executes what robot_driver would send: a far joint target moves at most max_joint_speed / control_hz
    per step (the step scaled, direction kept) and info says so; safety=False executes the target as given."""
    limited, raw = make("lift_cube", control_hz=hz), make("lift_cube", control_hz=hz, safety=False)
    max_step = limited.config.max_joint_speed / hz
    far = K.HOME_QPOS + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.2])  # wrist_rotate 1.2 rad away
    for task in (limited, raw):
        task.reset(seed=0)
    q0 = limited.sim.joint_pos()
    _, _, _, _, info = limited.step(np.r_[far, 0.037])
    assert info["safety_altered"] and info["joint_target"][5] - q0[5] == pytest.approx(max_step)
    np.testing.assert_allclose(info["joint_target"][:5], q0[:5], atol=1e-9)  # scaled as a whole: no other joint moves
    assert limited.safety.stats.step_limited == 1
    _, _, _, _, info = raw.step(np.r_[far, 0.037])
    assert not info["safety_altered"] and info["joint_target"] == pytest.approx(far)
    # A small step passes unaltered.
    q = limited.sim.joint_pos()
    _, _, _, _, info = limited.step(np.r_[q + 0.5 * max_step, 0.037])
    assert not info["safety_altered"] and info["joint_target"] == pytest.approx(q + 0.5 * max_step)


def test_commanding_joint_limits_stays_within_limits():
    sim = WidowXSim()
    for j in range(6):
        for side in (0, 1):
            sim.reset()
            target = K.HOME_QPOS.copy()
            target[j] = K.JOINT_LIMITS[j, side]
            for _ in range(15):
                sim.step_control(target, K.GRIPPER_LIMITS[side])
                q, g = sim.joint_pos(), sim.gripper_pos()
                assert np.all(q >= K.JOINT_LIMITS[:, 0] - 5e-3) and np.all(q <= K.JOINT_LIMITS[:, 1] + 5e-3), (j, q)
                assert K.GRIPPER_LIMITS[0] - 1e-3 <= g <= K.GRIPPER_LIMITS[1] + 1e-3
    # All joints at once, including poses that jam the arm into the table.
    for side in (0, 1):
        sim.reset()
        for _ in range(30):
            sim.step_control(K.JOINT_LIMITS[:, side], K.GRIPPER_LIMITS[side])
            q = sim.joint_pos()
            assert np.all(q >= K.JOINT_LIMITS[:, 0] - 1e-2) and np.all(q <= K.JOINT_LIMITS[:, 1] + 1e-2), q


def test_position_servo_tracks_and_substeps():
    sim = WidowXSim(control_hz=5)
    assert sim.n_substeps == 100
    target = K.HOME_QPOS + np.array([0.2, -0.2, 0.2, 0.2, -0.2, 0.2])
    for _ in range(3):
        sim.step_control(target, 0.02)
    np.testing.assert_allclose(sim.joint_pos(), target, atol=2e-3)
    np.testing.assert_allclose(sim.observation()["timestamp"], 0.6, atol=1e-9)
    np.testing.assert_allclose(sim.ee_pose()[:3], K.fk(sim.joint_pos())[0], atol=1e-9)


def test_nan_targets_rejected():
    sim = WidowXSim()
    with pytest.raises(PostBCError, match="non-finite"):
        sim.step_control([0, np.nan, 0, 0, 0, 0], 0.02)
    with pytest.raises(PostBCError):
        sim.step_control(K.HOME_QPOS, float("nan"))
    assert sim.time == 0.0


def test_images_non_blank_both_cameras():
    task = make("put_in_bowl", cameras=("front", "wrist"), image_size=(32, 32), depth=True)
    obs = task.reset(seed=0)
    for cam in ("front", "wrist"):
        rgb, depth = obs[f"{cam}_rgb"], obs[f"{cam}_depth"]
        assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
        assert rgb.std() > 10, cam  # not a flat colour
        assert depth.shape == (32, 32) and depth.dtype == np.uint16
        valid = depth[depth > 0]
        assert valid.size > 100 and valid.min() > 10 and valid.max() < 3000, cam  # table within ~3 m


def test_gym_env_spaces_clamping_and_ee_delta(caplog):
    env = gym.make(GYM_IDS["lift_cube"], action_mode="ee_delta")
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and info["success"] is False
    z0 = obs["ee_pose"][2]
    for _ in range(3):
        obs, r, te, tr, info = env.step(np.array([0, 0, 0.02, 0, 0, 0, 0.037], np.float32))
    assert env.observation_space.contains(obs)
    assert obs["ee_pose"][2] - z0 == pytest.approx(0.06, abs=5e-3)
    with caplog.at_level(logging.WARNING, logger="postbc_core.sim.env"):
        env.step(np.array([0, 0, 0.5, 0, 0, 0, 0.037]))  # 50 cm: outside the +-5 cm box
    assert "clamped" in caplog.text
    with pytest.raises(PostBCError):
        env.step(np.full(7, np.nan))
    env.close()


def test_sync_vector_env_seeded():
    def make_fn(name):
        return lambda: WidowXEnv(name)

    venv = gym.vector.SyncVectorEnv([make_fn("push_to_target"), make_fn("push_to_target")])
    obs, _ = venv.reset(seed=[0, 1])
    assert obs["object_pose"].shape == (2, 7)
    assert not np.allclose(obs["object_pose"][0], obs["object_pose"][1])
    acts = np.tile(np.r_[K.HOME_QPOS, 0.037].astype(np.float32), (2, 1))
    for _ in range(3):
        obs, r, te, tr, info = venv.step(acts)
    assert np.all(np.isfinite(obs["joint_pos"])) and r.shape == (2,)
    venv.close()


def test_async_vector_env():
    venv = gym.vector.AsyncVectorEnv([lambda: WidowXEnv("lift_cube")] * 2)
    obs, _ = venv.reset(seed=0)
    obs, r, te, tr, info = venv.step(venv.action_space.sample())
    assert obs["joint_pos"].shape == (2, 6) and np.all(np.isfinite(obs["joint_pos"]))
    venv.close()


def test_scene_bodies_cover_free_and_mocap_bodies_and_mirror_a_scene():
    """What the ROS sim driver publishes and the sim camera sets: every free body and mocap marker, task object
    first; setting their poses on a second model reproduces the scene (push_to_target's target disc included)."""
    from postbc_core.sim.registry import make

    assert make("lift_cube").sim.scene_bodies("cube") == ["cube"]
    assert make("put_in_bowl").sim.scene_bodies("corn") == ["corn", "bowl"]
    src, dst = make("push_to_target"), make("push_to_target")
    names = src.sim.scene_bodies(src.object_body)
    assert names == ["puck", "target"]
    src.reset(seed=3)
    dst.reset(seed=4)
    for b in names:
        pose = src.sim.body_pose(b)
        dst.sim.set_body_pose(b, pose[:3], pose[3:])
        np.testing.assert_allclose(dst.sim.body_pose(b), pose, atol=1e-9)
    np.testing.assert_allclose(dst.target_pos(), src.target_pos(), atol=1e-9)
    with pytest.raises(PostBCError, match="neither free nor mocap"):
        src.sim.scene_bodies("base_link")


def test_rendering_then_training_in_one_process():
    """Render the twin, then build an optimizer, in one process (what `postbc finetune` on an image policy and the
    finetune graph with sim cameras do). With torch's CUDA wheels (the robot environment) torch then imports Triton,
    whose LLVM clashed with Mesa's software OpenGL and segfaulted; sim.base loads Triton before the first context.
    A subprocess, so a crash fails this test instead of the whole run."""
    import subprocess

    script = ("import torch\n"
              "from postbc_core.sim import make\n"
              "t = make('lift_cube', cameras=('front',), image_size=(24, 32))\n"
              "img = t.reset(seed=0)['front_rgb']\n"
              "torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)\n"
              "print('rendered', img.shape, int(img.std() > 0))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    assert "rendered (24, 32, 3) 1" in r.stdout
