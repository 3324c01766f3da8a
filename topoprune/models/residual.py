"""A residual model of the zoo: a small ResNet whose blocks can become strict identities.

:class:`ResidualCNN` is a stem (3x3 convolution, BatchNorm, ReLU, 2x2 max-pooling), basic residual
blocks at constant width (conv3x3-BN-ReLU-conv3x3-BN on the residual branch, an identity shortcut,
a ReLU after the addition), global average pooling and a linear classifier. Each block's
residual branch passes through the sparsity-promoting function of epsilon-ResNet (Yu et al.
2018, :func:`sparsify`): at ``epsilon > 0`` a block whose every response to an example is below
epsilon in magnitude gives that example its shortcut alone. A block can also be *dropped*: it
then computes the identity, whatever its weights; :func:`drop_blocks` builds the smaller model
without those blocks. Epsilon-ResNet (``epsilon-resnet``) and the depth groups of structured
sparsity learning (``ssl --groups depth``) act on this model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.models.zoo import _register

# the large constant L of Yu et al.'s four-ReLU sparsifier (1e6 in their reference code): the
# gate is 0 when no response exceeds epsilon and exactly 1 once one exceeds it by 1/L or more
SHARPNESS = 1e6


def sparsify(response: torch.Tensor, epsilon: float, sharpness: float = SHARPNESS) -> torch.Tensor:
    """Epsilon-ResNet's sparsity-promoting function S, per example (the first axis).

    ``S(F) = 0`` for an example whose every ``|F|`` is at most ``epsilon``, and ``S(F) = F`` for
    one with some ``|F| >= epsilon + 1/sharpness``, from four ReLUs (Yu et al. 2018, Eq. 3-4)::

        excess = relu(F - epsilon) + relu(-F - epsilon)     # > 0 where |F| > epsilon
        peak = max(excess) over the example
        gate = relu(1 - L relu(1 - L peak))                 # 0 at peak 0, 1 from peak 1/L on
        S(F) = gate F

    Between the two the gate is 0 until the peak is within ``1/L**2`` of ``1/L``, then rises
    linearly to 1 (harmless at the default ``L = 1e6``). The
    gradient reaches ``F`` through ``gate F``: a block whose responses exceed epsilon learns as a
    plain block, one whose responses do not gets no gradient from the loss for that example.
    No data-dependent Python control flow: ``torch.fx`` traces it.

    Parameters
    ----------
    response : Tensor
        ``(N, ...)``: the residual branch's output ``F(x)`` for ``N`` examples.
    epsilon : float
        The threshold (``>= 0``).
    sharpness : float
        The constant ``L``.

    Examples
    --------
    >>> f = torch.tensor([[0.5, 0.9], [0.5, -1.5]])
    >>> sparsify(f, 1.0).tolist()
    [[0.0, 0.0], [0.5, -1.5]]
    """
    excess = torch.relu(response - epsilon) + torch.relu(-response - epsilon)
    peak = excess.flatten(1).amax(dim=1)
    gate = torch.relu(1 - sharpness * torch.relu(1 - sharpness * peak))
    # flatten and view back: no dependence on the number of axes, which fx could not read
    return (response.flatten(1) * gate.unsqueeze(1)).view_as(response)


class ResidualBlock(nn.Module):
    """A basic residual block at constant width: ``relu(x + S(bn2(conv2(relu(bn1(conv1 x))))))``.

    ``epsilon`` (0: S is the identity, a plain ResNet block) and ``dropped`` (the block
    computes the identity: its branch is multiplied by zero) are plain attributes, so that
    ``torch.fx`` traces the block with them as constants; both travel in the state dict (as its
    ``_extra_state``), so a checkpoint restores them into a freshly built model.
    """

    def __init__(self, channels: int, epsilon: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.epsilon = float(epsilon)
        self.dropped = False

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch ``F(x)`` before the sparsifier."""
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """What is added to the shortcut: ``S(F(x))``, zero for a dropped block."""
        response = self.branch(x)
        if self.dropped:
            # times zero rather than skipped: the trace keeps the block's layers (and its
            # BatchNorm cannot matter); relu(x + 0) = x since x >= 0 (it comes out of a ReLU)
            return response * 0.0
        if self.epsilon > 0:
            return sparsify(response, self.epsilon)
        return response

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.residual(x))

    def get_extra_state(self) -> torch.Tensor:
        # a tensor, not a dict: checkpoints keep ``state_dict()`` values as detached tensors
        return torch.tensor([self.epsilon, float(self.dropped)], dtype=torch.float64)

    def set_extra_state(self, state: torch.Tensor) -> None:
        epsilon, dropped = torch.as_tensor(state, dtype=torch.float64).tolist()
        self.epsilon, self.dropped = float(epsilon), bool(dropped)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon:g}" + (", dropped" if self.dropped else "")


