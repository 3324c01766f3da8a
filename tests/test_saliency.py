"""Second-order and first-order saliency: closed forms on models whose Hessian is known.

A linear layer with squared loss has ``H = 2 X^T X / n`` exactly; there OBD's Gauss-Newton
diagonal is exact, Hutchinson's estimate is unbiased (and exact when H is diagonal), and OBS's
removal with its update is the constrained least-squares optimum.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.prune.curvature import (
    empirical_fisher_diagonal,
    gauss_newton_diagonal,
    gauss_newton_matrix,
    hutchinson_diagonal,
    layer_inputs,
    per_example_gradients,
)
from topoprune.prune.masks import add_masks
from topoprune.prune.saliency import (
    OBDConfig,
    OBSConfig,
    layer_hessian,
    merge_removals,
    obs_path,
    taylor_scores,
    unit_taylor_scores,
)
from topoprune.train.run import prune_model

mse = nn.functional.mse_loss


def least_squares(n=200, d=6, seed=0, orthogonal=False):
    """A Linear(d, 1) model at its least-squares optimum, its data and exact Hessian."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if orthogonal:  # orthogonal columns: a diagonal Hessian
        x = torch.linalg.qr(x).Q * torch.arange(1.0, d + 1, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    w = torch.linalg.lstsq(x, y[:, None]).solution.T
    model = nn.Sequential(nn.Linear(d, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(w)
    add_masks(model)
    return model, x, y[:, None], 2 * x.T @ x / n


def loss_at(x, y, w):
    return float(((x @ w - y.flatten()) ** 2).mean())


def test_gauss_newton_diagonal_is_the_exact_hessian_diagonal_of_least_squares():
    model, x, y, hessian = least_squares()
    diagonal = gauss_newton_diagonal(model, ["0"], [(x, y)], mse)["0"][0]
    torch.testing.assert_close(diagonal, hessian.diagonal(), rtol=1e-10, atol=1e-12)
    full = gauss_newton_matrix(model, ["0"], [(x, y)], mse)
    torch.testing.assert_close(full, hessian, rtol=1e-10, atol=1e-12)


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_unbiased_otherwise():
    model, x, y, hessian = least_squares(orthogonal=True)
    g = torch.Generator().manual_seed(1)
    exact = hutchinson_diagonal(model, ["0"], [(x, y)], mse, samples=3, generator=g)["0"][0]
    torch.testing.assert_close(exact, hessian.diagonal(), rtol=1e-10, atol=1e-12)
    model, x, y, hessian = least_squares(seed=2)
    samples = 4000
    g = torch.Generator().manual_seed(3)
    estimate = hutchinson_diagonal(model, ["0"], [(x, y)], mse, samples=samples, generator=g)
    # z_i (Hz)_i = H_ii + sum_{j != i} z_i z_j H_ij: variance sum_{j != i} H_ij^2 per sample
    off = hessian - torch.diag(hessian.diagonal())
    std = (off.square().sum(1) / samples).sqrt()
    assert ((estimate["0"][0] - hessian.diagonal()).abs() < 5 * std).all()


def test_hutchinson_estimates_the_full_hessian_of_a_nonlinear_network():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))).double()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    w0, w2 = model[0].weight_orig.detach(), model[2].weight_orig.detach()

    def loss(a):
        h = torch.tanh(x @ a.reshape(4, 3).T + model[0].bias)
        return nn.functional.cross_entropy(h @ w2.T + model[2].bias, y)

    exact = torch.autograd.functional.hessian(loss, w0.flatten())
    samples = 3000
    g = torch.Generator().manual_seed(0)
    estimate = hutchinson_diagonal(model, ["0"], [(x, y)], nn.functional.cross_entropy, samples, g)[
        "0"
    ].flatten()
    off = exact - torch.diag(exact.diagonal())
    std = (off.square().sum(1) / samples).sqrt()
    assert ((estimate - exact.diagonal()).abs() < 5 * std + 1e-9).all()
    # Gauss-Newton drops tanh's second derivative: it differs from the Hessian here
    gn = gauss_newton_diagonal(model, ["0"], [(x, y)], nn.functional.cross_entropy)["0"]
    assert not torch.allclose(gn.flatten(), exact.diagonal(), rtol=1e-3)


