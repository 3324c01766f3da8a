"""Intrinsic sparse structures (Wen et al. 2018): whole hidden units of an LSTM go, and the
result is a smaller LSTM (:func:`topoprune.models.recurrent.keep_hidden_units`).

The ISS component of hidden unit ``k`` of a :class:`~topoprune.models.recurrent.RowLSTM` with
``H`` units is every weight that unit ``k`` reads or writes:

- its four gate rows ``k, H+k, 2H+k, 3H+k`` of ``input_gates`` and of ``hidden_gates``
  (incoming: what the unit's gates read from the input and from every hidden unit);
- column ``k`` of ``hidden_gates`` (outgoing: what every gate reads from ``h_k`` at the next
  step) and column ``k`` of ``classifier`` (outgoing: the layer that consumes ``h``).

The four recurrent weights ``W_h[gH+k, k]`` are both incoming and outgoing: they count once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from topoprune.errors import TopopruneError
from topoprune.models.recurrent import RowLSTM, keep_hidden_units, unit_rows
from topoprune.prune.method import Context, Method, Stage, TrainConfig, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.structured import group_shrinkage

LAYERS = ("input_gates", "hidden_gates", "classifier")


def _lstm(model: torch.nn.Module) -> RowLSTM:
    if not isinstance(model, RowLSTM):
        raise TopopruneError(
            "iss-lstm removes the hidden units of a RowLSTM (topoprune.models.recurrent, the "
            f"zoo's lstm_mnist), got {type(model).__name__}"
        )
    unmasked = [n for n in LAYERS if not hasattr(getattr(model, n), "weight_mask")]
    if unmasked:
        raise TopopruneError(
            f"iss-lstm masks whole hidden units across {', '.join(LAYERS)}; "
            f"{', '.join(unmasked)} must be pruned too (drop it from --dense-layers)"
        )
    return model


def component_weights(model: RowLSTM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The masked weights of ``input_gates``, ``hidden_gates`` and ``classifier`` (plain weights
    for a model without masks)."""
    out = []
    for name in LAYERS:
        module = getattr(model, name)
        if hasattr(module, "weight_mask"):
            out.append(module.weight_orig * module.weight_mask)
        else:
            out.append(module.weight)
    return out[0], out[1], out[2]


def _own_diagonal(hidden_size: int, device: torch.device) -> torch.Tensor:
    """Boolean ``(4H, H)``: ``W_h[gH+k, j]`` with ``j == k`` (a unit reading its own ``h``)."""
    return torch.eye(hidden_size, dtype=torch.bool, device=device).repeat(4, 1)


def component_norms(model: RowLSTM) -> torch.Tensor:
    """``||w^(k)||_2`` of every hidden unit's ISS component (each weight counted once).

    Examples
    --------
    >>> model = RowLSTM(hidden_size=3, num_classes=2, input_size=1)
    >>> for p in model.parameters():
    ...     _ = p.data.fill_(1.0)
    >>> component_norms(model) ** 2  # 4 input + 12 recurrent rows + 12 - 4 column + 2 classifier
    tensor([26., 26., 26.])
    """
    wx, wh, wc = (w.detach() for w in component_weights(model))
    hidden = model.hidden_size
    wx, own = wx.reshape(4, hidden, -1), _own_diagonal(hidden, wh.device)
    incoming = wx.pow(2).sum((0, 2)) + wh.reshape(4, hidden, hidden).pow(2).sum((0, 2))
    # column k without its own four gate rows, which the incoming rows already hold
    outgoing = wh.masked_fill(own, 0).pow(2).sum(0) + wc.pow(2).sum(0)
    return (incoming + outgoing).sqrt()


@torch.no_grad()
def iss_proximal_step(model: RowLSTM, threshold: float) -> torch.Tensor:
    """Shrink every ISS component by ``threshold`` (``lr x lambda``): the group soft-threshold
    ``w^(k) <- max(0, 1 - threshold / ||w^(k)||) w^(k)``, in place; returns the factors.

    Components overlap: ``W_h[gH+k, j]`` (``j != k``) lies in unit ``k``'s rows and in unit
    ``j``'s column, and is multiplied by both factors (each from the weights before the step).
    When the components' supports are disjoint this is exactly the proximal operator of
    ``threshold x sum_k ||w^(k)||``; otherwise it is the product of each component's own
    proximal operator, equal to the proximal step to first order in ``threshold``. Either way a
    component of norm at most ``threshold`` becomes exactly zero.
    """
    norms = component_norms(model)
    factors = group_shrinkage(norms, threshold)
    rows = factors.repeat(4)[:, None]  # row gH+k of the gate layers belongs to unit k
    own = _own_diagonal(model.hidden_size, factors.device)
    for module, factor in (
        (model.input_gates, rows),
        (model.hidden_gates, torch.where(own, rows, rows * factors[None, :])),
        (model.classifier, factors[None, :]),
    ):
        weight = module.weight_orig if hasattr(module, "weight_mask") else module.weight
        weight.mul_(factor.to(weight))
    return factors


def unit_masks(model: RowLSTM, removed: torch.Tensor) -> dict[str, torch.Tensor]:
    """The masks of the three layers with every weight of the ``removed`` units' components
    masked (and the current masks kept)."""
    hidden = model.hidden_size
    rows = unit_rows(hidden, removed)
    masks = {name: getattr(model, name).weight_mask.detach().clone() for name in LAYERS}
    masks["input_gates"][rows] = 0
    masks["hidden_gates"][rows] = 0
    masks["hidden_gates"][:, removed] = 0
    masks["classifier"][:, removed] = 0
    return masks


