"""EpisodeWriter: streams one episode into an EpisodeStore, buffering steps, flushing blocks (in a worker thread)
and committing or discarding the episode.

The writer owns the episode in memory: checking each step against the store's schema (key set, per-step shape,
dtype, finite values), the buffer, the background block writes, and the open / committed / discarded lifecycle. The
store owns every array on disk; the writer changes them only through the store's writer API (`WriterTarget`):
`_check_writable`, `_prepare_arrays`, `_write_rows`, `_truncate_rows` and `_commit_episode`, besides the public
`path`, `n_steps`, `n_episodes` and `schema()`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from postbc_core.data.layout import SOURCES, STRING_META, check_dtype, check_key_name, finite_rows, success_code
from postbc_core.errors import StoreError



class WriterTarget(Protocol):
    """The store as a writer sees it: the narrow API between EpisodeStore and EpisodeWriter (the store creates
    writers and implements this; the writer never imports the store)."""

    path: Path

    @property
    def n_episodes(self) -> int: ...

    @property
    def n_steps(self) -> int: ...

    def schema(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]: ...

    def _check_writable(self) -> None: ...

    def _prepare_arrays(self, schema: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None: ...

    def _write_rows(self, blocks: Mapping[str, np.ndarray], at: int, n: int) -> None: ...

    def _truncate_rows(self, keys: Iterable[str], length: int) -> None: ...

    def _commit_episode(self, end: int, meta: Mapping[str, Any]) -> int: ...

log = logging.getLogger(__name__)

DEFAULT_FLUSH_BYTES = 32 << 20  # steps are handed to the disk writer in blocks of ~32 MiB
# Two blocks may wait for the disk writer: on a busy 2-core machine its thread is sometimes starved for longer than
# one block takes to fill (~0.6 s with two 640x480 cameras at 30 Hz), and with one the recording tick then waited
# and lost camera frames (benchmarks/bench_storage.py). Memory: up to ~3 x flush_bytes.
MAX_IN_FLIGHT = 2


def _first_nonfinite(arr: np.ndarray) -> int | None:
    """Index along axis 0 of the first row holding NaN/inf, or None."""
    if arr.dtype.kind != "f":
        return None
    ok = finite_rows(arr)
    if ok.all():
        return None
    return int(np.argmin(ok))


class EpisodeWriter:
    """Streams one episode into the store: steps are buffered and flushed to the data arrays in
    blocks of ~`flush_bytes`; `commit` has the store write the metadata and then `meta/episode_ends` (the commit
    point). Made by `EpisodeStore.episode_writer` (or `add_episode`), one open writer per store.

    With `background=True` (default) a full block is written by a worker thread while recording goes
    on (so `append` does not stall a recorder loop for the ~1 s an image block takes); at most
    MAX_IN_FLIGHT blocks are queued or being written, so memory stays below ~(MAX_IN_FLIGHT + 1) x flush_bytes. A
    failed background write re-raises on the next call.
    """

    def __init__(self, store: WriterTarget, *, task: str, source: str, operator: str, start_time: float,
                 flush_bytes: int, background: bool = True):
        for name, value in (("task", task), ("source", source), ("operator", operator)):
            if not isinstance(value, str):
                raise StoreError(f"{name} must be a string, got {type(value).__name__}")
            if len(value) > STRING_META[name]:
                raise StoreError(f"{name} is {len(value)} characters long; the store keeps at most {STRING_META[name]}")
        if source and source not in SOURCES:
            raise StoreError(f"source {source!r} is not one of {', '.join(SOURCES)} (or '' for unknown)")
        self._store = store
        self._meta = {"task": task, "source": source, "operator": operator, "start_time": float(start_time)}
        self._flush_bytes = int(flush_bytes)
        self._start = store.n_steps
        self._schema: dict[str, tuple[tuple[int, ...], np.dtype]] | None = store.schema() if store.n_episodes else None
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffered = 0  # steps in self._buffer
        self._buffered_bytes = 0
        self._n_total = 0  # steps recorded (buffered, in flight or on disk)
        self._queued = 0  # steps handed to the disk writer (in flight or on disk)
        self._written = 0  # steps on disk
        self._touched: set[str] = set()
        self._background = bool(background)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()  # handed-off blocks, oldest first (one worker writes them in order)
        self._state = "open"

    @property
    def n_steps(self) -> int:
        """Steps recorded so far (on disk + buffered)."""
        return self._n_total

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"{self._store.path}: this episode writer is already {self._state}")
        self._store._check_writable()

    def _coerce(self, key: str, value: Any, leading: int) -> np.ndarray:
        """Array for `key` with `leading` time axes (0 per step, 1 for blocks); checks dtype/shape/finite."""
        is_numpy = isinstance(value, (np.ndarray, np.generic))
        arr = np.asarray(value)
        spec = self._schema.get(key) if self._schema is not None else None
        if spec is not None and not is_numpy and arr.dtype != spec[1]:
            # Plain Python numbers/lists carry no dtype of their own: cast when the kind allows.
            if not np.can_cast(arr.dtype, spec[1], casting="same_kind"):
                raise StoreError(f"key {key!r}: value of type {arr.dtype} cannot be stored as {spec[1]}")
            arr = arr.astype(spec[1])
        step_shape = tuple(arr.shape[leading:])
        if spec is None:
            check_key_name(key)
            check_dtype(key, arr.dtype)
            if key.endswith("_rgb") and (arr.dtype != np.uint8 or len(step_shape) != 3 or step_shape[-1] != 3):
                raise StoreError(f"key {key!r}: '*_rgb' keys hold uint8 images of per-step shape (H, W, 3), got "
                                 f"shape {step_shape} dtype {arr.dtype} (convert, or use another key name)")
        if spec is not None and (step_shape != spec[0] or arr.dtype != spec[1]):
            raise StoreError(
                f"key {key!r}: expected per-step shape {spec[0]} dtype {spec[1]} (fixed by the store's first "
                f"episode), got shape {step_shape} dtype {arr.dtype}"
            )
        return arr

    def _check_keys(self, keys: Iterable[str]) -> None:
        if self._schema is None:
            return
        got, want = set(keys), set(self._schema)
        if got != want:
            missing, extra = sorted(want - got), sorted(got - want)
            msg = [f"step {self.n_steps}: keys do not match the store's key set {sorted(want)}"]
            if missing:
                msg.append(f"missing {missing}")
            if extra:
                msg.append(f"unexpected {extra}")
            raise StoreError(f"{self._store.path}: " + "; ".join(msg))

    def append(self, **step: Any) -> None:
        """Record one time step: key -> per-step array (no time axis)."""
        self.append_step(step)

    def append_step(self, step: Mapping[str, Any]) -> None:
        """Record one time step: key -> per-step array (no time axis)."""
        self._check_open()
        if not step:
            raise StoreError("append_step() got an empty step")
        self._check_keys(step)
        arrays = {k: self._coerce(k, v, 0) for k, v in step.items()}
        for k, a in arrays.items():
            if _first_nonfinite(a[None]) is not None:
                raise StoreError(f"key {k!r}: step {self.n_steps} holds NaN/inf; non-finite values are not stored "
                                 "(the step was rejected; committed episodes are untouched)")
        self._add({k: np.array(a)[None] for k, a in arrays.items()}, 1)

    def extend(self, steps: Mapping[str, Any]) -> None:
        """Record several steps: key -> (T, ...) array, the same T for every key."""
        self._check_open()
        if not steps:
            raise StoreError("extend() got no keys")
        self._check_keys(steps)
        arrays = {k: self._coerce(k, v, 1) for k, v in steps.items()}
        lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            raise StoreError(f"extend(): every key needs the same leading time length, got {lengths}")
        for k, a in arrays.items():
            bad = _first_nonfinite(a)
            if bad is not None:
                raise StoreError(f"key {k!r}: step {self.n_steps + bad} holds NaN/inf; non-finite values are not "
                                 "stored (none of these steps were recorded; committed episodes are untouched)")
        n = next(iter(lengths.values()))
        if n == 0:
            return
        self._add({k: np.array(a) for k, a in arrays.items()}, n)

    def _add(self, arrays: dict[str, np.ndarray], n: int) -> None:
        if self._schema is None:
            self._schema = {k: (tuple(a.shape[1:]), a.dtype) for k, a in arrays.items()}
        for k, a in arrays.items():
            self._buffer.setdefault(k, []).append(a)
            self._buffered_bytes += a.nbytes
        self._buffered += n
        self._n_total += n
        if self._buffered_bytes >= self._flush_bytes:
            self._wait_pending(keep=MAX_IN_FLIGHT - 1)
            self._hand_off(background=self._background)

    def _wait_pending(self, keep: int = 0) -> None:
        """Wait for handed-off blocks, oldest first, until at most `keep` remain; re-raises a failed write."""
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def _hand_off(self, *, background: bool) -> None:
        """Move the buffer to disk (in the worker thread when `background`)."""
        if not self._buffered:
            return
        if self._store.n_episodes == 0 and self._queued == 0:
            self._store._prepare_arrays(self._schema)
        # The steps go as lists: the worker joins them, so the recorder's tick does not copy a whole block (~30 ms
        # for 32 MiB of frames on a busy 2-core machine, which cost 30 Hz camera ticks).
        blocks = self._buffer
        n, at = self._buffered, self._start + self._queued
        self._touched.update(blocks)
        self._buffer = {}
        self._buffered = self._buffered_bytes = 0
        self._queued += n
        if background:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postbc-episode-flush")
            self._pending.append(self._executor.submit(self._write_blocks, blocks, at, n))
        else:
            self._write_blocks(blocks, at, n)

    def _write_blocks(self, blocks: dict[str, list[np.ndarray]], at: int, n: int) -> None:
        """Write `n` rows per key at row `at` (the disk work of one hand-off; benchmarks time this method); `blocks`:
        key -> the buffered (k, ...) arrays, k rows each, n in all."""
        self._store._write_rows({k: np.concatenate(v, axis=0) for k, v in blocks.items()}, at, n)
        self._written = at + n - self._start

    def flush(self) -> None:
        """Write every recorded step to the data arrays now (still uncommitted); blocks until done."""
        self._check_open()
        self._wait_pending()
        self._hand_off(background=False)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def commit(self, success: bool | None = None, *, end_time: float | None = None) -> int:
        """Flush, then have the store write the episode's metadata and `meta/episode_ends` (the commit point).
        Returns the new episode's index. end_time None = now."""
        self._check_open()
        code = success_code(success)
        if self.n_steps == 0:
            raise StoreError(f"{self._store.path}: cannot commit an empty episode (no steps); discard() it instead")
        self.flush()
        self._shutdown()
        meta = dict(self._meta, success=code, end_time=time.time() if end_time is None else float(end_time))
        index = self._store._commit_episode(self._start + self._written, meta)
        self._state = "committed"
        log.debug("%s: committed episode %d (%d steps)", self._store.path, index, self.n_steps)
        return index

    def discard(self) -> None:
        """Drop this episode's steps (flushed ones are truncated from the data arrays)."""
        if self._state != "open":
            return
        while self._pending:
            with contextlib.suppress(Exception):  # a failed block write is moot: we truncate anyway
                self._wait_pending()
        self._shutdown()
        self._store._truncate_rows(self._touched, self._start)
        if self.n_steps:
            log.info("%s: discarded an uncommitted episode of %d step(s)", self._store.path, self.n_steps)
        self._buffer.clear()
        self._buffered = self._buffered_bytes = self._n_total = self._queued = self._written = 0
        self._state = "discarded"

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state != "open":
            return
        if exc_type is not None:
            self.discard()
        elif self.n_steps == 0:
            log.warning("%s: episode writer closed with no steps: nothing committed", self._store.path)
            self.discard()
        else:
            self.commit()
