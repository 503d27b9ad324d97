"""`postbc data export --format lerobot` / `postbc data import --format lerobot`: episode stores as LeRobot v3.0
datasets, the layout LeRobot (0.4 on; `codebase_version` "v3.0") reads with `LeRobotDataset(repo_id, root=DIR)`:

    DIR/meta/info.json                                   codebase_version, fps, features, totals, path templates
    DIR/meta/stats.json                                  per feature: min max mean std count q01 q10 q50 q90 q99
    DIR/meta/tasks.parquet                               task (the pandas index) -> task_index
    DIR/meta/episodes/chunk-000/file-000.parquet         one row per episode: length, tasks, where its rows and
                                                         video frames are, its own stats (stats/<feature>/<stat>)
    DIR/data/chunk-000/file-000.parquet                  one row per step, one row group per episode
    DIR/videos/<video key>/chunk-000/file-000.mp4        every episode's frames of one camera, back to back
    DIR/meta/postbc.json                                 (ours; LeRobot ignores it) the key mapping and the episode
                                                         metadata LeRobot has no field for, so import restores them

Features: `observation.state` = joint_pos (6, rad) + gripper_pos (1); `action` = the --action-key (cmd_joint_pos
by default: 6 joint targets + gripper; or cmd_ee_delta); `observation.images.<camera>` = `<camera>_rgb` as H.264
video (yuv420p, every `gop`-th frame a keyframe, no B-frames); `next.reward`, `next.done` = reward, done (the
outcome of the step's action); every other numeric key of at most 1024 values per step as `postbc.<key>` (flattened
when it has several axes); LeRobot's `timestamp` (frame_index / fps, s), `frame_index`, `episode_index`, `index`,
`task_index`. Depth images are not exported (LeRobot stores depth as 12-bit quantised video; none of its readers
needs ours), nor wider keys.

Everything is written into a temporary directory that replaces DIR only when complete.

Shape legend: T steps of one episode, H x W images, D a feature's width.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from postbc_core.data.store import EpisodeStore
from postbc_core.errors import ConfigError, StoreError
from postbc_core.interchange.common import (
    atomic_output,
    camera_keys,
    camera_name,
    check_output,
    infer_fps,
    read_episode,
    require,
    select_episodes,
)
from postbc_core.robots.base import JOINT_NAMES

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
# LeRobot's defaults (lerobot/datasets/utils.py): files per chunk directory and the sizes at which its writer starts
# a new file. An export writes one data file and one video file per camera (see the module docstring).
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's DEFAULT_QUANTILES, stats keys q01 ... q99
DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
VCODECS = {"h264": "libx264"}  # what PyAV encodes with here, and what LeRobot's torchcodec / PyAV readers decode
ACTION_NAMES = {"cmd_joint_pos": [*JOINT_NAMES, "gripper"],
                "cmd_ee_delta": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]}
MAX_EXTRA_VALUES = 1024  # widest other key exported as a `postbc.<key>` column (values per step)
NO_TASK = "unspecified"  # LeRobot needs a task string per frame; a store episode without one gets this


def _fps_int(fps: float, given: bool) -> int:
    r = int(round(fps))
    if r < 1 or abs(fps - r) > 0.01 * r:
        how = "--fps" if given else "the stored timestamps"
        raise ConfigError(f"LeRobot needs a whole number of frames per second; {how} give {fps:.4g}: pass --fps N")
    return r


def _feature(dtype: np.dtype, shape: tuple[int, ...], names=None) -> dict:
    return {"dtype": str(np.dtype(dtype)), "shape": [int(np.prod(shape))] if shape else [1], "names": names}


class _Plan:
    """Which store keys become which LeRobot features (built once from the schema)."""

    def __init__(self, schema: dict, action_key: str | None):
        self.rgb, self.depth = camera_keys(schema)
        self.state = [k for k in ("joint_pos", "gripper_pos") if k in schema] if "joint_pos" in schema else []
        if action_key is None:
            action_key = next((k for k in ("cmd_joint_pos", "cmd_ee_delta") if k in schema), None)
        elif action_key not in schema:
            raise ConfigError(f"--action-key {action_key!r} is not a key of the store (it records {sorted(schema)})")
        self.action = action_key
        taken = {*self.rgb, *self.depth, *self.state, "reward", "done"} | ({action_key} if action_key else set())
        numeric = [k for k in schema if k not in taken and np.dtype(schema[k][1]).kind in "biuf"]
        # a parquet column per value: wide arrays (images under other names) would make rows of thousands of floats
        self.extra = sorted(k for k in numeric if int(np.prod(schema[k][0], dtype=np.int64)) <= MAX_EXTRA_VALUES)
        self.skipped = sorted([*self.depth, *(k for k in numeric if k not in self.extra)])
        self.features: dict[str, dict] = {}
        if self.state:
            d = sum(int(np.prod(schema[k][0])) for k in self.state)
            names = [*JOINT_NAMES, "gripper"] if d == len(JOINT_NAMES) + 1 else None
            self.features["observation.state"] = _feature(np.float32, (d,), names)
        if self.action:
            shape, _ = schema[self.action]
            names = ACTION_NAMES.get(self.action) if int(np.prod(shape)) == 7 else None
            self.features["action"] = _feature(np.float32, shape or (1,), names)
        for k, new in (("reward", "next.reward"), ("done", "next.done")):
            if k in schema:
                self.features[new] = _feature(schema[k][1], schema[k][0])
        for k in self.extra:
            self.features[f"postbc.{k}"] = _feature(schema[k][1], schema[k][0])
        self.columns = list(self.features)  # the non-video, non-default columns, in order
        for k in self.rgb:
            h, w, _ = schema[k][0]
            if h % 2 or w % 2:
                raise ConfigError(f"camera key {k!r} has {w}x{h} frames: H.264 in yuv420p needs an even width and "
                                  "height; crop or resize the images first")
            self.features[self.video_key(k)] = {"dtype": "video", "shape": [h, w, 3],
                                                "names": ["height", "width", "channels"], "info": {}}
        self.features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for k in DEFAULT_FEATURES[1:]:
            self.features[k] = {"dtype": "int64", "shape": [1], "names": None}

    @staticmethod
    def video_key(rgb_key: str) -> str:
        return f"observation.images.{camera_name(rgb_key)}"

    def columns_of(self, ep: dict, T: int) -> dict[str, np.ndarray]:
        """The episode's non-video feature columns (T, D) or (T,) in the feature dtypes."""
        out = {}
        if self.state:
            out["observation.state"] = np.concatenate([ep[k].reshape(T, -1) for k in self.state], 1).astype(np.float32)
        if self.action:
            out["action"] = ep[self.action].reshape(T, -1).astype(np.float32)
        for k, new in (("reward", "next.reward"), ("done", "next.done")):
            if k in ep:
                out[new] = ep[k].reshape(T)
        for k in self.extra:
            out[f"postbc.{k}"] = ep[k].reshape(T, -1) if ep[k].ndim > 1 else ep[k]
        return out


