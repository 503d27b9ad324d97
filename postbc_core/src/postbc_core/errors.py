"""Exception types shared by the library.

Every error a user can cause (bad data, bad config, wrong checkpoint, missing device) derives from
`PostBCError`; the CLI prints its message and exits with status 2 instead of a traceback (`postbc --debug ...`
or POSTBC_DEBUG=1 prints the traceback too). Messages name the offending value and say how to fix it. OSErrors
a user fixes outside postbc (full disk, read-only or forbidden directory, an output path through a regular file)
become `StorageError` (`as_user_error`).
"""

import contextlib
import errno
import operator
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


class UsageError(ConfigError):
    """A command line that cannot be parsed (unknown flag, a value of the wrong type, a missing argument)."""


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


def _blocking_file(path) -> str | None:
    """The file (anything but a directory) standing at `path` or at one of its parents, where a directory must go."""
    p = os.path.abspath(os.fspath(path))
    while True:
        if os.path.lexists(p) and not os.path.isdir(p):
            return p
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def _path_fix(exc: OSError) -> str | None:
    """The fix for ENOTDIR / EEXIST when a file stands where an output directory must go (`--out` below or at a
    regular file); None for those errnos in any other situation (left a bug report)."""
    if exc.errno not in (errno.ENOTDIR, errno.EEXIST) or exc.filename is None:
        return None
    blocker = _blocking_file(exc.filename)
    if blocker is None:
        return None
    return f"{blocker} is a file where a directory is needed: choose another path (or move that file away)"


def storage_error(exc: OSError, action: str = "") -> StorageError | None:
    """The user-facing StorageError for an OSError with a known fix (None for any other OSError).

    action: what was being done, e.g. "writing the run directory runs/x" (the failing file is named too)."""
    what = f"{action}: " if action else ""
    if isinstance(exc, StorageError):  # the outermost action is the one the user asked for: it names the error
        if not action:
            return exc
        err = StorageError(f"{what}{exc.reason}")
    else:
        fix = _OS_FIXES.get(getattr(exc, "errno", None)) or _path_fix(exc)
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


SEED_MAX = 2**32 - 1
"""Seeds are integers in [0, 2**32 - 1]: what numpy's legacy seeding (np.random.seed) and the sims accept."""


def check_seed(seed, flag: str = "--seed", count: int = 1) -> int:
    """`seed` as an int, or ConfigError naming it and the accepted range. count: how many consecutive seeds the
    command uses from it (episode i uses seed + i), all of which must be in range."""
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)  # int or numpy integer
    except TypeError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{flag} {seed!r} is out of range: a seed is an integer in [0, 2**32 - 1] "
                          f"= [0, {SEED_MAX}]")
    last = value + max(int(count), 1) - 1
    if last > SEED_MAX:
        raise ConfigError(f"{flag} {value} with {count} episodes uses seeds up to {last}, past 2**32 - 1 = "
                          f"{SEED_MAX}; use {flag} <= {SEED_MAX - count + 1}")
    return value


def check_at_least_one(config, names, label: str) -> None:
    """ConfigError for the first of the dataclass `config`'s fields `names` below 1, naming it with `label` (the
    flag prefix, e.g. "dsrl") and the field's default."""
    for name in names:
        if int(getattr(config, name)) < 1:
            raise ConfigError(f"{label} {name}={getattr(config, name)} must be >= 1 (default "
                              f"{getattr(type(config), name)})")


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
