"""Small policies the RL and ROS tests train in seconds (a module: tests/ and tests/ros/ both use them)."""

from pathlib import Path

LIFT_OBS_KEYS = ("joint_pos", "gripper_pos", "object_pose")


def weak_lift_policy(root: Path, steps: int) -> Path:
    """A weak lift_cube state policy: 2 scripted demos, `steps` diffusion steps, 2 x 64 MLP. Run directory path."""
    from postbc_core.policies.settings import PolicySettings
    from postbc_core.sim.demos import record_demos
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import train

    record_demos("lift_cube", 2, root / "demos.zarr", seed=0)
    return train(TrainConfig(dataset=root / "demos.zarr", out=root / "bc", obs_keys=LIFT_OBS_KEYS,
                             action_key="cmd_joint_pos", policy=PolicySettings(action_horizon=4, mlp_hidden=(64, 64)),
                             alpha=0.0, steps=steps, batch_size=64, lr=1e-4, warmup_steps=5, device="cpu",
                             progress=False, log_every=steps // 2))
