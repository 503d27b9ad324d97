"""Validation of an episode store (or of a diffusion_policy store about to be imported).

`validate_store` reads the store without modifying it and lists every problem it finds: errors (the
store cannot be used as is) and warnings (usable, but look at it). Shape legend: N episodes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from pathlib import Path

from postbc_core.data.codecs import IMAGE_SUFFIX, codec_of_array
from postbc_core.data.layout import (
    META_FIELDS,
    SOURCES,
    analyze_layout,
    check_format_attrs,
    finite_rows,
    overrun_message,
)
from postbc_core.data.recovery import backup_problem, temporaries_problem
from postbc_core.data.store import EpisodeStore
from postbc_core.data.zarr_compat import array_names, damaged_chunks, has_member, open_array, open_group_readonly
from postbc_core.errors import StoreError, StoreValidationError

log = logging.getLogger(__name__)

MAX_FINDINGS_PER_KEY = 5
SCAN_BLOCK_BYTES = 64 << 20  # NaN scan reads at most ~64 MiB at a time


@dataclass
class ValidationReport:
    """Findings of `validate_store`: `errors` make the store unusable, `warnings` deserve a look."""

    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_episodes: int = 0
    n_steps: int = 0
    codecs: dict[str, str] = field(default_factory=dict)  # camera key -> codec of its chunks (data/codecs.py)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_problems(self) -> None:
        """Raise StoreValidationError listing every error (warnings do not raise)."""
        if self.errors:
            raise StoreValidationError(self.path, self.errors)

    def __str__(self) -> str:
        lines = [f"{self.path}: {'OK' if self.ok else 'INVALID'} ({self.n_episodes} episodes, {self.n_steps} steps)"]
        if self.codecs:
            lines.append("  camera codecs: " + ", ".join(f"{k} {v}" for k, v in sorted(self.codecs.items())))
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def validate_store(path_or_store: str | os.PathLike | EpisodeStore, *, scan_values: bool = True) -> ValidationReport:
    """Check a store's layout, dtypes, lengths, metadata and (when `scan_values`) NaN/inf values."""
    path = path_or_store.path if isinstance(path_or_store, EpisodeStore) else path_or_store
    report = ValidationReport(path=str(path))
    note = backup_problem(path)
    if note and not Path(path).exists():
        report.errors.append(note)
        return report
    if note:
        report.warnings.append(note)
    note = temporaries_problem(path)
    if note:
        report.warnings.append(note)
    try:
        root = open_group_readonly(path)
    except Exception as exc:  # StoreError with the reason
        report.errors.append(str(exc))
        return report
    try:
        check_group(root, report, scan_values=scan_values)
    except Exception as exc:  # damage of a kind not foreseen below: still a report, never a crash
        report.errors.append(f"validation stopped: {type(exc).__name__}: {exc} (the store is damaged)")
    return report


def _arrays(group, where: str, report: ValidationReport) -> dict:
    """{name: array} of `group`; arrays whose metadata cannot be read become errors."""
    out = {}
    for name in array_names(group):
        try:
            out[name] = open_array(group, name, where, report.path)
        except StoreError as exc:
            report.errors.append(str(exc).removeprefix(f"{report.path}: "))
    return out


def _check_chunks(name: str, arr, stop: int, errors: list[str]) -> bool:
    """Errors for every chunk of arr[:stop] that cannot be read (first MAX_FINDINGS_PER_KEY); True when all read."""
    bad = damaged_chunks(arr, 0, stop)
    for a, b, reason in bad[:MAX_FINDINGS_PER_KEY]:
        errors.append(f"{name}: damaged chunk at rows {a}..{b - 1} cannot be read ({reason}); restore the store "
                      "from a copy or record those episodes again")
    if len(bad) > MAX_FINDINGS_PER_KEY:
        errors.append(f"{name}: {len(bad) - MAX_FINDINGS_PER_KEY} more damaged chunk(s)")
    return not bad


