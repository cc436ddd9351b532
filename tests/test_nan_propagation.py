"""A NaN logit (a diverged model) gives a NaN loss and a NaN gradient, as the
reference does: never a finite loss that hides it. Clamps and 'is the
denominator positive' tests must let NaN through (on a GPU, max() returns the
non-NaN operand, and a bf16 store must not round NaN into a number)."""

import pytest
import torch

from helpers import (ALL_LOSSES, FUSED_BACKENDS, FUSED_SOFTMAX_BACKENDS, LOSS_PARAMS, MULTICLASS_PARAMS,
                     loss_and_grad, make_class_pair, make_pair, multiclass_loss_and_grad, multiclass_options)


def _with_nan(x, index):
    x = x.clone()
    x.view(-1)[index] = float("nan")
    return x


def _assert_same_nans(fused, ref):
    assert torch.equal(torch.isnan(fused).cpu(), torch.isnan(ref).cpu()), (fused, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("options", [dict(), dict(per_channel=True, reduction="none")], ids=["mean", "per_channel"])
@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_binary(backend, name, options, dtype):
    x, t = make_pair((2, 3, 4, 5), dtype, torch.uint8)
    x = _with_nan(x, 7)  # sample 0, channel 0
    if name == "focal" and "per_channel" in options:
        options = dict(reduction="none")
    options = {**LOSS_PARAMS[name], **options}
    fused_loss, fused_grad = loss_and_grad(name, x, t, backend, **options)
    ref_loss, ref_grad = loss_and_grad(name, x, t, "reference", **options)
    assert torch.isnan(ref_loss).any()  # the premise
    _assert_same_nans(fused_loss, ref_loss)
    _assert_same_nans(fused_grad, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(MULTICLASS_PARAMS))
@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)
def test_multiclass(backend, name, dtype):
    x, y = make_class_pair((2, 4, 3, 5), dtype)
    x = _with_nan(x, 16)  # sample 0, class 1, one pixel
    options = multiclass_options(name)
    fused_loss, fused_grad = multiclass_loss_and_grad(name, x, y, backend, **options)
    ref_loss, ref_grad = multiclass_loss_and_grad(name, x, y, "reference", **options)
    assert torch.isnan(ref_loss).any()
    _assert_same_nans(fused_loss, ref_loss)
    _assert_same_nans(fused_grad, ref_grad)
