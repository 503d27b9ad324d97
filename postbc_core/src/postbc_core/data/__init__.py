"""Episode data: the zarr episode store, its validation, dataset tools and training windows.

The sampler names (`SequenceSampler`, `WindowDataset`, `create_indices`, `get_val_mask`) are loaded on
first use, because that module imports torch and the store alone (e.g. a recorder) should not.
"""

from postbc_core.data.layout import FORMAT_VERSION, SOURCES
from postbc_core.data.recovery import RecoveryReport
from postbc_core.data.store import EpisodeStore, MissingKeyError
from postbc_core.data.tools import (
    drop,
    export_diffusion_policy,
    import_diffusion_policy,
    info,
    merge,
    split,
)
from postbc_core.data.validate import ValidationReport, validate_store
from postbc_core.data.writer import EpisodeWriter

_SAMPLER_NAMES = ("SequenceSampler", "WindowDataset", "create_indices", "get_val_mask")

__all__ = [
    "FORMAT_VERSION", "SOURCES", "EpisodeStore", "EpisodeWriter", "MissingKeyError", "RecoveryReport",
    "ValidationReport", "validate_store", "info", "merge", "split", "drop", "export_diffusion_policy",
    "import_diffusion_policy", *_SAMPLER_NAMES,
]


def __getattr__(name: str):
    if name in _SAMPLER_NAMES:
        from postbc_core.data import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'postbc_core.data' has no attribute {name!r}")
