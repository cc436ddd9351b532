"""The C++ extension (csrc/): its ops' schemas match the Triton ops' (one
op contract for every backend), and it was built with what CI asked for. The
'cpu' and 'cuda' backends run the rest of the suite like every fused backend."""

import os

import pytest
import torch

import fusedloss
from fusedloss.ops import cpp_ops
from fusedloss.ops.schema import SCHEMAS

pytestmark = pytest.mark.skipif(cpp_ops.unavailable_reason("cpu") is not None,
                                reason=f"C++ extension not available: {cpp_ops.unavailable_reason('cpu')}")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_matches_triton_ops(name):
    cpp_schema = getattr(torch.ops.fusedloss_C, name).default._schema
    triton_schema = getattr(fusedloss.ops.fused_ops("triton"), name).default._schema
    assert str(cpp_schema).split("::", 1)[1] == str(triton_schema).split("::", 1)[1]


def test_cpu_kernels_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fusedloss_C::sigmoid_loss", "CPU")
    assert "cpu" in fusedloss.available_backends("cpu")


@pytest.mark.skipif(os.environ.get("FUSEDLOSS_EXPECT_CUDA_KERNELS") != "1",
                    reason="set FUSEDLOSS_EXPECT_CUDA_KERNELS=1 where the CUDA part must have been built (CI)")
def test_cuda_kernels_compiled_and_linked():
    for name in SCHEMAS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedloss_C::{name}", "CUDA"), name
