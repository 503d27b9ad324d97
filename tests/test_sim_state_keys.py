"""registry.task_state_keys: the task's state keys from the scene poses the ROS sim driver publishes
(/postbc/sim/object_poses) equal what the task's own `observation()` gives, key for key, for every task, several seeds,
a moved (tipped, then settling) object; the published body order; the errors."""

import os
import sys

import numpy as np
import pytest

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # before the first mujoco import anywhere in this process
pytest.importorskip("mujoco")

from postbc_core.errors import ConfigError, PostBCError  # noqa: E402
from postbc_core.sim import TASKS, make, recommended_obs_keys  # noqa: E402
from postbc_core.sim.registry import scene_bodies, task_state_keys, task_state_shapes  # noqa: E402

ROBOT_KEYS = {"joint_pos", "joint_vel", "joint_effort", "gripper_pos", "ee_pose", "timestamp"}  # WidowXSim's


def published_poses(task) -> np.ndarray:
    """(N, 7) poses as the ROS sim driver publishes them: one per scene body, task object first."""
    return np.stack([task.sim.body_pose(b) for b in task.sim.scene_bodies(first=task.object_body)])


def _assert_same(name, obs, derived, what):
    for key, value in derived.items():
        assert key in obs, f"{name}: task_state_keys gives {key!r}, which observation() lacks"
        np.testing.assert_allclose(value, obs[key], rtol=0, atol=1e-12, err_msg=f"{name} {key} ({what})")
    rec = set(recommended_obs_keys(name)) - ROBOT_KEYS
    assert rec <= set(derived), f"{name}: recommended keys {sorted(rec - set(derived))} not derivable from poses"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_state_keys_equal_the_tasks_observation(name):
    task = make(name)
    rng = np.random.default_rng(0)
    lo, hi = task.action_bounds()
    try:
        assert scene_bodies(name) == tuple(task.sim.scene_bodies(first=task.object_body))
        for seed in range(5):
            obs = task.reset(seed=seed)
            _assert_same(name, obs, task_state_keys(name, published_poses(task)), f"seed {seed} reset")
            # The mapping form gives the same.
            _assert_same(name, obs, task_state_keys(name, task.body_poses()), f"seed {seed} mapping")
            # The object tipped to a random orientation (the cube's yaw then comes from its other face normal),
            # then a few steps of physics (it falls and settles while the arm moves).
            q = rng.normal(size=4)
            pos = task.sim.body_pose(task.object_body)[:3] + [0.0, 0.0, 0.03]
            task.sim.set_free_body_pose(task.object_body, pos, q / np.linalg.norm(q))
            _assert_same(name, task.observation(render=False), task_state_keys(name, published_poses(task)),
                         f"seed {seed} tipped")
            for step in range(3):
                obs, *_ = task.step(rng.uniform(lo, hi))
                _assert_same(name, obs, task_state_keys(name, published_poses(task)), f"seed {seed} step {step}")
        shapes = task_state_shapes(name)
        assert shapes == {k: v.shape for k, v in task_state_keys(name, published_poses(task)).items()}
        assert {"object_pose", "object_pos"} <= set(shapes)
    finally:
        task.close()


def test_task_state_keys_errors_name_the_fix():
    with pytest.raises(ConfigError, match="unknown sim task 'stack_cups'.*lift_cube"):
        task_state_keys("stack_cups", np.zeros((1, 7)))
    # put_in_bowl publishes corn and bowl: one pose is a driver running another task
    with pytest.raises(PostBCError, match=r"shape \(1, 7\), need \(2, 7\).*\['corn', 'bowl'\].*driver's task"):
        task_state_keys("put_in_bowl", np.zeros((1, 7)))
    with pytest.raises(PostBCError, match=r"no pose for scene bodies \['bowl'\]"):
        task_state_keys("put_in_bowl", {"corn": np.r_[0.3, 0, 0.012, 1, 0, 0, 0]})
