"""Sparse regression solvers against scikit-learn (a test-only dependency) on random problems,
to 1e-6, and against closed forms and optimality conditions where scikit-learn has no peer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_selection import SequentialFeatureSelector
from sklearn.linear_model import (
    Lasso,
    LinearRegression,
    OrthogonalMatchingPursuit,
    Ridge,
    lasso_path,
)

from topoprune.errors import TopopruneError
from topoprune.prune import regression


def problem(seed: int, n: int = 40, p: int = 12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    truth = np.where(rng.random(p) < 0.4, rng.normal(size=p) * 3, 0.0)
    return X, X @ truth + 0.1 * rng.normal(size=n)


@pytest.mark.parametrize("seed", range(5))
def test_least_squares_and_ridge_match_sklearn(seed):
    X, y = problem(seed)
    ours = regression.least_squares(X, y)
    theirs = LinearRegression(fit_intercept=False).fit(X, y).coef_
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    for alpha in (0.1, 3.0):
        np.testing.assert_allclose(regression.ridge(X, y, alpha),
                                   Ridge(alpha=alpha, fit_intercept=False).fit(X, y).coef_,
                                   atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5])
def test_lasso_matches_sklearn(seed, alpha):
    X, y = problem(seed)
    ours = regression.lasso(X, y, alpha)
    theirs = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y)
    assert ours.converged
    np.testing.assert_allclose(ours.coef, theirs.coef_, atol=1e-6)


def test_lasso_path_with_warm_starts_matches_sklearn():
    X, y = problem(7)
    alphas = np.geomspace(1.0, 0.001, 12)
    ours = regression.lasso_path(X, y, alphas)
    _, theirs, _ = lasso_path(X, y, alphas=alphas, tol=1e-14, max_iter=100_000)
    np.testing.assert_allclose(ours, theirs.T, atol=1e-6)
    assert (ours[0] == 0).sum() > (ours[-1] == 0).sum()  # sparser at the larger alpha


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.7, 5.0])
def test_single_variable_lasso_closed_form(alpha):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=30), rng.normal(size=30)
    closed = regression.lasso_one_variable(x, y, alpha)
    assert regression.lasso(x[:, None], y, alpha).coef[0] == pytest.approx(closed, abs=1e-10)
    # sign(x'y/n) max(|x'y/n| - alpha, 0) / (x'x/n), written out
    rho, scale = x @ y / 30, x @ x / 30
    assert closed == pytest.approx(np.sign(rho) * max(abs(rho) - alpha, 0) / scale)


def test_group_lasso_with_singletons_is_the_lasso():
    X, y = problem(3)
    ours = regression.group_lasso(X, y, list(range(X.shape[1])), 0.1)
    theirs = Lasso(alpha=0.1, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(ours.coef, theirs.coef_, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0])
def test_group_lasso_meets_its_optimality_conditions(alpha):
    # KKT: a zero group has ||X_g^T r|| / n <= alpha sqrt(p_g); a nonzero one has
    # X_g^T r / n = alpha sqrt(p_g) w_g / ||w_g||
    X, y = problem(4, n=60, p=12)
    groups = np.repeat(np.arange(4), 3)
    result = regression.group_lasso(X, y, groups, alpha)
    assert result.converged
    residual = y - X @ result.coef
    for g in range(4):
        block = groups == g
        gradient = X[:, block].T @ residual / len(y)
        w = result.coef[block]
        if np.linalg.norm(w) == 0:
            assert np.linalg.norm(gradient) <= alpha * np.sqrt(3) + 1e-8
        else:
            np.testing.assert_allclose(gradient, alpha * np.sqrt(3) * w / np.linalg.norm(w),
                                       atol=1e-6)  # fmt: skip
    if alpha == 1.0:
        assert any(np.linalg.norm(result.coef[groups == g]) == 0 for g in range(4))


@pytest.mark.parametrize("seed", range(5))
def test_orthogonal_matching_pursuit_matches_sklearn(seed):
    X, y = problem(seed)
    X = X / np.linalg.norm(X, axis=0)  # sklearn assumes unit-norm columns; ours normalises
    for k in (1, 3, 6):
        theirs = OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False).fit(X, y)
        np.testing.assert_allclose(regression.orthogonal_matching_pursuit(X, y, k),
                                   theirs.coef_, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_greedy_selection_matches_sklearn(direction):
    # train = test = every row: sklearn's score is then the training error, as ours
    X, y = problem(11, n=30, p=8)
    rows = np.arange(len(y))
    for k in (2, 5):
        selector = SequentialFeatureSelector(
            LinearRegression(fit_intercept=False), n_features_to_select=k, direction=direction,
            scoring="neg_mean_squared_error", cv=[(rows, rows)],
        ).fit(X, y)  # fmt: skip
        select = (regression.forward_selection if direction == "forward"
                  else regression.backward_elimination)  # fmt: skip
        assert select(X, y, k) == np.flatnonzero(selector.get_support()).tolist()


def test_bad_input_is_an_error():
    with pytest.raises(TopopruneError, match="expected X"):
        regression.lasso(np.ones(3), np.ones(3), 0.1)
    with pytest.raises(TopopruneError, match="support size"):
        regression.forward_selection(np.ones((3, 2)), np.ones(3), 3)
    with pytest.raises(TopopruneError, match="one label per column"):
        regression.group_lasso(np.ones((3, 2)), np.ones(3), [0], 0.1)


def test_matching_pursuit_ranks_columns_by_normalised_correlation():
    # column 0 is long but nearly orthogonal to y; column 1 is short and parallel to it
    X = np.array([[100.0, 0.0], [1.0, 0.1], [0.0, 0.0]])
    y = np.array([0.0, 1.0, 0.0])
    assert regression.orthogonal_matching_pursuit(X, y, 1).tolist() == [0.0, 10.0]
