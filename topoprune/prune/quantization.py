"""Trained quantisation (Han et al. 2016, section 3): each pruned layer's kept weights share the
``2**bits`` centroids of a k-means, then the centroids are fine-tuned; masks do not change.

A centroid's gradient is the sum of its weights' gradients (the paper's eq. 3). Giving every
weight of a cluster that summed gradient makes the optimizer (SGD, momentum, weight decay, Adam:
all elementwise) move the cluster's weights identically, so the weights stay shared without a
separate centroid parameter; after each step they are snapped to one member's value anyway.
``topoprune compress`` then stores the trained codebook exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from topoprune.compress.weight_sharing import CENTROID_INITS, share_weights
from topoprune.prune.allocation import per_layer
from topoprune.prune.method import Context, Method, Stage, TrainConfig, hp
from topoprune.prune.methods import METHODS


@dataclass(frozen=True)
class QuantizationConfig(TrainConfig):
    epochs: int = hp("epochs of centroid fine-tuning (0: k-means only)", 2, low=0)
    conv_bits: int = hp("weight bits of convolutions: 2**bits shared values", 8, low=1, high=16)
    fc_bits: int = hp("weight bits of linear layers: 2**bits shared values", 5, low=1, high=16)
    bits: tuple[int, ...] = hp("weight bits per pruned layer (overrides conv/fc bits)", (),
                               low=1, high=16)  # fmt: skip
    centroid_init: str = hp("k-means initialisation: linear over [min, max] (the paper's best), "
                            "density (quantiles) or random (Forgy)", "linear",
                            choices=CENTROID_INITS)  # fmt: skip
    centroid_gradient: str = hp("a centroid's gradient: the sum of its weights' (the paper's "
                                "eq. 3) or their mean", "sum", choices=("sum", "mean"))  # fmt: skip


@METHODS.register("trained-quantization")
class TrainedQuantization(Method):
    """Weight sharing by k-means on each pruned layer's kept weights, centroids fine-tuned."""

    Config = QuantizationConfig
    paper = "Han et al. 2016, Deep compression (trained quantization)"
    keeps_masks = True

    def __init__(self, config: QuantizationConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        self.layer_bits = (
            {n: int(b) for n, b in per_layer(config.bits, self.names, "bits").items()}
            if config.bits
            else None
        )

    def bits_of(self, name: str, module: nn.Module) -> int:
        if self.layer_bits is not None:
            return self.layer_bits[name]
        return self.config.fc_bits if isinstance(module, nn.Linear) else self.config.conv_bits

    def _share(self, ctx: Context) -> None:
        clusters = {}
        with torch.no_grad():
            for name, module in ctx.pruned_modules():
                flat = module.weight_mask.reshape(-1).nonzero().squeeze(1)
                if flat.numel() == 0:
                    continue  # an emptied layer has nothing to share
                weight = module.weight_orig.view(-1)
                bits = self.bits_of(name, module)
                shared = share_weights(weight[flat].cpu().numpy(), bits,
                                       init=self.config.centroid_init, seed=self.seed)  # fmt: skip
                labels = torch.as_tensor(shared.indices, device=weight.device)
                codebook = torch.as_tensor(shared.codebook).to(weight)
                weight[flat] = codebook[labels]
                counts = torch.bincount(labels, minlength=codebook.numel())
                first = torch.full((codebook.numel(),), -1, dtype=torch.long)
                members = torch.arange(labels.numel(), device=labels.device)
                # first member of each cluster: its value stands for the cluster after each step
                first = first.to(labels.device).scatter_reduce(0, labels, members, "amin",
                                                               include_self=False)  # fmt: skip
                clusters[name] = {"flat": flat, "labels": labels, "counts": counts,
                                  "first": first, "bits": bits,
                                  "kmeans_iterations": shared.iterations}  # fmt: skip
        ctx.state.method_state["clusters"] = clusters

    @staticmethod
    def _on(cluster: dict, device: torch.device) -> dict:
        """The cluster's index tensors on ``device`` (a resumed run loads them on the CPU)."""
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in cluster.items()}

    def _centroid_gradients(self, ctx: Context) -> None:
        clusters = ctx.state.method_state["clusters"]
        for name, module in ctx.pruned_modules():
            grad = module.weight_orig.grad
            if grad is None or name not in clusters:
                continue
            c = self._on(clusters[name], grad.device)
            flat_grad = grad.view(-1)
            total = torch.zeros(c["counts"].numel(), dtype=grad.dtype, device=grad.device)
            total.index_add_(0, c["labels"], flat_grad[c["flat"]])
            if self.config.centroid_gradient == "mean":
                total /= c["counts"].clamp(min=1).to(total)
            flat_grad[c["flat"]] = total[c["labels"]]

    def _snap(self, ctx: Context) -> None:
        clusters = ctx.state.method_state["clusters"]
        with torch.no_grad():
            for name, module in ctx.pruned_modules():
                if name not in clusters:
                    continue
                c = self._on(clusters[name], module.weight_orig.device)
                weight = module.weight_orig.view(-1)
                values = weight[c["flat"]]
                centroids = values[c["first"].clamp(min=0)]
                weight[c["flat"]] = centroids[c["labels"]]

    def stages(self) -> list[Stage]:
        return [self.config.stage("quantized", self.config.epochs, on_start=self._share,
                                  after_backward=self._centroid_gradients,
                                  after_step=self._snap)]  # fmt: skip

    def report(self, state) -> dict:
        clusters = state.method_state.get("clusters", {})
        return {
            "bits": {n: c["bits"] for n, c in clusters.items()},
            "codebook_size": {n: int(c["counts"].numel()) for n, c in clusters.items()},
            "kmeans_iterations": {n: c["kmeans_iterations"] for n, c in clusters.items()},
        }
