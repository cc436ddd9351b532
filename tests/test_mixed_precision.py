"""Mixed precision, for both families: under torch.autocast the losses take the
low-precision logits as they come (no upcast copy), accumulate in fp32, return
an fp32 loss and a gradient in the logits' dtype; no NaN or inf for finite input."""

import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import DEVICE, assert_matches_reference, loss_and_grad

AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]


def autocast(dtype):
    return torch.autocast(device_type=DEVICE.type, dtype=dtype)


@parametrize(
    "case, backend, dtype",
    [
        (case, backend, dtype)
        for case, backend in with_backends(BINARY.cases() + MULTICLASS.cases())
        for dtype in AUTOCAST_DTYPES
    ],
)
def test_under_autocast(case, backend, dtype):
    """The logits a model under autocast makes (a Linear layer); the fused loss under
    autocast against the reference outside it, on the same low-precision logits."""
    shape = (2, 3, 8, 8) if case.family is BINARY else (2, 5, 7, 9)
    features, t = case.make_pair(shape, torch.float32, torch.uint8)
    weight = torch.nn.Linear(shape[-1], shape[-1], bias=False).to(DEVICE)
    with autocast(dtype):
        logits = weight(features)  # a low-precision activation
    assert logits.dtype == dtype
    result = assert_matches_reference(case, logits, t, backend, under=autocast(dtype), **case.options())
    assert result.loss.dtype == torch.float32 and result.grad.dtype == dtype


@parametrize("case, backend, mask",
             [(case, backend, mask) for case, backend in with_backends(BINARY.cases()) for mask in ["empty", "full"]])
def test_fp16_limits_under_autocast(case, backend, mask):
    """Binary masks with nothing / everything to find at the fp16 limits."""
    x, t = case.make_pair((1, 1, 512, 512), torch.float16, torch.bool, mask=mask)
    x = torch.where(x > 0, 65504.0, -65504.0).to(torch.float16)  # the fp16 limits
    with autocast(torch.float16):
        loss, grad = loss_and_grad(case.name, x, t, backend, **case.options())
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
