"""fusedloss.compat.tutorial against the tutorial's classes, written here from their code:
value and gradient, fp64 and fp32, float / bool / uint8 targets, every backend, at
ordinary and at saturated logits (where BCE of sigmoid(x) with logs clamped at -100
differs from BCE on logits)."""

import pytest
import torch
import torch.nn.functional as F
from cases import parametrize
from helpers import DEVICE, FUSED_BACKENDS, assert_close

import fusedloss
from fusedloss.compat import tutorial


# ---- the tutorial's definitions (its forward bodies; targets made float for bool / uint8) ----


def _flat(inputs, targets):
    return torch.sigmoid(inputs).view(-1), targets.reshape(-1).to(inputs.dtype)


def dice_definition(inputs, targets, smooth=1):
    inputs, targets = _flat(inputs, targets)
    intersection = (inputs * targets).sum()
    dice = (2.0 * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
    return 1 - dice


def dice_bce_definition(inputs, targets, smooth=1):
    inputs, targets = _flat(inputs, targets)
    intersection = (inputs * targets).sum()
    dice_loss = 1 - (2.0 * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
    bce = F.binary_cross_entropy(inputs, targets, reduction="mean")
    return bce + dice_loss


def iou_definition(inputs, targets, smooth=1):
    inputs, targets = _flat(inputs, targets)
    intersection = (inputs * targets).sum()
    total = (inputs + targets).sum()
    union = total - intersection
    return 1 - (intersection + smooth) / (union + smooth)


def focal_definition(inputs, targets, alpha=0.8, gamma=2, smooth=1):
    inputs, targets = _flat(inputs, targets)
    bce = F.binary_cross_entropy(inputs, targets, reduction="mean")
    bce_exp = torch.exp(-bce)
    return alpha * (1 - bce_exp) ** gamma * bce


def tversky_definition(inputs, targets, smooth=1, alpha=0.5, beta=0.5):
    inputs, targets = _flat(inputs, targets)
    tp = (inputs * targets).sum()
    fp = ((1 - targets) * inputs).sum()
    fn = (targets * (1 - inputs)).sum()
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def focal_tversky_definition(inputs, targets, smooth=1, alpha=0.5, beta=0.5, gamma=1):
    return tversky_definition(inputs, targets, smooth, alpha, beta) ** gamma


DEFINITIONS = {"DiceLoss": dice_definition, "DiceBCELoss": dice_bce_definition, "IoULoss": iou_definition,
               "FocalLoss": focal_definition, "TverskyLoss": tversky_definition,
               "FocalTverskyLoss": focal_tversky_definition}
# forward's own arguments, non-default, so each is exercised.
FORWARD_ARGS = {"DiceLoss": dict(smooth=0.5), "DiceBCELoss": dict(smooth=2), "IoULoss": dict(smooth=0.5),
                "FocalLoss": dict(alpha=0.6, gamma=1.5), "TverskyLoss": dict(smooth=1, alpha=0.3, beta=0.7),
                "FocalTverskyLoss": dict(smooth=1, alpha=0.3, beta=0.7, gamma=1.5)}
BACKENDS = FUSED_BACKENDS + ["reference"]


def make(dtype, target_dtype, saturated, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 9, 11, generator=gen, dtype=torch.float64) * 3
    if saturated:  # logits far beyond where the sigmoid rounds to exactly 0 or 1, right and wrong
        extremes = torch.tensor([30.0, -30.0, 95.0, -95.0, 200.0, -200.0], dtype=torch.float64)
        x.view(-1)[: 4 * len(extremes)] = extremes.repeat(4)
    t = (torch.rand(2, 9, 11, generator=gen) < 0.4).float()  # (N, H, W) beside (N, 1, H, W), as in segmentation
    return x.to(dtype).to(DEVICE), t.to(target_dtype).to(DEVICE)


def run(fn, x, t, **kwargs):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, t, **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@parametrize("name, backend, dtype, target_dtype, saturated",
             [(name, backend, dtype, target_dtype, saturated) for name in DEFINITIONS for backend in BACKENDS
              for dtype in (torch.float64, torch.float32) for target_dtype in (torch.float32, torch.bool, torch.uint8)
              for saturated in (False, True) if target_dtype == torch.float32 or not saturated])
def test_equals_the_tutorial(name, backend, dtype, target_dtype, saturated):
    x, t = make(dtype, target_dtype, saturated)
    module = getattr(tutorial, name)(backend=backend)
    loss, grad = run(module, x, t, **FORWARD_ARGS[name])
    expected_loss, expected_grad = run(DEFINITIONS[name], x, t, **FORWARD_ARGS[name])
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_close(loss, expected_loss.to(loss.dtype), dtype)
    assert_close(grad, expected_grad, dtype)


@parametrize("backend", BACKENDS)
def test_saturated_bce_is_the_tutorials_not_logits(backend):
    """The one place the tutorial's BCE differs from BCE on logits: at x = 30 with t = 0,
    log(1 - sigmoid(x)) is log(0), clamped at -100, where BCE on logits is 30."""
    x = torch.tensor([30.0, -2.0], device=DEVICE)
    t = torch.tensor([0.0, 1.0], device=DEVICE)
    expected = (100.0 + F.softplus(torch.tensor(2.0)).item()) / 2
    assert tutorial.tutorial_bce(x, t, backend).item() == pytest.approx(expected, rel=1e-6)
    assert fusedloss.dice_bce_loss(x, t, dice_weight=0.0, backend=backend).item() == pytest.approx(
        (30.0 + F.softplus(torch.tensor(2.0)).item()) / 2, rel=1e-6)


def test_constructor_and_forward_signatures_are_the_tutorials():
    import inspect

    for name, args in FORWARD_ARGS.items():
        cls = getattr(tutorial, name)
        init = inspect.signature(cls.__init__).parameters
        assert list(init)[1:3] == ["weight", "size_average"], name
        assert init["weight"].default is None and init["size_average"].default is True
        forward = inspect.signature(cls.forward).parameters
        assert list(forward)[1:3] == ["inputs", "targets"], name
        assert set(args) <= set(forward), name
    def defaults_of(name):
        parameters = inspect.signature(getattr(tutorial, name).forward).parameters
        return {key: p.default for key, p in parameters.items() if p.default is not inspect.Parameter.empty}

    defaults = {name: defaults_of(name) for name in FORWARD_ARGS}
    assert defaults["FocalLoss"] == dict(alpha=0.8, gamma=2, smooth=1)
    assert defaults["TverskyLoss"] == dict(smooth=1, alpha=0.5, beta=0.5)
    assert defaults["FocalTverskyLoss"] == dict(smooth=1, alpha=0.5, beta=0.5, gamma=1)
    assert defaults["DiceLoss"] == defaults["DiceBCELoss"] == defaults["IoULoss"] == dict(smooth=1)
    tutorial.DiceLoss(torch.ones(3), False)  # accepted and ignored, as in the tutorial
