"""Benchmark: time and peak memory of the second-order pruning criteria on LeNet-300-100, against
magnitude pruning measured in the same run.

    python -m benchmarks.second_order [--examples 1000] [--blocks 16,100,500,2000]
        [--fisher-examples 100,1000,8000] [--memory-limit-gb 20] [--time-limit-s 3600]
        [--threads 0] [--quick] [--out results/benchmarks/second_order.json]

One pruning step of a dense LeNet-300-100 (trained for ``--train-epochs`` epoch of plain SGD on
MNIST inside the benchmark: seconds on an idle machine), all three layers to 90% sparsity each
(per-layer top-k of the criterion, the masks applied and, for OBS and WoodFisher, the survivors
moved), on the same ``--examples`` (OBD, OBS) or m (WoodFisher) MNIST training images:

- ``magnitude`` (the baseline): top-k of ``|w|``; the median of 5 runs in its process (one run
  takes milliseconds), every other method is timed once;
- ``obd``: ``h_kk w_k^2 / 2`` with the Gauss-Newton diagonal, and with Hutchinson's estimate
  (``--hutchinson-samples`` vectors per batch of ``--batch-size``);
- ``obs``: layer-wise OBS, ``layer_inputs`` + ``layer_hessian`` (damp 1e-4) + ``obs_path`` per
  layer (one weight at a time; ``--obs-rows`` limits it to the first rows of each layer, for
  the quick mode);
- ``woodfisher``: for each block size B of ``--blocks`` and m of ``--fisher-examples``
  (per-example gradients, damp 1e-5), the times (``phases``) of the gradients
  (``fisher_gradients``), of the block inverse (``block_fisher_inverse``), and of the scores, the
  masks and the joint OBS update (``obs_scores``, ``obs_block_update``).

Every measurement runs in a fresh child process, forked from a server that has imported torch and
what torch.func imports on its first call (2-3 s of imports that a run pays once: not counted).
Its peak memory (``peak_mb``) is the rise of the child's peak resident set (``VmHWM``, reset just
before the measurement; ``ru_maxrss`` where it cannot be reset) above its resident set then, which
holds the model and the examples; WoodFisher's is also given phase by phase (``phase_peak_mb``).

A WoodFisher configuration whose predicted peak (``predicted_mb``, :func:`woodfisher_memory`)
exceeds ``--memory-limit-gb`` is skipped, as is one whose time, predicted linearly in m from the
same B's largest smaller m, exceeds ``--time-limit-s``; a child still running at that limit is
stopped (0: no limit); each is recorded with its reason. The prediction depends on whether
``fisher_gradients`` returns gradients that carry an autograd graph (then ``block_fisher_inverse``
and the update record one too, about 8 MB per rank-one update): checked at the start and recorded
as ``model.fisher_gradients_keep_autograd_graph``.

Ratios are to magnitude's time in the same run. On a machine whose cores other jobs keep busy, use
``--threads 1``: there, torch's two threads wait for each other and small steps run tens of times
slower.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
import traceback
from multiprocessing import forkserver
from pathlib import Path

import torch
from torch import nn

from topoprune.models import build_model
from topoprune.provenance import provenance
from topoprune.prune.allocation import allocate
from topoprune.prune.curvature import gauss_newton_diagonal, hutchinson_diagonal, layer_inputs
from topoprune.prune.masks import add_masks, apply_masks, masked_modules
from topoprune.prune.saliency import layer_hessian, obd_saliency, obs_path, rows_of
from topoprune.prune.woodfisher import (
    UPDATE_CHUNK_NUMBERS,
    BlockLayout,
    block_fisher_inverse,
    fisher_gradients,
    obs_block_update,
    obs_scores,
)

MODEL = "lenet300"
SPARSITY = 0.9
OBS_DAMP = 1e-4
FISHER_DAMP = 1e-5
MAGNITUDE_RUNS = 5
MB = 2**20
UPDATE_BYTES = 8 * UPDATE_CHUNK_NUMBERS  # the largest chunk obs_block_update copies
# The fork server imports these once; torch._dynamo (with sympy) is what torch.func imports on its
# first call, about 2.5 s of imports that a pruning run pays once and the measurements leave out.
PRELOAD = [
    "torch",
    "torch._dynamo",
    "topoprune.models",
    "topoprune.prune.saliency",
    "topoprune.prune.woodfisher",
]
LAYER_SHAPES = {"1": (300, 784), "3": (100, 300), "5": (10, 100)}  # lenet300's Linear weights

# ---- in the child: the measurements -----------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> tuple[int, str]:
    """The baseline of the peak measurement (bytes) and how the peak will be read: the resident
    set now, with Linux's peak (VmHWM) reset to it; else the peak so far (``ru_maxrss``)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss * 1024, "VmHWM"
    except OSError:
        pass
    return _peak("ru_maxrss"), "ru_maxrss"


