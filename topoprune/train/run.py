"""One pruning run end to end: masks on the model, (resume,) the method's stages, checkpoints,
a summary. :func:`prune_model` takes any ``nn.Module`` and any batches; :func:`prune_run` is its
client for the model zoo and the registered data sets (``topoprune prune``)."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from topoprune import __version__
from topoprune.data import ImageDataset, load_dataset
from topoprune.data.cache import write_json_atomic
from topoprune.data.images import Split
from topoprune.errors import TopopruneError
from topoprune.io.checkpoint import is_topoprune_checkpoint, save_network
from topoprune.io.torch_file import load_torch_object
from topoprune.models import MODELS, build_model
from topoprune.prune.masks import (
    add_masks,
    compression,
    dense_modules,
    kept_fractions,
    masked_modules,
    set_straight_through,
    weight_modules,
)
from topoprune.prune.method import Method, TrainConfig, TrainingState, select_layers
from topoprune.prune.methods import METHODS
from topoprune.topology.module import network_from_module
from topoprune.train.engine import (
    Evaluator,
    TrainSettings,
    checkpoint_path,
    error_rate,
    run_stages,
    split_evaluator,
)
from topoprune.train.optim import evaluate


@dataclasses.dataclass
class PruneResult:
    """What :func:`prune_model` returns: the pruned model (masks installed) and the summary
    written to ``summary.json``; unpacks as ``model, summary = prune_model(...)``."""

    model: nn.Module
    summary: dict

    def __iter__(self):
        return iter((self.model, self.summary))


def run_metadata(method: str, config: TrainConfig, settings: TrainSettings, **extra) -> dict:
    """What identifies a run: a checkpoint resumes only a run with the same metadata."""
    return {
        **extra,
        "method": method,
        "config": dataclasses.asdict(config),
        "batch_size": settings.batch_size,
        "seed": settings.seed,
    }


def _resume_state(path: Path, model: torch.nn.Module, metadata: dict):
    obj = load_torch_object(path)
    extra = obj.get("extra", {}) if is_topoprune_checkpoint(obj) else {}
    if "model_state" not in extra:
        raise TopopruneError(f"{path}: not a topoprune training checkpoint; cannot resume")
    recorded = obj.get("metadata", {})
    different = [k for k in metadata if _plain(recorded.get(k)) != _plain(metadata[k])]
    if different:
        found = ", ".join(f"{k}={recorded.get(k)!r}" for k in different)
        raise TopopruneError(
            f"{path}: cannot resume: the checkpoint was written with a different "
            f"{', '.join(different)} (it has {found}); use another --out folder or the same "
            "settings"
        )
    own = model.state_dict()
    theirs = extra["model_state"]
    if set(own) != set(theirs) or any(own[k].shape != theirs[k].shape for k in own):
        raise TopopruneError(f"{path}: written for another architecture; cannot resume")
    model.load_state_dict(theirs)
    progress = extra["progress"]
    state = TrainingState(
        step=progress["step"],
        stage=progress["stage"],
        epoch=progress["epoch"],
        started=progress["started"],
        stage_start_step=progress.get("stage_start_step", 0),
        method_state=extra["method_state"],
        history=list(extra["history"]),
        mask_history=dict(extra["mask_history"]),
    )
    return state, extra["optimizer_state"]


def load_trained_state(model: torch.nn.Module, path: str | Path) -> dict:
    """Install a finished training checkpoint's weights and masks in ``model`` (built with
    :func:`~topoprune.prune.masks.add_masks`) so that it computes what the run evaluated; returns
    the checkpoint's metadata.

    Straight-through methods (DNS) keep learning their pruned weights, so the saved
    ``weight_orig`` holds non-zero values under zero masks: they are zeroed here, since a model
    outside straight-through mode reads ``weight_orig`` as is.
    """
    path = Path(path)
    obj = load_torch_object(path)
    extra = obj.get("extra", {}) if is_topoprune_checkpoint(obj) else {}
    if "model_state" not in extra:
        raise TopopruneError(f"{path}: not a topoprune training checkpoint; cannot start from it")
    own, theirs = model.state_dict(), dict(extra["model_state"])
    for key in [k for k in theirs if k.endswith(".weight_orig")]:
        layer = key.removesuffix("_orig")
        if layer in own and key not in own:  # masked there, dense here (--dense-layers)
            theirs[layer] = theirs.pop(key) * theirs.pop(f"{layer}_mask")
    if set(own) != set(theirs) or any(own[k].shape != theirs[k].shape for k in own):
        found = obj.get("metadata", {}).get("model", "another architecture")
        raise TopopruneError(f"{path}: written for {found}; cannot start this model from it")
    model.load_state_dict(theirs)
    set_straight_through(model, False)
    return obj.get("metadata", {})


def _load_init(path: Path, model: torch.nn.Module) -> dict:
    """Start ``model`` from a finished run's checkpoint; what the summary records of it."""
    recorded = load_trained_state(model, path)
    return {
        "checkpoint": str(path),
        **{k: recorded.get(k) for k in ("model", "dataset", "method", "seed", "config")},
    }


