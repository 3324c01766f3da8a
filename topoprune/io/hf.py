"""Hugging Face checkpoints: sharded files behind an index, ``config.json``, Conv1D layouts.

- A sharded checkpoint is ``model.safetensors.index.json`` (or ``pytorch_model.bin.index.json``)
  whose ``weight_map`` names the shard holding each tensor; the shards together are one network,
  read shard by shard (safetensors shards memory-mapped, one tensor resident at a time).
- GPT-2-style models store their projections as ``transformers.Conv1D``, whose weight is
  ``(in, out)``: the transpose of ``nn.Linear``'s. ``config.json``'s ``model_type`` says which
  models do; ``--layout conv1d`` says it for a file without one.
- Embedding tables (token, position) are lookups, not layers between node sets: in a file with
  a ``config.json`` (a Hugging Face model) or read with ``--layout conv1d``, they are skipped
  with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from topoprune.io.errors import CheckpointError

LAYOUTS = ("auto", "torch", "conv1d")
# model types whose transformers implementation uses Conv1D for its attention and MLP projections
CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
# the Conv1D modules of those models; their task heads (score, classifier, ...) are nn.Linear
CONV1D_MODULES = frozenset({"c_attn", "c_proj", "c_fc", "q_attn"})
EMBEDDING_NAMES = ("wte", "wpe", "embed_tokens", "embed_positions", "word_embeddings",
                   "position_embeddings", "token_type_embeddings", "tokens_embed",
                   "positions_embed", "embed_in", "shared")  # fmt: skip
INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024


def index_file(folder: Path) -> Path | None:
    """The one ``*.index.json`` of a checkpoint folder, if it has one."""
    found = sorted(folder.glob(f"*{INDEX_SUFFIX}"))
    safetensors = [p for p in found if p.name.endswith(".safetensors" + INDEX_SUFFIX)]
    if len(found) > 1 and len(safetensors) == 1:
        return safetensors[0]  # the Hub ships both formats; the safetensors set is mapped
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CheckpointError(f"{folder}: several sharded checkpoints ({names}); give one index")
    return found[0] if found else None


def is_index(path: Path, head: bytes) -> bool:
    """Whether a file is a sharded checkpoint's JSON index."""
    return path.name.endswith(INDEX_SUFFIX) or head.lstrip()[:1] == b"{"


def read_index(path: Path) -> dict[str, list[str]]:
    """``{shard file name: [tensor names]}`` of an index, shards in name order; every shard must
    exist beside the index."""
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise CheckpointError(f"{path}: too large for a checkpoint index")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: not a JSON checkpoint index (corrupt JSON)") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(f"{path}: a JSON file without a 'weight_map' (not a sharded index)")
    shards: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        if Path(shard).name != shard:
            raise CheckpointError(f"{path}: shard {shard!r} is not a file beside the index")
        shards.setdefault(shard, []).append(tensor)
    missing = [s for s in shards if not (path.parent / s).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing shard files: {', '.join(sorted(missing))}")
    return dict(sorted(shards.items()))


def iter_sharded(
    path: Path, *, raw_halves: bool = False, unlisted: dict[str, str] | None = None
) -> Iterator[tuple[str, object]]:
    """``(name, tensor)`` of every tensor the index assigns to each shard, shard by shard; a
    tensor the index lists but its shard lacks is an error, one it does not list there is left
    out (into ``unlisted``, with the reason). ``raw_halves``: see
    :func:`topoprune.io.safetensors_file.iter_tensors`."""
    from topoprune.io import safetensors_file
    from topoprune.io.torch_file import load_torch_object, state_dict_items

    for shard, expected in read_index(path).items():
        shard_path = path.parent / shard
        head = shard_path.open("rb").read(9)
        seen, listed = set(), set(expected)
        if len(head) == 9 and head[8:9] == b"{":
            items = ((n, a) for n, a, _ in
                     safetensors_file.iter_tensors(shard_path, raw_halves=raw_halves))  # fmt: skip
        else:
            items = state_dict_items(load_torch_object(shard_path), shard_path)
        for name, tensor in items:
            if name not in listed:
                if unlisted is not None:
                    unlisted[f"{shard}:{name}"] = "in a shard, but the index assigns it elsewhere"
                continue
            seen.add(name)
            yield name, tensor
        absent = [t for t in expected if t not in seen]
        if absent:
            raise CheckpointError(f"{shard_path}: lacks tensors the index assigns to it: "
                                  f"{', '.join(absent[:5])}")  # fmt: skip


def read_config(path: Path) -> dict | None:
    """The ``config.json`` beside a checkpoint, if there is a readable one."""
    config = path.parent / "config.json"
    if not config.is_file() or config.stat().st_size > MAX_INDEX_BYTES:
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def resolve_layout(path: Path, layout: str) -> tuple[bool, bool, str | None]:
    """``(conv1d, skip_embeddings, note)`` for reading ``path`` with ``layout``."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout == "torch":
        return False, False, None
    if layout == "conv1d":
        return True, True, ("layout conv1d: c_attn/c_proj/c_fc/q_attn weights read as "
                            "(in, out), transposed to (out, in); other weights as stored; "
                            "embedding tables and non-.weight tensors skipped")  # fmt: skip
    config = read_config(path)
    if config is None:
        return False, False, None
    model_type = config.get("model_type")
    if model_type in CONV1D_MODEL_TYPES:
        return True, True, (f"config.json: model_type {model_type!r} stores its projections "
                            "as Conv1D (in, out): read transposed; embedding tables "
                            "skipped")  # fmt: skip
    return False, True, ("config.json: a Hugging Face model; embedding tables and non-.weight "
                         "tensors skipped")  # fmt: skip


def is_embedding(name: str) -> bool:
    """``transformer.wte.weight``, ``model.embed_tokens.weight``, ... (a lookup table)."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in EMBEDDING_NAMES


def is_conv1d_weight(name: str) -> bool:
    """In a Conv1D model, the weights of its Conv1D modules (``c_attn``, ``c_proj``, ``c_fc``,
    ``q_attn``); heads and everything else are ``nn.Linear``."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in CONV1D_MODULES


def not_a_layer(name: str) -> str | None:
    """Why a Hugging Face tensor is no layer: an embedding table, or not a ``.weight`` at all
    (buffers such as GPT-2's causal mask ``attn.bias``, 4-D; ViT's ``cls_token``)."""
    if is_embedding(name):
        return "embedding table (a lookup, not a layer)"
    if not name.endswith(".weight"):
        return "not a module's .weight (a bias, buffer or parameter of a Hugging Face model)"
    return None
