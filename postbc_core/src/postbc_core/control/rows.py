"""The one builder of a stored step row: the observation before the command and the command in both conventions.

Every writer of episodes (scripted demos, sim evaluation with --record-to, finetuning's replay store, the ROS
recorder) stores one row per control step with the same keys: the observation keys (store dtypes), `cmd_joint_pos`
(7,) the joint targets + gripper the arm was sent (after the safety layer), `cmd_ee_delta` (7,) the end-effector
delta + gripper in data.layout.EE_DELTA_CONVENTION (relative to the previous step's target: the sim tasks give it
as info["ee_delta"], teleop publishes it; without one, the delta from the measured joints to the sent target, which
is that convention only at a chain's first step),
`reward` and `done` (terminal: a time-limit truncation is not). Callers add their own keys (policy_action, noise,
stamps).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from postbc_core.robots.actions import ee_delta_between
from postbc_core.control.spec import store_dtype

NOT_RECORDED = ("success",)  # the twin's privileged success flag: the row's reward / done carry it


def chained_ee_deltas(joint_pos, cmd_joint_pos) -> np.ndarray:
    """One recorded episode's commands as chained EE deltas (T, 7) (data.layout.EE_DELTA_CONVENTION): step 0 from
    the measured joints joint_pos[0] (6,) rad, step t from the previous command cmd_joint_pos[t - 1]; the gripper
    column is the command's. joint_pos (T, 6), cmd_joint_pos (T, 7) (the sent targets + gripper). Replayed through
    robots.actions.EEDeltaExecutor they give back the sent targets (while the chain is not cut)."""
    q0 = np.asarray(joint_pos, np.float64)[0, :6]
    cmd = np.asarray(cmd_joint_pos, np.float64)
    refs = np.vstack([q0[None], cmd[:-1, :6]])
    return np.stack([np.r_[ee_delta_between(r, c[:6]), c[6]] for r, c in zip(refs, cmd)])


def convert_ee_delta_store(src, out) -> Path:
    """Rewrite store `src` into `out` with cmd_ee_delta recomputed from cmd_joint_pos (`chained_ee_deltas`) and
    recorded as data.layout.EE_DELTA_CONVENTION: the way to train on a store recorded before the convention was
    fixed. Returns `out`."""
    from postbc_core.data import tools
    from postbc_core.data.layout import EE_DELTA_CONVENTION

    def compute(ep):
        return chained_ee_deltas(ep["joint_pos"], ep["cmd_joint_pos"])

    return tools.rewrite_key(src, out, "cmd_ee_delta", compute, ("joint_pos", "cmd_joint_pos"), EE_DELTA_CONVENTION)


def step_row(obs: Mapping[str, np.ndarray], sent_q, sent_gripper: float, *, ee_delta=None, reward: float = 0.0,
             done: bool = False) -> dict[str, np.ndarray]:
    """One store row. obs: the observation before the command (raw; must hold joint_pos (6,) when `ee_delta` is
    None); sent_q (6,) rad and sent_gripper (m): the command the arm was sent; ee_delta (6,) or (7,): the commanded
    EE delta (None: computed from joint_pos to sent_q). The gripper of cmd_ee_delta is the sent gripper."""
    row = {k: store_dtype(k, v) for k, v in obs.items() if k not in NOT_RECORDED}
    sent = np.r_[np.asarray(sent_q, np.float64), float(sent_gripper)]
    row["cmd_joint_pos"] = sent.astype(np.float32)
    if ee_delta is None:
        delta = ee_delta_between(np.asarray(obs["joint_pos"], float), sent[:6])
        row["cmd_ee_delta"] = np.r_[delta, sent[6]].astype(np.float32)
    else:
        d = np.asarray(ee_delta, np.float64).reshape(-1)
        row["cmd_ee_delta"] = (d if d.shape == (7,) else np.r_[d, sent[6]]).astype(np.float32)
    row["reward"] = np.float32(reward)
    row["done"] = np.bool_(done)
    return row
