"""The C++ backends' ops, ``torch.ops.fusedloss_C.*`` (csrc/): CPU kernels
('cpu' backend) and, when built with CUDA, CUDA kernels ('cuda' backend).

They come from the extension ``fusedloss._C`` that setup.py builds, imported
with fusedloss. Without it, ``build()`` compiles csrc/ with ninja
(torch.utils.cpp_extension.load; once, then cached in TORCH_EXTENSIONS_DIR):
on the first call that names a C++ backend, or via ``fusedloss.build_extension()``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from .schema import FAMILIES, register_fake_and_autograd

NAMESPACE = "fusedloss_C"
CSRC = Path(__file__).resolve().parents[2] / "csrc"
_state = {"loaded": False, "error": None, "tried_build": False}


def _families() -> tuple:
    """The loss families whose ops the loaded library defines."""
    return tuple(family for family in FAMILIES if hasattr(getattr(torch.ops, NAMESPACE), f"{family}_loss"))


def _registered() -> None:
    families = _families()
    register_fake_and_autograd(NAMESPACE, families)
    # What unavailable_reason asks on every loss call, looked up once.
    _state.update(loaded=True, error=None, families=families, kernels={
        (op, device): has_kernel(op, device) for family in families for device in ("cpu", "cuda")
        for op in (f"{family}_loss", f"{family}_stats")})


def load_prebuilt() -> None:
    try:
        importlib.import_module("fusedloss._C")
    except ImportError as error:
        _state["error"] = f"the C++ extension fusedloss._C is not built ({error})"
        return
    _registered()


def _cuda_sources_wanted() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    forced = os.environ.get("FUSEDLOSS_BUILD_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()


def build(verbose: bool = False) -> None:
    """Compile and load the extension from csrc/ unless it is loaded; raise on failure."""
    if _state["loaded"]:
        return
    if not (CSRC / "schema.cpp").exists():
        raise RuntimeError(f"fusedloss._C is not built and its sources are not at {CSRC}")
    from torch.utils.cpp_extension import load

    from .. import _build_flags

    sources = _build_flags.cpp_sources(str(CSRC.parent))
    with_cuda = _cuda_sources_wanted()
    if with_cuda:
        sources += _build_flags.cuda_sources(str(CSRC.parent))
    load(name=NAMESPACE, sources=sources, extra_cflags=_build_flags.CXX, extra_cuda_cflags=_build_flags.nvcc(),
         extra_include_paths=_build_flags.include_dirs(), with_cuda=with_cuda, is_python_module=False,
         verbose=verbose)
    _registered()


def ensure_built() -> str | None:
    """Build once if needed (a failure is remembered); None when loaded, else why not."""
    if not _state["loaded"] and not _state["tried_build"] and os.environ.get("FUSEDLOSS_JIT", "1") != "0":
        _state["tried_build"] = True
        try:
            build()
        except Exception as error:  # a missing compiler, headers, ninja: the backend is then unavailable
            _state["error"] = f"building the C++ extension failed: {error}"
    return None if _state["loaded"] else _state["error"]


def has_kernel(op_name: str, device_type: str) -> bool:
    """Whether the loaded library implements ``op_name`` for the device type."""
    ops = getattr(torch.ops, NAMESPACE)
    return hasattr(ops, op_name) and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"{NAMESPACE}::{op_name}", device_type.upper())


def has_built(op_name: str, device_type: str) -> bool:
    """has_kernel, as found when the library was loaded."""
    return _state.get("kernels", {}).get((op_name, device_type), False)


def unavailable_reason(device_type: str, family: str = "sigmoid") -> str | None:
    if not _state["loaded"]:
        return _state["error"]
    if family not in _state["families"]:
        return f"fusedloss._C has no {family} kernels"
    if device_type == "cuda" and not has_built(f"{family}_loss", "cuda"):
        return f"fusedloss._C was built without CUDA kernels for the {family} family"
    return None


def ops():
    return getattr(torch.ops, NAMESPACE)


load_prebuilt()