def _arrow_column(pa, a: np.ndarray, feature: dict):
    """(T,) -> a plain column; (T, D) -> fixed_size_list<D> (the `datasets` Sequence(length=D) LeRobot declares)."""
    if feature["shape"] == [1]:
        return pa.array(a.reshape(-1))
    flat = pa.array(np.ascontiguousarray(a).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(feature["shape"][0]))


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics of (T, D) values along time: min max mean std q01..q99 (D,), count (1,)."""
    x = x.astype(np.float64).reshape(x.shape[0], -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([x.shape[0]])}
    for q, v in zip(QUANTILES, np.quantile(x, QUANTILES, axis=0)):
        out[f"q{int(round(q * 100)):02d}"] = v
    return out


class _ImageStats:
    """Per-channel pixel statistics of uint8 frames from 256-bin histograms (exact min/max/mean/std/quantiles),
    scaled to [0, 1] and shaped (3, 1, 1) as LeRobot keeps image stats; count = frames."""

    def __init__(self):
        self.hist = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:  # (T, H, W, 3) uint8
        for c in range(3):
            self.hist[c] += np.bincount(frames[..., c].reshape(-1), minlength=256)
        self.frames += frames.shape[0]

    def merge(self, other: _ImageStats) -> None:
        self.hist += other.hist
        self.frames += other.frames

    def result(self) -> dict[str, np.ndarray]:
        v = np.arange(256, dtype=np.float64)
        n = self.hist.sum(1).astype(np.float64)
        mean = (self.hist * v).sum(1) / n
        std = np.sqrt(np.maximum((self.hist * v**2).sum(1) / n - mean**2, 0.0))
        nz = self.hist > 0
        out = {"min": np.array([v[m].min() for m in nz]), "max": np.array([v[m].max() for m in nz]), "mean": mean,
               "std": std}
        cum = np.cumsum(self.hist, 1)
        for q in QUANTILES:
            out[f"q{int(round(q * 100)):02d}"] = np.array([v[np.searchsorted(cum[c], q * n[c])] for c in range(3)])
        out = {k: (a / 255.0).reshape(3, 1, 1) for k, a in out.items()}
        out["count"] = np.array([self.frames])
        return out


def _jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {f: {s: np.asarray(v).tolist() for s, v in d.items()} for f, d in stats.items()}


class _VideoWriter:
    """One camera's MP4: frames of every episode back to back at 1 / fps s apart, so frame n of the file is shown
    at n / fps s (LeRobot finds frame `from_timestamp + timestamp` within 1e-4 s)."""

    def __init__(self, av, path: Path, fps: int, width: int, height: int, codec: str, gop: int, crf: int,
                 preset: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.av = av
        self.container = av.open(str(path), "w")
        # One encoder thread: x264's frame threads under CPU load gave different bytes for the same frames (a fresh
        # clone's test run); an export must be a function of the store, so its files can be hashed and compared.
        self.stream = self.container.add_stream(VCODECS[codec], rate=fps,
                                                options={"g": str(gop), "crf": str(crf), "preset": preset, "bf": "0",
                                                         "threads": "1"})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.time_base = Fraction(1, fps)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:  # (T, H, W, 3) uint8 RGB
        for img in frames:
            f = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = self.frames, self.time_base
            for packet in self.stream.encode(f):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def export_lerobot(src: str | os.PathLike, out: str | os.PathLike, *, episodes: Sequence[int] | None = None,
                   fps: float | None = None, action_key: str | None = None, vcodec: str = "h264", gop: int = 2,
                   crf: int = 23, preset: str = "veryfast", robot_type: str = "wx250s",
                   overwrite: bool = False) -> dict:
    """Write episodes of the store `src` as a LeRobot v3.0 dataset directory `out` (module docstring).

    fps: frames per second (a whole number; default from the stored timestamps). action_key: the store key exported
    as `action` (default cmd_joint_pos, else cmd_ee_delta). vcodec / gop / crf / preset: the video encoding (gop 2
    is LeRobot's default keyframe interval: any frame decodes after at most one other). Refuses an existing `out`
    unless `overwrite` (and then only an earlier export: a directory with meta/info.json, or an empty one).
    Returns {"path", "episodes", "frames", "fps", "features"}.
    """
    pa = require("pyarrow", "lerobot", "LeRobot export")
    pq = require("pyarrow.parquet", "lerobot", "LeRobot export")
    if vcodec not in VCODECS:
        raise ConfigError(f"--vcodec {vcodec!r} is not supported: choose one of {sorted(VCODECS)}")
    if gop < 1 or not 0 <= crf <= 51:
        raise ConfigError(f"--gop must be >= 1 and --crf in 0..51, got {gop} and {crf}")
    out = Path(out)
    check_output(out, src, overwrite, directory_marker="meta/info.json")
    with EpisodeStore.open(src, "r") as store:
        picked = select_episodes(store, episodes)
        rate = _fps_int(infer_fps(store, picked, fps), fps is not None)
        plan = _Plan(store.schema(), action_key)
        av = require("av", "lerobot", "LeRobot export (videos)") if plan.rgb else None
        if plan.skipped:
            log.warning("keys %s are not exported (depth: LeRobot keeps it as quantised video; others: more than %d "
                        "values per step)", plan.skipped, MAX_EXTRA_VALUES)
        with atomic_output(out) as tmp:
            result = _write(pa, pq, av, store, picked, plan, rate, tmp, Path(src),
                            dict(vcodec=vcodec, gop=gop, crf=crf, preset=preset), robot_type)
    log.info("exported %d episode(s), %d frames of %s to %s (LeRobot %s)", len(picked), result["frames"], src, out,
             CODEBASE_VERSION)
    return {"path": str(out), **result}


def _write(pa, pq, av, store: EpisodeStore, picked: list[int], plan: _Plan, fps: int, root: Path, src: Path,
           video: dict, robot_type: str) -> dict:
    root.mkdir(parents=True)
    tasks: dict[str, int] = {}
    episode_rows: list[dict] = []
    postbc_meta: list[dict] = []
    global_cols: dict[str, list[np.ndarray]] = {k: [] for k in plan.features if plan.features[k]["dtype"] != "video"}
    global_img = {k: _ImageStats() for k in plan.rgb}
    videos = {}
    data_path = root / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True)
    writer = None
    index = 0
    try:
        for e, i in enumerate(picked):
            ep = read_episode(store, i)
            meta = store.episode_meta(i)
            T = int(meta["length"])
            task = meta["task"] or NO_TASK
            task_index = tasks.setdefault(task, len(tasks))
            cols = plan.columns_of(ep, T)
            cols["timestamp"] = (np.arange(T) / fps).astype(np.float32)
            cols["frame_index"] = np.arange(T, dtype=np.int64)
            cols["episode_index"] = np.full(T, e, np.int64)
            cols["index"] = np.arange(index, index + T, dtype=np.int64)
            cols["task_index"] = np.full(T, task_index, np.int64)
            table = pa.table({k: _arrow_column(pa, cols[k], plan.features[k]) for k in global_cols})
            if writer is None:
                writer = pq.ParquetWriter(str(data_path), table.schema, compression="snappy")
            writer.write_table(table)  # one row group per episode, as LeRobot writes them
            row = {"episode_index": e, "tasks": [task], "length": T, "data/chunk_index": 0, "data/file_index": 0,
                   "dataset_from_index": index, "dataset_to_index": index + T}
            ep_stats = {k: _stats(cols[k]) for k in global_cols}
            for k in plan.rgb:
                vk = plan.video_key(k)
                if vk not in videos:
                    h, w = store.schema()[k][0][:2]
                    videos[vk] = _VideoWriter(av, root / VIDEO_PATH.format(video_key=vk, chunk_index=0, file_index=0),
                                              fps, w, h, video["vcodec"], video["gop"], video["crf"], video["preset"])
                start = videos[vk].frames
                s = _ImageStats()
                for _, frames in _blocks(ep[k]):
                    videos[vk].add(frames)
                    s.add(frames)
                row.update({f"videos/{vk}/chunk_index": 0, f"videos/{vk}/file_index": 0,
                            f"videos/{vk}/from_timestamp": start / fps, f"videos/{vk}/to_timestamp": (start + T) / fps})
                global_img[k].merge(s)
                ep_stats[vk] = s.result()
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            for f, d in ep_stats.items():
                for name, v in d.items():
                    row[f"stats/{f}/{name}"] = np.asarray(v).tolist()
            episode_rows.append(row)
            for k in global_cols:
                global_cols[k].append(cols[k])
            postbc_meta.append({"episode_index": e, "store_episode": i, "success": meta["success"],
                                "source": meta["source"], "operator": meta["operator"], "task": meta["task"],
                                "start_time": _finite(meta["start_time"]), "end_time": _finite(meta["end_time"])})
            index += T
    finally:
        if writer is not None:
            writer.close()
        for v in videos.values():
            v.close()

    for k in plan.rgb:  # what the files hold, as LeRobot's get_video_info reads it back
        vk = plan.video_key(k)
        path = root / VIDEO_PATH.format(video_key=vk, chunk_index=0, file_index=0)
        plan.features[vk]["info"] = _video_info(av, path, video)
        if videos[vk].frames != index:
            raise StoreError(f"{vk}: wrote {videos[vk].frames} video frames for {index} steps")
    stats = {k: _stats(np.concatenate(v)) for k, v in global_cols.items()}
    stats.update({plan.video_key(k): global_img[k].result() for k in plan.rgb})
    (root / "meta").mkdir()
    (root / "meta/stats.json").write_text(json.dumps(_jsonable(stats), indent=2))
    _write_tasks(pa, pq, tasks, root / "meta/tasks.parquet")
    ep_path = root / EPISODES_PATH
    ep_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), str(ep_path), compression="snappy")
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(picked),
            "total_frames": index, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB, "fps": fps,
            "splits": {"train": f"0:{len(picked)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if plan.rgb else None, "features": plan.features}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    schema = store.schema()
    mapping = {"observation.state": plan.state, "action": plan.action,
               **{plan.video_key(k): k for k in plan.rgb}, "next.reward": "reward", "next.done": "done",
               **{f"postbc.{k}": k for k in plan.extra}}
    (root / "meta/postbc.json").write_text(json.dumps({
        "store": str(src), "features": {f: k for f, k in mapping.items() if f in plan.features},
        "shapes": {k: [list(schema[k][0]), str(np.dtype(schema[k][1]))] for k in schema},
        "not_exported": plan.skipped, "episodes": postbc_meta,
        "ee_delta_convention": store.ee_delta_convention}, indent=2))
    return {"episodes": picked, "frames": index, "fps": fps, "features": list(plan.features)}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _blocks(rows):
    """(first step, rows) blocks of an episode's frames, whether read whole (small frames) or in blocks."""
    return rows.blocks() if hasattr(rows, "blocks") else [(0, rows)]


def _video_info(av, path: Path, video: dict) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"video.height": s.height, "video.width": s.width, "video.codec": s.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.is_depth_map": False, "video.fps": int(s.base_rate),
                "video.channels": 3, "has_audio": False}
    info.update({"video.g": video["gop"], "video.crf": video["crf"], "video.preset": video["preset"],
                 "video.fast_decode": 0, "video.video_backend": "pyav", "video.extra_options": {"bf": 0},
                 "is_depth_map": False})
    return info


