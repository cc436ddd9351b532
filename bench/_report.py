"""Presenting results: derived columns, the console table, JSON, Markdown and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PLOT_NAME = "throughput.png"

# A provider's loss value further than this (relative) from eager's gets a note.
LOSS_VALUE_TOLERANCE = 1e-2


def _fmt_bytes(value):
    if value is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _fmt(spec, suffix=""):
    return lambda value: "-" if value is None else f"{value:{spec}}{suffix}"


# (row key, header, formatter): the one definition of the table, shared by the console
# and the Markdown output.
COLUMNS = (("loss", "loss", str), ("shape", "shape", str), ("layout", "layout", str),
           ("variant", "variant", lambda value: value or "-"), ("dtype", "dtype", str),
           ("target_dtype", "target", str), ("mode", "mode", str), ("provider", "provider", str),
           ("time_ms", "time (ms)", _fmt(".4g")), ("gbps", "GB/s", _fmt(".3g")),
           ("roofline", "% roofline", lambda v: "-" if v is None else f"{100 * v:.1f}%"),
           ("speedup_vs_eager", "vs eager", _fmt(".2f", "x")), ("speedup_vs_compile", "vs compile", _fmt(".2f", "x")),
           ("speedup_vs_smp", "vs smp", _fmt(".2f", "x")), ("speedup_vs_monai", "vs MONAI", _fmt(".2f", "x")),
           ("extra_mem_bytes", "extra mem", _fmt_bytes), ("note", "note", str))


def _case_key(row):
    # Rows written before variants existed have no "variant": the plain call.
    return (row["loss"], row["shape"], row.get("layout"), row.get("variant") or "", row["dtype"], row["target_dtype"],
            row["mode"])


# Providers every row's time is compared with (a "vs <provider>" column each): the reference,
# eager and compiled, and the peers (bench/_peers.py).
SPEEDUP_BASELINES = ("eager", "compile", "smp", "monai")


def add_comparisons(rows: list[dict]):
    """Fill speed-ups against the eager and compile rows of the same case, and flag loss
    values that disagree with eager's (a fast wrong answer is not a result)."""
    baselines = {}
    for row in rows:
        if row["provider"] in SPEEDUP_BASELINES and row["time_ms"] is not None:
            baselines[(_case_key(row), row["provider"])] = row
    for row in rows:
        if row["time_ms"] is None:
            continue
        for provider in SPEEDUP_BASELINES:
            baseline = baselines.get((_case_key(row), provider))
            if baseline is not None:
                row[f"speedup_vs_{provider}"] = baseline["time_ms"] / row["time_ms"]
        eager = baselines.get((_case_key(row), "eager"))
        if eager is not None and row is not eager:
            reference, value = eager["loss_value"], row["loss_value"]
            difference = abs(value - reference) / max(abs(reference), 1e-6)
            if not math.isfinite(value) or difference > LOSS_VALUE_TOLERANCE:
                row["note"] = _join(row["note"], f"loss {value:.6g} vs eager {reference:.6g}")


def _join(*parts):
    return "; ".join(part for part in parts if part)


def _cells(row):
    return [format_(row[key]) for key, _, format_ in COLUMNS]


def format_table(rows: list[dict], note_width: int = 48) -> str:
    headers = [header for _, header, _ in COLUMNS]
    body = []
    for row in rows:
        cells = _cells(row)
        cells[-1] = cells[-1][:note_width]
        body.append(cells)
    widths = [max(len(cell) for cell in column) for column in zip(headers, *body)]
    numeric = {
        header
        for key, header, _ in COLUMNS
        if key.endswith(("_ms", "gbps", "roofline", "bytes")) or key.startswith("speedup")
    }
    lines = []
    for cells in [headers] + body:
        padded = [
            cell.rjust(width) if header in numeric else cell.ljust(width)
            for cell, width, header in zip(cells, widths, headers)
        ]
        lines.append("  ".join(padded).rstrip())
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_markdown(meta: dict, rows: list[dict], notes: list[str]) -> str:
    lines = ["# fusedloss benchmark", ""]
    for key, value in meta.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "Columns, floor and roofline are explained in bench/README.md.", ""]
    lines.append("| " + " | ".join(header for _, header, _ in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row)) + " |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_json(path: Path, meta: dict, rows: list[dict], notes: list[str]):
    document = {"meta": meta, "columns": [key for key, _, _ in COLUMNS], "rows": rows, "notes": notes}
    path.write_text(json.dumps(document, indent=1) + "\n")


