"""A small forward+backward of every loss on every fused CUDA backend, to run
under compute-sanitizer (memcheck, racecheck) from bench/gpu_check.sh:

    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/sanitize_check.py

Exits non-zero if a loss is not finite, or if a backend named in
FUSEDLOSS_EXPECT_BACKENDS (e.g. triton,cuda,reference) cannot run on CUDA: a missing
backend would otherwise leave its kernels unchecked without a word. The sanitizer's own
report is the point. gpu_check.sh runs it once without the sanitizer first, so that
Triton compiles its kernels before memcheck's clock starts.
"""

import os
import sys

import torch

import fusedloss


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    device = torch.device("cuda")
    torch.manual_seed(0)
    failures = 0
    expected = [name for name in os.environ.get("FUSEDLOSS_EXPECT_BACKENDS", "").split(",") if name]
    checked = []
    for family, losses in (("binary", fusedloss.LOSSES), ("multiclass", fusedloss.MULTICLASS_LOSSES)):
        available = fusedloss.available_backends(device, family)
        for name in expected:
            if name not in available:
                failures += 1
                reason = fusedloss.ops.selection.unavailable_reason(name, device, family)
                print(f"{family} {name}: EXPECTED BACKEND MISSING ({reason})")
        backends = [b for b in available if b != "reference"]
        checked.append(f"{family} {','.join(backends) or 'none'}")
        # Multiclass: 5 classes (a thread a pixel), and in fp32 40 over few pixels (CUDA shares each
        # pixel's classes among 4 threads: the shared-memory merges racecheck should see).
        shapes = [(2, 3, 33, 17)] if family == "binary" else [(2, 5, 9, 13), (1, 40, 5, 7)]
        for backend, dtype, shape in [(b, d, s) for b in backends for d in (torch.float32, torch.bfloat16)
                                      for s in shapes if s == shapes[0] or d == torch.float32]:
            x = torch.randn(*shape, device=device, dtype=dtype)
            if family == "binary":
                t = torch.rand(*shape, device=device) < 0.4
            else:
                t = torch.randint(0, shape[1], (shape[0], *shape[2:]), device=device, dtype=torch.uint8)
                t[0, 0, :4] = 255
            for name, fn in losses.items():
                options = {}
                if family == "multiclass":
                    options = {"ignore_index": 255} | ({} if name == "dice_ce" else {"mode": "multiclass"})
                logits = x.clone().requires_grad_(True)
                loss = fn(logits, t, backend=backend, **options)
                loss.backward()
                torch.cuda.synchronize()
                ok = bool(torch.isfinite(loss).all()) and bool(torch.isfinite(logits.grad).all())
                failures += not ok
                shape_text = "x".join(map(str, shape))
                print(f"{family} {backend} {name} {dtype} {shape_text}: {'ok' if ok else 'NOT FINITE'}")
    failures += _lovasz(device, expected, checked)
    print(f"{failures} problem(s); backends {'; '.join(checked)}")
    return 1 if failures else 0


def _lovasz(device, expected, checked) -> int:
    """The Lovász losses' kernels (errors, row scans with their gather and scatter, chain), with
    ignored elements, per sample and over the batch, rows of several scan chunks."""
    failures = 0
    available = [name for name in fusedloss.BACKENDS if name != "reference"
                 and fusedloss.ops.selection.unavailable_reason(name, device, "lovasz") is None]
    for name in expected:
        if name != "reference" and name not in available:
            failures += 1
            print(f"lovasz {name}: EXPECTED BACKEND MISSING")
    checked.append(f"lovasz {','.join(available) or 'none'}")
    x = torch.randn(2, 1, 97, 101, device=device)
    t = (torch.rand(2, 1, 97, 101, device=device) < 0.4).to(torch.uint8)
    t[0, 0, :3] = 255
    xm = torch.randn(2, 5, 33, 17, device=device)
    tm = torch.randint(0, 5, (2, 33, 17), device=device, dtype=torch.uint8)
    tm[1, :2] = 255
    for backend in available:
        for dtype in (torch.float32, torch.bfloat16):
            for per_sample in (False, True):
                logits, class_logits = (v.to(dtype).requires_grad_(True) for v in (x, xm))
                loss = (fusedloss.lovasz_hinge_loss(logits, t, per_sample=per_sample, ignore_index=255,
                                                    backend=backend)
                        + fusedloss.lovasz_softmax_loss(class_logits, tm, per_sample=per_sample, ignore_index=255,
                                                        backend=backend))
                loss.backward()
                torch.cuda.synchronize()
                ok = all(bool(torch.isfinite(v).all()) for v in (loss, logits.grad, class_logits.grad))
                failures += not ok
                print(f"lovasz {backend} {dtype} per_sample={per_sample}: {'ok' if ok else 'NOT FINITE'}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