def _peak(how: str) -> int:
    if how == "VmHWM":
        return (_status_kib("VmHWM") or 0) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMeter:
    """Peak memory above the resident set at creation, over the whole measurement and, with
    :meth:`mark`, phase by phase."""

    def __init__(self) -> None:
        self.base, self.how = _reset_peak()
        self.highest = 0.0

    def mark(self) -> float:
        """The peak (MB above the base) since the last mark; the next phase starts from here."""
        value = max(0, _peak(self.how) - self.base) / MB
        self.highest = max(self.highest, value)
        if self.how == "VmHWM":
            Path("/proc/self/clear_refs").write_text("5")
        return value


def _batches(images: torch.Tensor, labels: torch.Tensor, size: int) -> list:
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, len(images), size)]


def _prune(model: nn.Module, names: list[str], scores: dict[str, torch.Tensor]) -> None:
    """Keep each layer's top 10% by ``scores`` and install the masks."""
    ones = {n: torch.ones(LAYER_SHAPES[n], dtype=torch.bool) for n in names}
    apply_masks(model, allocate(scores, ones, dict.fromkeys(names, SPARSITY)))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight_orig for n, m in masked_modules(model)}


def run_magnitude(model, names, images, labels, spec, meter) -> dict:
    original = {n: w.detach().clone() for n, w in _weights(model).items()}
    times = []
    for _ in range(MAGNITUDE_RUNS):
        with torch.no_grad():
            for name, w in _weights(model).items():
                w.copy_(original[name])
        start = time.perf_counter()
        _prune(model, names, {n: w.detach().abs() for n, w in _weights(model).items()})
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "runs": times}


def run_obd(model, names, images, labels, spec, meter) -> dict:
    batches = _batches(images[: spec["examples"]], labels[: spec["examples"]], spec["batch_size"])
    start = time.perf_counter()
    if spec["hessian"] == "gauss-newton":
        diagonal = gauss_newton_diagonal(model, names, batches)
    else:
        generator = torch.Generator().manual_seed(0)
        samples = spec["samples"]
        diagonal = hutchinson_diagonal(model, names, batches, samples=samples, generator=generator)
    weights = _weights(model)
    _prune(model, names, {n: obd_saliency(weights[n].detach(), diagonal[n]) for n in names})
    return {"seconds": time.perf_counter() - start}


def run_obs(model, names, images, labels, spec, meter) -> dict:
    batches = _batches(images[: spec["examples"]], labels[: spec["examples"]], spec["batch_size"])
    start = time.perf_counter()
    inputs = layer_inputs(model, names, batches)
    modules = dict(masked_modules(model))
    increase = 0.0
    for name in names:
        module = modules[name]
        weight = rows_of(module.weight_orig.detach())
        rows = min(spec["rows"] or len(weight), len(weight))
        alive = torch.ones(rows, weight.shape[1], dtype=torch.bool)
        hessian = layer_hessian(inputs[name], OBS_DAMP)
        goal = round(SPARSITY * alive.numel())
        step = obs_path(weight[:rows], alive, hessian, [goal])[-1]
        new_weight, mask = weight.clone(), torch.ones_like(weight, dtype=torch.bool)
        new_weight[:rows], mask[:rows] = step["weight"].to(weight.dtype), step["alive"]
        with torch.no_grad():
            module.weight_orig.copy_(new_weight.view_as(module.weight_orig))
        apply_masks(model, {name: mask.view_as(module.weight_mask)})
        increase += step["increase"]
    return {"seconds": time.perf_counter() - start, "predicted_increase": increase}


