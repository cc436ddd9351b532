"""pytest setup for bench/: the import path of its modules and the benchmark suite's options."""

import os
import sys
from pathlib import Path

import torch

# Whatever pytest's import mode, bench/'s own modules (_cases, _run, ...) import by name.
BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _cases import PRESET_NAMES  # noqa: E402

# TRITON_INTERPRET is read when fusedloss is first imported, which the benchmark suite does
# at collection. Without CUDA, turn it on here so that the smoke test can run the Triton
# kernels; whether a run uses them on CPU is still decided by its own options.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_addoption(parser):
    group = parser.getgroup("fusedloss benchmarks (bench/test_bench_losses.py)")
    group.addoption("--bench-preset", default="quick", choices=PRESET_NAMES, help="case list (default: quick)")
    group.addoption("--bench-device", default=None, help="cuda, cuda:1 or cpu (default: cuda if present)")
    group.addoption("--bench-losses", default=None,
                    help="comma-separated loss names, e.g. dice,multiclass_dice (default: the preset's)")
    group.addoption("--bench-providers", default=None, help="comma-separated: eager, compile, backend names, fused")
    group.addoption(
        "--bench-triton-interpreter", action="store_true", help="on CPU, also time Triton kernels in the interpreter"
    )
