"""Test setup: the Triton kernels run on CUDA when a GPU is present, else on
the CPU under the Triton interpreter, which must be enabled before fusedloss
(and its @triton.jit kernels) is imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.pop("FUSEDLOSS_BACKEND", None)  # tests choose backends explicitly
