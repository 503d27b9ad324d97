"""`postbc data <verb>`: inspect, validate and reshape episode stores.

Each verb is a plain typed function (tyro builds its command line from the signature) that prints a
readable result and returns an exit code. User errors propagate as PostBCError (the main CLI prints
them and exits 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal, get_args

import tyro

from postbc_core.data import tools
from postbc_core.data.validate import validate_store

Positional = tyro.conf.Positional
ExportFormat = Literal["zarr", "mcap", "lerobot"]
EXPORT_FORMATS = get_args(ExportFormat)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def info(path: Positional[str], json_output: bool = False) -> int:
    """Summarise an episode store: episodes, steps, keys, lengths, labels, sources.

    Args:
        path: The store directory (e.g. data/demos.zarr).
        json_output: Print the summary as JSON instead of text.
    """
    d = tools.info(path)
    if json_output:
        print(json.dumps(d, indent=2, sort_keys=True))
        return 0
    print(f"{d['path']}  (format {d['format']} v{d['format_version']}, created by {d['created_by']})")
    print(f"episodes: {d['episodes']}   steps: {d['steps']}   stored: {_fmt_bytes(d['bytes_stored'])}")
    if d["episode_length"]:
        el = d["episode_length"]
        print(f"episode length: min {el['min']}  median {el['median']:.0f}  mean {el['mean']:.1f}  max {el['max']}")
    s = d["success"]
    print(f"success: {s['success']}   failure: {s['failure']}   unknown: {s['unknown']}")
    if d["sources"]:
        print("sources: " + ", ".join(f"{k} {v}" for k, v in sorted(d["sources"].items())))
    if d["tasks"]:
        print("tasks: " + ", ".join(f"{k or '(none)'!s} {v}" for k, v in sorted(d["tasks"].items())))
    width = max((len(k) for k in d["keys"]), default=3)
    print(f"{'key':<{width}}  {'per-step shape':<16} {'dtype':<8} {'chunks':<20} {'stored':>10}  {'codec':<16}"
          " compressor")
    for k, v in sorted(d["keys"].items()):
        print(f"{k:<{width}}  {str(tuple(v['shape'])):<16} {v['dtype']:<8} {str(tuple(v['chunks'])):<20} "
              f"{_fmt_bytes(v['bytes_stored']):>10}  {v['codec']:<16} {v['compressor']}")
    for w in d["warnings"]:
        print(f"warning: {w}")
    return 0


def validate(path: Positional[str], skip_values: bool = False) -> int:
    """Check a store's layout, dtypes, lengths, metadata and values; list every problem (every damaged array and
    chunk too) and exit 1 if it has errors.

    Args:
        path: The store directory.
        skip_values: Skip reading the data chunks (the damaged-chunk check and the NaN/inf scan; faster on large
            stores).
    """
    report = validate_store(path, scan_values=not skip_values)
    print(report)
    return 0 if report.ok else 1


def merge(sources: Positional[tuple[str, ...]], out: str, allow_repeats: bool = False) -> int:
    """Concatenate stores with the same keys into a new store.

    Args:
        sources: Stores to merge, in order.
        out: The new store (must not exist, nor lie inside a store).
        allow_repeats: Accept a store given more than once (its episodes are copied once per mention).
    """
    path = tools.merge(list(sources), out, allow_repeats=allow_repeats)
    print(f"merged {len(sources)} store(s) into {path}: {tools.info(path)['episodes']} episodes")
    return 0


def split(src: Positional[str], out_dir: Positional[str], val_fraction: float = 0.1, seed: int = 0) -> int:
    """Split a store by episode into OUT_DIR/train.zarr and OUT_DIR/val.zarr.

    Args:
        src: The store to split (left unchanged).
        out_dir: Directory for train.zarr and val.zarr.
        val_fraction: Fraction of episodes for validation (at least one on each side).
        seed: Random seed of the episode assignment.
    """
    from postbc_core.errors import check_seed

    check_seed(seed)
    paths = tools.split(src, out_dir, val_fraction=val_fraction, seed=seed)
    for name, p in paths.items():
        print(f"{name}: {p} ({tools.info(p)['episodes']} episodes)")
    return 0


def drop(src: Positional[str], episodes: tuple[int, ...], out: str | None = None) -> int:
    """Remove episodes (by index; negative counts from the end). Each episode may be named once, and at least one
    must stay.

    Args:
        src: The store.
        episodes: Episode indices to remove.
        out: Write the result here instead of rewriting SRC in place.
    """
    before = tools.info(src)["episodes"]
    path = tools.drop(src, list(episodes), out=out)
    after = tools.info(path)["episodes"]
    print(f"dropped {before - after} episode(s): {path} now has {after} episodes")
    return 0


def convert_ee_delta(src: Positional[str], out: str) -> int:
    """Rewrite a store recorded before cmd_ee_delta had one meaning: cmd_ee_delta recomputed from cmd_joint_pos as
    deltas chained from the previous command (the convention every executor uses now), recorded in the new store.

    Args:
        src: The store (left unchanged).
        out: The new store.
    """
    from postbc_core.control.rows import convert_ee_delta_store

    path = convert_ee_delta_store(src, out)
    print(f"wrote {path}: {tools.info(path)['episodes']} episodes, cmd_ee_delta chained from the previous command")
    return 0


def export(src: Positional[str], out_path: Annotated[Positional[str | None], tyro.conf.arg(metavar="OUT")] = None,
           out: str | None = None, format: ExportFormat = "zarr", episodes: tuple[int, ...] = (),
           overwrite: bool = False, keys: tuple[str, ...] | None = None, rename: tuple[str, ...] = (),
           fps: float | None = None, images: Literal["raw", "jpeg"] = "raw", jpeg_quality: int = 90,
           action_key: str | None = None, gop: int = 2, crf: int = 23) -> int:
    """Export a store: a plain diffusion_policy ReplayBuffer store (--format zarr; OUT ending in .zarr.zip gives a
    zip store), an MCAP file of ROS 2 messages for Foxglove / Lichtblick (--format mcap), or a LeRobot v3.0 dataset
    directory (--format lerobot).

    Args:
        src: The postbc store.
        out_path: The output (or give it as --out).
        out: The output: a store (zarr), a .mcap file (mcap) or a directory (lerobot).
        format: zarr (diffusion_policy), mcap, or lerobot.
        episodes: Episode indices to export (negative from the end; default all). mcap and lerobot only.
        overwrite: Replace an existing output of the same kind (mcap and lerobot; zarr never overwrites).
        keys: zarr: data keys to export (default: all).
        rename: zarr: key renames as OLD=NEW (e.g. cmd_joint_pos=action).
        fps: Steps per second (lerobot: a whole number; default from the stored timestamps; mcap: only for a store
            without timestamps).
        images: mcap: camera frames as raw sensor_msgs/Image (exact) or jpeg sensor_msgs/CompressedImage.
        jpeg_quality: mcap --images jpeg: JPEG quality 1..100.
        action_key: lerobot: the store key exported as `action` (default cmd_joint_pos, else cmd_ee_delta).
        gop: lerobot: keyframe interval of the H.264 videos (LeRobot's default 2).
        crf: lerobot: H.264 quality (0 lossless .. 51; lower is larger).
    """
    from postbc_core.errors import ConfigError

    if out_path is not None and out is not None and out_path != out:
        raise ConfigError(f"two outputs given ({out_path} and --out {out}): give one")
    dest = out if out is not None else out_path
    if dest is None:
        raise ConfigError("no output given: pass --out PATH (a .mcap file, a LeRobot directory or a store)")
    zarr_only = {"--keys": keys is not None, "--rename": bool(rename)}
    if format != "zarr" and any(zarr_only.values()):
        raise ConfigError(f"{', '.join(k for k, v in zarr_only.items() if v)} apply to --format zarr only")
    if format == "zarr":
        if episodes or overwrite:
            raise ConfigError("--episodes and --overwrite apply to --format mcap / lerobot; for a diffusion_policy "
                              "store drop episodes with `postbc data drop --out` first, and remove an old output")
        path = tools.export_diffusion_policy(src, dest, keys=list(keys) if keys is not None else None, rename=rename)
        print(f"exported {src} to {path}")
        return 0
    if format == "mcap":
        from postbc_core.interchange.mcap_export import export_mcap

        r = export_mcap(src, dest, episodes=episodes or None, images=images, jpeg_quality=jpeg_quality, fps=fps,
                        overwrite=overwrite)
        print(f"exported {len(r['episodes'])} episode(s), {r['steps']} steps of {src} to {r['path']}: "
              + ", ".join(f"{t} {n}" for t, n in sorted(r["messages"].items())))
        return 0
    if format == "lerobot":
        from postbc_core.interchange.lerobot import export_lerobot

        r = export_lerobot(src, dest, episodes=episodes or None, fps=fps, action_key=action_key, gop=gop, crf=crf,
                           overwrite=overwrite)
        print(f"exported {len(r['episodes'])} episode(s), {r['frames']} frames at {r['fps']} fps of {src} to "
              f"{r['path']} (LeRobot v3.0; features {', '.join(r['features'])})")
        return 0
    raise ConfigError(f"--format {format!r} is not one of {EXPORT_FORMATS}")


def import_(src: Positional[str], out: Positional[str], rename: tuple[str, ...] = (), task: str = "",
            source: str = "import", format: Literal["zarr", "lerobot"] = "zarr") -> int:
    """Import a diffusion_policy ReplayBuffer store (directory or .zarr.zip; --format zarr) or a LeRobot v3 dataset
    directory (--format lerobot) as a new postbc store.

    Args:
        src: The diffusion_policy store, or the LeRobot dataset directory.
        out: The new postbc store (must not exist).
        rename: zarr: key renames as OLD=NEW (e.g. action=cmd_joint_pos).
        task: Task name recorded for every episode (lerobot: default each episode's own task).
        source: Source label recorded for every episode (lerobot: unless a postbc export recorded its own).
        format: zarr (diffusion_policy) or lerobot.
    """
    if format == "lerobot":
        from postbc_core.errors import ConfigError
        from postbc_core.interchange.lerobot import import_lerobot

        if rename:
            raise ConfigError("--rename applies to --format zarr only")
        r = import_lerobot(src, out, task=task or None, source=source)
        print(f"imported {src} into {r['path']}: {r['episodes']} episodes, {r['steps']} steps, keys {r['keys']}")
        return 0
    path = tools.import_diffusion_policy(src, out, rename=rename, task=task, source=source)
    d = tools.info(path)
    print(f"imported {src} into {path}: {d['episodes']} episodes, {d['steps']} steps, keys {sorted(d['keys'])}")
    return 0


# -- viewers (issue 24): Rerun ---------------------------------------------------------------------------------------
def view(src: Positional[str], episode: tuple[int, ...] = (0,), checkpoint: str | None = None, save: str | None = None,
         spawn: bool | None = None, overwrite: bool = False, n_action_steps: int | None = None, seed: int = 0) -> int:
    """Show episodes in Rerun: cameras, joints, commands, reward / done, labels, and a policy's predicted chunks.
    Without a display (or with --save) the recording is written to an .rrd file; open it with `rerun FILE.rrd`.

    Args:
        src: The store.
        episode: Episode indices to show (negative from the end).
        checkpoint: A policy checkpoint or run directory: show the chunks it predicts from the recorded observations.
        save: Write the recording to this .rrd file instead of opening a viewer.
        spawn: Open the Rerun viewer (default: when a display is there and no --save).
        overwrite: Replace an existing --save file.
        n_action_steps: Actions of each chunk run before the policy replans (default its chunk length).
        seed: Seed of the policy's diffusion noise.
    """
    from postbc_core.interchange.rerun_view import view as _view

    r = _view(src, episodes=episode, checkpoint=checkpoint, save=save, spawn=spawn, overwrite=overwrite,
              n_action_steps=n_action_steps, seed=seed)
    chunks = f", {r['chunks']} predicted chunks" if checkpoint else ""
    where = f"wrote {r['path']} (open it with `rerun {r['path']}`)" if r["path"] else "sent to the Rerun viewer"
    print(f"episode(s) {', '.join(map(str, r['episodes']))}: {r['steps']} steps{chunks}; {where}")
    return 0


DATA_COMMANDS: dict[str, Callable[..., int]] = {
    "info": info,
    "validate": validate,
    "merge": merge,
    "split": split,
    "drop": drop,
    "convert-ee-delta": convert_ee_delta,
    "export": export,
    "import": import_,
    "view": view,
}
