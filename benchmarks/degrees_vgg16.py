"""Benchmark: degrees of every layer of a VGG-16-shaped checkpoint (138M weights, 10% density,
safetensors), against networkx on the layers networkx can hold.

    python -m benchmarks.degrees_vgg16 [--density 0.1] [--seed 0] [--out results/benchmarks/...]

Targets (issue 3): at most 5 s wall on 2 cores, peak memory at most 1.5x the file size.
topoprune is timed in a fresh child process (page cache warm: the file was just written), and its
peak RSS is read from that child; the RSS of the same child after importing alone is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np

from topoprune.provenance import provenance

VGG16 = [
    ("features.0", (64, 3, 3, 3)), ("features.2", (64, 64, 3, 3)),
    ("features.5", (128, 64, 3, 3)), ("features.7", (128, 128, 3, 3)),
    ("features.10", (256, 128, 3, 3)), ("features.12", (256, 256, 3, 3)),
    ("features.14", (256, 256, 3, 3)), ("features.17", (512, 256, 3, 3)),
    ("features.19", (512, 512, 3, 3)), ("features.21", (512, 512, 3, 3)),
    ("features.24", (512, 512, 3, 3)), ("features.26", (512, 512, 3, 3)),
    ("features.28", (512, 512, 3, 3)), ("classifier.0", (4096, 25088)),
    ("classifier.3", (4096, 4096)), ("classifier.6", (1000, 4096)),
]  # fmt: skip


def write_checkpoint(path: Path, density: float, seed: int) -> None:
    """Stream a safetensors file layer by layer (weights and biases), never all in memory."""
    rng = np.random.default_rng(seed)
    entries, offset = [], 0
    for name, shape in VGG16:
        for suffix, shp in ((".weight", shape), (".bias", shape[:1])):
            size = int(np.prod(shp)) * 4
            entries.append((name + suffix, shp, offset, offset + size))
            offset += size
    header = {n: {"dtype": "F32", "shape": list(s), "data_offsets": [a, b]}
              for n, s, a, b in entries}  # fmt: skip
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape, _, _ in entries:
            if name.endswith(".bias"):
                handle.write(rng.normal(size=shape).astype("<f4").tobytes())
                continue
            rows = shape[0]
            step = max(1, (1 << 22) // int(np.prod(shape[1:])))
            for start in range(0, rows, step):
                block_shape = (min(step, rows - start), *shape[1:])
                values = rng.standard_normal(block_shape, dtype=np.float32)
                values[rng.random(block_shape, dtype=np.float32) >= density] = 0.0
                handle.write(values.astype("<f4").tobytes())


CHILD = """
import json, resource, sys, time
from topoprune.io import load_network
import topoprune.topology
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
net = load_network(sys.argv[1], chain="sequential", keep_weights=False)
nodes = net.node_layers(sys.argv[2])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_kib": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss, "import_rss_kib": base, "nnz": net.nnz,
    "node_layers": len(nodes), "total_degree_sum": int(sum(n.total_degree.sum() for n in nodes))}))
"""


def topoprune_run(path: Path, view: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), view], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)


def networkx_comparison(path: Path, max_edges: int) -> dict:
    """Per layer with at most ``max_edges`` connections: networkx vs topoprune, same degrees."""
    from topoprune.io import load_network
    from topoprune.topology import layer_degrees

    net = load_network(path, keep_weights=False)
    rows, ours_total, nx_total = [], 0.0, 0.0
    for layer in net.layers:
        if layer.nnz > max_edges:
            rows.append({"layer": layer.name, "nnz": layer.nnz, "skipped": "too large"})
            continue
        start = time.perf_counter()
        fan_out, fan_in = layer_degrees(layer, "im2col")  # one edge per nonzero weight
        ours = time.perf_counter() - start
        start = time.perf_counter()
        matrix = layer.mask.reshape(layer.out_channels, -1)
        n_in = matrix.shape[1]
        graph = nx.Graph()
        graph.add_nodes_from(range(n_in + matrix.shape[0]))
        out_idx, in_idx = np.nonzero(matrix)
        graph.add_edges_from(zip(in_idx.tolist(), (out_idx + n_in).tolist()))
        degrees = np.fromiter((d for _, d in sorted(graph.degree())), dtype=np.int64)
        theirs = time.perf_counter() - start
        same = np.array_equal(degrees[:n_in], fan_out) and np.array_equal(degrees[n_in:], fan_in)
        if not same:
            raise SystemExit(f"{layer.name}: networkx and topoprune degrees differ")
        ours_total += ours
        nx_total += theirs
        rows.append({"layer": layer.name, "nnz": layer.nnz, "topoprune_s": ours,
                     "networkx_s": theirs, "ratio": theirs / ours})  # fmt: skip
    return {"layers": rows, "topoprune_s": ours_total, "networkx_s": nx_total,
            "speedup": nx_total / ours_total if ours_total else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--view", default="channel")
    parser.add_argument("--nx-max-edges", type=int, default=300_000)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/degrees_vgg16.json"))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the synthetic checkpoint is written (default: a temp folder)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "vgg16_density0.1.safetensors"
        start = time.perf_counter()
        write_checkpoint(path, args.density, args.seed)
        print(f"wrote {path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s")
        runs = [topoprune_run(path, args.view) for _ in range(3)]
        best = min(runs, key=lambda r: r["seconds"])
        file_size = path.stat().st_size
        peak = max(r["peak_rss_kib"] for r in runs) * 1024
        comparison = networkx_comparison(path, args.nx_max_edges)
    result = {
        "benchmark": "degrees of every layer, VGG-16 shape, safetensors",
        "weights": sum(int(np.prod(s)) for _, s in VGG16),
        "density": args.density,
        "seed": args.seed,
        "view": args.view,
        "file_bytes": file_size,
        "topoprune_seconds": [r["seconds"] for r in runs],
        "topoprune_best_seconds": best["seconds"],
        "peak_rss_bytes": peak,
        "import_rss_bytes": best["import_rss_kib"] * 1024,
        "peak_rss_over_file": peak / file_size,
        "nnz": best["nnz"],
        "networkx": comparison,
        "provenance": provenance(("topoprune", "numpy", "torch", "networkx", "safetensors")),
        "cpu_threads": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(f"topoprune: {best['seconds']:.2f} s (runs: {times}), peak RSS "
          f"{peak / 2**20:.0f} MiB = {peak / file_size:.2f}x the {file_size / 2**20:.0f} MiB file "
          f"(import alone: {best['import_rss_kib'] / 1024:.0f} MiB)")  # fmt: skip
    done = [r for r in comparison["layers"] if "ratio" in r]
    print(
        f"networkx on {len(done)} layers (<= {args.nx_max_edges:,} edges each): "
        f"{comparison['networkx_s']:.2f} s vs topoprune {comparison['topoprune_s']:.4f} s: "
        f"{comparison['speedup']:.0f}x faster, identical degrees"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