def test_gauss_newton_of_softmax_regression_is_its_hessian():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(4, 3, bias=False))).double()
    x, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    w = model[0].weight_orig.detach()
    exact = torch.autograd.functional.hessian(
        lambda v: nn.functional.cross_entropy(x @ v.reshape(3, 4).T, y), w.flatten()
    )
    full = gauss_newton_matrix(model, ["0"], [(x[:25], y[:25]), (x[25:], y[25:])])
    torch.testing.assert_close(full, exact, rtol=1e-9, atol=1e-12)


def test_empirical_fisher_diagonal_is_the_mean_squared_per_example_gradient():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
    fisher = empirical_fisher_diagonal(model, ["0", "2"], [(x[:4], y[:4]), (x[4:], y[4:])])
    for name, module in (("0", model[0]), ("2", model[2])):
        rows = []
        for i in range(10):
            model.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
            rows.append(module.weight_orig.grad.clone())
        torch.testing.assert_close(fisher[name], torch.stack(rows).square().mean(0))
    grads = per_example_gradients(model, ["2"], x, y)
    assert grads["2"].shape == (10, 2, 3)


def test_layer_inputs_of_a_convolution_are_its_unfolded_patches():
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    model = add_masks(nn.Sequential(conv))
    x = torch.randn(4, 2, 7, 7)
    inputs = layer_inputs(model, ["0"], [(x, None)])["0"]
    weight = conv.weight_orig.detach().reshape(3, -1)
    out = (inputs @ weight.T).reshape(4, 16, 3).transpose(1, 2).reshape(4, 3, 4, 4)
    torch.testing.assert_close(out + conv.bias[None, :, None, None], model(x).detach())


def brute_force_obs(w, hessian, count):
    """OBS by the book: recompute the restricted inverse at every step, remove the least
    saliency over all rows, apply the update."""
    w = w.clone()
    alive = torch.ones_like(w, dtype=torch.bool)
    order = []
    for _ in range(count):
        best = None
        for r in range(len(w)):
            s = torch.nonzero(alive[r]).flatten()
            if not len(s):
                continue
            inverse = torch.linalg.inv(hessian[s][:, s])
            saliency = w[r, s] ** 2 / (2 * inverse.diagonal())
            k = int(saliency.argmin())
            if best is None or saliency[k] < best[0]:
                best = (float(saliency[k]), r, s, k, inverse)
        _, r, s, k, inverse = best
        w[r, s] -= w[r, s[k]] / inverse[k, k] * inverse[:, k]
        w[r, s[k]] = 0
        alive[r, s[k]] = False
        order.append((r, int(s[k])))
    return w, alive, order


def test_obs_path_is_the_one_at_a_time_greedy_over_all_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, generator=g, dtype=torch.float64)
    hessian = layer_hessian(x)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    alive = torch.ones(3, 5, dtype=torch.bool)
    path = obs_path(w, alive, hessian, [2, 7, 14])
    for step, count in zip(path, [2, 7, 14], strict=True):
        expected_w, expected_alive, _ = brute_force_obs(w, hessian, count)
        assert torch.equal(step["alive"], expected_alive)
        torch.testing.assert_close(step["weight"], expected_w, rtol=1e-9, atol=1e-12)


def test_obs_on_least_squares_reaches_the_constrained_optimum_and_predicts_its_loss():
    model, x, y, hessian = least_squares()
    w = model[0].weight_orig.detach()
    base = loss_at(x, y, w[0])
    counts = [1, 2, 3, 4, 5]
    for step in obs_path(w, torch.ones_like(w, dtype=torch.bool), hessian, counts):
        kept = torch.nonzero(step["alive"][0]).flatten()
        refit = torch.linalg.lstsq(x[:, kept], y).solution.flatten()
        torch.testing.assert_close(step["weight"][0, kept], refit, rtol=1e-8, atol=1e-10)
        assert (step["weight"][0][~step["alive"][0]] == 0).all()
        after = loss_at(x, y, step["weight"][0])
        assert after - base == pytest.approx(step["increase"], rel=1e-8)


