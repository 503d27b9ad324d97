"""Camera codecs of the episode store: which compressor each `<camera>_rgb` array's chunks go through, chosen per
store and per camera key when the store is created, and registered for every reader.

Every frame is one zarr chunk (layout.py), so a codec inside the chunk keeps what the raw store has: random access
to any frame, and the crash model (a chunk is written to a temporary file and renamed into place; an episode is
visible only once `meta/episode_ends` names it). The codec is recorded where every zarr reader looks, the array's
`.zarray` compressor, so zarr-python 2 and 3 (and diffusion_policy's ReplayBuffer) decode it once imagecodecs'
numcodecs codecs are registered; the store's readers register them on open (`ensure_registered`).

Codecs (name -> what a chunk holds; measured by benchmarks/bench_storage.py on two 640x480 MuJoCo twin cameras at
30 Hz with Gaussian sensor noise of sigma 2 grey levels, recorded in real time on a shared 2-core machine, 3 runs
each, every frame kept by every codec; results/storage_cpu.json):

    raw              Blosc lz4 of the uint8 pixels: 3.3 GB per minute (noisy frames do not compress losslessly)
    jpeg[:Q]         libjpeg-turbo JPEG at quality Q (default 90): 109 MB per minute, 30x smaller, 40 dB PSNR, writer
                     CPU 1.01x raw's (the bytes it no longer writes pay for the encoding), training load 1.65x and a
                     random frame 1.3x raw's time; jpeg:80 60x smaller at 39 dB. ~19x at sigma 4 (measured offline).
    jpegxl-lossless  JPEG XL lossless, effort 1: exact, 2x smaller, 1.2x raw's writer CPU, 14x raw's load time

Why a codec inside the chunks rather than video files beside the store: x264 (veryfast, crf 20, GOP 10, no
B-frames; the benchmark's reference row) is 424x smaller than raw at about the same CPU (1.1x), but a frame is then
no longer a file: reaching one decodes up to a GOP (15 ms against JPEG's 3 ms), a killed recorder needs a
crash-tolerant container plus a frame index kept consistent with the store's commit point, and zarr readers (the
robot's zarr 2, diffusion_policy) cannot decode it. JPEG in the chunks meets the targets (>= 20x, no dropped frame,
raw's CPU, save < 1 s) with the store's crash model and random access unchanged. Raw stays the default: JPEG is
lossy (whether training data may be is the user's choice) and needs imagecodecs, an optional extra.

Lossy codecs apply only to `*_rgb` keys (uint8 (H, W, 3) images): a choice naming another key is refused, and a
default codec (`*`) never reaches other keys.

A choice is a mapping key -> codec name, `*` meaning every `*_rgb` key not named; the CLI spells it
`jpeg` (every camera) or `front_rgb=jpeg:85,wrist_rgb=raw` (`parse_codecs`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from postbc_core.errors import StoreError

RAW = "raw"
JPEG_DEFAULT_QUALITY = 90  # ~30x on noisy 640x480 frames at 40 dB PSNR (bench_storage.py); 85 gives ~45x
CODECS = {
    "raw": "Blosc lz4 of the pixels (lossless, today's format)",
    "jpeg": f"JPEG, lossy, quality 1-100 as jpeg:Q (default {JPEG_DEFAULT_QUALITY})",
    "jpegxl-lossless": "JPEG XL lossless (exact pixels, ~2x on noisy camera frames)",
}
ALL_CAMERAS = "*"
IMAGE_SUFFIX = "_rgb"
# The fix named when a store's codec cannot be decoded here.
INSTALL_HINT = "pip install imagecodecs (or `pip install 'postbc-core[codecs]'`)"


def canonical_codec(spec: str) -> str:
    """The canonical name of codec `spec` ("jpeg" -> "jpeg:90"); StoreError naming the choices when unknown."""
    if not isinstance(spec, str):
        raise StoreError(f"codec {spec!r} must be a string: one of {', '.join(CODECS)}")
    s = spec.strip().lower()
    m = re.fullmatch(r"jpeg(?::(\d+))?", s)
    if m:
        q = int(m.group(1)) if m.group(1) else JPEG_DEFAULT_QUALITY
        if not 1 <= q <= 100:
            raise StoreError(f"codec {spec!r}: JPEG quality {q} is outside 1..100 (e.g. jpeg:90)")
        return f"jpeg:{q}"
    if s in CODECS:
        return s
    raise StoreError(f"unknown codec {spec!r}: choose one of raw, jpeg, jpeg:Q (quality 1-100), jpegxl-lossless")


def is_known_codec(name: str) -> bool:
    """Whether `name` is a codec this module writes (raw, jpeg:Q, jpegxl-lossless)."""
    try:
        return canonical_codec(name) == name
    except StoreError:
        return False


def is_lossless(codec: str) -> bool:
    """Whether `codec` (canonical) gives the exact pixels back."""
    return codec in (RAW, "jpegxl-lossless")


def parse_codecs(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """A codec choice from the CLI / a ROS parameter / a mapping, canonical: {key or "*": codec}.

    "jpeg" -> {"*": "jpeg:90"}; "front_rgb=jpeg:85,wrist_rgb=raw" -> per key; None or "" -> {} (the store's default,
    raw). Keys must be `*_rgb` image keys (or "*")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        items: dict[str, str] = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            key, sep, codec = part.rpartition("=")
            key = key.strip() if sep else ALL_CAMERAS
            if key in items:
                raise StoreError(f"codec choice {value!r} names {key!r} twice")
            items[key] = codec
    else:
        items = dict(value)
    out = {}
    for key, codec in items.items():
        if key != ALL_CAMERAS and not (isinstance(key, str) and key.endswith(IMAGE_SUFFIX)):
            raise StoreError(f"codec choice for key {key!r}: codecs apply to camera keys '<camera>{IMAGE_SUFFIX}' "
                             f"(uint8 (H, W, 3) images) only; other keys are always stored exactly. Name a camera "
                             f"key (e.g. front_rgb=jpeg) or give one codec for every camera (e.g. jpeg)")
        out[key] = canonical_codec(codec)
    return out


