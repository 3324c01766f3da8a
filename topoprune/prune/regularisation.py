"""Sparsity by regularised training, then a threshold and retraining: l2, l1, proximal, l0.

Five registered methods share the tail of :class:`~topoprune.prune.threshold.ThresholdMethod`
(``threshold``: the census of exact and near zeros goes to the run's ``report``, then each layer
keeps its largest ``1 - sparsity`` share, or with ``--quality`` the weights above quality x the
std of its surviving weights; ``retrain`` with the masks fixed and no regulariser).
Before it, ``dense_epochs`` of plain training (stage ``dense``) and ``epochs`` of regularised
training (stage ``regularised``, or ``topk`` for l0) on the weights of the pruned layers:

- ``l2``: the penalty ``(lam / 2) sum ||W||^2`` added to the loss;
- ``l1-subgradient``: ``lam sum |W|`` added to the loss; autograd's gradient of ``|w|`` is
  ``sign(w)`` (0 at 0), a subgradient, so the step is subgradient descent: it leaves many weights
  near zero but almost none exactly zero;
- ``l1-proximal``: a plain gradient step on the loss, then the proximal step of ``lam ||W||_1``
  with the step's learning rate ``eta`` (soft-thresholding, :func:`soft_threshold`): exact zeros;
- ``l2-proximal``: the same with the proximal step of ``(lam / 2) ||W||^2``, the shrinkage
  ``W / (1 + eta lam)`` (:func:`l2_shrink`);
- ``l0-topk``: every ``every`` steps all but the ``t`` largest-magnitude weights are set to zero
  (per layer, or over all pruned layers together), unmasked, so they may grow back; the threshold
  then makes the top ``t`` permanent.

``--weight-decay`` (on every parameter, biases included) stays on by default; to compare l1 with
l2 the study sets it to 0, so that ``lam`` is the only regulariser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import allocate, check_network_sparsity, layer_sparsities
from topoprune.prune.masks import apply_masks, current_masks
from topoprune.prune.method import Context, Stage, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.threshold import ThresholdConfig, ThresholdMethod, weight_census

# ---- proximal operators -----------------------------------------------------------------------


@torch.no_grad()
def soft_threshold(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """Soft-thresholding in place: the proximal operator of ``threshold * ||.||_1``.

    Parameters
    ----------
    z : torch.Tensor
        The point to map, modified in place.
    threshold : float
        ``t >= 0``; each entry becomes ``argmin_w 0.5 (w - z)^2 + t |w|``.

    Returns
    -------
    torch.Tensor
        ``z``, now ``sign(z) max(|z| - t, 0)``: entries with ``|z| <= t`` are exactly zero, so a
        zero (a pruned weight) stays zero.

    Examples
    --------
    >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.0]), 1.0)
    tensor([-1.,  0.,  0.,  0.,  2.])
    """
    if threshold < 0:
        raise TopopruneError(f"the soft threshold must be >= 0, got {threshold:g}")
    shrunk = z - threshold * z.sign()
    return z.copy_(torch.where(z.abs() > threshold, shrunk, torch.zeros_like(z)))


@torch.no_grad()
def l2_shrink(z: torch.Tensor, strength: float) -> torch.Tensor:
    """Shrinkage in place: the proximal operator of ``(strength / 2) ||.||^2``.

    Parameters
    ----------
    z : torch.Tensor
        The point to map, modified in place.
    strength : float
        ``s >= 0``; each entry becomes ``argmin_w 0.5 (w - z)^2 + (s / 2) w^2``.

    Returns
    -------
    torch.Tensor
        ``z``, now ``z / (1 + s)``: smaller, never exactly zero unless it was (a pruned weight
        stays zero).

    Examples
    --------
    >>> l2_shrink(torch.tensor([-3.0, 0.0, 1.5]), 0.5)
    tensor([-2.,  0.,  1.])
    """
    if strength < 0:
        raise TopopruneError(f"the shrinkage strength must be >= 0, got {strength:g}")
    return z.div_(1 + strength)


# ---- l1 and l2 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegularisedConfig(ThresholdConfig):
    """Shared hyper-parameters of the l1 and l2 methods (``lam`` defaults differ). The inherited
    ``weight_decay`` stays on by default; the l1-versus-l2 comparison sets it to 0."""

    weight_decay: float = hp(
        "L2 weight decay on every parameter (set 0 to compare l1 with l2: --lam alone)", 5e-4, low=0
    )
    epochs: int = hp("epochs of regularised training (after --dense-epochs)", 10, low=0)
    lam: float = hp("regularisation strength on the pruned layers' weights", 1e-4, low=0)


@dataclass(frozen=True)
class L1Config(RegularisedConfig):
    """Hyper-parameters of the l1 methods."""

    lam: float = hp("l1 strength: lam sum |W| on the pruned layers' weights", 1e-4, low=0)


@dataclass(frozen=True)
class L2Config(RegularisedConfig):
    """Hyper-parameters of the l2 methods."""

    lam: float = hp("l2 strength: (lam / 2) sum ||W||^2 on the pruned layers' weights", 5e-4, low=0)


def _weights(ctx: Context) -> list[torch.Tensor]:
    """The ``weight_orig`` of every pruned layer (pruned entries are zero, with zero gradient)."""
    return [module.weight_orig for _, module in ctx.pruned_modules()]


class RegularisedMethod(ThresholdMethod):
    """Base of the l1/l2 methods: a dense stage, a regularised stage with :meth:`hooks`, then the
    threshold and retraining of :class:`ThresholdMethod`."""

    Config = RegularisedConfig

    def hooks(self) -> dict:
        """The regularised stage's hooks (``loss_term`` or ``after_step``)."""
        raise NotImplementedError

    def sparsify_stages(self) -> list[Stage]:
        c = self.config
        return [c.stage("dense", c.dense_epochs), c.stage("regularised", c.epochs, **self.hooks())]


