"""What fusedloss runs on here: ``python -m fusedloss`` (or ``python -m fusedloss.info``).

Prints the versions that matter (Python, torch, CUDA, Triton, the C++ compiler,
ninja), where fusedloss and its C++ extension were loaded from, and every
backend with its status and the reason when it cannot run. With ``--check`` it
first builds what is missing and can be built (the C++ extension, with ninja),
then runs a tiny forward and backward of every loss on every backend that can
run it, against the reference, and exits 1 if one disagrees or fails.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import shutil
import subprocess
import sys

import torch

import fusedloss
from fusedloss.ops import cpp_ops

# Tolerances of the tiny check: fp32 on small tensors (the test suite holds the real ones).
_RTOL, _ATOL = 1e-4, 1e-5


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"not found ({error.__class__.__name__})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else f"exit status {out.returncode}"


def _triton_version() -> str:
    try:
        import triton
    except ImportError as error:
        return f"not importable ({error})"
    return triton.__version__


def _extension_location() -> str:
    module = sys.modules.get("fusedloss._C")
    if module is not None:
        return getattr(module, "__file__", "fusedloss._C")
    if cpp_ops.unavailable_reason("cpu") is None:
        return "compiled on first use (torch.utils.cpp_extension, TORCH_EXTENSIONS_DIR)"
    return f"not loaded: {cpp_ops.unavailable_reason('cpu')}"


def report() -> list[str]:
    """The report's lines."""
    from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available

    compiler = os.environ.get("CXX", "c++")
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    devices = [f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cuda: none", "cpu"]
    lines = [
        f"fusedloss {fusedloss.__version__} from {os.path.dirname(fusedloss.__file__)}",
        f"python {platform.python_version()} ({sys.executable})",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU build'})",
        f"triton {_triton_version()}",
        f"devices: {', '.join(devices)}",
        f"C++ compiler ({compiler}): {_first_line([compiler, '--version']) if shutil.which(compiler) else 'not found'}",
        f"nvcc: {_first_line([nvcc, '--version'] if nvcc and os.path.exists(nvcc) else ['nvcc', '--version'])}",
        f"ninja: {'yes' if is_ninja_available() else 'no (pip install ninja)'}",
        f"C++ extension fusedloss._C: {_extension_location()}",
        "backends:",
    ]
    lines += [f"  {name}: {status}" for name, status in fusedloss.backends().items()]
    return lines


def _tiny_inputs(mode: str, device: str):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=generator)
    if mode == "multiclass":
        t = torch.randint(0, 3, (2, 5, 7), generator=generator)
    else:
        t = (torch.rand(2, 3, 5, 7, generator=generator) < 0.4).float()
    return x.to(device), t.to(device)


def check() -> list[str]:
    """Every loss x mode x device x fused backend that can run it, against the
    reference (loss and gradient); the failures' lines (empty: all agree)."""
    failures = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for mode, losses in (("binary", fusedloss.LOSSES), ("multiclass", fusedloss.MULTICLASS_LOSSES)):
        for device in devices:
            backends = [name for name in fusedloss.available_backends(device, mode) if name != "reference"]
            for loss_name, loss in losses.items():
                takes_mode = "mode" in inspect.signature(loss).parameters  # not Dice+BCE, Dice+CE
                options = {"mode": mode} if takes_mode else {}
                x, t = _tiny_inputs(mode, device)
                expected_x = x.clone().requires_grad_()
                expected = loss(expected_x, t, backend="reference", **options)
                (expected_grad,) = torch.autograd.grad(expected, expected_x)
                for backend in backends:
                    where = f"{loss_name} mode={mode} on {device} with backend={backend}"
                    try:
                        x_ = x.clone().requires_grad_()
                        value = loss(x_, t, backend=backend, **options)
                        (grad,) = torch.autograd.grad(value, x_)
                        torch.testing.assert_close(value, expected, rtol=_RTOL, atol=_ATOL)
                        torch.testing.assert_close(grad, expected_grad, rtol=_RTOL, atol=_ATOL)
                    except Exception as error:  # a failure of any kind is reported, not raised
                        failures.append(f"{where}: {type(error).__name__}: {str(error).splitlines()[0]}")
                    else:
                        print(f"  ok  {where}")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedloss", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="build what is missing, then check every backend against the reference (exit 1 on a failure)",
    )
    args = parser.parse_args(argv)
    if args.check:
        why_not = cpp_ops.ensure_built(announce=True)
        if why_not is not None:
            print(f"fusedloss: the C++ extension is not available: {why_not}", file=sys.stderr)
    print("\n".join(report()))
    if not args.check:
        return 0
    print("check (tiny inputs, every loss, forward and backward against the reference):")
    failures = check()
    for failure in failures:
        print(f"  FAIL {failure}")
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
