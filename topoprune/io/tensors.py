"""Named tensors (from any checkpoint format) -> SparseNetwork.

Conventions shared by every reader:
- a 2-D, 3-D or 4-D floating tensor is a weight layer (linear, conv1d, conv2d) whose zeros are
  the pruned connections;
- ``<name>_orig`` with ``<name>_mask`` is a layer pruned with torch.nn.utils.prune;
- biases, normalisation parameters and other 1-D tensors, integer buffers and tensors of other
  ranks are skipped and listed with the reason.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np

from topoprune.io.errors import CheckpointError
from topoprune.topology.layers import (
    KINDS,
    TopologyError,
    WeightLayer,
    mask_from_tensor,
    reduce_layer,
    weight_layer,
)
from topoprune.topology.network import SparseNetwork, short_name

CHAIN_MODES = ("none", "sequential")
NO_CHAIN_NOTE = (
    "layers are not chained: each is its own bipartite graph (shapes alone cannot tell a "
    "feed-forward stack from parallel layers such as attention's query/key/value); pass "
    "--chain sequential if the file lists a feed-forward stack in order"
)


class HalfBits:
    """A bfloat16 or float16 tensor's raw 16-bit patterns, so that a mask (any bit but the sign
    set) and the NaN/inf count (exponent all ones) come without widening it to float32."""

    EXPONENT: ClassVar[dict[str, int]] = {"BF16": 0x7F80, "F16": 0x7C00}

    def __init__(self, bits: np.ndarray, dtype: str) -> None:
        self.bits, self.dtype = bits, dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.bits.shape)

    @property
    def ndim(self) -> int:
        return self.bits.ndim

    @property
    def T(self) -> HalfBits:
        return HalfBits(self.bits.T, self.dtype)

    def widen(self) -> np.ndarray:
        """float32 values (a full copy)."""
        if self.dtype == "BF16":
            return (self.bits.astype(np.uint32) << 16).view(np.float32)
        return self.bits.view(np.float16).astype(np.float32)

    def mask_and_nonfinite(self) -> tuple[np.ndarray, int]:
        """The nonzero mask and the number of NaN/inf entries, in row blocks."""
        rows = self.bits.reshape(self.bits.shape[0], -1)
        mask = np.empty(rows.shape, dtype=bool)
        exponent = np.uint16(self.EXPONENT[self.dtype])
        step = max(1, (1 << 22) // max(rows.shape[1], 1))
        nonfinite = 0
        for start in range(0, rows.shape[0], step):
            block = rows[start : start + step]
            np.not_equal(block & np.uint16(0x7FFF), 0, out=mask[start : start + step])
            nonfinite += int(np.count_nonzero((block & exponent) == exponent))
        return mask.reshape(self.bits.shape), nonfinite


def as_numpy(tensor: object) -> np.ndarray:
    """A numpy view (or copy for dtypes numpy lacks) of a torch tensor or array."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if isinstance(tensor, HalfBits):
        return tensor.widen()
    import torch

    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.numpy()
    raise CheckpointError(f"expected a tensor, found {type(tensor).__name__}")


def _skip_reason(array: np.ndarray | HalfBits) -> str | None:
    if isinstance(array, HalfBits):
        return _skip_reason(array.bits.view(np.float16))  # same shape, a float dtype
    if array.ndim == 0:
        return "scalar"
    if array.ndim == 1:
        return "1-D (bias, normalisation or buffer)"
    if array.ndim not in KINDS:
        return f"{array.ndim}-D tensors are not supported weight layers"
    if array.dtype.kind not in "fc" and array.dtype != np.int8:  # int8: quantised weights
        return f"{array.dtype} tensor (not weights)"
    if array.size == 0:
        return f"zero-size tensor {tuple(array.shape)} (no connections)"
    return None


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    if not patterns:
        return True
    return any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(short_name(name), p) for p in patterns
    )


def network_from_tensors(tensors: Iterable[tuple[str, object]], **options: object) -> SparseNetwork:
    """Build a network from ``(name, tensor)`` pairs in file order; see :func:`_build`.

    Errors in the content (mask shape or values, chaining) name the source.
    """
    try:
        return _build(tensors, **options)  # type: ignore[arg-type]
    except TopologyError as exc:
        source = options.get("source") or "network"
        raise CheckpointError(f"{source}: {exc}") from None


