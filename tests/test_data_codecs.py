"""Camera codecs of the episode store (postbc_core.data.codecs): round trips per codec, stores mixing codecs across
camera keys, the crash model with compressed cameras (SIGKILL), what validate / info show, and the errors for an
unknown codec and for a codec whose package is missing."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
from _data_helpers import assert_episodes_equal, run_child
from _paths import BIN

from postbc_core.data import EpisodeStore, validate_store
from postbc_core.data import tools
from postbc_core.data.codecs import codec_for_key, parse_codecs
from postbc_core.errors import StoreError

pytest.importorskip("imagecodecs")

H, W = 48, 64


def camera_frames(rng: np.random.Generator, T: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames like a camera's: smooth shading, a moving block, Gaussian sensor noise (sigma 2)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        img = np.stack([60 + 1.5 * xx + t, 90 + 2.0 * yy, 140 + 0.5 * (xx + yy)], axis=-1)
        x0 = (5 + 3 * t) % (W - 12)
        img[10:26, x0:x0 + 12] = (200, 40, 40)
        out[t] = np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
    return out


def episode(rng: np.random.Generator, T: int, cameras=("front_rgb",), depth=False) -> dict[str, np.ndarray]:
    ep = {k: camera_frames(rng, T) for k in cameras}
    ep["joint_pos"] = rng.normal(size=(T, 6)).astype(np.float32)
    ep["reward"] = rng.random(T).astype(np.float32)
    if depth:
        ep["front_depth"] = rng.integers(0, 4000, size=(T, H, W)).astype(np.uint16)
    return ep


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# Lossy bounds on these small noisy frames, per codec: PSNR (dB) and mean absolute error (grey levels). Measured here:
# jpeg:90 31.8 dB / 3.1 levels, jpeg:75 29.8 dB (chroma subsampling at the block's sharp edges and the noise are
# most of it; 640x480 twin frames keep ~40 dB at jpeg:90, benchmarks/bench_storage.py).
LOSSY_MIN_PSNR = {"jpeg:90": 30.0, "jpeg:85": 29.0, "jpeg:75": 27.0}
LOSSY_MAX_MEAN_ABS = 6.0


@pytest.mark.parametrize("codec", ["raw", "jpegxl-lossless", "jpeg", "jpeg:75"])
def test_round_trip_per_codec(tmp_path, codec):
    rng = np.random.default_rng(0)
    eps = [episode(rng, 6), episode(rng, 4)]
    with EpisodeStore.create(tmp_path / "s.zarr", codecs=codec) as s:
        for ep in eps:
            s.add_episode(ep)
    with EpisodeStore.open(tmp_path / "s.zarr") as s:
        canonical = parse_codecs(codec)["*"]
        assert s.codecs()["front_rgb"] == canonical and s.codecs()["joint_pos"] == "raw"
        stored = s.data("front_rgb").nbytes_stored
        stored = stored() if callable(stored) else stored
        for i, ep in enumerate(eps):
            got = s.episode(i)
            for k in ("joint_pos", "reward"):  # never touched by a camera codec
                np.testing.assert_array_equal(got[k], ep[k])
            assert got["front_rgb"].dtype == np.uint8 and got["front_rgb"].shape == ep["front_rgb"].shape
            if codec in ("raw", "jpegxl-lossless"):
                np.testing.assert_array_equal(got["front_rgb"], ep["front_rgb"])
            else:
                assert psnr(got["front_rgb"], ep["front_rgb"]) >= LOSSY_MIN_PSNR[canonical]
                err = np.abs(got["front_rgb"].astype(int) - ep["front_rgb"]).mean()
                assert 0 < err <= LOSSY_MAX_MEAN_ABS, err
        raw_bytes = sum(ep["front_rgb"].nbytes for ep in eps)
        if canonical.startswith("jpeg:"):
            assert stored * 4 < raw_bytes, (stored, raw_bytes)  # the codec did compress the frames


def test_store_mixing_codecs_across_camera_keys(tmp_path):
    path = tmp_path / "mix.zarr"
    rng = np.random.default_rng(1)
    choice = "*=jpeg:85,wrist_rgb=jpegxl-lossless,side_rgb=raw"
    eps = [episode(rng, 5, cameras=("front_rgb", "wrist_rgb", "side_rgb"), depth=True) for _ in range(2)]
    with EpisodeStore.create(path, codecs=choice) as s:
        s.add_episode(eps[0])
    with EpisodeStore.open(path, "a") as s:  # codecs unset: the store's own
        s.add_episode(eps[1])
    with EpisodeStore.open(path) as s:
        assert s.codecs() == {"front_depth": "raw", "front_rgb": "jpeg:85", "joint_pos": "raw", "reward": "raw",
                              "side_rgb": "raw", "wrist_rgb": "jpegxl-lossless"}
        assert s.codec_choice == {"*": "jpeg:85", "wrist_rgb": "jpegxl-lossless", "side_rgb": "raw"}
        for i, ep in enumerate(eps):
            got = s.episode(i)
            for k in ("wrist_rgb", "side_rgb", "front_depth", "joint_pos", "reward"):  # exact: lossless or not a camera
                np.testing.assert_array_equal(got[k], ep[k], err_msg=k)
            assert psnr(got["front_rgb"], ep["front_rgb"]) >= LOSSY_MIN_PSNR["jpeg:85"]
    meta = json.loads((path / "data/front_rgb/.zarray").read_text())["compressor"]
    assert meta["id"] == "imagecodecs_jpeg" and meta["level"] == 85  # where every zarr reader finds it
    assert json.loads((path / "data/front_depth/.zarray").read_text())["compressor"]["id"] == "blosc"


def test_a_stores_codecs_are_fixed_by_its_first_episode(tmp_path):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(2)
    with EpisodeStore.create(path, codecs="jpeg") as s:
        s.add_episode(episode(rng, 3))
    with pytest.raises(StoreError, match=r"data/front_rgb is stored as jpeg:90, but raw was asked for \(codec raw\): "
                                         "a store's codecs are fixed"):
        EpisodeStore.open(path, "a", codecs="raw")
    with EpisodeStore.open(path, "a", codecs="jpeg:90") as s:  # the same choice is fine
        s.add_episode(episode(rng, 2))
        assert s.n_episodes == 2
    # An empty store takes a new choice.
    with EpisodeStore.create(tmp_path / "e.zarr") as s:
        pass
    with EpisodeStore.open(tmp_path / "e.zarr", "a", codecs="front_rgb=jpegxl-lossless") as s:
        s.add_episode(episode(rng, 2))
        assert s.codecs()["front_rgb"] == "jpegxl-lossless"


def test_unknown_or_misapplied_codec_is_refused_before_anything_is_written(tmp_path):
    for bad, match in [("h265", r"unknown codec 'h265': choose one of raw, jpeg"),
                       ("jpeg:0", r"JPEG quality 0 is outside 1..100"),
                       ("joint_pos=jpeg", r"key 'joint_pos': codecs apply to camera keys '<camera>_rgb'"),
                       ("front_depth=jpeg", r"key 'front_depth'"),
                       ("front_rgb=jpeg,front_rgb=raw", r"names 'front_rgb' twice")]:
        with pytest.raises(StoreError, match=match):
            EpisodeStore.create(tmp_path / "x.zarr", codecs=bad)
        assert not (tmp_path / "x.zarr").exists()
    # A default codec never reaches keys that are not camera images.
    assert codec_for_key({"*": "jpeg:90"}, "front_depth") == "raw"
    assert codec_for_key({"*": "jpeg:90"}, "joint_pos") == "raw"
    r = subprocess.run([str(BIN / "postbc"), "sim", "demos", "--task", "lift_cube", "--episodes", "1", "--out",
                        str(tmp_path / "d.zarr"), "--codec", "h265"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown codec 'h265'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "d.zarr").exists()


def test_codec_options_where_stores_are_created_refuse_unknown_codecs(tmp_path):
    from postbc_core.errors import ConfigError
    from postbc_core.rl.finetune_config import FinetuneConfig
    from postbc_core.sim.evaluation import EvalConfig

    with pytest.raises(ConfigError, match=r"--record-codec: unknown codec 'webm'"):
        EvalConfig(checkpoint=tmp_path / "p.safetensors", task="lift_cube", record_to=tmp_path / "r.zarr",
                   record_codec="webm")
    with pytest.raises(ConfigError, match=r"codec: codec choice for key 'joint_pos'"):
        FinetuneConfig(checkpoint=tmp_path / "p.safetensors", codec="joint_pos=jpeg")
    assert FinetuneConfig(checkpoint=tmp_path / "p.safetensors", codec="jpeg").codec == "jpeg"


def test_sim_demos_records_with_the_codec(tmp_path):
    from postbc_core.sim.demos import record_demos

    out = tmp_path / "d.zarr"
    record_demos("lift_cube", 1, out, cameras=("front", "wrist"), image_size=(32, 40), codec="front_rgb=jpeg")
    with EpisodeStore.open(out) as s:
        assert s.codecs()["front_rgb"] == "jpeg:90" and s.codecs()["wrist_rgb"] == "raw"
        assert s.codecs()["joint_pos"] == "raw" and s.episode(0)["front_rgb"].shape[1:] == (32, 40, 3)
    with pytest.raises(StoreError, match=r"is stored as jpeg:90, but jpeg:50 was asked for \(codec jpeg:50\)"):
        record_demos("lift_cube", 1, out, cameras=("front", "wrist"), image_size=(32, 40), codec="jpeg:50",
                     append=True)
    with EpisodeStore.open(out) as s:
        assert s.n_episodes == 1  # nothing was added, nothing lost


def test_validate_and_info_show_the_codecs(tmp_path):
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, codecs="front_rgb=jpeg:80,wrist_rgb=raw") as s:
        s.add_episode(episode(np.random.default_rng(3), 3, cameras=("front_rgb", "wrist_rgb")))
    report = validate_store(path)
    assert report.ok and report.codecs == {"front_rgb": "jpeg:80", "wrist_rgb": "raw"}
    assert "camera codecs: front_rgb jpeg:80, wrist_rgb raw" in str(report)
    info = tools.info(path)
    assert info["keys"]["front_rgb"]["codec"] == "jpeg:80" and info["keys"]["wrist_rgb"]["codec"] == "raw"
    r = subprocess.run([str(BIN / "postbc"), "data", "info", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "jpeg:80" in r.stdout, r.stdout + r.stderr


def test_rewrites_keep_the_codecs(tmp_path):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(4)
    with EpisodeStore.create(path, codecs="jpeg") as s:
        for _ in range(3):
            s.add_episode(episode(rng, 3))
    tools.drop(path, [1], out=tmp_path / "d.zarr")
    tools.merge([path, tmp_path / "d.zarr"], tmp_path / "m.zarr")
    for p in ("d.zarr", "m.zarr"):
        with EpisodeStore.open(tmp_path / p) as s:
            assert s.codecs()["front_rgb"] == "jpeg:90", p


BLOCK_IMAGECODECS = "import sys; sys.modules['imagecodecs'] = None; sys.modules['imagecodecs.numcodecs'] = None\n"


def test_a_codec_that_cannot_be_decoded_names_the_fix(tmp_path):
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, codecs="jpeg") as s:
        s.add_episode(episode(np.random.default_rng(5), 3))
    res = run_child(BLOCK_IMAGECODECS + f"""
