"""LossSpec.min_intersection (binary family), on every backend: I = sum(min(p, t)), smp's
and MONAI's (soft_label=True) soft intersection, written (P + T - sum|p - t|) / 2 there.
The ops are called directly (no public argument: the compat layer passes the spec), with
soft targets, per-channel and per-sample groups, logits and probabilities, ignore_index,
fp32 and fp64, against a plain PyTorch computation here: I from (p + t - |p - t|) / 2,
the gradient from its autograd (1/2 at p == t, torch's subgradient of |.|). Also the
ties, and the errors: with squared_pred, and in the multi-class family."""

import pytest
import torch
from cases import parametrize
from helpers import DEVICE, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, assert_close, make_class_pair

from fusedloss import reference
from fusedloss._spec import LossSpec, tversky_spec
from fusedloss.ops import fused_ops
from fusedloss.ops.schema import spec_arguments

BACKENDS = FUSED_BACKENDS + ["reference"]
SHAPE = (2, 3, 5, 6)
GROUPINGS = [dict(per_sample=False, per_channel=True), dict(per_sample=True, per_channel=False)]
IGNORED = -1  # ignore_index: a float target holds -1.0 there
# Tversky with a != b (coef_I and coef_P both matter) and the index's smoothing.
ALPHA, BETA, SMOOTH_NR, SMOOTH_DR = 0.3, 0.7, 0.5, 1.0
SPEC = tversky_spec(ALPHA, BETA, SMOOTH_NR, SMOOTH_DR, min_intersection=True)


def _pair(dtype, from_logits, ignore_index, seed=0):
    """Logits (or probabilities) and a soft target in [0, 1], some of it hard, some ignored."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64) * 2
    t = torch.rand(SHAPE, generator=gen, dtype=torch.float64)
    t = torch.where(torch.rand(SHAPE, generator=gen) < 0.2, t.round(), t)
    if ignore_index is not None:
        t = torch.where(torch.rand(SHAPE, generator=gen) < 0.15, ignore_index, t)
    if not from_logits:
        x = torch.sigmoid(x)
    return x.to(dtype).to(DEVICE), t.to(dtype).to(DEVICE)


def _dims(per_sample, per_channel):
    kept = ([0] if per_sample else []) + ([1] if per_channel else [])
    return tuple(d for d in range(len(SHAPE)) if d not in kept)


def plain_sums(x, t, from_logits, ignore_index, per_sample, per_channel):
    """[I, P, T] per group (flattened as the ops' rows), I = sum((p + t - |p - t|) / 2)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, t = x.to(acc), t.to(acc)
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    x = torch.where(valid, x, 0.0)
    p = torch.where(valid, torch.sigmoid(x) if from_logits else x, 0.0)
    t = torch.where(valid, t, 0.0)
    dims = _dims(per_sample, per_channel)
    intersection = (p + t - (p - t).abs()) / 2
    return torch.stack([intersection.sum(dims), p.sum(dims), t.sum(dims)], -1).reshape(-1, 3)


def plain_loss(x, t, from_logits, ignore_index, per_sample, per_channel):
    """Tversky per group: 1 - (I + nr) / (I + a (P - I) + b (T - I) + dr)."""
    i, p, t = plain_sums(x, t, from_logits, ignore_index, per_sample, per_channel).unbind(-1)
    return 1 - (i + SMOOTH_NR) / (i + ALPHA * (p - i) + BETA * (t - i) + SMOOTH_DR)


def _upstream(loss):
    return torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)


def stats_of(backend, x, t, from_logits, ignore_index, per_sample, per_channel):
    """[I, P, T] per group from the backend's statistics."""
    spec = SPEC._replace(from_logits=from_logits, clamped_log=not from_logits)
    if backend == "reference":
        sums = reference._region_sums(x, t, per_sample, per_channel, squared_pred=False, from_logits=from_logits,
                                      ignore_index=ignore_index, min_intersection=True)
        return torch.stack(sums, -1).reshape(-1, 3)
    sums = fused_ops(backend).binary_stats(x, t, per_sample, per_channel, **spec_arguments("binary_stats", spec),
                                           ignore_index=ignore_index, check_target=True)
    return sums[:, :3]


