"""topoprune: the network science of sparse neural networks."""

from topoprune._version import __version__
from topoprune.errors import DataError, TopopruneError

__all__ = ["DataError", "TopopruneError", "__version__", "prune_model"]


def __getattr__(name: str):
    # prune_model pulls in torch and the training engine: imported on first use only
    if name == "prune_model":
        from topoprune.train.run import prune_model

        return prune_model
    raise AttributeError(f"module 'topoprune' has no attribute {name!r}")
