"""The method interface: what a pruning method declares and what its hooks receive.

A method turns its hyper-parameters (a frozen dataclass) into a list of :class:`Stage` s. A stage
is some epochs of training with fixed settings and up to six hooks, each optional and each called
with one :class:`Context`:

==================  ==================================================  ========================
hook                when                                                used by (e.g.)
==================  ==================================================  ========================
``on_start``        once, before the stage's first step                 magnitude, SNIP, OBD,
                                                                        lottery rewinding
``loss_term``       every step; its value is added to the loss          l1, group lasso
``after_backward``  every step, gradients ready, before the step        gradient edits, Fisher
``after_step``      every step, after the optimizer's step              DNS, SET/RigL, proximal
``on_epoch_end``    after every epoch                                   schedules per epoch
``on_end``          once, after the stage's last epoch                  statistics, rewinding
==================  ==================================================  ========================

The training engine (:mod:`topoprune.train.engine`) runs the stages; this module does not import
it (the engine depends on pruning, never the reverse).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.masks import masked_modules

Batch = tuple[Any, Any]


@dataclass
class TrainingState:
    """Where a run is: counters, the method's own state, history and mask snapshots."""

    step: int = 0  # optimisation steps so far, all stages together
    stage: int = 0  # index of the current stage
    epoch: int = 0  # epochs finished in the current stage
    started: bool = False  # the current stage's on_start has run
    stage_start_step: int = 0  # value of ``step`` when the current stage started
    method_state: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    mask_history: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def progress(self) -> dict:
        return {
            "step": self.step,
            "stage": self.stage,
            "epoch": self.epoch,
            "started": self.started,
            "stage_start_step": self.stage_start_step,
        }


@dataclass
class Context:
    """What a hook sees. Fields that do not exist at a hook's time are ``None`` (no batch at
    ``on_start``, no loss before the forward pass)."""

    model: nn.Module
    state: TrainingState
    stage: Stage
    seed: int
    device: str
    loss_fn: Callable[[Any, Any], torch.Tensor]
    optimizer: torch.optim.Optimizer | None = None
    lr: float = 0.0  # the learning rate of the current (or first) step of the stage
    step_in_stage: int = 0  # steps taken in this stage so far
    steps_per_epoch: int | None = None  # None for data without a length
    batch: Batch | None = None
    outputs: Any = None
    loss: torch.Tensor | None = None
    draw_batches: Callable[[int, int], Iterator[Batch]] | None = field(default=None, repr=False)
    # (weight, mask) pairs held at zero during the stage; filled at the stage's first step
    held_at_zero: list[tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False)

    def scoring_batches(self, examples: int) -> Iterator[Batch]:
        """Batches of about ``examples`` training examples for scores (SNIP, OBD, Fisher): the
        same examples for the same (seed, step), so a resumed run scores what it scored before."""
        if self.draw_batches is None:
            raise TopopruneError("this run has no training data to draw scoring batches from")
        if examples < 1:
            raise TopopruneError(f"scoring examples must be >= 1, got {examples}")
        return self.draw_batches(examples, self.state.step)

    def generator(self, tag: int = 0) -> torch.Generator:
        """A CPU generator seeded by (seed, step, tag): random decisions that survive a resume."""
        key = (self.seed * 1_000_003 + self.state.step + tag * 0x9E3779B97F4A7C15) % 2**63
        return torch.Generator().manual_seed(key)

    def pruned_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of the layers being pruned (those with masks)."""
        return masked_modules(self.model)

    @property
    def total_stage_steps(self) -> int | None:
        if self.steps_per_epoch is None:
            return None
        return self.stage.epochs * self.steps_per_epoch


Hook = Callable[[Context], None]


@dataclass
class Stage:
    """Epochs of training with fixed settings and optional hooks (see the module docstring).

    ``optimizer`` names an entry of :data:`topoprune.train.optim.OPTIMIZERS` (``sgd``, ``adam``,
    ``adamw``) or is a callable ``(params, lr, weight_decay, momentum) -> Optimizer``.
    ``straight_through``: the forward uses ``W * M`` while gradients reach pruned weights too
    (Dynamic Network Surgery); otherwise pruned weights, their gradients and their optimizer
    state are held at zero.
    """

    name: str
    epochs: int
    lr: float
    weight_decay: float = 0.0
    straight_through: bool = False
    on_start: Hook | None = None
    loss_term: Callable[[Context], torch.Tensor] | None = None
    after_backward: Hook | None = None
    after_step: Hook | None = None
    on_epoch_end: Hook | None = None
    on_end: Hook | None = None
    snapshot: bool = True  # keep the masks at the end of the stage
    lr_end: float | None = None  # cosine decay from lr to lr_end over the stage; None: constant
    optimizer: str | Callable = "sgd"
    momentum: float = 0.9

    def lr_at(self, step: int, total_steps: int | None) -> float:
        """The learning rate of the stage's ``step``-th step (0-based) of ``total_steps``."""
        if self.lr_end is None or not total_steps:
            return self.lr
        progress = min(step / total_steps, 1.0)
        return self.lr_end + (self.lr - self.lr_end) * 0.5 * (1 + math.cos(math.pi * progress))


# ---- hyper-parameters -------------------------------------------------------------------------


