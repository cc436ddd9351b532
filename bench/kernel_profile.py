"""Where the time of one fused loss call goes, kernel by kernel (torch.profiler),
for a few realistic cases on every fused CUDA backend; run by bench/gpu_check.sh:

    python bench/kernel_profile.py

Prints, per (case, backend), each kernel's mean device time over the profiled
fwd+bwd steps: the benchmark's totals say how fast, this says which launch
(statistics, finalize, backward) to work on. The Triton multi-class case at 19 classes runs
once more with its streaming loops not pipelined (multiclass_triton.PIPELINE_STAGES = 1): the compiled code
alone cannot say whether the pipelined loops' extra instructions pay for the loads they keep in
flight (bench/README.md). Exits non-zero if a backend named in
FUSEDLOSS_EXPECT_BACKENDS cannot run on CUDA (its rows would be missing silently).
"""

from __future__ import annotations

import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import fusedloss
from fusedloss.kernels import multiclass_triton

STEPS = 10
CASES = (  # (loss, mode, logits shape, target: None = same shape (binary), else class map)
    ("dice", "binary", (16, 1, 512, 512)),
    ("dice", "multiclass", (4, 19, 256, 256)),
    ("dice_ce", "multiclass", (2, 150, 128, 128)),
)


def _inputs(mode, shape, device):
    x = torch.randn(shape, device=device)
    if mode == "binary":
        return x, torch.rand(shape, device=device) < 0.4
    return x, torch.randint(0, shape[1], (shape[0], *shape[2:]), device=device, dtype=torch.uint8)


def _step(name, mode, x, t, backend):
    options = {"mode": mode} if name != "dice_ce" else {}
    fn = fusedloss.DiceCELoss if name == "dice_ce" else fusedloss.DiceLoss
    loss = fn(backend=backend, **options)(x, t)
    loss.backward()


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    device = torch.device("cuda")
    expected = [name for name in os.environ.get("FUSEDLOSS_EXPECT_BACKENDS", "").split(",") if name]
    missing = [
        (family, name)
        for family in ("binary", "multiclass")
        for name in expected
        if name not in fusedloss.available_backends(device, family)
    ]
    for family, name in missing:
        print(
            f"{family} {name}: EXPECTED BACKEND MISSING "
            f"({fusedloss.ops.selection.unavailable_reason(name, device, family)})"
        )
    pipelined = multiclass_triton.PIPELINE_STAGES
    for name, mode, shape in CASES:
        family = "binary" if mode == "binary" else "multiclass"
        for backend in [b for b in fusedloss.available_backends(device, family) if b != "reference"]:
            if backend == "triton" and family == "multiclass" and shape[1] <= 32:  # one case: the step's time
                for stages in (pipelined, 1):
                    multiclass_triton.PIPELINE_STAGES = stages
                    _profile_case(name, mode, shape, device, backend, f"{backend} (loop stages {stages})")
                multiclass_triton.PIPELINE_STAGES = pipelined
            else:
                _profile_case(name, mode, shape, device, backend, backend)
    return 1 if missing else 0


def _profile_case(name, mode, shape, device, backend, label):
    x, t = _inputs(mode, shape, device)
    x.requires_grad_(True)
    for _ in range(3):  # compile and warm up outside the profile
        _step(name, mode, x, t, backend)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            _step(name, mode, x, t, backend)
        torch.cuda.synchronize()
    kernels = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(event.name, []).append(event.device_time)
    total = sum(sum(times) for times in kernels.values()) / STEPS
    print(
        f"\n{name} {mode} {'x'.join(map(str, shape))} fp32 fwd+bwd, backend {label}: "
        f"{total:.1f} us of kernels per step"
    )
    for kernel, times in sorted(kernels.items(), key=lambda item: -sum(item[1])):
        print(f"  {sum(times) / STEPS:9.1f} us  x{len(times) / STEPS:g}  {kernel[:100]}")


if __name__ == "__main__":
    sys.exit(main())
