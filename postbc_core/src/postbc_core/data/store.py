"""Zarr episode store: one on-disk format for demonstrations, policy rollouts and RL replay.

Layout (zarr format 2, readable by zarr-python 2 and 3 and by diffusion_policy's ReplayBuffer):

    <store>/.zattrs              {"format": "postbc-episodes", "format_version": 1, "created_by": ..., "store_id": ...}
    <store>/data/<key>           (T_total, ...) every step of every episode, concatenated along axis 0
    <store>/meta/episode_ends    (N,) int64 cumulative end index of each episode (written LAST on commit)
    <store>/meta/<field>         (N,) per-episode metadata: success, source, task, operator, start/end_time

Shape legend: T steps of one episode, T_total steps of the whole store, N episodes.

Crash safety: every file is written to a temporary name and renamed into place, so a chunk is either
its old or its new content. An episode becomes visible only when its `meta/episode_ends` entry is
written, after its data and metadata; anything past the last committed episode is dropped on the next
open in append mode (`EpisodeStore.recovery` says what). One writer at a time: a `<store>.lock` file
next to the store holds an exclusive `flock`, which the kernel releases if the writer dies.

In-place rewrites (`postbc data drop` without --out) build the result beside the store, rename the store to a
backup `.<name>.old-*` and the result into place. A rewrite killed between the two renames leaves only the backup:
opening the store puts the backup back (`restore_backup`), and nothing creates a fresh store over a path that has
a backup. A damaged chunk or array raises StoreError naming it (`postbc data validate` lists them all).

One store, one name: the lock, backups, temporaries and in-place rewrites use the real path (symlinks resolved), so
a writer through a symlink and one through the store itself exclude each other. A store directory holds the store
and nothing else: no store is created inside another (`refuse_inside_store`), and `overwrite` and in-place rewrites
refuse a directory holding anything that is not part of the store (`foreign_entries`) instead of deleting it.

Readers during an in-place rewrite: zarr reads chunks by path, so a reader open across the directory swap would mix
the old episode boundaries with the new rows (or zero fill while neither is in place). Every store gets a random
`store_id` when it is created; a read-only store re-reads it after each read and raises StoreError ("was rewritten
in place ... open the store again") when it changed or the store is gone, so a read returns either data of the store
that was opened or a named error. Appends keep the id (they only add past the committed prefix).

Temporaries (`.<name>.tmp-<pid>-<hex>`, built beside their destination) exist only while their writer holds the
destination's writer lock, so any found beside an unlocked path were left by a killed run: the next writer of that
path removes them and readers name them (`temporaries_problem`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import logging
import math
import os
import re
import shutil
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

from postbc_core.errors import StoreError, StoreValidationError, storage_error, storage_errors

log = logging.getLogger(__name__)

FORMAT_NAME = "postbc-episodes"
FORMAT_VERSION = 1
SOURCES = ("teleop", "policy", "finetune", "scripted", "import", "synthetic")
"""Accepted values of the per-episode `source` field ("" means unknown)."""

# Fixed-width unicode meta fields: (dtype, max characters). Fixed width (not variable-length object
# strings) because `<U` round-trips through zarr-python 2 and 3 with zarr_format=2 without an object
# codec; the width is fixed when the store is created, so longer values are refused, not truncated.
STRING_META = {"source": 16, "task": 256, "operator": 64}
META_FIELDS: dict[str, tuple[np.dtype, Any]] = {
    "success": (np.dtype(np.int8), -1),
    "source": (np.dtype(f"<U{STRING_META['source']}"), ""),
    "task": (np.dtype(f"<U{STRING_META['task']}"), ""),
    "operator": (np.dtype(f"<U{STRING_META['operator']}"), ""),
    "start_time": (np.dtype(np.float64), math.nan),
    "end_time": (np.dtype(np.float64), math.nan),
}
META_CHUNK = 1024  # rows per chunk of the per-episode arrays
LOWDIM_CHUNK_BYTES = 1 << 20  # ~1 MiB time chunks for low-dim arrays
DEFAULT_FLUSH_BYTES = 32 << 20  # a writer keeps at most ~32 MiB of steps in memory
TMP_SUFFIX = ".postbc-tmp"

ZARR_MAJOR = int(zarr.__version__.split(".")[0])

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


# ----------------------------------------------------------------------------------------------
# zarr 2 / zarr 3 compatibility (the robot's ROS Humble Python 3.10 gets zarr 2; zarr 3 needs 3.11)
# ----------------------------------------------------------------------------------------------

def _atomic_write_bytes(path: Path, data) -> None:
    """Write `data` to `path` via a temporary file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


if ZARR_MAJOR >= 3:
    import asyncio

    from zarr.storage import LocalStore as _LocalStore

    class AtomicLocalStore(_LocalStore):
        """zarr 3 LocalStore whose every write is tmp file + os.replace (a killed writer leaves
        either the old or the new chunk, never a torn one), whatever the installed zarr 3 does."""

        async def _set(self, key: str, value, exclusive: bool = False) -> None:
            if not self._is_open:
                await self._open()
            self._check_writable()
            path = self.root / key
            if exclusive and path.exists():
                return
            await asyncio.to_thread(_atomic_write_bytes, path, value.as_buffer_like())

    def _open_group(path: Path, mode: str):
        if mode == "r":
            return zarr.open_group(store=_LocalStore(path, read_only=True), mode="r")
        return zarr.open_group(store=AtomicLocalStore(path), mode=mode, zarr_format=2)

    def _create_array(group, name, *, shape, chunks, dtype, compressor, fill_value):
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype,
            compressors=compressor if compressor is not None else None, fill_value=fill_value,
        )

    def array_compressor(arr) -> str:
        comps = getattr(arr, "compressors", ())
        return ", ".join(repr(c) for c in comps) if comps else "none"

    def array_nbytes_stored(arr) -> int:
        return int(arr.nbytes_stored())

    def open_zip_group(path: Path):
        from zarr.storage import ZipStore

        return zarr.open_group(store=ZipStore(path, mode="r"), mode="r")

