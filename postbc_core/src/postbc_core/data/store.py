"""Zarr episode store: one on-disk format for demonstrations, policy rollouts and RL replay.

`EpisodeStore` opens, reads, recovers and closes a store; `EpisodeWriter` (writer.py) records one episode into it.
This module is the store's public home: `from postbc_core.data.store import EpisodeStore` (or `from postbc_core.data
import ...`). Its parts live beside it in postbc_core/data/:

    layout.py       the on-disk format (arrays, metadata fields, chunking, the committed prefix, root attributes)
    zarr_compat.py  every zarr call: zarr-python 2 / 3 differences, damaged arrays and chunks as StoreError
    paths.py        one store one name (symlinks resolved); nothing written inside a store; foreign entries
    lock.py         the single-writer lock `<store>.lock`
    recovery.py     backups of in-place rewrites, temporaries, the report of an uncommitted tail
    writer.py       EpisodeWriter: buffering, background block writes, commit / discard

Crash safety: every file is written to a temporary name and renamed into place, so a chunk is either
its old or its new content. An episode becomes visible only when its `meta/episode_ends` entry is
written, after its data and metadata; anything past the last committed episode is dropped on the next
open in append mode (`EpisodeStore.recovery` says what). One writer at a time: a `<store>.lock` file
next to the store holds an exclusive `flock`, which the kernel releases if the writer dies. A rewrite killed
between its two renames leaves a backup, which opening the store puts back (recovery.py). A damaged chunk or array
raises StoreError naming it (`postbc data validate` lists them all).

One store, one name: the lock, backups, temporaries and in-place rewrites use the real path (symlinks resolved), so
a writer through a symlink and one through the store itself exclude each other.

Readers during an in-place rewrite: zarr reads chunks by path, so a reader open across the directory swap would mix
the old episode boundaries with the new rows (or zero fill while neither is in place). Every store gets a random
`store_id` when it is created; a read-only store re-reads it after each read and raises StoreError ("was rewritten
in place ... open the store again") when it changed or the store is gone, so a read returns either data of the store
that was opened or a named error. Appends keep the id (they only add past the committed prefix).

Shape legend: T steps of one episode, T_total steps of the whole store, N episodes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from postbc_core.data.codecs import codec_for_key, codec_of_array, describe_choice, image_compressor, parse_codecs
from postbc_core.data.layout import (
    CODECS_ATTR,
    EE_DELTA_CONVENTION,
    EE_DELTA_CONVENTION_ATTR,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FIELDS,
    SOURCES,
    STRING_META,
    analyze_layout,
    check_format_attrs,
    create_data_array,
    create_meta_array,
    overrun_message,
    success_code,
    success_name,
)
from postbc_core.data.lock import WriterLock, owner_alive, read_lock_owner
from postbc_core.data.paths import check_replaceable, real_path, refuse_inside_store
from postbc_core.data.recovery import (
    RecoveryReport,
    backup_problem,
    refuse_if_backup,
    remove_chunk_temporaries,
    remove_leftover_temporaries,
    restore_backup,
    temporaries_problem,
)
from postbc_core.data.writer import DEFAULT_FLUSH_BYTES, EpisodeWriter
from postbc_core.data.zarr_compat import group_arrays_checked, has_member, open_group, read_rows, resize
from postbc_core.errors import StoreError, StoreValidationError, storage_errors

# The names users' code imports from here (the module path README and data/README document); the recorder node reads
# the format constants SOURCES, STRING_META and DEFAULT_FLUSH_BYTES from here too.
__all__ = [
    "DEFAULT_FLUSH_BYTES", "FORMAT_VERSION", "SOURCES", "STRING_META", "EpisodeStore", "EpisodeWriter",
    "MissingKeyError", "RecoveryReport",
]

log = logging.getLogger(__name__)

# Test hook: called with a point name ("flushed", "meta_written", "episode_ends_resized") during
# writes, so a test can kill the process exactly there. Never set outside tests.
_TEST_HOOK: Callable[[str], None] | None = None


def _hook(point: str) -> None:
    if _TEST_HOOK is not None:
        _TEST_HOOK(point)


def _version_string() -> str:
    try:
        from importlib.metadata import version

        return f"postbc_core {version('postbc-core')}"
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "postbc_core unknown"


class MissingKeyError(StoreError, KeyError):
    """A data key that the store does not record."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class EpisodeStore:
    """A zarr episode store (see the module docstring). Use `create` / `open`, then close (or `with`). Episodes are
    recorded by an EpisodeWriter (`episode_writer`, `add_episode`), which reaches the arrays only through the
    writer API at the end of this class."""

    FORMAT_VERSION = FORMAT_VERSION

    def __init__(self, path: Path, mode: str, root, lock: WriterLock | None):
        self.path = path
        self.mode = mode
        self._root = root
        self._lock = lock
        self._writer: EpisodeWriter | None = None
        self._closed = False
        self.recovery: RecoveryReport | None = None
        attrs = dict(root.attrs)
        self.attrs = attrs
        self.is_postbc = attrs.get("format") == FORMAT_NAME
        self._store_id = attrs.get("store_id")
        self._load_state()
        self._check_not_rewritten()  # a rewrite that swapped the directory while this opened it

    # ---- construction ----
    @classmethod
    def create(cls, path: str | os.PathLike, *, overwrite: bool = False,
               codecs: str | Mapping[str, str] | None = None,
               ee_delta_convention: str | None = EE_DELTA_CONVENTION) -> EpisodeStore:
        """Create an empty store at `path` (error if something is there, unless `overwrite`: then an existing episode
        store is replaced, and anything else there is refused). Through a symlink the store is created in the
        link's target. `codecs`: how camera keys are compressed (data/codecs.py: "jpeg", {"front_rgb": "jpeg:85"},
        ...; None = raw), recorded in the store and fixed by its first episode. ee_delta_convention: recorded as
        the EE_DELTA_CONVENTION_ATTR attribute (layout.py); None = unknown (a copy of a store that does not say)."""
        path = Path(path)
        choice = parse_codecs(codecs)  # an unknown codec is refused before anything is created
        for codec in set(choice.values()):
            image_compressor(codec)  # and one whose package is missing
        refuse_inside_store(path, what="store")  # before the lock: it would create its file (and directories) there
        lock = WriterLock(path)
        lock.acquire()
        try:
            with storage_errors(f"creating the store {path}"):
                return cls._create_locked(path, lock, overwrite, choice, ee_delta_convention)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create_locked(cls, path: Path, lock: WriterLock, overwrite: bool, choice: dict[str, str],
                       ee_delta_convention: str | None = EE_DELTA_CONVENTION) -> EpisodeStore:
        real = real_path(path)
        refuse_if_backup(path)
        remove_leftover_temporaries(path)
        if real.exists():
            if not overwrite:
                raise StoreError(f"{path} already exists: pass overwrite=True to replace it, or pick a new path")
            check_replaceable(path, real)
            log.warning("%s: overwriting the existing store", path)
            shutil.rmtree(real)
        root = open_group(real, "w")
        root.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_by": _version_string(),
                           "store_id": uuid.uuid4().hex, CODECS_ATTR: choice})
        if ee_delta_convention is not None:
            root.attrs[EE_DELTA_CONVENTION_ATTR] = ee_delta_convention
        root.require_group("data")
        meta = root.require_group("meta")
        for name in ("episode_ends", *META_FIELDS):
            create_meta_array(meta, name)
        return cls(path, "a", root, lock)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *,
             codecs: str | Mapping[str, str] | None = None) -> EpisodeStore:
        """Open a store: mode "r" read-only, "a" append (creates the store if missing; recovers a tail). `codecs`
        (append mode): the camera codecs of a store created here; for an existing store they must match what it
        records (a store's codecs are fixed by its first episode), None = whatever it records."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise StoreError(f"mode {mode!r} is not supported: use 'r' (read-only) or 'a' (append)")
        if codecs is not None and mode != "a":
            raise StoreError("codecs apply to writing: open the store with mode='a', or leave codecs unset")
        choice = parse_codecs(codecs) if codecs is not None else None
        restore_backup(path)
        if mode == "a" and not path.exists():
            return cls.create(path, codecs=codecs)
        if not path.exists():
            raise StoreError(f"{path}: no episode store here (check the path; open with mode='a' to create one)")
        if path.is_file():
            raise StoreError(f"{path} is a file, not a store directory (zip stores: use `postbc data import`)")
        lock = None
        if mode == "a":
            lock = WriterLock(path)
            lock.acquire()
        try:
            try:
                root = open_group(path, "r" if mode == "r" else "r+")
            except Exception as exc:
                raise StoreError(f"{path}: not a zarr group ({type(exc).__name__}: {exc})") from exc
            errors, _warn, is_postbc = check_format_attrs(dict(root.attrs), path)
            if errors:
                raise StoreValidationError(path, errors)
            if mode == "a" and not is_postbc:
                raise StoreError(
                    f"{path} has no postbc format attributes (a plain diffusion_policy store?): convert it with "
                    "`postbc data import` before appending to it"
                )
            missing = [p for p in ("data", "meta") if not has_member(root, p)]
            if not missing and not has_member(root["meta"], "episode_ends"):
                missing.append("meta/episode_ends")
            if missing:
                raise StoreValidationError(path, [f"missing {m} (not an episode store, or a damaged one)" for m in missing])
            if mode == "a":
                remove_leftover_temporaries(path)
            store = cls(path, mode, root, lock)
            if mode == "a":
                store.check_ee_delta_convention("appending to")
            store._recover()
            if choice is not None:
                store._set_codecs(choice)
            for note in (backup_problem(path), temporaries_problem(path) if mode == "r" else None):
                if note:
                    log.warning("%s", note)
            return store
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @property
    def ee_delta_convention(self) -> str | None:
        """What data/cmd_ee_delta is relative to (layout.EE_DELTA_CONVENTION_ATTR); None: the store does not say."""
        return self.attrs.get(EE_DELTA_CONVENTION_ATTR)

    def check_ee_delta_convention(self, doing: str) -> None:
        """StoreError when the store holds cmd_ee_delta in another (or an unrecorded) convention than
        EE_DELTA_CONVENTION; `doing` names the use ("training on", "appending to")."""
        if "cmd_ee_delta" not in self._arrays or self.ee_delta_convention == EE_DELTA_CONVENTION:
            return
        said = (f"says {EE_DELTA_CONVENTION_ATTR}={self.ee_delta_convention!r}" if self.ee_delta_convention is not None
                else f"was recorded before cmd_ee_delta had one meaning (no {EE_DELTA_CONVENTION_ATTR} attribute: its "
                     "twin demos' deltas were relative to the joints measured at each step)")
        raise StoreError(
            f"{self.path} {said}; every recorder and executor now chains each delta from the previous step's target "
            f"({EE_DELTA_CONVENTION!r}). Refusing {doing} it rather than reinterpreting its deltas: rewrite it with "
            f"`postbc data convert-ee-delta {self.path} --out NEW` (cmd_ee_delta recomputed from cmd_joint_pos), or "
            "record it again")

    # ---- state ----
    def _load_state(self) -> None:
        self._data = self._root["data"]
        self._meta = self._root["meta"]
        self._arrays = group_arrays_checked(self._data, "data", self.path)
        # Only the known per-episode fields (diffusion_policy stores may hold other meta arrays).
        self._meta_arrays = {k: v for k, v in group_arrays_checked(self._meta, "meta", self.path).items()
                             if k in META_FIELDS}
        self._ends_arr = self._meta["episode_ends"]
        raw = read_rows(self._ends_arr, 0, self._ends_arr.shape[0], "meta/episode_ends", self.path)
        lengths = {k: a.shape[0] for k, a in self._arrays.items()}
        an = analyze_layout(raw, lengths)
        self._analysis = an
        self._raw_ends = raw
        self._ends = raw[: an.n_committed].astype(np.int64)

    def _recover(self) -> None:
        """Refuse a damaged committed prefix; find what lies past it and, in append mode, truncate it (`recovery`
        says what)."""
        an = self._analysis
        errors = list(an.errors)
        if self._ends_arr.dtype != np.int64:
            errors.append(f"meta/episode_ends has dtype {self._ends_arr.dtype}, expected int64")
        if an.tail_end_entries and not self.is_postbc:
            errors.append(overrun_message(self._raw_ends, {k: a.shape[0] for k, a in self._arrays.items()}))
        n, steps = an.n_committed, an.committed_steps
        short = {k: a.shape[0] for k, a in self._meta_arrays.items() if a.shape[0] < n}
        for k, length in short.items():
            errors.append(f"meta/{k} has {length} rows but {n} episodes are committed")
        if errors:
            raise StoreValidationError(self.path, errors + ["run `postbc data validate` for a full report"])
        report = RecoveryReport(path=str(self.path), n_episodes=n, n_steps=steps, applied=self.mode == "a")
        report.dropped_steps = {k: a.shape[0] - steps for k, a in self._arrays.items() if a.shape[0] > steps}
        report.dropped_meta_rows = {k: a.shape[0] - n for k, a in self._meta_arrays.items() if a.shape[0] > n}
        report.dropped_episode_ends = int(self._raw_ends.shape[0]) - n
        if self.mode == "a":
            report.removed_tmp_files = remove_chunk_temporaries(self.path)
            if report.dropped_episode_ends:
                # Zero before shrinking: zarr keeps a partial chunk's bytes past the new shape, and a
                # stale value could later pass for a committed entry when the array grows again.
                self._ends_arr[n:] = 0
                resize(self._ends_arr, n)
            for k in report.dropped_meta_rows:
                resize(self._meta_arrays[k], n)
            for k in report.dropped_steps:
                resize(self._arrays[k], steps)
            self._raw_ends = self._ends.copy()
        if report.empty:
            return
        self.recovery = report
        if self.mode == "r":
            owner = read_lock_owner(self.path)
            if owner_alive(owner):
                log.info("%s: %s steps past the last committed episode are being written by pid %s",
                         self.path, max(report.dropped_steps.values(), default=0), owner.get("pid"))
                return
        log.warning("%s", report)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    def _check_not_rewritten(self) -> None:
        """Called after every read of a read-only store: an in-place rewrite by another process (`postbc data drop`)
        swaps a new directory in under the same path, and zarr reads chunks by path, so what was just read may mix
        the two stores (episode boundaries from the old one, rows from the new one, zero fill while neither is in
        place). The rewrite gives the new store a new `store_id`; the read is only returned when the directory still
        holds the store this object opened. (A writer needs no check: a rewrite holds the writer lock.)"""
        if self.mode != "r":
            return
        now = _current_store_id(self.path)
        if now is _VANISHED:
            raise StoreError(f"{self.path} vanished while open here (another process is rewriting it in place, e.g. "
                             "`postbc data drop`, or deleted it); what was read is not returned: open the store again")
        if now != self._store_id:
            raise StoreError(f"{self.path} was rewritten in place by another process while open here (e.g. `postbc "
                             "data drop`); what was read could mix the old and the new store and is not returned: "
                             "open the store again")

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only: open it with mode='a' to write")

    def _set_codecs(self, choice: dict[str, str]) -> None:
        """Record the camera codec choice of an opened (append-mode) store: refused when it differs from the codec
        of a camera array that holds frames already."""
        for key, arr in self._arrays.items():
            want = codec_for_key(choice, key)
            have = codec_of_array(arr)
            if key.endswith("_rgb") and arr.shape[0] and want != have:
                raise StoreError(f"{self.path}: data/{key} is stored as {have}, but {want} was asked for (codec "
                                 f"{describe_choice(choice)}): a store's codecs are fixed by its first episode. Record "
                                 "into a new store, or leave the codec unset to keep the store's")
        for codec in set(choice.values()):
            image_compressor(codec)
        if choice != self.codec_choice:
            self._root.attrs[CODECS_ATTR] = choice
            self.attrs[CODECS_ATTR] = choice

    @property
    def codec_choice(self) -> dict[str, str]:
        """The store's camera codec choice {key or "*": codec} (empty = raw), as given when it was created."""
        return dict(self.attrs.get(CODECS_ATTR) or {})

    def codecs(self) -> dict[str, str]:
        """data key -> codec of its chunks (data/codecs.py names: raw, jpeg:Q, jpegxl-lossless)."""
        return {k: codec_of_array(a) for k, a in sorted(self._arrays.items())}

    # ---- read API ----
    @property
    def n_episodes(self) -> int:
        return int(self._ends.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if self._ends.shape[0] else 0

    @property
    def episode_ends(self) -> np.ndarray:
        """(N,) int64 cumulative end index of each committed episode."""
        return self._ends.copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        """(N,) int64 steps per committed episode."""
        return np.diff(self._ends, prepend=0).astype(np.int64)

    @property
    def keys(self) -> list[str]:
        """Names of the data arrays (the per-step keys)."""
        return sorted(self._arrays)

    def schema(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """key -> (per-step shape, dtype)."""
        return {k: (tuple(a.shape[1:]), np.dtype(a.dtype)) for k, a in self._arrays.items()}

    def data(self, key: str):
        """The zarr array data/<key> (all steps; rows past `n_steps` are uncommitted)."""
        self._check_open()
        try:
            return self._arrays[key]
        except KeyError:
            raise MissingKeyError(f"{self.path}: no data key {key!r}; the store records {self.keys}") from None

    def __getitem__(self, key: str):
        return self.data(key)

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __len__(self) -> int:
        return self.n_episodes

    def _episode_range(self, i: int) -> tuple[int, int]:
        n = self.n_episodes
        if not -n <= i < n:
            raise StoreError(f"{self.path}: episode index {i} out of range (the store has {n} episodes)")
        i %= n
        start = int(self._ends[i - 1]) if i else 0
        return start, int(self._ends[i])

    def _select_keys(self, keys: Iterable[str] | None) -> list[str]:
        if keys is None:
            return self.keys
        keys = [keys] if isinstance(keys, str) else list(keys)
        for k in keys:
            self.data(k)
        return keys

    def _read(self, keys: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """data/<key>[start:stop] for every key, then one check that no rewrite swapped the store meanwhile."""
        out = {k: read_rows(self.data(k), start, stop, f"data/{k}", self.path) for k in keys}
        self._check_not_rewritten()
        return out

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """data/<key>[start:stop] as numpy (a damaged chunk raises StoreError naming the key and rows)."""
        self._check_open()
        return self._read([key], start, stop)[key]

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Episode `i` (negative counts from the end): key -> (T, ...) array."""
        self._check_open()
        start, end = self._episode_range(i)
        return self._read(self._select_keys(keys), start, end)

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All committed steps in memory: key -> (T_total, ...) array."""
        self._check_open()
        return self._read(self._select_keys(keys), 0, self.n_steps)

    def meta_table(self) -> dict[str, np.ndarray]:
        """Per-episode metadata arrays (committed rows only): field -> (N,) array."""
        self._check_open()
        n = self.n_episodes
        out = {k: read_rows(a, 0, n, f"meta/{k}", self.path) for k, a in self._meta_arrays.items()}
        self._check_not_rewritten()
        return out

    def episode_meta(self, i: int) -> dict[str, Any]:
        """Metadata of episode `i`: success (True/False/None), source, task, operator, start/end_time,
        start/end (step indices), length, index."""
        self._check_open()
        start, end = self._episode_range(i)
        i %= self.n_episodes
        out: dict[str, Any] = {"index": i, "start": start, "end": end, "length": end - start}
        for name, (dtype, fill) in META_FIELDS.items():
            arr = self._meta_arrays.get(name)
            value = read_rows(arr, i, i + 1, f"meta/{name}", self.path)[0] if arr is not None else fill
            if name == "success":
                value = None if int(value) < 0 else bool(int(value))
            elif dtype.kind == "U":
                value = str(value)
            else:
                value = float(value)
            out[name] = value
        self._check_not_rewritten()
        return out

    # ---- write API ----
    def set_label(self, i: int, success: bool | None) -> None:
        """Relabel episode `i`'s success after the fact (None = unknown)."""
        self._check_writable()
        self._episode_range(i)
        i %= self.n_episodes
        value = success_code(success)
        old = int(self._meta_arrays["success"][i])
        self._meta_arrays["success"][i] = value
        log.info("%s: episode %d success label %s -> %s", self.path, i, success_name(old), success_name(value))

    def episode_writer(self, *, task: str = "", source: str = "", operator: str = "",
                       start_time: float | None = None, flush_bytes: int = DEFAULT_FLUSH_BYTES,
                       background: bool = True) -> EpisodeWriter:
        """Start recording an episode (start_time None = now). Use as a context manager: commits on a
        normal exit, discards on an exception. Full blocks of ~flush_bytes are written to disk by a
        worker thread when `background` (see EpisodeWriter)."""
        self._check_writable()
        if self._writer is not None and self._writer.is_open:
            raise StoreError(f"{self.path}: an episode writer is already open; commit() or discard() it first")
        self._writer = EpisodeWriter(self, task=task, source=source, operator=operator,
                                     start_time=time.time() if start_time is None else float(start_time),
                                     flush_bytes=flush_bytes, background=background)
        return self._writer

    def add_episode(self, data: Mapping[str, np.ndarray], *, success: bool | None = None, task: str = "",
                    source: str = "", operator: str = "", start_time: float | None = None,
                    end_time: float | None = None) -> int:
        """Write a whole episode (key -> (T, ...) array) and commit it; returns its index.
        Unknown times (None) are stored as NaN."""
        self._check_writable()
        lengths = {k: (np.shape(v)[0] if np.ndim(v) else None) for k, v in dict(data).items()}
        if lengths and 0 in lengths.values():
            raise StoreError(f"{self.path}: add_episode() got an episode with 0 steps (leading lengths {lengths}); an "
                             "episode needs at least one step")
        w = self.episode_writer(task=task, source=source, operator=operator,
                                start_time=math.nan if start_time is None else start_time)
        try:
            w.extend(data)
            return w.commit(success, end_time=math.nan if end_time is None else end_time)
        except BaseException:
            if w.is_open:
                w.discard()
            raise

    # ---- lifecycle ----
    def close(self) -> None:
        """Discard an open writer's uncommitted steps (with a warning) and release the lock."""
        if self._closed:
            return
        try:
            if self._writer is not None and self._writer.is_open:
                log.warning("%s: closing with an open episode writer: discarding its %d uncommitted step(s)",
                            self.path, self._writer.n_steps)
                self._writer.discard()
        finally:
            self._closed = True
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            if not self._closed and self._lock is not None:
                self._lock.release()

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, mode={self.mode!r}, episodes={self.n_episodes}, steps={self.n_steps})"

    # ---- writer API: with path, n_steps, n_episodes, schema() and _check_writable(), the only store members
    # EpisodeWriter uses. The store owns every array on disk, the writer the episode in memory. ----
    def _prepare_arrays(self, schema: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        """Create the data arrays for the first committed episode's schema, key -> (per-step shape, dtype)
        (replacing empty leftovers)."""
        for key, (shape, dtype) in schema.items():
            arr = self._arrays.get(key)
            codec = codec_for_key(self.codec_choice, key)
            if arr is not None and (tuple(arr.shape[1:]) != shape or arr.dtype != dtype
                                    or (key.endswith("_rgb") and codec_of_array(arr) != codec)):
                if self.n_episodes or arr.shape[0]:
                    raise StoreError(f"{self.path}: data/{key} exists with another shape/dtype/codec")
                del self._data[key]
                arr = None
            if arr is None:
                self._arrays[key] = create_data_array(self._data, key, shape, dtype, codec=codec)
        for key in [k for k in self._arrays if k not in schema]:
            if self.n_episodes or self._arrays[key].shape[0]:
                raise StoreError(f"{self.path}: data/{key} is recorded but missing from this episode")
            del self._data[key]
            del self._arrays[key]

    def _write_rows(self, blocks: Mapping[str, np.ndarray], at: int, n: int) -> None:
        """Append uncommitted rows: data/<key>[at:at + n] = blocks[key] ((n, ...) each), where every array now ends
        at `at`. Runs in the writer's worker thread when it writes in the background."""
        with storage_errors(f"writing an episode to {self.path} (committed episodes are untouched)"):
            for key in sorted(blocks):
                arr = self._arrays[key]
                if arr.shape[0] != at:
                    raise StoreError(f"{self.path}: data/{key} has {arr.shape[0]} rows, expected {at}: "
                                     "was the store modified by someone else?")
                resize(arr, at + n)
                try:
                    arr[at: at + n] = blocks[key]
                except (StoreError, OSError):
                    raise
                except Exception as exc:  # a partial chunk is read back to be extended: it may be damaged
                    raise StoreError(f"{self.path}: cannot append to data/{key} at rows {at}..{at + n - 1}: "
                                     f"{type(exc).__name__}: {exc}; the existing chunk there is probably damaged: "
                                     f"`postbc data validate {self.path}` lists every damaged array (committed "
                                     "episodes are untouched)") from None
            _hook("flushed")

    def _truncate_rows(self, keys: Iterable[str], length: int) -> None:
        """Cut data/<key> for each of `keys` back to `length` rows (an episode's uncommitted rows discarded)."""
        for key in keys:
            arr = self._arrays.get(key)
            if arr is not None and arr.shape[0] > length:
                resize(arr, length)

    def _commit_episode(self, end: int, meta: Mapping[str, Any]) -> int:
        """Commit the rows up to `end` (every data array must end there) as a new episode: write its metadata
        (`meta`: a value for each of META_FIELDS), then its `meta/episode_ends` entry, the commit point. Returns the
        new episode's index."""
        with storage_errors(f"committing an episode to {self.path} (committed episodes are untouched)"):
            try:
                return self._commit_unchecked(end, meta)
            except (StoreError, OSError):
                raise
            except Exception as exc:  # the metadata chunks are read back to be extended: one may be damaged
                raise StoreError(f"{self.path}: cannot commit the episode: {type(exc).__name__}: {exc}; a "
                                 f"metadata chunk is probably damaged: `postbc data validate {self.path}` "
                                 "lists every damaged array (committed episodes are untouched)") from None

    def _commit_unchecked(self, end: int, meta: Mapping[str, Any]) -> int:
        for key, arr in self._arrays.items():
            if arr.shape[0] != end:
                raise StoreError(f"{self.path}: data/{key} has {arr.shape[0]} rows, expected {end} before commit")
        n = self.n_episodes
        for name in META_FIELDS:
            arr = self._meta_arrays.get(name)
            if arr is None:  # a store created by an older writer without this field: add it
                arr = self._meta_arrays[name] = create_meta_array(self._meta, name, length=n)
            resize(arr, n + 1)
            arr[n] = meta[name]
        _hook("meta_written")
        resize(self._ends_arr, n + 1)
        _hook("episode_ends_resized")
        self._ends_arr[n] = end
        self._ends = np.append(self._ends, np.int64(end))
        self._raw_ends = self._ends
        return n


_VANISHED = object()


def _current_store_id(path: Path):
    """The `store_id` root attribute on disk now (None for stores written before it existed and foreign stores), or
    _VANISHED when the directory no longer holds a zarr group."""
    try:
        if (path / ".zgroup").is_file():
            attrs = json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").is_file() else {}
        else:
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except FileNotFoundError:
        return _VANISHED
    except (OSError, ValueError, AttributeError):
        return _VANISHED  # half-visible metadata: the same as gone for a reader
    return attrs.get("store_id") if isinstance(attrs, dict) else None
