"""Self-describing checkpoints: one `.safetensors` file whose header metadata carries the JSON config.

A checkpoint holds everything a consumer needs to rebuild the model from the path alone: the architecture config,
the normalizer statistics (as tensors of the policy), the weights (EMA weights for policies), how it was trained
(alpha, ensemble settings, dataset) and the versions that wrote it. safetensors never unpickles, so loading an
untrusted file cannot execute code.

Integrity: the metadata carries `content_sha256`, a SHA-256 over every tensor's name, dtype, shape and bytes
(`tensors_sha256`); reading a checkpoint recomputes it, so flipped or replaced weights are an error, not silently
different actions. It also identifies the weights: a finetuning run records the hash of the policy it started from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from postbc_core.data.layout import EE_DELTA_CONVENTION, EE_DELTA_CONVENTION_ATTR
from postbc_core.errors import CheckpointError, ConfigError, storage_errors

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
POLICY_FILE = "policy.safetensors"
ENSEMBLE_FILE = "ensemble.safetensors"


DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = GPU index), mps"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present; an explicit 'cuda' without a GPU is an error, not a silent fallback. Anything
    but auto / cpu / cuda[:N] / mps (a typo, torch's exotic backends) is a ConfigError naming the accepted forms."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r} is not a device postbc can use; use one of {DEVICE_FORMS}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but no CUDA device is available "
                          "(torch.cuda.is_available() is False); use --device cpu or --device auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of those, cuda or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r} requested but MPS (Apple GPUs) is not available here; use "
                          "--device cpu or --device auto")
    return dev


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order (device-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, kind: str, state_dict: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Writes tensors + JSON info (with the tensors' `content_sha256`) atomically (temp file + rename: a crash never
    leaves a half-written file; a full disk or read-only directory raises StorageError naming the path)."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": f"postbc-{kind}", "format_version": FORMAT_VERSION, "postbc_core_version": version("postbc-core"),
            "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info,
            "content_sha256": tensors_sha256(tensors)}
    tmp = path.with_name(path.name + ".tmp")
    with storage_errors(f"writing checkpoint {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_file(tensors, str(tmp), metadata={"postbc": json.dumps(meta)})
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def read_checkpoint(path: str | Path, kind: str, default_file: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Returns (tensors, info); `path` may be the file or the run directory that holds `default_file`."""
    path = Path(path)
    if path.is_dir():
        path = path / default_file
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .safetensors file written by "
                              f"`postbc train` or its run directory")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); was it truncated or is it a "
                              "different format (e.g. a torch .pt pickle, which is not accepted)?") from None
    if "postbc" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a postbc checkpoint (no 'postbc' metadata)")
    try:
        info = json.loads(header["postbc"])
    except ValueError as e:
        raise CheckpointError(f"{path}: the checkpoint's 'postbc' header is not valid JSON ({e}); the file is damaged "
                              "or was edited: restore it from a copy or retrain") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: the checkpoint's 'postbc' header is {type(info).__name__}, not a JSON object; "
                              "the file is damaged or was edited: restore it from a copy or retrain")
    if info.get("format") != f"postbc-{kind}":
        raise CheckpointError(f"{path} holds a {info.get('format')!r} checkpoint, expected 'postbc-{kind}'")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {info['format_version']}, newer than this "
                              f"postbc_core supports ({FORMAT_VERSION}); upgrade postbc_core")
    expected = info.get("content_sha256")
    if expected is None:  # written before checkpoints carried a hash: nothing to verify against
        log.debug("%s carries no content hash (an older checkpoint); its weights are not verified", path)
    else:
        found = tensors_sha256(tensors)
        if found != expected:
            raise CheckpointError(f"{path}: the weights do not match the checkpoint's content hash (recorded "
                                  f"sha256 {expected}, found {found}); the file was damaged or its tensors were "
                                  "modified: restore it from a copy or retrain")
    info["content_sha256"] = expected or tensors_sha256(tensors)
    return tensors, info


def save_policy(policy, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Saves a DiffusionPolicy (pass the EMA copy for deployment). An EE-delta policy records the convention its
    actions follow (data/layout.py EE_DELTA_CONVENTION: training only reads stores in it)."""
    body = {"policy_config": policy.config.to_dict(), "action_key": policy.action_key,
            "normalizer_keys": policy.normalizer.keys, **(info or {})}
    if policy.action_key == "cmd_ee_delta":
        body[EE_DELTA_CONVENTION_ATTR] = EE_DELTA_CONVENTION
    return save_checkpoint(path, "policy", policy.state_dict(), body)


def load_policy(path: str | Path, device: str | torch.device = "auto"):
    """Rebuilds a DiffusionPolicy (eval mode) from a checkpoint file or run directory.

    The returned object has `predict_action(obs: dict[str, np.ndarray], noise=None, num_samples=1)`;
    `.info` holds the checkpoint's metadata (training settings, versions).
    """
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig

    tensors, info = read_checkpoint(path, "policy", POLICY_FILE)
    check_ee_delta_convention(info, path)
    config = PolicyConfig.from_dict(info["policy_config"])
    policy = DiffusionPolicy(config, LinearNormalizer())
    policy.action_key = info["action_key"]
    _load_strict(policy, tensors, path)
    policy.info = info
    return policy.to(resolve_device(device)).eval()


def check_ee_delta_convention(info: dict[str, Any], path) -> None:
    """CheckpointError for an EE-delta policy whose actions are not recorded in EE_DELTA_CONVENTION (one trained
    before the convention was fixed): executing it would reinterpret its deltas."""
    if info.get("action_key") != "cmd_ee_delta" or info.get(EE_DELTA_CONVENTION_ATTR) == EE_DELTA_CONVENTION:
        return
    said = info.get(EE_DELTA_CONVENTION_ATTR)
    what = (f"{EE_DELTA_CONVENTION_ATTR}={said!r}" if said is not None else
            "trained before cmd_ee_delta had one meaning: its twin demos' deltas were relative to the joints measured "
            "at each step")
    raise CheckpointError(
        f"{path}: an EE-delta policy ({what}); every executor now chains each delta from the previous step's target "
        f"({EE_DELTA_CONVENTION!r}), so its actions would mean another motion. Refused rather than reinterpreted: "
        "retrain it on a store recorded now or rewritten with `postbc data convert-ee-delta STORE --out NEW` (the twin "
        "tracks a target within ~1 mm per step, so a retrained policy should behave much the same)")


def _load_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    own = module.state_dict()
    wrong = [f"{k} {tuple(t.shape)} (architecture: {tuple(own[k].shape)})" for k, t in tensors.items()
             if k in own and tuple(own[k].shape) != tuple(t.shape)]
    if wrong:
        raise CheckpointError(f"{path}: weights have other shapes than the architecture in its config "
                              f"({', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''}); the file is corrupt or "
                              "was edited")
    result = module.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: weights do not match the architecture in its config "
                              f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}); "
                              "the file is corrupt or was edited")
