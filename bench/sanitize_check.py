"""A small forward+backward of every loss on every fused CUDA backend, to run
under compute-sanitizer (memcheck, racecheck) from bench/gpu_check.sh:

    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/sanitize_check.py

Exits non-zero if a loss is not finite; the sanitizer's own report is the point.
"""

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
    for family, losses in (("sigmoid", fusedloss.LOSSES), ("softmax", fusedloss.MULTICLASS_LOSSES)):
        backends = [b for b in fusedloss.available_backends(device, family) if b != "reference"]
        for backend in backends:
            for dtype in (torch.float32, torch.bfloat16):
                if family == "sigmoid":
                    x = torch.randn(2, 3, 33, 17, device=device, dtype=dtype)
                    t = torch.rand(2, 3, 33, 17, device=device) < 0.4
                else:
                    x = torch.randn(2, 5, 9, 13, device=device, dtype=dtype)
                    t = torch.randint(0, 5, (2, 9, 13), device=device, dtype=torch.uint8)
                    t[0, 0, :4] = 255
                for name, fn in losses.items():
                    options = {}
                    if family == "softmax":
                        options = {"ignore_index": 255} | ({} if name == "dice_ce" else {"mode": "multiclass"})
                    logits = x.clone().requires_grad_(True)
                    loss = fn(logits, t, backend=backend, **options)
                    loss.backward()
                    torch.cuda.synchronize()
                    ok = bool(torch.isfinite(loss).all()) and bool(torch.isfinite(logits.grad).all())
                    failures += not ok
                    print(f"{family} {backend} {name} {dtype}: {'ok' if ok else 'NOT FINITE'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
