"""GrOWL: the PAV fit and the OWL prox against direct solvers, the group prox, the weights, the
clustering, and exact tying while retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.growl import (
    Growl,
    GrowlConfig,
    affinity_propagation,
    growl_prox,
    growl_weights,
    oscar_weights,
    owl_prox,
    pld_weights,
    pool_adjacent_violators,
    row_similarity,
    spike_weights,
)
from topoprune.prune.masks import add_masks
from topoprune.prune.method import Context, TrainingState
from topoprune.train.engine import TrainSettings, run_stages


def isotonic_by_solver(y: np.ndarray) -> np.ndarray:
    """argmin ||x - y||^2 subject to x_i >= x_{i+1}, by SLSQP."""
    constraints = [
        {"type": "ineq", "fun": lambda x, i=i: x[i] - x[i + 1]} for i in range(len(y) - 1)
    ]
    result = minimize(
        lambda x: 0.5 * np.sum((x - y) ** 2),
        np.full_like(y, y.mean()),
        jac=lambda x: x - y,
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return result.x


def owl_objective(x: np.ndarray, v: np.ndarray, w: np.ndarray) -> float:
    return 0.5 * float(np.sum((x - v) ** 2)) + float(np.sum(w * np.sort(np.abs(x))[::-1]))


def owl_prox_by_solver(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The OWL prox as a smooth program: x = p - q, p, q >= 0, and the OWL norm of u >= |x| as
    sum_k (w_k - w_{k+1}) (k t_k + sum_i max(u_i - t_k, 0)) with slacks (the top-k sum's dual)."""
    n = len(v)
    dw = w - np.append(w[1:], 0.0)  # >= 0

    # variables: x (n), u (n), t (n), s (n x n) with s_ki >= u_i - t_k, s >= 0, u >= +-x
    def unpack(z):
        return z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n :].reshape(n, n)

    def objective(z):
        x, _, t, s = unpack(z)
        k = np.arange(1, n + 1)
        return 0.5 * np.sum((x - v) ** 2) + np.sum(dw * (k * t + s.sum(axis=1)))

    constraints = [
        {"type": "ineq", "fun": lambda z: unpack(z)[1] - unpack(z)[0]},
        {"type": "ineq", "fun": lambda z: unpack(z)[1] + unpack(z)[0]},
        {"type": "ineq", "fun": lambda z: unpack(z)[3].ravel()},
        {
            "type": "ineq",
            "fun": lambda z: (
                unpack(z)[3] - (unpack(z)[1][None, :] - unpack(z)[2][:, None])
            ).ravel(),
        },
    ]
    start = np.concatenate([v, np.abs(v), np.zeros(n), np.zeros(n * n)])
    result = minimize(
        objective,
        start,
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return unpack(result.x)[0]


# ---- pool adjacent violators ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "fit"),
    [
        ([3.0, 1.0, 2.0, 0.0], [3.0, 1.5, 1.5, 0.0]),
        ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]),
        ([5.0, 4.0, 4.0, -1.0], [5.0, 4.0, 4.0, -1.0]),
        ([0.0, 0.0, 6.0, -3.0], [2.0, 2.0, 2.0, -3.0]),
        ([2.0], [2.0]),
    ],
)
def test_pav_known_cases(y, fit):
    assert pool_adjacent_violators(torch.tensor(y, dtype=torch.float64)).tolist() == fit


def test_pav_of_nothing_and_its_dtype():
    assert pool_adjacent_violators(torch.zeros(0)).numel() == 0
    assert pool_adjacent_violators(torch.tensor([1.0, 2.0])).dtype == torch.float32
    with pytest.raises(TopopruneError):
        pool_adjacent_violators(torch.zeros(2, 2))


def test_pav_matches_a_constrained_solver():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        for _ in range(5):
            y = rng.standard_normal(n)
            ours = pool_adjacent_violators(torch.tensor(y)).numpy()
            assert np.all(np.diff(ours) <= 1e-12)
            assert ours == pytest.approx(isotonic_by_solver(y), abs=1e-6)


# ---- the OWL prox ------------------------------------------------------------------------------


def test_owl_prox_with_equal_weights_is_soft_thresholding():
    v = torch.tensor([3.0, -0.2, -1.5, 0.7, 0.0], dtype=torch.float64)
    expected = torch.sign(v) * (v.abs() - 0.5).clamp_min(0)
    assert torch.equal(owl_prox(v, torch.full((5,), 0.5, dtype=torch.float64)), expected)


