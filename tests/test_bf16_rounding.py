"""The Triton kernels' bf16 store (triton_common.store_as) rounds fp32 to the
nearest even bf16 exactly as torch does, and keeps NaN a NaN for every NaN
bit pattern: a GPU's fp32 NaN is 0x7FFFFFFF, which the rounding add would
carry into the sign bit (-0.0) if NaN were not handled apart. Runs the real
kernel on a GPU and under the interpreter on the CPU."""

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS

pytestmark = pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason=f"no Triton backend on {DEVICE}")
triton = pytest.importorskip("triton", reason="Triton is not installed")
import triton.language as tl  # noqa: E402

from fusedloss.kernels.triton_common import store_as  # noqa: E402

PATTERNS = [
    0x7FFFFFFF,
    0xFFFFFFFF,
    0x7FC00000,
    0xFFC00000,
    0x7F800001,
    0x7FBFFFFF,  # NaNs: GPU, x86, signalling
    0x7F800000,
    0xFF800000,
    0x7F7FFFFF,
    0xFF7FFFFF,  # +-inf; the largest floats round up to inf
    0x00000000,
    0x80000000,
    0x00000001,
    0x00008000,
    0x00018000,
    0x807FFFFF,  # zeros, subnormals, ties
    0x3F800000,
    0x3F808000,
    0x3F818000,
    0x3F808001,
    0x3F807FFF,
    0xBF808000,
    0xBF818000,  # 1 and ties to even
]


@triton.jit
def _store_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n
    store_as(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask), mask, True)


def _bf16_bits_via_store_as(values):
    out = torch.empty(values.numel(), dtype=torch.int16, device=values.device)
    _store_kernel[(1,)](values, out, values.numel(), BLOCK=triton.next_power_of_2(values.numel()))
    return out


def test_store_as_rounds_like_torch_and_keeps_nan():
    gen = torch.Generator().manual_seed(0)
    bits = torch.tensor(PATTERNS, dtype=torch.int64).to(torch.int32)
    values = torch.cat([bits.view(torch.float32), torch.randn(41, generator=gen) * 1e3]).to(DEVICE)
    got = _bf16_bits_via_store_as(values).view(torch.bfloat16).cpu()
    want = values.cpu().to(torch.bfloat16)
    nan = torch.isnan(values.cpu())
    assert torch.equal(torch.isnan(got), nan), got
    assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16)), (got, want)
