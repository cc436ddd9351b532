"""Which backends exist, which can run given tensors, and which one a call uses.

- 'reference': plain PyTorch + autograd (``fusedloss/reference.py``); runs anywhere.
- 'triton': the fused Triton kernels; on CUDA tensors when Triton imports, and on
  CPU tensors only under the Triton interpreter (TRITON_INTERPRET=1 set before
  fusedloss is imported; for testing, it is slow).
- 'cuda', 'cpu': the C++ extension's CUDA and CPU kernels (csrc/, ``cpp_ops.py``).
  Naming one explicitly builds the extension on first use if it was not installed.

'auto' picks the first backend of the device's ``AUTO_ORDER`` that can run the call; the environment
variable FUSEDLOSS_BACKEND, when set, replaces 'auto' (an explicit backend=
argument wins over it). An explicit backend that cannot run the call raises.
"""

from __future__ import annotations

import os

import torch

from . import cpp_ops

BACKENDS = ("triton", "cuda", "cpu", "reference")
# By device type and loss family. Triton before CUDA C++ until a GPU benchmark says
# otherwise. On the CPU (bench/results/cpu-quick-*.md) the C++ kernels beat the eager
# reference for both families at realistic sizes. The interpreter is for testing:
# 'auto' never picks Triton on the CPU.
AUTO_ORDER = {
    ("cuda", "sigmoid"): ("triton", "cuda", "reference"),
    ("cuda", "softmax"): ("triton", "cuda", "reference"),
    ("cpu", "sigmoid"): ("cpu", "reference"),
    ("cpu", "softmax"): ("cpu", "reference"),
}
DEFAULT_AUTO_ORDER = ("reference",)
CPP_BACKEND_DEVICE = {"cuda": "cuda", "cpu": "cpu"}
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


TRITON_MAX_CLASSES = 4096  # kernels/softmax_triton.py keeps a pixel's logits in registers


def unavailable_reason(backend: str, device: torch.device, family: str = "sigmoid", classes: int = 0,
                       sync: bool = False) -> str | None:
    """None if ``backend`` can run the ``family``'s ops ('sigmoid' or 'softmax',
    with ``classes`` classes) on ``device`` (with statistics synchronised across
    processes if ``sync``), else why not."""
    if backend == "reference":
        return None
    if backend in CPP_BACKEND_DEVICE:
        if device.type != CPP_BACKEND_DEVICE[backend]:
            return f"the {backend!r} backend runs on {CPP_BACKEND_DEVICE[backend]} tensors (got {device.type})"
        reason = cpp_ops.unavailable_reason(device.type, family)
        if reason is None and sync and not cpp_ops.has_built(f"{family}_stats", device.type):
            return f"the {backend!r} backend does not synchronise statistics across processes (sync=True) yet"
        return reason
    if backend == "triton":
        if _TRITON_ERROR is not None:
            return _TRITON_ERROR
        if family == "softmax" and classes > TRITON_MAX_CLASSES:
            return f"the Triton softmax kernels take at most {TRITON_MAX_CLASSES} classes (got {classes})"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and _TRITON_INTERPRETER:
            return None
        return (f"Triton kernels run on CUDA tensors (got {device.type}); on CPU only under the Triton "
                "interpreter, TRITON_INTERPRET=1 set before importing fusedloss")
    raise ValueError(f"unknown backend {backend!r}; expected one of {('auto',) + BACKENDS}")


def available_backends(device="cpu", family: str = "sigmoid") -> list[str]:
    """The backends that can run the ``family``'s losses ('sigmoid': binary and
    multi-label; 'softmax': multi-class) on ``device``."""
    device = torch.device(device)
    return [name for name in BACKENDS if unavailable_reason(name, device, family) is None]


def backends() -> dict[str, str]:
    """Every backend with the devices it can run on here, or why it cannot, for humans."""
    devices = ["cuda"] if torch.cuda.is_available() else []
    devices.append("cpu")
    report = {}
    for name in BACKENDS:
        usable = [d for d in devices if unavailable_reason(name, torch.device(d)) is None]
        if usable:
            report[name] = "available on " + ", ".join(usable)
        elif name in ("triton", "cuda") and not torch.cuda.is_available():
            why_not_cpu = "" if name == "cuda" else f"; {unavailable_reason(name, torch.device('cpu'))}"
            cuda_reason = unavailable_reason(name, torch.device("cuda"))
            built = "" if cuda_reason is None or "runs on" in cuda_reason else f"; {cuda_reason}"
            report[name] = f"unavailable: no CUDA GPU here{built}{why_not_cpu}"
        else:
            report[name] = "unavailable: " + unavailable_reason(name, torch.device(devices[0]))
    return report


def resolve(backend: str, device: torch.device, *, differentiable_target: bool = False, family: str = "sigmoid",
            classes: int = 0, sync: bool = False) -> str:
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
        order = AUTO_ORDER.get((device.type, family), DEFAULT_AUTO_ORDER)
        return next(name for name in order if unavailable_reason(name, device, family, classes, sync) is None)
    if backend in CPP_BACKEND_DEVICE and not sync:
        cpp_ops.ensure_built()  # named explicitly: worth compiling csrc/ once
    reason = unavailable_reason(backend, device, family, classes, sync)
    if reason is not None:
        raise ValueError(f"{source}={backend!r} cannot run this call: {reason}")
    if differentiable_target and backend != "reference":
        raise ValueError(f"{source}={backend!r} does not differentiate w.r.t. target or weight, and one "
                         "requires grad; detach it or use backend='reference'")
    return backend