def loss_and_grad(backend, x, t, from_logits, ignore_index, per_sample, per_channel, spec=SPEC):
    """The per-group losses and the gradient of their upstream-weighted sum, through autograd."""
    spec = spec._replace(from_logits=from_logits, clamped_log=not from_logits)
    x = x.detach().clone().requires_grad_(True)
    if backend == "reference":
        loss = reference.tversky_loss(x, t, ALPHA, BETA, SMOOTH_NR, SMOOTH_DR, per_sample, per_channel,
                                      reduction="none", from_logits=from_logits, ignore_index=ignore_index,
                                      min_intersection=True).reshape(-1)
    else:
        loss, _ = fused_ops(backend).binary_loss(x, t, None, per_sample, per_channel,
                                                 **spec_arguments("binary_loss", spec), ignore_index=ignore_index,
                                                 reduction="none", check_target=True)
        loss = loss.reshape(-1)
    (grad,) = torch.autograd.grad(loss, x, _upstream(loss))
    return loss.detach(), grad


def plain_loss_and_grad(x, t, from_logits, ignore_index, per_sample, per_channel):
    x = x.detach().clone().requires_grad_(True)
    loss = plain_loss(x, t, from_logits, ignore_index, per_sample, per_channel)
    (grad,) = torch.autograd.grad(loss, x, _upstream(loss))
    return loss.detach(), grad.to(x.dtype)


CASES = [(backend, dtype, from_logits, grouping, ignore_index) for backend in BACKENDS
         for dtype in (torch.float64, torch.float32) for from_logits in (True, False) for grouping in GROUPINGS
         for ignore_index in (None, IGNORED)]


@parametrize("backend, dtype, from_logits, grouping, ignore_index", CASES)
def test_statistics_and_gradient_match_plain_pytorch(backend, dtype, from_logits, grouping, ignore_index):
    x, t = _pair(dtype, from_logits, ignore_index)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    sums = stats_of(backend, x, t, from_logits, ignore_index, **grouping)
    expected = plain_sums(x, t, from_logits, ignore_index, **grouping)
    assert_close(sums, expected, acc)
    # Soft targets: the intersection is not sum(p * t) (the option changes something).
    product = reference._region_sums(x, t, **grouping, from_logits=from_logits, ignore_index=ignore_index)[0]
    assert not torch.allclose(sums[:, 0], product.reshape(-1).to(sums.dtype))
    loss, grad = loss_and_grad(backend, x, t, from_logits, ignore_index, **grouping)
    want_loss, want_grad = plain_loss_and_grad(x, t, from_logits, ignore_index, **grouping)
    assert_close(loss, want_loss, acc)
    assert grad.dtype == x.dtype
    assert_close(grad, want_grad, dtype)
    if ignore_index is not None:
        assert (grad[t == ignore_index] == 0).all()


@parametrize("backend, gamma", [(backend, gamma) for backend in FUSED_BACKENDS for gamma in (0.0, 2.0)])
def test_with_an_element_term(backend, gamma):
    """Region + element (BCE, focal): the region part is the plain one, the element part the
    element term's own op (the loops with both terms are instantiations of their own)."""
    x, t = _pair(torch.float64, True, IGNORED)
    grouping = GROUPINGS[0]
    elem = dict(elem=True, elem_weight=1.3, focal_alpha=0.25, focal_gamma=gamma)
    both = loss_and_grad(backend, x, t, True, IGNORED, **grouping, spec=SPEC._replace(**elem))
    element = loss_and_grad(backend, x, t, True, IGNORED, **grouping, spec=LossSpec(**elem))
    region = plain_loss_and_grad(x, t, True, IGNORED, **grouping)
    assert_close(both[0], region[0] + element[0], torch.float64)
    assert_close(both[1], region[1] + element[1], torch.float64)


