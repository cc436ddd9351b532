"""Multi-class (softmax) losses: fused backends against the reference (softmax
+ one-hot in plain PyTorch), across dtypes, class counts, shapes and options;
gradcheck, opcheck, compile, determinism, memory, bad input."""

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from fusedloss.ops import fused_ops
from helpers import (CLASS_MAP_DTYPES, DEVICE, FUSED_SOFTMAX_BACKENDS, IGNORE, INPUT_DTYPES,
                     MULTICLASS_REGION_LOSSES, assert_close, make_class_pair, multiclass_loss_and_grad,
                     multiclass_options)

ALL = MULTICLASS_REGION_LOSSES + ["focal", "dice_ce"]
backends = pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)


def check(name, backend, x, y, **options):
    options = multiclass_options(name, **options)
    fused_loss, fused_grad = multiclass_loss_and_grad(name, x, y, backend, **options)
    ref_loss, ref_grad = multiclass_loss_and_grad(name, x, y, "reference", **options)
    assert fused_loss.shape == ref_loss.shape
    assert fused_grad.dtype == x.dtype
    assert torch.isfinite(fused_loss).all() and torch.isfinite(fused_grad).all()
    loss_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert_close(fused_loss, ref_loss, fused_loss.dtype if fused_loss.dtype == x.dtype else loss_dtype)
    assert_close(fused_grad, ref_grad, x.dtype)


@backends
@pytest.mark.parametrize("target_dtype", CLASS_MAP_DTYPES)
@pytest.mark.parametrize("dtype", INPUT_DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_dtypes(backend, name, dtype, target_dtype):
    x, y = make_class_pair((2, 5, 9, 13), dtype, target_dtype, ignore_fraction=0.1)
    check(name, backend, x, y, ignore_index=IGNORE)


@backends
@pytest.mark.parametrize("shape", [(2, 2, 7), (1, 3, 5, 6, 7), (3, 7, 33, 17), (1, 150, 4, 5), (2, 19, 41)],
                         ids=str)
@pytest.mark.parametrize("name", ALL)
def test_class_counts_and_shapes(backend, name, shape):
    x, y = make_class_pair(shape, torch.float32)
    check(name, backend, x, y)


@backends
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [
    dict(),
    dict(per_sample=True),
    dict(include_background=False),
    dict(exclude_empty=True),
    dict(per_sample=True, include_background=False, exclude_empty=True),
    dict(ignore_index=IGNORE),
    dict(weight="per-class"),
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "defaults")
@pytest.mark.parametrize("name", MULTICLASS_REGION_LOSSES)
def test_region_options(backend, name, options, reduction):
    x, y = make_class_pair((3, 4, 8, 9), torch.float64, ignore_fraction=0.2 if "ignore_index" in options else 0.0,
                           absent=(2,))
    if options.get("weight") == "per-class":
        options = dict(options, weight=torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64, device=DEVICE))
    check(name, backend, x, y, reduction=reduction, **options)


@backends
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("options", [dict(), dict(per_sample=True, include_background=False),
                                     dict(ignore_index=IGNORE, exclude_empty=True), dict(weight="per-class")],
                         ids=lambda o: "-".join(o) or "defaults")
def test_dice_ce_options(backend, options, reduction):
    x, y = make_class_pair((2, 3, 10, 11), torch.float64, ignore_fraction=0.15, absent=(1,))
    if "ignore_index" not in options:
        y = torch.where(y == IGNORE, torch.zeros_like(y), y)
    if options.get("weight") == "per-class":
        options = dict(options, weight=torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64, device=DEVICE))
    check("dice_ce", backend, x, y, reduction=reduction, **options)


