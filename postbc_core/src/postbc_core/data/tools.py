"""Dataset tools over episode stores: info, merge, split, drop, diffusion_policy export/import.

Every tool validates its inputs first (naming the problem), writes its output under a temporary
name beside the destination and renames it into place at the end, so a failure never leaves a
half-written store at the destination (nor, for an in-place `drop`, loses the original).
Copies stream episode by episode in bounded blocks, so image stores need not fit in memory.

Outputs: never inside a store (an input or any other), never over an existing path; the tool holds the
output's writer lock while it builds it, so the temporaries left by a killed tool are removed by the
next write to that path (`remove_leftover_temporaries`). An in-place `drop` rewrites the real directory of a
symlinked store and refuses a store directory that holds anything besides the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from postbc_core.data.codecs import IMAGE_SUFFIX, RAW, codec_of_array, is_known_codec
from postbc_core.data.layout import FORMAT_NAME, META_FIELDS, check_key_name, create_data_array, lowdim_compressor
from postbc_core.data.lock import WriterLock
from postbc_core.data.paths import foreign_entries, real_path, refuse_foreign_entries, refuse_inside_store
from postbc_core.data.recovery import (
    backup_name,
    refuse_if_backup,
    remove_leftover_temporaries,
    restore_backup,
    temporary_sibling,
)
from postbc_core.data.store import EpisodeStore
from postbc_core.data.zarr_compat import (
    array_compressor,
    array_nbytes_stored,
    create_array,
    is_tmp_name,
    open_group,
    open_group_readonly,
    read_rows,
)
from postbc_core.data.validate import ValidationReport, check_group, validate_store
from postbc_core.errors import ConfigError, StoreError, storage_errors

log = logging.getLogger(__name__)

COPY_BLOCK_BYTES = 32 << 20  # rows copied per block: ~32 MiB of steps


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _open_validated(path: str | os.PathLike, *, scan_values: bool = True) -> EpisodeStore:
    """Validate `path` (raise StoreValidationError naming every problem), then open it read-only."""
    restore_backup(path)
    report = validate_store(path, scan_values=scan_values)
    report.raise_for_problems()
    for w in report.warnings:
        log.warning("%s: %s", path, w)
    return EpisodeStore.open(path, "r")


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _check_output(out: Path, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an output inside a store (naming the input store it is in) or over an existing path; no side effects."""
    refuse_inside_store(out, inputs)
    if out.exists() or out.is_symlink():
        raise StoreError(f"output {out} already exists: remove it or choose another path")
    refuse_if_backup(out)


@contextlib.contextmanager
def _outputs(outs: Sequence[Path], inputs: Sequence[str | os.PathLike] = ()):
    """Check the outputs, create their parent directories, hold their writer locks (no other writer creates them
    meanwhile) and remove what a killed earlier run left beside them. Directories created here are removed again
    when the tool fails."""
    for out in outs:
        _check_output(out, inputs)
    created: list[Path] = []
    locks: list[WriterLock] = []
    try:
        with storage_errors(f"creating the output directory of {outs[0]}"):
            for out in outs:
                missing = [d for d in [out.parent, *out.parent.parents] if not d.exists()]
                out.parent.mkdir(parents=True, exist_ok=True)
                created += reversed(missing)
        for out in outs:
            lock = WriterLock(out)
            lock.acquire()
            locks.append(lock)
            _check_output(out, inputs)  # again under the lock: another writer may have just created it
            remove_leftover_temporaries(out)
        yield
    except BaseException:
        for lock in locks:
            lock.release()
        locks = []
        for d in reversed(created):  # deepest first; only the ones still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        for lock in locks:
            lock.release()


