"""Compare two bench/main.py runs of the same preset case by case (a change's before and after):

    python bench/compare_runs.py OUT.md before1.json,before2.json after1.json,after2.json [--provider cpu]

For each case both sides measured with the provider, the two times and after / before; the
cases only one side has (a new row, say) are listed apart. A ratio above 1 is a slowdown.
Several runs per side (comma-separated) give each case its lowest median over them: run the
sides alternately on one machine with nothing else running (a shared CPU's timings drift).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _report  # noqa: E402


def _timed(documents: list[dict], provider: str) -> dict:
    """Each case's row with the lowest median time over the runs."""
    rows = {}
    for document in documents:
        for row in document["rows"]:
            row.setdefault("variant", "")
            key = _report._case_key(row)
            if row["provider"] == provider and row["time_ms"] is not None:
                if key not in rows or row["time_ms"] < rows[key]["time_ms"]:
                    rows[key] = row
    return rows


def _label(row: dict) -> str:
    variant = f" {row['variant']}" if row.get("variant") else ""
    layout = "" if row.get("layout", "contiguous") == "contiguous" else f" {row['layout']}"
    return f"{row['loss']} {row['shape']}{layout}{variant} {row['dtype']}/{row['target_dtype']} {row['mode']}"


def compare(before: list[dict], after: list[dict], provider: str) -> str:
    old, new = _timed(before, provider), _timed(after, provider)
    common = [key for key in old if key in new]
    lines = ["| case | before (ms) | after (ms) | after / before |", "|---|---|---|---|"]
    for key in common:
        ratio = new[key]["time_ms"] / old[key]["time_ms"]
        lines.append(f"| {_label(old[key])} | {old[key]['time_ms']:.4g} | {new[key]['time_ms']:.4g} | {ratio:.3f} |")
    ratios = sorted(new[key]["time_ms"] / old[key]["time_ms"] for key in common)
    summary = []
    if ratios:
        summary.append(f"{len(ratios)} cases in both runs; after / before: median {ratios[len(ratios) // 2]:.3f}, "
                       f"lowest {ratios[0]:.3f}, highest {ratios[-1]:.3f}.")
    only_new = [_label(new[key]) for key in new if key not in old]
    if only_new:
        summary.append("Only in the second run: " + "; ".join(only_new) + ".")
    def runs(documents):
        return ", ".join(f"{d['meta'].get('commit', '?')[:7]} at {d['meta'].get('date', '?')}" for d in documents)

    meta = [f"- before: {runs(before)}", f"- after: {runs(after)}", f"- provider: {provider}",
            f"- machine: {before[0]['meta'].get('device_name', '?')}, {before[0]['meta'].get('cpu_threads', '?')} "
            f"threads, torch {before[0]['meta'].get('torch', '?')}"]
    return "\n".join(meta + [""] + summary + [""] + lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--provider", default="cpu")
    args = parser.parse_args(argv)
    before, after = ([json.loads(Path(path).read_text()) for path in side.split(",")]
                     for side in (args.before, args.after))
    Path(args.out).write_text(compare(before, after, args.provider))
    return 0


if __name__ == "__main__":
    sys.exit(main())
