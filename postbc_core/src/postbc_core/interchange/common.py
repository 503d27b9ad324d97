"""What every exporter shares: optional imports with the extra to install, the episode selection, reading an episode
in bounded memory, the keys that hold camera images, the control rate, the timeline of exported episodes and the
atomic write of an output.

Shape legend: T steps of one episode.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postbc_core.data.paths import refuse_inside_store
from postbc_core.data.recovery import temporary_sibling
from postbc_core.data.store import EpisodeStore
from postbc_core.errors import ConfigError, PostBCError, storage_errors

log = logging.getLogger(__name__)


def require(module: str, extra: str, what: str):
    """Import `module` or raise PostBCError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PostBCError(f"{what} needs the Python package {module.split('.')[0]!r} ({exc}): install it with "
                          f"pip install 'postbc_core[{extra}]'") from None


def select_episodes(store: EpisodeStore, episodes: Sequence[int] | None) -> list[int]:
    """Episode numbers 0..N-1 that `episodes` name (None or empty: all), in the order given; negative indices count
    from the end. An index out of range or named twice is refused."""
    n = store.n_episodes
    if n == 0:
        raise ConfigError(f"{store.path} has no committed episodes: nothing to export")
    if not episodes:
        return list(range(n))
    bad = [e for e in episodes if not -n <= int(e) < n]
    if bad:
        raise ConfigError(f"episode index(es) {bad} out of range: {store.path} has {n} episodes (indices 0..{n - 1}, "
                          f"or -{n}..-1 from the end)")
    picked = [int(e) % n for e in episodes]
    twice = sorted({e for e in picked if picked.count(e) > 1})
    if twice:
        raise ConfigError(f"episode(s) {twice} named more than once (--episodes {' '.join(map(str, episodes))}): give "
                          "each episode once")
    return picked


# Keys whose step is larger than this (images) are read BLOCK_BYTES at a time instead of a whole episode at once: a
# minute of two 640x480 cameras at 30 Hz is 3.3 GB.
LARGE_STEP_BYTES = 4096
BLOCK_BYTES = 32 << 20


class BlockRows:
    """One large key of one episode, read from the store in blocks of ~BLOCK_BYTES: `rows[s]` is step s (steps in
    order cost one read per block), `blocks()` yields (first step, (n, ...) rows) over the episode."""

    def __init__(self, store: EpisodeStore, key: str, start: int, stop: int, step_shape: tuple[int, ...],
                 dtype: np.dtype, block_bytes: int | None = None):
        self.store, self.key, self.start, self.stop = store, key, start, stop
        self.shape = (stop - start, *step_shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
        self.block = max(1, block_bytes // max(1, int(np.prod(step_shape, dtype=np.int64)) * self.dtype.itemsize))
        self._first, self._rows = 0, None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, s: int) -> np.ndarray:
        if not 0 <= s < len(self):
            raise IndexError(f"step {s} of a {len(self)}-step episode")
        if self._rows is None or not self._first <= s < self._first + len(self._rows):
            self._first = s
            self._rows = self.store.rows(self.key, self.start + s, min(self.stop, self.start + s + self.block))
        return self._rows[s - self._first]

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, len(self), self.block):
            yield s, self.store.rows(self.key, self.start + s, min(self.stop, self.start + s + self.block))


def read_episode(store: EpisodeStore, i: int) -> dict[str, np.ndarray | BlockRows]:
    """Episode `i` as key -> (T, ...) array for keys of small steps and key -> BlockRows for large ones (images), so
    an export holds at most a block of frames per camera in memory."""
    meta = store.episode_meta(i)
    schema = store.schema()
    large = {k for k, (shape, dt) in schema.items()
             if int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize > LARGE_STEP_BYTES}
    out: dict[str, np.ndarray | BlockRows] = dict(store.episode(i, [k for k in schema if k not in large]))
    for k in sorted(large):
        out[k] = BlockRows(store, k, meta["start"], meta["end"], schema[k][0], schema[k][1])
    return out


