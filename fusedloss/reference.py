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


def _global(sums, process_group):
    """Sums over every process of ``process_group`` (None: this process only). The
    gradient flows to this process's own terms: d(global loss)/d(local input)."""
    if process_group is None:
        return sums
    total = sums.detach().clone()
    torch.distributed.all_reduce(total, group=process_group)
    return sums + (total - sums.detach())


def _region_sums(input, target, per_sample, per_channel, process_group=None):
    p, t = _probabilities_and_target(input, target)
    dims = _group_dims(input, per_sample, per_channel)
    sums = torch.stack([_sum(p * t, dims), _sum(p, dims), _sum(t, dims)])
    return tuple(_global(sums, process_group))


def _reduce_groups(losses, weight, reduction):
    """Weight (per channel, the last dim of ``losses``) then reduce over groups."""
    if weight is not None:
        losses = losses * weight.to(losses.dtype)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def dice_loss(
    input, target, smooth=1.0, per_sample=False, per_channel=False, weight=None, reduction="mean", process_group=None
):
    """1 - (2*I + smooth) / (P + T + smooth)."""
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel, process_group)
    losses = 1 - (2 * intersection + smooth) / (predicted + actual + smooth)
    return _reduce_groups(losses, weight, reduction)


def iou_loss(
    input, target, smooth=1.0, per_sample=False, per_channel=False, weight=None, reduction="mean", process_group=None
):
    """1 - (I + smooth) / (P + T - I + smooth)."""
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel, process_group)
    losses = 1 - (intersection + smooth) / (predicted + actual - intersection + smooth)
    return _reduce_groups(losses, weight, reduction)


jaccard_loss = iou_loss


def _tversky(input, target, alpha, beta, smooth, per_sample, per_channel, process_group):
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel, process_group)
    false_pos = predicted - intersection
    false_neg = actual - intersection
    return 1 - (intersection + smooth) / (intersection + alpha * false_pos + beta * false_neg + smooth)


def tversky_loss(input, target, alpha=0.5, beta=0.5, smooth=1.0, per_sample=False, per_channel=False, weight=None,
                 reduction="mean", process_group=None):
    """1 - (I + smooth) / (I + alpha*FP + beta*FN + smooth), FP = P - I, FN = T - I."""
    losses = _tversky(input, target, alpha, beta, smooth, per_sample, per_channel, process_group)
    return _reduce_groups(losses, weight, reduction)


def focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, per_sample=False, per_channel=False,
                       weight=None, reduction="mean", process_group=None):
    """(Tversky loss) ** gamma."""
    losses = _tversky(input, target, alpha, beta, smooth, per_sample, per_channel, process_group) ** gamma
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


def dice_bce_loss(input, target, smooth=1.0, per_sample=False, per_channel=False, weight=None, reduction="mean",
                  dice_weight=1.0, bce_weight=1.0, process_group=None):
    """bce_weight * mean BCE-with-logits + dice_weight * Dice loss, per group."""
    _, t = _probabilities_and_target(input, target)
    dims = _group_dims(input, per_sample, per_channel)
    x = input.to(t.dtype)
    bce = _mean(F.binary_cross_entropy_with_logits(x, t, reduction="none"), dims)
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel, process_group)
    dice = 1 - (2 * intersection + smooth) / (predicted + actual + smooth)
    return _reduce_groups(bce_weight * bce + dice_weight * dice, weight, reduction)


# ---- multi-class: softmax over dim 1, integer class map targets ----------------
#
# input (N, C, *spatial) logits, target (N, *spatial) class indices. Pixels whose
# target is ignore_index count nowhere, whatever their logits (NaN included: a
# pixel outside the image may hold anything; its gradient is 0). Statistics per
# class c (per (n, c) with per_sample): I_c = sum p_c*[y=c], P_c = sum p_c, T_c = sum [y=c].


def _counted_pixels(input, target, ignore_index):
    """The logits in the accumulation dtype with ignored pixels' set to 0 (so nothing
    there reaches a sum or a gradient), the valid-pixel mask (N, *spatial) and the
    labels with ignored pixels' set to class 0."""
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    logits = torch.where(valid.unsqueeze(1), input.to(_accumulation_dtype(input)), 0.0)
    labels = torch.where(valid, target, torch.zeros_like(target)).long()
    return logits, valid, labels


def _softmax_and_one_hot(input, target, ignore_index):
    """p = softmax(input) and the one-hot target, both zeroed at ignored pixels,
    and the valid-pixel mask (N, *spatial)."""
    logits, valid, labels = _counted_pixels(input, target, ignore_index)
    one_hot = F.one_hot(labels, input.shape[1]).movedim(-1, 1).to(logits.dtype) * valid.unsqueeze(1)
    p = torch.softmax(logits, dim=1) * valid.unsqueeze(1)
    return p, one_hot, valid


