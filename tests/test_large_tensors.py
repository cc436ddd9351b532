"""More than 2**31 elements: 64-bit offsets in every kernel. Needs a GPU with
~16 GB free; the CPU interpreter would take tens of minutes over 2**31 elements."""

import pytest
import torch

import fusedloss
from helpers import DEVICE, FUSED_BACKENDS

NUMEL = 2**31 + 4099  # past the int32 range, not a multiple of any block


def _enough_gpu_memory(needed_bytes):
    if DEVICE.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info()
    return free > needed_bytes


@pytest.mark.skipif(not _enough_gpu_memory(24 * 2**30), reason="needs a CUDA GPU with 24 GiB free (see module doc)")
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_dice_over_int32_range(backend):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(NUMEL, device=DEVICE, dtype=torch.bfloat16, generator=gen)
    t = torch.rand(NUMEL, device=DEVICE, generator=gen) < 0.3
    # Sums in fp64, chunk by chunk, from the definition.
    sums = torch.zeros(3, dtype=torch.float64, device=DEVICE)
    for chunk in range(0, NUMEL, 2**28):
        p = torch.sigmoid(x[chunk:chunk + 2**28].double())
        tt = t[chunk:chunk + 2**28].double()
        sums += torch.stack([(p * tt).sum(), p.sum(), tt.sum()])
    inter, pred, true = sums
    denom = pred + true + 1
    expected = 1 - (2 * inter + 1) / denom

    x.requires_grad_(True)
    loss = fusedloss.dice_loss(x, t, backend=backend)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0)
    (grad,) = torch.autograd.grad(loss, x)
    # dL/dx = (dL/dI * t + dL/dP) * p(1-p), checked at both ends of the tensor.
    d_inter, d_pred = -2 / denom, (2 * inter + 1) / denom**2
    for part in (slice(0, 4096), slice(NUMEL - 4096, NUMEL)):
        p = torch.sigmoid(x.detach()[part].double())
        want = (d_inter * t[part].double() + d_pred) * p * (1 - p)
        torch.testing.assert_close(grad[part].double(), want, rtol=1e-2, atol=1e-12)