def test_removing_one_weight_orders_magnitude_obd_and_obs_by_loss_increase():
    """At a quadratic minimum, zeroing q costs h_qq w_q^2 / 2 exactly (OBD's saliency), so OBD's
    choice costs no more than magnitude's; OBS's update costs w_q^2 / (2 [H^-1]_qq), no more
    than zeroing (Cauchy-Schwarz: [H^-1]_qq >= 1 / h_qq)."""
    for seed in range(5):
        model, x, y, hessian = least_squares(seed=seed)
        w = model[0].weight_orig.detach()[0]
        base = loss_at(x, y, w)

        def zeroed(q, w=w, x=x, y=y, base=base):
            v = w.clone()
            v[q] = 0
            return loss_at(x, y, v) - base

        magnitude = int(w.abs().argmin())
        obd = int((hessian.diagonal() * w**2).argmin())
        obs = obs_path(w[None], torch.ones(1, len(w), dtype=torch.bool), hessian, [1])[0]
        e_obs = loss_at(x, y, obs["weight"][0]) - base
        assert zeroed(magnitude) >= zeroed(obd) - 1e-12
        assert zeroed(obd) >= e_obs - 1e-12
        # for the same removed weight, the update never costs more than zeroing
        q = int(torch.nonzero(~obs["alive"][0]))
        assert zeroed(q) >= e_obs - 1e-12


def test_merge_removals_follows_the_least_next_saliency():
    sequences = [[0.1, 0.5, 0.6], [0.2, 0.3, 9.0], [0.05]]
    taken = merge_removals(sequences, [1, 2, 4, 7])
    assert taken == [[0, 0, 1], [1, 0, 1], [1, 2, 1], [3, 3, 1]]
    with pytest.raises(Exception, match="only 7"):
        merge_removals(sequences, [8])


def least_squares_loader(x, y):
    return DataLoader(TensorDataset(x, y), batch_size=len(x))


def test_obs_method_over_the_network_refits_least_squares():
    model, x, y, hessian = least_squares(n=120, d=8)
    config = OBSConfig(
        scope="network", allocation="global", sparsity=(0.5,), dense_epochs=0,
        retrain_epochs=0, damp=0.0, scoring_examples=120, weight_decay=0.0,
    )  # fmt: skip
    w = model[0].weight_orig.detach().clone()
    model, summary = prune_model(model, "obs", config, train=least_squares_loader(x, y), loss=mse)
    alive = model[0].weight_mask.bool()[0]
    assert int(alive.sum()) == 4
    expected = obs_path(w, torch.ones_like(w, dtype=torch.bool), hessian, [4])[0]
    assert torch.equal(alive, expected["alive"][0])
    refit = torch.linalg.lstsq(x[:, alive], y).solution.flatten()
    torch.testing.assert_close(model[0].weight_orig.detach()[0, alive], refit)
    assert summary["report"]["obs_increase"]["network"] > 0


def test_obd_method_removes_the_least_hessian_weighted_squares():
    model, x, y, hessian = least_squares(n=120, d=8, seed=4)
    w = model[0].weight_orig.detach().clone()[0]
    for how in ("gauss-newton", "hutchinson", "fisher"):
        fresh, *_ = least_squares(n=120, d=8, seed=4)
        config = OBDConfig(
            hessian=how, sparsity=(0.25,), dense_epochs=0, retrain_epochs=0,
            scoring_examples=120, hutchinson_samples=50,
        )  # fmt: skip
        fresh, _ = prune_model(fresh, "obd", config, train=least_squares_loader(x, y), loss=mse)
        removed = set(torch.nonzero(~fresh[0].weight_mask.bool()[0]).flatten().tolist())
        if how == "gauss-newton":
            expected = set((hessian.diagonal() * w**2).argsort()[:2].tolist())
            assert removed == expected
        assert len(removed) == 2


