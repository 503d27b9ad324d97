"""What a policy reads and commands, derived once from its config: the observation / action specification.

`ControlSpec.from_policy(policy)` gives the observation keys and per-step shapes, the history length To, the action
key, its action mode ("joint": absolute joint targets + gripper; "ee_delta": a Bridge-style end-effector
delta + gripper), the chunk length Ta and how many of its actions run before replanning. `store_dtype` is the one rule for
the dtypes the episode store keeps (data/README.md), used for stored rows and for policy inputs alike, so a feature
computed live equals one recomputed from the store.

Shape legend: n rows (environments or steps), To obs steps, Ta action steps, Da action dim (7 for the WidowX).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import numpy as np

from postbc_core.errors import ConfigError
from postbc_core.robots.actions import ENV_ACTION_DIM, ActionMode

# Policy action key -> the action mode it commands (sim.base.TaskConfig.action_mode, the real driver's modes).
ACTION_KEY_TO_MODE: dict[str, ActionMode] = {"cmd_joint_pos": "joint", "cmd_ee_delta": "ee_delta"}
# Kept as recorded: images (uint8 colour, uint16 depth in mm) and flags. Timestamps are float64 s; the rest float32.
_KEPT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.bool_))


def action_mode_for(action_key: str) -> ActionMode:
    """The action mode ("joint" | "ee_delta") a policy trained on `action_key` commands."""
    try:
        return ACTION_KEY_TO_MODE[action_key]
    except KeyError:
        raise ConfigError(f"policy action key {action_key!r} cannot drive the WidowX: train on one of "
                          f"{sorted(ACTION_KEY_TO_MODE)} (--action-key)") from None


def store_dtype(key: str, value) -> np.ndarray:
    """`value` in the dtype the episode store keeps for `key`: float64 for `timestamp` and `*_stamp` (s), uint8 /
    uint16 images and bool flags as they are, float32 for everything else."""
    arr = np.asarray(value)
    if key == "timestamp" or key.endswith("_stamp"):
        return arr.astype(np.float64, copy=False)
    if arr.dtype in _KEPT_DTYPES:
        return arr
    return arr.astype(np.float32, copy=False)


def stack_rows(rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-step rows (key -> per-step array) -> one episode's arrays key -> (T, *shape) in store dtypes."""
    if not rows:
        raise ConfigError("an episode needs at least one step")
    return {k: store_dtype(k, np.stack([np.asarray(r[k]) for r in rows])) for k in rows[0]}


@dataclass(frozen=True)
class ControlSpec:
    """The observation / action specification of one policy (see the module docstring)."""

    obs_shapes: Mapping[str, tuple[int, ...]]
    n_obs_steps: int
    action_key: str
    action_horizon: int
    n_action_steps: int
    action_dim: int = ENV_ACTION_DIM

    def __post_init__(self):
        object.__setattr__(self, "obs_shapes", {k: tuple(int(d) for d in v) for k, v in self.obs_shapes.items()})
        if not 1 <= self.n_action_steps <= self.action_horizon:
            raise ConfigError(f"n_action_steps={self.n_action_steps} must be in 1..{self.action_horizon} (the "
                              "policy's action horizon Ta)")

    def check_robot(self) -> ControlSpec:
        """Refuses a policy whose action cannot drive the WidowX (its key has no action mode, or not 7 dims).
        DSRL and Best-of-N act on any diffusion policy; a policy meets the arm through PolicyRunner or a task."""
        action_mode_for(self.action_key)
        if self.action_dim != ENV_ACTION_DIM:
            raise ConfigError(f"policy action {self.action_key!r} has {self.action_dim} dims per step; the WidowX "
                              f"needs {ENV_ACTION_DIM} (6 joints or EE delta + gripper)")
        return self

    @classmethod
    def from_policy(cls, policy, n_action_steps: int | None = None, *, robot: bool = True) -> ControlSpec:
        """From a policy with `.config` (obs_shapes, n_obs_steps, action_horizon, action_dim) and `.action_key`.
        n_action_steps: actions of each chunk executed before replanning (default the whole chunk, Ta).
        robot: the policy drives the WidowX (`check_robot`)."""
        cfg = policy.config
        ta = int(cfg.action_horizon)
        spec = cls(obs_shapes=dict(cfg.obs_shapes), n_obs_steps=int(cfg.n_obs_steps), action_key=policy.action_key,
                   action_horizon=ta, n_action_steps=ta if n_action_steps is None else int(n_action_steps),
                   action_dim=int(cfg.action_dim))
        return spec.check_robot() if robot else spec

    @property
    def obs_keys(self) -> list[str]:
        return list(self.obs_shapes)

    @property
    def action_mode(self) -> ActionMode:
        return action_mode_for(self.action_key)

    @property
    def noise_shape(self) -> tuple[int, int]:
        """(Ta, Da): one chunk's initial diffusion noise."""
        return self.action_horizon, self.action_dim

    def _missing(self, keys) -> None:
        missing = [k for k in self.obs_shapes if k not in keys]
        if missing:
            raise ConfigError(f"observation is missing keys {missing}; the policy needs {self.obs_keys} "
                              f"(got {sorted(keys)})")

    def step_obs(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The policy's keys of one raw observation (per-step shapes checked), in store dtypes."""
        self._missing(obs)
        out = {}
        for k, shape in self.obs_shapes.items():
            x = store_dtype(k, obs[k])
            if x.shape != shape:
                raise ConfigError(f"observation {k!r} has shape {x.shape}, the policy expects {shape}")
            out[k] = x
        return out

    def check_batch(self, obs: Mapping[str, np.ndarray], n: int) -> None:
        """obs[key]: (n, *shape) for every policy key, or ConfigError naming the key and both shapes."""
        self._missing(obs)
        for k, shape in self.obs_shapes.items():
            if tuple(np.shape(obs[k])) != (n, *shape):
                raise ConfigError(f"observation {k!r} has shape {tuple(np.shape(obs[k]))}, expected {(n, *shape)} "
                                  f"({n} environments x per-step {shape})")

    def batch(self, observations: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Raw observations of n environments -> {key: (n, *shape)} in store dtypes (the policy's keys only)."""
        steps = [self.step_obs(o) for o in observations]
        return {k: np.stack([s[k] for s in steps]) for k in self.obs_shapes}
