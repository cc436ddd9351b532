"""fusedloss: fused segmentation losses for PyTorch.

Builds the C++ extension ``fusedloss._C`` from csrc/ when torch is importable
at build time (install with ``--no-build-isolation`` so it is) and a C++
compiler is found:
  - the CPU kernels always (FUSEDLOSS_BUILD_CPU=0 skips the extension);
  - the CUDA kernels when torch is a CUDA build and nvcc is found
    (FUSEDLOSS_BUILD_CUDA=1 forces them, =0 leaves them out).
Without torch or a compiler the install goes on without the extension and says
so in one line (fusedloss then compiles csrc/ on first use where it can, see
fusedloss/ops/cpp_ops.py); with both, a build that fails fails the install.
"""

import importlib.util
import os
import shutil
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _build_flags():
    # Loaded by path: importing the fusedloss package would need torch and Triton.
    spec = importlib.util.spec_from_file_location("_build_flags", os.path.join(HERE, "fusedloss", "_build_flags.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _switch(name):
    """'1' forced on, '0' off, None: decide automatically."""
    value = os.environ.get(name)
    return None if value in (None, "", "auto") else value


def _skip(why):
    print(f"fusedloss: building without the C++ extension: {why}", file=sys.stderr)
    return [], {}


def extension_and_cmdclass():
    if _switch("FUSEDLOSS_BUILD_CPU") == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        return _skip(
            "torch is not importable at build time (install torch first, then pip install --no-build-isolation .)"
        )
    flags = _build_flags()
    missing = flags.missing_compiler()
    if missing is not None and _switch("FUSEDLOSS_BUILD_CPU") != "1":
        return _skip(missing)
    sources = flags.cpp_sources(".")
    cuda = _switch("FUSEDLOSS_BUILD_CUDA")
    nvcc_found = CUDA_HOME is not None and (
        shutil.which("nvcc") or os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    )
    if cuda == "1" or (cuda is None and torch.version.cuda is not None and bool(nvcc_found)):
        extension = CUDAExtension("fusedloss._C", sources + flags.cuda_sources("."), include_dirs=flags.include_dirs(),
                                  extra_compile_args={"cxx": flags.cxx(), "nvcc": flags.nvcc()})
    else:
        extension = CppExtension("fusedloss._C", sources, extra_compile_args={"cxx": flags.cxx()})
    return [extension], {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_and_cmdclass()

# The project's metadata is in pyproject.toml; setup.py adds only the extension.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