def test_owl_prox_matches_a_convex_solver():
    rng = np.random.default_rng(1)
    for n in (2, 3, 4):
        for _ in range(4):
            v = rng.standard_normal(n) * 2
            w = np.sort(rng.uniform(0, 1.5, n))[::-1].copy()
            ours = owl_prox(torch.tensor(v), torch.tensor(w)).numpy()
            solver = owl_prox_by_solver(v, w)
            assert ours == pytest.approx(solver, abs=1e-5)
            assert owl_objective(ours, v, w) <= owl_objective(solver, v, w) + 1e-9


def test_owl_prox_beats_every_point_of_a_grid_in_two_dimensions():
    v = np.array([1.3, -0.9])
    w = np.array([0.8, 0.3])
    ours = owl_prox(torch.tensor(v), torch.tensor(w)).numpy()
    grid = np.stack(np.meshgrid(*[np.linspace(-2, 2, 401)] * 2), axis=-1).reshape(-1, 2)
    magnitudes = -np.sort(-np.abs(grid), axis=1)
    values = 0.5 * np.sum((grid - v) ** 2, axis=1) + magnitudes @ w
    best = float(values.min())
    assert owl_objective(ours, v, w) <= best + 1e-12
    # by hand: z = (1.3 - 0.8, 0.9 - 0.3) = (0.5, 0.6) violates the order: pooled to 0.55 each
    assert ours == pytest.approx([0.55, -0.55], abs=1e-12)


def test_oscar_weights_tie_equal_magnitudes_and_keep_their_signs():
    v = torch.tensor([2.0, -2.0, 0.3], dtype=torch.float64)
    x = owl_prox(v, oscar_weights(3, 0.1, 0.5))
    assert x[0] == -x[1] and x[0] > 0
    # z = (2 - 1.1, 2 - 0.6, 0.3 - 0.1) = (0.9, 1.4, 0.2): the first two pool to 1.15
    assert x.tolist() == pytest.approx([1.15, -1.15, 0.2])


def test_owl_prox_checks_its_weights():
    with pytest.raises(TopopruneError, match="non-increasing"):
        owl_prox(torch.ones(2), torch.tensor([0.1, 0.2]))
    with pytest.raises(TopopruneError, match="non-negative"):
        owl_prox(torch.ones(2), torch.tensor([0.1, -0.2]))
    with pytest.raises(TopopruneError):
        owl_prox(torch.ones(2), torch.ones(3))


# ---- the group prox and the weights ------------------------------------------------------------


def test_growl_prox_rescales_rows_and_zeroes_small_ones():
    matrix = torch.tensor([[3.0, 4.0], [0.0, -2.0], [0.3, 0.4]], dtype=torch.float64)
    out = growl_prox(matrix, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    assert out[0].tolist() == pytest.approx([2.4, 3.2])  # norm 5 -> 4, same direction
    assert out[1].tolist() == pytest.approx([0.0, -1.0])  # norm 2 -> 1
    assert torch.equal(out[2], torch.zeros(2, dtype=torch.float64))  # norm 0.5 -> exactly 0


def test_growl_prox_ties_row_norms_and_flattens_filters():
    filters = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    filters[0, 0, 0, 0], filters[1, 0, 1, 1] = 3.0, -2.0
    out = growl_prox(filters, oscar_weights(2, 0.0, 2.0))  # z = (3 - 2, 2 - 0): pooled to 1.5
    assert out.shape == filters.shape
    assert out[0, 0, 0, 0] == pytest.approx(1.5) and out[1, 0, 1, 1] == pytest.approx(-1.5)
    assert torch.count_nonzero(out) == 2


def test_growl_prox_of_a_zero_row_is_zero():
    out = growl_prox(torch.zeros(2, 3), torch.zeros(2))
    assert torch.equal(out, torch.zeros(2, 3))


def test_weight_kinds():
    assert oscar_weights(3, 1.0, 0.5).tolist() == [2.0, 1.5, 1.0]
    assert spike_weights(3, 1.0, 0.5).tolist() == [1.5, 1.0, 1.0]
    assert pld_weights(6, 1.0, 0.5, 0.5).tolist() == [2.0, 1.5, 1.0, 1.0, 1.0, 1.0]
    assert pld_weights(4, 1.0, 0.5, 1.0).tolist() == oscar_weights(4, 1.0, 0.5).tolist()
    assert pld_weights(3, 1.0, 0.5, 0.0).tolist() == [1.0, 1.0, 1.0]
    assert growl_weights("spike", 2, 0.0, 1.0).tolist() == [1.0, 0.0]
    with pytest.raises(TopopruneError):
        growl_weights("linear", 2, 0.0, 1.0)


# ---- clustering ----------------------------------------------------------------------------------


def test_row_similarity_is_one_only_for_equal_rows():
    s = row_similarity(torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [-1.0, -1.0]]))
    assert s[0, 1] == 1.0 and s[0, 2] == 0.5 and s[0, 3] == -1.0
    assert np.allclose(s, s.T)


