"""Which backends exist, which can run given tensors, and which one a call uses.

- 'reference': plain PyTorch + autograd (``fusedloss/reference.py``); runs anywhere.
- 'triton': the fused Triton kernels; on CUDA tensors when Triton imports, and on
  CPU tensors only under the Triton interpreter (TRITON_INTERPRET=1 set before
  fusedloss is imported; for testing, it is slow).

'auto' picks the first backend of the device's ``AUTO_ORDER`` that can run the call; the environment
variable FUSEDLOSS_BACKEND, when set, replaces 'auto' (an explicit backend=
argument wins over it). An explicit backend that cannot run the call raises.
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("triton", "reference")
# The interpreter is for testing: 'auto' never picks Triton on the CPU.
AUTO_ORDER = {"cuda": ("triton", "reference")}
DEFAULT_AUTO_ORDER = ("reference",)
ENV_VAR = "FUSEDLOSS_BACKEND"

_TRITON_INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_import_error() -> str | None:
    try:
        from . import triton_ops

        triton_ops.load()
    except ImportError as error:  # no Triton, or one too old to import the kernels
        return f"Triton is not importable ({error})"
    return None


_TRITON_ERROR = _triton_import_error()


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """None if ``backend`` can run tensors on ``device``, else why not."""
    if backend == "reference":
        return None
    if backend == "triton":
        if _TRITON_ERROR is not None:
            return _TRITON_ERROR
        if device.type == "cuda":
            return None
        if device.type == "cpu" and _TRITON_INTERPRETER:
            return None
        return (f"Triton kernels run on CUDA tensors (got {device.type}); on CPU only under the Triton "
                "interpreter, TRITON_INTERPRET=1 set before importing fusedloss")
    raise ValueError(f"unknown backend {backend!r}; expected one of {('auto',) + BACKENDS}")


def available_backends(device="cpu") -> list[str]:
    device = torch.device(device)
    return [name for name in BACKENDS if unavailable_reason(name, device) is None]


def backends() -> dict[str, str]:
    """Every backend with the devices it can run on here, or why it cannot, for humans."""
    devices = ["cuda"] if torch.cuda.is_available() else []
    devices.append("cpu")
    report = {}
    for name in BACKENDS:
        usable = [d for d in devices if unavailable_reason(name, torch.device(d)) is None]
        report[name] = ("available on " + ", ".join(usable)) if usable else (
            "unavailable: " + unavailable_reason(name, torch.device(devices[0])))
    return report


def resolve(backend: str, device: torch.device, *, differentiable_target: bool = False) -> str:
    """The backend a call with tensors on ``device`` runs on. ``differentiable_target``:
    the target or weight requires grad, which only the reference differentiates."""
    source = "backend"
    if backend == "auto":
        override = os.environ.get(ENV_VAR, "")
        if override:
            backend, source = override, ENV_VAR
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{source}={backend!r} is not a backend; expected one of {('auto',) + BACKENDS}")
    if backend == "auto":
        if differentiable_target:
            return "reference"  # the fused ops do not differentiate w.r.t. the target
        order = AUTO_ORDER.get(device.type, DEFAULT_AUTO_ORDER)
        return next(name for name in order if unavailable_reason(name, device) is None)
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise ValueError(f"{source}={backend!r} cannot run this call: {reason}")
    if differentiable_target and backend != "reference":
        raise ValueError(f"{source}={backend!r} does not differentiate w.r.t. target or weight, and one "
                         "requires grad; detach it or use backend='reference'")
    return backend