def test_taylor_scores_average_the_absolute_product_over_batches():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    batches = [(torch.randn(5, 4), torch.randint(0, 2, (5,))) for _ in range(3)]
    scores = taylor_scores(model, ["0"], batches, nn.functional.cross_entropy)["0"]
    expected = torch.zeros(3, 4)
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        expected += (model[0].weight_orig * model[0].weight_orig.grad).abs().detach() / 3
    torch.testing.assert_close(scores, expected)


def test_unit_taylor_scores_of_relu_units_are_the_activation_criterion():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    scores = unit_taylor_scores(model, ["0"], [(x, y)], nn.functional.cross_entropy)["0"]
    a = torch.relu(model[0](x)).detach().requires_grad_(True)
    nn.functional.cross_entropy(model[2](a), y).backward()
    torch.testing.assert_close(scores, (a * a.grad).mean(0).abs())


@pytest.mark.parametrize("name,config", [
    ("obs", OBSConfig(scope="network", allocation="layer")),
    ("obs", OBSConfig(granularity="filter")),
    ("obs", OBSConfig(scope="layer", allocation="global")),
])  # fmt: skip
def test_obs_refuses_settings_it_cannot_honour(name, config):
    from topoprune.errors import TopopruneError
    from topoprune.prune.methods import METHODS

    with pytest.raises(TopopruneError):
        METHODS[name](config, ["0"], 0)


@pytest.mark.parametrize("score", ["obd", "obs", "taylor", "woodfisher"])
def test_sensitivity_analysis_takes_the_saliency_scores(score):
    from topoprune.data.images import Split
    from topoprune.train.sensitivity import layer_sensitivity

    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)))
    split = Split(torch.randn(60, 1, 4, 4), torch.randint(0, 3, (60,)))
    examples = {"woodfisher": None}.get(score, 40)
    rows = layer_sensitivity(model, split, [0.5, 1.0], score=score, scoring_batches=split,
                             scoring_examples=examples)  # fmt: skip
    kept = {(r["layer"], r["sparsity"]): r["kept"] for r in rows}
    assert kept[("1", 0.5)] == 64 and kept[("3", 1.0)] == 0


def one_output_nets():
    """Networks where each weight reaches the single output by one path per example: there the
    paper's backpropagated diagonal is the Gauss-Newton diagonal."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1), nn.ReLU())
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 1))
    return [(add_masks(mlp), torch.randn(30, 5)), (add_masks(cnn), torch.randn(30, 1, 4, 4))]


@pytest.mark.parametrize("index", [0, 1])
def test_lecun_diagonal_is_gauss_newton_where_each_weight_has_one_path(index):
    from topoprune.prune.curvature import lecun_diagonal

    model, x = one_output_nets()[index]
    y = torch.randn(30, 1)
    names = [n for n, m in model.named_modules() if hasattr(m, "weight_mask")]
    lecun = lecun_diagonal(model, names, [(x[:10], y[:10]), (x[10:], y[10:])], mse)
    gn = gauss_newton_diagonal(model, names, [(x, y)], mse)
    for name in names:
        torch.testing.assert_close(lecun[name], gn[name], rtol=1e-4, atol=1e-7)


def test_lecun_diagonal_drops_the_cross_terms_of_several_outputs():
    from topoprune.errors import TopopruneError
    from topoprune.prune.curvature import lecun_diagonal

    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 5, bias=False)))
    x, y = torch.randn(20, 4), torch.randint(0, 5, (20,))
    lecun = lecun_diagonal(model, ["0", "1"], [(x, y)])
    # by hand: the output diagonal p(1-p), through W2 squared, times x^2
    p = torch.softmax(model(x), 1).detach()
    h_hidden = (p * (1 - p)) @ model[1].weight_orig.detach().square()
    torch.testing.assert_close(lecun["0"], h_hidden.T @ x.square() / 20)
    gn = gauss_newton_diagonal(model, ["0"], [(x, y)])["0"]
    assert not torch.allclose(lecun["0"], gn, rtol=1e-2)
    with pytest.raises(TopopruneError, match="no rule"):
        lecun_diagonal(add_masks(nn.Sequential(nn.Linear(2, 2), nn.GELU())), ["0"], [(x, y)])
