"""The reference: every loss written straight from its definition in plain
PyTorch and differentiated by autograd.

It is the oracle of the test suite and the fallback where no fused backend
runs. It shares no formula with the fused code on purpose, so the tests
compare two independent implementations. Inputs are assumed valid (the
public functions in ``fusedloss.functional`` check them first). Statistics are
computed in fp32 (fp64 for fp64 input), like the fused kernels; losses are
returned in that dtype, FocalLoss's per-element map in the input's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _accumulation_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _probabilities_and_target(input, target):
    dtype = _accumulation_dtype(input)
    if target.dim() == input.dim() - 1:
        target = target.unsqueeze(1)
    return torch.sigmoid(input.to(dtype)), target.to(dtype)


def _group_dims(input: torch.Tensor, per_sample: bool, per_channel: bool) -> tuple:
    """The dims summed over: what is left are the groups."""
    kept = ([0] if per_sample else []) + ([1] if per_channel else [])
    return tuple(d for d in range(input.dim()) if d not in kept)


def _sum(values, dims):
    # Tensor.sum(()) sums everything; a group of one element sums nothing.
    return values.sum(dims) if dims else values


def _mean(values, dims):
    return values.mean(dims) if dims else values


def _region_sums(input, target, per_sample, per_channel):
    p, t = _probabilities_and_target(input, target)
    dims = _group_dims(input, per_sample, per_channel)
    return _sum(p * t, dims), _sum(p, dims), _sum(t, dims)


def _reduce_groups(losses, weight, reduction):
    """Weight (per channel, the last dim of ``losses``) then reduce over groups."""
    if weight is not None:
        losses = losses * weight.to(losses.dtype)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def dice_loss(input, target, smooth=1.0, per_sample=False, per_channel=False, weight=None, reduction="mean"):
    """1 - (2*I + smooth) / (P + T + smooth)."""
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel)
    losses = 1 - (2 * intersection + smooth) / (predicted + actual + smooth)
    return _reduce_groups(losses, weight, reduction)


def iou_loss(input, target, smooth=1.0, per_sample=False, per_channel=False, weight=None, reduction="mean"):
    """1 - (I + smooth) / (P + T - I + smooth)."""
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel)
    losses = 1 - (intersection + smooth) / (predicted + actual - intersection + smooth)
    return _reduce_groups(losses, weight, reduction)


jaccard_loss = iou_loss


def _tversky(input, target, alpha, beta, smooth, per_sample, per_channel):
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel)
    false_pos = predicted - intersection
    false_neg = actual - intersection
    return 1 - (intersection + smooth) / (intersection + alpha * false_pos + beta * false_neg + smooth)


def tversky_loss(input, target, alpha=0.5, beta=0.5, smooth=1.0, per_sample=False, per_channel=False,
                 weight=None, reduction="mean"):
    """1 - (I + smooth) / (I + alpha*FP + beta*FN + smooth), FP = P - I, FN = T - I."""
    losses = _tversky(input, target, alpha, beta, smooth, per_sample, per_channel)
    return _reduce_groups(losses, weight, reduction)


def focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, per_sample=False,
                       per_channel=False, weight=None, reduction="mean"):
    """(Tversky loss) ** gamma."""
    losses = _tversky(input, target, alpha, beta, smooth, per_sample, per_channel) ** gamma
    return _reduce_groups(losses, weight, reduction)


def focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="mean"):
    """Lin et al. 2017, as torchvision.ops.sigmoid_focal_loss:
    alpha_t * (1 - p_t)**gamma * BCE(input, t), p_t = p*t + (1-p)*(1-t),
    alpha_t = alpha*t + (1-alpha)*(1-t); alpha=None: no alpha weighting."""
    dtype = _accumulation_dtype(input)
    x = input.to(dtype)
    t = target.to(dtype)
    if t.dim() == x.dim() - 1:
        t = t.unsqueeze(1)
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss.to(input.dtype)


def dice_bce_loss(input, target, smooth=1.0, per_sample=False, per_channel=False, weight=None,
                  reduction="mean", dice_weight=1.0, bce_weight=1.0):
    """bce_weight * mean BCE-with-logits + dice_weight * Dice loss, per group."""
    _, t = _probabilities_and_target(input, target)
    dims = _group_dims(input, per_sample, per_channel)
    x = input.to(t.dtype)
    bce = _mean(F.binary_cross_entropy_with_logits(x, t, reduction="none"), dims)
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel)
    dice = 1 - (2 * intersection + smooth) / (predicted + actual + smooth)
    return _reduce_groups(bce_weight * bce + dice_weight * dice, weight, reduction)