def run_woodfisher(model, names, images, labels, spec, meter) -> dict:
    m, block = spec["fisher_examples"], spec["block_size"]
    modules = dict(masked_modules(model))
    layout = BlockLayout({n: modules[n].weight_orig.shape for n in names}, block)
    masks = {n: torch.ones(LAYER_SHAPES[n], dtype=torch.bool) for n in names}
    batches = _batches(images[:m], labels[:m], spec["batch_size"])
    start = time.perf_counter()
    grads = fisher_gradients(model, layout, masks, batches, nn.functional.cross_entropy)
    after_gradients = time.perf_counter()
    peaks = {"gradients_mb": meter.mark()}
    inverse = block_fisher_inverse(grads, block, FISHER_DAMP)
    del grads  # as in WoodFisher._curvature: only the inverse outlives the gradients
    after_inverse = time.perf_counter()
    peaks["inverse_mb"] = meter.mark()
    weights = layout.flatten({n: modules[n].weight_orig.detach().double() for n in names})
    kept = allocate(
        layout.unflatten(obs_scores(weights, inverse)), masks, dict.fromkeys(names, SPARSITY)
    )
    removed = layout.flatten({n: masks[n] & ~kept[n] for n in names})
    updated = layout.unflatten(obs_block_update(weights, inverse, removed))
    with torch.no_grad():
        for name in names:
            modules[name].weight_orig.copy_(updated[name].to(torch.float32))
    apply_masks(model, kept)
    end = time.perf_counter()
    peaks["update_mb"] = meter.mark()
    return {
        "seconds": end - start,
        "phase_peak_mb": peaks,
        "phases": {
            "gradients_s": after_gradients - start,
            "inverse_s": after_inverse - after_gradients,
            "update_s": end - after_inverse,
        },
    }


RUNNERS = {
    "magnitude": run_magnitude,
    "obd": run_obd,
    "obs": run_obs,
    "woodfisher": run_woodfisher,
}


def child(spec: dict, data_path: str, result_path: str) -> None:
    """One measurement in this (fresh) process; the result, or the error, as JSON."""
    try:
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        if spec["method"] == "graph-check":  # in a child: the fork server has torch.func loaded
            Path(result_path).write_text(json.dumps({"graph": gradients_keep_graph()}))
            return
        blob = torch.load(data_path)
        model = build_model(MODEL)
        model.load_state_dict(blob["state"])
        model = add_masks(model)
        names = [n for n, _ in masked_modules(model)]
        images, labels = blob["images"], blob["labels"]
        del blob
        meter = PeakMeter()
        result = RUNNERS[spec["method"]](model, names, images, labels, spec, meter)
        meter.mark()
        result["peak_mb"] = meter.highest
        result["peak_read_from"] = meter.how
        result["kept_fraction"] = {n: float(m.weight_mask.mean()) for n, m in masked_modules(model)}
    except Exception:  # reported to the parent, which fails the run
        result = {"error": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(result))


# ---- in the parent ----------------------------------------------------------------------------


def padded_size(block: int) -> int:
    """Weights of the WoodFisher layout: each layer padded to a multiple of ``block``."""
    return sum(math.ceil(r * c / block) * block for r, c in LAYER_SHAPES.values())


