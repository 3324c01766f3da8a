"""Pruning at initialisation: SNIP, GraSP, SynFlow.

Each scores the freshly initialised network once (SynFlow: over ``rounds`` rounds, without data),
keeps the highest-scoring weights (one ranking over the network by default), then the masked
network trains for ``retrain_epochs`` epochs at the full learning rate (``--dense-epochs 0``).

- ``snip`` (Lee, Ajanthan and Torr 2019): connection sensitivity ``|g * w|`` on
  ``scoring_examples`` training examples. The paper scores and trains one initialisation; its
  official code re-initialises the network after masking (``--reinit``: the weights are drawn
  again from a generator seeded by the run's seed, and the choice is in the run's config).
- ``grasp`` (Wang, Zhang and Grosse 2020): ``S = -w * (H g)`` with the Hessian-gradient product
  by double backpropagation through the loss of the logits divided by ``temperature`` (200 in the
  paper's code); the weights of highest ``S`` are removed, as in the paper's Algorithm 1.
  ``--samples-per-class k`` scores on the first k examples of each class among the drawn
  ``scoring_examples`` (the paper's code fetches 10 per class).
  ``grasp-abs`` keeps the highest ``|w * (H g)|``, the variant later ports report to work
  better.
- ``synflow`` (Tanaka et al. 2020): data-free; ``R = 1^T (prod_l |W_l|) 1`` computed by the
  network with every parameter replaced by its absolute value on an input of ones (float64),
  scores ``|w * dR/dw|``, pruned over ``rounds`` rounds to densities ``d^(k / rounds)`` (the
  exponential schedule), rescoring each round; it avoids layer collapse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import allocate, geometric_sparsity, layer_sparsities
from topoprune.prune.curvature import Loss, batch_gradients, evaluating, pruned_weights
from topoprune.prune.masks import apply_masks, current_masks
from topoprune.prune.method import Context, Stage, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreConfig, ScoreMethod


def snip_scores(
    model: nn.Module, names: list[str], batches, loss_fn: Loss
) -> dict[str, torch.Tensor]:
    """``|g * w|`` with ``g`` the gradient of the mean loss over ``batches`` (SNIP's connection
    sensitivity, before its normalisation, which does not change the ranking).

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(2, 1, bias=False)))
    >>> with torch.no_grad():
    ...     _ = model[0].weight_orig.copy_(torch.tensor([[2.0, -1.0]]))
    >>> x, y = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0]])
    >>> snip_scores(model, ["0"], [(x, y)], nn.functional.mse_loss)["0"]  # g = 2 (w.x) x
    tensor([[4., 6.]])
    """
    weights = pruned_weights(model, names)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    count = 0
    for size, grads in batch_gradients(model, names, batches, loss_fn):
        for name, g in grads.items():
            total[name] += g * size
        count += size
    if not count:
        raise TopopruneError("no examples to compute SNIP's scores on")
    return {n: (t / count * weights[n].detach()).abs() for n, t in total.items()}


def class_balanced(batches, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the first ``per_class`` examples of every class found in ``batches`` (GraSP's
    class-balanced scoring batch); a class with fewer examples contributes what it has.

    >>> x = torch.arange(6.0).view(6, 1)
    >>> y = torch.tensor([0, 0, 1, 0, 1, 1])
    >>> images, labels = class_balanced([(x[:3], y[:3]), (x[3:], y[3:])], 2)
    >>> images.flatten().tolist(), labels.tolist()
    ([0.0, 1.0, 2.0, 4.0], [0, 0, 1, 1])
    """
    batches = list(batches)
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise TopopruneError("class-balanced scoring needs integer class labels")
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for c in labels.unique():
        keep[torch.nonzero(labels == c).flatten()[:per_class]] = True
    return images[keep], labels[keep]


