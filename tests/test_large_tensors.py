"""More than 2**31 elements: 64-bit offsets in every kernel. On a GPU the fused
CUDA backends run the binary and the multi-class Dice; on the CPU the C++
backend runs the binary one, when the machine has the memory (~13 GiB: bf16
logits, bool target, bf16 gradient). The Triton
interpreter would take tens of minutes over 2**31 elements: not run on CPU."""

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS

import fusedloss

NUMEL = 2**31 + 4099  # past the int32 range, not a multiple of any block


def _available_bytes() -> int:
    if DEVICE.type == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["MemAvailable"].split()[0]) * 1024


def _backends():
    if DEVICE.type == "cuda":
        return FUSED_BACKENDS
    return [b for b in FUSED_BACKENDS if b != "triton"]


# The inputs repeat with this period (the logits' 17 values, the mask's 3): filled by
# copying one period, and the expected sums are the period's sums times the number of
# periods plus the remainder's, in fp64 (a chunked fp64 pass over 2**31 elements took
# two minutes of the suite).
PERIOD = 51


def _period():
    """One period of the logits (bf16, as the kernels read them) and of the mask."""
    index = torch.arange(PERIOD, device=DEVICE)
    return (((index % 17) - 8).to(torch.float32) * 0.5).to(torch.bfloat16), index % 3 == 0


def _fill(out, values):
    """``out`` (1-D) = ``values`` repeated, without a full-size temporary."""
    full, rest = divmod(out.numel(), PERIOD)
    out[:full * PERIOD].view(full, PERIOD).copy_(values.expand(full, PERIOD))
    out[full * PERIOD:].copy_(values[:rest])


def _periodic_sum(values, numel):
    """The sum over dim -1 of ``values`` (..., PERIOD) repeated over ``numel`` elements."""
    full, rest = divmod(numel, PERIOD)
    return full * values.sum(-1) + values[..., :rest].sum(-1)


@pytest.mark.skipif(_available_bytes() < (24 if DEVICE.type == "cuda" else 16) * 2**30,
                    reason="needs ~16 GiB of free memory (24 GiB on a GPU) for 2**31 elements")
@pytest.mark.parametrize("backend", _backends())
def test_dice_over_int32_range(backend):
    x = torch.empty(NUMEL, dtype=torch.bfloat16, device=DEVICE)
    t = torch.empty(NUMEL, dtype=torch.bool, device=DEVICE)
    logits, mask = _period()
    _fill(x, logits)
    _fill(t, mask)
    p = torch.sigmoid(logits.double())
    inter, pred, true = (_periodic_sum(v, NUMEL) for v in (p * mask, p, mask.double()))
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


MULTICLASS_PIXELS = 2**30 + 4099  # x (1, 2, pixels): past the int32 range in elements


@pytest.mark.skipif(
    DEVICE.type != "cuda",
    reason="GPU only: the CPU C++ multi-class kernels would take minutes "
    "over 2**31 elements (the CPU's 64-bit offsets are covered by the binary test)",
)
@pytest.mark.skipif(DEVICE.type == "cuda" and _available_bytes() < 24 * 2**30,
                    reason="needs 24 GiB of free GPU memory (it uses ~12) for 2**31 elements")
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_multiclass_dice_over_int32_range(backend):
    classes, smooth = 2, 1.0
    x = torch.empty((1, classes, MULTICLASS_PIXELS), dtype=torch.bfloat16, device=DEVICE)
    y = torch.empty((1, MULTICLASS_PIXELS), dtype=torch.uint8, device=DEVICE)
    logits, mask = _period()
    period = torch.stack([logits, (-logits.float() * 0.5).to(torch.bfloat16)])  # (classes, PERIOD)
    for c in range(classes):
        _fill(x[0, c], period[c])
    _fill(y[0], mask.to(torch.uint8))
    p = torch.softmax(period.double(), dim=0)
    hit = torch.nn.functional.one_hot(mask.long(), classes).T.double()
    inter, pred, true = (_periodic_sum(v, MULTICLASS_PIXELS) for v in (p * hit, p, hit))
    denom = pred + true + smooth
    expected = (1 - (2 * inter + smooth) / denom).mean()

    x.requires_grad_(True)
    loss = fusedloss.dice_loss(x, y, mode="multiclass", smooth=smooth, backend=backend)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0)
    (grad,) = torch.autograd.grad(loss, x)
    # dL/dx_c = p_c (g_c - sum_k p_k g_k), g_k = dL/dI_k [y = k] + dL/dP_k; both ends of the tensor.
    d_inter, d_pred = -2 / (classes * denom), (2 * inter + smooth) / (classes * denom**2)
    for part in (slice(0, 4096), slice(MULTICLASS_PIXELS - 4096, MULTICLASS_PIXELS)):
        p = torch.softmax(x.detach()[0, :, part].double(), dim=0)
        hit = torch.nn.functional.one_hot(y[0, part].long(), classes).T.double()
        g = d_inter[:, None] * hit + d_pred[:, None]
        want = p * (g - (p * g).sum(0, keepdim=True))
        torch.testing.assert_close(grad[0, :, part].double(), want, rtol=1e-2, atol=1e-12)


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason=f"no Triton backend on {DEVICE}")
def test_triton_refuses_more_rows_than_a_grid_holds():
    """A program per row (sample) at least: 2**31 rows of one element would need a
    grid the driver rejects. The plans say so, naming the way out (expanded
    tensors: the plans read only shapes, so nothing large is allocated)."""
    from fusedloss._spec import group_layout
    from fusedloss.kernels import binary_triton, multiclass_triton

    rows = 2**31
    with pytest.raises(ValueError, match=r"2147483648 rows need 2147483648 programs.*backend='reference'"):
        binary_triton.LaunchPlan(group_layout((rows, 1), True, False), DEVICE)
    assert binary_triton.LaunchPlan(group_layout((rows - 1, 1), True, False), DEVICE).programs == rows - 1
    with pytest.raises(ValueError, match=r"2147483648 samples need 2147483648 programs"):
        multiclass_triton.LaunchPlan(torch.zeros(1, 3, device=DEVICE).expand(rows, 3))
    assert multiclass_triton.LaunchPlan(torch.zeros(1, 3, device=DEVICE).expand(rows - 1, 3)).programs == rows - 1