def woodfisher_memory(block: int, m: int, batch_size: int, graph: bool) -> int:
    """Predicted peak bytes above the model and data of one WoodFisher measurement.

    ``fisher_gradients`` keeps the m flattened float32 gradients (``G = 4 m P`` bytes) and
    concatenates them at the end (``2 G``), on top of one batch's per-example gradients (about
    three copies); the inverse (``I = 8 P B``) is built while the gradients are held; the update
    holds the inverse and about four chunks of at most ``UPDATE_CHUNK_NUMBERS`` float64 numbers.
    With ``graph`` (the gradients carry an autograd graph, see :func:`gradients_keep_graph`),
    ``block_fisher_inverse`` records one, about four float64 P-vectors per update (``32 m P``;
    measured: 27-30), which stays alive with the inverse, and the update's chunks stay alive in
    the graph too (about four copies of the inverse in all, measured 3.9).
    """
    size = padded_size(block)
    grads, inverse = 4 * m * size, 8 * size * block
    batch = 3 * 4 * min(batch_size, m) * size
    if not graph:
        return max(2 * grads + batch, grads + inverse, inverse + 4 * min(inverse, UPDATE_BYTES))
    chain = 32 * m * size
    return max(2 * grads + batch, grads + inverse + chain, inverse + chain + 4 * inverse)


def gradients_keep_graph() -> bool:
    """Whether ``fisher_gradients`` returns gradients that require grad (an autograd graph through
    the biases, which then follows every operation on them): checked on one example."""
    model = add_masks(build_model(MODEL))
    names = list(LAYER_SHAPES)
    layout = BlockLayout({n: model.get_submodule(n).weight_orig.shape for n in names}, 16)
    masks = {n: torch.ones(LAYER_SHAPES[n], dtype=torch.bool) for n in names}
    batch = [(torch.rand(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))]
    return fisher_gradients(model, layout, masks, batch, nn.functional.cross_entropy).requires_grad


def prepare(args, folder: Path) -> tuple[Path, dict]:
    """The (trained) model and the examples every measurement uses, saved for the children."""
    torch.manual_seed(args.seed)
    model = build_model(MODEL)
    needed = max([args.examples, *args.fisher_examples])
    info: dict = {"name": MODEL, "weights": sum(r * c for r, c in LAYER_SHAPES.values())}
    generator = torch.Generator().manual_seed(args.seed)
    if args.data == "random":
        images = torch.rand(needed, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (needed,), generator=generator)
        info["data"] = "random inputs of MNIST shape, random labels"
    else:
        from topoprune.data import load_dataset

        mnist = load_dataset("mnist")
        train = mnist.train
        if needed > len(train):
            raise SystemExit(
                f"{needed} examples asked for; MNIST's training split has {len(train)}"
            )
        info["data"] = f"MNIST training split ({len(train)} images), {needed} drawn for scoring"
        start = time.perf_counter()
        sgd = torch.optim.SGD(model.parameters(), lr=args.lr)
        for _ in range(args.train_epochs):
            order = torch.randperm(len(train), generator=generator)
            for i in range(0, len(order), args.batch_size):
                index = order[i : i + args.batch_size]
                sgd.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(train.images[index]), train.labels[index])
                loss.backward()
                sgd.step()
        info["train_seconds"] = time.perf_counter() - start
        with torch.no_grad():
            predicted = model(mnist.test.images).argmax(1)
        info["test_accuracy"] = float((predicted == mnist.test.labels).float().mean())
        chosen = torch.randperm(len(train), generator=generator)[:needed]
        images, labels = train.images[chosen].clone(), train.labels[chosen].clone()
    info["trained"] = (
        f"{args.train_epochs} epoch(s) of plain SGD, lr {args.lr}, batch {args.batch_size}"
        if args.data == "mnist" and args.train_epochs
        else "no (random initialisation)"
    )
    path = folder / "inputs.pt"
    torch.save({"state": model.state_dict(), "images": images, "labels": labels}, path)
    return path, info


