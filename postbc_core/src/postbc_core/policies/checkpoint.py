"""Self-describing checkpoints: one `.safetensors` file whose header metadata carries the JSON config.

A checkpoint holds everything a consumer needs to rebuild the model from the path alone: the architecture config,
the normalizer statistics (as tensors of the policy), the weights (EMA weights for policies), how it was trained
(alpha, ensemble settings, dataset) and the versions that wrote it. safetensors never unpickles, so loading an
untrusted file cannot execute code.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from postbc_core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
POLICY_FILE = "policy.safetensors"
ENSEMBLE_FILE = "ensemble.safetensors"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present; an explicit 'cuda' without a GPU is an error, not a silent fallback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but no CUDA device is available "
                          "(torch.cuda.is_available() is False); use --device cpu or --device auto")
    return dev


def save_checkpoint(path: str | Path, kind: str, state_dict: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Writes tensors + JSON info atomically (temp file + rename: a crash never leaves a half-written file)."""
    from postbc_core import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": f"postbc-{kind}", "format_version": FORMAT_VERSION, "postbc_core_version": __version__,
            "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"postbc": json.dumps(meta)})
    tmp.replace(path)
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
    info = json.loads(header["postbc"])
    if info.get("format") != f"postbc-{kind}":
        raise CheckpointError(f"{path} holds a {info.get('format')!r} checkpoint, expected 'postbc-{kind}'")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {info['format_version']}, newer than this "
                              f"postbc_core supports ({FORMAT_VERSION}); upgrade postbc_core")
    return tensors, info


def save_policy(policy, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Saves a DiffusionPolicy (pass the EMA copy for deployment)."""
    body = {"policy_config": policy.config.to_dict(), "action_key": policy.action_key,
            "normalizer_keys": policy.normalizer.keys, **(info or {})}
    return save_checkpoint(path, "policy", policy.state_dict(), body)


def load_policy(path: str | Path, device: str | torch.device = "auto"):
    """Rebuilds a DiffusionPolicy (eval mode) from a checkpoint file or run directory.

    The returned object has `predict_action(obs: dict[str, np.ndarray], noise=None, num_samples=1)`;
    `.info` holds the checkpoint's metadata (training settings, versions).
    """
    from postbc_core.data.normalizer import LinearNormalizer
    from postbc_core.policies.diffusion import DiffusionPolicy, PolicyConfig

    tensors, info = read_checkpoint(path, "policy", POLICY_FILE)
    config = PolicyConfig.from_dict(info["policy_config"])
    policy = DiffusionPolicy(config, LinearNormalizer())
    policy.action_key = info["action_key"]
    _load_strict(policy, tensors, path)
    policy.info = info
    return policy.to(resolve_device(device)).eval()


def _load_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    result = module.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: weights do not match the architecture in its config "
                              f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}); "
                              "the file is corrupt or was edited")