def _class_sums(input, target, per_sample, ignore_index, process_group=None):
    p, one_hot, _ = _softmax_and_one_hot(input, target, ignore_index)
    dims = (2,) if per_sample else (0, 2)
    p, one_hot = p.reshape(p.shape[0], p.shape[1], -1), one_hot.reshape(p.shape[0], p.shape[1], -1)
    return tuple(_global(torch.stack([(p * one_hot).sum(dims), p.sum(dims), one_hot.sum(dims)]), process_group))


def _reduce_classes(losses, actual, weight, include_background, exclude_empty, reduction):
    """Per-class losses (C,) or (N, C): weight, drop the background class, and
    reduce. exclude_empty: classes absent from the target (T = 0) count as 0
    and are left out of the mean's denominator."""
    if weight is not None:
        losses = losses * weight.to(losses.dtype)
    if not include_background:
        losses, actual = losses[..., 1:], actual[..., 1:]
    if exclude_empty:
        present = actual > 0
        losses = torch.where(present, losses, torch.zeros_like(losses))
        if reduction == "mean":
            return losses.sum() / present.sum().clamp(min=1)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _multiclass_tversky(input, target, alpha, beta, smooth, per_sample, ignore_index, process_group):
    intersection, predicted, actual = _class_sums(input, target, per_sample, ignore_index, process_group)
    false_pos = predicted - intersection
    false_neg = actual - intersection
    tversky = 1 - (intersection + smooth) / (intersection + alpha * false_pos + beta * false_neg + smooth)
    return tversky, actual


def multiclass_dice_loss(input, target, smooth=1.0, per_sample=False, weight=None, reduction="mean",
                         include_background=True, ignore_index=None, exclude_empty=False, process_group=None):
    """Per class: 1 - (2*I_c + smooth) / (P_c + T_c + smooth)."""
    intersection, predicted, actual = _class_sums(input, target, per_sample, ignore_index, process_group)
    losses = 1 - (2 * intersection + smooth) / (predicted + actual + smooth)
    return _reduce_classes(losses, actual, weight, include_background, exclude_empty, reduction)


def multiclass_iou_loss(input, target, smooth=1.0, per_sample=False, weight=None, reduction="mean",
                        include_background=True, ignore_index=None, exclude_empty=False, process_group=None):
    """Per class: 1 - (I_c + smooth) / (P_c + T_c - I_c + smooth)."""
    intersection, predicted, actual = _class_sums(input, target, per_sample, ignore_index, process_group)
    losses = 1 - (intersection + smooth) / (predicted + actual - intersection + smooth)
    return _reduce_classes(losses, actual, weight, include_background, exclude_empty, reduction)


def multiclass_tversky_loss(input, target, alpha=0.5, beta=0.5, smooth=1.0, per_sample=False, weight=None,
                            reduction="mean", include_background=True, ignore_index=None, exclude_empty=False,
                            process_group=None):
    """Per class: 1 - (I + smooth) / (I + alpha*FP + beta*FN + smooth)."""
    losses, actual = _multiclass_tversky(input, target, alpha, beta, smooth, per_sample, ignore_index, process_group)
    return _reduce_classes(losses, actual, weight, include_background, exclude_empty, reduction)


def multiclass_focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, per_sample=False,
                                  weight=None, reduction="mean", include_background=True, ignore_index=None,
                                  exclude_empty=False, process_group=None):
    """Per class: (Tversky loss) ** gamma."""
    losses, actual = _multiclass_tversky(input, target, alpha, beta, smooth, per_sample, ignore_index, process_group)
    return _reduce_classes(losses**gamma, actual, weight, include_background, exclude_empty, reduction)


def multiclass_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="mean", ignore_index=None):
    """Softmax focal loss per pixel: -alpha * (1 - p_y)**gamma * log p_y (alpha=None: 1),
    mean over the pixels that are not ignored; 'none': the (N, *spatial) map, 0 where ignored."""
    logits, valid, labels = _counted_pixels(input, target, ignore_index)
    log_p = torch.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    if alpha is not None:
        loss = alpha * loss
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp(min=1)
    if reduction == "sum":
        return loss.sum()
    return loss.to(input.dtype)


def dice_ce_loss(input, target, smooth=1.0, per_sample=False, weight=None, reduction="mean", include_background=True,
                 ignore_index=None, exclude_empty=False, dice_weight=1.0, ce_weight=1.0, process_group=None):
    """ce_weight * cross-entropy (F.cross_entropy, ignore_index honoured; 'mean' over
    the pixels not ignored) + dice_weight * multi-class Dice loss."""
    logits, valid, labels = _counted_pixels(input, target, ignore_index)
    ce = F.cross_entropy(logits, labels, reduction="none")
    ce = torch.where(valid, ce, torch.zeros_like(ce)).sum()
    if reduction == "mean":
        ce = ce / valid.sum().clamp(min=1)
    dice = multiclass_dice_loss(input, target, smooth, per_sample, weight, reduction, include_background, ignore_index,
                                exclude_empty, process_group)
    return ce_weight * ce + dice_weight * dice
