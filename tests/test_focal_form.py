"""LossSpec.focal_form (binary family), on every backend: the focal factor f of soft targets
as segmentation_models_pytorch (1: (1 - exp(-BCE))**gamma) and MONAI (2: sigmoid(-x (2t - 1))**gamma)
write it, instead of Lin et al.'s / torchvision's (1 - p_t)**gamma (0); all three agree on hard
targets, and gamma = 0 is BCE in every form. Checked against those libraries' formulas written
here in plain PyTorch (value and input gradient through autograd), through the ``binary_stats``
op (``fusedloss.ops.sums.binary_sums``, which takes the LossSpec) and the ``binary_focal_map`` op,
with soft and hard targets, alpha None and 0.25, gamma 0, 0.5, 2 and 3, ignore_index, per-sample
and per-channel groups, fp32 and fp64; and the errors: probabilities, clamped logs, multi-class."""

import pytest
import torch
import torch.nn.functional as F
from cases import parametrize
from helpers import DEVICE, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, assert_close, make_class_pair

from fusedloss import reference
from fusedloss._spec import LossSpec
from fusedloss.ops import fused_ops
from fusedloss.ops.schema import spec_arguments
from fusedloss.ops.sums import binary_sums

BACKENDS = FUSED_BACKENDS + ["reference"]
SHAPE = (2, 3, 4, 5)
IGNORED = -1  # ignore_index: a float target holds -1.0 there
GROUPINGS = [dict(per_sample=False, per_channel=True), dict(per_sample=True, per_channel=False)]
FORMS = (1, 2)


def _pair(dtype, soft=True, ignore_index=None, seed=0):
    """Logits and a target: soft (in (0, 1), a few hard) or hard, some elements ignored."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(SHAPE, generator=gen, dtype=torch.float64)
    t = torch.where(torch.rand(SHAPE, generator=gen) < 0.1, t.round(), t) if soft else t.round()
    if ignore_index is not None:
        t = torch.where(torch.rand(SHAPE, generator=gen) < 0.15, float(ignore_index), t)
    return x.to(dtype).to(DEVICE), t.to(dtype).to(DEVICE)


def smp_focal(x, t, gamma, alpha):
    """segmentation_models_pytorch.losses._functional.focal_loss_with_logits, per element."""
    logpt = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    pt = torch.exp(-logpt)
    loss = (1 - pt).pow(gamma) * logpt
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


def monai_focal(x, t, gamma, alpha):
    """monai.losses.focal_loss.sigmoid_focal_loss, per element."""
    loss = x - x * t - F.logsigmoid(x)
    loss = torch.exp(F.logsigmoid(-x * (t * 2 - 1)) * gamma) * loss
    if alpha is not None:
        loss = (t * alpha + (1 - t) * (1 - alpha)) * loss
    return loss


def lin_focal(x, t, gamma, alpha):
    """torchvision.ops.sigmoid_focal_loss, per element."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    loss = ce * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


PLAIN = {0: lin_focal, 1: smp_focal, 2: monai_focal}


