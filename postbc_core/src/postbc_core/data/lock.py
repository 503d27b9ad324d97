"""The single-writer lock of an episode store: an exclusive `flock` on `<store>.lock` beside the store.

The kernel drops a `flock` when its owner dies, so a killed writer never leaves a store locked; the file records
{pid, host, since} to name the owner in errors (and decides on filesystems without `flock`). Every spelling of one
store (a symlink, the real directory) takes the same lock, since the lock keys on the real path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from postbc_core.data.paths import real_path
from postbc_core.errors import StoreError, storage_errors

log = logging.getLogger(__name__)


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


def owner_alive(owner: dict | None) -> bool:
    """Whether a lock file's recorded owner ({pid, host, since}) is a running process on this host (a pid on
    another host cannot be checked from here)."""
    return bool(owner and owner.get("host") == socket.gethostname() and _pid_alive(int(owner.get("pid", -1))))


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
                if owner_alive(owner) and int(owner.get("pid", -1)) != os.getpid():
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
        return owner_alive(owner)
    finally:
        os.close(fd)  # closing drops our probe lock
    return False


def _read_fd_json(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None