def camera_keys(schema: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[list[str], list[str]]:
    """(colour keys, depth keys) of a store schema: `<camera>_rgb` (H, W, 3) uint8 and `<camera>_depth` (H, W)
    uint16 in mm (data/README.md, "Conventional keys")."""
    rgb = sorted(k for k, (shape, dt) in schema.items() if k.endswith("_rgb") and len(shape) == 3 and shape[2] == 3
                 and np.dtype(dt) == np.uint8)
    depth = sorted(k for k, (shape, dt) in schema.items() if k.endswith("_depth") and len(shape) == 2
                   and np.dtype(dt) == np.uint16)
    return rgb, depth


def camera_name(key: str) -> str:
    """`front_rgb` -> `front`, `wrist_depth` -> `wrist`."""
    return key.rsplit("_", 1)[0]


def infer_fps(store: EpisodeStore, episodes: Sequence[int], fps: float | None) -> float:
    """The control rate (Hz): `fps` when given, else 1 / the median step of the stored `timestamp`s."""
    if fps is not None:
        if not (np.isfinite(fps) and fps > 0):
            raise ConfigError(f"--fps must be a positive number of steps per second, got {fps}")
        return float(fps)
    if "timestamp" not in store.schema():
        raise ConfigError(f"{store.path} records no `timestamp` key, so its control rate is unknown: pass --fps "
                          "(steps per second)")
    steps = []
    for i in episodes:
        t = store.episode(i, ["timestamp"])["timestamp"]
        steps.append(np.diff(t))
    dt = np.concatenate(steps) if steps else np.zeros(0)
    dt = dt[dt > 0]
    if dt.size == 0:
        raise ConfigError(f"{store.path}: the selected episodes have no increasing timestamps (one-step episodes?): "
                          "pass --fps (steps per second)")
    return float(1.0 / np.median(dt))


@dataclass(frozen=True)
class EpisodeTimes:
    """One exported episode's log times: `times` (T,) float64 seconds on the export's timeline and `offset` the
    seconds added to the stored timestamps (0 unless an earlier episode of the export ends after this one starts,
    as sim episodes that all start at t = 0 do)."""

    times: np.ndarray
    offset: float


class Timeline:
    """Lays the exported episodes one after another on one clock. An episode keeps its stored `timestamp`s when they
    start after the previous exported episode ends (a recorder's episodes do); otherwise the whole episode is shifted
    to start `gap` s after it, and the shift is reported (never hidden). Without a `timestamp` key steps are 1 / fps
    apart."""

    def __init__(self, fps: float, gap: float = 1.0):
        self.fps = float(fps)
        self.gap = float(gap)
        self._end: float | None = None

    def place(self, episode: Mapping[str, np.ndarray], length: int) -> EpisodeTimes:
        if "timestamp" in episode:
            t = np.asarray(episode["timestamp"], np.float64)
        else:
            t = np.arange(length, dtype=np.float64) / self.fps
        start = 0.0 if self._end is None else self._end + self.gap
        offset = 0.0
        if t[0] < start or (self._end is None and t[0] < 0):
            offset = start - float(t[0])
        times = t + offset
        if np.any(np.diff(times) < 0):
            log.warning("timestamps decrease inside an episode (first at step %d): exported as stored",
                        int(np.argmax(np.diff(times) < 0)) + 1)
        self._end = float(times.max())
        return EpisodeTimes(times=times, offset=offset)


def check_output(out: Path, src: str | os.PathLike, overwrite: bool, *, directory_marker: str | None = None) -> None:
    """Refuse an output inside a store (the input or any other) and, without `overwrite`, an existing path. With
    `overwrite` only an export of the same kind is replaced: a file output never replaces a directory, and a
    directory output (`directory_marker` given, e.g. "meta/info.json") replaces only an empty directory or one
    holding that marker, so --overwrite can never delete an unrelated directory."""
    refuse_inside_store(out, [src])
    if out.is_symlink():
        raise ConfigError(f"output {out} is a symlink: choose a plain path (a symlink's target is never replaced)")
    if not out.exists():
        return
    if not overwrite:
        raise ConfigError(f"output {out} already exists: pass --overwrite to replace it, or choose another path")
    if directory_marker is None and out.is_dir():
        raise ConfigError(f"output {out} is a directory; the export is one file: choose a file path")
    if directory_marker is not None:
        if not out.is_dir():
            raise ConfigError(f"output {out} is a file; the export is a directory: choose another path")
        if any(out.iterdir()) and not (out / directory_marker).is_file():
            raise ConfigError(f"output {out} is a non-empty directory without {directory_marker}, so not an earlier "
                              "export: --overwrite replaces only that; choose another path")


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to write; on success it replaces `out` (a file, or a directory moved aside
    and deleted only after the new one is in place), on failure it is removed and `out` is left as it was."""
    with storage_errors(f"creating the directory of {out}"):
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out)
    try:
        yield tmp
        with storage_errors(f"moving the export into place at {out}"):
            if out.is_dir():
                old = temporary_sibling(out)
                os.rename(out, old)
                os.rename(tmp, out)
                shutil.rmtree(old)
            else:
                os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        raise
