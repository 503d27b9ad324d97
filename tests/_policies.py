"""Small policies the RL and ROS tests train in seconds (a module: tests/ and tests/ros/ both use them)."""

from pathlib import Path

LIFT_OBS_KEYS = ("joint_pos", "gripper_pos", "object_pose")
# What a real WidowX has: the two cameras and the arm's own state, no object keys (the README's real-robot recipe).
IMAGE_OBS_KEYS = ("front_rgb", "wrist_rgb", "joint_pos", "gripper_pos")


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


def weak_lift_image_policy(root: Path, steps: int, image_size: tuple[int, int] = (24, 32)) -> Path:
    """A weak lift_cube image policy as the real-robot recipe trains one (cameras + arm state, EE-delta actions, the
    conv encoder), scaled down: 2 scripted demos recorded at twice `image_size` and resized at load time
    (`--image-size`), `steps` diffusion steps, 2 x 64 MLP. Run directory path."""
    from postbc_core.policies.settings import PolicySettings
    from postbc_core.sim.demos import record_demos
    from postbc_core.training.config import TrainConfig
    from postbc_core.training.train import train

    h, w = image_size
    record_demos("lift_cube", 2, root / "demos.zarr", seed=0, cameras=("front", "wrist"), image_size=(2 * h, 2 * w))
    return train(TrainConfig(dataset=root / "demos.zarr", out=root / "bc_img", obs_keys=IMAGE_OBS_KEYS,
                             action_key="cmd_ee_delta", image_size=image_size,
                             policy=PolicySettings(action_horizon=4, mlp_hidden=(64, 64), image_encoder="conv"),
                             alpha=0.0, steps=steps, batch_size=16, lr=1e-4, warmup_steps=5, device="cpu",
                             progress=False, log_every=max(1, steps // 2)))
