"""A pruning run's checkpoint as a smaller dense model: its exactly-zero channels removed
(:func:`topoprune.prune.structure.compact`) and the result written with ``torch.export``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.io.torch_file import load_torch_object
from topoprune.models import MODELS, build_model
from topoprune.prune.masks import add_masks, strip_masks
from topoprune.prune.structure import compact, save_compact
from topoprune.train.run import load_trained_state


def compacted_model(
    path: str | Path, *, num_classes: int = 10
) -> tuple[str, nn.Module, nn.Module, torch.Tensor]:
    """Rebuild a zoo model from a ``topoprune prune`` checkpoint and remove its exactly-zero
    channels: ``(model name, the masked model without masks, the compacted model, example
    inputs)``, both models in eval mode."""
    path = Path(path)
    obj = load_torch_object(path)
    metadata = obj.get("metadata", {}) if isinstance(obj, dict) else {}
    name = metadata.get("model")
    if name not in MODELS.names():
        raise TopopruneError(
            f"{path}: not a zoo model's training checkpoint (model {name!r}); compact a model "
            "you build yourself with topoprune.prune.structure.compact"
        )
    model = build_model(name, num_classes)
    state = (obj.get("extra") or {}).get("model_state", {})
    masked = [k.removesuffix(".weight_orig") for k in state if k.endswith(".weight_orig")]
    add_masks(model, names=masked)
    load_trained_state(model, path)
    plain = strip_masks(model).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(4, *MODELS[name].input_shape, generator=generator)
    return name, plain, compact(plain, example).eval(), example


def compact_checkpoint(path: str | Path, out: str | Path, *, num_classes: int = 10) -> dict:
    """Rebuild a zoo model from a ``topoprune prune`` checkpoint, remove its exactly-zero
    channels, check the compacted model computes the same outputs on random inputs, and write
    it to ``out`` (``torch.export``: loads with ``torch.export.load`` alone). Returns the
    parameters before and after and the largest output difference."""
    name, plain, small, example = compacted_model(path, num_classes=num_classes)
    with torch.no_grad():
        difference = float((small(example) - plain(example)).abs().max())
    save_compact(small, example, out)
    return {
        "model": name,
        "params": sum(p.numel() for p in plain.parameters()),
        "params_compact": sum(p.numel() for p in small.parameters()),
        "max_abs_difference": difference,
        "out": str(out),
    }
