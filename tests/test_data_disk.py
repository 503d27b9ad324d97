"""Disk space for recording (postbc_core.data.disk): minutes left at a rate, the low warning, the refusal of an
episode that cannot fit, and rates from a store and from consumed free space. The free-space query is injected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from postbc_core.data import EpisodeStore
from postbc_core.data.disk import DiskBudget, EpisodeRate, rate_from_store, store_bytes
from postbc_core.errors import StoreError

MB = 1_000_000


class FakeDisk:
    """A disk whose free bytes a test sets."""

    def __init__(self, free: int):
        self.free = free

    def __call__(self, path: Path) -> int:
        return self.free


def test_minutes_left_warning_and_refusal(tmp_path):
    disk = FakeDisk(1000 * MB)
    b = DiskBudget(tmp_path / "s.zarr", warn_minutes=10, reserve_bytes=100 * MB, free_bytes=disk)
    s = b.status(1 * MB)  # 900 MB usable at 1 MB/s: 15 minutes
    assert s["minutes_left"] == 15.0 and not s["low"] and s["free_bytes"] == 1000 * MB
    assert b.status(None)["minutes_left"] is None  # no rate known yet
    b.check_start(1 * MB, episode_s=120)  # 120 MB fits
    disk.free = 400 * MB  # 300 MB usable: 5 minutes, below the warning
    assert b.status(1 * MB)["low"] and b.status(1 * MB)["minutes_left"] == 5.0
    b.check_start(1 * MB, episode_s=120)
    with pytest.raises(StoreError, match=r"an episode of up to 400 s needs ~400 MB .* only 300 MB are usable"):
        b.check_start(1 * MB, episode_s=400)
    with pytest.raises(StoreError, match=r"up to 60 s"):  # no episode limit: one minute is asked for
        b.check_start(10 * MB, episode_s=0)
    disk.free = 50 * MB  # below the reserve: nothing starts, whatever the rate
    with pytest.raises(StoreError, match=r"at or below the 100 MB kept in reserve"):
        b.check_start(None, episode_s=10)
    assert b.status(None)["low"]


def test_rates_from_the_store_and_from_consumed_space(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path) as s:
        assert rate_from_store(s, 30.0) is None
        s.add_episode({"x": np.zeros((60, 1000), np.float32)})
        rate = rate_from_store(s, 30.0)
        assert rate == pytest.approx(store_bytes(path) / 60 * 30.0) and rate > 0
    disk = FakeDisk(1000 * MB)
    b = DiskBudget(path, reserve_bytes=0, free_bytes=disk)
    clock = [100.0]
    monkeypatch.setattr("postbc_core.data.disk.time.monotonic", lambda: clock[0])
    er = EpisodeRate(b, min_seconds=2.0)
    clock[0] += 1.0
    disk.free -= 10 * MB
    assert er.rate() is None  # too early to tell
    clock[0] += 3.0
    disk.free -= 30 * MB
    assert er.rate() == pytest.approx(10 * MB)  # 40 MB in 4 s
