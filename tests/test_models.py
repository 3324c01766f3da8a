import pytest
import torch
from torch import nn

from topoprune.errors import UnknownNameError
from topoprune.models import MODELS, build_model
from topoprune.topology import network_from_module

# weights of the weight layers (no biases) and the node-layer sizes in the channel view
EXPECTED = {
    "lenet300": (266_200, [784, 300, 100, 10]),
    "lenet5": (430_500, [1, 20, 50, 500, 10]),
    "mlp40": (784 * 40 + 40 * 20 + 20 * 10, [784, 40, 20, 10]),
    "mlp1024": (784 * 1024 + 1024 * 1024 + 10240, [784, 1024, 1024, 10]),
    "mlp3x1000": (784 * 1000 + 2 * 1000 * 1000 + 10000, [784, 1000, 1000, 1000, 10]),
    "cnn_mnist": (32 * 25 + 32 * 32 * 25 + 512 * 256 + 2560, [1, 32, 32, 256, 10]),
    "cnn_cifar": (
        3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9 + 2304 * 512 + 5120,
        [3, 32, 32, 64, 64, 512, 10],
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_architectures(name):
    model = build_model(name)
    spec = MODELS[name]
    out = model(torch.zeros(2, *spec.input_shape))
    assert out.shape == (2, 10)
    net = network_from_module(model)
    weights, sizes = EXPECTED[name]
    assert net.size == weights
    assert all(net.chain)
    assert [n.size for n in net.node_layers("channel")] == sizes


def test_lenet5_is_the_caffe_variant():
    model = build_model("lenet5")
    params = sum(p.numel() for p in model.parameters())
    assert params == 431_080  # 430,500 weights + 580 biases ("431K")
    assert sum(isinstance(m, nn.ReLU) for m in model) == 1


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid: cnn_cifar, cnn_mnist, cnn_mnist_bn, lenet"):
        build_model("resnet")
