"""Nested training state (module/optimizer state dicts, RNG states, counters) <-> safetensors tensors + JSON.

A finetuning checkpoint must hold optimizer states (dicts keyed by int, tuples of betas, tensors), the RNG states of
torch / numpy / python and plain counters. Pickle would do it in one call but executes code on load, which the
checkpoint policy forbids (DESIGN.md, Checkpoints). `flatten` splits such a structure into a flat {name: tensor}
dict for safetensors and a JSON-able skeleton that refers to the tensors by name; `unflatten` inverts it exactly
(int dict keys and tuples survive, which plain JSON would turn into strings and lists).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from postbc_core.errors import CheckpointError

_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


def flatten(obj: Any, prefix: str = "s") -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors, skeleton): every tensor in `obj` moves to `tensors` under a unique dotted name."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, name: str) -> Any:
        if torch.is_tensor(x):
            tensors[name] = x.detach().cpu().contiguous()
            return {_TENSOR: name}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {_DICT: [[k, walk(v, f"{name}.{k}")] for k, v in x.items()]}
            # non-string keys (optimizer state is keyed by parameter index): keep the key's type
            return {_DICT: [[k, walk(v, f"{name}.{k}")] for k, v in x.items()], "keys": "int"}
        if isinstance(x, tuple):
            return {_TUPLE: [walk(v, f"{name}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{name}.{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise CheckpointError(f"cannot serialize a {type(x).__name__} at {name!r} into a finetuning checkpoint")

    skeleton = walk(obj, prefix)
    return tensors, skeleton


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            name = skeleton[_TENSOR]
            if name not in tensors:
                raise CheckpointError(f"finetuning checkpoint lacks tensor {name!r}: the file is damaged")
            return tensors[name]
        if _TUPLE in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton[_TUPLE])
        if _DICT in skeleton:
            cast = int if skeleton.get("keys") == "int" else (lambda k: k)
            return {cast(k): unflatten(v, tensors) for k, v in skeleton[_DICT]}
    return skeleton


def rng_state(np_rng: np.random.Generator) -> dict:
    """RNG states of python `random`, torch (CPU and CUDA) and a numpy Generator."""
    py = random.getstate()
    out = {"python": [py[0], list(py[1]), py[2]], "torch": torch.get_rng_state(),
           "numpy": np_rng.bit_generator.state}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    """Restores what `rng_state` captured (CUDA only where a GPU is present)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def forked_torch_rng(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """torch's random state (the CPU's, and `device`'s when it is a GPU) is restored when the block ends; inside,
    torch is seeded with `seed` when one is given."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        yield
