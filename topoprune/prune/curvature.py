"""Curvature of the training loss with respect to the pruned weights: per-example gradients, the
diagonal of the Hessian (Gauss-Newton or Hutchinson), the empirical Fisher, and the inputs each
layer sees (the Hessian of a layer's own reconstruction error).

These are what the second-order criteria need: OBD (the diagonal), OBS (an inverse), WoodFisher
(per-example gradients). Every function takes the model, the names of the pruned layers and an
iterable of ``(inputs, targets)`` batches; derivatives are with respect to ``weight_orig``, the
weights the masked forward pass uses, and are averages over the examples (the training loss is a
mean). The model is evaluated in ``eval`` mode (no dropout) and left in the mode it was in.

The Gauss-Newton diagonal is ``diag(J^T H_o J)`` averaged over examples, with ``J`` the Jacobian
of the outputs and ``H_o`` the Hessian of the loss in the outputs (``diag(p) - p p^T`` for
cross-entropy): the Levenberg-Marquardt approximation of LeCun et al. (1990), which drops the
terms with second derivatives of the network itself. It is exact for a network linear in its
weights; :func:`hutchinson_diagonal` estimates the diagonal of the full Hessian without bias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from topoprune.errors import TopopruneError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in ``eval`` mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def pruned_weights(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``weight_orig`` of each named masked layer, by layer name."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        module = modules.get(name)
        if module is None or not hasattr(module, "weight_orig"):
            raise TopopruneError(f"no masked layer {name!r}")
        out[name] = module.weight_orig
    return out


def _example_loss(model: nn.Module, names: list[str], loss_fn: Loss) -> Callable:
    """``f(weights, x, y)``: the loss of one example as a function of the named weights."""

    def loss(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {f"{n}.weight_orig": w for n, w in weights.items()}
        outputs = functional_call(model, params, (x.unsqueeze(0),))
        return loss_fn(outputs, y.unsqueeze(0))

    return loss


def per_example_gradients(
    model: nn.Module,
    names: list[str],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Loss = nn.functional.cross_entropy,
) -> dict[str, torch.Tensor]:
    """The gradient of each example's loss with respect to each named layer's weights, shaped
    ``(examples, *weight.shape)``.

    Examples
    --------
    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(3, 2, bias=False)))
    >>> x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    >>> grads = per_example_gradients(model, ["0"], x, y)
    >>> grads["0"].shape
    torch.Size([5, 2, 3])
    >>> full = torch.func.grad(lambda w: nn.functional.cross_entropy(x @ w.T, y))(
    ...     model[0].weight_orig.detach())
    >>> torch.allclose(grads["0"].mean(0), full, atol=1e-6)
    True
    """
    weights = {n: w.detach() for n, w in pruned_weights(model, names).items()}
    f = torch.func.grad(_example_loss(model, names, loss_fn))
    # no_grad: the result must not hold a graph to the model's other parameters (biases)
    with evaluating(model), torch.no_grad():
        return vmap(f, in_dims=(None, 0, 0))(weights, inputs, targets)


def output_hessian_factor(
    outputs: torch.Tensor, targets: torch.Tensor, loss_fn: Loss = nn.functional.cross_entropy
) -> torch.Tensor:
    """``A`` with ``A A^T`` the Hessian of each example's loss in its outputs, shaped
    ``(examples, outputs, outputs)``; the Hessian must be positive semi-definite (a loss convex
    in the outputs: cross-entropy, squared error).

    Examples
    --------
    >>> logits = torch.tensor([[0.0, 0.0]])
    >>> a = output_hessian_factor(logits, torch.tensor([0]))
    >>> (a @ a.transpose(1, 2))[0]  # diag(p) - p p^T with p = (1/2, 1/2)
    tensor([[ 0.2500, -0.2500],
            [-0.2500,  0.2500]])
    """
    flat = outputs.detach().reshape(len(outputs), -1)

    def one(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(o.view_as(outputs[0]).unsqueeze(0), y.unsqueeze(0))

    h = vmap(hessian(one))(flat.to(torch.float64), targets)
    values, vectors = torch.linalg.eigh((h + h.transpose(1, 2)) / 2)
    if (values < -1e-6 * values.abs().amax().clamp_min(1e-30)).any():
        raise TopopruneError("the loss is not convex in the outputs: no Gauss-Newton factor")
    return (vectors * values.clamp_min(0).sqrt().unsqueeze(1)).to(outputs.dtype)


def _output_jacobians(
    model: nn.Module, names: list[str], inputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-example Jacobians of the (flattened) outputs: ``(examples, outputs, *weight.shape)``."""
    weights = {n: w.detach() for n, w in pruned_weights(model, names).items()}

    def outputs(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        params = {f"{n}.weight_orig": v for n, v in w.items()}
        return functional_call(model, params, (x.unsqueeze(0),)).reshape(-1)

    return vmap(jacrev(outputs), in_dims=(None, 0))(weights, inputs)


def _chunks(batches: Iterable[Any], size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for inputs, targets in batches:
        for start in range(0, len(inputs), size):
            yield inputs[start : start + size], targets[start : start + size]


def _projected_jacobians(
    model: nn.Module, names: list[str], batches: Iterable[Any], loss_fn: Loss, chunk: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Per chunk of examples, ``A^T J`` for each named layer, ``(n, C, *weight.shape)``: with
    ``A A^T`` the output Hessian, ``J^T H_o J = sum_k (A^T J)_k^T (A^T J)_k``, one backpropagated
    output direction per ``k``."""
    with evaluating(model), torch.no_grad():
        for inputs, targets in _chunks(batches, chunk):
            factor = output_hessian_factor(model(inputs), targets, loss_fn)  # (n, C, C)
            jacobians = _output_jacobians(model, names, inputs)
            yield {n: torch.einsum("nck,nc...->nk...", factor, j) for n, j in jacobians.items()}


def gauss_newton_diagonal(
    model: nn.Module,
    names: list[str],
    batches: Iterable[Any],
    loss_fn: Loss = nn.functional.cross_entropy,
    chunk: int = 16,
) -> dict[str, torch.Tensor]:
    """The diagonal of the Gauss-Newton matrix ``mean_x J^T H_o J`` of each named layer.

    For a network linear in its weights with squared error it is the Hessian's diagonal:

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(3, 1, bias=False)))
    >>> x = torch.randn(50, 3); y = torch.randn(50, 1)
    >>> mse = nn.functional.mse_loss
    >>> d = gauss_newton_diagonal(model, ["0"], [(x, y)], mse)["0"]
    >>> torch.allclose(d[0], torch.diag(2 * x.T @ x / 50), rtol=1e-4)
    True
    """
    total = {n: torch.zeros_like(w) for n, w in pruned_weights(model, names).items()}
    count = 0
    for projected in _projected_jacobians(model, names, batches, loss_fn, chunk):
        for name, p in projected.items():
            total[name] += p.square().sum(dim=(0, 1))
        count += len(next(iter(projected.values())))
    if not count:
        raise TopopruneError("no examples to compute the Gauss-Newton diagonal on")
    return {n: t / count for n, t in total.items()}


def gauss_newton_matrix(
    model: nn.Module,
    names: list[str],
    batches: Iterable[Any],
    loss_fn: Loss = nn.functional.cross_entropy,
    chunk: int = 16,
    max_weights: int = 8192,
) -> torch.Tensor:
    """The full Gauss-Newton matrix over the named layers' weights, flattened in layer order, in
    float64 (``8 P^2`` bytes: refused above ``max_weights`` weights)."""
    weights = pruned_weights(model, names)
    size = sum(w.numel() for w in weights.values())
    if size > max_weights:
        raise TopopruneError(
            f"{size} weights need a {size}x{size} Hessian ({8 * size * size / 2**30:.1f} GiB); "
            f"the limit is {max_weights}: use the layer-wise Hessian"
        )
    device = next(iter(weights.values())).device
    total = torch.zeros(size, size, dtype=torch.float64, device=device)
    count = 0
    for projected in _projected_jacobians(model, names, batches, loss_fn, chunk):
        rows = torch.cat([projected[n].flatten(2) for n in names], dim=2).double().flatten(0, 1)
        total += rows.T @ rows
        count += len(projected[names[0]])
    if not count:
        raise TopopruneError("no examples to compute the Gauss-Newton matrix on")
    return total / count


def hutchinson_diagonal(
    model: nn.Module,
    names: list[str],
    batches: Iterable[Any],
    loss_fn: Loss = nn.functional.cross_entropy,
    samples: int = 10,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Hutchinson's unbiased estimate ``mean_z z * (H z)`` of the Hessian's diagonal, ``z``
    Rademacher, ``samples`` vectors per batch, by double backpropagation through the loss.

    Exact in expectation for any twice-differentiable loss (including the network's own second
    derivatives, which the Gauss-Newton diagonal drops); its variance falls as 1/samples.
    """
    if samples < 1:
        raise TopopruneError(f"Hutchinson samples must be >= 1, got {samples}")
    weights = pruned_weights(model, names)
    params = [weights[n] for n in names]
    total = [torch.zeros_like(p) for p in params]
    count = 0
    with evaluating(model):
        for inputs, targets in batches:
            loss = loss_fn(model(inputs), targets)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for s in range(samples):
                zs = [
                    torch.randint(0, 2, p.shape, generator=generator).to(p) * 2 - 1 for p in params
                ]
                hz = torch.autograd.grad(
                    grads, params, grad_outputs=zs, retain_graph=s < samples - 1
                )
                for t, z, h in zip(total, zs, hz, strict=True):
                    t += len(inputs) * z * h.detach() / samples
            count += len(inputs)
    if not count:
        raise TopopruneError("no examples to estimate the Hessian diagonal on")
    return {n: t / count for n, t in zip(names, total, strict=True)}


def batch_gradients(
    model: nn.Module, names: list[str], batches: Iterable[Any], loss_fn: Loss
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Per batch, its size and the gradient of its mean loss with respect to each named layer's
    weights (the model in ``eval`` mode): what first-order scores (SNIP, Taylor) sum up."""
    weights = pruned_weights(model, names)
    params = [weights[n] for n in names]
    with evaluating(model):
        for inputs, targets in batches:
            grads = torch.autograd.grad(loss_fn(model(inputs), targets), params)
            yield len(inputs), dict(zip(names, grads, strict=True))


def empirical_fisher_diagonal(
    model: nn.Module,
    names: list[str],
    batches: Iterable[Any],
    loss_fn: Loss = nn.functional.cross_entropy,
) -> dict[str, torch.Tensor]:
    """``mean_x g_x^2``: the diagonal of the empirical Fisher, from per-example gradients."""
    total = {n: torch.zeros_like(w) for n, w in pruned_weights(model, names).items()}
    count = 0
    for inputs, targets in batches:
        for name, g in per_example_gradients(model, names, inputs, targets, loss_fn).items():
            total[name] += g.square().sum(0)
        count += len(inputs)
    if not count:
        raise TopopruneError("no examples to compute the Fisher diagonal on")
    return {n: t / count for n, t in total.items()}


def layer_inputs(
    model: nn.Module, names: list[str], batches: Iterable[Any]
) -> dict[str, torch.Tensor]:
    """What each named Linear/Conv2d layer multiplies its weights with, one row per use:
    ``(examples, in_features)`` for a Linear layer, the unfolded patches ``(examples x positions,
    in_channels x kh x kw)`` for a convolution (each output channel sees them all)."""
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook(name: str) -> Callable:
        module = modules[name]

        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if isinstance(module, nn.Linear):
                seen[name].append(x.reshape(-1, x.shape[-1]))
            elif isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise TopopruneError(f"{name}: grouped convolutions have no layer-wise inputs")
                if isinstance(module.padding, str):
                    raise TopopruneError(f"{name}: string padding is not supported here")
                patches = nn.functional.unfold(
                    x, module.kernel_size, module.dilation, module.padding, module.stride
                )
                seen[name].append(patches.transpose(1, 2).reshape(-1, patches.shape[1]))
            else:
                raise TopopruneError(f"{name}: layer-wise inputs of {type(module).__name__}")

        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with evaluating(model), torch.no_grad():
            for inputs, _ in batches:
                model(inputs)
    finally:
        for h in handles:
            h.remove()
    if not all(seen.values()):
        raise TopopruneError("no examples to record the layers' inputs on")
    return {n: torch.cat(v) for n, v in seen.items()}


def lecun_diagonal(
    model: nn.Module,
    names: list[str],
    batches: Iterable[Any],
    loss_fn: Loss = nn.functional.cross_entropy,
) -> dict[str, torch.Tensor]:
    """LeCun, Denker and Solla's (1990) diagonal: second derivatives backpropagated with the
    Levenberg-Marquardt approximation and every off-diagonal term dropped on the way down.

    At the outputs ``d2E/do2`` is the diagonal of the loss's Hessian in the outputs; through a
    Linear or Conv2d layer ``d2E/dx_j2 = sum_i W_ij^2 d2E/dy_i2`` and ``d2E/dW_ij2 = x_j^2
    d2E/dy_i2``; through an activation ``d2E/dz2 = f'(z)^2 d2E/da2`` (the ``f''`` term dropped);
    max-pooling and flattening route. Only for an ``nn.Sequential`` of Linear, Conv2d (ungrouped,
    zero padding), ReLU,
    Tanh, Sigmoid, MaxPool2d, Flatten, Dropout and Identity modules (the zoo's models); it
    equals the Gauss-Newton diagonal when each weight reaches the output by one path (one
    output unit), and is cheaper: one backward pass per batch.

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(3, 1, bias=False)))
    >>> x = torch.randn(20, 3); y = torch.randn(20, 1)
    >>> d = lecun_diagonal(model, ["0"], [(x, y)], nn.functional.mse_loss)["0"]
    >>> torch.allclose(d[0], torch.diag(2 * x.T @ x / 20), rtol=1e-4)
    True
    """
    if not isinstance(model, nn.Sequential):
        raise TopopruneError(
            "the backpropagated (LeCun) diagonal needs an nn.Sequential model; use gauss-newton"
        )
    layers = list(model.named_children())
    for name, module in layers:
        plain_conv = not isinstance(module, nn.Conv2d) or (
            module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
        pooled = not isinstance(module, nn.MaxPool2d) or not module.return_indices
        if not (isinstance(module, _LECUN_MODULES) and plain_conv and pooled):
            raise TopopruneError(
                f"the backpropagated (LeCun) diagonal has no rule for {name} ({module}); "
                "use gauss-newton"
            )
    wanted = set(pruned_weights(model, names))
    total = {n: torch.zeros_like(w) for n, w in pruned_weights(model, names).items()}
    count = 0
    with evaluating(model), torch.no_grad():
        for inputs, targets in batches:
            values = [inputs]
            for _, module in layers:
                values.append(module(values[-1]))
            factor = output_hessian_factor(values[-1], targets, loss_fn)
            h = factor.square().sum(2).reshape(values[-1].shape)  # diag of A A^T per example
            for (name, module), x in zip(reversed(layers), reversed(values[:-1]), strict=True):
                h = _lecun_step(name, module, x, h, total if name in wanted else None)
            count += len(inputs)
    if not count:
        raise TopopruneError("no examples to compute the backpropagated diagonal on")
    return {n: t / count for n, t in total.items()}


_LECUN_MODULES = (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.MaxPool2d, nn.Flatten, nn.Dropout,
    nn.Identity,
)  # fmt: skip


def _lecun_step(
    name: str, module: nn.Module, x: torch.Tensor, h: torch.Tensor, total: dict | None
) -> torch.Tensor:
    """``d2E/dx2`` from ``d2E/dy2`` through one module; adds ``d2E/dW2`` to ``total[name]``."""
    if isinstance(module, nn.Linear):
        weight = module.weight
        if total is not None:
            total[name] += h.reshape(-1, h.shape[-1]).T @ x.reshape(-1, x.shape[-1]).square()
        return h @ weight.square()
    if isinstance(module, nn.Conv2d):
        weight = module.weight
        if total is not None:
            patches = nn.functional.unfold(
                x.square(), module.kernel_size, module.dilation, module.padding, module.stride
            )  # (n, c*kh*kw, positions)
            grad = torch.einsum("nol,nkl->ok", h.flatten(2), patches)
            total[name] += grad.reshape(weight.shape)
        return torch.nn.grad.conv2d_input(
            x.shape, weight.square(), h, module.stride, module.padding, module.dilation,
            module.groups,
        )  # fmt: skip
    if isinstance(module, nn.ReLU):
        return h * (x > 0)
    if isinstance(module, nn.Tanh):
        return h * (1 - torch.tanh(x).square()).square()
    if isinstance(module, nn.Sigmoid):
        s = torch.sigmoid(x)
        return h * (s * (1 - s)).square()
    if isinstance(module, nn.MaxPool2d):
        with torch.enable_grad():  # the pooling's Jacobian is 0/1: its transpose routes h
            xr = x.detach().requires_grad_(True)
            (routed,) = torch.autograd.grad(module(xr), xr, grad_outputs=h)
        return routed
    if isinstance(module, nn.Flatten):
        return h.reshape(x.shape)
    return h  # Dropout (eval) and Identity