@dataclass(frozen=True)
class ISSConfig(TrainConfig):
    dense_epochs: int = hp("epochs of dense training before the group lasso (0: learn the "
                           "structures from scratch, as the reference code's default)", 0,
                           low=0)  # fmt: skip
    epochs: int = hp("epochs of training with the group lasso over the ISS components", 10, low=0)
    penalty: float = hp("lambda of the group lasso: lambda x sum_k ||w^(k)||_2 over the hidden "
                        "units' ISS components (unweighted, as in the paper)", 5e-2,
                        low=0)  # fmt: skip
    finetune_epochs: int = hp("epochs of fine-tuning with the zeroed units removed", 2, low=0)
    finetune_lr_factor: float = hp("fine-tuning learning rate = lr x this", 0.1, low=0,
                                   low_open=True)  # fmt: skip


@METHODS.register("iss-lstm")
class IntrinsicSparseStructures(Method):
    """Intrinsic sparse structures (Wen et al. 2018): a group lasso over each hidden unit's ISS
    component (its gate rows in the input and recurrent weights, its recurrent column, its
    classifier column) as an exact proximal step after every optimizer step, then the zero
    components masked, fine-tuning, and the smaller LSTM checked against the masked one.

    Biases are in no group (the reference code's groups hold weight matrices only): a removed
    unit's gate biases stay as they are and cannot matter, since nothing reads its hidden state
    once its outgoing columns are zero; :func:`~topoprune.models.recurrent.keep_hidden_units`
    drops them.

    Where this follows the paper: the components (the k-th columns of the four gates' input and
    recurrent matrices in its ``x W`` layout, our rows; the k-th row of the recurrent matrices
    and of the next layer's, our columns) and the penalty ``lambda sum_k ||w^(k)||_2`` with no
    per-group weight (as in the reference code too; all components of one LSTM layer have the
    same size, so a sqrt(size) weight, as ``ssl`` uses, would only rescale lambda). Where it
    differs, with the reference code (github.com/wenwei202/iss-rnns, ``ptb/ptb_word_lm.py``):
    they add the penalty to the loss and take gradient steps (a ``1e-8`` inside the square
    root), then zero every single weight below a threshold after each mini-batch (1e-4, or
    ``2 x weight_decay`` when larger; 4e-4 in some of their highway-network configurations) and
    count a unit as removed when all its weights are zero, and their fine-tuning
    (``--freeze_mode element``) freezes every zero weight; here the proximal step zeroes whole
    components exactly, no kept unit loses a weight, and the fine-tuning masks whole units.
    Their norm counts the four ``W_h[gH+k, k]`` twice (in the column and in the row sums; once
    here) and scales each layer's term by a multiplier (1.0 in their PTB configuration).
    Overlapping components get the product of their shrinkage factors (see
    :func:`iss_proximal_step`).
    """

    Config = ISSConfig
    paper = "Wen et al. 2018, Learning intrinsic sparse structures within long short-term memory"
    architecture = "lstm"
    # the tiny contract LSTM (hidden 8) starts with components of norm about 2.7; 6 steps at lr
    # 0.01 shrink each by 6 x 0.01 x 41 = 2.5, and the weaker half reach zero (40 to 42 remove
    # some but not all of the 8 units)
    contract_overrides: ClassVar[dict] = {"penalty": 41.0}

    def _proximal(self, ctx: Context) -> None:
        iss_proximal_step(_lstm(ctx.model), ctx.lr * self.config.penalty)

    def _remove_zero_components(self, ctx: Context) -> None:
        from topoprune.prune.masks import apply_masks

        model = _lstm(ctx.model)
        removed = (component_norms(model) == 0).nonzero().squeeze(1)
        apply_masks(model, unit_masks(model, removed))
        ctx.state.method_state["iss"] = {"hidden_units": model.hidden_size,
                                         "removed": removed.tolist()}  # fmt: skip

    def _store_report(self, ctx: Context) -> None:
        from topoprune.prune.masks import strip_masks

        model = _lstm(ctx.model)
        removed = set(ctx.state.method_state["iss"]["removed"])
        kept = [k for k in range(model.hidden_size) if k not in removed]
        plain = strip_masks(model).eval()
        small = keep_hidden_units(plain, kept).eval()
        report = {
            "hidden_units": model.hidden_size,
            "hidden_units_kept": len(kept),
            "units_removed": sorted(removed),
            "params": sum(p.numel() for p in plain.parameters()),
            "params_compact": sum(p.numel() for p in small.parameters()),
        }
        if ctx.draw_batches is not None:
            inputs, _ = next(iter(ctx.scoring_batches(8)))
            inputs = inputs.to(ctx.device)
            with torch.no_grad():
                # exact: a removed unit's outgoing columns (hidden_gates and classifier column
                # k) are masked, so its hidden state reaches nothing, whatever its incoming rows
                # and biases hold
                report["max_abs_difference"] = float((small(inputs) - plain(inputs)).abs().max())
        ctx.state.method_state["iss_report"] = report

    def stages(self) -> list[Stage]:
        c = self.config
        stages = [c.stage("dense", c.dense_epochs)] if c.dense_epochs else []
        return [
            *stages,
            c.stage("iss", c.epochs, after_step=self._proximal),
            c.stage("remove", 0, on_start=self._remove_zero_components),
            c.stage("finetune", c.finetune_epochs, lr=c.lr * c.finetune_lr_factor,
                    on_end=self._store_report),
        ]  # fmt: skip

    def report(self, state) -> dict:
        return dict(state.method_state.get("iss_report", {}))
