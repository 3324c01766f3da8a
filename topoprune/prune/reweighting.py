"""Re-weighted learning by affine scaling (AST): Fedorov and Rao, "Re-weighted learning for
sparsifying deep neural networks" (2018), Algorithm 1.

Each re-weighting iteration ``t`` fixes a weight ``omega`` per connection from the current
weights ``theta`` and trains ``q`` in ``theta = q * omega`` (eq. 6); ``theta`` is then ``q *
omega`` (eq. 7) and ``omega`` is recomputed:

- ``reweighted-l1`` (eq. 8): ``omega = |theta| + tau``;
- ``reweighted-l2`` (eq. 9): ``omega = sqrt(theta^2 + tau)``, ``tau`` annealed (Chartrand and
  Yin 2008) by ``--tau-decay`` per iteration;
- ``focuss`` (eq. 10): ``omega = |theta|^(2 - p) + tau``.

How ``q`` is trained. With ``omega`` fixed, SGD on ``q`` (momentum ``mu``, weight decay ``wd`` on
``q``) moves ``theta = q * omega`` exactly as SGD on ``theta`` whose gradient is ``omega^2 * grad +
wd * theta`` (the momentum buffers map by ``v_theta = omega * v_q``). The methods train ``theta``
with that gradient (an ``after_backward`` hook), so checkpoints, masks and the analysis tools see
``theta`` throughout; ``tests/test_reweighting.py`` checks the trajectory against an explicit ``q``
parameter. Weight decay on ``q`` is the FOCUSS penalty ``wd/2 sum (theta / omega)^2`` in ``theta``;
with ``lambda = 0`` in eq. 5 it is what pulls the small weights (whose loss gradient ``omega^2``
mutes) to zero. Only SGD has this equivalence, so these methods take ``--optimizer sgd``.

Step size: the minimiser of (6) (of ``f`` alone) does not change when a layer's ``omega`` is
multiplied by a constant, but SGD's steps do (by its square): a weight's step is ``omega^2`` times
its plain gradient step. ``--layer-lr`` (on by default, our choice: the paper does not say) divides
each layer's step by ``max(omega^2)``, so that in every layer the largest weight moves at ``--lr``
and smaller ones slower (dividing by the mean instead lets the largest weights step tens of times
``--lr`` and diverged on LeNet-5); it is SGD on ``q`` with one learning rate per layer.

Initialising ``q`` (section 2.3): ``noisy`` is eq. 11, ``q = theta / omega + v`` with ``v ~ N(0,
sigma^2)``; ``greedy`` keeps ``q`` from the last iteration (``theta`` becomes ``theta * omega_new /
omega_old``). Greedy has no ``q^0``: its first iteration starts from eq. 11 too. ``--update one``
recomputes ``omega`` of every layer at the first iteration and then of one layer per iteration, in
turn (the paper's greedy runs update one layer per iteration; with 8 iterations on LeNet-5's 4
layers its footnote counts two updates per layer, ours give three to the first three layers and two
to the last); ``all`` of every layer. Then each layer is thresholded and the network retrained (LWC
on the result, section 2.3), all layers at once or, with ``--layerwise``, one layer after another
with retraining in between. The kurtosis (eq. 13) of every layer's weights before the first and
after every iteration is in the run's report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from topoprune.errors import TopopruneError
from topoprune.prune.method import Context, Stage, TrainingState, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.threshold import ThresholdConfig, ThresholdMethod


def kurtosis(weights: torch.Tensor) -> float:
    """Fedorov and Rao's eq. 13: ``E[(w - mu)^4] / sigma^4`` (3 for a Gaussian; larger for a
    distribution peaked at zero with heavy tails, i.e. a sparser one).

    >>> kurtosis(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    1.0
    >>> round(kurtosis(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0])), 3)
    6.143
    """
    w = weights.detach().double().flatten()
    centred = w - w.mean()
    variance = centred.pow(2).mean()
    if variance == 0:
        return math.nan
    return float(centred.pow(4).mean() / variance**2)


def omega_l1(theta: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 8: ``|theta| + tau``.

    >>> omega_l1(torch.tensor([-2.0, 0.0]), 0.5).tolist()
    [2.5, 0.5]
    """
    return theta.abs() + tau


