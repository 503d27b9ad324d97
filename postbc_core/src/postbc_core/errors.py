"""Exception types shared by the library.

Every error a user can cause (bad data, bad config, wrong checkpoint, missing device) derives from
`PostBCError`; the CLI prints its message and exits with status 2 instead of a traceback. Messages
name the offending value and say how to fix it.
"""


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
