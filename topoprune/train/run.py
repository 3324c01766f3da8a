"""One pruning run end to end: build, (resume,) train the method's stages, checkpoint, summarise."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from topoprune import __version__
from topoprune.data import ImageDataset, load_dataset
from topoprune.data.cache import write_json_atomic
from topoprune.errors import TopopruneError
from topoprune.io.checkpoint import is_topoprune_checkpoint, save_network
from topoprune.io.torch_file import load_torch_object
from topoprune.models import MODELS, build_model
from topoprune.prune.masks import (
    add_masks,
    compression,
    kept_fractions,
    masked_modules,
    set_straight_through,
)
from topoprune.prune.methods import METHODS
from topoprune.topology.module import network_from_module
from topoprune.train.engine import (
    TrainingState,
    TrainSettings,
    checkpoint_path,
    error_rate,
    run_stages,
)


def run_metadata(
    model: str, dataset: str, method: str, config: object, settings: TrainSettings
) -> dict:
    return {
        "model": model,
        "dataset": dataset,
        "method": method,
        "config": dataclasses.asdict(config),
        "batch_size": settings.batch_size,
        "momentum": settings.momentum,
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
    own, theirs = model.state_dict(), extra["model_state"]
    if set(own) != set(theirs) or any(own[k].shape != theirs[k].shape for k in own):
        found = obj.get("metadata", {}).get("model", "another architecture")
        raise TopopruneError(f"{path}: written for {found}; cannot start this model from it")
    model.load_state_dict(theirs)
    set_straight_through(model, False)
    return obj.get("metadata", {})


def _load_init(path: Path, model: torch.nn.Module) -> dict:
    """Start ``model`` from a finished run's checkpoint; what the summary records of it."""
    recorded = load_trained_state(model, path)
    return {"checkpoint": str(path), **{k: recorded.get(k) for k in ("model", "dataset",
            "method", "seed", "config")}}  # fmt: skip


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


def prune_run(
    model_name: str,
    dataset_name: str,
    method_name: str,
    config: object,
    settings: TrainSettings,
    out: str | Path,
    *,
    resume: bool = False,
    data_dir: str | None = None,
    data: ImageDataset | None = None,
    init: str | Path | None = None,
    regrow: str | None = None,
) -> dict:
    """Train and prune; write ``checkpoint.pt`` (every epoch) and ``summary.json`` into ``out``.

    ``data`` replaces the named data set (a subset, a permuted task); ``dataset_name`` still
    names it in the metadata. ``init`` starts from another run's final weights and masks (one
    dense model serving several methods: give them ``dense_epochs=0``). ``regrow`` (with
    ``init``) gives its pruned connections back before training (see :func:`regrow_connections`):
    a pruned network learning a new task.
    """
    out = Path(out)
    method_cls = METHODS[method_name]
    MODELS[model_name]  # unknown names list the valid ones
    dataset = data if data is not None else load_dataset(dataset_name, data_dir=data_dir)
    spec = MODELS[model_name]
    if tuple(dataset.input_shape) != spec.input_shape:
        raise TopopruneError(
            f"{model_name} takes {spec.input_shape} inputs; {dataset_name} has "
            f"{tuple(dataset.input_shape)}"
        )
    torch.manual_seed(settings.seed)
    model = add_masks(build_model(model_name, dataset.num_classes))
    names = [name for name, _ in masked_modules(model)]
    method = method_cls(config, names, settings.seed)
    metadata = run_metadata(model_name, dataset_name, method_name, config, settings)
    init_error = None
    if init is not None:
        metadata["init"] = _load_init(Path(init), model)
        model.to(settings.device)
        init_error = error_rate(model, dataset.test, settings.device)
        if regrow is not None:
            metadata["regrow"] = regrow
            metadata["regrown"] = regrow_connections(model, regrow, settings.seed)
    elif regrow is not None:
        raise TopopruneError("regrow needs init: the run whose pruned connections come back")
    path = checkpoint_path(out)
    state, optimizer_state = None, None
    if path.exists():
        if not resume:
            raise TopopruneError(
                f"{path} exists: pass --resume to continue that run, or use another --out folder"
            )
        state, optimizer_state = _resume_state(path, model, metadata)
        stages = method.stages()
        if state.stage >= len(stages) and (out / "summary.json").exists():
            # finished earlier: keep its summary (and its wall time) as written
            return json.loads((out / "summary.json").read_text())
    out.mkdir(parents=True, exist_ok=True)

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

    start = time.perf_counter()
    state = run_stages(
        model,
        method.stages(),
        dataset,
        settings,
        state=state,
        optimizer_state=optimizer_state,
        save=save,
    )
    stage_errors = {h["stage"]: h["test_error"] for h in state.history if h.get("end")}
    summary = {
        **metadata,
        "device": settings.device,
        "kept_percent": {n: 100 * f for n, f in kept_fractions(model).items()},
        "compression": compression(model),
        "test_error": error_rate(model, dataset.test, settings.device),
        "val_error": error_rate(model, dataset.val, settings.device),
        "stage_test_errors": stage_errors,
        "dense_test_error": stage_errors.get("dense", init_error),
        "init_test_error": init_error,
        "steps": state.step,
        "wall_seconds_this_run": time.perf_counter() - start,
        "checkpoint": str(path),
        "versions": {
            "topoprune": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