def omega_l2(theta: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 9: ``sqrt(theta^2 + tau)``.

    >>> omega_l2(torch.tensor([3.0, 0.0]), 16.0).tolist()
    [5.0, 4.0]
    """
    return (theta.square() + tau).sqrt()


def omega_focuss(theta: torch.Tensor, tau: float, p: float) -> torch.Tensor:
    """Eq. 10: ``|theta|^(2 - p) + tau``.

    >>> omega_focuss(torch.tensor([4.0, 0.0]), 1.0, 0.5).tolist()
    [9.0, 1.0]
    """
    return theta.abs().pow(2 - p) + tau


@dataclass(frozen=True)
class ReweightConfig(ThresholdConfig):
    """Shared hyper-parameters of the affine-scaling methods."""

    dense_epochs: int = hp("epochs of plain training before re-weighting (theta^0)", 10, low=0)
    lr: float = hp("learning rate of q (with --layer-lr: of each layer's largest weight)", 0.01,
                   low=0, low_open=True)  # fmt: skip
    iterations: int = hp("re-weighting iterations t of Algorithm 1", 8, low=1)
    iteration_epochs: int = hp("SGD epochs solving (6) in each iteration", 1, low=0)
    q_init: str = hp(
        "q at each iteration: greedy (q of the last one) or noisy (eq. 11)",
        "greedy",
        choices=("greedy", "noisy"),
    )
    sigma: float = hp("std of the noise v of eq. 11", 0.1, low=0)
    update: str = hp(
        "omega recomputed for one layer per iteration (in turn) or for all",
        "one",
        choices=("one", "all"),
    )
    tau: float = hp("tau of omega (stability; first iteration's with --tau-decay)", 1e-3,
                    low=0, low_open=True)  # fmt: skip
    tau_decay: float = hp("tau of iteration t = tau x tau_decay^(t-1)", 1.0, low=0, high=1,
                          low_open=True)  # fmt: skip
    layer_lr: bool = hp("divide each layer's step by max(omega^2) (see the module docstring)",
                        True)  # fmt: skip
    layerwise: bool = hp("threshold and retrain one layer after another (the paper's LWC)", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer != "sgd":
            raise TopopruneError(
                "the affine-scaling methods train q through SGD's update (optimizer sgd); "
                f"got {self.optimizer}"
            )


class AffineScaling(ThresholdMethod):
    """Base of the AST methods; subclasses define :meth:`omega`."""

    Config = ReweightConfig
    _steps: dict[int, tuple[torch.Tensor, float]] | None = None  # cache of _step_factors

    def omega(self, theta: torch.Tensor, tau: float) -> torch.Tensor:
        raise NotImplementedError

    def tau_at(self, iteration: int) -> float:
        """``tau`` of iteration ``iteration`` (1-based)."""
        return self.config.tau * self.config.tau_decay ** (iteration - 1)

    def sparsify_stages(self) -> list[Stage]:
        c = self.config
        stages = [c.stage("dense", c.dense_epochs)]
        for t in range(1, c.iterations + 1):
            stage = c.stage(
                f"reweight{t}",
                c.iteration_epochs,
                on_start=lambda ctx, t=t: self._start_iteration(ctx, t),
                after_backward=self._precondition,
                on_end=lambda ctx, t=t: self._log(ctx, t),
            )
            stage.weight_decay = 0.0  # applied on q by _precondition
            stages.append(stage)
        return stages

    def stages(self) -> list[Stage]:
        if not self.config.layerwise:
            return super().stages()
        c, stages = self.config, self.sparsify_stages()
        retrain_lr = c.lr * c.retrain_lr_factor
        for name in self.names:
            prune = lambda ctx, n=name: self.threshold(ctx, [n])  # noqa: E731
            stages.append(c.stage(f"threshold-{name}", 0, on_start=prune))
            stages.append(c.stage(f"retrain-{name}", c.retrain_epochs, lr=retrain_lr))
        return stages

    @torch.no_grad()
    def _start_iteration(self, ctx: Context, t: int) -> None:
        c, ms = self.config, ctx.state.method_state
        modules = dict(ctx.pruned_modules())
        if t == 1:
            ms["kurtosis"] = [{"iteration": 0, **self._kurtosis(ctx)}]
            ms["omega"] = {}
        # psi^0 of every layer at t = 1; then, with --update one, one layer's per iteration
        turn = self.names[(t - 2) % len(self.names)]
        names = self.names if c.update == "all" or t == 1 else [turn]
        tau = self.tau_at(t)
        for name in names:
            theta = modules[name].weight_orig
            old = ms["omega"].get(name)
            new = self.omega(theta, tau)
            if c.q_init == "greedy" and old is not None:
                # q kept: theta = q * omega_new with q = theta / omega_old
                theta.mul_(new / old.to(theta.device)).mul_(modules[name].weight_mask)
            ms["omega"][name] = new.clone()
        if c.q_init == "noisy" or t == 1:  # eq. 11 on all of q (greedy has no q^0 to keep)
            generator = ctx.generator(t)
            for name in self.names:
                theta, omega = modules[name].weight_orig, ms["omega"][name].to(theta.device)
                noise = torch.randn(theta.shape, generator=generator).to(theta.device)
                theta.add_(omega * noise * c.sigma).mul_(modules[name].weight_mask)
        self._steps = None  # omega changed: rebuild the per-step factors

    def _step_factors(self, ctx: Context) -> dict[int, tuple[torch.Tensor, float]]:
        """Per reparametrised weight (by ``id``): ``omega^2`` and the layer's step scale ``s``,
        derived from ``method_state["omega"]`` once per iteration (or after a resume), not every
        step."""
        if self._steps is None:
            self._steps = {}
            omegas, layer_lr = ctx.state.method_state["omega"], self.config.layer_lr
            for name, module in ctx.pruned_modules():
                if name in omegas:
                    # a resumed run loads its state on the CPU
                    square = omegas[name].to(module.weight_orig.device).square()
                    scale = 1.0 / float(square.max()) if layer_lr else 1.0
                    self._steps[id(module.weight_orig)] = (square, scale)
        return self._steps

    @torch.no_grad()
    def _precondition(self, ctx: Context) -> None:
        """The gradient of ``theta`` that SGD on ``q`` implies: ``s (omega^2 g + wd theta)``."""
        wd, factors = self.config.weight_decay, self._step_factors(ctx)
        for param in ctx.model.parameters():
            if param.grad is None:
                continue
            if id(param) not in factors:
                param.grad.add_(param, alpha=wd)  # plain SGD weight decay on everything else
                continue
            square, scale = factors[id(param)]
            param.grad.mul_(square).add_(param, alpha=wd).mul_(scale)

    def _kurtosis(self, ctx: Context) -> dict[str, float]:
        return {name: kurtosis(m.weight_orig) for name, m in ctx.pruned_modules()}

    def _log(self, ctx: Context, t: int) -> None:
        ctx.state.method_state["kurtosis"].append({"iteration": t, **self._kurtosis(ctx)})

    def report(self, state: TrainingState) -> dict:
        out = super().report(state)
        if "kurtosis" in state.method_state:
            out["kurtosis"] = state.method_state["kurtosis"]
        return out


@dataclass(frozen=True)
class ReweightedL1Config(ReweightConfig):
    pass


@METHODS.register("reweighted-l1")
class ReweightedL1(AffineScaling):
    """Affine scaling with omega = |theta| + tau (re-weighted l1), then threshold and retrain."""

    Config = ReweightedL1Config
    paper = "Fedorov and Rao 2018, Re-weighted learning for sparsifying deep neural networks, eq. 8"

    def omega(self, theta: torch.Tensor, tau: float) -> torch.Tensor:
        return omega_l1(theta, tau)


@dataclass(frozen=True)
class ReweightedL2Config(ReweightConfig):
    tau: float = hp("tau of omega (first iteration's; annealed by --tau-decay)", 1e-2, low=0,
                    low_open=True)  # fmt: skip
    tau_decay: float = hp("tau of iteration t = tau x tau_decay^(t-1) (Chartrand and Yin)", 0.5,
                          low=0, high=1, low_open=True)  # fmt: skip


@METHODS.register("reweighted-l2")
class ReweightedL2(AffineScaling):
    """Affine scaling with omega = sqrt(theta^2 + tau), tau annealed (re-weighted l2)."""

    Config = ReweightedL2Config
    paper = "Fedorov and Rao 2018, Re-weighted learning for sparsifying deep neural networks, eq. 9"

    def omega(self, theta: torch.Tensor, tau: float) -> torch.Tensor:
        return omega_l2(theta, tau)


@dataclass(frozen=True)
class FocussConfig(ReweightConfig):
    p: float = hp("the l_p exponent of FOCUSS (0: l0, 1: l1)", 0.5, low=0, high=2)


@METHODS.register("focuss")
class Focuss(AffineScaling):
    """Affine scaling with omega = |theta|^(2-p) + tau (FOCUSS), then threshold and retrain."""

    Config = FocussConfig
    paper = "Fedorov and Rao 2018, Re-weighted learning for sparsifying deep neural networks, eq.10"

    def omega(self, theta: torch.Tensor, tau: float) -> torch.Tensor:
        return omega_focuss(theta, tau, self.config.p)
