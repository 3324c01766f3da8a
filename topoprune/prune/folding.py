"""Layer folding (seed lecture "layer collapse"): a PReLU whose slope is exactly 1 is the
identity, so the layers on either side of it compose into one. Linear o Linear is one linear
layer, ``W = W2 W1`` and ``b = W2 b1 + b2``; two stride-1, unpadded convolutions are one
convolution whose kernel is the full convolution of the two kernels (size ``k1 + k2 - 1``).

:func:`fold` merges every such pair of an ``nn.Sequential``; the ``layer-fold`` method
(:mod:`topoprune.prune.structured`) drives the slopes towards 1 by a penalty first.
"""

from __future__ import annotations

import torch
from torch import nn

from topoprune.errors import TopopruneError


def is_identity(activation: nn.Module) -> bool:
    """A PReLU with every slope exactly 1 (or an nn.Identity)."""
    if isinstance(activation, nn.Identity):
        return True
    return isinstance(activation, nn.PReLU) and bool((activation.weight == 1).all())


def fold_linear(first: nn.Linear, second: nn.Linear) -> nn.Linear:
    """``second(first(x))`` as one linear layer.

    >>> a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(fold_linear(a, b)(x), b(a(x)), atol=1e-6)
    True
    """
    like = first.weight
    merged = nn.Linear(first.in_features, second.out_features, bias=True,
                       dtype=like.dtype, device=like.device)  # fmt: skip
    with torch.no_grad():
        merged.weight.copy_(second.weight @ first.weight)
        b1 = first.bias if first.bias is not None else like.new_zeros(first.out_features)
        b2 = second.bias if second.bias is not None else like.new_zeros(second.out_features)
        merged.bias.copy_(second.weight @ b1 + b2)
    return merged


def fold_conv(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d:
    """``second(first(x))`` as one convolution, for stride 1, no padding, no dilation, no groups:
    the kernel ``K[t] = sum_s W2[s] W1[t - s]``, the bias ``b2 + sum_s W2[s] b1``.

    >>> a, b = nn.Conv2d(2, 3, 3), nn.Conv2d(3, 1, 2)
    >>> x = torch.randn(1, 2, 8, 8)
    >>> torch.allclose(fold_conv(a, b)(x), b(a(x)), atol=1e-5)
    True
    """
    for conv in (first, second):
        if (conv.stride != (1, 1) or conv.padding != (0, 0) or conv.dilation != (1, 1)
                or conv.groups != 1):  # fmt: skip
            raise TopopruneError("only stride-1, unpadded, undilated, ungrouped convolutions fold")
    k1, k2 = first.kernel_size, second.kernel_size
    size = (k1[0] + k2[0] - 1, k1[1] + k2[1] - 1)
    w1, w2 = first.weight.detach(), second.weight.detach()
    merged = nn.Conv2d(first.in_channels, second.out_channels, size, bias=True,
                       dtype=w1.dtype, device=w1.device)  # fmt: skip
    kernel = w1.new_zeros(second.out_channels, first.in_channels, *size)
    for sy in range(k2[0]):
        for sx in range(k2[1]):
            kernel[:, :, sy : sy + k1[0], sx : sx + k1[1]] += torch.einsum(
                "om,miab->oiab", w2[:, :, sy, sx], w1
            )
    b1 = first.bias.detach() if first.bias is not None else w1.new_zeros(first.out_channels)
    b2 = second.bias.detach() if second.bias is not None else w1.new_zeros(second.out_channels)
    with torch.no_grad():
        merged.weight.copy_(kernel)
        merged.bias.copy_(w2.sum(dim=(2, 3)) @ b1 + b2)
    return merged


def fold(model: nn.Sequential) -> tuple[nn.Sequential, int]:
    """Merge every ``layer, identity activation, layer`` run of a Sequential (Linear-Linear or
    foldable Conv2d-Conv2d); returns the folded model and how many activations were folded."""
    if not isinstance(model, nn.Sequential):
        raise TopopruneError("layer folding needs an nn.Sequential")
    layers, folded = list(model), 0
    i = 0
    while i + 2 < len(layers):
        a, act, b = layers[i], layers[i + 1], layers[i + 2]
        if is_identity(act) and isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
            layers[i : i + 3] = [fold_linear(a, b)]
            folded += 1
            continue
        if is_identity(act) and isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d):
            try:
                layers[i : i + 3] = [fold_conv(a, b)]
                folded += 1
                continue
            except TopopruneError:
                pass
        i += 1
    return nn.Sequential(*layers), folded
