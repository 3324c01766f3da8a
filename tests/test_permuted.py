"""Permuted-MNIST tasks: what moves, what does not, and determinism."""

import numpy as np
import pytest
import torch

from topoprune.data import DEFAULT_SQUARE, central_square_permutation, permuted_mnist
from topoprune.errors import DataError


def window(square, side=28):
    start = (side - square) // 2
    mask = np.zeros((side, side), bool)
    mask[start : start + square, start : start + square] = True
    return mask.ravel()


@pytest.mark.parametrize("square", [1, 7, 8, 14, 20, 28])
def test_permutation_moves_only_the_central_square(square):
    perm = central_square_permutation(square, seed=3)
    inside = window(square)
    assert sorted(perm.tolist()) == list(range(784))  # a bijection
    assert np.array_equal(perm[~inside], np.flatnonzero(~inside))
    assert set(perm[inside].tolist()) == set(np.flatnonzero(inside).tolist())
    if square >= 8:
        assert (perm[inside] != np.flatnonzero(inside)).mean() > 0.9


def test_square_out_of_range():
    with pytest.raises(DataError, match="between 1 and 28"):
        central_square_permutation(29, seed=0)
    with pytest.raises(DataError):
        central_square_permutation(0, seed=0)


def test_task_properties_on_real_mnist(mnist):
    task = permuted_mnist(base=mnist, seed=1)
    assert task.info["square"] == DEFAULT_SQUARE == 14
    inside = window(14)
    before = mnist.test.images.reshape(-1, 784)
    after = task.test.images.reshape(-1, 784)
    assert torch.equal(after[:, ~inside], before[:, ~inside])  # outside untouched
    assert not torch.equal(after[:, inside], before[:, inside])
    # inside, each image keeps its own pixel values, only rearranged
    assert torch.equal(after[:, inside].sort(dim=1).values, before[:, inside].sort(dim=1).values)
    for a, b in ((task.train, mnist.train), (task.val, mnist.val), (task.test, mnist.test)):
        assert torch.equal(a.labels, b.labels)


def test_same_seed_same_task_different_seed_different_task(mnist):
    one = permuted_mnist(base=mnist, seed=1)
    again = permuted_mnist(base=mnist, seed=1)
    other = permuted_mnist(base=mnist, seed=2)
    assert torch.equal(one.train.images, again.train.images)
    assert not torch.equal(one.train.images, other.train.images)
    assert one.name == "permuted-mnist(square=14,seed=1)"


def test_fully_permuted_mnist(mnist):
    task = permuted_mnist(28, seed=5, base=mnist)
    flat = task.val.images.reshape(-1, 784)
    perm = central_square_permutation(28, seed=5)
    assert torch.equal(flat, mnist.val.images.reshape(-1, 784)[:, perm])