def _build(
    tensors: Iterable[tuple[str, object]],
    *,
    masks: Mapping[str, object] | None = None,
    chain: str | Sequence[bool] = "none",
    layers: Sequence[str] | None = None,
    keep_weights: bool = True,
    source: str = "",
    groups: Mapping[str, int] | None = None,
    transposed: Callable[[str], bool] | None = None,
    skip: Callable[[str], str | None] | None = None,
    reduce_to_degrees: str | None = None,
) -> SparseNetwork:
    """Build a network from ``(name, tensor)`` pairs in file order.

    Parameters
    ----------
    tensors : iterable of (name, tensor)
        Consumed once, so a reader can stream a large file layer by layer.
    masks : mapping, optional
        Explicit masks by weight name (topoprune checkpoints).
    chain : {"none", "sequential"} or sequence of bool
        ``sequential`` asserts a feed-forward stack in file order; an error names the first pair
        whose shapes do not chain.
    layers : sequence of str, optional
        Glob patterns; only matching weight layers are kept.
    keep_weights : bool
        Keep the weights (needed for graph export with weights); False keeps only masks.
    groups : mapping, optional
        Grouped convolutions' groups by weight name (recorded in topoprune checkpoints). Under
        ``sequential`` chaining, a convolution whose weight takes fewer input channels than the
        previous layer has outputs, a whole fraction of them, is read as grouped, with a note.
    transposed : callable, optional
        ``name -> bool``: 2-D weights stored ``(in, out)`` (Hugging Face Conv1D), read transposed.
    skip : callable, optional
        ``name -> reason or None``: tensors to leave out (embedding tables), with the reason.
    reduce_to_degrees : str, optional
        A view: each layer is reduced to its degrees in that view as soon as it is read, its
        mask dropped (:func:`topoprune.topology.layers.reduce_layer`): memory stays at one
        layer's mask. Only for unchained reading (``chain="none"``); ignored otherwise.
    """
    masks = dict(masks or {})
    groups = dict(groups or {})
    found: list[WeightLayer] = []
    skipped: dict[str, str] = {}
    pending_orig: dict[str, np.ndarray] = {}
    pending_mask: dict[str, np.ndarray] = {}
    for name, tensor in tensors:
        reason = skip(name.removesuffix("_orig").removesuffix("_mask")) if skip else None
        if reason:
            skipped[name] = reason
            continue
        reducing = reduce_to_degrees is not None and chain == "none"
        # half-precision bits stay unwidened when only the mask is needed
        array = tensor if isinstance(tensor, HalfBits) and reducing else as_numpy(tensor)
        if transposed is not None and array.ndim == 2:
            base = name.removesuffix("_orig").removesuffix("_mask")
            if transposed(base):
                array = array.T  # a view: (in, out) storage read as (out, in)
                if base in masks:
                    masks[base] = as_numpy(masks[base]).T
        if name.endswith("_orig") or name.endswith("_mask"):
            if isinstance(array, HalfBits):
                array = array.widen()
            base = name[:-5]
            own, other = (
                (pending_orig, pending_mask)
                if name.endswith("_orig")
                else (pending_mask, pending_orig)
            )
            if base not in other:
                own[base] = array
                continue
            orig, mask = (
                (array, other.pop(base)) if name.endswith("_orig") else (other.pop(base), array)
            )
            if not _matches(base, layers):
                skipped[base] = "not selected"
                continue
            if _skip_reason(orig):
                skipped[base] = _skip_reason(orig) or ""
                continue
            mask = mask_from_tensor(base, mask, orig.shape)
            layer = weight_layer(base, orig * mask, mask, keep_weights=keep_weights,
                                 groups=groups.get(base, 1))  # fmt: skip
            found.append(reduce_layer(layer, (reduce_to_degrees,)) if reducing else layer)
            continue
        reason = _skip_reason(array)
        if reason:
            skipped[name] = reason
        elif not _matches(name, layers):
            skipped[name] = "not selected"
        else:
            if isinstance(array, HalfBits):  # only when reducing: the mask from the bits
                mask, nonfinite = array.mask_and_nonfinite()
                layer = WeightLayer(name, mask, None, nonfinite, groups.get(name, 1))
            else:
                layer = weight_layer(
                    name,
                    array,
                    as_numpy(masks[name]) if name in masks else None,
                    keep_weights=keep_weights,
                    groups=groups.get(name, 1),
                )
            found.append(reduce_layer(layer, (reduce_to_degrees,)) if reducing else layer)
        del array
    for base in pending_orig:
        skipped[base + "_orig"] = "torch prune parameter without its _mask"
    for base in pending_mask:
        skipped[base + "_mask"] = "torch prune mask without its _orig"
    if not found:
        listed = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:8])
        what = (
            f" (skipped {len(skipped)} tensors: {listed})" if skipped else " (it holds no tensors)"
        )
        if layers and any(v == "not selected" for v in skipped.values()):
            raise CheckpointError(f"{source}: no weight layer matches {', '.join(layers)}{what}")
        raise CheckpointError(f"{source}: no weight layers found{what}")
    notes = []
    if isinstance(chain, str):
        if chain not in CHAIN_MODES:
            raise CheckpointError(f"unknown chain mode {chain!r}; valid: {', '.join(CHAIN_MODES)}")
        if chain == "none" and len(found) > 1:
            notes.append(NO_CHAIN_NOTE)
        if chain == "sequential":
            found = _infer_groups(found, notes)
        chain = chain == "sequential"
    return SparseNetwork(found, chain, skipped=skipped, source=source, notes=notes)


def _infer_groups(layers: list[WeightLayer], notes: list[str]) -> list[WeightLayer]:
    """In a feed-forward stack, a convolution whose weight takes ``C/g`` of the previous layer's
    ``C`` outputs (depthwise: 1) is a grouped convolution with ``g`` groups, when its outputs
    split into ``g`` groups too; anything else is left for the chain check to report."""
    inferred = []
    for i in range(1, len(layers)):
        prev, layer = layers[i - 1], layers[i]
        if layer.kind == "linear" or layer.groups > 1 or layer.in_channels == prev.out_channels:
            continue
        if prev.out_channels % layer.in_channels or layer.out_channels % (
            prev.out_channels // layer.in_channels
        ):
            continue
        g = prev.out_channels // layer.in_channels
        layers[i] = dataclasses.replace(layer, groups=g)
        inferred.append(f"{layer.name}: {g}" + (" (depthwise)" if layer.shape[1] == 1 else ""))
    if inferred:
        notes.append(
            "groups inferred from the previous layer's outputs (a grouped convolution's weight "
            "holds C_in / groups input channels): " + "; ".join(inferred)
        )
    return layers
