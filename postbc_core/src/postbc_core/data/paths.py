"""Where things may be written, by store path: one store has one name (symlinks resolved), nothing is written inside a
store, and a store directory is replaced or rewritten only when everything in it belongs to the store.

A store directory holds the store and nothing else: no store (and no command's output directory) is created inside
another (`refuse_inside_store`, `make_output_dir`), and `overwrite` and in-place rewrites refuse a directory holding
anything that is not part of the store (`foreign_entries`) instead of deleting it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from postbc_core.data.zarr_compat import is_tmp_name
from postbc_core.errors import ConfigError, StoreError, storage_errors

log = logging.getLogger(__name__)


def real_path(path: str | os.PathLike) -> Path:
    """`path` absolute with every symlink resolved. Locks, backups, temporaries and in-place rewrites key on it, so a
    symlink to a store and the store itself are one store (one writer lock, one directory rewritten)."""
    return Path(os.path.realpath(path))


def _is_zarr_node(d: Path) -> bool:
    return any((d / m).is_file() for m in (".zgroup", ".zarray", "zarr.json"))


def enclosing_store(path: str | os.PathLike) -> Path | None:
    """The store strictly above `path` (symlinks resolved): the outermost of the nearest run of zarr group or array
    directories above it (for .../s.zarr/meta/x that is s.zarr, not meta), or None."""
    found = None
    for parent in real_path(path).parents:
        if _is_zarr_node(parent):
            found = parent
        elif found is not None:
            break
    return found


def refuse_inside_store(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "output") -> None:
    """StoreError when `path` is (inside) one of the `inputs` or inside any zarr store: a store directory holds only
    the store, so that replacing or rewriting it in place (`--overwrite`, `postbc data drop`) deletes nothing else."""
    real = real_path(path)
    for src in inputs:
        s = real_path(src)
        if real == s:
            raise StoreError(f"{what} {path} is the input store {src}: choose a new path for the {what}")
        if s in real.parents:
            raise StoreError(f"{what} {path} is inside the input store {src}: nothing is written inside a store; "
                             f"choose a path outside {src}")
    enc = enclosing_store(path)
    if enc is not None:
        raise StoreError(f"{what} {path} is inside the zarr store {enc}: nothing is written inside a store; choose "
                         f"a path outside {enc}")


def make_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create a command's output directory (parents too) after refusing one inside a zarr store; a full disk,
    read-only or forbidden directory, or a file in the way, is a StorageError naming the path. Every command that
    writes a run / report directory (train, eval, replay, finetune, pipeline, coverage, sim curve) creates it here."""
    path = Path(path)
    refuse_inside_store(path, what=what)
    with storage_errors(f"creating the {what} directory {path}"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_output_dir(out: Path, *, overwrite: bool, own_outputs: Callable[[Path], list[Path]], owner: str,
                       replaces: str, kind: str = "directory", inputs: Iterable[str | os.PathLike] = (),
                       remove: bool = True) -> None:
    """Claim a command's --out before it writes anything: refuse a file, a path inside a store (or one of the
    `inputs`), and a non-empty directory unless `overwrite`; with `overwrite` (and `remove`), delete only
    `own_outputs(out)`, the previous run's outputs, and leave everything else there. `owner` names that previous
    run ("run", "pipeline"), `replaces` what --overwrite replaces (for the message), `kind` what --out must be."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a {kind}; choose another --out")
    refuse_inside_store(out, inputs, what="--out")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(f"--out {out} is not empty ({shown}); pass --overwrite to replace {replaces}, or choose "
                          "another --out")
    if not remove:
        return
    removed = own_outputs(out)
    with storage_errors(f"removing the previous {owner}'s outputs in {out}"):
        for p in removed:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    log.warning("--overwrite: removed the previous %s's %s from %s", owner,
                ", ".join(p.name for p in removed) or "(nothing)", out)


_CHUNK_NAME = re.compile(r"\d+(\.\d+)*")
_STORE_ROOT_FILES = (".zgroup", ".zattrs", ".zmetadata")
_GROUP_FILES = (".zgroup", ".zattrs")
_ARRAY_FILES = (".zarray", ".zattrs")


def _foreign_in_array(d: Path, rel: str, top: bool = True) -> list[str]:
    """Entries of an array directory that are not its metadata, chunks (nested chunk directories too) or our
    temporary files."""
    out = []
    for e in sorted(d.iterdir()):
        if (top and e.name in _ARRAY_FILES) or is_tmp_name(e.name):
            continue
        if _CHUNK_NAME.fullmatch(e.name) and not e.is_symlink():
            if e.is_file():
                continue
            if e.is_dir():
                out += _foreign_in_array(e, f"{rel}/{e.name}", top=False)
                continue
        out.append(f"{rel}/{e.name}")
    return out


def foreign_entries(path: str | os.PathLike) -> list[str]:
    """Names (relative to the store directory `path`) of everything in it that is not part of an episode store: the
    root metadata, data/<array> and meta/<array> with their chunks, and our temporary files are; a README, a nested
    store, a symlink or any other file are not."""
    root = Path(path)
    out = []
    for e in sorted(root.iterdir()):
        if e.name in _STORE_ROOT_FILES or is_tmp_name(e.name):
            continue
        if e.name in ("data", "meta") and e.is_dir() and not e.is_symlink():
            for m in sorted(e.iterdir()):
                rel = f"{e.name}/{m.name}"
                if m.name in _GROUP_FILES or is_tmp_name(m.name):
                    continue
                if m.is_dir() and not m.is_symlink() and (m / ".zarray").is_file():
                    out += _foreign_in_array(m, rel)
                    continue
                out.append(rel)
            continue
        out.append(e.name)
    return out


def short_list(names: list[str], limit: int = 8) -> str:
    """The first `limit` names comma-separated, then how many more (for messages)."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def refuse_foreign_entries(path: str | os.PathLike, action: str) -> None:
    """StoreError naming what in the store directory `path` is not part of the store, before `action` (which would
    delete the directory) runs."""
    foreign = foreign_entries(path)
    if foreign:
        raise StoreError(f"{path}: refusing to {action}: the store directory also holds {short_list(foreign)}, which "
                         f"{'is' if len(foreign) == 1 else 'are'} not part of the episode store and would be deleted; "
                         f"move {'it' if len(foreign) == 1 else 'them'} out of {path} first")


def check_replaceable(path: Path, real: Path) -> None:
    """`overwrite` replaces an episode store and nothing else: not a file, not a training run or any other
    directory, not files that were put inside a store. An empty directory is fine. `real` is `real_path(path)`."""
    if not real.is_dir():
        raise StoreError(f"{path} is a file, not an episode store: overwrite replaces only an episode store; choose "
                         "another path (or remove the file yourself)")
    entries = sorted(e.name for e in real.iterdir())
    if not entries:
        return
    if not ((real / ".zgroup").is_file() and (real / "data").is_dir() and (real / "meta" / "episode_ends").is_dir()):
        raise StoreError(f"{path} is not an episode store (it holds {short_list(entries)}): overwrite replaces only an "
                         "episode store; choose another path (or remove that directory yourself)")
    refuse_foreign_entries(path, "overwrite it")