def _block_rows(arrays: Iterable[Any]) -> int:
    row = sum(max(1, int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(a.dtype).itemsize) for a in arrays)
    return max(1, COPY_BLOCK_BYTES // max(row, 1))


def _copy_episodes(src: EpisodeStore, dst: EpisodeStore, episodes: Iterable[int],
                   rename: Mapping[str, str] | None = None) -> int:
    """Append episodes of `src` to `dst` with their metadata; returns how many were copied."""
    rename = dict(rename or {})
    keys = src.keys
    block = _block_rows(src.data(k) for k in keys)
    n = 0
    for i in episodes:
        meta = src.episode_meta(i)
        w = dst.episode_writer(task=meta["task"], source=meta["source"], operator=meta["operator"],
                               start_time=meta["start_time"], flush_bytes=COPY_BLOCK_BYTES)
        try:
            for a in range(meta["start"], meta["end"], block):
                b = min(meta["end"], a + block)
                w.extend({rename.get(k, k): src.rows(k, a, b) for k in keys})
            w.commit(meta["success"], end_time=meta["end_time"])
        except BaseException:
            w.discard()
            raise
        n += 1
    return n


def rewrite_key(src: str | os.PathLike, out: str | os.PathLike, key: str, compute, needs: Sequence[str],
                ee_delta_convention: str | None) -> Path:
    """Copy `src` into a new store `out` (metadata, codecs, every other key as stored) with data/<key> replaced per
    episode by compute({k: (T, ...) array for k in needs}) -> (T, ...) of the same per-step shape; `out` records
    `ee_delta_convention` (layout.EE_DELTA_CONVENTION_ATTR). The caller owns what the new values mean."""
    out = Path(out)
    _check_output(out, [src])
    with _open_validated(src) as store:
        schema = store.schema()
        missing = [k for k in (key, *needs) if k not in schema]
        if missing:
            raise StoreError(f"{src} has no data key(s) {missing} (it records {sorted(schema)})")
        shape, dtype = schema[key]
        keys = [k for k in store.keys if k != key]
        block = _block_rows(store.data(k) for k in keys)

        def fill(dst: EpisodeStore) -> None:
            for i in range(store.n_episodes):
                meta = store.episode_meta(i)
                new = np.asarray(compute(store.episode(i, list(needs))))
                if new.shape != (meta["end"] - meta["start"], *shape):
                    raise StoreError(f"{src} episode {i}: the new {key} has shape {new.shape}, expected "
                                     f"{(meta['end'] - meta['start'], *shape)}")
                w = dst.episode_writer(task=meta["task"], source=meta["source"], operator=meta["operator"],
                                       start_time=meta["start_time"], flush_bytes=COPY_BLOCK_BYTES)
                try:
                    for a in range(meta["start"], meta["end"], block):
                        b = min(meta["end"], a + block)
                        w.extend({**{k: store.rows(k, a, b) for k in keys},
                                  key: new[a - meta["start"]: b - meta["start"]].astype(dtype)})
                    w.commit(meta["success"], end_time=meta["end_time"])
                except BaseException:
                    w.discard()
                    raise

        with _outputs([out], [src]):
            _build(out, fill, camera_codecs(store), ee_delta_convention)
    return out


def _schema_str(schema) -> str:
    return ", ".join(f"{k} {shape} {dt}" for k, (shape, dt) in sorted(schema.items()))


def parse_rename(rename: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """A key mapping from a dict or from "OLD=NEW" strings."""
    if rename is None:
        return {}
    if isinstance(rename, Mapping):
        return dict(rename)
    out = {}
    for item in rename:
        old, sep, new = str(item).partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"rename entry {item!r} must look like OLD=NEW (e.g. action=cmd_joint_pos)")
        out[old] = new
    return out


def _check_rename(rename: Mapping[str, str], available: Sequence[str], where: str) -> None:
    missing = [k for k in rename if k not in available]
    if missing:
        raise ConfigError(f"rename names key(s) {missing} that {where} does not have (available: {list(available)})")
    final = [rename.get(k, k) for k in available]
    dup = sorted(k for k, c in Counter(final).items() if c > 1)
    if dup:
        raise ConfigError(f"rename would give several arrays the name(s) {dup}")
    for k in final:
        try:
            check_key_name(k)
        except StoreError as exc:
            raise ConfigError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------

def info(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a store: episodes, steps, per-key shape/dtype/chunks/compressor/bytes, episode length
    statistics, success counts, sources, tasks, format version and validation warnings."""
    restore_backup(path)
    report = validate_store(path, scan_values=False)
    report.raise_for_problems()
    with EpisodeStore.open(path, "r") as store:
        lengths = store.episode_lengths
        meta = store.meta_table()
        keys = {}
        for k in store.keys:
            arr = store.data(k)
            keys[k] = {
                "shape": list(arr.shape[1:]),
                "dtype": str(np.dtype(arr.dtype)),
                "chunks": list(arr.chunks),
                "codec": codec_of_array(arr),
                "compressor": array_compressor(arr),
                "bytes": int(store.n_steps * np.prod(arr.shape[1:], dtype=np.int64) * np.dtype(arr.dtype).itemsize),
                "bytes_stored": array_nbytes_stored(arr),
            }
        success = meta.get("success", np.full(store.n_episodes, -1, np.int8))
        return {
            "path": str(path),
            "format": store.attrs.get("format"),
            "format_version": store.attrs.get("format_version"),
            "created_by": store.attrs.get("created_by"),
            "episodes": store.n_episodes,
            "steps": store.n_steps,
            "episode_length": None if not lengths.size else {
                "min": int(lengths.min()), "max": int(lengths.max()),
                "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            },
            "success": {"success": int((success == 1).sum()), "failure": int((success == 0).sum()),
                        "unknown": int((success < 0).sum())},
            "sources": dict(Counter(str(s) or "unknown" for s in meta.get("source", []))),
            "tasks": dict(Counter(str(s) for s in meta.get("task", []))),
            "keys": keys,
            "bytes_stored": int(sum(v["bytes_stored"] for v in keys.values())),
            "warnings": list(report.warnings),
        }


# ---------------------------------------------------------------------------------------------
# merge / split / drop
# ---------------------------------------------------------------------------------------------

def camera_codecs(store: EpisodeStore) -> dict[str, str]:
    """{camera key: codec} of `store`'s image arrays, so a store rewritten from it keeps its codecs (a lossy codec
    decodes and encodes again: JPEG at the same quality changes a frame by about a grey level)."""
    return {k: c for k, c in store.codecs().items() if k.endswith(IMAGE_SUFFIX) and is_known_codec(c)}


def _build(out: Path, fill, codecs: Mapping[str, str] | None = None, ee_delta_convention: str | None = None) -> Path:
    """Create a store (camera `codecs`; `ee_delta_convention`: the sources', None = unknown) under a temporary sibling
    of `out`, fill it with `fill(store)`, rename into place (the caller holds `out`'s writer lock: see _outputs)."""
    tmp = temporary_sibling(out)
    try:
        with storage_errors(f"writing {out}"):
            with EpisodeStore.create(tmp, codecs=codecs, ee_delta_convention=ee_delta_convention) as dst:
                fill(dst)
            os.rename(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    return out


def _schema_difference(a: EpisodeStore, b: EpisodeStore) -> str:
    """What differs between the key sets of two stores, key by key."""
    sa, sb = a.schema(), b.schema()
    parts = []
    for k in sorted(set(sa) | set(sb)):
        if k not in sb:
            parts.append(f"data/{k} is only in {a.path}")
        elif k not in sa:
            parts.append(f"data/{k} is only in {b.path}")
        elif sa[k] != sb[k]:
            parts.append(f"data/{k} is {sa[k][0]} {sa[k][1]} per step in {a.path} but {sb[k][0]} {sb[k][1]} in {b.path}")
    return "; ".join(parts)


def merge(sources: Sequence[str | os.PathLike], out: str | os.PathLike, allow_repeats: bool = False) -> Path:
    """Concatenate the episodes of `sources` (same keys, shapes and dtypes) into a new store `out`. A store given
    twice (under any spelling: symlinks are resolved) is refused unless `allow_repeats` (then its episodes are
    copied once per mention)."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    if not sources:
        raise ConfigError("merge needs at least one source store")
    seen: dict[Path, Path] = {}
    for s in sources:
        first = seen.setdefault(real_path(s), s)
        if first is not s and not allow_repeats:
            same = f"{s} and {first} are" if str(s) != str(first) else f"{s} is"
            raise ConfigError(f"{same} the same store, given twice: merging would copy its episodes twice; give each "
                              "store once (or pass --allow-repeats to duplicate them on purpose)")
    _check_output(out, sources)
    stores = []
    try:
        for s in sources:
            stores.append(_open_validated(s))
        ref = next((st for st in stores if st.n_episodes), None)
        for st in stores:
            if st.n_episodes and st.schema() != ref.schema():
                raise StoreError(f"cannot merge {st.path} into {ref.path}: {_schema_difference(ref, st)}; every source "
                                 "needs the same keys, per-step shapes and dtypes (drop or rename keys with `postbc "
                                 "data export --keys/--rename` and re-import, or merge only matching stores)")

        # A copy keeps what its cmd_ee_delta means (data/layout.py EE_DELTA_CONVENTION_ATTR): sources that disagree
        # would give one store two meanings.
        conventions = {st.ee_delta_convention for st in stores if st.n_episodes and "cmd_ee_delta" in st.keys}
        if len(conventions) > 1:
            raise StoreError(f"cannot merge stores whose cmd_ee_delta conventions differ "
                             f"({sorted(map(str, conventions))}; None = recorded before the convention was fixed): "
                             "convert the older ones with `postbc data convert-ee-delta` first")
        convention = conventions.pop() if conventions else (ref.ee_delta_convention if ref is not None else None)

        def fill(dst):
            for st in stores:
                _copy_episodes(st, dst, range(st.n_episodes))

        with _outputs([out], sources):
            _build(out, fill, camera_codecs(ref) if ref is not None else None, convention)
        log.info("merged %d store(s) (%d episodes) into %s", len(stores), sum(s.n_episodes for s in stores), out)
        return out
    finally:
        for st in stores:
            st.close()


def split(src: str | os.PathLike, out_dir: str | os.PathLike, val_fraction: float = 0.1,
          seed: int = 0) -> dict[str, Path]:
    """Split by episode into out_dir/train.zarr and out_dir/val.zarr (diffusion_policy's get_val_mask:
    at least one episode on each side)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1)")
    out_dir = Path(out_dir)
    paths = {"train": out_dir / "train.zarr", "val": out_dir / "val.zarr"}
    for p in paths.values():
        _check_output(p, [src])
    with _open_validated(src) as store:
        if store.n_episodes < 2:
            raise StoreError(f"{src} has {store.n_episodes} episode(s); splitting needs at least 2")
        from postbc_core.data.sampler import get_val_mask  # lazy: the sampler module imports torch

        val = get_val_mask(store.n_episodes, val_fraction, seed=seed)
        tmps = {}
        with _outputs(list(paths.values()), [src]):
            try:
                with storage_errors(f"writing the split into {out_dir}"):
                    for name, mask in (("train", ~val), ("val", val)):
                        tmps[name] = temporary_sibling(paths[name])
                        with EpisodeStore.create(tmps[name], codecs=camera_codecs(store),
                                                 ee_delta_convention=store.ee_delta_convention) as dst:
                            _copy_episodes(store, dst, np.nonzero(mask)[0].tolist())
                    for name in paths:
                        os.rename(tmps[name], paths[name])
            except BaseException:
                for p in tmps.values():
                    _remove(p)
                raise
        log.info("split %s: %d train / %d val episodes", src, int((~val).sum()), int(val.sum()))
    return paths


# Test hook: called with "renamed_to_backup" between the two renames of an in-place drop (a test kills the process
# there). Never set outside tests.
_DROP_TEST_HOOK = None


def _hook_drop(point: str) -> None:
    if _DROP_TEST_HOOK is not None:
        _DROP_TEST_HOOK(point)


def episodes_to_drop(episodes: Iterable[int], n: int, src) -> list[int]:
    """The episode numbers (0..n-1, sorted) that `episodes` name; negative indices count from the end (-1 is the
    last). An index out of range, or two indices naming one episode (e.g. 0 and -3 of 3), is refused: the count
    dropped is always the count given."""
    given = [int(e) for e in episodes]
    if not given:
        raise ConfigError("no episodes given to drop")
    bad = [e for e in given if not -n <= e < n]
    if bad:
        raise ConfigError(f"episode index(es) {bad} out of range: {src} has {n} episodes (indices 0..{n - 1}, or "
                          f"-{n}..-1 from the end)")
    named: dict[int, list[int]] = {}
    for e in given:
        named.setdefault(e % n, []).append(e)
    repeats = {i: g for i, g in named.items() if len(g) > 1}
    if repeats:
        which = "; ".join(f"{' and '.join(map(str, g))} {'both' if len(g) == 2 else 'all'} name episode {i}"
                          for i, g in sorted(repeats.items()))
        raise ConfigError(f"{which} of {src} ({n} episodes): give each episode once")
    if len(named) == n:
        raise ConfigError(f"that is every episode of {src} ({n}): dropping them all would leave an empty store with "
                          f"no keys; delete the store instead if that is what you want")
    return sorted(named)


def drop(src: str | os.PathLike, episodes: Iterable[int], out: str | os.PathLike | None = None) -> Path:
    """Remove `episodes` (indices, negative from the end; see episodes_to_drop). out=None: in place, by building the
    result beside the real store directory (a symlink's target) and swapping directories (the original stays intact
    until the swap); a store directory holding anything besides the store is refused, never partly deleted."""
    src = Path(src)
    real = real_path(src)
    episodes = list(episodes)
    if out is not None:
        out = Path(out)
        _check_output(out, [src])
        with _open_validated(src) as store:
            n = store.n_episodes
            keep = [i for i in range(n) if i not in set(episodes_to_drop(episodes, n, src))]
            with _outputs([out], [src]):
                _build(out, lambda dst: _copy_episodes(store, dst, keep), camera_codecs(store),
                       store.ee_delta_convention)
        log.info("%s: wrote %d of %d episodes to %s", src, len(keep), n, out)
        return out
    restore_backup(src)  # a previous in-place drop killed between its renames: finish it backwards first
    lock = WriterLock(src)  # no recorder may append while the store is rewritten (the same lock through a symlink)
    lock.acquire()
    try:
        remove_leftover_temporaries(src)
        with _open_validated(src) as store:
            n = store.n_episodes
            dropped = episodes_to_drop(episodes, n, src)
            keep = [i for i in range(n) if i not in set(dropped)]
            refuse_foreign_entries(src, "rewrite it in place")
            lost = sorted(k for k in array_names_in(real / "meta") if k != "episode_ends" and k not in META_FIELDS)
            if lost:
                raise StoreError(f"{src}: refusing to rewrite it in place: meta/{', meta/'.join(lost)} would not be "
                                 "carried over (only the postbc episode metadata is); use --out to write the result "
                                 "to a new store and keep this one")
            tmp = temporary_sibling(src)
            try:
                with storage_errors(f"rewriting {src} in place (the store is unchanged)"):
                    with EpisodeStore.create(tmp, codecs=camera_codecs(store),
                                             ee_delta_convention=store.ee_delta_convention) as dst:
                        _copy_episodes(store, dst, keep)
            except BaseException:
                _remove(tmp)
                raise
        # Between these two renames only the backup holds the store: EpisodeStore.open restores it (restore_backup).
        old = backup_name(src)
        os.rename(real, old)
        _hook_drop("renamed_to_backup")
        try:
            os.rename(tmp, real)
        except BaseException:
            os.rename(old, real)
            _remove(tmp)
            raise
        _remove_backup(old, src)
        log.info("%s: dropped episode(s) %s in place (%d left)", src, dropped, len(keep))
        return src
    finally:
        lock.release()


def array_names_in(group_dir: Path) -> list[str]:
    """Names of the array directories in a store's group directory."""
    return sorted(p.name for p in group_dir.iterdir() if (p / ".zarray").is_file()) if group_dir.is_dir() else []


def _remove_backup(old: Path, src: Path) -> None:
    """Delete the replaced store directory, unless something not part of a store appeared in it meanwhile."""
    foreign = foreign_entries(old)
    if foreign:
        log.warning("%s: kept the replaced store directory %s: it holds %s, not part of the store; move out what you "
                    "need and delete it", src, old, ", ".join(foreign))
        return
    shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------
# diffusion_policy interop
# ---------------------------------------------------------------------------------------------

def _is_zip(path: Path) -> bool:
    return path.name.endswith(".zip")


def export_diffusion_policy(src: str | os.PathLike, out: str | os.PathLike, keys: Sequence[str] | None = None,
                            rename: Mapping[str, str] | Sequence[str] | None = None) -> Path:
    """Write a plain diffusion_policy ReplayBuffer store (data/<key>, meta/episode_ends only).
    `out` ending in .zip (e.g. demo.zarr.zip) gives a zip store."""
    out = Path(out)
    rename = parse_rename(rename)
    _check_output(out, [src])
    with _open_validated(src) as store, contextlib.ExitStack() as stack:
        keys = store.keys if keys is None else list(keys)
        for k in keys:
            store.data(k)
        _check_rename(rename, keys, str(src))
        stack.enter_context(_outputs([out], [src]))
        tmp = temporary_sibling(out)
        zip_tmp = tmp.with_name(tmp.name + ".zip") if _is_zip(out) else None
        try:
            with storage_errors(f"exporting to {out}"):
                root = open_group(tmp, "w")
                data = root.require_group("data")
                n = store.n_steps
                for k in keys:
                    arr = store.data(k)
                    codec = codec_of_array(arr)
                    codec = codec if rename.get(k, k).endswith(IMAGE_SUFFIX) and is_known_codec(codec) else RAW
                    dst = create_data_array(data, rename.get(k, k), tuple(arr.shape[1:]), np.dtype(arr.dtype), length=n,
                                            codec=codec)
                    block = max(1, _block_rows([arr]) // dst.chunks[0]) * dst.chunks[0]  # whole chunks per write
                    for a in range(0, n, block):
                        dst[a: min(n, a + block)] = read_rows(arr, a, min(n, a + block), f"data/{k}", src)
                meta = root.require_group("meta")
                ends = create_array(meta, "episode_ends", shape=(store.n_episodes,),
                                    chunks=(max(1, store.n_episodes),), dtype=np.int64,
                                    compressor=lowdim_compressor(), fill_value=0)
                if store.n_episodes:
                    ends[:] = store.episode_ends
                if zip_tmp is not None:
                    _zip_dir(tmp, zip_tmp)
                    _remove(tmp)
                    os.rename(zip_tmp, out)
                else:
                    os.rename(tmp, out)
        except BaseException:
            _remove(tmp)
            if zip_tmp is not None:
                _remove(zip_tmp)
            raise
    log.info("exported %s (%d episodes, keys %s) to %s", src, store.n_episodes, [rename.get(k, k) for k in keys], out)
    return out


def _zip_dir(src_dir: Path, zip_path: Path) -> None:
    """Zip a directory store (uncompressed members: chunks are compressed already; zarr's ZipStore
    convention), keys relative to the store root."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for dirpath, _dirs, files in sorted(os.walk(src_dir)):
            for name in sorted(files):
                if is_tmp_name(name):
                    continue
                full = Path(dirpath) / name
                zf.write(full, full.relative_to(src_dir).as_posix())


def import_diffusion_policy(src: str | os.PathLike, out: str | os.PathLike,
                            rename: Mapping[str, str] | Sequence[str] | None = None, task: str = "",
                            source: str = "import") -> Path:
    """Convert a diffusion_policy ReplayBuffer store (directory or .zarr.zip) into a new postbc store.
    Every episode gets `task`, `source`, success unknown and unknown (NaN) times."""
    src, out = Path(src), Path(out)
    rename = parse_rename(rename)
    _check_output(out, [src])
    root = open_group_readonly(src)
    if root.attrs.get("format") == FORMAT_NAME:
        log.info("%s is already a postbc store; importing copies it with the given task/source", src)
    report = ValidationReport(path=str(src))
    check_group(root, report, import_mode=True)
    report.raise_for_problems()
    for w in report.warnings:
        log.warning("%s: %s", src, w)
    data = {k: root["data"][k] for k in sorted(root["data"].array_keys())}
    _check_rename(rename, list(data), str(src))
    extra_meta = sorted(k for k in root["meta"].array_keys() if k != "episode_ends")
    if extra_meta:
        log.info("%s: meta arrays %s are not imported (only episode_ends is)", src, extra_meta)
    ends = np.asarray(root["meta"]["episode_ends"][:]).astype(np.int64)
    block = _block_rows(data.values())

    def fill(dst: EpisodeStore) -> None:
        start = 0
        for end in ends:
            w = dst.episode_writer(task=task, source=source, start_time=float("nan"), flush_bytes=COPY_BLOCK_BYTES)
            try:
                for a in range(start, int(end), block):
                    b = min(int(end), a + block)
                    w.extend({rename.get(k, k): read_rows(arr, a, b, f"data/{k}", src) for k, arr in data.items()})
                w.commit(None, end_time=float("nan"))
            except BaseException:
                w.discard()
                raise
            start = int(end)

    with _outputs([out], [src]):
        _build(out, fill)  # a foreign store's cmd_ee_delta, if any, has no known convention
    log.info("imported %s (%d episodes, %d steps) into %s", src, len(ends), int(ends[-1]) if len(ends) else 0, out)
    return out
