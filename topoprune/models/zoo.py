"""The registered architectures.

- ``lenet300``: 784-300-100-10 MLP (LeCun et al. 1998; Han et al. 2015).
- ``lenet5``: the Caffe LeNet-5, 20C5-MP2-50C5-MP2-500FC-10 (430,500 weights; Caffe has no
  nonlinearity after the convolutions, one ReLU after the 500-unit layer).
- ``mlp40``: 784-40-20-10 MLP without biases (the MNIST network of WoodFisher, Singh and
  Alistarh 2020).
- ``mlp1024``: 784-1024-1024-10 (Lu & Kwok 2018).
- ``cnn_mnist``: 32C5-MP2-32C5-MP2-256FC-10, unpadded convolutions (Lu & Kwok 2018).
- ``cnn_cifar``: 32C3-32C3-MP2-64C3-64C3-MP2-512FC-10 laid out as the classic Keras CIFAR-10
  network: the first convolution of each pair is padded ("same"), the second is not, so the
  classifier sees 64 x 6 x 6 features (Lu & Kwok 2018 do not state the padding).
- ``lenet300_prelu``: LeNet-300-100 with a (single-slope) PReLU after each hidden layer, for
  layer folding.
- ``lenet5_bn``, ``cnn_mnist_bn``: the same with a BatchNorm (and a ReLU) after every
  convolution, the models of network slimming (Liu et al. 2017) on MNIST-sized data.

The models above are ``nn.Sequential``; other modules register here from their own files with
:func:`_register` (``lstm_mnist``: :mod:`topoprune.models.recurrent`, a row-by-row LSTM whose
recurrence does not chain as a feed-forward network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from topoprune.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder and the input it expects."""

    name: str
    build: Callable[[int], nn.Module]
    input_shape: tuple[int, int, int]
    description: str


MODELS: Registry[ModelSpec] = Registry("model")


def _register(name: str, input_shape: tuple[int, int, int], description: str):
    def decorate(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        MODELS.register(name)(ModelSpec(name, build, input_shape, description))
        return build

    return decorate


@_register("lenet300", (1, 28, 28), "784-300-100-10 MLP")
def lenet300(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )  # fmt: skip


@_register("lenet5", (1, 28, 28), "Caffe LeNet-5: 20C5-MP2-50C5-MP2-500FC-10")
def lenet5(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500), nn.ReLU(),
        nn.Linear(500, num_classes),
    )  # fmt: skip


@_register("mlp40", (1, 28, 28), "784-40-20-10 MLP without biases (WoodFisher's MNIST MLP)")
def mlp40(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 40, bias=False), nn.ReLU(),
        nn.Linear(40, 20, bias=False), nn.ReLU(),
        nn.Linear(20, num_classes, bias=False),
    )  # fmt: skip


@_register("mlp1024", (1, 28, 28), "784-1024-1024-10 MLP")
def mlp1024(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 1024), nn.ReLU(),
        nn.Linear(1024, 1024), nn.ReLU(),
        nn.Linear(1024, num_classes),
    )  # fmt: skip


@_register("mlp3x1000", (1, 28, 28), "784-1000-1000-1000-10 MLP (SET's Fashion-MNIST MLP, ReLU)")
def mlp3x1000(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 1000), nn.ReLU(),
        nn.Linear(1000, 1000), nn.ReLU(),
        nn.Linear(1000, 1000), nn.ReLU(),
        nn.Linear(1000, num_classes),
    )  # fmt: skip


@_register("cnn_mnist", (1, 28, 28), "32C5-MP2-32C5-MP2-256FC-10")
def cnn_mnist(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    )  # fmt: skip


@_register("lenet300_prelu", (1, 28, 28), "784-300-100-10 MLP with PReLU (for layer folding)")
def lenet300_prelu(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300), nn.PReLU(),
        nn.Linear(300, 100), nn.PReLU(),
        nn.Linear(100, num_classes),
    )  # fmt: skip


@_register("lenet5_bn", (1, 28, 28), "LeNet-5 with BatchNorm: 20C5-BN-MP2-50C5-BN-MP2-500FC-10")
def lenet5_bn(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.BatchNorm2d(20), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.BatchNorm2d(50), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500), nn.ReLU(),
        nn.Linear(500, num_classes),
    )  # fmt: skip


@_register("cnn_mnist_bn", (1, 28, 28), "32C5-BN-MP2-32C5-BN-MP2-256FC-10")
def cnn_mnist_bn(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    )  # fmt: skip


@_register("cnn_cifar", (3, 32, 32), "32C3-32C3-MP2-64C3-64C3-MP2-512FC-10")
def cnn_cifar(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 6 * 6, 512), nn.ReLU(),
        nn.Linear(512, num_classes),
    )  # fmt: skip


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised model by registered name (unknown names list the valid ones).

    Examples
    --------
    >>> model = build_model("lenet300")
    >>> sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    266200
    """
    return MODELS[name].build(num_classes)