class ResidualCNN(nn.Module):
    """A small ResNet for MNIST-sized images; its blocks can become strict identities.

    Parameters
    ----------
    channels : int
        Width of the stem and of every block.
    blocks : int
        Residual blocks (two 3x3 convolutions each).
    num_classes : int
        Outputs of the classifier.
    in_channels : int
        Channels of the input images.
    epsilon : float
        The blocks' sparsifier threshold (0: a plain ResNet); see :meth:`set_epsilon`.

    Notes
    -----
    Layer names: ``stem`` (the first convolution), ``blocks.<i>.conv1``, ``blocks.<i>.conv2``,
    ``fc``. The convolutions have no bias (BatchNorm follows each) and start from He
    initialisation for the fan-out, as in Yu et al.'s reference code. The residual additions
    join the channels of ``stem`` and of every ``blocks.<i>.conv2`` into one channel space
    (:func:`topoprune.prune.structure.channel_groups`); at ``epsilon > 0`` those channels are
    frozen there (not removable), since the sparsifier takes a maximum across channels.

    Examples
    --------
    >>> model = ResidualCNN(channels=4, blocks=2)
    >>> model(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    >>> small = drop_blocks(model, [1])
    >>> len(small.blocks), sum(p.numel() for p in small.parameters()) < sum(
    ...     p.numel() for p in model.parameters())
    (1, True)
    """

    def __init__(
        self,
        channels: int = 16,
        blocks: int = 6,
        num_classes: int = 10,
        in_channels: int = 1,
        epsilon: float = 0.0,
    ) -> None:
        super().__init__()
        if channels < 1 or blocks < 0 or in_channels < 1 or epsilon < 0:
            raise TopopruneError(
                "ResidualCNN needs channels >= 1, blocks >= 0, in_channels >= 1 and epsilon >= "
                f"0, got {channels}, {blocks}, {in_channels}, {epsilon}"
            )
        self.channels, self.num_classes, self.in_channels = channels, num_classes, in_channels
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)  # 28x28 -> 14x14: the blocks cost a quarter
        self.blocks = nn.ModuleList(ResidualBlock(channels, epsilon) for _ in range(blocks))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem_bn(self.stem(x))))
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(self.gap(x), 1))

    @torch.no_grad()
    def block_activity(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, blocks)`` booleans: block ``b``'s ``S(F)`` is nonzero for example ``n`` (False
        for a dropped block). Computed in the model's current mode (train or eval)."""
        x = self.pool(torch.relu(self.stem_bn(self.stem(x))))
        active = []
        for block in self.blocks:
            residual = block.residual(x)
            active.append(residual.flatten(1).ne(0).any(dim=1))
            x = torch.relu(x + residual)
        if not active:
            return torch.zeros(x.shape[0], 0, dtype=torch.bool, device=x.device)
        return torch.stack(active, dim=1)

    @property
    def epsilon(self) -> float:
        """The blocks' threshold (the largest, should they differ; 0 without blocks)."""
        return max((block.epsilon for block in self.blocks), default=0.0)

    def set_epsilon(self, epsilon: float) -> None:
        """Give every block the threshold ``epsilon`` (0: plain ResNet blocks)."""
        if epsilon < 0:
            raise TopopruneError(f"epsilon must be >= 0, got {epsilon}")
        for block in self.blocks:
            block.epsilon = float(epsilon)

    @property
    def dropped(self) -> list[int]:
        """Indices of the dropped blocks (those computing the identity)."""
        return [i for i, block in enumerate(self.blocks) if block.dropped]

    def set_dropped(self, indices: Sequence[int]) -> None:
        """Mark exactly the blocks ``indices`` as dropped (the others as kept)."""
        chosen = _block_indices(self, indices)
        for i, block in enumerate(self.blocks):
            block.dropped = i in chosen


def _block_indices(model: ResidualCNN, indices: Sequence[int]) -> list[int]:
    chosen = sorted({int(i) for i in indices})
    bad = [i for i in chosen if not 0 <= i < len(model.blocks)]
    if bad:
        raise TopopruneError(f"the model has {len(model.blocks)} blocks; no block {bad}")
    return chosen


def drop_blocks(model: ResidualCNN, dropped: Sequence[int]) -> ResidualCNN:
    """A copy of ``model`` without the blocks ``dropped``: physically gone, fewer parameters.

    It computes exactly what ``model`` computes when those blocks' ``S(F)`` is zero (or they are
    marked dropped): each block's input comes out of a ReLU, so ``relu(x + 0) = x`` and a block
    whose residual is zero is the identity. A masked model
    (:func:`~topoprune.prune.masks.add_masks`) gives a plain copy computing with its masked
    weights. The copy keeps the model's mode (train or eval) and its blocks' epsilon.

    Examples
    --------
    >>> model = ResidualCNN(channels=4, blocks=3).eval()
    >>> model.set_dropped([0, 2])
    >>> x = torch.rand(2, 1, 28, 28)
    >>> bool(torch.equal(drop_blocks(model, [0, 2])(x), model(x)))
    True
    """
    if not isinstance(model, ResidualCNN):
        raise TopopruneError(f"drop_blocks takes a ResidualCNN, got {type(model).__name__}")
    chosen = _block_indices(model, dropped)
    if any(hasattr(m, "weight_mask") for m in model.modules()):
        from topoprune.prune.masks import strip_masks  # masks are pruning's: imported when used

        small = strip_masks(model)
    else:
        import copy

        small = copy.deepcopy(model)
    small.blocks = nn.ModuleList(b for i, b in enumerate(small.blocks) if i not in chosen)
    return small


@_register("resnet_mnist", (1, 28, 28), "ResNet: 16C3-BN-MP2, 6 blocks of 2x 16C3-BN, GAP, FC")
def resnet_mnist(num_classes: int = 10) -> ResidualCNN:
    return ResidualCNN(channels=16, blocks=6, num_classes=num_classes, in_channels=1)
