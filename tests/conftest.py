import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Before anything imports mujoco: offscreen rendering through EGL (there is no display on CI).
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def coverage_store(tmp_path_factory):
    """The 1-D coverage demonstrations (32 episodes, keys state/action/timestamp)."""
    from postbc_core.analysis.coverage import write_coverage_dataset

    return write_coverage_dataset(tmp_path_factory.mktemp("cov") / "demos.zarr")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): the
    tests' networks and tensors are tiny, so a second thread only adds synchronisation, and on a loaded 2-core runner
    OpenMP threads waiting at barriers for a descheduled sibling made such modules 5-10x slower than their CPU time
    (test_models: 113 s vs 11 s; test_coverage hit pytest's 600 s timeout beside two other jobs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lift_checkpoint(tmp_path_factory):
    """A (weak) lift_cube state policy, one per module: 2 scripted demos, 50 diffusion steps. Its `postbc train` run
    directory."""
    from _policies import weak_lift_policy

    return weak_lift_policy(tmp_path_factory.mktemp("lift"), steps=50)