from postbc_core.data import EpisodeStore, validate_store
from postbc_core.errors import StoreError
for what in ("read", "create"):
    try:
        if what == "read":
            EpisodeStore.open({str(path)!r}).episode(0)
        else:
            EpisodeStore.create({str(tmp_path / 'new.zarr')!r}, codecs="jpeg")
        print(what, "NO ERROR")
    except StoreError as exc:
        print(what, "StoreError:", exc)
print("validate:", validate_store({str(path)!r}))
""")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "read StoreError:" in out and "data/front_rgb is compressed with 'imagecodecs_jpeg'" in out, out
    assert "create StoreError: the jpeg:90 codec needs the imagecodecs package" in out, out
    assert out.count("pip install imagecodecs") >= 3, out  # read, create and validate all name the fix
    assert "INVALID" in out and not (tmp_path / "new.zarr").exists()


# ---- the crash model with compressed cameras ----

CHILD = """
import os, signal, numpy as np
from postbc_core.data import EpisodeStore
from postbc_core.data import store as store_mod
path = {path!r}
rng = np.random.default_rng(7)
def steps(T):
    return {{"front_rgb": rng.integers(0, 255, size=(T, 48, 64, 3), dtype=np.uint8),
            "wrist_rgb": rng.integers(0, 255, size=(T, 48, 64, 3), dtype=np.uint8),
            "joint_pos": rng.normal(size=(T, 6)).astype(np.float32), "reward": rng.random(T).astype(np.float32)}}