def _write_tasks(pa, pq, tasks: dict[str, int], path: Path) -> None:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by `task` (LeRobot reads it with pandas and looks
    tasks up by that index): a `task` string column named as the index in the schema's pandas metadata."""
    names = sorted(tasks, key=tasks.get)
    table = pa.table({"task_index": pa.array([tasks[t] for t in names], pa.int64()), "task": pa.array(names)})
    pandas_meta = {
        "index_columns": ["task"], "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                                       "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, str(path))


# -- import -----------------------------------------------------------------------------------------------------------
def _generic_key(feature: str) -> str:
    """A LeRobot feature name as a store key when no meta/postbc.json says better: observation.images.X -> X_rgb,
    observation.state -> state, next.reward -> reward, next.done -> done, other dots -> underscores."""
    if feature.startswith("observation.images."):
        return feature.removeprefix("observation.images.") + "_rgb"
    special = {"observation.state": "state", "next.reward": "reward", "next.done": "done"}
    return special.get(feature, feature.replace(".", "_"))


def import_lerobot(src: str | os.PathLike, out: str | os.PathLike, *, task: str | None = None,
                   source: str = "import") -> dict:
    """Convert a LeRobot v3.x dataset directory `src` into a new episode store `out` (refused if it exists).

    A postbc export (meta/postbc.json) comes back under its original keys, shapes, dtypes and per-episode metadata
    (success, source, operator, times); the frames are the H.264-decoded ones (lossy). Any other LeRobot dataset maps
    features by name (`_generic_key`), takes each episode's first task (or `task`) and `source`, success unknown;
    LeRobot's own timestamp becomes `timestamp` (s from the episode start). Depth videos are skipped.
    Returns {"path", "episodes", "steps", "keys"}.
    """
    pq = require("pyarrow.parquet", "lerobot", "LeRobot import")
    src, out = Path(src), Path(out)
    info_path = src / "meta/info.json"
    if not info_path.is_file():
        raise ConfigError(f"{src} is not a LeRobot dataset directory: {info_path} is missing")
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise ConfigError(f"{src} is a LeRobot {version or 'unversioned'} dataset; only v3.x is read: convert it with "
                          "LeRobot's own v2.1 -> v3.0 conversion first")
    if out.exists() or out.is_symlink():
        raise ConfigError(f"output {out} already exists: choose a new store path (an import never replaces a store)")
    check_output(out, src, overwrite=False)
    features: dict = info["features"]
    ours = json.loads((src / "meta/postbc.json").read_text()) if (src / "meta/postbc.json").is_file() else None
    episodes = _read_all(pq, sorted((src / "meta/episodes").glob("*/*.parquet")))
    videos = [k for k, f in features.items() if f["dtype"] == "video"
              and not (f.get("info") or {}).get("is_depth_map", False)]
    images = [k for k, f in features.items() if f["dtype"] == "image"]
    av = require("av", "lerobot", "LeRobot import (videos)") if videos else None
    skip = set(DEFAULT_FEATURES) - {"timestamp"}
    columns = [k for k, f in features.items() if f["dtype"] not in ("video", "string", "language") and k not in skip]
    ep_meta = {m["episode_index"]: m for m in ours["episodes"]} if ours else {}
    data_files: dict[tuple[int, int], object] = {}
    steps = 0
    keys: list[str] = []
    # A postbc export's cmd_ee_delta keeps its recorded convention; anything else's is unknown (None).
    convention = (ours or {}).get("ee_delta_convention")
    with atomic_output(out) as tmp, EpisodeStore.create(tmp, ee_delta_convention=convention) as store:
        for row in sorted(episodes, key=lambda r: r["episode_index"]):
            e = int(row["episode_index"])
            where = (int(row["data/chunk_index"]), int(row["data/file_index"]))
            if where not in data_files:
                data_files[where] = pq.read_table(src / info["data_path"].format(chunk_index=where[0],
                                                                                file_index=where[1]))
            table = data_files[where]
            mask = np.asarray(table.column("episode_index").to_numpy()) == e
            rows = {k: _column_numpy(table.column(k), mask) for k in columns + images}
            T = int(mask.sum())
            if T != int(row["length"]):
                raise StoreError(f"{src}: episode {e} has {T} rows in its data file but length {row['length']}")
            ep = _to_store_keys(rows, columns, ours, T)
            for k in images:
                ep[_store_key(k, ours)] = np.stack([_decode_image(b) for b in rows[k]])
            for k in videos:
                vk = f"videos/{k}"
                path = src / info["video_path"].format(video_key=k, chunk_index=int(row[f"{vk}/chunk_index"]),
                                                       file_index=int(row[f"{vk}/file_index"]))
                ep[_store_key(k, ours)] = _decode_video(av, path, float(row[f"{vk}/from_timestamp"]), T,
                                                        int(info["fps"]))
            m = ep_meta.get(e, {})
            name = task if task is not None else (m.get("task") if ours else (row.get("tasks") or [""])[0])
            store.add_episode(ep, success=m.get("success"), task=name or "", source=m.get("source", source) or source,
                              operator=m.get("operator", "") or "", start_time=m.get("start_time"),
                              end_time=m.get("end_time"))
            steps += T
            keys = sorted(ep)
    log.info("imported %s (%d episodes, %d steps) into %s", src, len(episodes), steps, out)
    return {"path": str(out), "episodes": len(episodes), "steps": steps, "keys": keys}


