"""The loss calls whose kernel launches the compiled-code report (bench/triton_report.py) and
its budget test (tests/test_compiled_budgets.py) compile for sm_90: each Triton kernel in its
common configurations, fp32 and bf16 logits, at the block sizes and warps the CUDA plans
choose (tests/triton_aot.py's CUDA_PLANS), with the divisibility a real launch gets (every
size a multiple of 16, aligned tensors) and a main loop of more than one trip.

Run under TRITON_INTERPRET=1 (the launches are recorded as the interpreter runs them)."""

from __future__ import annotations

import json

import pytest
import torch
from triton_aot import record_launches

import fusedloss

LOGIT_DTYPES = (torch.float32, torch.bfloat16)
# Small for the interpreter, large enough for several blocks per program (a loop, not one trip).
BINARY_SHAPE = (2, 1, 256, 256)
MULTICLASS_SHAPES = {4: (2, 4, 128, 128), 19: (2, 19, 64, 64), 150: (2, 150, 16, 16)}


# Issue 15's instruction budgets: warp instructions per element in the main loop of a kernel
# compiled for sm_90 (fp32 logits, uint8 targets), at most; the test allows 10% over.
INSTRUCTION_BUDGETS = {
    ("dice float32", "binary_triton._stats_kernel"): 25,
    ("dice float32", "binary_triton._backward_kernel"): 25,
    ("dice_bce float32", "binary_triton._backward_kernel"): 35,
    ("focal float32", "binary_triton._stats_kernel"): 55,
    ("focal float32", "binary_triton._backward_kernel"): 60,
}
# The multi-class kernels' occupancy goal at up to 32 classes, fp32 and bf16: CTAs per SM, at least.
MULTICLASS_MIN_CTAS = 2
MULTICLASS_OCCUPANCY_CLASSES = (4, 19)


def budget_of(profile: dict) -> int | None:
    """The instruction budget a compiled configuration is held to, if any."""
    kernel = ".".join(profile["kernel"].split(".")[-2:])
    return min((budget for (call, name), budget in INSTRUCTION_BUDGETS.items()
                if name == kernel and call in profile["calls"]), default=None)


def occupancy_goal(profile: dict) -> int | None:
    """The CTAs per SM a compiled configuration must allow, if any: the multi-class streaming
    kernels (statistics, backward) of the calls at MULTICLASS_OCCUPANCY_CLASSES."""
    kernel = profile["kernel"]
    streaming = kernel.endswith(("multiclass_triton._stats_kernel", "multiclass_triton._backward_kernel"))
    small = any(f"C={classes} " in call for call in profile["calls"] for classes in MULTICLASS_OCCUPANCY_CLASSES)
    return MULTICLASS_MIN_CTAS if streaming and small else None


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def planned_calls(only=None):
    """(label, loss function, logits, target, options): the flagship binary losses (Dice, Dice+BCE,
    Focal, its map), the multi-class ones (Dice, Dice+CE, Focal) at 4, 19 and 150 classes, Lovász.
    only: a predicate on the label, to record fewer."""
    for call in _all_calls():
        if only is None or only(call[0]):
            yield call


def _all_calls():
    for dtype in LOGIT_DTYPES:
        name = str(dtype).removeprefix("torch.")
        x = torch.randn(BINARY_SHAPE, generator=_generator(0)).to(dtype)
        t = (torch.rand(BINARY_SHAPE, generator=_generator(1)) < 0.3).to(torch.uint8)
        for loss, options in (("dice", {}), ("dice_bce", {}), ("focal", {}), ("focal", {"reduction": "none"})):
            label = f"{loss}{'_map' if options else ''} {name}"
            yield label, fusedloss.LOSSES[loss], x, t, options
        for classes, shape in MULTICLASS_SHAPES.items():
            x = torch.randn(shape, generator=_generator(classes)).to(dtype)
            y = torch.randint(0, classes, shape[:1] + shape[2:], generator=_generator(classes))
            for loss, options in (("dice", {"mode": "multiclass"}), ("dice_ce", {}),
                                  ("focal", {"mode": "multiclass"})):
                yield f"{loss} C={classes} {name}", fusedloss.MULTICLASS_LOSSES[loss], x, y, options
        x = torch.randn(BINARY_SHAPE, generator=_generator(2)).to(dtype)
        yield f"lovasz_hinge {name}", fusedloss.lovasz_hinge_loss, x, t, {}
        x = torch.randn(MULTICLASS_SHAPES[19], generator=_generator(3)).to(dtype)
        y = torch.randint(0, 19, (2, 64, 64), generator=_generator(4))
        yield f"lovasz_softmax C=19 {name}", fusedloss.lovasz_softmax_loss, x, y, {}


def record(path, only=None) -> list[dict]:
    """Run the planned calls (forward and backward) on the Triton backend, record their launches,
    each tagged with the call that made it ("calls"), and write them to ``path`` as JSON."""
    launches = []
    for label, fn, x, t, options in planned_calls(only):
        with pytest.MonkeyPatch.context() as monkeypatch:
            recorded = record_launches(monkeypatch)
            x = x.detach().requires_grad_(True)
            torch.autograd.grad(fn(x, t, backend="triton", **options).sum(), x)
        launches += [dict(launch, calls=[label]) for launch in recorded.values()]
    with open(path, "w") as f:
        json.dump(launches, f)
    return launches


if __name__ == "__main__":  # python tests/planned_launches.py LAUNCHES.json, under TRITON_INTERPRET=1
    import sys

    record(sys.argv[1])
