"""Mixed precision: under torch.autocast the losses take the low-precision
logits as they come (no upcast copy), accumulate in fp32, return an fp32 loss
and a gradient in the logits' dtype; no NaN or inf for finite input."""

import pytest
import torch

import fusedloss
from helpers import (ALL_LOSSES, DEVICE, FUSED_BACKENDS, FUSED_SOFTMAX_BACKENDS, LOSS_PARAMS, assert_close,
                     loss_and_grad, make_class_pair, make_pair, multiclass_loss_and_grad, multiclass_options)

AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]


def autocast(dtype):
    return torch.autocast(device_type=DEVICE.type, dtype=dtype)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_binary_under_autocast(backend, name, dtype):
    weight = torch.nn.Linear(8, 8, bias=False).to(DEVICE)
    features, t = make_pair((2, 3, 8, 8), torch.float32, torch.uint8)
    with autocast(dtype):
        logits = weight(features)  # a low-precision activation, as a model under autocast makes
        assert logits.dtype == dtype
        loss = fusedloss.LOSSES[name](logits, t, backend=backend, **LOSS_PARAMS[name])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    reference_logits = logits.detach().requires_grad_(True)
    expected = fusedloss.LOSSES[name](reference_logits, t, backend="reference", **LOSS_PARAMS[name])
    (expected_grad,) = torch.autograd.grad(expected, reference_logits)
    assert_close(loss.detach(), expected.detach(), torch.float32)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES)
@pytest.mark.parametrize("name", ["dice", "focal", "dice_ce"])
def test_multiclass_under_autocast(backend, name, dtype):
    x, y = make_class_pair((2, 5, 7, 9), dtype, torch.uint8)
    with autocast(dtype):
        loss, grad = multiclass_loss_and_grad(name, x, y, backend, **multiclass_options(name))
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    expected, expected_grad = multiclass_loss_and_grad(name, x, y, "reference", **multiclass_options(name))
    assert_close(loss, expected, torch.float32)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("mask", ["empty", "full"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_fp16_limits_under_autocast(backend, name, mask):
    x, t = make_pair((1, 1, 512, 512), torch.float16, torch.bool, mask=mask)
    x = torch.where(x > 0, 65504.0, -65504.0).to(torch.float16)  # the fp16 limits
    with autocast(torch.float16):
        loss, grad = loss_and_grad(name, x, t, backend, **LOSS_PARAMS[name])
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