def _read_all(pq, paths: list[Path]) -> list[dict]:
    if not paths:
        raise ConfigError("the dataset has no meta/episodes/chunk-*/file-*.parquet")
    return [r for p in paths for r in pq.read_table(p).to_pylist()]


def _column_numpy(col, mask: np.ndarray) -> np.ndarray | list:
    import pyarrow as pa

    col = col.combine_chunks()
    typ = col.type
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ):
        values = np.asarray(col.flatten().to_numpy(zero_copy_only=False))
        return values.reshape(len(col), -1)[mask]
    if pa.types.is_struct(typ):  # an `image` feature: {bytes, path}
        return [v["bytes"] for v, keep in zip(col.to_pylist(), mask) if keep]
    return np.asarray(col.to_numpy(zero_copy_only=False))[mask]


def _store_key(feature: str, ours: dict | None) -> str:
    if ours and isinstance(ours["features"].get(feature), str):
        return ours["features"][feature]
    return _generic_key(feature)


def _to_store_keys(rows: dict, columns: list[str], ours: dict | None, T: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    shapes = ours["shapes"] if ours else {}
    for f in columns:
        target = ours["features"].get(f) if ours else None
        if f == "timestamp" and ours and "timestamp" in shapes:
            continue  # the store's own timestamp came back as postbc.timestamp
        if isinstance(target, list):  # observation.state = the concatenation of these keys
            at = 0
            for k in target:
                shape, dtype = shapes[k]
                n = int(np.prod(shape)) if shape else 1
                out[k] = rows[f][:, at:at + n].reshape(T, *shape).astype(dtype)
                at += n
            continue
        key = _store_key(f, ours) if target is not None or not ours else _generic_key(f)
        a = np.asarray(rows[f])
        if key in shapes:
            shape, dtype = shapes[key]
            a = a.reshape(T, *shape).astype(dtype)
        elif f == "timestamp":
            a = a.astype(np.float64)
        out[key] = a
    return out


def _decode_image(data: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise StoreError("an `image` feature holds bytes that are not an image OpenCV decodes")
    return img[..., ::-1].copy()


def _decode_video(av, path: Path, start: float, T: int, fps: int) -> np.ndarray:
    """The T frames of an episode that starts `start` s into the file `path` ((T, H, W, 3) uint8 RGB), found by
    timestamp as LeRobot finds them (within half a frame)."""
    frames = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        c.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        for f in c.decode(stream):
            if f.time is None or f.time < start - 0.5 / fps:
                continue
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == T:
                break
    if len(frames) != T:
        raise StoreError(f"{path}: found {len(frames)} frames from {start:.3f} s on, the episode has {T} steps")
    return np.stack(frames)
