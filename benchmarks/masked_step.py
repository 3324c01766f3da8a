"""Benchmark: cost of a masked training step against the same dense model's, in one run.

    python -m benchmarks.masked_step [--steps 50] [--out results/benchmarks/masked_step.json]

Three steps on the same batches, 90% of every layer pruned:

- ``dense``: forward, loss read back (the engine's divergence check), backward, SGD step;
- ``v1``: the first engine's masked step (the weight behind a forward pre-hook, pruned weights
  zeroed after each step);
- ``v2``: the current engine's step, :func:`topoprune.train.engine.train_step` (v1 plus pruned
  gradients zeroed before the step, which keeps momentum and Adam moments at zero).

Targets (issues 5 and 13): v2 costs at most 15% more than dense and no more than v1. Each variant
is timed over ``--steps`` steps in each of ``--repeats`` rounds after a warm-up round, the variants
interleaved within a round; an overhead is the median over rounds of the round's time ratio (the
``*_ms`` columns are best rounds).
Step times of small models vary by several percent between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from topoprune.models import MODELS, build_model
from topoprune.provenance import provenance
from topoprune.prune.masks import add_masks, apply_masks, enforce_masks
from topoprune.prune.method import Context, Stage, TrainingState
from topoprune.train.engine import train_step

VARIANTS = ("dense", "v1", "v2")


def _v1_round(model, optimizer, images, labels, masked: bool = True) -> None:
    """The first engine's step (its loss read back for the divergence check, as the engine
    does); ``masked=False`` is the same step on the dense model."""
    for i in range(len(images)):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images[i]), labels[i])
        if not math.isfinite(loss.item()):
            raise FloatingPointError("the loss diverged")
        loss.backward()
        optimizer.step()
        if masked:
            enforce_masks(model)


def _v2_round(ctx: Context, images, labels) -> None:
    for i in range(len(images)):
        train_step(ctx, images[i], labels[i])


def _pruned(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = add_masks(build_model(name))
    generator = torch.Generator().manual_seed(1)
    masks = {
        n: torch.rand(m.weight_mask.shape, generator=generator) < 0.1
        for n, m in model.named_modules()
        if hasattr(m, "weight_mask")
    }
    apply_masks(model, masks)
    return model


def time_variants(name: str, images, labels, repeats: int) -> dict[str, list[float]]:
    """Seconds per step of each variant in every timed round (the rounds interleave variants, so
    round-by-round ratios cancel the machine's drift)."""
    torch.manual_seed(0)
    models = {"dense": build_model(name), "v1": _pruned(name), "v2": _pruned(name)}
    optimizers = {
        k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        for k, m in models.items()
    }
    stage = Stage("bench", 1, 0.01, 5e-4)
    ctx = Context(
        models["v2"],
        TrainingState(),
        stage,
        0,
        "cpu",
        nn.functional.cross_entropy,
        optimizers["v2"],
    )
    rounds = {
        "dense": lambda: _v1_round(models["dense"], optimizers["dense"], images, labels, False),
        "v1": lambda: _v1_round(models["v1"], optimizers["v1"], images, labels),
        "v2": lambda: _v2_round(ctx, images, labels),
    }
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_index in range(repeats + 1):  # round 0 warms up
        for variant in VARIANTS:
            start = time.perf_counter()
            rounds[variant]()
            if round_index:
                times[variant].append((time.perf_counter() - start) / len(images))
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a's time over b's, minus 1 (the overhead of a against b)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True)) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet300,lenet5,mlp1024,cnn_mnist")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/masked_step.json"))
    args = parser.parse_args()
    rows = {}
    for name in args.models.split(","):
        shape = MODELS[name].input_shape
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(args.steps, args.batch_size, *shape, generator=generator)
        labels = torch.randint(0, 10, (args.steps, args.batch_size), generator=generator)
        times = time_variants(name, images, labels, args.repeats)
        best = {k: min(v) for k, v in times.items()}
        rows[name] = {
            **{f"{k}_ms": v * 1e3 for k, v in best.items()},
            "v1_overhead": median_ratio(times["v1"], times["dense"]),
            "v2_overhead": median_ratio(times["v2"], times["dense"]),
            "v2_vs_v1": median_ratio(times["v2"], times["v1"]),
        }
        print(
            f"{name}: dense {best['dense'] * 1e3:.2f} ms/step, v1 masked {best['v1'] * 1e3:.2f} "
            f"({100 * rows[name]['v1_overhead']:+.1f}%), v2 masked {best['v2'] * 1e3:.2f} "
            f"({100 * rows[name]['v2_overhead']:+.1f}%; {100 * rows[name]['v2_vs_v1']:+.1f}% "
            "against v1)"
        )
    result = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "kept_fraction": 0.1,
        "models": rows,
        "threads": torch.get_num_threads(),
        "provenance": provenance(("topoprune", "torch")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