def codec_for_key(choice: Mapping[str, str], key: str) -> str:
    """The codec of data/<key> under `choice` (raw for every key that is not a `*_rgb` camera key)."""
    if not key.endswith(IMAGE_SUFFIX):
        return RAW
    return choice.get(key, choice.get(ALL_CAMERAS, RAW))


def describe_choice(choice: Mapping[str, str]) -> str:
    """`choice` as the CLI spells it ("raw" when empty)."""
    if not choice:
        return RAW
    if set(choice) == {ALL_CAMERAS}:
        return choice[ALL_CAMERAS]
    return ",".join(f"{k}={v}" if k != ALL_CAMERAS else v for k, v in sorted(choice.items()))


# numcodecs compressors

_registered = False


def _imagecodecs(why: str):
    """imagecodecs.numcodecs with its codecs registered in numcodecs (once per process), so zarr can decode them;
    StoreError naming `why` and the fix when imagecodecs is not installed."""
    global _registered
    try:
        import imagecodecs.numcodecs as inc
    except ImportError as exc:
        raise StoreError(f"{why} needs the imagecodecs package, which is not installed here ({exc}): "
                         f"{INSTALL_HINT}") from None
    if not _registered:
        inc.register_codecs(verbose=False)
        _registered = True
    return inc


def image_compressor(codec: str):
    """The numcodecs compressor of one frame chunk for canonical `codec` (imagecodecs for jpeg / jpegxl)."""
    if codec == RAW:
        import numcodecs

        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    inc = _imagecodecs(f"the {codec} codec")
    if codec.startswith("jpeg:"):
        return inc.Jpeg(level=int(codec.split(":")[1]))
    if codec == "jpegxl-lossless":
        # effort 1: ~2.5 ms per 640x480 frame, while higher efforts cost 10-30x more for a few percent (measured).
        return inc.Jpegxl(lossless=True, effort=1)
    raise StoreError(f"unknown codec {codec!r}")


def codec_of_config(config: Mapping | None) -> str:
    """The codec name of a zarr-2 compressor config (an array's `.zarray` "compressor"): raw, jpeg:Q,
    jpegxl-lossless, or the compressor id for anything else."""
    if not config:
        return "none"
    cid = str(config.get("id", ""))
    if cid == "blosc":
        return RAW
    if cid == "imagecodecs_jpeg":
        level = config.get("level")
        return f"jpeg:{level if level is not None else 'default'}"
    if cid == "imagecodecs_jpegxl" and config.get("lossless"):
        return "jpegxl-lossless"
    return cid


def codec_of_array(arr) -> str:
    """The codec name of a zarr array's chunks (see codec_of_config)."""
    comps = getattr(arr, "compressors", None)
    comp = comps[0] if comps else getattr(arr, "compressor", None)
    if comp is None:
        return "none"
    return codec_of_config(comp.get_config() if hasattr(comp, "get_config") else {"id": type(comp).__name__})


# readers

def needs_imagecodecs(compressor_id: str) -> bool:
    return compressor_id.startswith("imagecodecs_")


def ensure_registered(compressor_id: str, what: str) -> None:
    """Register imagecodecs' numcodecs codecs when `compressor_id` is one of them (so zarr decodes it); StoreError
    naming `what` and the fix when imagecodecs is not installed."""
    if needs_imagecodecs(compressor_id):
        _imagecodecs(f"{what} is compressed with {compressor_id!r}; reading it")


def register_for_array_dir(array_dir: Path, what: str) -> None:
    """ensure_registered for the compressor named in `array_dir/.zarray` (nothing when there is none or it cannot
    be parsed: opening the array then reports the damage)."""
    try:
        meta = json.loads((array_dir / ".zarray").read_text())
    except (OSError, ValueError):
        return
    comp = meta.get("compressor") if isinstance(meta, dict) else None
    if isinstance(comp, dict):
        ensure_registered(str(comp.get("id", "")), what)