def plain_map(x, t, form, gamma, alpha, ignore_index):
    """The form's element map in the accumulation dtype, 0 where ignored (x, t read as 0 there)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, t = x.to(acc), t.to(acc)
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    x, t = torch.where(valid, x, 0.0), torch.where(valid, t, 0.0)
    return torch.where(valid, PLAIN[form](x, t, gamma, alpha), 0.0)


def _dims(per_sample, per_channel):
    kept = ([0] if per_sample else []) + ([1] if per_channel else [])
    return tuple(d for d in range(len(SHAPE)) if d not in kept)


def _upstream(value):
    return torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype, device=value.device).reshape(value.shape)


def _spec(form, gamma, alpha):
    return LossSpec(elem=True, focal_alpha=-1.0 if alpha is None else alpha, focal_gamma=gamma, focal_form=form)


def element_sums_and_grad(backend, x, t, form, gamma, alpha, ignore_index, per_sample, per_channel):
    """E per group from binary_sums, and the input gradient of its upstream-weighted sum."""
    x = x.detach().clone().requires_grad_(True)
    sums = binary_sums(x, t, _spec(form, gamma, alpha), per_sample=per_sample, per_channel=per_channel,
                       ignore_index=ignore_index, backend=backend)
    element = sums[:, 3]
    (grad,) = torch.autograd.grad(element, x, _upstream(element))
    return element.detach(), grad


def plain_sums_and_grad(x, t, form, gamma, alpha, ignore_index, per_sample, per_channel):
    x = x.detach().clone().requires_grad_(True)
    element = plain_map(x, t, form, gamma, alpha, ignore_index).sum(_dims(per_sample, per_channel)).reshape(-1)
    (grad,) = torch.autograd.grad(element, x, _upstream(element))
    return element.detach(), grad.to(x.dtype)


def focal_map_and_grad(backend, x, t, form, gamma, alpha, ignore_index):
    x = x.detach().clone().requires_grad_(True)
    if backend == "reference":
        loss = reference._focal_map(x, t, alpha, gamma, ignore_index=ignore_index, focal_form=form)
    else:
        loss = fused_ops(backend).binary_focal_map(x, t, -1.0 if alpha is None else alpha, gamma, form, True, False,
                                                   ignore_index, True)
    (grad,) = torch.autograd.grad(loss, x, _upstream(loss))
    return loss.detach(), grad


def plain_map_and_grad(x, t, form, gamma, alpha, ignore_index):
    x = x.detach().clone().requires_grad_(True)
    loss = plain_map(x, t, form, gamma, alpha, ignore_index)
    (grad,) = torch.autograd.grad(loss, x, _upstream(loss))
    return loss.detach().to(x.dtype), grad.to(x.dtype)


# (dtype, gamma, alpha, ignore_index, grouping): each value of each option once at least,
# few launches (the Triton interpreter runs these); the focal map takes every gamma.
OPTIONS = [(torch.float64, 0.5, None, None, GROUPINGS[0]), (torch.float64, 3.0, 0.25, IGNORED, GROUPINGS[1]),
           (torch.float32, 2.0, 0.25, IGNORED, GROUPINGS[0])]
CASES = [(backend, form, *options) for backend in BACKENDS for form in FORMS for options in OPTIONS]


@parametrize("backend, form, dtype, gamma, alpha, ignore_index, grouping", CASES)
def test_sums_and_map_match_the_library(backend, form, dtype, gamma, alpha, ignore_index, grouping):
    x, t = _pair(dtype, soft=True, ignore_index=ignore_index)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    element, grad = element_sums_and_grad(backend, x, t, form, gamma, alpha, ignore_index, **grouping)
    want_element, want_grad = plain_sums_and_grad(x, t, form, gamma, alpha, ignore_index, **grouping)
    assert_close(element, want_element, acc)
    assert_close(grad, want_grad, dtype)
    # Soft targets: the form changes the numbers (Lin et al.'s are not these).
    lin = plain_sums_and_grad(x, t, 0, gamma, alpha, ignore_index, **grouping)[0]
    assert not torch.allclose(element, lin.to(element.dtype))
    for map_gamma in (0.5, 2.0, 3.0):
        loss_map, map_grad = focal_map_and_grad(backend, x, t, form, map_gamma, alpha, ignore_index)
        want_map, want_map_grad = plain_map_and_grad(x, t, form, map_gamma, alpha, ignore_index)
        assert_close(loss_map, want_map.to(loss_map.dtype), dtype)
        assert_close(map_grad, want_map_grad, dtype)
    if ignore_index is not None:
        ignored = t == ignore_index
        assert (map_grad[ignored] == 0).all() and (grad[ignored] == 0).all() and (loss_map[ignored] == 0).all()


@parametrize("backend, dtype, alpha", [(backend, dtype, alpha) for backend in BACKENDS
                                       for dtype, alpha in ((torch.float64, None), (torch.float32, 0.25))])
def test_hard_targets_agree_in_every_form(backend, dtype, alpha):
    """t in {0, 1}: (1 - exp(-BCE)) = sigmoid(-x (2t - 1)) = 1 - p_t, so every form is Lin et al.'s."""
    x, t = _pair(dtype, soft=False, ignore_index=IGNORED)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grouping = GROUPINGS[1]
    lin = element_sums_and_grad(backend, x, t, 0, 2.0, alpha, IGNORED, **grouping)
    for form in FORMS:
        element, grad = element_sums_and_grad(backend, x, t, form, 2.0, alpha, IGNORED, **grouping)
        assert_close(element, lin[0], acc)
        assert_close(grad, lin[1], dtype)
        want = plain_sums_and_grad(x, t, form, 2.0, alpha, IGNORED, **grouping)
        assert_close(element, want[0], acc)


@parametrize("backend, dtype, alpha", [(backend, dtype, alpha) for backend in BACKENDS
                                       for dtype, alpha in ((torch.float64, 0.25), (torch.float32, None))])
