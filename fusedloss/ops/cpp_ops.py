"""The C++ backends' ops, ``torch.ops.fusedloss_C.*`` (csrc/): CPU kernels
('cpu' backend) and, when built with CUDA, CUDA kernels ('cuda' backend).

They come from the extension ``fusedloss._C`` that setup.py builds, imported
with fusedloss. Without it, ``build()`` compiles csrc/ with ninja
(torch.utils.cpp_extension.load; once, then cached in TORCH_EXTENSIONS_DIR):
on the first call that names a C++ backend, the first backend='auto' call on CPU
tensors (``ensure_built(announce=True)``: it says so, and how long it took), or
via ``fusedloss.build_extension()``. FUSEDLOSS_JIT=0 turns this off.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from .schema import FAMILIES, register_fake_and_autograd

NAMESPACE = "fusedloss_C"
CSRC = Path(__file__).resolve().parents[2] / "csrc"
_state = {"loaded": False, "error": None, "tried_build": False}


# The op whose kernel shows that a family was built, per family (the Lovász losses' ops are one family).
FAMILY_PROBES = {**{family: f"{family}_loss" for family in FAMILIES}, "lovasz": "lovasz_rows"}


def _registered() -> None:
    register_fake_and_autograd(NAMESPACE)
    # Which kernels were built, looked up once (unavailable_reason runs on every loss call).
    kernels = {(family, device): has_kernel(op, device) for family, op in FAMILY_PROBES.items()
               for device in ("cpu", "cuda")}
    _state.update(loaded=True, error=None, kernels=kernels)


def load_prebuilt() -> None:
    try:
        importlib.import_module("fusedloss._C")
    except ImportError as error:
        _state["error"] = (
            f"the C++ extension fusedloss._C is not built ({error}; with torch installed, "
            "pip install --no-build-isolation . builds it)"
        )
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
    load(name=NAMESPACE, sources=sources, extra_cflags=_build_flags.cxx(), extra_cuda_cflags=_build_flags.nvcc(),
         extra_include_paths=_build_flags.include_dirs(), with_cuda=with_cuda, is_python_module=False, verbose=verbose)
    _registered()


def build_impossible() -> str | None:
    """None if csrc/ can be compiled here on first use, else why not."""
    if os.environ.get("FUSEDLOSS_JIT", "1") == "0":
        return "FUSEDLOSS_JIT=0 turns the build on first use off"
    if not (CSRC / "schema.cpp").exists():
        return f"its sources are not at {CSRC}"
    from .. import _build_flags

    missing = _build_flags.missing_compiler()
    if missing is not None:
        return missing
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def ensure_built(announce: bool = False) -> str | None:
    """Build once if needed and possible (the outcome is remembered); None when
    loaded, else why not. ``announce``: say that it builds, and how long it took
    (the caller did not ask for a C++ backend by name)."""
    if not _state["loaded"] and not _state["tried_build"]:
        _state["tried_build"] = True
        impossible = build_impossible()
        if impossible is not None:
            _state["error"] = f"{_state['error']}; not compiled on first use: {impossible}"
            return _state["error"]
        if announce:
            print(
                "fusedloss: compiling the C++ kernels (csrc/) for their first use; once, cached in "
                "TORCH_EXTENSIONS_DIR",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        try:
            build()
        except Exception as error:  # missing headers, a broken toolchain: the backend is then unavailable
            _state["error"] = f"building the C++ extension failed: {error}"
        else:
            if announce:
                warnings.warn(
                    f"fusedloss: compiled the C++ kernels in {time.monotonic() - started:.0f} s (once; "
                    "pip install --no-build-isolation . builds them at install time)",
                    stacklevel=4,
                )
    return None if _state["loaded"] else _state["error"]


def has_kernel(op_name: str, device_type: str) -> bool:
    """Whether the loaded library implements ``op_name`` for the device type."""
    ops = getattr(torch.ops, NAMESPACE)
    return hasattr(ops, op_name) and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"{NAMESPACE}::{op_name}", device_type.upper()
    )


def unavailable_reason(device_type: str, family: str = "binary") -> str | None:
    if not _state["loaded"]:
        return _state["error"]
    if not _state["kernels"][(family, device_type)]:
        return f"fusedloss._C was built without {device_type.upper()} kernels for the {family} family"
    return None


def ops():
    return getattr(torch.ops, NAMESPACE)


load_prebuilt()
