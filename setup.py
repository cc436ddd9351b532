"""fusedloss: fused segmentation losses for PyTorch.

Builds the C++ extension ``fusedloss._C`` from csrc/ when torch is importable
at build time (install with ``--no-build-isolation`` so it is):
  - the CPU kernels always (FUSEDLOSS_BUILD_CPU=0 skips the extension);
  - the CUDA kernels when torch is a CUDA build and nvcc is found
    (FUSEDLOSS_BUILD_CUDA=1 forces them, =0 leaves them out).
A build that was not forced and fails only prints a warning: installing never
fails for lack of a compiler or CUDA, and fusedloss then runs on its other
backends (or compiles csrc/ on first use, see fusedloss/ops/cpp_ops.py).
"""

import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup

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


def extension_and_cmdclass():
    if _switch("FUSEDLOSS_BUILD_CPU") == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("fusedloss: torch is not importable at build time; skipping the C++ extension "
              "(pip install --no-build-isolation to build it)", file=sys.stderr)
        return [], {}

    flags = _build_flags()
    sources = flags.cpp_sources(".")
    cuda = _switch("FUSEDLOSS_BUILD_CUDA")
    nvcc_found = CUDA_HOME is not None and (shutil.which("nvcc") or os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")))
    with_cuda = cuda == "1" or (cuda is None and torch.version.cuda is not None and bool(nvcc_found))
    if with_cuda:
        extension = CUDAExtension(
            "fusedloss._C", sources + flags.cuda_sources("."),
            include_dirs=flags.include_dirs(),
            extra_compile_args={"cxx": flags.CXX, "nvcc": flags.nvcc()},
        )
    else:
        extension = CppExtension("fusedloss._C", sources, extra_compile_args={"cxx": flags.CXX})
    forced = _switch("FUSEDLOSS_BUILD_CPU") == "1" or cuda == "1"

    class OptionalBuildExtension(BuildExtension):
        """Builds the extension; a failure that was not forced leaves it out (with a
        warning) instead of failing the install."""

        failed = set()

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as error:  # noqa: BLE001 - e.g. no usable compiler at all
                if forced:
                    raise
                self.failed.update(ext.name for ext in self.extensions)
                print(f"fusedloss: building the C++ extension failed ({error}); installing without it",
                      file=sys.stderr)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as error:  # noqa: BLE001 - any compiler/toolkit failure
                if forced:
                    raise
                self.failed.add(ext.name)
                print(f"fusedloss: building {ext.name} failed ({error}); installing without it", file=sys.stderr)

        def _built(self):
            return [ext for ext in self.extensions if ext.name not in self.failed]

        def copy_extensions_to_source(self):
            extensions, self.extensions = self.extensions, self._built()
            try:
                super().copy_extensions_to_source()
            finally:
                self.extensions = extensions

        def get_outputs(self):
            return [path for path in super().get_outputs() if os.path.exists(path)]

        def get_output_mapping(self):
            return {dest: src for dest, src in super().get_output_mapping().items() if os.path.exists(src)}

    return [extension], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = extension_and_cmdclass()

setup(
    name="fusedloss",
    version="0.1.0",
    description="Fused, exact, memory-light segmentation losses (Dice, IoU, Tversky, Focal, Dice+BCE) for PyTorch",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fusedloss", "fusedloss.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.6"],
    extras_require={
        "triton": ["triton>=3.6,<4"],
        "test": ["pytest", "numpy", "hypothesis"],
        "bench": ["pytest-benchmark", "matplotlib"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
