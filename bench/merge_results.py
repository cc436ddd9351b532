"""Merge the results.json of several bench/main.py runs of the same preset into one
results.json, results.md and throughput.png (bench/gpu_check.sh runs the fused providers
and eager first, torch.compile last, each with its own time budget):

    python bench/merge_results.py OUTDIR first/results.json second/results.json ...

Rows keep their measurements; the comparisons are recomputed across the runs ("vs
compile" of a fused row comes from the compile run's row of the same case: loss, shape,
layout, variant, dtypes and mode), and each
later run's rows follow the first run's rows of the same case. Metadata is the first
run's, with each run's own under "runs"; notes are prefixed with their run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _report  # noqa: E402

_DERIVED = ("speedup_vs_eager", "speedup_vs_compile", "speedup_vs_smp", "speedup_vs_monai")


def merge(documents: list[dict]) -> tuple[dict, list[dict], list[str]]:
    order = {}  # case key -> position of the case in the merged table
    by_case = []
    for document in documents:
        for row in document["rows"]:
            row.setdefault("variant", "")  # a run from before variants: the plain call
            key = _report._case_key(row)
            if key not in order:
                order[key] = len(by_case)
                by_case.append([])
            by_case[order[key]].append(row)
    rows = [row for group in by_case for row in group]
    # Loss-value notes were added by each run against its own eager row: recompute all.
    for row in rows:
        for field in _DERIVED:
            row[field] = None
        row["note"] = "; ".join(part for part in row["note"].split("; ") if " vs eager " not in part)
    _report.add_comparisons(rows)

    meta = dict(documents[0]["meta"])
    meta["runs"] = [
        {key: document["meta"].get(key) for key in ("date", "elapsed_s", "copy_gbps")}
        | {"providers": sorted({row["provider"] for row in document["rows"]}), "rows": len(document["rows"])}
        for document in documents
    ]
    notes = []
    for index, document in enumerate(documents, 1):
        providers = ",".join(meta["runs"][index - 1]["providers"]) or "nothing measured"
        notes += [f"run {index} ({providers}): {note}" for note in document.get("notes", [])]
    return meta, rows, notes


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    documents = []
    for name in argv[1:]:
        try:
            documents.append(json.loads(Path(name).read_text()))
        except (OSError, ValueError) as error:
            print(f"{name}: not read ({error})", file=sys.stderr)
    if not documents:
        return 1
    meta, rows, notes = merge(documents)
    out.mkdir(parents=True, exist_ok=True)
    problem = _report.write_plot(out / _report.PLOT_NAME, meta, rows)
    if problem:
        notes.append(problem)
    _report.write_json(out / _report.JSON_NAME, meta, rows, notes)
    _report.write_markdown(out / _report.MARKDOWN_NAME, meta, rows, notes)
    print(_report.format_table(rows))
    for note in notes:
        print(f"note: {note}")
    print(f"merged {len(rows)} row(s) from {len(documents)} run(s) into {out}")
    return 0 if len(documents) == len(argv) - 1 else 1


if __name__ == "__main__":
    sys.exit(main())