else:  # zarr-python 2: DirectoryStore already writes via a temporary file + os.replace
    def _open_group(path: Path, mode: str):
        return zarr.open_group(zarr.DirectoryStore(str(path)), mode=mode)

    def _create_array(group, name, *, shape, chunks, dtype, compressor, fill_value):
        return group.create_dataset(
            name, shape=shape, chunks=chunks, dtype=dtype, compressor=compressor, fill_value=fill_value,
        )

    def array_compressor(arr) -> str:
        return repr(arr.compressor) if arr.compressor is not None else "none"

    def array_nbytes_stored(arr) -> int:
        return int(arr.nbytes_stored)

    def open_zip_group(path: Path):
        return zarr.open_group(zarr.ZipStore(str(path), mode="r"), mode="r")


def open_group_readonly(path: str | os.PathLike):
    """Open a zarr group read-only: a directory store, or a zip store when the path ends in .zip."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store (check the path)")
    if path.is_file() and path.suffix == ".zip":
        return open_zip_group(path)
    try:
        return _open_group(path, "r")
    except Exception as exc:  # zarr raises several types for "not a group"
        raise StoreError(f"{path}: not a zarr group ({type(exc).__name__}: {exc})") from exc


def _group_arrays(group) -> dict[str, Any]:
    return {name: group[name] for name in sorted(group.array_keys())}


def _group_dir(group) -> Path | None:
    """The directory of a zarr group in a local directory store, else None."""
    root = getattr(getattr(group, "store", None), "root", None)  # zarr 3 LocalStore
    if root is None and hasattr(group, "store") and hasattr(group.store, "path"):  # zarr 2 DirectoryStore
        root = Path(group.store.path)
    if root is None:
        return None
    return Path(root) / group.path if group.path else Path(root)


def array_names(group) -> list[str]:
    """Member names of a zarr group that look like arrays, from the directory listing when there is one (so an
    array with malformed metadata, or one written in another zarr format, is still listed; zarr would fail on the
    whole group or skip it)."""
    d = _group_dir(group)
    if d is not None and (d / ".zgroup").is_file():  # zarr format 2 (every postbc store)
        return sorted(p.name for p in d.iterdir() if (p / ".zarray").exists() or (p / "zarr.json").exists())
    return sorted(group.array_keys())


def open_array(group, name: str, where: str, store_path):
    """group[name]; metadata that cannot be parsed raises StoreError naming the array."""
    d = _group_dir(group)
    if d is not None and (d / ".zgroup").is_file() and (d / name / "zarr.json").is_file() \
            and not (d / name / ".zarray").is_file():
        raise StoreError(f"{store_path}: {where}/{name} is a zarr format 3 array (zarr.json) inside this zarr format 2 "
                         f"store, so zarr does not see it; rewrite it as format 2 (zarr.open_group(..., zarr_format=2)) "
                         "or restore the store from a copy")
    try:
        return group[name]
    except Exception as exc:
        raise StoreError(f"{store_path}: {where}/{name} has unreadable array metadata (.zarray: {type(exc).__name__}: "
                         f"{exc}); the store is damaged: `postbc data validate {store_path}` lists every problem; "
                         "restore the store from a copy") from None


def group_arrays_checked(group, where: str, store_path) -> dict[str, Any]:
    """{name: array} of a group, raising StoreError that names the first array whose metadata is damaged."""
    return {name: open_array(group, name, where, store_path) for name in array_names(group)}


def _has(group, name: str) -> bool:
    try:
        return name in group
    except Exception:
        return False


def is_image_like(step_shape: tuple[int, ...]) -> bool:
    """Per-step arrays with 2+ dims (rgb (H,W,C), depth (H,W)) are frames: one chunk per frame."""
    return len(step_shape) >= 2


def data_array_layout(step_shape: tuple[int, ...], dtype: np.dtype):
    """(chunks without the time axis length filled in, compressor) for a data array."""
    if is_image_like(step_shape):
        return (1, *step_shape), numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    step_bytes = max(1, int(np.prod(step_shape, dtype=np.int64)) * dtype.itemsize)
    t_chunk = max(1, LOWDIM_CHUNK_BYTES // step_bytes)
    return (t_chunk, *step_shape), numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


def _lowdim_compressor():
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


def create_data_array(data_group, key: str, step_shape: tuple[int, ...], dtype: np.dtype, length: int = 0):
    chunks, comp = data_array_layout(step_shape, dtype)
    return _create_array(data_group, key, shape=(length, *step_shape), chunks=chunks, dtype=dtype,
                         compressor=comp, fill_value=False if dtype == np.bool_ else 0)


def _resize(arr, length: int) -> None:
    arr.resize((length, *arr.shape[1:]))


# ----------------------------------------------------------------------------------------------
# layout analysis shared with validate.py
# ----------------------------------------------------------------------------------------------

@dataclass
class LayoutAnalysis:
    """How many `episode_ends` entries are committed and what lies past them."""

    n_committed: int
    committed_steps: int
    errors: list[str]
    tail_end_entries: int  # episode_ends entries past the committed ones (resized, value not written)


def analyze_layout(ends: np.ndarray, data_lengths: Mapping[str, int]) -> LayoutAnalysis:
    """Find the committed prefix of `ends` (diffusion_policy cumulative convention).

    A commit appends ONE entry, after all data is on disk, so only the final entry may be unwritten:
    it is uncommitted when it is not strictly increasing or lies past every data array's length.
    Any other inconsistency is corruption, reported in `errors` (never silently dropped).
    """
    ends = np.asarray(ends)
    errors: list[str] = []
    n = int(ends.shape[0])
    lengths = {k: int(v) for k, v in data_lengths.items()}
    max_len = max(lengths.values()) if lengths else 0
    k = n
    tail = 0
    if n:
        prev = np.concatenate([[0], ends[:-1]])
        bad = np.nonzero(ends <= prev)[0]
        last = int(ends[-1])
        last_unwritten = (n - 1 in bad) or last > max_len
        if last_unwritten:
            k, tail = n - 1, 1
        inner_bad = [int(i) for i in bad if i < k]
        for i in inner_bad[:5]:
            before = int(ends[i - 1]) if i else 0
            errors.append(
                f"meta/episode_ends is not strictly increasing at episode {i} "
                f"({before} -> {int(ends[i])}); every episode needs at least one step"
            )
        if len(inner_bad) > 5:
            errors.append(f"meta/episode_ends: {len(inner_bad) - 5} more non-increasing entries")
        if k:
            committed = int(ends[k - 1])
            for key, length in lengths.items():
                if length < committed:
                    errors.append(
                        f"ragged data: data/{key} has {length} steps but meta/episode_ends commits "
                        f"{committed} (every data array needs one row per step)"
                    )
            if not lengths:
                errors.append(f"meta/episode_ends commits {committed} steps but data/ has no arrays")
    committed_steps = int(ends[k - 1]) if k else 0
    return LayoutAnalysis(n_committed=k, committed_steps=committed_steps, errors=errors, tail_end_entries=tail)


def check_format_attrs(attrs: Mapping[str, Any], path) -> tuple[list[str], list[str], bool]:
    """(errors, warnings, is_postbc) for the root attributes."""
    errors: list[str] = []
    warnings: list[str] = []
    fmt = attrs.get("format")
    if fmt is None:
        warnings.append(
            "no 'format' root attribute: a plain diffusion_policy ReplayBuffer store, not a postbc store "
            "(convert it with `postbc data import`)"
        )
        return errors, warnings, False
    if fmt != FORMAT_NAME:
        errors.append(f"root attribute format={fmt!r} is not {FORMAT_NAME!r}: not a postbc episode store")
        return errors, warnings, False
    ver = attrs.get("format_version")
    if not isinstance(ver, int) or isinstance(ver, bool):
        errors.append(f"unknown format_version {ver!r} (expected an integer); the store's root attributes are damaged")
    elif ver > FORMAT_VERSION:
        errors.append(
            f"format_version {ver} is newer than this postbc_core supports ({FORMAT_VERSION}): "
            "upgrade postbc_core to read this store"
        )
    elif ver < 1:
        errors.append(f"unknown format_version {ver} (this postbc_core reads version {FORMAT_VERSION})")
    return errors, warnings, True


# ----------------------------------------------------------------------------------------------
# paths: one store has one name (symlinks resolved), nothing is written inside a store, and a store
# directory is replaced or rewritten only when everything in it belongs to the store
# ----------------------------------------------------------------------------------------------

def real_path(path: str | os.PathLike) -> Path:
    """`path` absolute with every symlink resolved. Locks, backups, temporaries and in-place rewrites key on it, so a
    symlink to a store and the store itself are one store (one writer lock, one directory rewritten)."""
    return Path(os.path.realpath(path))


def _is_zarr_node(d: Path) -> bool:
    return any((d / m).is_file() for m in (".zgroup", ".zarray", "zarr.json"))


def enclosing_store(path: str | os.PathLike) -> Path | None:
    """The store strictly above `path` (symlinks resolved): the outermost of the nearest run of zarr group or array
    directories above it (for .../s.zarr/meta/x that is s.zarr, not meta), or None."""
    found = None
    for parent in real_path(path).parents:
        if _is_zarr_node(parent):
            found = parent
        elif found is not None:
            break
    return found


def refuse_inside_store(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "output") -> None:
    """StoreError when `path` is (inside) one of the `inputs` or inside any zarr store: a store directory holds only
    the store, so that replacing or rewriting it in place (`--overwrite`, `postbc data drop`) deletes nothing else."""
    real = real_path(path)
    for src in inputs:
        s = real_path(src)
        if real == s:
            raise StoreError(f"{what} {path} is the input store {src}: choose a new path for the {what}")
        if s in real.parents:
            raise StoreError(f"{what} {path} is inside the input store {src}: nothing is written inside a store; "
                             f"choose a path outside {src}")
    enc = enclosing_store(path)
    if enc is not None:
        raise StoreError(f"{what} {path} is inside the zarr store {enc}: nothing is written inside a store; choose "
                         f"a path outside {enc}")


def make_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create a command's output directory (parents too) after refusing one inside a zarr store; a full disk,
    read-only or forbidden directory, or a file in the way, is a StorageError naming the path. Every command that
    writes a run / report directory (train, eval, replay, finetune, pipeline, coverage, sim curve) creates it here."""
    path = Path(path)
    refuse_inside_store(path, what=what)
    with storage_errors(f"creating the {what} directory {path}"):
        path.mkdir(parents=True, exist_ok=True)
    return path