def test_affinity_propagation_groups_near_copies_and_is_deterministic():
    torch.manual_seed(0)
    base = torch.randn(3, 20, dtype=torch.float64)
    rows = torch.cat([base, base + 0.01 * torch.randn(3, 20, dtype=torch.float64)])
    s = row_similarity(rows)
    labels = affinity_propagation(s, 0.8)
    assert labels == [0, 1, 2, 0, 1, 2]
    assert affinity_propagation(s, 0.8) == labels
    assert affinity_propagation(s, 1.0) == list(range(6))  # preference 1: nothing tied
    assert affinity_propagation(np.zeros((0, 0)), 0.5) == []


# ---- the method: removal and exact tying ---------------------------------------------------------


def toy_data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 6, generator=generator)
    targets = (inputs[:, 0] > 0).long()
    return [(inputs[i : i + 16], targets[i : i + 16]) for i in range(0, 64, 16)]


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def test_the_growl_stage_removes_the_rows_the_prox_zeroes():
    model = add_masks(toy_model(), names=["0"])
    config = GrowlConfig(
        dense_epochs=0, epochs=3, retrain_epochs=0, lr=0.05, lam1=(1.0,), tie=False
    )
    method = Growl(config, ["0"], seed=0)
    state = run_stages(model, method.stages(), toy_data(), TrainSettings(seed=0))
    layer = model[0]
    dead = layer.weight_orig.norm(dim=1) == 0
    assert dead.any() and not dead.all()
    assert torch.all(layer.weight_mask[dead] == 0) and torch.all(layer.weight_mask[~dead] == 1)
    report = method.report(state)["layers"]["0"]
    assert report["removed"] == int(dead.sum()) and report["rows"] == 8
    assert report["kept_weights"] == 6 * int((~dead).sum())


def tied_setup(momentum: float = 0.9, weight_decay: float = 5e-4, optimizer: str = "sgd"):
    model = add_masks(toy_model(), names=["0", "2"])
    with torch.no_grad():  # rows 1, 4 and 6 of layer 0 nearly equal: one cluster
        for row in (4, 6):
            model[0].weight_orig[row] = model[0].weight_orig[1] * 1.01
        model[0].weight_orig[3] = 0.0
        model[0].weight_mask[3] = 0.0
    config = GrowlConfig(
        dense_epochs=0,
        epochs=0,
        retrain_epochs=2,
        lam1=(0.0,),
        lam2=(0.0,),
        preference=0.9,
        momentum=momentum,
        weight_decay=weight_decay,
        optimizer=optimizer,
    )
    return model, Growl(config, ["0", "2"], seed=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_tied_rows_stay_identical_while_retraining(optimizer):
    model, method = tied_setup(optimizer=optimizer)
    before = model[0].weight_orig.detach().clone()
    state = run_stages(model, method.stages(), toy_data(), TrainSettings(seed=0))
    clusters = state.method_state["clusters"]["0"]
    assert [1, 4, 6] in clusters
    weight = model[0].weight_orig.detach()
    assert not torch.equal(weight[1], before[1])  # they trained
    for group in clusters:
        for row in group[1:]:
            assert torch.equal(weight[row], weight[group[0]])
    assert torch.equal(weight[3], torch.zeros(6))  # removed rows stay removed
    report = method.report(state)
    layer = report["layers"]["0"]
    assert layer["tied_rows"] >= 3 and layer["clusters"] >= 1
    shared = sum(len(g) - 1 for g in clusters) * 6
    assert layer["unique_weights"] == layer["kept_weights"] - shared
    assert report["compression_tied"] >= report["compression_removed"] > 1


def test_gradients_of_a_cluster_are_averaged():
    model, method = tied_setup()
    state = TrainingState()
    stage = method.stages()[-1]
    ctx = Context(model, state, stage, 0, "cpu", nn.functional.cross_entropy)
    method._tie(ctx)
    inputs, targets = toy_data()[0]
    nn.functional.cross_entropy(model(inputs), targets).backward()
    grad = model[0].weight_orig.grad.clone()
    method._average_gradients(ctx)
    averaged = model[0].weight_orig.grad
    for group in state.method_state["clusters"]["0"]:
        assert torch.allclose(averaged[group[0]], grad[group].mean(dim=0))
        for row in group[1:]:
            assert torch.equal(averaged[row], averaged[group[0]])


def test_config_checks():
    with pytest.raises(TopopruneError):
        GrowlConfig(weights="linear")
    with pytest.raises(TopopruneError):
        GrowlConfig(lam1=(-1.0,))
    with pytest.raises(TopopruneError):
        Growl(GrowlConfig(lam1=(0.1, 0.2)), ["a", "b", "c"], seed=0)
