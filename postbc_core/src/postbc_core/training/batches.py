"""numpy window batches -> torch tensors on a device (images stay uint8; the encoder scales them)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def to_torch(batch: Mapping, device: torch.device) -> dict:
    obs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
           for k, v in batch["obs"].items()}
    out = {"obs": obs}
    if "action" in batch:
        out["action"] = torch.from_numpy(np.ascontiguousarray(batch["action"], dtype=np.float32)).to(device)
    return out
