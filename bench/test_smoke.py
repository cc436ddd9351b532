"""CI smoke test of the benchmark: bench/main.py's entry point, in-process, smoke preset.

Runs dice and focal at 64K elements, fp32, eager plus every fused backend (on a CPU-only
machine the Triton kernels through the interpreter), then checks the written reports and
that the fused path keeps less memory for backward than the eager reference.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import _report

BENCH_DIR = Path(__file__).resolve().parent


def _load_main():
    # Loaded by path under its own name: a bare `import main` could pick another module.
    spec = importlib.util.spec_from_file_location("fusedloss_bench_main", BENCH_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_preset_writes_reports_and_fused_saves_less(tmp_path):
    argv = ["--preset", "smoke", "--out", str(tmp_path)]
    if not torch.cuda.is_available():
        argv.append("--with-triton-interpreter")
    exit_code = _load_main().main(argv)

    document = json.loads((tmp_path / _report.JSON_NAME).read_text())
    expected_columns = [key for key, _, _ in _report.COLUMNS]
    assert document["columns"] == expected_columns
    assert {"device", "copy_gbps", "torch", "preset"} <= set(document["meta"])
    rows = document["rows"]
    assert rows, document["notes"]
    for row in rows:
        assert set(expected_columns) <= set(row)
        assert row["status"] == "ok", row
        assert row["floor_bytes"] == row["numel"] * 20  # fp32 logits + fp32 target, fwd+bwd
        assert row["time_ms"] > 0 and row["gbps"] > 0 and 0 < row["roofline"]

    markdown = (tmp_path / _report.MARKDOWN_NAME).read_text()
    header_line = next(line for line in markdown.splitlines() if line.startswith("| loss"))
    assert [cell.strip() for cell in header_line.strip("|").split("|")] == [header for _, header, _ in _report.COLUMNS]

    eager = {row["loss"]: row for row in rows if row["provider"] == "eager"}
    fused = [row for row in rows if row["provider"] not in ("eager", "compile")]
    if not fused:
        pytest.skip(f"no fused backend ran here: {document['notes']}")
    for row in fused:
        assert row["extra_mem_bytes"] < eager[row["loss"]]["extra_mem_bytes"], row
    assert exit_code == 0