_CHUNK_NAME = re.compile(r"\d+(\.\d+)*")
_STORE_ROOT_FILES = (".zgroup", ".zattrs", ".zmetadata")
_GROUP_FILES = (".zgroup", ".zattrs")
_ARRAY_FILES = (".zarray", ".zattrs")


def _is_tmp_name(name: str) -> bool:
    return name.endswith(TMP_SUFFIX) or name.endswith(".partial")


def _foreign_in_array(d: Path, rel: str, top: bool = True) -> list[str]:
    """Entries of an array directory that are not its metadata, chunks (nested chunk directories too) or our
    temporary files."""
    out = []
    for e in sorted(d.iterdir()):
        if (top and e.name in _ARRAY_FILES) or _is_tmp_name(e.name):
            continue
        if _CHUNK_NAME.fullmatch(e.name) and not e.is_symlink():
            if e.is_file():
                continue
            if e.is_dir():
                out += _foreign_in_array(e, f"{rel}/{e.name}", top=False)
                continue
        out.append(f"{rel}/{e.name}")
    return out


def foreign_entries(path: str | os.PathLike) -> list[str]:
    """Names (relative to the store directory `path`) of everything in it that is not part of an episode store: the
    root metadata, data/<array> and meta/<array> with their chunks, and our temporary files are; a README, a nested
    store, a symlink or any other file are not."""
    root = Path(path)
    out = []
    for e in sorted(root.iterdir()):
        if e.name in _STORE_ROOT_FILES or _is_tmp_name(e.name):
            continue
        if e.name in ("data", "meta") and e.is_dir() and not e.is_symlink():
            for m in sorted(e.iterdir()):
                rel = f"{e.name}/{m.name}"
                if m.name in _GROUP_FILES or _is_tmp_name(m.name):
                    continue
                if m.is_dir() and not m.is_symlink() and (m / ".zarray").is_file():
                    out += _foreign_in_array(m, rel)
                    continue
                out.append(rel)
            continue
        out.append(e.name)
    return out


