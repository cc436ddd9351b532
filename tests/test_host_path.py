"""The host path of a loss call stays short (issue 15, item 4): at common 2-D sizes the GPU finishes
a fused loss in microseconds, so the Python work around the launches sets the speed.

bench/host_overhead.py counts, for one forward (the public call) and one backward, the Python
function calls, torch function calls and dispatched ops (the Triton launches stubbed out under
the interpreter; the 'cpu' backend's count ends at its C++ op). The budgets below are those counts
as measured on 2026-12-01 (bench/results/host-overhead-2026-12-01, torch 2.14.1) plus about 20%:
a change that adds work to every call fails here. Lower a budget when the path gets shorter; a
torch upgrade may move the counts of torch's own Python frames (part of the Python calls).
"""

import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch

import fusedloss

_SPEC = importlib.util.spec_from_file_location(
    "host_overhead", Path(__file__).resolve().parents[1] / "bench" / "host_overhead.py")
host_overhead = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(host_overhead)

# (backend, loss): {phase: (Python calls, fusedloss's own Python calls, torch function calls, dispatched ops)},
# as measured (1K elements; bench/results/host-overhead-2026-12-01/results.json, the "after" tree).
MEASURED = {
    ("triton", "dice"): {"forward": (110, 63, 34, 8), "backward": (71, 27, 18, 5)},
    ("triton", "dice_module"): {"forward": (113, 64, 34, 8), "backward": (71, 27, 18, 5)},
    ("triton", "focal"): {"forward": (103, 56, 34, 8), "backward": (71, 27, 18, 5)},
    ("triton", "dice_bce"): {"forward": (116, 67, 34, 8), "backward": (71, 27, 18, 5)},
    ("triton", "dice_ce"): {"forward": (119, 66, 50, 9), "backward": (70, 21, 22, 5)},
    ("triton", "lovasz_hinge"): {"forward": (73, 40, 90, 36), "backward": (90, 37, 65, 16)},
    ("cpu", "dice"): {"forward": (35, 29, 12, 4), "backward": (18, 1, 3, 9)},
    ("cpu", "dice_module"): {"forward": (38, 30, 12, 4), "backward": (18, 1, 3, 9)},
    ("cpu", "focal"): {"forward": (28, 22, 12, 4), "backward": (18, 1, 3, 9)},
    ("cpu", "dice_bce"): {"forward": (41, 33, 12, 4), "backward": (18, 1, 3, 9)},
    ("cpu", "dice_ce"): {"forward": (43, 35, 18, 4), "backward": (18, 1, 3, 13)},
    ("cpu", "lovasz_hinge"): {"forward": (23, 17, 38, 24), "backward": (21, 2, 6, 12)},
}
WHAT = ("Python calls", "fusedloss's own Python calls", "torch function calls", "dispatched ops")


def budget(measured: int) -> int:
    """About 20% over the measurement, and at least 2 over it (small counts)."""
    return max(math.ceil(measured * 1.2), measured + 2)


def _skip_reason(backend: str):
    if backend == "triton":
        if os.environ.get("TRITON_INTERPRET") != "1" or torch.cuda.is_available():
            return "the Triton path is counted under the interpreter, launches stubbed (no GPU)"
    elif backend not in fusedloss.available_backends("cpu"):
        return f"the {backend!r} backend is not available here"
    return None


@pytest.mark.parametrize("backend, loss", list(MEASURED), ids=[f"{b}-{loss}" for b, loss in MEASURED])
def test_host_path_within_budget(backend, loss):
    reason = _skip_reason(backend)
    if reason:
        pytest.skip(reason)
    counts = host_overhead.count_case(loss, backend)
    over = []
    for phase, measured in MEASURED[(backend, loss)].items():
        entry = counts[phase]
        now = (entry["python"]["total"], entry["python"]["fusedloss"], entry["torch_functions"]["total"],
               entry["dispatched_ops"]["total"])
        for what, count, was in zip(WHAT, now, measured):
            if count > budget(was):
                over.append(f"{phase}: {count} {what} (measured {was}, budget {budget(was)})")
        if over and phase == "forward":
            over.append(f"forward's own calls: {entry['python']['fusedloss_by_name']}")
    assert not over, f"{backend} {loss}: the host path grew:\n" + "\n".join(over)


def test_counts_see_the_launches_and_the_kernels_work():
    """The counters see inside the fused ops: the Triton launcher's allocations (a mode leaves itself
    while it runs the call it intercepted), and the launches themselves."""
    if _skip_reason("triton"):
        pytest.skip(_skip_reason("triton"))
    counts = host_overhead.count_case("dice", "triton")
    assert counts["forward"]["launches"] == ["_stats_kernel", "_finalize_kernel"]
    assert counts["backward"]["launches"] == ["_backward_kernel"]
    forward_ops = counts["forward"]["dispatched_ops"]["by_name"]
    assert forward_ops.get("fusedloss_triton.binary_loss.default") == 1 and forward_ops.get("aten.empty.memory_format")
    assert counts["forward"]["torch_functions"]["by_name"].get("torch.empty")
