"""Benchmark: `topoprune degrees` on a LLaMA-2-7B-shaped sharded bfloat16 checkpoint (6.7B
weights), 50% unstructured sparsity per output row (Wanda's pattern) and a 2:4 variant; checked
against a naive full-load computation on a 1B-shaped model in the same run.

    python -m benchmarks.llm_degrees [--models 7b,1b] [--shard-gb 2] [--workdir DIR] [--keep]
        [--out results/benchmarks/llm_degrees.json]

Each checkpoint is written in the Hugging Face layout (``model-0000k-of-0000n.safetensors``,
``model.safetensors.index.json``, a ``config.json`` with ``model_type: llama``, so the token
embedding is skipped as a lookup and ``lm_head`` is read): q/k/v/o and gate/up/down projections
per block, norms, embeddings. Rows are drawn from banks of 64 random value rows and 64 random
sparsity patterns (exactly half of each row zero; for 2:4, two of every four), so writing 13 GB
takes a minute while every row is still an unstructured half-sparse row.

``topoprune degrees`` runs in a fresh child process on the index (the folder's files read once
before, so they sit in the page cache, as the target says), its output written to a file; wall
time is the child's whole run (interpreter start included) and peak memory the child's maximum
RSS (``VmHWM``). Targets (issue 19): at most 60 s and 2 GB on the 7B-shaped checkpoint, on 2
cores. On the 1B-shaped checkpoint the degrees are compared with a naive computation that loads
every tensor as float32 (``safetensors.torch.load_file``) and counts nonzeros per row and
column.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from topoprune.provenance import provenance

SHAPES = {  # hidden, intermediate, blocks, vocabulary
    "7b": (4096, 11008, 32, 32000),  # LLaMA-2-7B
    "1b": (2048, 5632, 22, 32000),  # TinyLlama-1.1B
    "tiny": (256, 688, 2, 1000),  # the test suite's quick check
}
BANK = 64


def tensors(hidden: int, inter: int, blocks: int, vocab: int) -> list[tuple[str, tuple]]:
    """``(name, shape)`` in the transformers LLaMA naming, in forward order."""
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for b in range(blocks):
        p = f"model.layers.{b}"
        out += [(f"{p}.input_layernorm.weight", (hidden,))]
        out += [(f"{p}.self_attn.{x}_proj.weight", (hidden, hidden)) for x in "qkvo"]
        out += [(f"{p}.post_attention_layernorm.weight", (hidden,)),
                (f"{p}.mlp.gate_proj.weight", (inter, hidden)),
                (f"{p}.mlp.up_proj.weight", (inter, hidden)),
                (f"{p}.mlp.down_proj.weight", (hidden, inter))]  # fmt: skip
    return [*out, ("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def banks(width: int, pattern: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``BANK`` rows of random nonzero bfloat16 bits, and ``BANK`` 0x0000/0xFFFF keep masks."""
    values = rng.standard_normal((BANK, width), dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    bits[(bits & 0x7FFF) == 0] |= 0x3F80  # a value that rounds to zero becomes 1.0
    keep = np.zeros((BANK, width), dtype=bool)
    if pattern == "2:4":
        order = rng.random((BANK, width // 4, 4)).argsort(axis=2)
        keep = (order < 2).reshape(BANK, width)
    else:
        for row in keep:
            row[rng.permutation(width)[: width // 2]] = True
    return bits, np.where(keep, np.uint16(0xFFFF), np.uint16(0))


def write_checkpoint(folder: Path, model: str, pattern: str, shard_bytes: int, seed: int) -> dict:
    """A sharded bf16 safetensors checkpoint in ``folder``; returns its kept/total counts."""
    hidden, inter, blocks, vocab = SHAPES[model]
    rng = np.random.default_rng(seed)
    cache: dict[int, tuple] = {}
    shards, current, size = [], [], 0
    for name, shape in tensors(hidden, inter, blocks, vocab):
        nbytes = 2 * int(np.prod(shape))
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    shards.append(current)
    weight_map, kept, total = {}, 0, 0
    for k, entries in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape in entries:
            n = 2 * int(np.prod(shape))
            header[name] = {
                "dtype": "BF16",
                "shape": list(shape),
                "data_offsets": [offset, offset + n],
            }
            offset += n
            weight_map[name] = file
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (folder / file).open("wb") as handle:
            handle.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape in entries:
                if len(shape) == 1:
                    handle.write(np.full(shape, 0x3F80, dtype="<u2").tobytes())  # 1.0
                    continue
                dense = name.endswith("embed_tokens.weight")
                values, keep = cache.setdefault(shape[1], banks(shape[1], pattern, rng))
                rows = values[rng.integers(0, BANK, shape[0])]
                if not dense:
                    rows &= keep[rng.integers(0, BANK, shape[0])]
                    kept += int(shape[0] * shape[1] // 2)
                    total += int(shape[0] * shape[1])
                handle.write(rows.astype("<u2").tobytes())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": hidden}))
    return {"weights_read": total, "kept": kept, "shards": len(shards)}


def warm(folder: Path) -> float:
    """Read every file once (into the page cache); returns the seconds it took."""
    start = time.perf_counter()
    for path in folder.iterdir():
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass
    return time.perf_counter() - start


# The child's own peak: VmHWM belongs to its address space, which exec made new (ru_maxrss would
# carry over the parent's high-water mark through fork on Linux: measured, 2 GB seen in a child
# that had allocated nothing)
CHILD = """
import json, sys
from topoprune.cli import main
status = main(["degrees", sys.argv[1], "--json"])
sys.stdout.flush()
with open("/proc/self/status") as handle:
    peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
print(json.dumps({"status": status, "peak_rss_kib": peak}), file=sys.stderr)
"""


def run_degrees(folder: Path, out: Path) -> dict:
    """``topoprune degrees FOLDER --json`` in a fresh child: the wall seconds of its whole run
    (interpreter start and imports included) and its own peak RSS."""
    start = time.perf_counter()
    with out.open("w") as handle:
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder)], stdout=handle,
                              stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"topoprune degrees failed: {done.stderr}")
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_rss_mib": report["peak_rss_kib"] / 1024}


def naive_degrees(folder: Path) -> dict[str, tuple[list[int], list[int]]]:
    """Every 2-D weight but the embedding loaded as float32 at once; nonzeros per row and
    column: ``{name: (per input, per output)}``."""
    import torch
    from safetensors.torch import load_file

    state = {}
    for path in sorted(folder.glob("model-*.safetensors")):
        state.update(load_file(path))
    result = {}
    for name, tensor in state.items():
        if tensor.dim() != 2 or name.endswith("embed_tokens.weight"):
            continue
        nonzero = tensor.to(torch.float32) != 0
        result[name] = (nonzero.sum(dim=0).tolist(), nonzero.sum(dim=1).tolist())
    return result


def ours_by_layer(payload: dict) -> dict[str, tuple[list[int], list[int]]]:
    """``{layer: (out-degree of each input node, in-degree of each output node)}`` from an
    unchained ``degrees --json`` payload."""
    result = {}
    for node in payload["node_layers"]:
        layer = node["target"] or node["source"]
        entry = result.setdefault(layer, [None, None])
        if node["target"]:
            entry[0] = node["out"]
        if node["source"]:
            entry[1] = node["in"]
    return {k: tuple(v) for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="7b,1b")
    parser.add_argument("--patterns", default="row50,2:4")
    parser.add_argument("--shard-gb", type=float, default=2.0)
    parser.add_argument("--workdir", help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/benchmarks/llm_degrees.json")
    args = parser.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="llm-degrees-"))
    rows = []
    for model in args.models.split(","):
        for pattern in args.patterns.split(","):
            if model != "7b" and pattern != "row50":
                continue  # the 1B-shaped model is the correctness check
            folder = root / f"{model}-{pattern.replace(':', '_')}"
            folder.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            counts = write_checkpoint(folder, model, pattern, int(args.shard_gb * 2**30),
                                      args.seed)  # fmt: skip
            written = time.perf_counter() - start
            file_bytes = sum(p.stat().st_size for p in folder.iterdir())
            warm_seconds = warm(folder)
            ours = run_degrees(folder, folder.parent / f"{folder.name}.json")
            row = {"model": model, "pattern": pattern, "file_gb": file_bytes / 2**30,
                   "write_seconds": written, "warm_read_seconds": warm_seconds, **counts,
                   "degrees_seconds": ours["seconds"],
                   "peak_rss_mib": ours["peak_rss_mib"]}  # fmt: skip
            payload = json.loads((folder.parent / f"{folder.name}.json").read_text())
            mine = ours_by_layer(payload)
            row["degree_sum"] = sum(sum(v[0]) for v in mine.values())
            row["layers"] = len(mine)
            if model != "7b":  # small enough to load whole: the naive reference
                start = time.perf_counter()
                naive = naive_degrees(folder)
                row["naive_seconds"] = time.perf_counter() - start
                row["same_degrees_as_naive"] = naive == mine
            rows.append(row)
            print(json.dumps(row), flush=True)
            (folder.parent / f"{folder.name}.json").unlink()
            if not args.keep:
                shutil.rmtree(folder)
    if not args.keep and not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    result = {"rows": rows, "targets": {"seconds": 60, "peak_rss_mib": 2048},
              "command": "python -m benchmarks.llm_degrees " + " ".join(argv or sys.argv[1:]),
              "cpus": os.cpu_count(),
              "provenance": provenance(("topoprune", "numpy", "torch"))}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