def _shown(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def refuse_foreign_entries(path: str | os.PathLike, action: str) -> None:
    """StoreError naming what in the store directory `path` is not part of the store, before `action` (which would
    delete the directory) runs."""
    foreign = foreign_entries(path)
    if foreign:
        raise StoreError(f"{path}: refusing to {action}: the store directory also holds {_shown(foreign)}, which "
                         f"{'is' if len(foreign) == 1 else 'are'} not part of the episode store and would be deleted; "
                         f"move {'it' if len(foreign) == 1 else 'them'} out of {path} first")


# ----------------------------------------------------------------------------------------------
# lock
# ----------------------------------------------------------------------------------------------

def lock_path_for(path: str | os.PathLike) -> Path:
    """The writer lock lives beside the store (inside it zarr would warn about an unknown member,
    and beside it the lock survives the directory swap of an in-place `drop`), beside the real directory when
    `path` is a symlink (so every spelling of one store takes the same lock)."""
    p = real_path(path)
    return p.with_name(p.name + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock_owner(store_path) -> dict | None:
    """Content of the store's lock file ({pid, host, since}) or None."""
    try:
        return json.loads(lock_path_for(store_path).read_text() or "null")
    except (OSError, ValueError):
        return None


class WriterLock:
    """Exclusive single-writer lock (`flock` on `<store>.lock`; the kernel drops it when the owner dies)."""

    def __init__(self, store_path: str | os.PathLike):
        self.store_path = Path(store_path)
        self.path = lock_path_for(store_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        with storage_errors(f"taking the writer lock of {self.store_path}"):
            self._acquire()

    def try_acquire(self) -> bool:
        """Take the lock if no live process holds it (quietly: no stale-lock warning); False when one does."""
        try:
            with storage_errors(f"taking the writer lock of {self.store_path}"):
                self._acquire(quiet=True)
        except _LockBusy:
            return False
        return True

    def _acquire(self, quiet: bool = False) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_fd_json(fd)
                os.close(fd)
                raise _LockBusy(self._busy_message(owner)) from None
            except OSError as exc:  # filesystem without flock: fall back to the recorded pid
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                owner = _read_fd_json(fd)
                if owner and owner.get("host") == socket.gethostname() and _pid_alive(int(owner.get("pid", -1))) \
                        and int(owner.get("pid", -1)) != os.getpid():
                    os.close(fd)
                    raise _LockBusy(self._busy_message(owner)) from None
            # The previous owner may have unlinked the file between our open and flock: retry then.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = _read_fd_json(fd)
        if owner and not quiet:
            log.warning(
                "%s: taking over the stale writer lock %s left by pid %s on %s (that process is gone)",
                self.store_path, self.path, owner.get("pid"), owner.get("host"),
            )
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def _busy_message(self, owner: dict | None) -> str:
        who = "another process"
        if owner:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("since", 0))))
            who = f"pid {owner.get('pid')} on {owner.get('host')} (since {since})"
        return (
            f"{self.store_path} is open for writing by {who}; only one writer at a time. Close that writer "
            f"first (or open this store read-only with mode='r'). If no writer is running, delete {self.path}."
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _LockBusy(StoreError):
    """The writer lock is held by a live process."""


def lock_is_held(store_path: str | os.PathLike) -> bool:
    """Whether a live process holds the writer lock of `store_path` (probes without creating or taking it). The probe
    holds a shared lock for an instant, so a writer starting in that instant would be refused as busy: callers probe
    only when something needs explaining (leftover temporaries, a backup in place of the store)."""
    try:
        fd = os.open(lock_path_for(store_path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no flock here: the recorded pid decides
        owner = _read_fd_json(fd)
        return bool(owner and owner.get("host") == socket.gethostname() and _pid_alive(int(owner.get("pid", -1))))
    finally:
        os.close(fd)  # closing drops our probe lock
    return False


def _read_fd_json(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# backups of in-place rewrites
# ----------------------------------------------------------------------------------------------

BACKUP_TAG = "old"


def backup_name(path: str | os.PathLike) -> Path:
    """A fresh backup path beside the real `path` (the store is renamed there during an in-place rewrite)."""
    p = real_path(path)
    return p.parent / f".{p.name}.{BACKUP_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def backup_paths(path: str | os.PathLike) -> list[Path]:
    """Backups `.<name>.old-*` beside the real `path` left by an interrupted in-place rewrite (oldest name first)."""
    p = real_path(path)
    if not p.parent.is_dir():
        return []
    return sorted(p.parent.glob(f".{glob.escape(p.name)}.{BACKUP_TAG}-*"))


def backup_problem(path: str | os.PathLike) -> str | None:
    """A sentence about backups of `path` (None when there are none)."""
    backups = backup_paths(path)
    if not backups:
        return None
    names = ", ".join(str(b) for b in backups)
    if not Path(path).exists() and lock_is_held(path):
        return _being_rewritten(path, backups)
    if Path(path).exists():
        return (f"backup(s) {names} of this store remain from an interrupted in-place rewrite (`postbc data drop`); "
                f"{path} holds the rewrite's result. Check it, then delete the backup, or move the backup back "
                "if the result is not what you want")
    if len(backups) == 1:
        return (f"{path} is missing but its backup {backups[0]} holds it (an in-place `postbc data drop` was "
                f"interrupted between its two renames); opening the store (e.g. `postbc data info {path}`) restores "
                f"it, or run: mv {backups[0]} {path}")
    return (f"{path} is missing and several backups of it exist ({names}); move the one to keep back to {path} "
            "(the newest holds the last state) and delete the others")


def restore_backup(path: str | os.PathLike, *, locked: bool = False) -> bool:
    """When `path` is missing and exactly one backup of it exists, rename the backup into place (under the writer
    lock unless `locked`: the caller holds it). Returns True when it restored; StoreError when several backups
    exist; False when there is nothing to do. A symlinked store is restored in its target (the link stays a link)."""
    path = real_path(path)
    if path.exists() or not backup_paths(path):
        return False
    lock = None if locked else WriterLock(path)
    if lock is not None and not lock.try_acquire():
        raise StoreError(_being_rewritten(path, backup_paths(path)))
    try:
        backups = backup_paths(path)
        if path.exists() or not backups:
            return False
        if len(backups) > 1:
            raise StoreError(backup_problem(path))
        os.rename(backups[0], path)
    finally:
        if lock is not None:
            lock.release()
    log.warning("%s: restored the store from its backup %s (an interrupted in-place `postbc data drop`: the drop "
                "did not happen; run it again if you still want it)", path, backups[0])
    return True


def _being_rewritten(path, backups: list[Path]) -> str:
    owner = read_lock_owner(path) or {}
    return (f"{path} is being rewritten in place right now by pid {owner.get('pid', '?')} (`postbc data drop`; until it "
            f"finishes its backup {', '.join(map(str, backups))} holds it): try again when that has finished")


def refuse_if_backup(path: str | os.PathLike) -> None:
    """Nothing creates a fresh store over a path whose backup exists (it would hide the backed-up episodes)."""
    backups = backup_paths(path)
    if backups and not Path(path).exists():
        raise StoreError(f"refusing to create a new store at {path}: {backup_problem(path)}; then retry")


# ----------------------------------------------------------------------------------------------
# temporaries of rewrites: built beside their destination, named after it, removed when left by a dead run
# ----------------------------------------------------------------------------------------------

TEMP_TAG = "tmp"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh temporary path `.<name>.tmp-<pid>-<hex>` beside the real `path`: a store is built there and renamed
    into place. The writer of `path` holds `path`'s writer lock while it exists (so a temporary beside an unlocked
    path is a leftover of a killed run)."""
    p = real_path(path)
    return p.parent / f".{p.name}.{TEMP_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def leftover_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries `.<name>.tmp-*` beside `path` (their zip and lock files too), oldest name first."""
    p = real_path(path)
    if not p.parent.is_dir():
        return []
    return sorted(p.parent.glob(f".{glob.escape(p.name)}.{TEMP_TAG}-*"))


def remove_leftover_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries beside `path` left by a killed run; the caller holds `path`'s writer lock, so no live
    run is building one. Returns what was removed."""
    removed = leftover_temporaries(path)
    for t in removed:
        with contextlib.suppress(FileNotFoundError):
            if t.is_dir() and not t.is_symlink():
                shutil.rmtree(t)
            else:
                t.unlink()
    if removed:
        log.warning("%s: removed %s left by an interrupted run (killed while writing %s)", path,
                    _shown([str(t) for t in removed]), path)
    return removed


def temporaries_problem(path: str | os.PathLike) -> str | None:
    """A sentence naming leftover temporaries beside `path` (None when there are none, or a live writer of `path`
    may be building them)."""
    left = leftover_temporaries(path)
    if not left or lock_is_held(path):
        return None
    return (f"temporary file(s) {_shown([str(t) for t in left])} remain from an interrupted write of {path}; the next "
            f"write to {path} removes them, or delete them yourself")


# ----------------------------------------------------------------------------------------------
# reading arrays: damaged chunks become StoreError naming the array and the rows
# ----------------------------------------------------------------------------------------------

def read_rows(arr, start: int, stop: int, what: str, store_path) -> np.ndarray:
    """arr[start:stop] as numpy; a chunk that cannot be read (truncated, corrupt) raises StoreError naming it."""
    try:
        return np.asarray(arr[start:stop])
    except StoreError:
        raise
    except OSError as exc:
        err = storage_error(exc, f"reading {what} of {store_path}")
        if err is None:
            raise _damaged(arr, start, stop, what, store_path, exc) from None
        raise err from exc
    except Exception as exc:  # codecs raise RuntimeError / ValueError / ... for a corrupt chunk
        raise _damaged(arr, start, stop, what, store_path, exc) from None


def damaged_chunks(arr, start: int, stop: int) -> list[tuple[int, int, str]]:
    """[(first row, end row, reason)] of every chunk of arr[start:stop] (along axis 0) that cannot be read, one
    chunk at a time (one chunk per read also keeps zarr's concurrent reads out of the way)."""
    if not arr.ndim:
        try:
            np.asarray(arr[...])
            return []
        except Exception as exc:
            return [(0, 0, f"{type(exc).__name__}: {exc}")]
    c = int(arr.chunks[0]) if arr.chunks else max(1, stop - start)
    bad = []
    for a in range((start // c) * c, stop, c):
        lo, hi = max(a, start), min(a + c, stop)
        try:
            np.asarray(arr[lo:hi])
        except Exception as exc:
            bad.append((lo, hi, f"{type(exc).__name__}: {exc}"))
    return bad


def _damaged(arr, start, stop, what, store_path, exc) -> StoreError:
    bad = damaged_chunks(arr, start, stop) or [(start, stop, f"{type(exc).__name__}: {exc}")]
    where = "; ".join(f"damaged chunk at rows {a}..{b - 1} cannot be read ({r})" for a, b, r in bad[:3])
    more = f" (and {len(bad) - 3} more chunks)" if len(bad) > 3 else ""
    return StoreError(f"{store_path}: {what}: {where}{more}; `postbc data validate {store_path}` lists every damaged "
                      "array; restore the store from a copy or record it again")


# ----------------------------------------------------------------------------------------------
# recovery report
# ----------------------------------------------------------------------------------------------

@dataclass
class RecoveryReport:
    """What was found past the last committed episode (and dropped when `applied`)."""

    path: str
    n_episodes: int  # committed episodes kept
    n_steps: int  # committed steps kept
    dropped_steps: dict[str, int] = field(default_factory=dict)  # data key -> uncommitted steps
    dropped_meta_rows: dict[str, int] = field(default_factory=dict)  # meta field -> partial rows
    dropped_episode_ends: int = 0  # episode_ends entries resized but never written
    removed_tmp_files: int = 0  # leftover temporary files of interrupted writes
    applied: bool = False  # True: the tail was truncated (append mode); False: only reported

    @property
    def empty(self) -> bool:
        return not (self.dropped_steps or self.dropped_meta_rows or self.dropped_episode_ends or self.removed_tmp_files)

    def __str__(self) -> str:
        parts = []
        if self.dropped_steps:
            parts.append("uncommitted steps " + ", ".join(f"data/{k}: {v}" for k, v in sorted(self.dropped_steps.items())))
        if self.dropped_meta_rows:
            parts.append("partial metadata rows " + ", ".join(f"meta/{k}: {v}" for k, v in sorted(self.dropped_meta_rows.items())))
        if self.dropped_episode_ends:
            parts.append(f"{self.dropped_episode_ends} unwritten meta/episode_ends entry")
        if self.removed_tmp_files:
            parts.append(f"{self.removed_tmp_files} leftover temporary file(s)")
        what = "; ".join(parts) or "nothing"
        verb = "dropped" if self.applied else "found (not modified: opened read-only; open in append mode to recover)"
        return (f"{self.path}: recovered an interrupted write: kept {self.n_episodes} committed episode(s) "
                f"({self.n_steps} steps); {verb}: {what}")


# ----------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------

class EpisodeStore:
    """A zarr episode store (see the module docstring). Use `create` / `open`, then close (or `with`)."""

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
    def create(cls, path: str | os.PathLike, *, overwrite: bool = False) -> EpisodeStore:
        """Create an empty store at `path` (error if something is there, unless `overwrite`: then an existing episode
        store is replaced, and anything else there is refused). Through a symlink the store is created in the
        link's target."""
        path = Path(path)
        refuse_inside_store(path, what="store")  # before the lock: it would create its file (and directories) there
        lock = WriterLock(path)
        lock.acquire()
        try:
            with storage_errors(f"creating the store {path}"):
                return cls._create_locked(path, lock, overwrite)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create_locked(cls, path: Path, lock: WriterLock, overwrite: bool) -> EpisodeStore:
        real = real_path(path)
        refuse_if_backup(path)
        remove_leftover_temporaries(path)
        if real.exists():
            if not overwrite:
                raise StoreError(f"{path} already exists: pass overwrite=True to replace it, or pick a new path")
            _check_replaceable(path, real)
            log.warning("%s: overwriting the existing store", path)
            shutil.rmtree(real)
        root = _open_group(real, "w")
        root.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_by": _version_string(),
                           "store_id": uuid.uuid4().hex})
        root.require_group("data")
        meta = root.require_group("meta")
        _create_array(meta, "episode_ends", shape=(0,), chunks=(META_CHUNK,), dtype=np.int64,
                      compressor=_lowdim_compressor(), fill_value=0)
        for name, (dtype, fill) in META_FIELDS.items():
            _create_array(meta, name, shape=(0,), chunks=(META_CHUNK,), dtype=dtype,
                          compressor=_lowdim_compressor(), fill_value=fill)
        return cls(path, "a", root, lock)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EpisodeStore:
        """Open a store: mode "r" read-only, "a" append (creates the store if missing; recovers a tail)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise StoreError(f"mode {mode!r} is not supported: use 'r' (read-only) or 'a' (append)")
        restore_backup(path)
        if mode == "a" and not path.exists():
            return cls.create(path)
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
                root = _open_group(path, "r" if mode == "r" else "r+")
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
            missing = [p for p in ("data", "meta") if not _has(root, p)]
            if not missing and not _has(root["meta"], "episode_ends"):
                missing.append("meta/episode_ends")
            if missing:
                raise StoreValidationError(path, [f"missing {m} (not an episode store, or a damaged one)" for m in missing])
            if mode == "a":
                remove_leftover_temporaries(path)
            store = cls(path, mode, root, lock)
            store._recover()
            for note in (backup_problem(path), temporaries_problem(path) if mode == "r" else None):
                if note:
                    log.warning("%s", note)
            return store
        except BaseException:
            if lock is not None:
                lock.release()
            raise

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
            report.removed_tmp_files = _remove_tmp_files(self.path)
            if report.dropped_episode_ends:
                # Zero before shrinking: zarr keeps a partial chunk's bytes past the new shape, and a
                # stale value could later pass for a committed entry when the array grows again.
                self._ends_arr[n:] = 0
                _resize(self._ends_arr, n)
            for k in report.dropped_meta_rows:
                _resize(self._meta_arrays[k], n)
            for k in report.dropped_steps:
                _resize(self._arrays[k], steps)
            self._raw_ends = self._ends.copy()
        if report.empty:
            return
        self.recovery = report
        if self.mode == "r":
            owner = read_lock_owner(self.path)
            if owner and owner.get("host") == socket.gethostname() and _pid_alive(int(owner.get("pid", -1))):
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

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """data/<key>[start:stop] as numpy (a damaged chunk raises StoreError naming the key and rows)."""
        self._check_open()
        out = read_rows(self.data(key), start, stop, f"data/{key}", self.path)
        self._check_not_rewritten()
        return out

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Episode `i` (negative counts from the end): key -> (T, ...) array."""
        self._check_open()
        start, end = self._episode_range(i)
        return {k: self.rows(k, start, end) for k in self._select_keys(keys)}

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All committed steps in memory: key -> (T_total, ...) array."""
        self._check_open()
        return {k: self.rows(k, 0, self.n_steps) for k in self._select_keys(keys)}

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
        value = _success_code(success)
        old = int(self._meta_arrays["success"][i])
        self._meta_arrays["success"][i] = value
        log.info("%s: episode %d success label %s -> %s", self.path, i, _success_name(old), _success_name(value))

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

    # ---- internals used by the writer ----
    def _ensure_arrays(self, schema: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        """Create data arrays for the first committed episode's schema (replacing empty leftovers)."""
        for key, (shape, dtype) in schema.items():
            arr = self._arrays.get(key)
            if arr is not None and (tuple(arr.shape[1:]) != shape or arr.dtype != dtype):
                if self.n_episodes or arr.shape[0]:
                    raise StoreError(f"{self.path}: data/{key} exists with another shape/dtype")
                del self._data[key]
                arr = None
            if arr is None:
                self._arrays[key] = create_data_array(self._data, key, shape, dtype)
        for key in [k for k in self._arrays if k not in schema]:
            if self.n_episodes or self._arrays[key].shape[0]:
                raise StoreError(f"{self.path}: data/{key} is recorded but missing from this episode")
            del self._data[key]
            del self._arrays[key]


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


def _check_replaceable(path: Path, real: Path) -> None:
    """`overwrite` replaces an episode store and nothing else: not a file, not a training run or any other
    directory, not files that were put inside a store. An empty directory is fine."""
    if not real.is_dir():
        raise StoreError(f"{path} is a file, not an episode store: overwrite replaces only an episode store; choose "
                         "another path (or remove the file yourself)")
    entries = sorted(e.name for e in real.iterdir())
    if not entries:
        return
    if not ((real / ".zgroup").is_file() and (real / "data").is_dir() and (real / "meta" / "episode_ends").is_dir()):
        raise StoreError(f"{path} is not an episode store (it holds {_shown(entries)}): overwrite replaces only an "
                         "episode store; choose another path (or remove that directory yourself)")
    refuse_foreign_entries(path, "overwrite it")


def overrun_message(ends: np.ndarray, data_lengths: Mapping[str, int]) -> str:
    """The error for a last episode end past every data array of a store no postbc writer writes (so no commit can
    be under way: the boundaries are wrong)."""
    last = int(ends[-1])
    prev = int(ends[-2]) if ends.shape[0] > 1 else 0
    longest = max(data_lengths.values(), default=0)
    return (f"meta/episode_ends[-1] = {last} is invalid (previous end {prev}, longest data array {longest} steps): "
            "the last episode ends past the data; this is not a postbc store (no commit can be under way), so its "
            "episode boundaries are damaged: fix meta/episode_ends or re-export the store")


def _remove_tmp_files(root: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(TMP_SUFFIX) or name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    return n


def _success_code(success: bool | None) -> int:
    if success is None:
        return -1
    if isinstance(success, (bool, np.bool_)) or success in (0, 1):
        return int(bool(success))
    raise StoreError(f"success label {success!r} must be True, False or None (unknown)")


def _success_name(code: int) -> str:
    return {-1: "unknown", 0: "failure", 1: "success"}.get(code, str(code))


def _check_key_name(key: str) -> None:
    if not isinstance(key, str) or not key or "/" in key or key.startswith(".") or key != key.strip():
        raise StoreError(f"data key {key!r} is not a valid name: use a non-empty name without '/' or a leading '.'")


def _check_dtype(key: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise StoreError(
            f"data key {key!r} has dtype {dtype} ({dtype.kind!r}): only numeric and bool arrays are stored; "
            "put strings in the episode metadata (task, operator)"
        )


def finite_rows(arr: np.ndarray) -> np.ndarray:
    """(len(arr),) bool: row i holds no NaN/inf. Reduces over the per-step axes instead of reshaping, so zero rows
    or a zero-size per-step shape work too."""
    return np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))


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
    blocks of ~`flush_bytes`; `commit` writes the metadata and then `meta/episode_ends` (the commit point).

    With `background=True` (default) a full block is written by a worker thread while recording goes
    on (so `append` does not stall a recorder loop for the ~1 s an image block takes); at most one
    block is in flight, so memory stays below ~2 x flush_bytes. A failed background write re-raises
    on the next call.
    """

    def __init__(self, store: EpisodeStore, *, task: str, source: str, operator: str, start_time: float,
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
        self._pending: Future | None = None
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
            _check_key_name(key)
            _check_dtype(key, arr.dtype)
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
            self._wait_pending()
            self._hand_off(background=self._background)

    def _wait_pending(self) -> None:
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.result()  # re-raises a failed background write

    def _hand_off(self, *, background: bool) -> None:
        """Move the buffer to disk (in the worker thread when `background`)."""
        if not self._buffered:
            return
        store = self._store
        if store.n_episodes == 0 and self._queued == 0:
            store._ensure_arrays(self._schema)
        blocks = {k: np.concatenate(v, axis=0) for k, v in self._buffer.items()}
        n, at = self._buffered, self._start + self._queued
        self._touched.update(blocks)
        self._buffer = {}
        self._buffered = self._buffered_bytes = 0
        self._queued += n
        if background:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postbc-episode-flush")
            self._pending = self._executor.submit(self._write_blocks, blocks, at, n)
        else:
            self._write_blocks(blocks, at, n)

    def _write_blocks(self, blocks: dict[str, np.ndarray], at: int, n: int) -> None:
        with storage_errors(f"writing an episode to {self._store.path} (committed episodes are untouched)"):
            self._write_blocks_unchecked(blocks, at, n)

    def _write_blocks_unchecked(self, blocks: dict[str, np.ndarray], at: int, n: int) -> None:
        store = self._store
        for key in sorted(blocks):
            arr = store._arrays[key]
            if arr.shape[0] != at:
                raise StoreError(f"{store.path}: data/{key} has {arr.shape[0]} rows, expected {at}: "
                                 "was the store modified by someone else?")
            _resize(arr, at + n)
            try:
                arr[at: at + n] = blocks[key]
            except (StoreError, OSError):
                raise
            except Exception as exc:  # a partial chunk is read back to be extended: it may be damaged
                raise StoreError(f"{store.path}: cannot append to data/{key} at rows {at}..{at + n - 1}: "
                                 f"{type(exc).__name__}: {exc}; the existing chunk there is probably damaged: "
                                 f"`postbc data validate {store.path}` lists every damaged array (committed "
                                 "episodes are untouched)") from None
        self._written = at + n - self._start
        _hook("flushed")

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
        """Flush, write the episode's metadata, then `meta/episode_ends` (the commit point). Returns the
        new episode's index. end_time None = now."""
        self._check_open()
        code = _success_code(success)
        if self.n_steps == 0:
            raise StoreError(f"{self._store.path}: cannot commit an empty episode (no steps); discard() it instead")
        self.flush()
        self._shutdown()
        with storage_errors(f"committing an episode to {self._store.path} (committed episodes are untouched)"):
            try:
                return self._commit(code, end_time)
            except (StoreError, OSError):
                raise
            except Exception as exc:  # the metadata chunks are read back to be extended: one may be damaged
                raise StoreError(f"{self._store.path}: cannot commit the episode: {type(exc).__name__}: {exc}; a "
                                 f"metadata chunk is probably damaged: `postbc data validate {self._store.path}` "
                                 "lists every damaged array (committed episodes are untouched)") from None

    def _commit(self, code: int, end_time: float | None) -> int:
        store = self._store
        end = self._start + self._written
        for key, arr in store._arrays.items():
            if arr.shape[0] != end:
                raise StoreError(f"{store.path}: data/{key} has {arr.shape[0]} rows, expected {end} before commit")
        n = store.n_episodes
        values = dict(self._meta, success=code, end_time=time.time() if end_time is None else float(end_time))
        for name, (dtype, fill) in META_FIELDS.items():
            arr = store._meta_arrays.get(name)
            if arr is None:  # a store created by an older writer without this field: add it
                arr = _create_array(store._meta, name, shape=(n,), chunks=(META_CHUNK,), dtype=dtype,
                                    compressor=_lowdim_compressor(), fill_value=fill)
                store._meta_arrays[name] = arr
            _resize(arr, n + 1)
            arr[n] = values[name]
        _hook("meta_written")
        ends = store._ends_arr
        _resize(ends, n + 1)
        _hook("episode_ends_resized")
        ends[n] = end
        store._ends = np.append(store._ends, np.int64(end))
        store._raw_ends = store._ends
        self._state = "committed"
        log.debug("%s: committed episode %d (%d steps)", store.path, n, self.n_steps)
        return n

    def discard(self) -> None:
        """Drop this episode's steps (flushed ones are truncated from the data arrays)."""
        if self._state != "open":
            return
        store = self._store
        with contextlib.suppress(Exception):  # a failed block write is moot: we truncate anyway
            self._wait_pending()
        self._shutdown()
        for key in self._touched:
            arr = store._arrays.get(key)
            if arr is not None and arr.shape[0] > self._start:
                _resize(arr, self._start)
        if self.n_steps:
            log.info("%s: discarded an uncommitted episode of %d step(s)", store.path, self.n_steps)
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