def die(point=None):
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("where", ["after_flush", "in_background_flush"])
def test_sigkill_mid_episode_keeps_committed_compressed_episodes(tmp_path, where):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(6)
    with EpisodeStore.create(path, codecs="front_rgb=jpeg,wrist_rgb=jpegxl-lossless") as s:
        for T in (4, 5):
            s.add_episode(episode(rng, T, cameras=("front_rgb", "wrist_rgb")))
    with EpisodeStore.open(path) as s:  # what the committed episodes decode to before the kill
        before = [s.episode(i) for i in range(s.n_episodes)]
    body = {"after_flush": """
s = EpisodeStore.open(path, "a")
w = s.episode_writer(flush_bytes=1 << 30)
w.extend(steps(12))
w.flush()          # 12 compressed frames per camera on disk, uncommitted
w.extend(steps(3))
die()
""", "in_background_flush": """
store_mod._TEST_HOOK = lambda p: die() if p == "flushed" else None
s = EpisodeStore.open(path, "a")
w = s.episode_writer(flush_bytes=40000)   # a block every few steps, written by the worker thread
for t in range(50):
    w.append_step({k: v[0] for k, v in steps(1).items()})
import time; time.sleep(30)
"""}[where]
    res = run_child(CHILD.format(path=str(path)) + body)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr)
    with EpisodeStore.open(path, "a") as s:
        assert s.recovery is not None and s.recovery.applied and s.recovery.dropped_steps["front_rgb"] > 0
        assert_episodes_equal(s, before)  # bit-identical decode of every committed episode
        assert s.codecs()["front_rgb"] == "jpeg:90" and s.codecs()["wrist_rgb"] == "jpegxl-lossless"
        s.add_episode(episode(rng, 2, cameras=("front_rgb", "wrist_rgb")))
    report = validate_store(path)
    assert report.ok and not report.warnings, str(report)
