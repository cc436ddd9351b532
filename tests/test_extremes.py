"""Finite input gives finite output: extreme logits, large fp16 maps, empty
and full masks; where plain PyTorch in fp16 overflows, the fused path does not."""

import pytest
import torch

from helpers import (ALL_LOSSES, DEVICE, FUSED_BACKENDS, FUSED_SOFTMAX_BACKENDS, LOSS_PARAMS, assert_close, loss_and_grad,
                     make_class_pair, make_pair, multiclass_loss_and_grad, multiclass_options)

pytestmark = pytest.mark.parametrize("backend", FUSED_BACKENDS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_extreme_logits(backend, name, dtype):
    x, t = make_pair((2, 2, 8, 9), dtype, torch.float32)
    signs = torch.where(torch.arange(x.numel(), device=DEVICE).reshape(x.shape) % 3 == 0, -1.0, 1.0)
    x = (signs * 1e4).to(dtype)  # saturated sigmoid both ways, right and wrong predictions
    options = dict(LOSS_PARAMS[name])
    if name != "focal":
        options["per_channel"] = True
    fused_loss, fused_grad = loss_and_grad(name, x, t, backend, **options)
    assert torch.isfinite(fused_loss).all() and torch.isfinite(fused_grad).all()
    ref_loss, ref_grad = loss_and_grad(name, x, t, "reference", **options)
    assert_close(fused_loss, ref_loss, torch.float64 if dtype == torch.float64 else torch.float32)
    if torch.isfinite(ref_grad).all():
        assert_close(fused_grad, ref_grad, dtype)


@pytest.mark.parametrize("mask", ["empty", "full", "random"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_fp16_512x512(backend, name, mask):
    x, t = make_pair((1, 1, 512, 512), torch.float16, torch.uint8, mask=mask, scale=8.0)
    fused_loss, fused_grad = loss_and_grad(name, x, t, backend, **LOSS_PARAMS[name])
    assert torch.isfinite(fused_loss).all() and torch.isfinite(fused_grad).all()
    ref_loss, ref_grad = loss_and_grad(name, x, t, "reference", **LOSS_PARAMS[name])
    assert_close(fused_loss, ref_loss, torch.float32)
    assert_close(fused_grad, ref_grad, torch.float16)


def test_fp16_dice_where_plain_fp16_overflows(backend):
    """The popular 'sigmoid, flatten, sum' Dice computed in fp16 overflows its
    sums (65504 max) on a 512x512 all-full mask; ours accumulates in fp32."""
    x, t = make_pair((1, 1, 512, 512), torch.float16, torch.float16, mask="full", scale=8.0)
    p = torch.sigmoid(x).flatten()
    plain = 1 - (2 * (p * t.flatten()).sum() + 1) / (p.sum() + t.sum() + 1)
    assert not torch.isfinite(t.sum()) or not torch.isfinite(plain)  # the failure this guards against
    fused_loss, fused_grad = loss_and_grad("dice", x, t, backend)
    assert torch.isfinite(fused_loss) and torch.isfinite(fused_grad).all()
    assert 0.0 <= fused_loss.item() <= 1.0


# |x| where 1 - p_t = exp(-|x|) is subnormal in the accumulation dtype (fp32 for the
# half types): the focal slope's q_t^(gamma - 1) = q_t^gamma / q_t would overflow there.
SUBNORMAL_TAIL = {torch.float64: (710.0, 725.0, 744.0), torch.float32: (89.0, 95.0, 103.0)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name, options", [
    ("focal", dict(gamma=0.0)), ("focal", dict(gamma=0.05)), ("focal", dict(gamma=2.0, alpha=0.25)),
    ("focal", dict(gamma=0.05, reduction="none")), ("dice_bce", {})])
def test_logits_whose_complement_is_subnormal(backend, name, options, dtype):
    magnitudes = torch.tensor(SUBNORMAL_TAIL.get(dtype, SUBNORMAL_TAIL[torch.float32]), dtype=torch.float64)
    x = torch.cat([magnitudes, -magnitudes]).repeat(4).reshape(2, 1, 3, 4).to(dtype).to(DEVICE)
    t = (x > 0).float()  # confident and right: the loss and its gradient are ~0
    t[0] = 1 - t[0]  # and confident and wrong: gradient ~ +-1
    fused_loss, fused_grad = loss_and_grad(name, x, t, backend, **options)
    assert torch.isfinite(fused_loss).all() and torch.isfinite(fused_grad).all(), fused_grad
    ref_loss, ref_grad = loss_and_grad(name, x, t, "reference", **options)
    assert_close(fused_loss, ref_loss, torch.float64 if dtype == torch.float64 else torch.float32)
    if torch.isfinite(ref_grad).all():
        assert_close(fused_grad, ref_grad, dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's inf - inf
@pytest.mark.parametrize("name, options", [("focal", dict(gamma=0.0)), ("focal", dict(gamma=0.0, alpha=0.25)),
                                           ("dice_bce", {})])
def test_infinite_logits_keep_the_bce_gradient(backend, name, options):
    """The loss of an infinite logit is NaN or inf, but BCE's gradient there is
    still p - t (what autograd gives the reference): a gamma = 0 focal term must
    not multiply its zero slope by that infinite BCE."""
    x = torch.tensor([float("inf"), -float("inf")] * 6, dtype=torch.float32).reshape(1, 1, 3, 4).to(DEVICE)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0] * 3).reshape(1, 1, 3, 4).to(DEVICE)  # wrong, wrong, right, right
    _, fused_grad = loss_and_grad(name, x, t, backend, **options)
    _, ref_grad = loss_and_grad(name, x, t, "reference", **options)
    assert torch.isfinite(ref_grad).all()  # the premise: the reference's gradient is finite here
    assert_close(fused_grad, ref_grad, torch.float32)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's -inf - -inf
@pytest.mark.parametrize("name, options", [("focal", dict(gamma=0.0)), ("dice_ce", {})])
def test_multiclass_minus_infinite_target_logit_keeps_the_ce_gradient(backend, name, options):
    """p_y = 0 exactly (the target class's logit is -inf): cross-entropy is inf, its
    gradient p - onehot is still finite; gamma = 0 must not multiply a zero slope by
    log p_y = -inf."""
    if backend not in FUSED_SOFTMAX_BACKENDS:
        pytest.skip(f"{backend} has no multi-class kernels here")
    x, y = make_class_pair((1, 3, 2, 4), torch.float32)
    x[0, y[0, 0, 0], 0, 0] = -float("inf")
    options = multiclass_options(name, **options)
    fused_loss, fused_grad = multiclass_loss_and_grad(name, x, y, backend, **options)
    ref_loss, ref_grad = multiclass_loss_and_grad(name, x, y, "reference", **options)
    assert not torch.isfinite(ref_loss).all() and torch.isfinite(ref_grad).all()  # the premise
    assert not torch.isfinite(fused_loss).all()
    assert_close(fused_grad, ref_grad, torch.float32)
