"""Model zoo: the architectures of the pruning and scale-free studies, all ``nn.Sequential`` so
that their node layers chain (``topoprune.topology.network_from_module``)."""

from topoprune.models.zoo import MODELS, ModelSpec, build_model

__all__ = ["MODELS", "ModelSpec", "build_model"]
