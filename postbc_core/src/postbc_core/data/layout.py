"""The episode store's on-disk format: its constants, how its arrays are chunked, what a row may hold, and how far a
store is committed.

Layout (zarr format 2, readable by zarr-python 2 and 3 and by diffusion_policy's ReplayBuffer):

    <store>/.zattrs              {"format": "postbc-episodes", "format_version": 1, "created_by": ..., "store_id": ...,
                                  "image_codecs": {"*": "jpeg:90"} (camera codecs, codecs.py; absent or {} = raw),
                                  "cmd_ee_delta_convention": "chained" (what data/cmd_ee_delta is relative to)}
    <store>/data/<key>           (T_total, ...) every step of every episode, concatenated along axis 0
    <store>/meta/episode_ends    (N,) int64 cumulative end index of each episode (written LAST on commit)
    <store>/meta/<field>         (N,) per-episode metadata: success, source, task, operator, start/end_time

Shape legend: T steps of one episode, T_total steps of the whole store, N episodes.

Shared by the store (store.py), its writer (writer.py), `validate_store` and the dataset tools, so the format is
declared once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from postbc_core.data.codecs import RAW, image_compressor
from postbc_core.data.zarr_compat import create_array
from postbc_core.errors import StoreError

FORMAT_NAME = "postbc-episodes"
FORMAT_VERSION = 1
CODECS_ATTR = "image_codecs"
"""Root attribute: the camera codec choice {key or "*": codec} the store was created with (data/codecs.py); each
array's `.zarray` compressor records what its chunks actually hold."""
EE_DELTA_CONVENTION_ATTR = "cmd_ee_delta_convention"
EE_DELTA_CONVENTION = "chained"
"""Root attribute and its one accepted value: every stored cmd_ee_delta (m, rad) is relative to the PREVIOUS STEP'S
TARGET (robots.actions.EEDeltaExecutor; Bridge's and the Interbotix SDK's convention), so replaying it reproduces the
recorded targets whatever the tracking lag was. Stores created before the convention was fixed lack the attribute:
their twin demos' deltas were relative to the joints measured at each step, their ROS teleop deltas already chained.
Training on, or appending to, such a store's cmd_ee_delta is refused (`postbc data convert-ee-delta` rewrites it from
cmd_joint_pos); a store created here records the attribute (`EpisodeStore.create`)."""
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


def is_image_like(step_shape: tuple[int, ...]) -> bool:
    """Per-step arrays with 2+ dims (rgb (H,W,C), depth (H,W)) are frames: one chunk per frame."""
    return len(step_shape) >= 2


def data_array_layout(step_shape: tuple[int, ...], dtype: np.dtype, codec: str = RAW):
    """(chunks without the time axis length filled in, compressor) for a data array; `codec` (canonical, see
    codecs.py) compresses each frame of an image key (one chunk per frame), raw = Blosc lz4."""
    if is_image_like(step_shape):
        return (1, *step_shape), image_compressor(codec)
    if codec != RAW:
        raise StoreError(f"codec {codec!r} applies to camera images only, not to per-step shape {step_shape}")
    step_bytes = max(1, int(np.prod(step_shape, dtype=np.int64)) * dtype.itemsize)
    t_chunk = max(1, LOWDIM_CHUNK_BYTES // step_bytes)
    return (t_chunk, *step_shape), lowdim_compressor()


def lowdim_compressor():
    """The compressor of low-dim data arrays and of every meta array."""
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


def create_data_array(data_group, key: str, step_shape: tuple[int, ...], dtype: np.dtype, length: int = 0,
                      codec: str = RAW):
    """Create data/<key> of (length, *step_shape) rows, chunked and compressed by `data_array_layout`."""
    chunks, comp = data_array_layout(step_shape, dtype, codec)
    return create_array(data_group, key, shape=(length, *step_shape), chunks=chunks, dtype=dtype,
                        compressor=comp, fill_value=False if dtype == np.bool_ else 0)


def create_meta_array(meta_group, name: str, length: int = 0):
    """Create meta/<name> (`episode_ends` or one of META_FIELDS) of `length` rows."""
    dtype, fill = (np.dtype(np.int64), 0) if name == "episode_ends" else META_FIELDS[name]
    return create_array(meta_group, name, shape=(length,), chunks=(META_CHUNK,), dtype=dtype,
                        compressor=lowdim_compressor(), fill_value=fill)


# per-episode success label and what a data row may hold

def success_code(success: bool | None) -> int:
    """The meta/success value of a label: 1 success, 0 failure, -1 unknown (None)."""
    if success is None:
        return -1
    if isinstance(success, (bool, np.bool_)) or success in (0, 1):
        return int(bool(success))
    raise StoreError(f"success label {success!r} must be True, False or None (unknown)")


def success_name(code: int) -> str:
    """The word for a meta/success value (for logs)."""
    return {-1: "unknown", 0: "failure", 1: "success"}.get(code, str(code))


def check_key_name(key: str) -> None:
    """StoreError unless `key` can name a data array (a zarr member name without path syntax)."""
    if not isinstance(key, str) or not key or "/" in key or key.startswith(".") or key != key.strip():
        raise StoreError(f"data key {key!r} is not a valid name: use a non-empty name without '/' or a leading '.'")


def check_dtype(key: str, dtype: np.dtype) -> None:
    """StoreError unless data/<key> may hold `dtype` (numbers and bools only)."""
    if dtype.kind not in "biuf":
        raise StoreError(
            f"data key {key!r} has dtype {dtype} ({dtype.kind!r}): only numeric and bool arrays are stored; "
            "put strings in the episode metadata (task, operator)"
        )


def finite_rows(arr: np.ndarray) -> np.ndarray:
    """(len(arr),) bool: row i holds no NaN/inf. Reduces over the per-step axes instead of reshaping, so zero rows
    or a zero-size per-step shape work too."""
    return np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))


# the committed prefix and the root attributes (shared with validate.py)

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


def overrun_message(ends: np.ndarray, data_lengths: Mapping[str, int]) -> str:
    """The error for a last episode end past every data array of a store no postbc writer writes (so no commit can
    be under way: the boundaries are wrong)."""
    last = int(ends[-1])
    prev = int(ends[-2]) if ends.shape[0] > 1 else 0
    longest = max(data_lengths.values(), default=0)
    return (f"meta/episode_ends[-1] = {last} is invalid (previous end {prev}, longest data array {longest} steps): "
            "the last episode ends past the data; this is not a postbc store (no commit can be under way), so its "
            "episode boundaries are damaged: fix meta/episode_ends or re-export the store")
