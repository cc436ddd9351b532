"""Compiler flags for the C++/CUDA extension, shared by setup.py and the
on-demand build (fusedloss/ops/cpp_ops.py)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import sysconfig

# No -ffast-math: the tails rely on inf and NaN rules. These two only let the
# compiler vectorise branches that may divide by zero, and skip errno.
# -fopenmp: at::parallel_for is a header template that runs one thread unless the
# extension itself is compiled with OpenMP. Not linked: its GOMP_* calls resolve
# to the OpenMP runtime torch already loaded (a second runtime would fight it).
# -std=c++20: csrc/ uses designated initialisers (torch versions differ in the -std they pass).
CXX = ["-std=c++20", "-O3", "-fno-trapping-math", "-fno-math-errno"] + (
    ["-fopenmp"] if sys.platform.startswith("linux") else [])


def cxx() -> list[str]:
    """CXX, with FUSEDLOSS_CPU_CLONES=0 the CPU loops for the baseline instruction set only (no
    AVX2 / AVX-512 clones): a build about three times quicker, for kernels that run slower; with
    FUSEDLOSS_CPU_OPT=0 (1, 2, s) that optimisation level instead of -O3: quicker still, for a build
    that only has to work (the first-use build test)."""
    flags = CXX + (["-DFUSEDLOSS_NO_CLONES"] if os.environ.get("FUSEDLOSS_CPU_CLONES") == "0" else [])
    level = os.environ.get("FUSEDLOSS_CPU_OPT", "")
    if level:
        if level not in ("0", "1", "2", "3", "s"):
            raise ValueError(f"FUSEDLOSS_CPU_OPT: {level!r} is not an optimisation level (0, 1, 2, 3, s)")
        flags = [f"-O{level}" if flag == "-O3" else flag for flag in flags]
    return flags


# sm_80 (A100) and sm_90 (H100/H200) at least; PTX for newer chips.
GENCODE = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-gencode=arch=compute_90,code=compute_90"]


def gencode() -> list[str]:
    """GENCODE, or machine code for only the compute capabilities listed in
    FUSEDLOSS_CUDA_ARCHS (e.g. "90" or "80,90"; no PTX): a faster build for one known GPU."""
    listed = os.environ.get("FUSEDLOSS_CUDA_ARCHS", "").replace(";", ",").split(",")
    archs = [arch.strip().replace(".", "") for arch in listed if arch.strip()]
    for arch in archs:
        if not re.fullmatch(r"\d+[af]?", arch):
            raise ValueError(f"FUSEDLOSS_CUDA_ARCHS: {arch!r} is not a compute capability like 90 or 8.0")
    return [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in archs] or GENCODE


def nvcc() -> list[str]:
    flags = ["-std=c++20", "-O3", "-lineinfo", *gencode()]
    if os.environ.get("FUSEDLOSS_PTXAS_VERBOSE") == "1":
        flags.append("-Xptxas=-v")  # register / shared memory / spill report per kernel
    return flags


def missing_compiler() -> str | None:
    """Why the C++ compiler torch.utils.cpp_extension would call ($CXX, default c++) is
    not there, or None: asked by setup.py and by the build on first use alike."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; install g++ or set CXX)"
    return None


def cpp_sources(root) -> list[str]:
    """The extension's C++ sources under ``root`` (the repository), relative when root is '.'."""
    return [os.path.join(root, "csrc", "schema.cpp")] + sorted(glob.glob(os.path.join(root, "csrc", "cpu", "*.cpp")))


def cuda_sources(root) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "csrc", "cuda", "*.cu")))


def include_dirs() -> list[str]:
    """CUDA 13 wheels of torch keep headers (cusparse.h, needed by
    ATen/cuda/CUDAContext.h) under site-packages/nvidia/cu13/include."""
    site = sysconfig.get_paths()["purelib"]
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
