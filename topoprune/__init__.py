"""topoprune: the network science of sparse neural networks."""

from topoprune._version import __version__
from topoprune.errors import DataError, TopopruneError

__all__ = ["DataError", "TopopruneError", "__version__"]
