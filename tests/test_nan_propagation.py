"""A NaN logit (a diverged model) gives a NaN loss and a NaN gradient, as the
reference does: never a finite loss that hides it (except at an ignored pixel,
which counts nowhere). Clamps and 'is the
denominator positive' tests must let NaN through (on a GPU, max() returns the
non-NaN operand, and a bf16 store must not round NaN into a number)."""

import pytest
import torch

from helpers import (ALL_LOSSES, FUSED_BACKENDS, FUSED_SOFTMAX_BACKENDS, IGNORE, LOSS_PARAMS, MULTICLASS_PARAMS,
                     assert_close, loss_and_grad, make_class_pair, make_pair, multiclass_loss_and_grad,
                     multiclass_options)


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


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")  # the interpreter's NaN-dropping max
@pytest.mark.parametrize("name, options", [(name, {}) for name in sorted(MULTICLASS_PARAMS)]
                         + [("focal", dict(reduction="none"))])
@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)
def test_multiclass_nan_at_an_ignored_pixel_counts_nowhere(backend, name, options):
    """Ignored pixels count nowhere, whatever their logits: a NaN there (e.g. padding
    outside the image) changes neither the loss nor any gradient, and gets gradient 0."""
    x, y = make_class_pair((2, 4, 3, 5), torch.float32, ignore_fraction=0.3)
    n, h, w = (y == IGNORE).nonzero()[0].tolist()
    x[n, :, h, w] = float("nan")
    options = multiclass_options(name, ignore_index=IGNORE, **options)
    fused_loss, fused_grad = multiclass_loss_and_grad(name, x, y, backend, **options)
    ref_loss, ref_grad = multiclass_loss_and_grad(name, x, y, "reference", **options)
    assert torch.isfinite(ref_loss).all() and torch.isfinite(ref_grad).all()  # the definition, as the reference has it
    assert_close(fused_loss, ref_loss, torch.float32)
    assert_close(fused_grad, ref_grad, torch.float32)
    assert (fused_grad[n, :, h, w] == 0).all()
