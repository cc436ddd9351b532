"""The reference (and so every backend) equals the definitions as users know
them: the classic sigmoid-flatten-smooth=1 DiceLoss, torchvision's
sigmoid_focal_loss, nn.BCEWithLogitsLoss + Dice, F.cross_entropy (Dice+CE's
and the gamma = 0 focal loss's CE term), and the formulas by hand; and the
output shapes and dtypes of both families."""

import pytest
import torch
import torch.nn.functional as F
from cases import BINARY, FAMILIES, MULTICLASS, parametrize
from helpers import FUSED_BACKENDS, IGNORE, assert_close, make_class_pair, make_pair

import fusedloss

BACKENDS = FUSED_BACKENDS + ["reference"]


def classic_dice_loss(inputs, targets, smooth=1):
    """The DiceLoss module found in countless segmentation notebooks."""
    inputs = torch.sigmoid(inputs).view(-1)
    targets = targets.view(-1)
    intersection = (inputs * targets).sum()
    dice = (2.0 * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
    return 1 - dice


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, restated (torchvision is not a dependency)."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


@pytest.mark.parametrize("backend", BACKENDS)
def test_dice_module_is_the_classic_dice_loss(backend):
    x, t = make_pair((4, 1, 31, 29), torch.float64, torch.float64)
    assert_close(fusedloss.DiceLoss(backend=backend)(x, t), classic_dice_loss(x, t), torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 1.5), (0.5, 0.0)])
