"""WoodFisher: the Woodbury inverse and its blocks against dense inverses, the joint OBS update
against the constrained minimiser of the quadratic model (and the classic single-weight step),
and the method on tiny models: its target sparsity, nested masks, and on least squares (where the
empirical Fisher is proportional to the Hessian by construction) the exact refit of the survivors,
which loses less than zeroing the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.errors import TopopruneError
from topoprune.prune.masks import add_masks, current_masks
from topoprune.prune.method import Context, TrainingState
from topoprune.prune.methods import METHODS
from topoprune.prune.woodfisher import (
    WoodFisherConfig,
    block_fisher_inverse,
    mean_over_groups,
    obs_block_update,
    obs_scores,
    woodbury_inverse,
)
from topoprune.train.run import prune_model

F64 = torch.float64


def gradients(m: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, size, generator=torch.Generator().manual_seed(seed), dtype=F64)


def dense_fisher(grads: torch.Tensor, damp: float) -> torch.Tensor:
    return damp * torch.eye(grads.shape[1], dtype=F64) + grads.T @ grads / len(grads)


@pytest.mark.parametrize(("m", "d", "damp"), [(12, 6, 0.1), (3, 8, 1e-3)])
def test_woodbury_inverse_is_the_dense_inverse(m, d, damp):
    grads = gradients(m, d)  # m < d: a rank-deficient Fisher, invertible by the dampening only
    expected = torch.linalg.inv(dense_fisher(grads, damp))
    inverse = woodbury_inverse(grads, damp)
    assert inverse.dtype == F64
    assert torch.allclose(inverse, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))


def test_block_inverse_is_each_blocks_dense_inverse_with_a_padded_last_block():
    grads, damp, size = gradients(9, 11), 0.05, 4  # blocks of 4, 4 and 3 (+ 1 padded)
    inverse = block_fisher_inverse(grads.float(), size, damp)  # float32 in, float64 out
    assert inverse.shape == (3, 4, 4) and inverse.dtype == F64
    for k, (start, stop) in enumerate([(0, 4), (4, 8), (8, 11)]):
        part = grads.float().double()[:, start:stop]
        expected = torch.linalg.inv(dense_fisher(part, damp))
        n = stop - start
        assert torch.allclose(inverse[k, :n, :n], expected, rtol=1e-10, atol=1e-9), k
    padded = torch.zeros(4, dtype=F64)
    padded[3] = 1 / damp
    assert torch.equal(inverse[2, 3], padded) and torch.equal(inverse[2, :, 3], padded)


def test_block_inverse_refuses_bad_arguments():
    with pytest.raises(TopopruneError, match="dampening"):
        block_fisher_inverse(gradients(2, 3), 2, 0.0)
    with pytest.raises(TopopruneError, match="block size"):
        block_fisher_inverse(gradients(2, 3), 0, 0.1)
    with pytest.raises(TopopruneError, match="gradients"):
        block_fisher_inverse(torch.zeros(0, 3), 2, 0.1)


def constrained_minimiser(fisher: torch.Tensor, w: torch.Tensor, removed: torch.Tensor):
    """argmin (v - w)^T F (v - w) subject to v_Q = 0, by the normal equations on the free
    coordinates R: F_RR (v_R - w_R) = F_RQ w_Q."""
    free = ~removed
    v = torch.zeros_like(w)
    step = torch.linalg.solve(fisher[free][:, free], fisher[free][:, removed] @ w[removed])
    v[free] = w[free] + step
    return v


def test_joint_update_zeroes_the_removed_weights_and_minimises_the_quadratic():
    grads, damp, size = gradients(20, 14, seed=1), 0.01, 5  # blocks 5, 5, 4 (+ 1 padded)
    w = torch.randn(14, generator=torch.Generator().manual_seed(2), dtype=F64)
    removed = torch.zeros(14, dtype=torch.bool)
    removed[[0, 3, 4, 10, 11, 13]] = True  # nothing removed from the middle block
    updated = obs_block_update(w, block_fisher_inverse(grads, size, damp), removed)
    assert torch.all(updated[removed] == 0)
    assert torch.equal(updated[5:10], w[5:10])
    for start, stop in [(0, 5), (10, 14)]:
        fisher = dense_fisher(grads[:, start:stop], damp)
        expected = constrained_minimiser(fisher, w[start:stop], removed[start:stop])
        assert torch.allclose(updated[start:stop], expected, rtol=0, atol=1e-9), start


def test_removing_one_weight_is_the_classic_obs_step_and_costs_its_score():
    grads, damp, q = gradients(10, 6, seed=3), 0.1, 2
    w = torch.randn(6, generator=torch.Generator().manual_seed(4), dtype=F64)
    inverse = block_fisher_inverse(grads, 6, damp)
    removed = torch.zeros(6, dtype=torch.bool)
    removed[q] = True
    updated = obs_block_update(w, inverse, removed)
    classic = w - w[q] * inverse[0, :, q] / inverse[0, q, q]
    assert torch.allclose(updated, classic, rtol=0, atol=1e-12)
    step = updated - w
    rise = 0.5 * step @ dense_fisher(grads, damp) @ step
    assert float(rise) == pytest.approx(float(obs_scores(w, inverse)[q]), rel=1e-9)
    assert float(obs_scores(w, inverse)[q]) == float(w[q] ** 2 / (2 * inverse[0, q, q]))


def test_mean_over_groups_averages_across_chunk_boundaries():
    rows = torch.arange(14.0).view(7, 2)
    means = mean_over_groups([rows[:2], rows[2:5], rows[5:]], 3)
    assert torch.equal(means, torch.stack([rows[:3].mean(0), rows[3:6].mean(0)]))
    with pytest.raises(TopopruneError, match="fewer than 8"):
        mean_over_groups([rows], 8)


def test_granularity_other_than_element_is_refused():
    with pytest.raises(TopopruneError, match="granularity must be element"):
        WoodFisherConfig(granularity="filter")


def classification() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 6, generator=generator)
    y = torch.randint(0, 4, (96,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))


@pytest.mark.parametrize("schedule", ["iterative", "gradual"])
def test_the_method_reaches_its_target_sparsity(schedule):
    config = WoodFisherConfig(
        dense_epochs=2,
        retrain_epochs=2,
        sparsity=(0.5, 0.75),
        iterations=2,
        prune_schedule=schedule,
        prune_every=3,
        fisher_examples=16,
        fisher_batch=2,
        block_size=16,  # 72 and 48 weights: padded last blocks
    )
    model, summary = prune_model(mlp(), "woodfisher", config, train=classification())
    assert summary["kept_percent"] == {"0": 50.0, "2": 25.0}
    for index in (0, 2):
        layer = model[index]
        assert torch.all(layer.weight_orig[layer.weight_mask == 0] == 0)


def least_squares(n: int = 64, d: int = 8, noise: float = 0.5):
    """Data whose least-squares fit is ``w_star`` with residuals of equal size ``noise``: the
    noise signs are orthogonal to the inputs' columns, so the empirical Fisher of the squared
    error, ``4 noise^2 X^T X / n``, is exactly ``2 noise^2`` times its Hessian ``2 X^T X / n``."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(n, d, generator=generator, dtype=F64)
    signs = torch.randint(0, 2, (n, 1), generator=generator).to(F64) * 2 - 1
    x = x - signs @ (signs.T @ x) / n  # X^T s = 0
    w_star = torch.randn(1, d, generator=generator, dtype=F64)
    return x, x @ w_star.T + noise * signs, w_star