@backends
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("params", [dict(alpha=0.25, gamma=2.0), dict(alpha=None, gamma=0.0),
                                    dict(alpha=None, gamma=0.5), dict(alpha=0.8, gamma=3.0)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_focal_parameters(backend, dtype, params, reduction):
    x, y = make_class_pair((2, 6, 7, 11), dtype, torch.uint8, ignore_fraction=0.1)
    check("focal", backend, x, y, reduction=reduction, ignore_index=IGNORE, **params)


@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS + ["reference"])
def test_dice_ce_cross_entropy_term_is_f_cross_entropy(backend):
    x, y = make_class_pair((2, 4, 9, 10), torch.float64, ignore_fraction=0.2)
    y = torch.where(y == IGNORE, torch.full_like(y, -100), y)
    ce_only = fusedloss.dice_ce_loss(x, y, dice_weight=0.0, ignore_index=-100, backend=backend)
    assert_close(ce_only, F.cross_entropy(x, y, ignore_index=-100), torch.float64)
    focal_as_ce = fusedloss.focal_loss(x, y, mode="multiclass", alpha=None, gamma=0.0, ignore_index=-100,
                                       backend=backend)
    assert_close(focal_as_ce, F.cross_entropy(x, y, ignore_index=-100), torch.float64)


@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS + ["reference"])
def test_multiclass_dice_by_hand(backend):
    x, y = make_class_pair((2, 3, 6, 5), torch.float64)
    p = torch.softmax(x, 1)
    one_hot = F.one_hot(y, 3).movedim(-1, 1).double()
    dims = (0, 2, 3)
    dice = 1 - (2 * (p * one_hot).sum(dims) + 1) / (p.sum(dims) + one_hot.sum(dims) + 1)
    assert_close(fusedloss.DiceLoss(mode="multiclass", reduction="none", backend=backend)(x, y), dice, torch.float64)
    assert_close(fusedloss.DiceLoss(mode="multiclass", include_background=False, backend=backend)(x, y),
                 dice[1:].mean(), torch.float64)


@backends
def test_all_pixels_ignored_is_finite(backend):
    x, y = make_class_pair((1, 3, 4, 4), torch.float32)
    y = torch.full_like(y, IGNORE)
    for name in ALL:
        loss, grad = multiclass_loss_and_grad(name, x, y, backend, **multiclass_options(name, ignore_index=IGNORE))
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert (grad == 0).all()


@backends
@pytest.mark.parametrize("name", ALL)
def test_extreme_logits(backend, name):
    x, y = make_class_pair((2, 4, 6, 7), torch.float16)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE) < 0.5, -1e4, 1e4)
    x = x.to(torch.float16)
    loss, grad = multiclass_loss_and_grad(name, x, y, backend, **multiclass_options(name))
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@backends
def test_unchecked_out_of_range_class_is_ignored_by_the_kernels(backend):
    """With the target check off (FUSEDLOSS_CHECK_TARGETS=0) the kernels treat an
    index outside [0, C) as ignored and read nothing with it."""
    x, y = make_class_pair((2, 3, 5, 6), torch.float64)
    bad = y.clone()
    bad[0, 0, :3] = 7
    marked = y.clone()
    marked[0, 0, :3] = IGNORE
    ops = fused_ops(backend)
    spec = (True, 0.5, 0.5, 0.5, 1.0, 1.0, True, -1.0, 0.0, 1.0, True)
    got, _ = ops.softmax_loss(x, bad, None, False, *spec, None, True, False, "mean", False)
    want, _ = ops.softmax_loss(x, marked, None, False, *spec, IGNORE, True, False, "mean", True)
    assert_close(got, want, torch.float64)


@backends
@pytest.mark.parametrize("name", ALL)
def test_gradcheck(backend, name):
    x, y = make_class_pair((2, 3, 2, 3), torch.float64, ignore_fraction=0.2, absent=(1,))
    options = multiclass_options(name, ignore_index=IGNORE, per_sample=name != "focal")
    if name == "focal":
        options.pop("per_sample", None)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: fusedloss.MULTICLASS_LOSSES[name](inp, y, backend=backend, **options),
                                    (x,), eps=1e-6, atol=1e-8, rtol=1e-6)