def check_group(root, report: ValidationReport, *, import_mode: bool = False, scan_values: bool = True) -> None:
    """Fill `report` for the zarr group `root`. `import_mode`: the source of an import (a plain
    diffusion_policy store), where every data array must end exactly at the last episode end."""
    errors, warnings = report.errors, report.warnings
    is_postbc = False
    if not import_mode:
        e, w, is_postbc = check_format_attrs(dict(root.attrs), report.path)
        errors += e
        warnings += w
        if e:
            return
    missing = [p for p in ("data", "meta") if not has_member(root, p)]
    if "meta" not in missing and not has_member(root["meta"], "episode_ends"):
        missing.append("meta/episode_ends")
    for m in missing:
        errors.append(f"missing {m}: not an episode store (expected data/<key> arrays and meta/episode_ends)")
    if missing:
        return

    data = _arrays(root["data"], "data", report)
    try:
        ends_arr = open_array(root["meta"], "episode_ends", "meta", report.path)
    except StoreError as exc:
        errors.append(str(exc).removeprefix(f"{report.path}: "))
        return
    if ends_arr.ndim != 1:
        errors.append(f"meta/episode_ends has shape {ends_arr.shape}, expected one dimension (N,)")
        return
    if ends_arr.dtype.kind not in "iu":
        errors.append(f"meta/episode_ends has dtype {ends_arr.dtype}, expected int64 (cumulative end indices)")
        return
    if ends_arr.dtype != np.int64:
        (warnings if import_mode else errors).append(
            f"meta/episode_ends has dtype {ends_arr.dtype}, expected int64"
            + (" (converted on import)" if import_mode else "")
        )
    if not _check_chunks("meta/episode_ends", ends_arr, ends_arr.shape[0], errors):
        return  # without the episode boundaries nothing else can be checked
    ends = np.asarray(ends_arr[:]).astype(np.int64)
    if not data:
        if ends.shape[0]:
            errors.append(f"data/ has no arrays but meta/episode_ends lists {ends.shape[0]} episode(s)")
        warnings.append("the store holds no data arrays (empty)")

    for key, arr in data.items():
        dt = np.dtype(arr.dtype)
        if dt.kind not in "biuf":
            errors.append(f"data/{key} has dtype {dt} ({_kind_name(dt)}): only numeric and bool arrays are allowed")
        if arr.ndim < 1:
            errors.append(f"data/{key} is a scalar array; data arrays need a leading time axis")
            continue
        if key.endswith("_rgb") and (dt != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3):
            errors.append(f"data/{key}: rgb images must be uint8 with per-step shape (H, W, 3), "
                          f"got dtype {dt} per-step shape {tuple(arr.shape[1:])}")
        codec = codec_of_array(arr)
        if key.endswith(IMAGE_SUFFIX):
            report.codecs[key] = codec
        elif codec.startswith("jpeg:"):  # a lossy codec on anything but a camera image is damage, not a choice
            errors.append(f"data/{key} is compressed with the lossy codec {codec}: lossy codecs are for camera keys "
                          f"'<camera>{IMAGE_SUFFIX}' only; its values are not exact (record it again)")
        if key.endswith("_depth") and (dt != np.uint16 or arr.ndim != 3):
            warnings.append(f"data/{key}: depth images are expected as uint16 millimetres with per-step shape "
                            f"(H, W), got dtype {dt} per-step shape {tuple(arr.shape[1:])}")

    lengths = {k: int(a.shape[0]) for k, a in data.items() if a.ndim >= 1}
    an = analyze_layout(ends, lengths)
    errors += an.errors
    n, steps = an.n_committed, an.committed_steps
    report.n_episodes, report.n_steps = n, steps
    tail_keys = {k: v - steps for k, v in lengths.items() if v > steps}
    if import_mode:
        if an.tail_end_entries:
            last = int(ends[-1])
            prev = int(ends[-2]) if ends.shape[0] > 1 else 0
            errors.append(f"meta/episode_ends[-1] = {last} is invalid (previous end {prev}, longest data array "
                          f"{max(lengths.values(), default=0)} steps)")
        for k, extra in tail_keys.items():
            errors.append(f"ragged data: data/{k} has {lengths[k]} steps but meta/episode_ends ends at {steps} "
                          f"({extra} extra)")
    else:
        if an.tail_end_entries and not is_postbc:  # no postbc commit can be under way: the boundaries are wrong
            errors.append(overrun_message(ends, lengths))
        elif an.tail_end_entries or tail_keys:
            what = [f"data/{k}: {v} steps" for k, v in sorted(tail_keys.items())]
            if an.tail_end_entries:
                what.append("1 unwritten meta/episode_ends entry")
            warnings.append("uncommitted tail past the last committed episode (an interrupted write, or an "
                            "episode being recorded right now): "
                            + ", ".join(what) + "; open in append mode to recover (EpisodeStore.open(path, 'a'))")

    if is_postbc:
        _check_meta(root["meta"], n, errors, warnings, report)

    if scan_values:
        ends_c = ends[:n]
        for key, arr in data.items():
            if arr.ndim < 1:
                continue
            stop = min(steps, int(arr.shape[0])) if not an.errors else int(arr.shape[0])
            if not _check_chunks(f"data/{key}", arr, stop, errors):
                continue
            if np.dtype(arr.dtype).kind == "f" and not an.errors:
                errors += _scan_nonfinite(key, arr, ends_c, steps)


