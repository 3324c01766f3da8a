"""Model zoo: the architectures of the pruning and scale-free studies, by name in ``MODELS``.
The feed-forward ones are ``nn.Sequential`` so that their node layers chain
(``topoprune.topology.network_from_module``); :mod:`~topoprune.models.recurrent` adds a
row-by-row LSTM (``lstm_mnist``), whose weight layers are analysed one by one."""

from topoprune.models.zoo import MODELS, ModelSpec, build_model

# importing these registers their models in MODELS
from topoprune.models import recurrent  # noqa: F401  isort: skip
from topoprune.models import residual  # noqa: F401  isort: skip

__all__ = ["MODELS", "ModelSpec", "build_model"]
