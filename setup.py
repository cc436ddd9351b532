"""fusedloss: fused segmentation losses for PyTorch.

Pure Python for now: the Triton kernels compile at run time. The C++/CUDA
extension (csrc/) will be built from here when it lands; installing must
never fail for lack of a compiler, CUDA or Triton.
"""

from setuptools import find_packages, setup

setup(
    name="fusedloss",
    version="0.1.0",
    description="Fused, exact, memory-light segmentation losses (Dice, IoU, Tversky, Focal, Dice+BCE) for PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fusedloss", "fusedloss.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.6"],
    extras_require={
        "triton": ["triton>=3.6,<4"],
        "test": ["pytest", "numpy", "hypothesis"],
        "bench": ["pytest-benchmark", "matplotlib"],
    },
)