def measure(context, spec: dict, data_path: Path, folder: Path, limit: float | None) -> dict:
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    process = context.Process(target=child, args=(spec, str(data_path), str(result_path)))
    process.start()
    process.join(limit)
    if process.is_alive():
        process.kill()
        process.join()
        return {"skipped": True, "reason": f"stopped at --time-limit-s {limit:g}"}
    if not result_path.exists():
        reason = f"the child exited with code {process.exitcode}"
        if process.exitcode is not None and process.exitcode < 0:  # a signal: the OOM killer's?
            return {"skipped": True, "reason": f"{reason} (killed: out of memory?)"}
        return {"skipped": True, "error": reason}
    result = json.loads(result_path.read_text())
    result["skipped"] = "error" in result
    return result


def plan(args) -> list[dict]:
    common = {"examples": args.examples, "batch_size": args.batch_size}
    specs = [
        {"method": "magnitude", "setting": "top-k |w| per layer"},
        {
            "method": "obd",
            "setting": f"gauss-newton, {args.examples} examples",
            "hessian": "gauss-newton",
            **common,
        },
        {
            "method": "obd",
            "setting": f"hutchinson {args.hutchinson_samples} samples/batch, "
            f"{args.examples} examples",
            "hessian": "hutchinson",
            "samples": args.hutchinson_samples,
            **common,
        },
        {
            "method": "obs",
            "setting": f"layer-wise, {args.examples} examples"
            + (f", first {args.obs_rows} row(s) of each layer" if args.obs_rows else ""),
            "rows": args.obs_rows,
            **common,
        },
    ]
    for block in args.blocks:
        for m in sorted(args.fisher_examples):
            specs.append(
                {
                    "method": "woodfisher",
                    "setting": f"B={block}, m={m}",
                    "block_size": block,
                    "fisher_examples": m,
                    "batch_size": args.batch_size,
                }
            )
    return specs


def predicted_time(spec: dict, done: list[dict]) -> float | None:
    """WoodFisher's time from the same block size's largest smaller m measured: gradients and
    inverse linear in m, the update independent of it."""
    earlier = [
        r
        for r in done
        if r["method"] == "woodfisher"
        and not r["skipped"]
        and r["block_size"] == spec["block_size"]
        and r["fisher_examples"] < spec["fisher_examples"]
    ]
    if not earlier:
        return None
    base = max(earlier, key=lambda r: r["fisher_examples"])
    scale = spec["fisher_examples"] / base["fisher_examples"]
    phases = base["phases"]
    return (phases["gradients_s"] + phases["inverse_s"]) * scale + phases["update_s"]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