def test_gamma_zero_is_bce_in_every_form(backend, dtype, alpha):
    """gamma = 0: every form is (alpha-weighted) BCE, the existing gamma-0 path: the same bits."""
    x, t = _pair(dtype, soft=True, ignore_index=IGNORED)
    grouping = GROUPINGS[1]
    lin = element_sums_and_grad(backend, x, t, 0, 0.0, alpha, IGNORED, **grouping)
    lin_map = focal_map_and_grad(backend, x, t, 0, 0.0, alpha, IGNORED)
    for form in FORMS:
        element, grad = element_sums_and_grad(backend, x, t, form, 0.0, alpha, IGNORED, **grouping)
        assert torch.equal(element, lin[0]) and torch.equal(grad, lin[1])
        loss_map, map_grad = focal_map_and_grad(backend, x, t, form, 0.0, alpha, IGNORED)
        assert torch.equal(loss_map, lin_map[0]) and torch.equal(map_grad, lin_map[1])
        want = plain_sums_and_grad(x, t, form, 0.0, alpha, IGNORED, **grouping)
        assert_close(element, want[0], torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close(grad, want[1], dtype)


@parametrize("backend", FUSED_BACKENDS)
def test_with_the_region_term(backend):
    """Dice + focal in one binary_loss: the region part is the Lin form's, the element part the
    form's own (the loops with both terms, squared_pred and min_intersection too)."""
    x, t = _pair(torch.float64, soft=True, ignore_index=IGNORED)
    ops = fused_ops(backend)
    for region, form in ((dict(), 1), (dict(squared_pred=True), 2), (dict(min_intersection=True), 1)):
        spec = LossSpec(region=True, tv_alpha=0.5, tv_beta=0.5, smooth_nr=1.0, smooth_dr=1.0, elem=True,
                        focal_alpha=0.25, focal_gamma=2.0, focal_form=form, elem_mean=False, **region)
        results = []
        for s in (spec, spec._replace(elem=False), spec._replace(region=False)):
            xg = x.detach().clone().requires_grad_(True)
            loss, _ = ops.binary_loss(xg, t, None, False, False, **spec_arguments("binary_loss", s),
                                      ignore_index=IGNORED, reduction="none", check_target=True)
            (grad,) = torch.autograd.grad(loss, xg, _upstream(loss))
            results.append((loss.detach().reshape(-1), grad))
        (both, both_grad), (region_only, region_grad), (element, element_grad) = results
        assert_close(both, region_only + element, torch.float64)
        assert_close(both_grad, region_grad + element_grad, torch.float64)
        want = plain_sums_and_grad(x, t, form, 2.0, 0.25, IGNORED, False, False)
        assert_close(element, want[0], torch.float64)
        assert_close(element_grad, want[1], torch.float64)


@parametrize("backend, form", [(backend, form) for backend in BACKENDS for form in FORMS])
def test_logits_only(backend, form):
    """Forms 1 and 2 are written on logits: probabilities and clamped logs are refused."""
    x, t = _pair(torch.float32)
    for fields in (dict(from_logits=False, clamped_log=True), dict(from_logits=True, clamped_log=True)):
        spec = _spec(form, 2.0, 0.25)._replace(**fields)
        with pytest.raises(ValueError, match="focal_form .* take logits"):
            binary_sums(x.sigmoid() if not fields["from_logits"] else x, t, spec, backend=backend)
        if backend == "reference":
            with pytest.raises(ValueError, match="focal_form .* take logits"):
                reference.focal_loss(x, t, focal_form=form, **fields)
            continue
        ops = fused_ops(backend)
        with pytest.raises(ValueError, match="focal_form .* take logits"):
            ops.binary_loss(x, t, None, False, False, **spec_arguments("binary_loss", spec), ignore_index=None,
                            reduction="mean", check_target=True)
        with pytest.raises(ValueError, match="focal_form .* take logits"):
            ops.binary_focal_map(x, t, 0.25, 2.0, form, fields["from_logits"], fields["clamped_log"], None, True)
        with pytest.raises(ValueError, match="focal_form .* take logits"):
            ops.binary_loss_backward(torch.ones((), device=DEVICE), x, t, torch.zeros((1, 3), device=DEVICE), False,
                                     False, **spec_arguments("binary_loss_backward", spec), ignore_index=None)
        with pytest.raises(ValueError, match="focal_form must be 0"):
            ops.binary_focal_map(x, t, 0.25, 2.0, 3, True, False, None, True)


@parametrize("backend", FUSED_MULTICLASS_BACKENDS)
def test_multiclass_refuses_it(backend):
    x, y = make_class_pair((2, 3, 4, 5))
    spec = LossSpec(elem=True, focal_gamma=2.0, focal_form=1)
    with pytest.raises(ValueError, match="focal_form .* binary family only"):
        fused_ops(backend).multiclass_loss(x, y, None, None, False, **spec_arguments("multiclass_loss", spec),
                                           ignore_index=None, include_background=True, exclude_empty=False,
                                           reduction="mean", check_target=True)


def test_the_default_is_lin():
    spec = LossSpec()
    assert spec.focal_form == 0
    assert LossSpec._fields.index("focal_form") == LossSpec._fields.index("focal_gamma") + 1
