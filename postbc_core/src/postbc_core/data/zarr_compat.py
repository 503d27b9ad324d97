"""Every zarr call of the data package: what differs between zarr-python 2 and 3, and zarr failures as StoreError.

The robot's ROS Humble Python 3.10 gets zarr-python 2; zarr-python 3 needs Python 3.11. Both write zarr format 2
(the episode store's format) through the functions here, so nothing else in the package branches on the version.
A chunk is written to a temporary file and renamed into place (zarr 2's DirectoryStore does it itself, its temporaries
end in `.partial`; on zarr 3 `AtomicLocalStore` does it, its temporaries end in TMP_SUFFIX), so a killed writer
leaves either a chunk's old or its new content. Array metadata or a chunk that cannot be read raises StoreError
naming the array (and the rows), never a codec's own exception.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from postbc_core.data.codecs import ensure_registered, register_for_array_dir
from postbc_core.errors import StoreError, storage_error

ZARR_MAJOR = int(zarr.__version__.split(".")[0])
TMP_SUFFIX = ".postbc-tmp"


def is_tmp_name(name: str) -> bool:
    """Whether `name` is a temporary file of an atomic chunk write (ours on zarr 3, zarr 2's `.partial`)."""
    return name.endswith(TMP_SUFFIX) or name.endswith(".partial")


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


# Per version: open_group(path, mode) opens a directory store (mode "r" read-only; writes are zarr format 2, atomic per chunk);
# create_array(group, name, ...) takes one compressor; array_compressor / array_nbytes_stored describe an array;
# open_zip_group opens a .zip store read-only.
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

    def open_group(path: Path, mode: str):
        if mode == "r":
            return zarr.open_group(store=_LocalStore(path, read_only=True), mode="r")
        return zarr.open_group(store=AtomicLocalStore(path), mode=mode, zarr_format=2)

    def create_array(group, name, *, shape, chunks, dtype, compressor, fill_value):
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
    def open_group(path: Path, mode: str):
        return zarr.open_group(zarr.DirectoryStore(str(path)), mode=mode)

    def create_array(group, name, *, shape, chunks, dtype, compressor, fill_value):
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
        return open_group(path, "r")
    except Exception as exc:  # zarr raises several types for "not a group"
        raise StoreError(f"{path}: not a zarr group ({type(exc).__name__}: {exc})") from exc


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
    if d is not None:  # a camera codec of imagecodecs: registered before zarr parses the metadata
        register_for_array_dir(d / name, f"{store_path}: {where}/{name}")
    try:
        return group[name]
    except Exception as exc:
        if "imagecodecs_" in str(exc):  # a zip store (no directory to look into) with a camera codec
            try:
                ensure_registered("imagecodecs_", f"{store_path}: {where}/{name}")
                return group[name]
            except StoreError:
                raise
            except Exception:
                pass
        raise StoreError(f"{store_path}: {where}/{name} has unreadable array metadata (.zarray: {type(exc).__name__}: "
                         f"{exc}); the store is damaged: `postbc data validate {store_path}` lists every problem; "
                         "restore the store from a copy") from None


def group_arrays_checked(group, where: str, store_path) -> dict[str, Any]:
    """{name: array} of a group, raising StoreError that names the first array whose metadata is damaged."""
    return {name: open_array(group, name, where, store_path) for name in array_names(group)}


def has_member(group, name: str) -> bool:
    """Whether `group` holds a member `name` (False, not an exception, when zarr cannot tell)."""
    try:
        return name in group
    except Exception:
        return False


def resize(arr, length: int) -> None:
    """Set the length of `arr` along axis 0 (the time or episode axis), keeping the per-row shape."""
    arr.resize((length, *arr.shape[1:]))


# reading arrays: damaged chunks become StoreError naming the array and the rows

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

