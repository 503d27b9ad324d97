"""What an interrupted write leaves behind, and how it is put right: backups of in-place rewrites, temporaries of
rewrites, temporary chunk files, and the report of an uncommitted tail.

In-place rewrites (`postbc data drop` without --out) build the result beside the store, rename the store to a
backup `.<name>.old-*` and the result into place. A rewrite killed between the two renames leaves only the backup:
opening the store puts the backup back (`restore_backup`), and nothing creates a fresh store over a path that has
a backup.

Temporaries (`.<name>.tmp-<pid>-<hex>`, built beside their destination) exist only while their writer holds the
destination's writer lock, so any found beside an unlocked path were left by a killed run: the next writer of that
path removes them and readers name them (`temporaries_problem`).

An episode's rows past the last committed `meta/episode_ends` entry are dropped when the store is next opened for
appending; `RecoveryReport` says what (the truncation itself is the store's, see `EpisodeStore.open`).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from postbc_core.data.lock import WriterLock, lock_is_held, read_lock_owner
from postbc_core.data.paths import real_path, short_list
from postbc_core.data.zarr_compat import is_tmp_name
from postbc_core.errors import StoreError

log = logging.getLogger(__name__)

BACKUP_TAG = "old"
TEMP_TAG = "tmp"


def _fresh_sibling(path: str | os.PathLike, tag: str) -> Path:
    """A new hidden path `.<name>.<tag>-<pid>-<hex>` beside the real `path`."""
    p = real_path(path)
    return p.parent / f".{p.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _siblings(path: str | os.PathLike, tag: str) -> list[Path]:
    """Every `.<name>.<tag>-*` beside the real `path`, oldest name first."""
    p = real_path(path)
    if not p.parent.is_dir():
        return []
    return sorted(p.parent.glob(f".{glob.escape(p.name)}.{tag}-*"))


# backups of in-place rewrites

def backup_name(path: str | os.PathLike) -> Path:
    """A fresh backup path beside the real `path` (the store is renamed there during an in-place rewrite)."""
    return _fresh_sibling(path, BACKUP_TAG)


def backup_paths(path: str | os.PathLike) -> list[Path]:
    """Backups `.<name>.old-*` beside the real `path` left by an interrupted in-place rewrite (oldest name first)."""
    return _siblings(path, BACKUP_TAG)


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


# temporaries of rewrites: built beside their destination, named after it, removed when left by a dead run

def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh temporary path `.<name>.tmp-<pid>-<hex>` beside the real `path`: a store is built there and renamed
    into place. The writer of `path` holds `path`'s writer lock while it exists (so a temporary beside an unlocked
    path is a leftover of a killed run)."""
    return _fresh_sibling(path, TEMP_TAG)


def leftover_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries `.<name>.tmp-*` beside `path` (their zip and lock files too), oldest name first."""
    return _siblings(path, TEMP_TAG)


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
                    short_list([str(t) for t in removed]), path)
    return removed


def temporaries_problem(path: str | os.PathLike) -> str | None:
    """A sentence naming leftover temporaries beside `path` (None when there are none, or a live writer of `path`
    may be building them)."""
    left = leftover_temporaries(path)
    if not left or lock_is_held(path):
        return None
    return (f"temporary file(s) {short_list([str(t) for t in left])} remain from an interrupted write of {path}; the next "
            f"write to {path} removes them, or delete them yourself")


# inside a store: temporary chunk files of atomic writes, and the uncommitted tail

def remove_chunk_temporaries(root: Path) -> int:
    """Delete the temporary files of atomic chunk writes anywhere inside the store directory `root` (left by a
    killed writer; the caller holds the writer lock). Returns how many were removed."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if is_tmp_name(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    return n


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
