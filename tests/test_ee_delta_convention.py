"""What a stored cmd_ee_delta means is recorded (data/layout.py EE_DELTA_CONVENTION_ATTR) and checked: a store or
checkpoint from before the convention was fixed is refused, never reinterpreted, and `postbc data convert-ee-delta`
rewrites a store so its deltas replay into the commands it recorded."""

import numpy as np
import pytest
from postbc_core.cli.main import main
from postbc_core.control.rows import step_row
from postbc_core.control.spec import stack_rows
from postbc_core.data import EpisodeStore
from postbc_core.data.layout import EE_DELTA_CONVENTION, EE_DELTA_CONVENTION_ATTR
from postbc_core.errors import CheckpointError, StoreError
from postbc_core.robots.actions import GRIPPER_OPEN, EEDeltaExecutor
from postbc_core.sim import make


def _twin_episode(seed: int) -> dict[str, np.ndarray]:
    """20 steps of the twin driven by joint targets, its rows with cmd_ee_delta RE-ANCHORED to the measured joints
    (what the twin's demos stored before the convention was fixed)."""
    from postbc_core.robots.actions import ee_delta_between

    env = make("lift_cube", action_mode="joint", terminate_on_success=False, max_steps=20)
    rng = np.random.default_rng(seed)
    obs, rows = env.reset(seed=seed), []
    q = obs["joint_pos"].astype(np.float64)
    try:
        for _ in range(20):
            q = q + rng.normal(0.0, 0.03, 6)
            prev = obs
            obs, *_, info = env.step(np.r_[q, GRIPPER_OPEN])
            old = ee_delta_between(prev["joint_pos"], info["joint_target"])
            rows.append(step_row(prev, info["joint_target"], info["gripper_target"], ee_delta=old))
    finally:
        env.close()
    return stack_rows(rows)


@pytest.fixture(scope="module")
def old_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("old") / "old.zarr"
    with EpisodeStore.create(path, ee_delta_convention=None) as store:  # as created before the attribute existed
        for seed in (0, 1):
            store.add_episode(_twin_episode(seed), success=False, task="lift_cube", source="scripted")
    return path


def test_new_stores_record_the_convention(tmp_path):
    with EpisodeStore.create(tmp_path / "new.zarr") as store:
        assert store.ee_delta_convention == EE_DELTA_CONVENTION == "chained"
    with EpisodeStore.open(tmp_path / "new.zarr") as store:
        assert store.attrs[EE_DELTA_CONVENTION_ATTR] == "chained"


def test_an_old_store_is_refused_for_training_and_appending(old_store, tmp_path):
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import load_training_data

    with pytest.raises(StoreError, match="convert-ee-delta"):
        EpisodeStore.open(old_store, "a")
    cfg = TrainConfig(dataset=old_store, out=tmp_path / "run", obs_keys=("joint_pos", "gripper_pos"),
                      action_key="cmd_ee_delta", steps=1, device="cpu", progress=False)
    with pytest.raises(StoreError, match=r"before cmd_ee_delta had one meaning.*convert-ee-delta"):
        load_training_data(cfg)
    # joint targets mean the same in every store: training on them is not refused
    load_training_data(TrainConfig(dataset=old_store, out=tmp_path / "run2", obs_keys=("joint_pos", "gripper_pos"),
                                   action_key="cmd_joint_pos", steps=1, device="cpu", progress=False))
    # nor mixed with a store in the convention by a merge
    with EpisodeStore.create(tmp_path / "new.zarr") as new:
        new.add_episode(_twin_episode(2), success=False, task="lift_cube", source="scripted")
    assert main(["data", "merge", str(old_store), str(tmp_path / "new.zarr"), "--out", str(tmp_path / "m.zarr")]) == 2


def test_convert_rewrites_cmd_ee_delta_so_it_replays_into_the_sent_commands(old_store, tmp_path):
    out = tmp_path / "converted.zarr"
    assert main(["data", "convert-ee-delta", str(old_store), "--out", str(out)]) == 0
    with EpisodeStore.open(old_store) as src, EpisodeStore.open(out) as dst:
        assert dst.ee_delta_convention == EE_DELTA_CONVENTION and src.ee_delta_convention is None
        assert dst.n_episodes == src.n_episodes == 2 and dst.keys == src.keys
        worst_old = 0.0
        for i in range(2):
            a, b = src.episode(i), dst.episode(i)
            assert dst.episode_meta(i)["source"] == "scripted"
            for k in a:
                if k != "cmd_ee_delta":
                    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            np.testing.assert_array_equal(a["cmd_ee_delta"][:, 6], b["cmd_ee_delta"][:, 6])
            # Replayed through the executor every recorder and executor uses (fed the recorded measured joints),
            # the converted deltas give back the sent commands; the old ones, chained, do not.
            for deltas, tol in ((b["cmd_ee_delta"], 2e-3), (a["cmd_ee_delta"], None)):  # 2e-3: IK tolerance
                chain = EEDeltaExecutor()
                q = np.array([chain.step(d.astype(np.float64), "ee_delta", jp)[0]
                              for d, jp in zip(deltas, b["joint_pos"].astype(np.float64))])
                err = np.abs(q - b["cmd_joint_pos"][:, :6]).max()
                if tol is None:
                    worst_old = max(worst_old, err)
                else:
                    assert err < tol, (i, err)
        assert worst_old > 0.01  # the old deltas drift from the commands (measured 0.044 rad after 20 steps)
    EpisodeStore.open(out, "a").close()  # the converted store takes new episodes


def test_an_ee_delta_checkpoint_without_the_convention_is_refused(tmp_path):
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.checkpoint import load_policy, save_checkpoint, save_policy
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig

    cfg = PolicyConfig(obs_shapes={"joint_pos": (6,)}, action_dim=7, n_obs_steps=1, action_horizon=2,
                       mlp_hidden=(8,), num_train_timesteps=4, num_inference_steps=2)
    norm = LinearNormalizer()
    norm.fit({"joint_pos": np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32),
              "cmd_ee_delta": np.random.default_rng(1).normal(size=(16, 7)).astype(np.float32)})
    policy = DiffusionPolicy(cfg, norm)
    policy.action_key = "cmd_ee_delta"
    load_policy(save_policy(policy, tmp_path / "new.safetensors"), device="cpu")  # recorded: loads
    old = {"policy_config": cfg.to_dict(), "action_key": "cmd_ee_delta", "normalizer_keys": norm.keys}
    save_checkpoint(tmp_path / "old.safetensors", "policy", policy.state_dict(), old)  # as saved before
    with pytest.raises(CheckpointError, match=r"trained before cmd_ee_delta had one meaning.*convert-ee-delta"):
        load_policy(tmp_path / "old.safetensors", device="cpu")
    joint = {**old, "action_key": "cmd_joint_pos"}
    save_checkpoint(tmp_path / "joint.safetensors", "policy", policy.state_dict(), joint)
    assert isinstance(load_policy(tmp_path / "joint.safetensors", device="cpu").config, PolicyConfig)