def hessian_gradient_product(
    model: nn.Module, names: list[str], batches, loss_fn: Loss, temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """``H g`` of the mean loss of ``outputs / temperature`` over ``batches``, with respect to
    the named layers' weights: ``g`` from a first pass, then the gradient of ``g^T grad L``."""
    modules = dict(model.named_modules())
    params = [modules[n].weight_orig for n in names]
    batches = list(batches)
    count = sum(len(x) for x, _ in batches)
    if not count:
        raise TopopruneError("no examples to compute GraSP's scores on")

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(x) / temperature, y) * len(x) / count

    with evaluating(model):
        g = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            for total, grad in zip(g, torch.autograd.grad(loss(x, y), params), strict=True):
                total += grad
        hg = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            grads = torch.autograd.grad(loss(x, y), params, create_graph=True)
            z = sum((a * b.detach()).sum() for a, b in zip(grads, g, strict=True))
            for total, h in zip(hg, torch.autograd.grad(z, params), strict=True):
                total += h
    return dict(zip(names, hg, strict=True))


def synflow_scores(
    model: nn.Module, names: list[str], input_shape: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """``|w * dR/dw|`` with ``R`` the sum of the outputs of the network whose parameters are all
    replaced by their absolute values (pruned weights stay zero), on one input of ones, in float64.

    For a bias-free linear network the scores of every layer sum to ``R`` (conservation):

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)))
    >>> s = synflow_scores(model, ["0", "1"], (3,))
    >>> bool(torch.isclose(s["0"].sum(), s["1"].sum()))
    True
    """
    params = {k: v.detach().abs().double().requires_grad_(k.endswith("weight_orig"))
              for k, v in model.named_parameters()}  # fmt: skip
    buffers = {k: v.double() for k, v in model.named_buffers()}
    ones = torch.ones((1, *input_shape), dtype=torch.float64)
    with evaluating(model):
        total = functional_call(model, {**params, **buffers}, (ones,)).sum()
    keys = [f"{n}.weight_orig" for n in names]
    grads = torch.autograd.grad(total, [params[k] for k in keys])
    return {
        n: (params[k] * g).detach().abs().float()
        for n, k, g in zip(names, keys, grads, strict=True)
    }


@dataclass(frozen=True)
class AtInitConfig(ScoreConfig):
    """Pruning at initialisation: no dense training, one round, global ranking, training at the
    full learning rate afterwards."""

    dense_epochs: int = hp("epochs of dense training before pruning (0: at initialisation)", 0,
                           low=0)  # fmt: skip
    allocation: str = hp(
        "how sparsity is spread: global (one ranking, the papers'), layer, uniform, erk",
        "global",
        choices=("layer", "uniform", "global", "erk"),
    )
    retrain_epochs: int = hp("epochs of training of the masked network", 20, low=0)
    retrain_lr_factor: float = hp("training learning rate = lr x this", 1.0, low=0, low_open=True)
    scoring_examples: int = hp("training examples the scores are computed on", 100, low=1)


@dataclass(frozen=True)
class SnipConfig(AtInitConfig):
    reinit: bool = hp(
        "re-initialise the weights after masking, as SNIP's official code does (the paper "
        "trains the scored initialisation)",
        False,
    )


@METHODS.register("snip")
class Snip(ScoreMethod):
    """Keep the weights of highest ``|g * w|`` at initialisation; train the masked network."""

    Config = SnipConfig
    paper = (
        "Lee, Ajanthan and Torr 2019, SNIP: single-shot network pruning based on connection "
        "sensitivity"
    )
    contract_overrides: ClassVar[dict] = {"scoring_examples": 32}

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        batches = ctx.scoring_batches(self.config.scoring_examples)
        return snip_scores(ctx.model, self.names, batches, ctx.loss_fn)

    def prune_to(self, ctx: Context, schedule) -> None:
        super().prune_to(ctx, schedule)
        if self.config.reinit:
            _reinitialise(ctx, self.seed)


@torch.no_grad()
def _reinitialise(ctx: Context, seed: int) -> None:
    """Draw the pruned layers' weights again (their modules' own initialisation) from a
    generator seeded by ``seed``, keeping the masks; the global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 104729)
        for _, module in ctx.pruned_modules():
            fresh = torch.empty_like(module.weight_orig)
            nn.init.kaiming_uniform_(fresh, a=5**0.5)  # nn.Linear / nn.Conv2d's default
            module.weight_orig.copy_(fresh * module.weight_mask)


@dataclass(frozen=True)
class GraspConfig(AtInitConfig):
    temperature: float = hp("the logits are divided by this (200 in the paper's code)", 200.0,
                            low=0, low_open=True)  # fmt: skip
    samples_per_class: int = hp(
        "score on this many examples of each class, taken in order from the drawn scoring "
        "examples (the paper's code: 10; 0: the drawn examples as they come)",
        0,
        low=0,
    )


@METHODS.register("grasp")
class Grasp(ScoreMethod):
    """Remove the weights of highest ``-w * (H g)`` at initialisation (keep gradient flow)."""

    Config = GraspConfig
    paper = (
        "Wang, Zhang and Grosse 2020, Picking winning tickets before training by preserving "
        "gradient flow"
    )
    contract_overrides: ClassVar[dict] = {"scoring_examples": 32}

    def _products(self, ctx: Context) -> dict[str, torch.Tensor]:
        modules = dict(ctx.pruned_modules())
        batches = ctx.scoring_batches(self.config.scoring_examples)
        if self.config.samples_per_class:
            batches = [class_balanced(batches, self.config.samples_per_class)]
        hg = hessian_gradient_product(ctx.model, self.names, batches, ctx.loss_fn,
                                      self.config.temperature)  # fmt: skip
        return {n: modules[n].weight_orig.detach() * hg[n] for n in self.names}

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        # S = -w Hg, highest removed: keep the highest w Hg
        return self._products(ctx)


@METHODS.register("grasp-abs")
class GraspAbs(Grasp):
    """GraSP with ``|w * (H g)|``, the highest kept."""

    paper = "Wang, Zhang and Grosse 2020 (absolute-value variant of later ports)"

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {n: s.abs() for n, s in self._products(ctx).items()}


@dataclass(frozen=True)
class SynflowConfig(AtInitConfig):
    rounds: int = hp("pruning rounds before training (exponential schedule)", 100, low=1)


@METHODS.register("synflow")
class Synflow(ScoreMethod):
    """Data-free iterative synaptic flow pruning at initialisation, then train."""

    Config = SynflowConfig
    paper = (
        "Tanaka, Kunin, Yamins and Ganguli 2020, Pruning neural networks without any data by "
        "iteratively conserving synaptic flow"
    )
    contract_overrides: ClassVar[dict] = {"rounds": 5}

    def stages(self) -> list[Stage]:
        c = self.config
        if c.prune_schedule != "iterative" or c.iterations != 1:
            raise TopopruneError("synflow prunes in its own --rounds before training")
        return [
            c.stage("dense", c.dense_epochs),
            c.stage("prune1", c.retrain_epochs, lr=c.lr * c.retrain_lr_factor,
                    on_start=self._prune),
        ]  # fmt: skip

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        return synflow_scores(ctx.model, self.names, _input_shape(ctx))

    def _prune(self, ctx: Context) -> None:
        c = self.config
        shapes = {n: tuple(m.weight_mask.shape) for n, m in ctx.pruned_modules()}
        final = layer_sparsities(shapes, c.sparsity, c.allocation)
        shape = _input_shape(ctx)  # drawn once: every round rescores on ones of this shape
        for k in range(c.rounds):
            goal = (
                {n: geometric_sparsity(s, k, c.rounds) for n, s in final.items()}
                if isinstance(final, dict)
                else geometric_sparsity(final, k, c.rounds)
            )
            scores = synflow_scores(ctx.model, self.names, shape)
            apply_masks(ctx.model, allocate(scores, current_masks(ctx.model), goal))


def _input_shape(ctx: Context) -> tuple[int, ...]:
    """The shape of one training input (SynFlow uses no data, only this)."""
    inputs, _ = next(iter(ctx.scoring_batches(1)))
    return tuple(inputs.shape[1:])