@parametrize("backend, dtype", [(backend, dtype) for backend in BACKENDS for dtype in (torch.float64, torch.float32)])
def test_ties_take_half_the_step(backend, dtype):
    """p == t exactly (probabilities): dI/dp = 1/2, so in one group the gradient at a tie is
    the mean of those below (coef_I + coef_P) and above (coef_P) the target."""
    gen = torch.Generator().manual_seed(3)
    t = torch.rand(SHAPE, generator=gen, dtype=torch.float64).to(dtype)
    offset = torch.tensor([-0.1, 0.0, 0.1], dtype=dtype)[torch.arange(t.numel()) % 3].reshape(SHAPE)
    p = (t + offset).clamp(0, 1)
    p = torch.where(offset == 0, t, p)  # exact ties
    below, tie, above = p < t, p == t, p > t
    assert tie.sum() >= t.numel() // 3 and below.any() and above.any()
    p, t = p.to(DEVICE), t.to(DEVICE)
    grouping = dict(per_sample=False, per_channel=False)  # one group: the same coefficients everywhere
    loss, grad = loss_and_grad(backend, p, t, False, None, **grouping)
    want_loss, want_grad = plain_loss_and_grad(p, t, False, None, **grouping)
    assert_close(loss, want_loss, torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(grad, want_grad, dtype)
    grad = grad.cpu()
    coef_p = grad[above.cpu()]
    coef_i_plus_p = grad[below.cpu()]
    assert torch.allclose(coef_p, coef_p[0]) and torch.allclose(coef_i_plus_p, coef_i_plus_p[0])
    assert coef_i_plus_p[0] != coef_p[0]
    torch.testing.assert_close(grad[tie.cpu()], ((coef_i_plus_p[0] + coef_p[0]) / 2).expand(int(tie.sum())))


@parametrize("backend", BACKENDS)
def test_not_with_squared_pred(backend):
    x, t = _pair(torch.float32, True, None)
    spec = SPEC._replace(squared_pred=True)
    with pytest.raises(ValueError, match="min_intersection .* does not combine with squared_pred"):
        if backend == "reference":
            reference.dice_loss(x, t, squared_pred=True, min_intersection=True)
        else:
            fused_ops(backend).binary_loss(x, t, None, False, False, **spec_arguments("binary_loss", spec),
                                           ignore_index=None, reduction="mean", check_target=True)
    if backend == "reference":
        return
    ops = fused_ops(backend)
    with pytest.raises(ValueError, match="does not combine with squared_pred"):
        ops.binary_stats(x, t, False, False, **spec_arguments("binary_stats", spec), ignore_index=None,
                         check_target=True)
    coef = torch.zeros((1, 3), device=DEVICE)
    with pytest.raises(ValueError, match="does not combine with squared_pred"):
        ops.binary_loss_backward(torch.ones((), device=DEVICE), x, t, coef, False, False,
                                 **spec_arguments("binary_loss_backward", spec), ignore_index=None)


@parametrize("backend", FUSED_MULTICLASS_BACKENDS)
def test_multiclass_refuses_it(backend):
    x, y = make_class_pair((2, 3, 4, 5))
    with pytest.raises(ValueError, match="min_intersection .* binary family only"):
        fused_ops(backend).multiclass_loss(x, y, None, None, False, **spec_arguments("multiclass_loss", SPEC),
                                           ignore_index=None, include_background=True, exclude_empty=False,
                                           reduction="mean", check_target=True)


def test_the_default_is_the_product():
    """min_intersection defaults to False: LossSpec's and every factory's."""
    assert LossSpec().min_intersection is False
    assert tversky_spec(0.5, 0.5, 1.0, 1.0).min_intersection is False