def write_markdown(path: Path, meta: dict, rows: list[dict], notes: list[str]):
    path.write_text(format_markdown(meta, rows, notes))


def write_plot(path: Path, meta: dict, rows: list[dict]) -> str | None:
    """Throughput against size, one panel per loss: a colour per provider, a marker per
    (dtype, target dtype), solid for forward+backward and dashed for forward only; a
    multi-class series per class count (its label says C), a series per layout and per
    variant. Returns why no plot was written, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    timed = [row for row in rows if row["gbps"] is not None]
    if not timed:
        return "nothing was timed: no plot"
    losses = list(dict.fromkeys(row["loss"] for row in timed))
    providers = list(dict.fromkeys(row["provider"] for row in timed))
    dtype_pairs = list(dict.fromkeys((row["dtype"], row["target_dtype"]) for row in timed))
    colours = {name: f"C{index % 10}" for index, name in enumerate(providers)}
    markers = {pair: "osv^D<>px*"[index % 10] for index, pair in enumerate(dtype_pairs)}

    peer_rows = [row for row in timed if row.get("speedup_vs_smp") or row.get("speedup_vs_monai")]
    peer_rows = [row for row in peer_rows if row["provider"] not in SPEEDUP_BASELINES]
    panels = len(losses) + (1 if peer_rows else 0)
    columns = min(3, panels)
    panel_rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(panel_rows, columns, figsize=(5.5 * columns, 4.2 * panel_rows), squeeze=False)
    for axis, loss in zip(axes.flat, losses):
        series = {}
        for row in timed:
            if row["loss"] == loss:
                key = (row["provider"], row["dtype"], row["target_dtype"], row["mode"], row.get("classes"),
                       row.get("layout"), row.get("variant") or "")
                series.setdefault(key, []).append((row["numel"], row["gbps"]))
        for (provider, dtype, target_dtype, mode, classes, layout, variant), points in series.items():
            points.sort()
            axis.plot(
                [numel for numel, _ in points],
                [gbps for _, gbps in points],
                color=colours[provider],
                marker=markers[(dtype, target_dtype)],
                linestyle="-" if mode == "fwd+bwd" else "--",
                markersize=4,
                label=f"{provider} {dtype}/{target_dtype} {mode}"
                + ("" if classes is None else f" C={classes}")
                + ("" if layout in (None, "contiguous") else f" {layout}")
                + (f" {variant}" if variant else ""),
            )
        if meta.get("copy_gbps"):
            axis.axhline(meta["copy_gbps"], color="grey", linestyle=":", linewidth=1, label="measured copy bandwidth")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_title(loss)
        axis.set_xlabel("elements")
        axis.set_ylabel("GB/s (floor bytes / median time)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6)
    if peer_rows:
        _peer_panel(list(axes.flat)[len(losses)], peer_rows)
    for axis in list(axes.flat)[panels:]:
        axis.set_visible(False)
    figure.suptitle(
        f"fusedloss throughput on {meta.get('device_name', meta.get('device'))} ({meta.get('preset')} preset)"
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _peer_panel(axis, rows):
    """Each fused row's speed-up over smp and MONAI (their own classes, the same loss): bars."""
    labels = [f"{row['loss']} {row['shape']}{'' if row.get('layout') in (None, 'contiguous') else ' cl'} "
              f"{row['dtype']}/{row['target_dtype']} {row['mode']} {row['provider']}" for row in rows]
    positions = range(len(rows))
    for offset, (key, name, colour) in enumerate((("speedup_vs_smp", "vs smp", "C3"),
                                                  ("speedup_vs_monai", "vs MONAI", "C4"))):
        values = [row.get(key) or 0.0 for row in rows]
        axis.barh([position + 0.4 * offset for position in positions], values, height=0.4, color=colour, label=name)
    axis.axvline(1.0, color="grey", linewidth=1)
    axis.set_xscale("log")
    axis.set_yticks([position + 0.2 for position in positions], labels, fontsize=5)
    axis.invert_yaxis()
    axis.set_xlabel("speed-up: the peer's median time / this row's")
    axis.set_title("vs smp and vs MONAI")
    axis.legend(fontsize=6)

