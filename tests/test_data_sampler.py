"""Windows and padding: hand-checked tables, diffusion_policy's reference loop, batch == per-item."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from postbc_core.data import EpisodeStore, SequenceSampler, WindowDataset, create_indices, get_val_mask
from postbc_core.errors import ConfigError


def dp_create_indices(episode_ends, sequence_length, episode_mask, pad_before=0, pad_after=0):
    """diffusion_policy.common.sampler.create_indices, transcribed literally (the reference)."""
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)
    indices = []
    for i in range(len(episode_ends)):
        if not episode_mask[i]:
            continue
        start_idx = 0 if i == 0 else episode_ends[i - 1]
        end_idx = episode_ends[i]
        episode_length = end_idx - start_idx
        min_start = -pad_before
        max_start = episode_length - sequence_length + pad_after
        for idx in range(min_start, max_start + 1):
            buffer_start_idx = max(idx, 0) + start_idx
            buffer_end_idx = min(idx + sequence_length, episode_length) + start_idx
            start_offset = buffer_start_idx - (idx + start_idx)
            end_offset = (idx + sequence_length + start_idx) - buffer_end_idx
            indices.append([buffer_start_idx, buffer_end_idx, 0 + start_offset, sequence_length - end_offset])
    return np.array(indices, dtype=np.int64).reshape(-1, 4)


def dp_get_val_mask(n_episodes, val_ratio, seed=0):
    val_mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio <= 0:
        return val_mask
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    rng = np.random.default_rng(seed=seed)
    val_idxs = rng.choice(n_episodes, size=n_val, replace=False)
    val_mask[val_idxs] = True
    return val_mask


X = np.array([10, 11, 12, 13, 14], dtype=np.int64)  # row r holds 10 + r
ENDS = [3, 5]


def test_hand_checked_indices_and_padded_windows():
    # episode 0 = rows 0..2, episode 1 = rows 3..4; L=4, pad_before=1, pad_after=2
    expected = np.array([
        [0, 3, 1, 4],  # starts one step before episode 0: first frame repeated once
        [0, 3, 0, 3],  # last position padded with row 2
        [1, 3, 0, 2],  # two positions padded with row 2
        [3, 5, 1, 3],  # episode 1: first frame repeated, then last frame repeated
        [3, 5, 0, 2],
    ])
    np.testing.assert_array_equal(create_indices(ENDS, 4, pad_before=1, pad_after=2), expected)
    sampler = SequenceSampler({"x": X}, ENDS, 4, pad_before=1, pad_after=2)
    windows = [
        [10, 10, 11, 12],
        [10, 11, 12, 12],
        [11, 12, 12, 12],
        [13, 13, 14, 14],
        [13, 14, 14, 14],
    ]
    assert len(sampler) == 5
    for i, w in enumerate(windows):
        np.testing.assert_array_equal(sampler.sample_sequence(i)["x"], w)
    np.testing.assert_array_equal(sampler.sample_batch(np.arange(5))["x"], windows)
    np.testing.assert_array_equal(sampler.episode_index, [0, 0, 0, 1, 1])


def test_hand_checked_edge_cases():
    # no padding: only windows fully inside an episode
    np.testing.assert_array_equal(create_indices(ENDS, 2), [[0, 2, 0, 2], [1, 3, 0, 2], [3, 5, 0, 2]])
    # pads are clipped to sequence_length - 1 (pad_before=10 acts as 1)
    np.testing.assert_array_equal(create_indices([2], 2, pad_before=10), [[0, 1, 1, 2], [0, 2, 0, 2]])
    # an episode shorter than the window yields nothing without enough pad_after
    assert create_indices([1], 3).shape == (0, 4)
    np.testing.assert_array_equal(create_indices([1], 3, pad_after=2), [[0, 1, 0, 1]])
    np.testing.assert_array_equal(SequenceSampler({"x": X[:1]}, [1], 3, pad_after=2).sample_sequence(0)["x"],
                                  [10, 10, 10])
    # the episode mask selects episodes
    np.testing.assert_array_equal(create_indices(ENDS, 4, 1, 2, episode_mask=[False, True]),
                                  [[3, 5, 1, 3], [3, 5, 0, 2]])
    with pytest.raises(ConfigError, match="episode_mask has shape"):
        create_indices(ENDS, 4, episode_mask=[True])


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=5), L=st.integers(1, 7),
       pad_before=st.integers(-1, 8), pad_after=st.integers(-1, 8), seed=st.integers(0, 1000))
def test_matches_diffusion_policy_reference(lengths, L, pad_before, pad_after, seed):
    ends = np.cumsum(lengths)
    rng = np.random.default_rng(seed)
    mask = rng.random(len(ends)) < 0.7
    ref = dp_create_indices(ends, L, mask, pad_before, pad_after)
    got = create_indices(ends, L, pad_before, pad_after, episode_mask=mask)
    np.testing.assert_array_equal(got, ref)
    data = {"img": rng.integers(0, 255, (ends[-1], 2, 2, 3), dtype=np.uint8),
            "act": rng.normal(size=(ends[-1], 3)).astype(np.float32)}
    sampler = SequenceSampler(data, ends, L, pad_before, pad_after, episode_mask=mask)
    if len(sampler) == 0:
        return
    idxs = rng.integers(0, len(sampler), size=6)
    batch = sampler.sample_batch(idxs)
    for b, i in enumerate(idxs):
        seq = sampler.sample_sequence(int(i))
        bs, be, ss, se = ref[i]
        for k in data:
            np.testing.assert_array_equal(batch[k][b], seq[k])
            # the window never leaves its episode: every frame equals one of the episode's rows
            np.testing.assert_array_equal(seq[k][ss:se], data[k][bs:be])
            np.testing.assert_array_equal(seq[k][:ss], np.repeat(data[k][bs:bs + 1], ss, axis=0))
            np.testing.assert_array_equal(seq[k][se:], np.repeat(data[k][be - 1:be], L - se, axis=0))
    ep = np.searchsorted(ends, ref[:, 0], side="right")
    np.testing.assert_array_equal(sampler.episode_index, ep)


def test_key_first_k_loads_only_first_frames():
    data = {"x": np.arange(5, dtype=np.float32), "y": np.arange(5, dtype=np.int64)}
    s = SequenceSampler(data, ENDS, 4, 1, 2, key_first_k={"x": 1, "y": 2})
    # window 0 = [0,3,1,4]: buffer rows 0..2, only row 0 loaded for x -> [nan]*... then padded with sample[-1]
    np.testing.assert_array_equal(s.sample_sequence(0)["x"], [0, 0, np.nan, np.nan])
    np.testing.assert_array_equal(s.sample_sequence(0)["y"], [0, 0, 1, 0])  # ints fill 0 (NaN impossible)
    # window 4 = [3,5,0,2]: rows 3..4, only row 3 loaded; the end padding repeats the (unloaded) last frame
    np.testing.assert_array_equal(s.sample_sequence(4)["x"], [3, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(s.sample_batch([0, 4])["x"], [[0, 0, np.nan, np.nan], [3, np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(s.sample_batch([0])["y"], [[0, 0, 1, 0]])


def test_get_val_mask_semantics():
    for n, r, seed in [(10, 0.2, 0), (7, 0.3, 4), (2, 0.9, 1), (5, 0.01, 3), (20, 0.5, 9)]:
        m = get_val_mask(n, r, seed=seed)
        np.testing.assert_array_equal(m, dp_get_val_mask(n, r, seed=seed))
        assert 1 <= m.sum() <= n - 1
    assert get_val_mask(10, 0.2).sum() == 2
    assert not get_val_mask(5, 0.0).any()


def test_window_dataset_obs_and_action_alignment(tmp_path):
    # To=2, Ta=3 -> L=4, pad_before=1, pad_after=2: the hand-checked windows above
    act = np.stack([X, -X], axis=1).astype(np.float64)  # per-step action shape (2,)
    img = np.broadcast_to(X[:, None, None, None], (5, 2, 2, 3)).astype(np.uint8)
    ds = WindowDataset({"x": X, "img": img, "act": act}, ENDS, obs_keys=["x", "img"], action_key="act",
                       n_obs_steps=2, action_horizon=3)
    assert len(ds) == 5 and isinstance(ds, torch.utils.data.Dataset)
    item = ds[0]  # window [10, 10, 11, 12]: obs = the first two, actions start at the current step
    np.testing.assert_array_equal(item["obs"]["x"], [10, 10])
    assert item["obs"]["img"].shape == (2, 2, 2, 3) and item["obs"]["img"].dtype == np.uint8
    assert item["action"].dtype == np.float32 and item["action"].shape == (3, 2)
    np.testing.assert_array_equal(item["action"][:, 0], [10, 11, 12])
    np.testing.assert_array_equal(ds[3]["obs"]["x"], [13, 13])
    np.testing.assert_array_equal(ds[3]["action"][:, 0], [13, 14, 14])
    np.testing.assert_array_equal(ds[-1]["action"][:, 1], [-14, -14, -14])
    batch = ds.get_batch([0, 3, 4])
    assert batch["action"].shape == (3, 3, 2) and batch["obs"]["img"].shape == (3, 2, 2, 2, 3)
    for b, i in enumerate([0, 3, 4]):
        np.testing.assert_array_equal(batch["action"][b], ds[i]["action"])
        np.testing.assert_array_equal(batch["obs"]["x"][b], ds[i]["obs"]["x"])
    np.testing.assert_array_equal(ds.episode_index, [0, 0, 0, 1, 1])
    loader = torch.utils.data.DataLoader(ds, batch_size=5)
    collated = next(iter(loader))
    assert collated["action"].shape == (5, 3, 2) and collated["obs"]["x"].shape == (5, 2)
    with pytest.raises(ConfigError, match="'nope' is not in the data"):
        WindowDataset({"x": X}, ENDS, ["nope"], "x", 1, 1)

    # from_store: the same windows out of an episode store; action per-step shape (3, 2) flattens to Da=6
    with EpisodeStore.create(tmp_path / "s.zarr") as s:
        s.add_episode({"x": X[:3], "a": np.ones((3, 3, 2), np.float32)})
        s.add_episode({"x": X[3:], "a": np.ones((2, 3, 2), np.float32)})
    with EpisodeStore.open(tmp_path / "s.zarr") as s:
        ds2 = WindowDataset.from_store(s, ["x"], "a", 2, 3, episode_mask=[True, False])
    assert len(ds2) == 3 and ds2[0]["action"].shape == (3, 6) and ds2.action_dim == 6
    np.testing.assert_array_equal(ds2[2]["obs"]["x"], [11, 12])
