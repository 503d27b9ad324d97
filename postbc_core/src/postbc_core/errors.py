"""Exception types shared by the library.

Every error a user can cause (bad data, bad config, wrong checkpoint, missing device) derives from
`PostBCError`; the CLI prints its message and exits with status 2 instead of a traceback (`postbc --debug ...`
or POSTBC_DEBUG=1 prints the traceback too). Messages name the offending value and say how to fix it. OSErrors
a user fixes outside postbc (full disk, read-only or forbidden directory) become `StorageError` (`as_user_error`).
"""

import contextlib
import errno
import os


class PostBCError(Exception):
    """Base class for user-facing errors."""


class ConfigError(PostBCError, ValueError):
    """An invalid configuration value (the message names the field and the accepted range)."""


class StoreError(PostBCError):
    """The episode store cannot be opened or written as asked."""


class StoreValidationError(StoreError):
    """A store (or data about to be written to one) breaks the format; `problems` lists every finding."""

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} problem(s):\n{lines}")


class CheckpointError(PostBCError):
    """A checkpoint is missing, corrupt, or from an incompatible version."""


class ActionError(PostBCError, ValueError):
    """A robot action with the wrong shape, a non-real dtype or non-finite values (rejected: nothing is sent)."""


class StorageError(PostBCError, OSError):
    """Writing or reading a file failed for a reason the user fixes outside postbc (full disk, read-only or
    permission-denied directory); the message names the path and the fix."""

    def __str__(self) -> str:  # OSError would format errno/filename instead of the message
        return str(self.args[0])


# errno -> what to do about it (the errors a user fixes outside postbc; anything else stays a bug report)
_OS_FIXES = {
    errno.ENOSPC: "free some space or choose an output on another filesystem",
    errno.EDQUOT: "free some space (disk quota exceeded) or choose an output on another filesystem",
    errno.EROFS: "the filesystem is mounted read-only: choose a writable output path",
    errno.EACCES: "you lack permission there: fix the permissions or choose another path",
    errno.EPERM: "the operation is not permitted there: fix the permissions or choose another path",
}


def storage_error(exc: OSError, action: str = "") -> StorageError | None:
    """The user-facing StorageError for an OSError with a known fix (None for any other OSError).

    action: what was being done, e.g. "writing the run directory runs/x" (the failing file is named too)."""
    what = f"{action}: " if action else ""
    if isinstance(exc, StorageError):  # the outermost action is the one the user asked for: it names the error
        if not action:
            return exc
        err = StorageError(f"{what}{exc.reason}")
    else:
        fix = _OS_FIXES.get(getattr(exc, "errno", None))
        if fix is None:
            return None
        where = f" ({exc.filename})" if exc.filename is not None else ""
        err = StorageError(f"{what}{os.strerror(exc.errno)}{where}; {fix}")
        err.reason = f"{os.strerror(exc.errno)}{where}; {fix}"
    err.reason = getattr(err, "reason", None) or exc.reason
    err.errno, err.filename = exc.errno, exc.filename
    return err


def as_user_error(exc: BaseException) -> PostBCError | None:
    """The PostBCError to show for `exc` (itself, or a known OSError translated), or None for a bug."""
    if isinstance(exc, PostBCError):
        return exc
    if isinstance(exc, OSError):
        return storage_error(exc)
    return None


@contextlib.contextmanager
def storage_errors(action: str):
    """Translate full-disk / read-only / permission OSErrors raised inside the block into StorageError."""
    try:
        yield
    except OSError as exc:
        err = storage_error(exc, action)
        if err is None or err is exc:
            raise
        raise err from (exc.__cause__ if isinstance(exc, StorageError) else exc)