def linear_context(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Context:
    model = add_masks(nn.Sequential(nn.Linear(x.shape[1], 1, bias=False)).double())
    with torch.no_grad():
        model[0].weight_orig.copy_(w)
    return Context(
        model,
        TrainingState(),
        None,
        0,
        "cpu",
        nn.functional.mse_loss,
        draw_batches=lambda n, step: iter([(x[:n], y[:n])]),
    )


def test_on_least_squares_the_update_refits_the_survivors_and_beats_zeroing():
    x, y, w_star = least_squares()
    ctx = linear_context(x, y, w_star)
    # damp small against F (eigenvalues ~0.3) but not so small that I / damp, the start of the
    # rank-one updates, cancels away float64's digits (1e-12 leaves errors of 1e-6)
    config = WoodFisherConfig(sparsity=(0.5,), fisher_examples=64, block_size=8, damp=1e-8)
    METHODS["woodfisher"](config, ["0"], seed=0).prune_to(ctx, lambda s: s)
    kept = ctx.model[0].weight_mask[0].bool()
    assert int(kept.sum()) == 4
    refit = torch.zeros(8, dtype=F64)
    refit[kept] = torch.linalg.lstsq(x[:, kept], y).solution.squeeze(1)
    pruned = ctx.model[0].weight_orig.detach()[0]
    assert torch.allclose(pruned, refit, rtol=0, atol=1e-7)

    def loss(w: torch.Tensor) -> float:
        return float(nn.functional.mse_loss(x @ w, y.squeeze(1)))

    assert loss(pruned) < loss(w_star[0] * kept) - 1e-3


def test_a_second_round_keeps_pruned_weights_pruned():
    x, y, w_star = least_squares()
    ctx = linear_context(x, y, w_star)
    method = METHODS["woodfisher"](WoodFisherConfig(sparsity=(0.75,), fisher_examples=64), ["0"], 0)
    method.prune_to(ctx, lambda s: 0.5)
    first = current_masks(ctx.model)["0"]
    method.prune_to(ctx, lambda s: s)
    second = current_masks(ctx.model)["0"]
    assert int(first.sum()) == 4 and int(second.sum()) == 2
    assert torch.all(first | ~second)  # second is a subset of first
    assert torch.all(ctx.model[0].weight_orig.detach()[~second] == 0)