REGROW = ("zero", "small")


def regrow_connections(model: torch.nn.Module, how: str, seed: int) -> int:
    """Give every pruned connection back (masks all ones); the returned weights start at zero
    (``zero``) or at small normal values, 1% of the layer's kept weights' std (``small``).
    Returns the number of connections given back."""
    if how not in REGROW:
        raise TopopruneError(f"regrow must be one of {', '.join(REGROW)}, got {how!r}")
    generator = torch.Generator().manual_seed(seed + 104729)
    restored = 0
    with torch.no_grad():
        for _, module in masked_modules(model):
            pruned = module.weight_mask == 0
            weight = module.weight_orig
            values = torch.zeros_like(weight)
            if how == "small":
                kept = weight[~pruned]
                scale = 0.01 * float(kept.std()) if kept.numel() > 1 else 0.0
                values = torch.randn(weight.shape, generator=generator).to(weight) * scale
            weight[pruned] = values[pruned]
            restored += int(pruned.sum())
            module.weight_mask.fill_(1)
    return restored


def _plain(value: object) -> object:
    """Tuples and lists compare equal (a config survives the checkpoint as lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _weight_layer_names(model: nn.Module) -> list[str]:
    names = [name for name, _ in weight_modules(model)]
    if not names:
        raise TopopruneError(f"{type(model).__name__} has no Linear/Conv1d/Conv2d layer to prune")
    return names


def pruned_layer_names(model: nn.Module, config: TrainConfig) -> list[str]:
    """The weight layers a config prunes (``layers`` globs minus ``dense_layers`` globs)."""
    return select_layers(_weight_layer_names(model), config.layers, config.dense_layers)


def _batches_evaluator(batches: Any, loss_fn, device: str) -> Evaluator | None:
    if batches is None:
        return None
    if isinstance(batches, Split):
        return split_evaluator(batches, device)
    return lambda model: evaluate(model, batches, loss_fn, device)


def prune_model(
    model: nn.Module,
    method: str,
    config: TrainConfig | None = None,
    *,
    train: Any,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    evaluation: Iterable | None = None,
    validation: Iterable | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: str = "cpu",
    resume: bool = False,
    settings: TrainSettings | None = None,
    metadata: dict | None = None,
    progress: bool = False,
) -> PruneResult:
    """Prune a model in place with a registered method and return it with a summary.

    Parameters
    ----------
    model : nn.Module
        Any module; its Linear, Conv1d and Conv2d layers (grouped and depthwise included) that
        the config's ``layers``/``dense_layers`` select get masks. Other parametrised modules
        (BatchNorm, embeddings, ...) train densely and are listed in the summary.
    method : str
        A name of :data:`topoprune.prune.methods.METHODS` (``topoprune methods`` lists them).
    config : dataclass, optional
        The method's ``Config``; its defaults when omitted.
    train : iterable
        Re-iterable ``(inputs, targets)`` batches (a ``DataLoader``), an in-memory ``Split`` or
        an ``ImageDataset`` (then its validation and test splits are evaluated too).
    loss : callable, optional
        ``loss(outputs, targets)``; cross-entropy by default.
    evaluation, validation : iterable, optional
        Batches evaluated after every stage (``test_*`` in the summary) and every epoch.
    out : path, optional
        Folder for ``checkpoint.pt`` (written every epoch, resumable, readable by ``topoprune
        analyze``/``attach``) and ``summary.json``; nothing is written without it.
    seed, batch_size, device, progress
        Shortcuts for ``settings`` (a :class:`TrainSettings`), used when it is not given;
        ``batch_size`` applies to in-memory data only.
    resume : bool
        Continue the run whose checkpoint is in ``out``; without it an existing checkpoint is an
        error. A resumed run ends bit-identical to an uninterrupted one.

    Examples
    --------
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from topoprune.prune.methods import MagnitudeConfig
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> config = MagnitudeConfig(dense_epochs=1, retrain_epochs=1, sparsity=(0.75,))
    >>> model, summary = prune_model(model, "magnitude", config,
    ...                              train=DataLoader(TensorDataset(x, y), batch_size=16))
    >>> summary["kept_percent"]
    {'0': 25.0, '2': 25.0}
    """
    settings = settings or TrainSettings(
        batch_size=batch_size, seed=seed, device=device, progress=progress
    )
    method_cls: type[Method] = METHODS[method]
    config = config if config is not None else method_cls.Config()
    if not isinstance(config, method_cls.Config):
        raise TopopruneError(
            f"method {method} takes a {method_cls.Config.__name__}, got a {type(config).__name__}"
        )
    names = pruned_layer_names(model, config)
    add_masks(model, names=names)
    pruner = method_cls(config, names, settings.seed)
    metadata = run_metadata(
        method, config, settings, **(metadata or {"model": type(model).__name__})
    )
    path = checkpoint_path(out) if out is not None else None
    state, optimizer_state = None, None
    if path is not None and path.exists():
        if not resume:
            raise TopopruneError(
                f"{path} exists: pass --resume to continue that run, or use another --out folder"
            )
        state, optimizer_state = _resume_state(path, model, metadata)
        if state.stage >= len(pruner.stages()) and (Path(out) / "summary.json").exists():
            # finished earlier: keep its summary (and its wall time) as written
            return PruneResult(model, json.loads((Path(out) / "summary.json").read_text()))

    def save(model, optimizer, state: TrainingState) -> None:
        save_network(
            network_from_module(model),
            path,
            metadata=metadata,
            extra={
                "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer_state": optimizer.state_dict(),
                "progress": state.progress(),
                "method_state": state.method_state,
                "history": state.history,
                "mask_history": state.mask_history,
            },
        )

    loss_fn = loss or nn.functional.cross_entropy
    if isinstance(train, ImageDataset):  # a registered data set brings its own splits
        evaluation = train.test if evaluation is None else evaluation
        validation = train.val if validation is None else validation
    test = _batches_evaluator(evaluation, loss_fn, settings.device)
    val = _batches_evaluator(validation, loss_fn, settings.device)
    start = time.perf_counter()
    state = run_stages(
        model,
        pruner.stages(),
        train,
        settings,
        loss_fn=loss_fn,
        validation=val,
        test=test,
        state=state,
        optimizer_state=optimizer_state,
        save=save if path is not None else None,
    )
    set_straight_through(model, False)  # the returned model computes with its masks
    ends = [h for h in state.history if h.get("end")]
    summary = {
        **metadata,
        "paper": method_cls.paper,
        "device": settings.device,
        "pruned_layers": names,
        "dense_modules": dense_modules(model),
        "kept_percent": {n: 100 * f for n, f in kept_fractions(model).items()},
        "compression": compression(model),
        "stage_test_errors": {h["stage"]: h["test_error"] for h in ends if "test_error" in h},
        "steps": state.step,
        "history": _plain(state.history),  # per epoch: loss, validation error, seconds
        "report": _plain(pruner.report(state)),
        "wall_seconds_this_run": time.perf_counter() - start,
        "checkpoint": str(path) if path is not None else None,
        "versions": {
            "topoprune": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    if test is not None:
        summary.update({f"test_{k}": v for k, v in test(model).items()})
    if val is not None:
        summary.update({f"val_{k}": v for k, v in val(model).items()})
    if path is not None:
        write_json_atomic(Path(out) / "summary.json", summary)
    return PruneResult(model, summary)


def prune_run(
    model_name: str,
    dataset_name: str,
    method_name: str,
    config: TrainConfig,
    settings: TrainSettings,
    out: str | Path,
    *,
    resume: bool = False,
    data_dir: str | None = None,
    data: ImageDataset | None = None,
    init: str | Path | None = None,
    regrow: str | None = None,
) -> dict:
    """Train and prune a zoo model on a registered data set; write ``checkpoint.pt`` (every
    epoch) and ``summary.json`` into ``out``; return the summary.

    ``data`` replaces the named data set (a subset, a permuted task); ``dataset_name`` still
    names it in the metadata. ``init`` starts from another run's final weights and masks (one
    dense model serving several methods: give them ``dense_epochs=0``). ``regrow`` (with
    ``init``) gives its pruned connections back before training (see :func:`regrow_connections`):
    a pruned network learning a new task.
    """
    METHODS[method_name]  # unknown names list the valid ones
    spec = MODELS[model_name]
    dataset = data if data is not None else load_dataset(dataset_name, data_dir=data_dir)
    if tuple(dataset.input_shape) != spec.input_shape:
        raise TopopruneError(
            f"{model_name} takes {spec.input_shape} inputs; {dataset_name} has "
            f"{tuple(dataset.input_shape)}"
        )
    if regrow is not None and init is None:
        raise TopopruneError("regrow needs init: the run whose pruned connections come back")
    torch.manual_seed(settings.seed)
    model = build_model(model_name, dataset.num_classes)
    add_masks(model, names=pruned_layer_names(model, config))
    extra: dict = {"model": model_name, "dataset": dataset_name}
    init_error = None
    if init is not None:
        extra["init"] = _load_init(Path(init), model)
        model.to(settings.device)
        init_error = error_rate(model, dataset.test, settings.device)
        if regrow is not None:
            extra["regrow"] = regrow
            extra["regrown"] = regrow_connections(model, regrow, settings.seed)
    _, summary = prune_model(
        model,
        method_name,
        config,
        train=dataset,
        evaluation=dataset.test,
        validation=dataset.val,
        out=out,
        settings=settings,
        resume=resume,
        metadata=extra,
    )
    if "init_test_error" not in summary:  # a finished run's summary is returned as written
        summary["dense_test_error"] = summary["stage_test_errors"].get("dense", init_error)
        summary["init_test_error"] = init_error
        write_json_atomic(Path(out) / "summary.json", summary)
    return summary
