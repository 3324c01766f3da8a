"""Text, CSV and JSON renderings of a network summary (``topoprune analyze`` / ``degrees``)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from topoprune.topology.network import DEGREE_KINDS, NetworkSummary, SparseNetwork


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _range(stats: dict) -> str:
    return "/".join(_num(stats[k]) for k in ("min", "median", "max"))


def _nm(shares: dict) -> str:
    """``2:4 / 4:8`` shares of groups that meet the pattern (``yes`` for a whole layer)."""
    values = [shares.get(k) for k in ("2:4", "4:8")]
    return " / ".join("-" if v is None else "yes" if v == 1 else f"{v:.2f}" for v in values)


def layer_rows(summary: NetworkSummary) -> list[dict]:
    """Flat per-layer rows (for text and CSV)."""
    return [
        {
            "layer": r["layer"],
            "shape": "x".join(map(str, r["shape"])),
            "view": r["view"],
            "nnz": r["nnz"],
            "density": r["density"],
            "compression": r["compression"],
            "dead_inputs": r["dead_inputs"],
            "dead_outputs": r["dead_outputs"],
            "fan_in_min": r["fan_in"]["min"],
            "fan_in_median": r["fan_in"]["median"],
            "fan_in_max": r["fan_in"]["max"],
            "fan_out_min": r["fan_out"]["min"],
            "fan_out_median": r["fan_out"]["median"],
            "fan_out_max": r["fan_out"]["max"],
            "nonfinite": r["nonfinite"],
            **{f"share_{k.replace(':', '_')}": v for k, v in r.get("n_m", {}).items()},
        }
        for r in summary.layers
    ]


def node_rows(summary: NetworkSummary) -> list[dict]:
    """Flat per-node-layer rows (for text and CSV); statistics issues add columns here."""
    rows = []
    for r in summary.node_layers:
        row = {
            "node_layer": r["node_layer"],
            "role": r["role"],
            "size": r["size"],
            "dead": r["dead"],
        }
        for kind in DEGREE_KINDS:
            for stat in ("min", "median", "mean", "max"):
                row[f"{kind}_{stat}"] = r[kind][stat]
        for key, value in r.get("fit_columns", {}).items():
            row[f"fit_{key}"] = value
        rows.append(row)
    return rows


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def render_text(summary: NetworkSummary) -> str:
    """The per-layer table and the per-node-layer degree summary, for a terminal."""
    t = summary.totals
    out = [
        f"{summary.source}: {t['layers']} weight layers, {t['nnz']:,} of {t['size']:,} weights "
        f"kept (density {_num(t['density'])}, compression {_num(t['compression'])}x), "
        f"view {summary.view}"
    ]
    out.append("")
    out.append(
        _table(
            [
                "layer",
                "shape",
                "view",
                "nnz",
                "density",
                "compr.",
                "dead in/out",
                "fan-in min/med/max",
                "fan-out min/med/max",
                "2:4 / 4:8",
            ],
            [
                [
                    r["layer"],
                    "x".join(map(str, r["shape"])),
                    r["view"],
                    _num(r["nnz"]),
                    _num(r["density"]),
                    _num(r["compression"]),
                    f"{r['dead_inputs']}/{r['dead_outputs']}",
                    _range(r["fan_in"]),
                    _range(r["fan_out"]),
                    _nm(r.get("n_m", {})),
                ]
                for r in summary.layers
            ],
        )
    )
    out.append("")
    out.append(
        _table(
            [
                "node layer",
                "role",
                "nodes",
                "dead",
                "in min/med/max",
                "out min/med/max",
                "total min/med/max",
                "total mean",
            ],
            [
                [
                    r["node_layer"],
                    r["role"],
                    str(r["size"]),
                    str(r["dead"]),
                    _range(r["in"]),
                    _range(r["out"]),
                    _range(r["total"]),
                    _num(r["total"]["mean"]),
                ]
                for r in summary.node_layers
            ],
        )
    )
    fitted = [r for r in summary.node_layers if "fit_columns" in r]
    if fitted:
        out.append("")
        out.append(
            _table(
                [
                    "node layer",
                    "alpha",
                    "SE",
                    "xmin",
                    "xmax",
                    "n in range",
                    "KS",
                    "p",
                    "scale-free",
                ],
                [
                    [
                        r["node_layer"],
                        _num(c["alpha"]),
                        _num(c["alpha_se"]),
                        _num(c["xmin"]),
                        _num(c["xmax"]),
                        _num(c["n_in_range"]),
                        _num(c["ks"]),
                        _num(c["p"]),
                        "yes" if c["scale_free"] else "no",
                    ]
                    for r in fitted
                    for c in [r["fit_columns"]]
                ],
            )
        )
        for r in fitted:
            out.append(f"  {r['node_layer']}: {r['fit_columns']['verdict']}")
    out.extend(_connectivity_lines(summary))
    if summary.skipped:
        names = sorted(summary.skipped)
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        out.append(f"\nskipped (not weight layers): {shown}")
    for note in summary.notes:
        out.append(f"note: {note}")
    for problem in summary.problems:
        out.append(f"warning: {problem}")
    return "\n".join(out)


def _connectivity_lines(summary: NetworkSummary) -> list[str]:
    lines = []
    c = summary.connectivity
    if c is not None:
        cut_in = ", ".join(f"{n['node_layer']} {n['cut_from_input']}" for n in c["node_layers"]
                           if n["cut_from_input"])  # fmt: skip
        cut_out = ", ".join(f"{n['node_layer']} {n['cut_from_output']}" for n in c["node_layers"]
                            if n["cut_from_output"])  # fmt: skip
        lines += [
            "",
            f"effective connectivity: {c['effective_nnz']:,} of {c['nnz']:,} connections lie on "
            f"an input-to-output path (effective density {_num(c['effective_density'])}, "
            f"density {_num(c['density'])})",
            f"  nodes cut off from the input: {cut_in or 'none'}; "
            f"that cannot reach the output: {cut_out or 'none'}",
        ]
    if summary.spectral:
        lines += ["", _table(
            ["layer", "s1", "s2", "gap", "Ramanujan bound", "s2 <= bound",
             "random s2", "random gap"],
            [[r["layer"], _num(r["s1"]), _num(r["s2"]), _num(r["spectral_gap"]),
              _num(r["ramanujan_bound"]), "yes" if r["below_bound"] else "no",
              _num(r["random_s2"]), _num(r["random_spectral_gap"])] for r in summary.spectral],
        )]  # fmt: skip
    return lines


def to_json(summary: NetworkSummary) -> str:
    payload = {
        "source": summary.source,
        "view": summary.view,
        "totals": summary.totals,
        "layers": summary.layers,
        "node_layers": summary.node_layers,
        "skipped": summary.skipped,
        "notes": summary.notes,
        "problems": summary.problems,
        "connectivity": summary.connectivity,
        "spectral": summary.spectral,
    }
    return json.dumps(payload, indent=1, default=_json_default)


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(summary: NetworkSummary, folder: str | Path) -> list[Path]:
    """``layers.csv`` and ``node_layers.csv`` in ``folder``, written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in (
        ("layers.csv", layer_rows(summary)),
        ("node_layers.csv", node_rows(summary)),
    ):
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(_csv_text(rows))
        tmp.replace(path)
        written.append(path)
    return written


def degrees_payload(network: SparseNetwork, view: str) -> dict:
    """Full degree arrays of every node layer (``topoprune degrees --json``)."""
    return {
        "source": network.source,
        "view": view,
        "chained": list(network.chain),
        "node_layers": [
            {
                "name": n.name,
                "role": n.role,
                "source": n.source,
                "target": n.target,
                "in": n.in_degree.tolist(),
                "out": n.out_degree.tolist(),
                "total": n.total_degree.tolist(),
            }
            for n in network.node_layers(view)
        ],
    }


def degrees_csv(payload: dict) -> str:
    """Long format: ``node_layer,node,in,out,total``, one row per node."""
    lines = ["node_layer,node,in,out,total"]
    for n in payload["node_layers"]:
        for i, (a, b, c) in enumerate(zip(n["in"], n["out"], n["total"])):
            lines.append(f"{n['name']},{i},{a},{b},{c}")
    return "\n".join(lines) + "\n"