@backends
def test_opcheck(backend):
    ops = fused_ops(backend)
    x, y = make_class_pair((2, 4, 3, 5), torch.float32, torch.uint8, ignore_fraction=0.2)
    x.requires_grad_(True)
    weight = torch.tensor([1.0, 0.5, 2.0, 1.0], device=DEVICE)
    spec = (True, 0.3, 0.7, 1.0, 0.75, 0.8, True, 0.25, 2.0, 1.2, True)
    torch.library.opcheck(ops.softmax_loss, (x, y, weight, True, *spec, IGNORE, False, True, "mean", True))
    torch.library.opcheck(ops.softmax_loss, (x, y, None, False, *spec[:6], False, -1.0, 0.0, 1.0, True, None, True,
                                             False, "none", False))
    torch.library.opcheck(ops.softmax_focal_map, (x, y, 0.25, 2.0, IGNORE, True))
    x = x.detach()  # the backward ops have no backward of their own
    loss, coef = ops.softmax_loss(x, y, None, True, *spec, IGNORE, True, False, "sum", True)
    torch.library.opcheck(ops.softmax_loss_backward, (torch.ones_like(loss), x, y, coef, True, True, True, 0.25, 2.0,
                                                      IGNORE))
    torch.library.opcheck(ops.softmax_focal_map_backward, (torch.ones(y.shape, device=DEVICE), x, y, 0.25, 2.0,
                                                           IGNORE))


@backends
@pytest.mark.parametrize("module", [
    lambda b: fusedloss.DiceLoss(mode="multiclass", include_background=False, ignore_index=IGNORE, backend=b),
    lambda b: fusedloss.FocalLoss(mode="multiclass", ignore_index=IGNORE, backend=b),
    lambda b: fusedloss.DiceCELoss(ignore_index=IGNORE, backend=b),
], ids=["dice", "focal", "dice_ce"])
def test_compile_fullgraph(backend, module):
    torch._dynamo.reset()
    criterion = module(backend)
    x, y = make_class_pair((2, 4, 9, 7), torch.float32, ignore_fraction=0.1)

    def step(logits):
        return criterion(logits * 2.0, y) * 3

    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        logits = x.detach().clone().requires_grad_(True)
        out = fn(logits)
        out.backward()
        results.append((out.detach(), logits.grad))
    assert_close(results[1][0], results[0][0], torch.float32)
    assert_close(results[1][1], results[0][1], torch.float32)


@backends
@pytest.mark.parametrize("name", ALL)
def test_bitwise_repeatable(backend, name):
    x, y = make_class_pair((2, 7, 90, 91), torch.float32, torch.uint8, ignore_fraction=0.05)
    options = multiclass_options(name, ignore_index=IGNORE)
    first = multiclass_loss_and_grad(name, x, y, backend, **options)
    again = multiclass_loss_and_grad(name, x, y, backend, **options)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@backends
@pytest.mark.parametrize("classes", [3, 95])
def test_saves_no_one_hot_or_softmax(backend, classes):
    """Memory the fused loss adds does not grow with C: only input, target and
    (groups, 3) coefficients are saved for backward."""
    x, y = make_class_pair((1, classes, 16, 16), torch.float16, torch.uint8)
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = fusedloss.DiceCELoss(backend=backend)(x, y)
    owned = {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    extra = sum(s.numel() for s in saved if s.untyped_storage().data_ptr() not in owned)
    assert extra <= classes * 3
    loss.backward()


def test_bad_multiclass_input():
    x, y = make_class_pair((2, 3, 4, 5))
    with pytest.raises(TypeError, match="target must hold class indices"):
        fusedloss.dice_loss(x, y.float(), mode="multiclass")
    with pytest.raises(ValueError, match=r"target must have shape \(2, 4, 5\)"):
        fusedloss.dice_loss(x, y[:, :2], mode="multiclass")
    with pytest.raises(ValueError, match="C >= 2 classes"):
        fusedloss.dice_loss(x[:, :1], y, mode="multiclass")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), one per class"):
        fusedloss.dice_loss(x, y, mode="multiclass", weight=torch.ones(2, device=DEVICE))
    with pytest.raises(ValueError, match="per_channel does not apply"):
        fusedloss.dice_loss(x, y, mode="multiclass", per_channel=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        fusedloss.dice_loss(x, y, mode="softmax")
    with pytest.raises(ValueError, match="options of mode='multiclass'"):
        fusedloss.dice_loss(x, y.float(), ignore_index=255)
    with pytest.raises(ValueError, match="reduction='none' is not defined for dice_ce_loss"):
        fusedloss.dice_ce_loss(x, y, reduction="none")
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        fusedloss.dice_ce_loss(x, y, ignore_index=2.5)