QUICK = {
    "examples": 32,
    "blocks": [16, 100],
    "fisher_examples": [32],
    "hutchinson_samples": 2,
    "obs_rows": 1,
    "data": "random",
    "train_epochs": 0,
    "threads": 1,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples for OBD and OBS")
    parser.add_argument("--blocks", type=_ints, default=[16, 100, 500, 2000])
    parser.add_argument("--fisher-examples", type=_ints, default=[100, 1000, 8000])
    parser.add_argument("--hutchinson-samples", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--obs-rows", type=int, default=0, help="OBS on the first rows only")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0, help="GiB")
    parser.add_argument("--time-limit-s", type=float, default=3600.0, help="0: none")
    parser.add_argument("--data", choices=("mnist", "random"), default="mnist")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads in every process (0: torch's default); 1 on a machine others load",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny defaults (explicit flags still win): "
        + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/second_order.json"))
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()  # its imports overlap the preparation below
    except ValueError:  # no forkserver on this platform
        context = mp.get_context("spawn")
    limit = args.time_limit_s or None
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_path, model_info = prepare(args, folder)
        check = measure(
            context, {"method": "graph-check", "threads": args.threads}, data_path, folder, None
        )
        if "error" in check:
            raise SystemExit(f"checking fisher_gradients failed:\n{check['error']}")
        graph = check["graph"]
        model_info["fisher_gradients_keep_autograd_graph"] = graph
        print(f"{'method':<11} {'setting':<52} {'seconds':>9} {'x magn.':>9} {'peak MB':>9}")
        for spec in plan(args):
            row = {k: v for k, v in spec.items() if k not in ("examples", "batch_size")}
            row.update(method=spec["method"], setting=spec["setting"])
            if spec["method"] == "woodfisher":
                need = woodfisher_memory(
                    spec["block_size"], spec["fisher_examples"], args.batch_size, graph
                )
                row["predicted_mb"] = need / MB
                guess = predicted_time(spec, rows)
                if need > args.memory_limit_gb * 2**30:
                    row.update(
                        skipped=True, reason=f"predicted memory > {args.memory_limit_gb:g} GiB"
                    )
                elif limit is not None and guess is not None and guess > limit:
                    row.update(
                        skipped=True,
                        reason=f"predicted time > --time-limit-s {limit:g}",
                        predicted_seconds=guess,
                    )
            if not row.get("skipped"):
                row.update(
                    measure(context, {**spec, "threads": args.threads}, data_path, folder, limit)
                )
            rows.append(row)
            _print_row(row, rows[0])
    magnitude = rows[0].get("seconds")
    for row in rows:
        seconds = row.get("seconds")
        row.setdefault("seconds", None)
        row.setdefault("peak_mb", None)
        row.setdefault("skipped", False)
        row["ratio_to_magnitude"] = seconds / magnitude if seconds and magnitude else None
    result = {
        "benchmark": "second-order pruning criteria on LeNet-300-100, against magnitude",
        "settings": {
            "sparsity_per_layer": SPARSITY,
            "examples": args.examples,
            "batch_size": args.batch_size,
            "hutchinson_samples": args.hutchinson_samples,
            "blocks": args.blocks,
            "fisher_examples": args.fisher_examples,
            "obs_damp": OBS_DAMP,
            "fisher_damp": FISHER_DAMP,
            "obs_rows": args.obs_rows or "all",
            "memory_limit_gb": args.memory_limit_gb,
            "time_limit_s": args.time_limit_s,
            "quick": args.quick,
            "threads": args.threads or "torch default",
            "data": args.data,
            "train_epochs": args.train_epochs,
            "magnitude_runs": MAGNITUDE_RUNS,
            "peak_memory": "rise of the child's peak resident set (VmHWM reset before the "
            "measurement) above its resident set then (model and examples loaded)",
        },
        "model": model_info,
        "rows": rows,
        "threads": torch.get_num_threads(),
        "provenance": provenance(("topoprune", "torch")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    errors = [r for r in rows if "error" in r]
    if errors:
        for row in errors:
            print(f"{row['method']} ({row['setting']}) failed:\n{row['error']}", file=sys.stderr)
        raise SystemExit(1)


def _print_row(row: dict, first: dict) -> None:
    if row.get("skipped"):
        note = row.get("reason") or row.get("error", "").strip().splitlines()[-1]
        extra = f", predicted {row['predicted_mb']:.0f} MB" if "predicted_mb" in row else ""
        if "predicted_seconds" in row:
            extra += f" and {row['predicted_seconds']:.0f} s"
        print(f"{row['method']:<11} {row['setting']:<52} skipped: {note}{extra}")
        return
    ratio = row["seconds"] / first["seconds"] if first.get("seconds") else float("nan")
    line = (
        f"{row['method']:<11} {row['setting']:<52} {row['seconds']:>9.3f} {ratio:>9.0f} "
        f"{row['peak_mb']:>9.1f}"
    )
    if "phases" in row:
        p = row["phases"]
        line += (
            f"  (gradients {p['gradients_s']:.2f} s, inverse {p['inverse_s']:.2f} s, "
            f"update {p['update_s']:.2f} s; predicted {row['predicted_mb']:.0f} MB)"
        )
    print(line, flush=True)


if __name__ == "__main__":
    main()