def test_focal_is_torchvision_sigmoid_focal_loss(backend, reduction, alpha, gamma):
    x, t = make_pair((2, 3, 7, 9), torch.float64, torch.float64)
    ours = fusedloss.FocalLoss(alpha=None if alpha < 0 else alpha, gamma=gamma, reduction=reduction, backend=backend)(
        x, t
    )
    assert_close(ours, torchvision_sigmoid_focal_loss(x, t, alpha, gamma, reduction), torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dice_bce_is_bce_with_logits_plus_dice(backend):
    x, t = make_pair((2, 1, 17, 16), torch.float64, torch.float64)
    expected = torch.nn.BCEWithLogitsLoss()(x, t) + classic_dice_loss(x, t)
    assert_close(fusedloss.DiceBCELoss(backend=backend)(x, t), expected, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_region_formulas_by_hand(backend):
    x, t = make_pair((3, 2, 5, 4), torch.float64, torch.float64)
    p = torch.sigmoid(x)
    dims = (0, 2, 3)  # per channel
    i, ps, ts = (p * t).sum(dims), p.sum(dims), t.sum(dims)
    fp, fn = ps - i, ts - i
    s = 0.7
    expected = {"dice": 1 - (2 * i + s) / (ps + ts + s), "iou": 1 - (i + s) / (ps + ts - i + s),
                "tversky": 1 - (i + s) / (i + 0.2 * fp + 0.8 * fn + s),
                "focal_tversky": (1 - (i + s) / (i + 0.2 * fp + 0.8 * fn + s)) ** 1.5}
    extra = {"tversky": dict(alpha=0.2, beta=0.8), "focal_tversky": dict(alpha=0.2, beta=0.8, gamma=1.5)}
    weight = torch.tensor([0.3, 2.0], dtype=torch.float64, device=x.device)
    for name, per_channel in expected.items():
        fn_ = fusedloss.LOSSES[name]
        losses = fn_(x, t, smooth=s, per_channel=True, reduction="none", backend=backend, **extra.get(name, {}))
        assert_close(losses, per_channel, torch.float64)
        mean = fn_(x, t, smooth=s, per_channel=True, weight=weight, backend=backend, **extra.get(name, {}))
        assert_close(mean, (per_channel * weight).mean(), torch.float64)


GROUP_SHAPES = {
    # (options, the loss's shape with reduction='none') for an input of shape (3, 2, 5, 4)
    BINARY: [(dict(), ()), (dict(per_sample=True), (3,)), (dict(per_channel=True), (2,)),
             (dict(per_sample=True, per_channel=True), (3, 2))],
    MULTICLASS: [(dict(), (2,)), (dict(per_sample=True), (3, 2))],
}


@parametrize(
    "family, backend", [(family, backend) for family in FAMILIES for backend in family.backends + ("reference",)]
)
def test_per_sample_and_per_channel_shapes(family, backend):
    x, t = family.make_pair((3, 2, 5, 4), torch.float32)
    for options, shape in GROUP_SHAPES[family]:
        out = fusedloss.dice_loss(
            x, t, reduction="none", backend=backend, **family.options("dice", params=False), **options
        )
        assert out.shape == shape, (options, out.shape)
    focal_map = fusedloss.focal_loss(x, t, reduction="none", backend=backend, **family.options("focal", params=False))
    assert focal_map.shape == t.shape


@parametrize(
    "family, backend", [(family, backend) for family in FAMILIES for backend in family.backends + ("reference",)]
)
def test_output_dtypes(family, backend):
    for dtype, loss_dtype in [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                              (torch.float32, torch.float32), (torch.float64, torch.float64)]:
        x, t = family.make_pair((2, 3, 4), dtype, torch.uint8)
        dice, focal = family.options("dice", params=False), family.options("focal", params=False)
        assert fusedloss.dice_loss(x, t, backend=backend, **dice).dtype == loss_dtype
        assert fusedloss.focal_loss(x, t, backend=backend, **focal).dtype == loss_dtype
        assert fusedloss.focal_loss(x, t, reduction="none", backend=backend, **focal).dtype == dtype


def test_jaccard_is_iou():
    assert fusedloss.JaccardLoss is fusedloss.IoULoss
    assert fusedloss.jaccard_loss is fusedloss.iou_loss


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("name", ["dice", "iou", "tversky", "focal_tversky", "dice_bce"])
def test_smooth_zero_on_an_empty_group_is_a_perfect_match(backend, name):
    """The README's decision: smooth = 0 with nothing predicted (p underflows to 0) and
    nothing to find is 0/0 in the formula; every backend scores it loss 0 and gradient 0
    (the reference too, where autograd of the formula alone would give NaN). The other
    group is unchanged."""
    x, t = make_pair((2, 1, 4, 4), torch.float32)
    x[0] = -200.0  # sigmoid rounds to exactly 0 in fp32
    t[0] = 0.0
    x.requires_grad_(True)
    options = dict(smooth=0.0, per_sample=True, reduction="none")
    if name == "dice_bce":
        options.update(bce_weight=0.0)
    fn = fusedloss.LOSSES[name]
    loss = fn(x, t, backend=backend, **options)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert loss[0].item() == 0.0 and torch.count_nonzero(grad[0]).item() == 0
    reference = fn(x, t, backend="reference", **options)
    assert reference[0].item() == 0.0  # not the formula's 0/0
    (ref_grad,) = torch.autograd.grad(reference.sum(), x)
    assert torch.count_nonzero(ref_grad[0]).item() == 0
    assert_close(loss[1].detach(), reference[1].detach(), torch.float32)
    assert_close(grad[1], ref_grad[1], torch.float32)


# ---- multiclass ----


@pytest.mark.parametrize("backend", MULTICLASS.backends + ("reference",))
def test_dice_ce_cross_entropy_term_is_f_cross_entropy(backend):
    x, y = make_class_pair((2, 4, 9, 10), torch.float64, ignore_fraction=0.2)
    y = torch.where(y == IGNORE, torch.full_like(y, -100), y)
    ce_only = fusedloss.dice_ce_loss(x, y, dice_weight=0.0, ignore_index=-100, backend=backend)
    assert_close(ce_only, F.cross_entropy(x, y, ignore_index=-100), torch.float64)
    focal_as_ce = fusedloss.focal_loss(
        x, y, mode="multiclass", alpha=None, gamma=0.0, ignore_index=-100, backend=backend
    )
    assert_close(focal_as_ce, F.cross_entropy(x, y, ignore_index=-100), torch.float64)


@pytest.mark.parametrize("backend", MULTICLASS.backends + ("reference",))
def test_multiclass_dice_by_hand(backend):
    x, y = make_class_pair((2, 3, 6, 5), torch.float64)
    p = torch.softmax(x, 1)
    one_hot = F.one_hot(y, 3).movedim(-1, 1).double()
    dims = (0, 2, 3)
    dice = 1 - (2 * (p * one_hot).sum(dims) + 1) / (p.sum(dims) + one_hot.sum(dims) + 1)
    assert_close(fusedloss.DiceLoss(mode="multiclass", reduction="none", backend=backend)(x, y), dice, torch.float64)
    assert_close(fusedloss.DiceLoss(mode="multiclass", include_background=False, backend=backend)(x, y),
                 dice[1:].mean(), torch.float64)
