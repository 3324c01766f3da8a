"""Physical removal of channels: the compacted model computes what the masked model computed,
with the zeroed filters, their BatchNorm entries and their consumers' input kernels gone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.models import build_model
from topoprune.prune.structure import (
    channel_groups,
    compact,
    remove_channels,
    save_compact,
    zero_channels,
)


def zero_out(module: nn.Module, channels: list[int]) -> None:
    with torch.no_grad():
        module.weight[channels] = 0
        if module.bias is not None:
            module.bias[channels] = 0


def test_lenet5_loses_zeroed_filters_and_units_exactly():
    torch.manual_seed(0)
    model = build_model("lenet5").double().eval()
    zero_out(model[0], [1, 4, 7])  # conv1: 20 -> 17 filters
    zero_out(model[2], list(range(0, 50, 5)))  # conv2: 50 -> 40 filters (flattened into fc1)
    zero_out(model[5], list(range(100)))  # fc1: 500 -> 400 units
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    small = compact(model, x)
    assert (small[0].out_channels, small[2].in_channels) == (17, 17)
    assert (small[2].out_channels, small[5].in_features) == (40, 40 * 16)
    assert (small[5].out_features, small[7].in_features) == (400, 400)
    torch.testing.assert_close(small(x), model(x), rtol=1e-12, atol=1e-12)
    sizes = sum(p.numel() for p in small.parameters()), sum(p.numel() for p in model.parameters())
    assert sizes[0] < 0.75 * sizes[1]


class ResidualDepthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = x + torch.relu(self.pointwise(self.depthwise(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 4), 1))


def test_residual_channels_go_together_through_batchnorm_and_depthwise():
    torch.manual_seed(1)
    model = ResidualDepthwise().double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    (coupled,) = [g for g in channel_groups(model, x) if "stem" in g.producers]
    assert set(coupled.producers) == {"stem", "pointwise"}
    assert coupled.norms == ["bn"] and coupled.passthrough == ["depthwise"]
    assert coupled.consumers == [("pointwise", 1), ("head", 16)] and not coupled.frozen
    zero_out(model.stem, [2, 5])
    zero_out(model.depthwise, [2, 5])  # its bias would otherwise feed the pointwise conv
    zero_out(model.pointwise, [2, 5])
    with torch.no_grad():
        model.bn.bias[[2, 5]] = 0  # beta: a zero channel stays zero through the BatchNorm
    assert zero_channels(model, x) == {0: [0, 1, 3, 4, 6, 7]}
    small = compact(model, x)
    assert small.depthwise.groups == small.depthwise.out_channels == 6
    assert small.bn.num_features == 6 and small.head.in_features == 6 * 16
    torch.testing.assert_close(small(x), model(x), rtol=1e-12, atol=1e-12)


def test_a_channel_kept_alive_by_one_producer_stays():
    model = ResidualDepthwise().double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    zero_out(model.stem, [3])  # the pointwise branch still writes channel 3
    assert zero_channels(model, x) == {}


def test_outputs_concatenations_and_grouped_convs_are_frozen():
    x = torch.rand(2, 1, 8, 8)
    groups = channel_groups(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3, groups=2)), x)
    assert all(g.frozen for g in groups)

    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], dim=1).sum()

    assert all("not understood" in g.frozen for g in channel_groups(Concat(), x))
    last = channel_groups(build_model("lenet300"), torch.rand(2, 1, 28, 28))[-1]
    assert last.frozen == "the model's output"
    with pytest.raises(TopopruneError, match="cannot be pruned: the model's output"):
        remove_channels(build_model("lenet300"), torch.rand(2, 1, 28, 28), {2: [0]})


def test_a_compact_model_loads_with_torch_alone(tmp_path):
    torch.manual_seed(2)
    model = build_model("lenet5").eval()
    zero_out(model[0], [0, 1, 2])
    x = torch.rand(4, 1, 28, 28)
    small = compact(model, x)
    path = save_compact(small, x, tmp_path / "lenet5-small.pt2")
    loaded = torch.export.load(path).module()
    other = torch.rand(7, 1, 28, 28)  # another batch size
    torch.testing.assert_close(loaded(other), small(other))


def test_bad_plans_are_errors():
    model, x = build_model("lenet300"), torch.rand(2, 1, 28, 28)
    with pytest.raises(TopopruneError, match="has 300 channels"):
        remove_channels(model, x, {0: [300]})
    with pytest.raises(TopopruneError, match="at least one channel"):
        remove_channels(model, x, {0: []})


class AddsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        return self.head(torch.flatten(self.conv(x) + x, 1))


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.b(self.b(self.a(x))).sum()


class Offset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 3)

    def forward(self, x):
        return self.b(torch.sigmoid(self.a(x)) + 1).sum()


def test_what_the_trace_cannot_follow_is_frozen():
    x = torch.rand(2, 1, 8, 8)
    assert all(g.frozen for g in channel_groups(AddsInput(), x))  # conv(x) + x: x untracked
    assert all(g.frozen for g in channel_groups(CalledTwice(), x))  # b's widths are shared
    assert all(g.frozen for g in channel_groups(Offset(), x))  # sigmoid and + 1 move zeros


def test_tracing_leaves_batchnorm_statistics_alone():
    model = ResidualDepthwise().train()
    before = model.bn.running_mean.clone(), int(model.bn.num_batches_tracked)
    channel_groups(model, torch.rand(4, 1, 8, 8))
    assert torch.equal(model.bn.running_mean, before[0])
    assert int(model.bn.num_batches_tracked) == before[1] and model.training


def test_a_batchnorm_with_running_statistics_keeps_a_zero_channel_alive():
    model = ResidualDepthwise().double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    for conv in (model.stem, model.depthwise, model.pointwise):
        zero_out(conv, [2])
    with torch.no_grad():
        model.bn.bias[2] = 0
        model.bn.running_mean[2] = 0.5  # eval: beta - gamma mean / sqrt(var) is not zero
    assert zero_channels(model, x) == {}
    with torch.no_grad():
        model.bn.weight[2] = 0
    assert zero_channels(model, x) == {0: [0, 1, 3, 4, 5, 6, 7]}
    torch.testing.assert_close(compact(model, x)(x), model(x), rtol=1e-12, atol=1e-12)


class HandWritten(nn.Module):
    """The usual hand-written CNN: x.view(x.size(0), -1) before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)
        self.fc = nn.Linear(6 * 12 * 12, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(x.view(x.size(0), -1))


def test_a_view_by_the_batch_size_is_a_flatten():
    torch.manual_seed(6)
    model = HandWritten().double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    (group, _) = channel_groups(model, x)
    assert not group.frozen and group.consumers == [("fc", 144)]
    zero_out(model.conv, [0, 5])
    small = compact(model, x)
    assert small.conv.out_channels == 4 and small.fc.in_features == 4 * 144
    torch.testing.assert_close(small(x), model(x), rtol=1e-12, atol=1e-12)
