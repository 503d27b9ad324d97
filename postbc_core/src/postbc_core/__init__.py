"""postbc_core: Posterior Behavioral Cloning for the WidowX 250s (library; no ROS imports)."""

from importlib.metadata import version as _version

__version__ = _version("postbc-core")  # pyproject.toml's, the one place the version is written


def load_policy(path, device="auto"):
    """Loads a trained diffusion policy from a checkpoint file or run directory (see policies.checkpoint)."""
    from postbc_core.policies.checkpoint import load_policy as _load

    return _load(path, device=device)


__all__ = ["__version__", "load_policy"]
