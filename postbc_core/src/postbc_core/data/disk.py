"""Disk space for recording: how many minutes of recording the free space holds at the current rate, when to warn,
and whether an episode can start at all.

A recorder asks `DiskBudget` three things: `status(bytes_per_s)` (free bytes, minutes left, low or not: for its
status topic), `check_start(bytes_per_s, episode_s)` (StoreError when the longest episode it may record does not
fit, so it refuses to start instead of failing mid-episode; committed episodes are never touched), and
`rate_from_store(store, hz)` (bytes per second the store's committed episodes took, the rate before an episode has
run). While an episode runs, `EpisodeRate` measures the rate from the free space it consumes. The free-space query
is injectable (`free_bytes`), so a test can shrink the disk without filling one.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from postbc_core.errors import StoreError

DEFAULT_WARN_MINUTES = 10.0
DEFAULT_RESERVE_BYTES = 256 << 20  # never fill the disk to its last byte: other writers (logs, the OS) need room


def disk_free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to an unprivileged writer on the file system holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def store_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under a store directory."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # a temporary renamed away meanwhile
    return total


@dataclass
class DiskBudget:
    """Free space of the disk holding `path` against a recording rate (bytes per second)."""

    path: Path
    warn_minutes: float = DEFAULT_WARN_MINUTES
    """Below this many minutes of recording left, `status` says low (the recorder warns)."""
    reserve_bytes: int = DEFAULT_RESERVE_BYTES
    """Bytes kept free: recording stops short of them."""
    free_bytes: Callable[[Path], int] = field(default=disk_free_bytes)
    """The free-space query (injectable for tests)."""

    def usable_bytes(self) -> int:
        """Free bytes minus the reserve (>= 0)."""
        return max(0, int(self.free_bytes(self.path)) - int(self.reserve_bytes))

    def minutes_left(self, bytes_per_s: float | None) -> float | None:
        """Minutes of recording the usable space holds at `bytes_per_s` (None when the rate is unknown)."""
        if not bytes_per_s or bytes_per_s <= 0 or not math.isfinite(bytes_per_s):
            return None
        return self.usable_bytes() / bytes_per_s / 60.0

    def status(self, bytes_per_s: float | None) -> dict:
        """{"free_bytes", "bytes_per_s", "minutes_left", "low"} for a status message."""
        free = int(self.free_bytes(self.path))
        left = self.minutes_left(bytes_per_s)
        low = free <= self.reserve_bytes or (left is not None and left < self.warn_minutes)
        return {"free_bytes": free, "bytes_per_s": None if bytes_per_s is None else round(float(bytes_per_s), 1),
                "minutes_left": None if left is None else round(left, 2), "low": bool(low)}

    def check_start(self, bytes_per_s: float | None, episode_s: float) -> None:
        """StoreError when an episode of `episode_s` seconds (the recorder's limit; 0 = none: one minute is asked
        for) at `bytes_per_s` does not fit in the usable space, or no space is usable at all."""
        usable = self.usable_bytes()
        if usable <= 0:
            raise StoreError(f"{self.path}: the disk has {_mb(self.free_bytes(self.path))} free, at or below the "
                             f"{_mb(self.reserve_bytes)} kept in reserve: free space (or record to another disk) "
                             "before starting an episode; the committed episodes are untouched")
        if not bytes_per_s:
            return
        need_s = episode_s if episode_s > 0 else 60.0
        need = bytes_per_s * need_s
        if need > usable:
            raise StoreError(f"{self.path}: an episode of up to {need_s:g} s needs ~{_mb(need)} at the current "
                             f"{_mb(bytes_per_s)}/s, but only {_mb(usable)} are usable ({_mb(self.reserve_bytes)} "
                             "kept in reserve): free space, record to another disk, use a compressed camera codec "
                             "(codec jpeg) or a shorter episode limit; the committed episodes are untouched")


def rate_from_store(store, hz: float) -> float | None:
    """Bytes per second of recording that `store`'s committed episodes took on disk at `hz` steps per second (None
    for a store without steps)."""
    if not store.n_steps or hz <= 0:
        return None
    return store_bytes(store.path) / store.n_steps * hz


class EpisodeRate:
    """The bytes per second an episode writes, measured from the free space it consumes since `start` (other
    writers on the same disk count too, which is what minutes-left should see)."""

    def __init__(self, budget: DiskBudget, min_seconds: float = 2.0):
        self.budget = budget
        self.min_seconds = min_seconds
        self._t0 = time.monotonic()
        self._free0 = int(budget.free_bytes(budget.path))

    def rate(self) -> float | None:
        """Bytes per second since start (None before `min_seconds`, or while nothing was consumed yet)."""
        dt = time.monotonic() - self._t0
        if dt < self.min_seconds:
            return None
        used = self._free0 - int(self.budget.free_bytes(self.budget.path))
        return used / dt if used > 0 else None


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n < 10e9 else f"{n / 1e9:.1f} GB"