def _kind_name(dt: np.dtype) -> str:
    return {"O": "object", "U": "unicode string", "S": "byte string", "V": "void/structured",
            "c": "complex", "M": "datetime", "m": "timedelta"}.get(dt.kind, dt.kind)


def _check_meta(meta, n: int, errors: list[str], warnings: list[str], report: ValidationReport) -> None:
    arrays = {k: v for k, v in _arrays(meta, "meta", report).items() if k != "episode_ends"}
    listed = set(array_names(meta))
    for name, (dtype, _fill) in META_FIELDS.items():
        arr = arrays.get(name)
        if arr is None and name in listed:
            continue  # its damaged metadata is reported already
        if arr is None:
            errors.append(f"missing meta/{name} (per-episode {name}, {n} rows expected)")
            continue
        if arr.ndim != 1:
            errors.append(f"meta/{name} has shape {arr.shape}, expected ({n},)")
            continue
        if arr.shape[0] < n:
            errors.append(f"meta/{name} has {arr.shape[0]} rows but {n} episodes are committed")
        elif arr.shape[0] > n:
            warnings.append(f"meta/{name} has {arr.shape[0] - n} partial row(s) past the {n} committed episodes "
                            "(an interrupted commit); open in append mode to recover")
        dt = np.dtype(arr.dtype)
        if dtype.kind == "U":
            if dt.kind != "U":
                errors.append(f"meta/{name} has dtype {dt}, expected fixed-width unicode like {dtype}")
                continue
        elif dt != dtype:
            errors.append(f"meta/{name} has dtype {dt}, expected {dtype}")
            continue
        if not _check_chunks(f"meta/{name}", arr, min(n, arr.shape[0]), errors):
            continue
        values = np.asarray(arr[:n])
        if name == "success":
            bad = np.nonzero(~np.isin(values, [-1, 0, 1]))[0]
            if bad.size:
                errors.append(f"meta/success: episode {int(bad[0])} has label {int(values[bad[0]])}; "
                              "labels are -1 (unknown), 0 (failure), 1 (success)")
        if name == "source":
            unknown = sorted({str(v) for v in values if str(v) and str(v) not in SOURCES})
            if unknown:
                errors.append(f"meta/source has unknown value(s) {unknown}; allowed: {', '.join(SOURCES)} or ''")


def _scan_nonfinite(key: str, arr, ends: np.ndarray, steps: int) -> list[str]:
    """Errors naming the episode and step of NaN/inf rows of `arr` (committed rows only)."""
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize)
    chunk_t = int(arr.chunks[0]) if arr.chunks else 1
    block = max(chunk_t, (SCAN_BLOCK_BYTES // row_bytes) // chunk_t * chunk_t)
    bad_rows: list[int] = []
    n_bad = 0
    for a in range(0, steps, block):
        x = np.asarray(arr[a: min(steps, a + block)])
        ok = finite_rows(x)
        rows = np.nonzero(~ok)[0]
        n_bad += rows.size
        bad_rows += [a + int(r) for r in rows[: MAX_FINDINGS_PER_KEY - len(bad_rows)]]
    out = []
    for r in bad_rows:
        ep = int(np.searchsorted(ends, r, side="right"))
        start = int(ends[ep - 1]) if ep else 0
        out.append(f"data/{key} holds NaN/inf at episode {ep} step {r - start} (row {r})")
    if n_bad > len(bad_rows):
        out.append(f"data/{key}: {n_bad - len(bad_rows)} more step(s) with NaN/inf")
    return out