class PenaltyMethod(RegularisedMethod):
    """Base of the methods whose regulariser is a term of the loss (:meth:`penalty`)."""

    def penalty(self, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def hooks(self) -> dict:
        return {"loss_term": self.penalty}


@METHODS.register("l2")
class L2Penalty(PenaltyMethod):
    """Train with an l2 penalty on the weights, prune the smallest, retrain."""

    Config = L2Config
    paper = (
        "Han et al. 2015, Learning both weights and connections for efficient neural networks "
        "(l2 regularisation); Collins and Kohli 2014, Memory bounded deep convolutional networks"
    )

    def penalty(self, ctx: Context) -> torch.Tensor:
        """``(lam / 2) sum ||W||^2`` over the pruned layers."""
        return 0.5 * self.config.lam * sum(w.pow(2).sum() for w in _weights(ctx))


@METHODS.register("l1-subgradient")
class L1Subgradient(PenaltyMethod):
    """Train with an l1 penalty by subgradient steps (near zeros, not exact), prune, retrain."""

    Config = L1Config
    paper = (
        "Han et al. 2015, Learning both weights and connections for efficient neural networks "
        "(l1 regularisation); Collins and Kohli 2014, Memory bounded deep convolutional networks"
    )

    def penalty(self, ctx: Context) -> torch.Tensor:
        """``lam sum |W|`` over the pruned layers; its gradient is ``lam sign(W)`` (0 at 0)."""
        return self.config.lam * sum(w.abs().sum() for w in _weights(ctx))


class ProximalMethod(RegularisedMethod):
    """Base of the proximal methods: after every optimizer step, the proximal operator of the
    regulariser with the step's learning rate ``ctx.lr`` (the cosine schedule's current rate).

    With SGD momentum (the default) or Adam the optimizer's step is not a plain gradient step:
    the proximal operator is applied to the parameter after the optimizer's step (the momentum
    buffer is left alone), with the nominal learning rate. With ``--momentum 0`` and SGD it is
    exactly proximal gradient descent.
    """

    def prox(self, weight: torch.Tensor, step: float) -> None:
        """Replace ``weight`` in place by the regulariser's proximal operator with step ``step``."""
        raise NotImplementedError

    def proximal_step(self, ctx: Context) -> None:
        """The ``after_step`` hook: the proximal step on every pruned layer's weights (pruned
        entries are zero and stay zero, since both operators map 0 to 0)."""
        for weight in _weights(ctx):
            self.prox(weight, ctx.lr)

    def hooks(self) -> dict:
        return {"after_step": self.proximal_step}


@METHODS.register("l1-proximal")
class L1Proximal(ProximalMethod):
    """Gradient step, then soft-thresholding by lr x lam (exact zeros); prune, retrain."""

    Config = L1Config
    paper = "Parikh and Boyd 2014, Proximal algorithms (proximal gradient, l1: soft-thresholding)"

    def prox(self, weight: torch.Tensor, step: float) -> None:
        soft_threshold(weight, step * self.config.lam)


@METHODS.register("l2-proximal")
class L2Proximal(ProximalMethod):
    """Gradient step, then shrinkage w / (1 + lr x lam); prune, retrain."""

    Config = L2Config
    paper = "Parikh and Boyd 2014, Proximal algorithms (proximal gradient, l2: shrinkage)"

    def prox(self, weight: torch.Tensor, step: float) -> None:
        l2_shrink(weight, step * self.config.lam)


# ---- l0: keep the top t ------------------------------------------------------------------------


@dataclass(frozen=True)
class L0Config(ThresholdConfig):
    """Hyper-parameters of the l0 top-t heuristic; t = round((1 - sparsity) x size)."""

    epochs: int = hp("epochs with the top-t projection (after --dense-epochs)", 10, low=0)
    every: int = hp(
        "every this many steps, zero all but the t largest-magnitude weights (t from --sparsity)",
        100,
        low=1,
    )
    allocation: str = hp(
        "t per layer, or over all pruned layers together (global: one --sparsity)",
        "layer",
        choices=("layer", "global"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_network_sparsity(self.sparsity, self.allocation)
        if self.quality:
            raise TopopruneError("l0-topk keeps t weights given by --sparsity; --quality is unused")


@METHODS.register("l0-topk")
class L0TopK(ThresholdMethod):
    """Every n steps zero all but the t largest weights (they may regrow); keep them, retrain."""

    Config = L0Config
    paper = (
        "Collins and Kohli 2014, Memory bounded deep convolutional networks (l0 projection; "
        "hard thresholding as in Blumensath and Davies 2009, Iterative hard thresholding)"
    )

    def top_t(self, ctx: Context) -> dict[str, torch.Tensor]:
        """Boolean masks of the t largest-magnitude surviving weights, per layer or global."""
        weights = {n: m.weight_orig.detach() * m.weight_mask for n, m in ctx.pruned_modules()}
        shapes = {n: tuple(w.shape) for n, w in weights.items()}
        goal = layer_sparsities(shapes, self.config.sparsity, self.config.allocation)
        scores = {n: w.abs() for n, w in weights.items()}
        return allocate(scores, current_masks(ctx.model), goal)

    @torch.no_grad()
    def project(self, ctx: Context) -> None:
        """The ``after_step`` hook: every ``every`` steps of the stage, zero the weights outside
        the top t. Masks and optimizer state are left alone: a zeroed weight may grow back (with
        momentum it moves on its old velocity at the next step)."""
        if ctx.step_in_stage % self.config.every:
            return
        keep = self.top_t(ctx)
        for name, module in ctx.pruned_modules():
            module.weight_orig.mul_(keep[name])

    def sparsify_stages(self) -> list[Stage]:
        c = self.config
        return [
            c.stage("dense", c.dense_epochs),
            c.stage("topk", c.epochs, after_step=self.project),
        ]

    @torch.no_grad()
    def threshold(self, ctx: Context) -> None:
        """Record the census, then mask all but the top t (per layer or global)."""
        if self.config.allocation == "layer":
            super().threshold(ctx)
            return
        masks = current_masks(ctx.model)
        ctx.state.method_state["before_threshold"] = {
            n: weight_census(m.weight_orig.detach() * m.weight_mask, masks[n])
            for n, m in ctx.pruned_modules()
        }
        apply_masks(ctx.model, self.top_t(ctx))

    def target_kept(self) -> dict[str, float] | None:
        # global: only the total is fixed, each layer's share follows from the weights
        return super().target_kept() if self.config.allocation == "layer" else None
