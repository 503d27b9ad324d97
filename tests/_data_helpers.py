"""Shared helpers for the data-layer tests: random episodes, schemas and child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import strategies as st

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64, np.bool_]
KEY_NAMES = ["joint_pos", "a", "front_img", "reward", "done", "noise", "x.y", "k-2"]


def random_steps(rng: np.random.Generator, schema: dict, T: int) -> dict[str, np.ndarray]:
    """key -> (T, *shape) array of dtype, random values (finite floats)."""
    out = {}
    for k, (shape, dtype) in schema.items():
        dtype = np.dtype(dtype)
        size = (T, *shape)
        if dtype == np.bool_:
            out[k] = rng.random(size) < 0.5
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            out[k] = rng.integers(max(info.min, -1000), min(info.max, 1000), size=size, endpoint=True).astype(dtype)
        else:
            out[k] = (rng.normal(size=size) * 10).astype(dtype)
    return out


def standard_schema(image: int = 8) -> dict:
    return {
        "joint_pos": ((6,), np.float32),
        "cmd_joint_pos": ((7,), np.float32),
        "front_rgb": ((image, image, 3), np.uint8),
        "reward": ((), np.float32),
        "done": ((), np.bool_),
        "timestamp": ((), np.float64),
    }


@st.composite
def schemas(draw, max_keys: int = 4):
    names = draw(st.lists(st.sampled_from(KEY_NAMES), min_size=1, max_size=max_keys, unique=True))
    schema = {}
    for name in names:
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
        schema[name] = (shape, np.dtype(draw(st.sampled_from(DTYPES))))
    return schema


def run_child(code: str, *, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Python `code` in a fresh interpreter (the project venv's), capturing output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def assert_episodes_equal(store, expected: list[dict[str, np.ndarray]]) -> None:
    assert store.n_episodes == len(expected)
    for i, ep in enumerate(expected):
        got = store.episode(i)
        assert sorted(got) == sorted(ep), (sorted(got), sorted(ep))
        for k in ep:
            assert got[k].dtype == ep[k].dtype, (k, got[k].dtype, ep[k].dtype)
            np.testing.assert_array_equal(got[k], ep[k], err_msg=f"episode {i} key {k}")


def read_until_stalled(proc: subprocess.Popen) -> list[str]:
    """The lines a child printed up to the "stalled" line of the finetuning test hook (POSTBC_FINETUNE_TEST_STALL),
    which it prints when it has reached the point a test stops it at. No wall-clock deadline of its own (a loaded
    machine is slow, not wrong): the child stalls or exits, and pytest's timeout bounds a hang."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "stalled":
            break
    assert lines and lines[-1].strip() == "stalled", "".join(lines)
    return lines
