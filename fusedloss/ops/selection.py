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
import warnings

import torch

from . import cpp_ops

BACKENDS = ("triton", "cuda", "cpu", "reference")
# By device type, for both loss families. Triton before CUDA C++ until a GPU benchmark
# says otherwise. On the CPU (bench/results/cpu-quick-*.md) the C++ kernels beat the
# eager reference for both families at realistic sizes. The interpreter is for
# testing: 'auto' never picks Triton on the CPU.
AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}
DEFAULT_AUTO_ORDER = ("reference",)
# The user's word (a loss's ``mode``) -> the family of ops that runs it.
FAMILY_OF_MODE = {"binary": "binary", "multilabel": "binary", "multiclass": "multiclass"}
ENV_VAR = "FUSEDLOSS_BACKEND"
# Set to 1 to use the reference where no fused backend runs without being warned.
ALLOW_REFERENCE_VAR = "FUSEDLOSS_ALLOW_REFERENCE"
_warned_fallback = set()  # device types

_TRITON_INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_import_error() -> str | None:
    try:
        from . import triton_ops

        triton_ops.load()
    except ImportError as error:  # no Triton, or one too old to import the kernels
        return f"Triton is not importable ({error})"
    return None


_TRITON_ERROR = _triton_import_error()


TRITON_MAX_CLASSES = 4096  # kernels/multiclass_triton.py keeps a pixel's logits in registers


def unavailable_reason(backend: str, device: torch.device, family: str = "binary", classes: int = 0) -> str | None:
    """None if ``backend`` can run the ``family``'s ops ('binary' or 'multiclass',
    with ``classes`` classes) on ``device``, else why not. Every backend that runs a
    loss also synchronises its statistics (sync=True)."""
    if backend == "reference":
        return None
    if backend in ("cpu", "cuda"):  # the C++ backends run on their own device type
        if device.type != backend:
            return f"the {backend!r} backend runs on {backend} tensors (got {device.type})"
        return cpp_ops.unavailable_reason(device.type, family)
    if backend == "triton":
        if _TRITON_ERROR is not None:
            return _TRITON_ERROR
        if family == "multiclass" and classes > TRITON_MAX_CLASSES:
            return f"the Triton softmax kernels take at most {TRITON_MAX_CLASSES} classes (got {classes})"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and _TRITON_INTERPRETER:
            return None
        return (
            f"Triton kernels run on CUDA tensors (got {device.type}); on CPU only under the Triton "
            "interpreter, TRITON_INTERPRET=1 set before importing fusedloss"
        )
    raise ValueError(f"unknown backend {backend!r}; expected one of {('auto',) + BACKENDS}")


def available_backends(device="cpu", mode: str = "binary") -> list[str]:
    """The backends that can run the losses of ``mode`` ('binary', 'multilabel' or
    'multiclass', as the losses' ``mode`` argument) on ``device``."""
    if mode not in FAMILY_OF_MODE:
        raise ValueError(f"mode must be one of {tuple(FAMILY_OF_MODE)}, got {mode!r}")
    device = torch.device(device)
    return [name for name in BACKENDS if unavailable_reason(name, device, FAMILY_OF_MODE[mode]) is None]


def backends() -> dict[str, str]:
    """Every backend with the devices it can run on here, or why it cannot, for humans."""
    devices = ("cuda", "cpu")
    report = {}
    for name in BACKENDS:
        reasons = {}  # device -> why the backend cannot run there (empty: it can)
        for device in devices:
            why = unavailable_reason(name, torch.device(device))
            no_gpu = device == "cuda" and not torch.cuda.is_available()
            reasons[device] = (["no CUDA GPU here"] if no_gpu else []) + ([why] if why else [])
        usable = [device for device in devices if not reasons[device]]
        if usable:
            report[name] = "available on " + ", ".join(usable)
        else:  # a C++ backend's reason on the other device is only that it is the other one; each reason once
            shown = [why for device in devices if name not in ("cpu", "cuda") or device == name
                     for why in reasons[device]]
            report[name] = "unavailable: " + "; ".join(dict.fromkeys(shown))
    return report


def _warn_reference_fallback(device: torch.device, family: str, classes: int, order) -> None:
    """Once per device type: 'auto' found no fused backend and runs the reference."""
    if os.environ.get(ALLOW_REFERENCE_VAR) == "1" or device.type in _warned_fallback:
        return
    _warned_fallback.add(device.type)
    reasons = "; ".join(
        f"{name}: {unavailable_reason(name, device, family, classes)}" for name in order if name != "reference"
    )
    warnings.warn(
        f"fusedloss: no fused backend runs on {device.type} tensors here ({reasons}), so backend='auto' uses "
        "the reference: slower and heavier on memory. To fix: pip install --no-build-isolation . with torch "
        f"installed (builds the C++ kernels), or see `python -m fusedloss`. {ALLOW_REFERENCE_VAR}=1 silences this.",
        UserWarning,
        stacklevel=4,
    )


def resolve(
    backend: str, device: torch.device, *, differentiable_target: bool = False, family: str = "binary", classes: int = 0
) -> str:
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
        # Building and warning happen in eager calls only: torch.compile cannot trace them (a
        # compiled call uses what an eager one built, and does not warn).
        eager = not torch.compiler.is_compiling()
        if device.type == "cpu" and eager:
            cpp_ops.ensure_built(announce=True)  # no silent slow path where the C++ kernels can be built
        order = AUTO_ORDER.get(device.type, DEFAULT_AUTO_ORDER)
        chosen = next(name for name in order if unavailable_reason(name, device, family, classes) is None)
        if chosen == "reference" and len(order) > 1 and eager:
            _warn_reference_fallback(device, family, classes, order)
        return chosen
    if backend in ("cpu", "cuda"):
        cpp_ops.ensure_built()  # named explicitly: worth compiling csrc/ once
    reason = unavailable_reason(backend, device, family, classes)
    if reason is not None:
        raise ValueError(f"{source}={backend!r} cannot run this call: {reason}")
    if differentiable_target and backend != "reference":
        raise ValueError(
            f"{source}={backend!r} does not differentiate w.r.t. target or weight, and one "
            "requires grad; detach it or use backend='reference'"
        )
    return backend
