"""Real MNIST and Fashion-MNIST, as the loaders return them."""

import numpy as np
import pytest
import torch

from topoprune.data import load_dataset, normalized, status
from topoprune.data.sources import FASHION_MNIST, idx_status

# Label counts of the standard MNIST release (train file, then test file).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_in_cache_verifies():
    row = status("mnist")
    assert row["present"] and row["verified"], row


def test_mnist_splits_shapes_and_range(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (55000, 5000, 10000)
    assert mnist.train.images.shape == (55000, 1, 28, 28)
    assert mnist.train.images.dtype == torch.float32
    assert mnist.train.labels.dtype == torch.int64
    for split in (mnist.train, mnist.val, mnist.test):
        assert float(split.images.min()) == 0.0 and float(split.images.max()) == 1.0
    assert int(mnist.train.labels[0]) == 5  # the famous first digit


def test_mnist_label_counts_are_the_standard_release(mnist):
    train = torch.cat([mnist.train.labels, mnist.val.labels])
    assert torch.bincount(train).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test.labels).tolist() == MNIST_TEST_COUNTS


def test_validation_split_is_fixed_and_configurable(mnist):
    other = load_dataset("mnist", val_size=10000)
    assert len(other.train) == 50000 and len(other.val) == 10000
    # the last 5,000 training images are the default validation set, in both
    assert torch.equal(other.val.images[-5000:], mnist.val.images)


def test_normalisation_uses_training_statistics(mnist):
    assert mnist.pixel_mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert mnist.pixel_std[0] == pytest.approx(0.3081, abs=1e-4)
    norm = normalized(mnist)
    assert norm.normalized
    assert float(norm.train.images.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(norm.train.images.std()) == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(norm.train.labels, mnist.train.labels)


def test_bad_val_size_is_an_error(mnist):
    from topoprune.errors import DataError

    with pytest.raises(DataError, match="val_size"):
        load_dataset("mnist", val_size=60000)


def test_unknown_dataset_lists_the_valid_ones():
    from topoprune.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="valid: cifar10, fashion-mnist, mnist"):
        load_dataset("mnsit")


needs_fashion = pytest.mark.skipif(
    not (idx_status(FASHION_MNIST, verify=False)["present"]
         or any(__import__("os").path.isdir(d) for d in FASHION_MNIST.system_dirs)),
    reason="Fashion-MNIST absent: install the Debian package dataset-fashion-mnist "
    "(make does it as root) or fetch it with --data-dir",
)  # fmt: skip


@needs_fashion
def test_fashion_mnist_loads_and_differs_from_mnist(mnist):
    fashion = load_dataset("fashion-mnist")
    assert fashion.train.images.shape == mnist.train.images.shape
    assert fashion.classes[9] == "Ankle boot"
    counts = torch.bincount(torch.cat([fashion.train.labels, fashion.val.labels]))
    assert counts.tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert not torch.equal(fashion.test.images[:10], mnist.test.images[:10])
    assert np.isclose(fashion.pixel_mean[0], 0.286, atol=2e-3)
