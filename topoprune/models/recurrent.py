"""A recurrent model of the zoo: a single-layer LSTM reading an image row by row.

:class:`RowLSTM` computes what ``torch.nn.LSTM`` computes, but from ordinary ``nn.Linear`` layers
(the four gates of every hidden unit in one input layer and one recurrent layer), so that the
masking machinery (:mod:`topoprune.prune.masks`) and the topology tools see its weights. Its
hidden units are what intrinsic sparse structures (``iss-lstm``, Wen et al. 2018) remove;
:func:`keep_hidden_units` builds the smaller LSTM that remains.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.models.zoo import _register

GATES = ("i", "f", "g", "o")  # the order of torch.nn.LSTM: input, forget, cell, output


class RowLSTM(nn.Module):
    """Row-by-row sequential MNIST: each image is a sequence of rows fed to one LSTM layer, and
    the last hidden state is classified.

    Parameters
    ----------
    hidden_size : int
        Hidden (and cell) units ``H``.
    num_classes : int
        Outputs of the classifier.
    input_size : int
        Pixels per row: an ``(N, C, R, W)`` batch becomes ``C R W / input_size`` steps.

    Notes
    -----
    ``input_gates`` (``4H x input_size``, with the bias) and ``hidden_gates`` (``4H x H``, no
    bias) hold the gates in torch.nn.LSTM's order i, f, g, o: rows ``k, H+k, 2H+k, 3H+k`` belong
    to hidden unit ``k``. ``torch.nn.LSTM`` with ``weight_ih_l0 = input_gates.weight``,
    ``weight_hh_l0 = hidden_gates.weight``, ``bias_ih_l0 = input_gates.bias`` and a zero
    ``bias_hh_l0`` gives the same last hidden state. The gate weights start as torch.nn.LSTM's
    (uniform in ``+-1/sqrt(H)``).

    Examples
    --------
    >>> model = RowLSTM(hidden_size=16)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, hidden_size: int = 128, num_classes: int = 10, input_size: int = 28):
        super().__init__()
        if hidden_size < 0 or input_size < 1:
            raise TopopruneError(
                f"RowLSTM needs hidden_size >= 0 and input_size >= 1, got {hidden_size}, "
                f"{input_size}"
            )
        self.hidden_size, self.input_size = hidden_size, input_size
        with warnings.catch_warnings():  # no hidden unit left (every one removed): empty layers
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.input_gates = nn.Linear(input_size, 4 * hidden_size)
            self.hidden_gates = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
            self.classifier = nn.Linear(hidden_size, num_classes)
        bound = 1 / math.sqrt(hidden_size) if hidden_size else 0.0
        with torch.no_grad():  # torch.nn.LSTM's initialisation of its gate parameters
            for parameter in (*self.input_gates.parameters(), self.hidden_gates.weight):
                parameter.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(x.shape[0], -1, self.input_size)  # (N, steps, pixels per row)
        # every step's input part at once: one call of input_gates for the whole sequence
        inputs = self.input_gates(rows)
        h = inputs.new_zeros(x.shape[0], self.hidden_size)
        c = inputs.new_zeros(x.shape[0], self.hidden_size)
        for step in range(rows.shape[1]):
            i, f, g, o = (inputs[:, step] + self.hidden_gates(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.classifier(h)


def _weight(module: nn.Linear) -> torch.Tensor:
    """The weight a layer computes with: ``weight_orig * weight_mask`` on a masked layer."""
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def unit_rows(hidden_size: int, units: torch.Tensor) -> torch.Tensor:
    """The gate rows (of ``input_gates`` and ``hidden_gates``) of hidden ``units``, gate by gate:
    ``[k..., H+k..., 2H+k..., 3H+k...]``.

    Examples
    --------
    >>> unit_rows(3, torch.tensor([0, 2])).tolist()
    [0, 2, 3, 5, 6, 8, 9, 11]
    """
    return torch.cat([gate * hidden_size + units for gate in range(len(GATES))])


def keep_hidden_units(model: RowLSTM, keep: Sequence[int] | torch.Tensor) -> RowLSTM:
    """A new, smaller :class:`RowLSTM` with only the hidden units ``keep`` (in that order).

    Unit ``k`` brings its four gate rows of ``input_gates`` (with their biases) and of
    ``hidden_gates``, column ``k`` of ``hidden_gates`` and column ``k`` of ``classifier``. A masked
    model (:func:`~topoprune.prune.masks.add_masks`) gives its masked weights. The result computes
    the same outputs as ``model`` when every removed unit's outgoing weights (its columns of
    ``hidden_gates`` and ``classifier``) are zero: nothing else reads its hidden state.

    Examples
    --------
    >>> model = RowLSTM(hidden_size=4)
    >>> small = keep_hidden_units(model, [0, 3])
    >>> small.hidden_gates.weight.shape, small.classifier.weight.shape
    (torch.Size([8, 2]), torch.Size([10, 2]))
    """
    weight = _weight(model.input_gates)
    units = torch.as_tensor(keep, dtype=torch.long, device=weight.device).reshape(-1)
    hidden = model.hidden_size
    if units.numel() and (units.min() < 0 or units.max() >= hidden):
        raise TopopruneError(f"hidden units must be in [0, {hidden}), got {units.tolist()}")
    if units.unique().numel() != units.numel():
        raise TopopruneError(f"hidden units to keep repeat: {units.tolist()}")
    rows = unit_rows(hidden, units)
    small = RowLSTM(int(units.numel()), model.classifier.out_features, model.input_size)
    small = small.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        small.input_gates.weight.copy_(weight[rows])
        small.input_gates.bias.copy_(model.input_gates.bias.detach()[rows])
        small.hidden_gates.weight.copy_(_weight(model.hidden_gates)[rows][:, units])
        small.classifier.weight.copy_(_weight(model.classifier)[:, units])
        small.classifier.bias.copy_(model.classifier.bias.detach())
    return small


@_register("lstm_mnist", (1, 28, 28), "row-by-row LSTM, 28 steps of 28 pixels, hidden 128")
def lstm_mnist(num_classes: int = 10) -> RowLSTM:
    return RowLSTM(hidden_size=128, num_classes=num_classes, input_size=28)
