"""torchrun / DDP support. The same `postbc train` entry point runs single-process or under torchrun
(`torchrun --nproc_per_node N --no-python postbc train ...`): the environment variables torchrun sets decide.
CPU runs use the gloo backend, CUDA runs NCCL with one GPU per local rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from postbc_core.policies.checkpoint import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialises the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a no-op."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistInfo(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Contiguous block of n items owned by `rank` (ensemble members across ranks); blocks differ by <= 1."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def all_gather_cat(x: torch.Tensor, info: DistInfo, dim: int = 0) -> torch.Tensor:
    """Concatenates each rank's tensor along `dim` in rank order (sizes along `dim` may differ)."""
    if not info.enabled:
        return x
    orig_device = x.device
    x = x.to(info.device)  # NCCL gathers CUDA tensors only; gloo CPU ones
    sizes = [None] * info.world_size
    dist.all_gather_object(sizes, int(x.shape[dim]))
    pad = max(sizes) - x.shape[dim]
    if pad:
        x = torch.cat([x, x.new_zeros((*x.shape[:dim], pad, *x.shape[dim + 1:]))], dim=dim)
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p.narrow(dim, 0, s) for p, s in zip(parts, sizes)], dim=dim).to(orig_device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
