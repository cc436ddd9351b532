"""Finite input gives finite output, for both families: extreme logits, large
fp16 maps, empty and full masks, every pixel ignored; where plain PyTorch in fp16
overflows, the fused path does not; infinite logits keep the BCE (CE) gradient."""

import pytest
import torch
from cases import BINARY, FAMILIES, MULTICLASS, parametrize, with_backends
from helpers import DEVICE, IGNORE, assert_matches_reference, loss_and_grad, multiclass_loss_and_grad

EXTREME_DTYPES = {BINARY: [torch.float32, torch.float16, torch.bfloat16, torch.float64], MULTICLASS: [torch.float16]}


@parametrize("case, backend, dtype", with_backends(BINARY.cases() + MULTICLASS.cases(), per_family=EXTREME_DTYPES))
def test_extreme_logits(case, backend, dtype):
    """Logits of +-1e4: saturated sigmoid (softmax) both ways, right and wrong predictions."""
    if case.family is BINARY:
        x, t = case.make_pair((2, 2, 8, 9), dtype, torch.float32)
        signs = torch.where(torch.arange(x.numel(), device=DEVICE).reshape(x.shape) % 3 == 0, -1.0, 1.0)
        x = (signs * 1e4).to(dtype)
        options = case.options(**(dict(per_channel=True) if case.region else {}))
    else:
        x, t = case.make_pair((2, 4, 6, 7), dtype)
        coin = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE) < 0.5
        x = torch.where(coin, -1e4, 1e4).to(dtype)
        options = case.options()
    assert_matches_reference(case, x, t, backend, grad_if_reference_finite=True, **options)


@parametrize("case, backend", with_backends(MULTICLASS.cases()))
def test_all_pixels_ignored_is_finite(case, backend):
    """Multiclass only (binary targets have no ignore_index): nothing counts, a finite
    loss and a zero gradient."""
    x, y = case.make_pair((1, 3, 4, 4), torch.float32)
    y = torch.full_like(y, IGNORE)
    loss, grad = multiclass_loss_and_grad(case.name, x, y, backend, **case.options(ignore=True))
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert (grad == 0).all()


@parametrize(
    "case, backend, mask",
    [(case, backend, mask) for case, backend in with_backends(BINARY.cases()) for mask in ["empty", "full", "random"]],
)
def test_fp16_512x512(case, backend, mask):
    """Binary masks (the multiclass fp16 sums: test_extreme_logits, test_mixed_precision)."""
    x, t = case.make_pair((1, 1, 512, 512), torch.float16, torch.uint8, mask=mask, scale=8.0)
    assert_matches_reference(case, x, t, backend, loss_dtype=torch.float32, **case.options())


@pytest.mark.parametrize("backend", BINARY.backends)
def test_fp16_dice_where_plain_fp16_overflows(backend):
    """The popular 'sigmoid, flatten, sum' Dice computed in fp16 overflows its
    sums (65504 max) on a 512x512 all-full mask; ours accumulates in fp32."""
    x, t = BINARY.make_pair((1, 1, 512, 512), torch.float16, torch.float16, mask="full", scale=8.0)
    p = torch.sigmoid(x).flatten()
    plain = 1 - (2 * (p * t.flatten()).sum() + 1) / (p.sum() + t.sum() + 1)
    assert not torch.isfinite(t.sum()) or not torch.isfinite(plain)  # the failure this guards against
    fused_loss, fused_grad = loss_and_grad("dice", x, t, backend)
    assert torch.isfinite(fused_loss) and torch.isfinite(fused_grad).all()
    assert 0.0 <= fused_loss.item() <= 1.0


# |x| where 1 - p_t = exp(-|x|) is subnormal in the accumulation dtype (fp32 for the
# half types): the focal slope's q_t^(gamma - 1) = q_t^gamma / q_t would overflow there.
SUBNORMAL_TAIL = {torch.float64: (710.0, 725.0, 744.0), torch.float32: (89.0, 95.0, 103.0)}


@pytest.mark.parametrize("backend", BINARY.backends)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "name, options",
    [("focal", dict(gamma=0.0)), ("focal", dict(gamma=0.05)), ("focal", dict(gamma=2.0, alpha=0.25)),
     ("focal", dict(gamma=0.05, reduction="none")), ("dice_bce", {})],
)
def test_logits_whose_complement_is_subnormal(backend, name, options, dtype):
    magnitudes = torch.tensor(SUBNORMAL_TAIL.get(dtype, SUBNORMAL_TAIL[torch.float32]), dtype=torch.float64)
    x = torch.cat([magnitudes, -magnitudes]).repeat(4).reshape(2, 1, 3, 4).to(dtype).to(DEVICE)
    t = (x > 0).float()  # confident and right: the loss and its gradient are ~0
    t[0] = 1 - t[0]  # and confident and wrong: gradient ~ +-1
    assert_matches_reference(name, x, t, backend, grad_if_reference_finite=True,
                             loss_dtype=torch.float64 if dtype == torch.float64 else torch.float32, **options)


INFINITE_LOGIT_CASES = {  # (loss, options) per family: the losses with an element term at gamma = 0
    BINARY: [("focal", dict(gamma=0.0)), ("focal", dict(gamma=0.0, alpha=0.25)), ("dice_bce", {})],
    MULTICLASS: [("focal", dict(gamma=0.0)), ("dice_ce", {})],
}


@parametrize("case, backend", with_backends(MULTICLASS.cases()))
def test_masked_classes_are_finite(case, backend):
    """Classes masked out with -inf logits (never a target): their softmax share is 0, the
    rest as without them. 32 classes over few pixels, so CUDA splits each pixel's classes
    across threads and the masked ones make up whole ranges, whose statistics must merge as
    zeros, not NaN."""
    x, t = case.make_pair((1, 32, 5, 6), torch.float32)
    t = t % 24
    x[:, 24:] = -float("inf")
    assert_matches_reference(case, x, t, backend, **case.options())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's inf - inf
@parametrize("case, backend, options", [(family.case(name), backend, options) for family in FAMILIES
                                        for backend in family.backends
                                        for name, options in INFINITE_LOGIT_CASES[family]])
def test_infinite_logits_keep_the_bce_gradient(case, backend, options):
    """The loss of an infinite logit is NaN or inf, but BCE's gradient there is
    still p - t (what autograd gives the reference): a gamma = 0 focal term must
    not multiply its zero slope by that infinite BCE. Multiclass: p_y = 0 exactly (the
    target class's logit is -inf): cross-entropy is inf, its gradient p - onehot is still
    finite; gamma = 0 must not multiply a zero slope by log p_y = -inf."""
    if case.family is BINARY:
        x = torch.tensor([float("inf"), -float("inf")] * 6, dtype=torch.float32).reshape(1, 1, 3, 4).to(DEVICE)
        t = torch.tensor([0.0, 1.0, 1.0, 0.0] * 3).reshape(1, 1, 3, 4).to(DEVICE)  # wrong, wrong, right, right
    else:
        x, t = case.make_pair((1, 3, 2, 4), torch.float32)
        x[0, t[0, 0, 0], 0, 0] = -float("inf")
    result = assert_matches_reference(
        case, x, t, backend, finite=False, compare_loss=False, **case.options(params=False, **options)
    )
    assert torch.isfinite(result.ref_grad).all()  # the premise: the reference's gradient is finite here
    if case.family is MULTICLASS:
        assert not torch.isfinite(result.ref_loss).all() and not torch.isfinite(result.loss).all()
