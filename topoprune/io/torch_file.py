"""PyTorch checkpoints, loaded with ``weights_only=True`` so that no code in the file ever runs."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

from topoprune.io.errors import CheckpointError

# Keys under which training scripts commonly nest the state_dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


def load_torch_object(path: Path, *, mmap: bool = True) -> object:
    """``torch.load(path, weights_only=True)``, with clear errors for hostile or corrupt files."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next(
            (line for line in first if "GLOBAL" in line or "Unsupported" in line),
            first[0] if first else "",
        )
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects other than tensors and "
            f"plain containers, which could run code ({detail.strip()}). topoprune never "
            "unpickles code; if you trust the file, load it yourself and save its state_dict."
        ) from None
    except Exception as exc:  # damaged pickles fail in many ways (KeyError, ...)
        if mmap and "mmap" in str(exc):
            return load_torch_object(path, mmap=False)  # legacy (non-zip) files cannot be mapped
        raise CheckpointError(
            f"{path}: corrupt or truncated PyTorch file ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})"
        ) from None


def state_dict_items(obj: object, path: Path) -> list[tuple[str, object]]:
    """The ``(name, tensor)`` pairs of a state_dict, unwrapping common nestings."""
    import torch

    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                return state_dict_items(inner, path)
        return [(str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)]
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{path}: holds a single tensor, not a state_dict of named tensors")
    raise CheckpointError(
        f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}"
    )
