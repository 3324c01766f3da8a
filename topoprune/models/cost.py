"""What a model costs to run: parameters, multiply-accumulates, CPU latency, and the same forward
pass through sparse (CSR) matrix products.

Latency is measured, not derived: removing channels shrinks dense products (a real speedup),
while unstructured zeros leave the dense products as large as before, and a sparse format only
pays once the layers are very sparse (the slides' "theoretical speedup != practical speedup").
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def parameter_count(model: nn.Module) -> int:
    """Parameters of ``model`` (zeros included: a dense model stores them).

    Examples
    --------
    >>> parameter_count(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters())


def multiply_accumulates(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the convolutions and linear layers per input of ``example`` (a
    batch along its first axis), counting every call (a recurrent layer's gates once per
    step); zeros count too.

    Examples
    --------
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 5))
    >>> multiply_accumulates(model, torch.zeros(4, 1, 4, 4))  # 2*2*2 outputs x 9, then 8 x 5
    112
    """
    total = [0]

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features
        else:
            kernel = module.weight[0].numel()  # in_channels / groups x kernel positions
            total[0] += output.numel() * kernel

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    handles = [m.register_forward_hook(count) for m in layers]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()  # no BatchNorm statistics updated by counting
            model(example)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return total[0] // example.shape[0]


def latency(
    model: nn.Module | Callable, batch: torch.Tensor, *, repeats: int = 20, warmup: int = 3
) -> float:
    """Median seconds of ``repeats`` forward passes of ``batch`` (inference mode, after
    ``warmup`` passes)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            tic = time.perf_counter()
            model(batch)
            if i >= warmup:
                times.append(time.perf_counter() - tic)
    return statistics.median(times)


def interleaved_latency(
    models: dict[str, nn.Module | Callable],
    batch: torch.Tensor,
    *,
    rounds: int = 5,
    repeats: int = 10,
) -> dict[str, list[float]]:
    """Per model, the median latency of each round; the models take turns within every round
    (each round starting one model later, so none is always first), so that a slower moment of
    the machine slows them all (compare ratios within a round)."""
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(latency(models[name], batch, repeats=repeats))
    return times


def speedups(times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Per model, the median over rounds of ``baseline``'s time over its time in that round.

    Examples
    --------
    >>> speedups({"dense": [2.0, 4.0, 3.0], "small": [1.0, 1.0, 1.0]}, "dense")["small"]
    3.0
    """
    return {name: statistics.median(b / t for b, t in zip(times[baseline], values, strict=True))
            for name, values in times.items()}  # fmt: skip


class _CSRLinear(nn.Module):
    """A linear layer whose weight is held in CSR: ``y = W x + b`` by a sparse-dense product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = _to_csr(weight)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.weight @ x.reshape(-1, x.shape[-1]).T).T.reshape(*x.shape[:-1], -1)
        return out if self.bias is None else out + self.bias


class _CSRConv2d(nn.Module):
    """A convolution as im2col (``unfold``) and a CSR product with its C_out x (C_in k k)
    weight (groups of 1)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor) -> None:
        super().__init__()
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.out_channels = conv.out_channels
        self.weight = _to_csr(weight.reshape(conv.out_channels, -1))
        self.bias = None if conv.bias is None else conv.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        out_h = h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1
        out_w = w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1
        out_h, out_w = out_h // self.stride[0] + 1, out_w // self.stride[1] + 1
        # (C_out, C_in k k) @ (C_in k k, N L): one sparse product for the whole batch
        flat = columns.transpose(0, 1).reshape(columns.shape[1], -1)
        out = (self.weight @ flat).reshape(self.out_channels, n, out_h * out_w).transpose(0, 1)
        if self.bias is not None:
            out = out + self.bias[None, :, None]
        return out.reshape(n, self.out_channels, out_h, out_w)


def _plain_conv(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.groups == 1
            and not isinstance(module.padding, str) and module.padding_mode == "zeros")  # fmt: skip


def _to_csr(weight: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # torch calls its CSR support beta; the products are exact
        warnings.simplefilter("ignore", UserWarning)
        return weight.detach().to_sparse_csr()


def csr_model(model: nn.Module, names: Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose linear layers and (ungrouped, string-padding-free) 2-D
    convolutions compute with CSR weights; ``names`` limits which (default: every one).

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    >>> x = torch.rand(5, 1, 6, 6)
    >>> bool(torch.allclose(csr_model(model)(x), model(x), atol=1e-6))
    True
    """
    import copy

    result = copy.deepcopy(model)
    for name, module in list(result.named_modules()):
        if names is not None and name not in names:
            continue
        if isinstance(module, nn.Linear):
            replacement: nn.Module = _CSRLinear(module.weight, module.bias)
        elif _plain_conv(module):
            replacement = _CSRConv2d(module, module.weight)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = result.get_submodule(parent_name) if parent_name else result
        setattr(parent, child, replacement)
    return result
