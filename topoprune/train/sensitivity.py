"""Per-layer sensitivity analysis: how the error grows as one layer alone is pruned.

Han et al. (2015) chose each layer's pruning threshold from such curves (their Figure 5, "pruning
sensitivity"); Distiller and SparseML offer the same analysis. For every pruned layer on its own,
and for every sparsity of a grid, the layer keeps its highest-scoring surviving weights (magnitude
by default, or the scores of any registered score-based method), the error is measured without
retraining, and the layer's weights and mask are put back exactly. :func:`sparsities_for_error`
turns the curves into per-layer sparsities for a target error; :func:`sensitivity_run` is the
``topoprune sensitivity`` command's work on a zoo model's training checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from topoprune.data import ImageDataset, load_dataset
from topoprune.data.cache import write_json_atomic
from topoprune.data.images import Split
from topoprune.errors import TopopruneError
from topoprune.io.checkpoint import is_topoprune_checkpoint
from topoprune.io.torch_file import load_torch_object
from topoprune.models import MODELS, build_model
from topoprune.prune.allocation import keep_largest
from topoprune.prune.masks import add_masks, apply_masks, masked_modules, weight_modules
from topoprune.prune.method import Context, Stage, TrainingState, select_layers
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreMethod
from topoprune.train.data import training_batches
from topoprune.train.optim import error_rate, evaluate
from topoprune.train.run import load_trained_state

__all__ = [
    "DEFAULT_SPARSITIES",
    "layer_sensitivity",
    "load_zoo_checkpoint",
    "plot_sensitivity",
    "render_table",
    "sensitivity_run",
    "sparsities_for_error",
    "write_csv",
]

DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
SCORING_BATCH = 256  # examples per batch drawn for a score method
TOLERANCE = 1e-9  # errors are fractions of examples; this absorbs float rounding of the limit


def score_methods() -> list[str]:
    """Names of the registered score-based methods (those ``score`` can name)."""
    return [name for name in METHODS.names() if issubclass(METHODS[name], ScoreMethod)]


def _check_sparsities(sparsities: Iterable[float]) -> list[float]:
    values = []
    for value in sparsities:
        value = float(value)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise TopopruneError(f"sparsities must be in [0, 1], got {value:g}")
        values.append(value)
    return sorted(set(values))


@contextlib.contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Put every parameter and buffer, every gradient, the train/eval flags, the gradient mode
    of the masked layers and their ``weight`` views back as they were, bit for bit, when the
    block ends."""
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = [
        (p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()
    ]
    flags = [(m, m.training, getattr(m, "straight_through", None)) for m in model.modules()]
    # the masked forward's ``weight`` attribute (a view of ``weight_orig``), the object itself
    views = [(m, vars(m)["weight"]) for _, m in masked_modules(model) if "weight" in vars(m)]
    try:
        yield
    finally:
        with torch.no_grad():
            for key, live in model.state_dict(keep_vars=True).items():
                live.copy_(saved[key])
            for param, grad, value in grads:
                param.grad = grad
                if grad is not None:
                    grad.copy_(value)
        for module, training, straight in flags:
            module.training = training
            if straight is not None:
                module.straight_through = straight
        for module, view in views:
            vars(module)["weight"] = view


def _evaluator(split: Any, loss_fn: Callable, device: str) -> Callable[[nn.Module], float]:
    if isinstance(split, ImageDataset):
        raise TopopruneError("give one split of the data set (e.g. dataset.val), not all of it")
    if isinstance(split, Split):
        if len(split) == 0:
            raise TopopruneError("the evaluation split is empty")
        return lambda model: error_rate(model, split, device)
    if isinstance(split, Iterator):
        raise TopopruneError(
            "the evaluation data must be re-iterable (a Split, a DataLoader or a list of "
            "batches), not a one-shot iterator"
        )

    def error(model: nn.Module) -> float:
        result = evaluate(model, split, loss_fn, device)
        if "error" not in result:
            raise TopopruneError(
                "the evaluation batches give no error rate: outputs must be (N, C) class scores "
                "and targets class indices"
            )
        return result["error"]

    return error


def _scores(
    model: nn.Module,
    score: str,
    *,
    scoring_batches: Any,
    scoring_examples: int | None,
    score_config: Mapping[str, Any] | None,
    loss_fn: Callable,
    device: str,
    seed: int,
) -> dict[str, torch.Tensor]:
    """One score per weight of every masked layer from a registered score-based method, computed
    on the model as given (no training state: a fresh method, step 0)."""
    method_cls = METHODS[score]  # an unknown name lists the valid ones
    if not issubclass(method_cls, ScoreMethod):
        raise TopopruneError(
            f"method {score!r} does not score weights (it prunes while training); score with "
            f"one of: {', '.join(score_methods())}"
        )
    options = dict(score_config or {})
    fields = {f.name for f in dataclasses.fields(method_cls.Config)}
    if scoring_examples is not None:
        if "scoring_examples" not in fields:
            raise TopopruneError(
                f"score {score!r} draws no training examples: scoring examples do not apply"
            )
        options["scoring_examples"] = scoring_examples
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TopopruneError(
            f"score {score!r} has no hyper-parameter {', '.join(unknown)}; it has "
            f"{', '.join(sorted(fields))}"
        )
    names = [name for name, _ in masked_modules(model)]
    method = method_cls(method_cls.Config(**options), names, seed)
    if scoring_batches is None:

        def draw(examples: int, step: int) -> Iterator:
            raise TopopruneError(
                "it draws training examples; give the training data (scoring_batches)"
            )
    else:
        source = training_batches(scoring_batches, SCORING_BATCH, device)

        def draw(examples: int, step: int) -> Iterator:
            return source.draw(examples, seed * 1_000_003 + step)  # as the training engine

    ctx = Context(
        model,
        TrainingState(),
        Stage("sensitivity", 0, 0.0),
        seed,
        device,
        loss_fn,
        draw_batches=draw,
    )
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # global draws: from the seed, then undone
        torch.manual_seed(seed)
        try:
            scores = method.scores(ctx)
        except TopopruneError as exc:
            raise TopopruneError(f"score {score!r}: {exc}") from exc
        except (AttributeError, KeyError, TypeError, NotImplementedError) as exc:
            raise TopopruneError(
                f"score {score!r} cannot be computed from a trained model alone: its scores "
                f"need what the method gathers while it trains ({type(exc).__name__}: {exc})"
            ) from exc
    shapes = {name: m.weight_mask.shape for name, m in masked_modules(model)}
    for name, shape in shapes.items():
        value = scores.get(name) if isinstance(scores, Mapping) else None
        if not isinstance(value, torch.Tensor) or value.shape != shape:
            found = "none" if value is None else tuple(getattr(value, "shape", ()))
            raise TopopruneError(
                f"score {score!r} gave no scores of shape {tuple(shape)} for layer {name} "
                f"(found {found})"
            )
    return {name: scores[name].detach() for name in shapes}


def layer_sensitivity(
    model: nn.Module,
    split: Any,
    sparsities: Sequence[float],
    *,
    score: str = "magnitude",
    scoring_batches: Any = None,
    scoring_examples: int | None = None,
    score_config: Mapping[str, Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] = nn.functional.cross_entropy,
    device: str = "cpu",
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> list[dict]:
    """The error as each pruned layer alone is pruned further, one sparsity at a time.

    Parameters
    ----------
    model : nn.Module
        A model with masks (:func:`~topoprune.prune.masks.add_masks`), on ``device``. It is left
        exactly as given: weights, masks, buffers, gradients, train/eval flags.
    split : Split or iterable
        Where the error is measured: an in-memory :class:`~topoprune.data.images.Split` or any
        re-iterable of ``(inputs, targets)`` batches with class-index targets.
    sparsities : sequence of float
        Sparsities in [0, 1] of the whole layer, tested in increasing order (duplicates once).
        A layer keeps ``round(size x (1 - sparsity))`` weights, or all its surviving weights when
        it already has fewer (a sparsity below its current one shows the current state).
    score : str
        ``magnitude`` or any registered score-based method (a
        :class:`~topoprune.prune.scoring.ScoreMethod`); its scores are computed once, on the
        model as given, and each layer keeps its highest-scoring surviving weights. A method
        whose scores need what it gathers while training cannot be used (an error says so).
    scoring_batches : Split, ImageDataset or iterable, optional
        Training data for scores that need examples (drawn from ``seed``, as the training engine
        draws ``Context.scoring_batches``); magnitude needs none.
    scoring_examples : int, optional
        The method's ``scoring_examples`` hyper-parameter, when it has one.
    score_config : mapping, optional
        Further hyper-parameters of the score method's ``Config``.
    loss_fn : callable
        The loss the score method sees (and the evaluation of non-``Split`` batches).
    device : str
        Where data is sent (the model must already be there).
    layers : sequence of str, optional
        Globs selecting the masked layers to analyse (default: all).
    seed : int
        Seeds the scoring examples and any random draw of a score method.

    Returns
    -------
    list of dict
        ``{"layer", "sparsity", "kept", "error"}`` rows, layer by layer in model order: first the
        baseline (the layer as it is: its current sparsity and surviving weights), then one row
        per tested sparsity. ``kept`` counts the layer's surviving weights, ``error`` is the
        fraction of misclassified examples.

    Examples
    --------
    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(2, 2, bias=False)))
    >>> _ = model[0].weight_orig.data.copy_(torch.tensor([[2.0, 0.5], [0.1, 1.0]]))
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> rows = layer_sensitivity(model, Split(x, torch.tensor([0, 1, 0])), [0.5, 0.75, 1.0])
    >>> [(r["sparsity"], r["kept"], round(r["error"], 3)) for r in rows]
    [(0.0, 4, 0.0), (0.5, 2, 0.0), (0.75, 1, 0.333), (1.0, 0, 0.333)]
    >>> model[0].weight_orig.tolist()  # as it was
    [[2.0, 0.5], [0.10000000149011612, 1.0]]
    """
    grid = _check_sparsities(sparsities)
    modules = dict(masked_modules(model))
    chosen = select_layers(list(modules), layers) if layers is not None else list(modules)
    error = _evaluator(split, loss_fn, device)
    rows: list[dict] = []
    with _preserved(model):
        scores = _scores(
            model,
            score,
            scoring_batches=scoring_batches,
            scoring_examples=scoring_examples,
            score_config=score_config,
            loss_fn=loss_fn,
            device=device,
            seed=seed,
        )
        baseline = error(model)  # every layer as it is: the same model for each layer
        for name in chosen:
            module = modules[name]
            weight, mask = module.weight_orig.detach().clone(), module.weight_mask.clone()
            alive, size = mask.bool(), mask.numel()
            current = int(alive.sum())
            rows.append(
                {
                    "layer": name,
                    "sparsity": 1 - current / size,
                    "kept": current,
                    "error": baseline,
                }
            )
            layer_scores = scores[name].to(mask.device)
            for sparsity in grid:
                new = keep_largest(layer_scores, alive, round(size * (1 - sparsity)))
                apply_masks(model, {name: new})
                rows.append(
                    {
                        "layer": name,
                        "sparsity": sparsity,
                        "kept": int(new.sum()),
                        "error": error(model),
                    }
                )
                with torch.no_grad():
                    module.weight_orig.copy_(weight)
                    module.weight_mask.copy_(mask)
    return rows


def sparsities_for_error(rows: Iterable[Mapping], max_error_increase: float) -> dict[str, float]:
    """Per layer, the largest tested sparsity up to which the error stays within the layer's
    baseline error + ``max_error_increase`` (a fraction: 0.005 is half a percentage point).

    The baseline of a layer is its row with the most kept weights (the layer as it was); the
    curve is read in increasing sparsity and stops at the first sparsity over the limit, so a
    noisy dip further on is not taken. The result is never below the layer's current sparsity.

    Examples
    --------
    >>> rows = [
    ...     {"layer": "fc1", "sparsity": 0.0, "kept": 100, "error": 0.020},
    ...     {"layer": "fc1", "sparsity": 0.5, "kept": 50, "error": 0.021},
    ...     {"layer": "fc1", "sparsity": 0.9, "kept": 10, "error": 0.024},
    ...     {"layer": "fc1", "sparsity": 0.95, "kept": 5, "error": 0.050},
    ...     {"layer": "fc2", "sparsity": 0.5, "kept": 5, "error": 0.020},
    ...     {"layer": "fc2", "sparsity": 0.2, "kept": 5, "error": 0.020},
    ...     {"layer": "fc2", "sparsity": 0.8, "kept": 2, "error": 0.030},
    ...     {"layer": "fc2", "sparsity": 0.9, "kept": 1, "error": 0.021},
    ... ]
    >>> sparsities_for_error(rows, 0.005)
    {'fc1': 0.9, 'fc2': 0.5}
    >>> sparsities_for_error(rows, 0.0)
    {'fc1': 0.0, 'fc2': 0.5}
    """
    if not (math.isfinite(max_error_increase) and max_error_increase >= 0):
        raise TopopruneError(f"max error increase must be >= 0, got {max_error_increase:g}")
    curves: dict[str, list[Mapping]] = {}
    for row in rows:
        curves.setdefault(row["layer"], []).append(row)
    out = {}
    for layer, curve in curves.items():
        baseline = max(curve, key=lambda r: r["kept"])  # the first of the most kept
        limit = baseline["error"] + max_error_increase + TOLERANCE
        best = baseline["sparsity"]
        for row in sorted(curve, key=lambda r: r["sparsity"]):
            if row["error"] > limit:
                break
            best = max(best, row["sparsity"])
        out[layer] = best
    return out


def write_csv(rows: Iterable[Mapping], path: str | Path) -> Path:
    """``layer,sparsity,kept,error`` rows; floats written exactly (shortest round trip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "sparsity", "kept", "error"])
        for row in rows:
            writer.writerow(
                [
                    row["layer"],
                    repr(float(row["sparsity"])),
                    int(row["kept"]),
                    repr(float(row["error"])),
                ]
            )
    return path


def plot_sensitivity(rows: Iterable[Mapping], path: str | Path, *, title: str = "") -> Path:
    """One curve per layer: error (%) against the layer's sparsity; the baseline is circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[Mapping]] = {}
    for row in rows:
        curves.setdefault(row["layer"], []).append(row)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for layer, curve in curves.items():
        baseline = max(curve, key=lambda r: r["kept"])
        points = sorted(curve, key=lambda r: r["sparsity"])
        (line,) = ax.plot(
            [r["sparsity"] for r in points],
            [100 * r["error"] for r in points],
            ".-",
            label=layer,
        )
        ax.plot(
            baseline["sparsity"], 100 * baseline["error"], "o", mfc="none", color=line.get_color()
        )
    ax.set_xlabel("sparsity of the layer (the others as they are)")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(title="layer", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_table(rows: Iterable[Mapping]) -> str:
    """Error (%) per layer (rows) and tested sparsity (columns), after the layer's current
    sparsity and error.

    >>> print(render_table([{"layer": "0", "sparsity": 0.5, "kept": 2, "error": 0.1},
    ...                     {"layer": "0", "sparsity": 0.9, "kept": 1, "error": 0.25}]))
    layer    now  error    0.9
    0      0.500  10.00  25.00
    """
    rows = list(rows)
    curves: dict[str, list[Mapping]] = {}
    for row in rows:
        curves.setdefault(row["layer"], []).append(row)
    baselines = {layer: max(curve, key=lambda r: r["kept"]) for layer, curve in curves.items()}
    tested = sorted({r["sparsity"] for r in rows if r is not baselines[r["layer"]]})
    width = max([5, *(len(layer) for layer in curves)])
    head = f"{'layer':<{width}} {'now':>6} {'error':>6}" + "".join(f" {s:>6g}" for s in tested)
    lines = [head]
    for layer, curve in curves.items():
        base = baselines[layer]
        errors = {r["sparsity"]: r["error"] for r in curve if r is not base}
        cells = "".join(f" {100 * errors[s]:6.2f}" if s in errors else f" {'-':>6}" for s in tested)
        lines.append(f"{layer:<{width}} {base['sparsity']:6.3f} {100 * base['error']:6.2f}{cells}")
    return "\n".join(lines)


def load_zoo_checkpoint(
    path: str | Path, *, dataset: str | None = None, data_dir: str | None = None
) -> tuple[nn.Module, dict, ImageDataset]:
    """The zoo model of a ``topoprune prune`` checkpoint with its trained weights and masks
    (:func:`~topoprune.train.run.load_trained_state`), its metadata, and the data set (the
    checkpoint's own unless ``dataset`` names another). The file is read with PyTorch's
    ``weights_only`` loader: no code in it ever runs."""
    path = Path(path)
    if not path.is_file():
        raise TopopruneError(f"{path}: no such file")
    obj = load_torch_object(path)
    extra = obj.get("extra") if is_topoprune_checkpoint(obj) else None
    if not isinstance(extra, dict) or "model_state" not in extra:
        raise TopopruneError(
            f"{path}: not a topoprune training checkpoint (the checkpoint.pt that topoprune "
            "prune writes)"
        )
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = metadata.get("model")
    if not isinstance(name, str) or name not in MODELS:
        raise TopopruneError(
            f"{path}: written for model {name!r}, not a zoo model ({', '.join(MODELS.names())});"
            " for your own model, call topoprune.train.sensitivity.layer_sensitivity from Python"
        )
    dataset_name = dataset or metadata.get("dataset")
    if not isinstance(dataset_name, str):
        raise TopopruneError(f"{path}: the checkpoint names no data set; give --dataset")
    data = load_dataset(dataset_name, data_dir=data_dir)
    spec = MODELS[name]
    if tuple(data.input_shape) != spec.input_shape:
        raise TopopruneError(
            f"{name} takes {spec.input_shape} inputs; {dataset_name} has {tuple(data.input_shape)}"
        )
    model = build_model(name, data.num_classes)
    config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    names = select_layers(
        [n for n, _ in weight_modules(model)],
        tuple(config.get("layers") or ("*",)),
        tuple(config.get("dense_layers") or ()),
    )
    add_masks(model, names=names)
    load_trained_state(model, path)
    return model, metadata, data


def sensitivity_run(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str = "val",
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    score: str = "magnitude",
    scoring_examples: int | None = None,
    max_error_increase: float | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """``topoprune sensitivity``: :func:`layer_sensitivity` of a zoo model's training checkpoint
    on its data set's ``split`` (``val`` or ``test``); writes ``sensitivity.csv`` and
    ``sensitivity.png`` into ``out`` (default: a ``sensitivity`` folder beside the checkpoint)
    and, with ``max_error_increase``, ``sparsities.json`` (per-layer sparsities from
    :func:`sparsities_for_error` and the ``topoprune prune --method magnitude`` flags that ask
    for them). Sparsities must be below 1 here (``prune`` cannot take 1). Returns the rows, the
    per-layer sparsities, those flags and the paths written."""
    if split not in ("val", "test"):
        raise TopopruneError(f"split must be val or test, got {split!r}")
    grid = _check_sparsities(sparsities)
    if not grid or grid[-1] >= 1:
        raise TopopruneError(
            "sparsities must be in [0, 1) (at least one): a sparsity of 1 is no pruning target"
        )
    if max_error_increase is not None:
        sparsities_for_error([], max_error_increase)  # checks the value before the work
    checkpoint = Path(checkpoint)
    model, metadata, data = load_zoo_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir)
    model.to(device)
    rows = layer_sensitivity(
        model,
        getattr(data, split),
        grid,
        score=score,
        scoring_batches=data.train,
        scoring_examples=scoring_examples,
        device=device,
        seed=seed,
    )
    out = Path(out) if out is not None else checkpoint.parent / "sensitivity"
    title = f"{metadata['model']} on {data.name} ({split}), {score} scores"
    files = [
        write_csv(rows, out / "sensitivity.csv"),
        plot_sensitivity(rows, out / "sensitivity.png", title=title),
    ]
    result: dict = {"rows": rows, "sparsities": None, "prune_flags": None, "files": files}
    if max_error_increase is not None:
        chosen = sparsities_for_error(rows, max_error_increase)
        config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
        flags = "--sparsity " + ",".join(repr(chosen[layer]) for layer in chosen)
        if tuple(config.get("layers") or ("*",)) != ("*",):
            flags += " --layers " + ",".join(config["layers"])
        if config.get("dense_layers"):
            flags += " --dense-layers " + ",".join(config["dense_layers"])
        baseline = {
            layer: max((r for r in rows if r["layer"] == layer), key=lambda r: r["kept"])["error"]
            for layer in chosen
        }
        payload = {
            "checkpoint": str(checkpoint),
            "model": metadata["model"],
            "dataset": data.name,
            "split": split,
            "score": score,
            "max_error_increase": max_error_increase,
            "baseline_error": baseline,
            "sparsities": chosen,
            "prune_flags": flags,
        }
        write_json_atomic(out / "sparsities.json", payload)
        files.append(out / "sparsities.json")
        result.update(sparsities=chosen, prune_flags=flags)
    return result