def hp(
    help: str,
    default: Any = None,
    *,
    choices: Sequence[str] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
):
    """A hyper-parameter field: its help text becomes the CLI flag's help; ``choices`` and the
    bounds are checked when the config is built (an invalid config cannot exist)."""
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
    }
    if isinstance(default, tuple | list):
        return field(default=tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def sparse_init_flag():
    """The ``sparse_init`` hyper-parameter of the methods that train sparse masks from scratch."""
    return hp("rescale each unit's initial weights to its kept fan-in (Evci et al. 2022)", False)


def _check_field(config: object, spec: dataclasses.Field) -> None:
    meta, value = spec.metadata, getattr(config, spec.name)
    values = value if isinstance(value, tuple) else (value,)
    what = spec.name.replace("_", "-")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise TopopruneError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    for v in values:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        if not math.isfinite(v):
            raise TopopruneError(f"{what} must be finite, got {v}")
        bad_low = low is not None and (v <= low if meta.get("low_open") else v < low)
        bad_high = high is not None and (v >= high if meta.get("high_open") else v > high)
        if bad_low or bad_high:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            left = "(" if meta.get("low_open") or low is None else "["
            right = ")" if meta.get("high_open") or high is None else "]"
            raise TopopruneError(f"{what} must be in {left}{lo}, {hi}{right}, got {v:g}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters every method shares: optimisation and which layers are pruned."""

    lr: float = hp("learning rate", 0.01, low=0, low_open=True)
    weight_decay: float = hp("L2 weight decay", 5e-4, low=0)
    schedule: str = hp(
        "learning rate within each stage: constant, or cosine (decays to 0)",
        "constant",
        choices=("constant", "cosine"),
    )
    optimizer: str = hp(
        "optimizer: sgd (with --momentum), adam, adamw", "sgd", choices=("sgd", "adam", "adamw")
    )
    momentum: float = hp("SGD momentum", 0.9, low=0, high=1, high_open=True)
    layers: tuple[str, ...] = hp(
        "layers to prune, as globs on module names (default: every Linear/Conv layer)", ("*",)
    )
    dense_layers: tuple[str, ...] = hp("layers left dense, as globs (e.g. the output layer)", ())

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            _check_field(self, spec)

    def lr_end(self) -> float | None:
        """Where each stage's learning rate ends: 0 for the cosine schedule, None for constant."""
        return 0.0 if self.schedule == "cosine" else None

    def stage(self, name: str, epochs: int, *, lr: float | None = None, **hooks) -> Stage:
        """A stage with these shared settings (``lr`` overrides the learning rate)."""
        return Stage(
            name,
            epochs,
            self.lr if lr is None else lr,
            self.weight_decay,
            lr_end=self.lr_end(),
            optimizer=self.optimizer,
            momentum=self.momentum,
            **hooks,
        )


@dataclass(frozen=True)
class PruneConfig(TrainConfig):
    """Shared hyper-parameters of methods that start from dense training."""

    dense_epochs: int = hp("epochs of dense training before pruning", 10, low=0)


class Method:
    """Base of the registered methods: ``Config`` (a :class:`TrainConfig` subclass), ``paper``,
    and :meth:`stages`. Subclasses set ``self.names`` (the pruned layers, in order) through this
    constructor and may override :meth:`target_kept`."""

    Config: ClassVar[type] = TrainConfig
    paper: ClassVar[str] = ""
    # hyper-parameters the contract test's tiny run (one epoch of six steps) needs to act at all,
    # e.g. a regulariser strong enough to zero a row in six steps; the defaults suit real models
    contract_overrides: ClassVar[dict] = {}
    # True for methods that train the masks the model arrives with (``--init``) and never change
    # them (trained quantisation): the contract test gives them a half-pruned model
    keeps_masks: ClassVar[bool] = False
    # the kind of model the method acts on: "any" (Linear/Conv layers), "batchnorm" (BatchNorm
    # after the convolutions: network slimming), "lstm" (the zoo's RowLSTM: intrinsic sparse
    # structures) or "residual" (the zoo's ResidualCNN: epsilon-ResNet); the contract test gives
    # each method a tiny model of its kind
    architecture: ClassVar[str] = "any"

    def __init__(self, config: TrainConfig, names: Sequence[str], seed: int) -> None:
        if not isinstance(config, self.Config):
            raise TopopruneError(
                f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.config, self.names, self.seed = config, list(names), seed

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def target_kept(self) -> dict[str, float] | None:
        """The kept fraction each pruned layer ends with, when the method fixes it (None when it
        follows from training, as with DNS's thresholds)."""
        return None

    def report(self, state: TrainingState) -> dict:
        """What the method measured during the run (exact zeros, kurtosis per iteration, groups
        tied), from ``state.method_state``; kept in the summary under ``report``."""
        return {}


def select_layers(
    names: Sequence[str], include: Sequence[str] = ("*",), exclude: Sequence[str] = ()
) -> list[str]:
    """The names matching any ``include`` glob and no ``exclude`` glob, in order; a glob that
    matches nothing is an error (a misspelt layer name must not silently prune everything).

    Examples
    --------
    >>> select_layers(["0", "2", "4"], exclude=["4"])
    ['0', '2']
    >>> select_layers(["features.0", "features.3", "fc"], include=["features.*"])
    ['features.0', 'features.3']
    """
    for pattern in (*include, *exclude):
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise TopopruneError(f"no weight layer matches {pattern!r}; layers: {', '.join(names)}")
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in include)]
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not chosen:
        raise TopopruneError("the layer selection leaves no layer to prune")
    return chosen
