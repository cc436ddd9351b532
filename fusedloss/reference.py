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

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._spec import check_focal_form


def _accumulation_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _binary_operands(input, target, from_logits=True, ignore_index=None):
    """(x, p, t, valid) in the accumulation dtype: the input, p (its sigmoid, or the input itself
    when it holds probabilities), the target with the input's rank, and where the target is not
    ``ignore_index`` (None: everywhere). Where ignored, x, p and t are 0 (whatever the input
    holds there: nothing reaches a sum or a gradient)."""
    dtype = _accumulation_dtype(input)
    if target.dim() == input.dim() - 1:
        target = target.unsqueeze(1)
    x = input.to(dtype)
    valid = None if ignore_index is None else target != ignore_index
    if valid is not None:
        x = torch.where(valid, x, 0.0)
    p = torch.sigmoid(x) if from_logits else x
    t = target.to(dtype)
    if valid is not None:
        p, t = torch.where(valid, p, 0.0), torch.where(valid, t, 0.0)
    return x, p, t, valid


def _probabilities_and_target(input, target, from_logits=True, ignore_index=None):
    _, p, t, _ = _binary_operands(input, target, from_logits, ignore_index)
    return p, t


def _bce(input, target, from_logits=True, clamped_log=False, ignore_index=None):
    """Per-element BCE in the accumulation dtype: on logits (F.binary_cross_entropy_with_logits),
    or with ``clamped_log`` F.binary_cross_entropy of the probabilities (logs clamped at
    -100; with a sigmoid, of torch.sigmoid(input): the tutorial's BCE); 0 where ignored."""
    x, p, t, valid = _binary_operands(input, target, from_logits, ignore_index)
    bce = F.binary_cross_entropy(p, t, reduction="none") if clamped_log else F.binary_cross_entropy_with_logits(
        x, t, reduction="none")
    return bce if valid is None else torch.where(valid, bce, 0.0)


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


def _region_sums(input, target, per_sample, per_channel, process_group=None, squared_pred=False, from_logits=True,
                 ignore_index=None, min_intersection=False):
    """I = sum(p*t), P = sum(p), T = sum(t) per group (squared_pred: P = sum(p**2), T = sum(t**2);
    min_intersection: I = sum(min(p, t)), smp's and MONAI's soft_label intersection, whose
    gradient torch.minimum splits at ties: 1/2 each), over the elements not ignored."""
    if squared_pred and min_intersection:
        raise ValueError("fusedloss: min_intersection (I = sum(min(p, t))) does not combine with squared_pred")
    p, t = _probabilities_and_target(input, target, from_logits, ignore_index)
    dims = _group_dims(input, per_sample, per_channel)
    power = 2 if squared_pred else 1
    intersection = torch.minimum(p, t) if min_intersection else p * t
    sums = torch.stack([_sum(intersection, dims), _sum(p**power, dims), _sum(t**power, dims)])
    return tuple(_global(sums, process_group))


def _index_loss(numerator, denominator, log_loss=False):
    """1 - numerator / denominator, or with ``log_loss`` -log(max(score, 1e-7)) (smp's).
    A zero denominator (nothing predicted, nothing to find, smooth_dr = 0) scores as a
    perfect match."""
    undefined = denominator <= 0
    score = torch.where(undefined, 1.0, numerator / torch.where(undefined, 1.0, denominator))
    return -torch.log(score.clamp(min=1e-7)) if log_loss else 1 - score


def _reduce_groups(losses, weight, reduction):
    """Weight (per channel, the last dim of ``losses``) then reduce over groups."""
    if weight is not None:
        losses = losses * weight.to(losses.dtype)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


# Binary losses' common keyword arguments: smooth_nr / smooth_dr are added to the index's
# numerator / denominator; squared_pred, min_intersection, log_loss and from_logits as in LossSpec.


def dice_loss(input, target, smooth_nr=1.0, smooth_dr=1.0, per_sample=False, per_channel=False, weight=None,
              reduction="mean", process_group=None, squared_pred=False, log_loss=False, from_logits=True,
              ignore_index=None, min_intersection=False):
    """1 - (2*I + smooth_nr) / (P + T + smooth_dr)."""
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel, process_group,
                                                   squared_pred, from_logits, ignore_index, min_intersection)
    losses = _index_loss(2 * intersection + smooth_nr, predicted + actual + smooth_dr, log_loss)
    return _reduce_groups(losses, weight, reduction)


def iou_loss(input, target, smooth_nr=1.0, smooth_dr=1.0, per_sample=False, per_channel=False, weight=None,
             reduction="mean", process_group=None, squared_pred=False, log_loss=False, from_logits=True,
             ignore_index=None, min_intersection=False):
    """1 - (I + smooth_nr) / (P + T - I + smooth_dr)."""
    intersection, predicted, actual = _region_sums(input, target, per_sample, per_channel, process_group,
                                                   squared_pred, from_logits, ignore_index, min_intersection)
    losses = _index_loss(intersection + smooth_nr, predicted + actual - intersection + smooth_dr, log_loss)
    return _reduce_groups(losses, weight, reduction)


jaccard_loss = iou_loss


def _tversky(sums, alpha, beta, smooth_nr, smooth_dr, log_loss=False):
    """1 - (I + smooth_nr) / (I + alpha*FP + beta*FN + smooth_dr), FP = P - I, FN = T - I."""
    intersection, predicted, actual = sums
    false_pos = predicted - intersection
    false_neg = actual - intersection
    return _index_loss(intersection + smooth_nr, intersection + alpha * false_pos + beta * false_neg + smooth_dr,
                       log_loss)


def tversky_loss(input, target, alpha=0.5, beta=0.5, smooth_nr=1.0, smooth_dr=1.0, per_sample=False,
                 per_channel=False, weight=None, reduction="mean", process_group=None, squared_pred=False,
                 log_loss=False, from_logits=True, ignore_index=None, min_intersection=False):
    sums = _region_sums(input, target, per_sample, per_channel, process_group, squared_pred, from_logits,
                        ignore_index, min_intersection)
    return _reduce_groups(_tversky(sums, alpha, beta, smooth_nr, smooth_dr, log_loss), weight, reduction)


def focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth_nr=1.0, smooth_dr=1.0, per_sample=False,
                       per_channel=False, weight=None, reduction="mean", process_group=None, squared_pred=False,
                       from_logits=True, ignore_index=None, min_intersection=False):
    """(Tversky loss) ** gamma (a negative Tversky loss, smooth_nr > smooth_dr, is 0 first
    unless gamma = 1)."""
    sums = _region_sums(input, target, per_sample, per_channel, process_group, squared_pred, from_logits,
                        ignore_index, min_intersection)
    losses = _tversky(sums, alpha, beta, smooth_nr, smooth_dr)
    if gamma != 1:
        losses = losses.clamp(min=0) ** gamma
    return _reduce_groups(losses, weight, reduction)


def _focal_map(input, target, alpha, gamma, from_logits=True, clamped_log=False, ignore_index=None, focal_form=0):
    """alpha_t * f * BCE per element, in the accumulation dtype; 0 where ignored. f, the focal
    factor (``LossSpec.focal_form``; the same for hard targets): 0, (1 - p_t)**gamma (Lin et al.,
    torchvision); 1, smp's (1 - exp(-BCE))**gamma; 2, MONAI's sigmoid(-x (2t - 1))**gamma
    (logits only). Each form as its library writes it, autograd differentiating it; gamma = 0
    is BCE in every form."""
    check_focal_form(focal_form, from_logits, clamped_log)
    if focal_form and gamma != 0:
        return _peer_focal_map(input, target, alpha, gamma, ignore_index, focal_form)
    _, p, t, valid = _binary_operands(input, target, from_logits, ignore_index)
    ce = _bce(input, target, from_logits, clamped_log, ignore_index)
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss if valid is None else torch.where(valid, loss, 0.0)


def _peer_focal_map(input, target, alpha, gamma, ignore_index, focal_form):
    x, _, t, valid = _binary_operands(input, target, True, ignore_index)
    if focal_form == 1:  # segmentation_models_pytorch's focal_loss_with_logits
        logpt = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        pt = torch.exp(-logpt)
        loss = (1 - pt).pow(gamma) * logpt
    else:  # MONAI's sigmoid_focal_loss
        loss = (x - x * t - F.logsigmoid(x)) * torch.exp(F.logsigmoid(-x * (t * 2 - 1)) * gamma)
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss if valid is None else torch.where(valid, loss, 0.0)


def _valid_count(input, target, ignore_index, dims):
    """The elements not ignored per group (the group size without ignore_index)."""
    valid = torch.ones_like(input, dtype=torch.bool) if ignore_index is None else _binary_operands(
        input, target, ignore_index=ignore_index)[3].expand(input.shape)
    return _sum(valid.to(_accumulation_dtype(input)), dims)


def focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="mean", from_logits=True, clamped_log=False,
               ignore_index=None, focal_form=0):
    """Lin et al. 2017, as torchvision.ops.sigmoid_focal_loss:
    alpha_t * (1 - p_t)**gamma * BCE(input, t), p_t = p*t + (1-p)*(1-t),
    alpha_t = alpha*t + (1-alpha)*(1-t); alpha=None: no alpha weighting. 'mean':
    over the elements not ignored (0 if none). focal_form: smp's (1) or MONAI's (2) factor
    instead of (1 - p_t)**gamma (``_focal_map``)."""
    loss = _focal_map(input, target, alpha, gamma, from_logits, clamped_log, ignore_index, focal_form)
    if reduction == "mean":
        all_dims = tuple(range(input.dim()))
        return loss.sum() / _valid_count(input, target, ignore_index, all_dims).clamp(min=1)
    if reduction == "sum":
        return loss.sum()
    return loss.to(input.dtype)


def _dice_and_element(element, input, target, smooth_nr, smooth_dr, per_sample, per_channel, weight, reduction,
                      dice_weight, element_weight, process_group, squared_pred, from_logits, ignore_index,
                      min_intersection=False):
    """element_weight * the element losses' mean per group (over the elements not ignored) +
    dice_weight * Dice loss, per group."""
    dims = _group_dims(input, per_sample, per_channel)
    dice = dice_loss(input, target, smooth_nr, smooth_dr, per_sample, per_channel, reduction="none",
                     process_group=process_group, squared_pred=squared_pred, from_logits=from_logits,
                     ignore_index=ignore_index, min_intersection=min_intersection)
    mean = _sum(element, dims) / _valid_count(input, target, ignore_index, dims).clamp(min=1)
    return _reduce_groups(element_weight * mean + dice_weight * dice, weight, reduction)


def dice_bce_loss(input, target, smooth_nr=1.0, smooth_dr=1.0, per_sample=False, per_channel=False, weight=None,
                  reduction="mean", dice_weight=1.0, bce_weight=1.0, process_group=None, squared_pred=False,
                  from_logits=True, clamped_log=False, ignore_index=None, min_intersection=False):
    """bce_weight * mean BCE + dice_weight * Dice loss, per group."""
    bce = _bce(input, target, from_logits, clamped_log, ignore_index)
    return _dice_and_element(bce, input, target, smooth_nr, smooth_dr, per_sample, per_channel, weight, reduction,
                             dice_weight, bce_weight, process_group, squared_pred, from_logits, ignore_index,
                             min_intersection)


def dice_focal_loss(input, target, alpha=0.25, gamma=2.0, smooth_nr=1.0, smooth_dr=1.0, per_sample=False,
                    per_channel=False, weight=None, reduction="mean", dice_weight=1.0, focal_weight=1.0,
                    process_group=None, squared_pred=False, from_logits=True, clamped_log=False, ignore_index=None,
                    min_intersection=False, focal_form=0):
    """focal_weight * mean focal loss + dice_weight * Dice loss, per group."""
    focal = _focal_map(input, target, alpha, gamma, from_logits, clamped_log, ignore_index, focal_form)
    return _dice_and_element(focal, input, target, smooth_nr, smooth_dr, per_sample, per_channel, weight, reduction,
                             dice_weight, focal_weight, process_group, squared_pred, from_logits, ignore_index,
                             min_intersection)


# ---- multi-class: softmax over dim 1; class-map or dense targets ----------------
#
# input (N, C, *spatial) logits (or probabilities, from_logits=False); target (N, *spatial)
# class indices, or (N, C, *spatial) per-class targets (one-hot or soft: "dense").
# Pixels whose class index is ignore_index count nowhere, whatever their logits (NaN
# included: a pixel outside the image may hold anything; its gradient is 0). Statistics
# per class c (per (n, c) with per_sample): I_c = sum p_c*t_c, P_c = sum p_c, T_c = sum t_c,
# t_c = [y = c] for a class map.


def is_dense(input, target) -> bool:
    return target.dim() == input.dim()


class ClassOperands(NamedTuple):
    values: torch.Tensor  # the input in the accumulation dtype, 0 at ignored pixels
    log_p: torch.Tensor  # log_softmax, or log p clamped at -100 (F.nll_loss(log(p).clamp(min=-100)))
    p: torch.Tensor  # softmax or the input's probabilities, 0 at ignored pixels
    t: torch.Tensor  # the one-hot or dense target, 0 at ignored pixels
    valid: torch.Tensor  # (N, *spatial): pixels not ignored
    labels: torch.Tensor | None  # class-map targets: the class per pixel (0 where ignored)


def _clamped_log(p):
    """log(p) clamped at -100, as F.nll_loss(log(p).clamp(min=-100)) sees it, with the
    clamp's gradient (0) where p = 0: log's own there would be 0 * inf = NaN."""
    zero = p == 0  # NaN is not: it propagates
    return torch.where(zero, -100.0, torch.log(torch.where(zero, 1.0, p))).clamp(min=-100)


def _class_operands(input, target, ignore_index=None, from_logits=True) -> ClassOperands:
    dtype = _accumulation_dtype(input)
    if is_dense(input, target):
        valid = torch.ones(target.shape[:1] + target.shape[2:], dtype=torch.bool, device=target.device)
        labels, t = None, target.to(dtype)
        values = input.to(dtype)
    else:
        valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
        values = torch.where(valid.unsqueeze(1), input.to(dtype), 0.0)
        labels = torch.where(valid, target, torch.zeros_like(target)).long()
        t = F.one_hot(labels, input.shape[1]).movedim(-1, 1).to(dtype) * valid.unsqueeze(1)
    log_p = torch.log_softmax(values, dim=1) if from_logits else _clamped_log(values)
    p = (torch.softmax(values, dim=1) if from_logits else values) * valid.unsqueeze(1)
    return ClassOperands(values, log_p, p, t, valid, labels)


def _class_sums(input, target, per_sample, ignore_index, process_group=None, squared_pred=False, from_logits=True):
    _, _, p, t, _, _ = _class_operands(input, target, ignore_index, from_logits)
    dims = (2,) if per_sample else (0, 2)
    p, t = p.reshape(p.shape[0], p.shape[1], -1), t.reshape(p.shape[0], p.shape[1], -1)
    power = 2 if squared_pred else 1
    sums = torch.stack([(p * t).sum(dims), (p**power).sum(dims), (t**power).sum(dims)])
    return tuple(_global(sums, process_group))


def _per_class(values, like):
    """A (C,) tensor (or a number) shaped to multiply ``like`` (N, C, *spatial) along dim 1."""
    if not isinstance(values, torch.Tensor):
        return values
    return values.to(like.dtype).reshape((1, -1) + (1,) * (like.dim() - 2))


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


# Multi-class losses' keyword arguments beyond the binary ones: include_background,
# ignore_index, exclude_empty (see _reduce_classes); from_logits=False: the input holds
# probabilities per class along dim 1.


def multiclass_dice_loss(input, target, smooth_nr=1.0, smooth_dr=1.0, per_sample=False, weight=None, reduction="mean",
                         include_background=True, ignore_index=None, exclude_empty=False, process_group=None,
                         squared_pred=False, log_loss=False, from_logits=True):
    """Per class: 1 - (2*I_c + smooth_nr) / (P_c + T_c + smooth_dr)."""
    intersection, predicted, actual = _class_sums(input, target, per_sample, ignore_index, process_group,
                                                  squared_pred, from_logits)
    losses = _index_loss(2 * intersection + smooth_nr, predicted + actual + smooth_dr, log_loss)
    return _reduce_classes(losses, actual, weight, include_background, exclude_empty, reduction)


def multiclass_iou_loss(input, target, smooth_nr=1.0, smooth_dr=1.0, per_sample=False, weight=None, reduction="mean",
                        include_background=True, ignore_index=None, exclude_empty=False, process_group=None,
                        squared_pred=False, log_loss=False, from_logits=True):
    """Per class: 1 - (I_c + smooth_nr) / (P_c + T_c - I_c + smooth_dr)."""
    intersection, predicted, actual = _class_sums(input, target, per_sample, ignore_index, process_group,
                                                  squared_pred, from_logits)
    losses = _index_loss(intersection + smooth_nr, predicted + actual - intersection + smooth_dr, log_loss)
    return _reduce_classes(losses, actual, weight, include_background, exclude_empty, reduction)


def multiclass_tversky_loss(input, target, alpha=0.5, beta=0.5, smooth_nr=1.0, smooth_dr=1.0, per_sample=False,
                            weight=None, reduction="mean", include_background=True, ignore_index=None,
                            exclude_empty=False, process_group=None, squared_pred=False, log_loss=False,
                            from_logits=True):
    """Per class: 1 - (I + smooth_nr) / (I + alpha*FP + beta*FN + smooth_dr)."""
    sums = _class_sums(input, target, per_sample, ignore_index, process_group, squared_pred, from_logits)
    losses = _tversky(sums, alpha, beta, smooth_nr, smooth_dr, log_loss)
    return _reduce_classes(losses, sums[2], weight, include_background, exclude_empty, reduction)


def multiclass_focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth_nr=1.0, smooth_dr=1.0,
                                  per_sample=False, weight=None, reduction="mean", include_background=True,
                                  ignore_index=None, exclude_empty=False, process_group=None, squared_pred=False,
                                  from_logits=True):
    """Per class: (Tversky loss) ** gamma."""
    sums = _class_sums(input, target, per_sample, ignore_index, process_group, squared_pred, from_logits)
    losses = _tversky(sums, alpha, beta, smooth_nr, smooth_dr)
    if gamma != 1:
        losses = losses.clamp(min=0) ** gamma
    return _reduce_classes(losses, sums[2], weight, include_background, exclude_empty, reduction)


def _pixel_losses(input, target, alpha, gamma, ignore_index, from_logits, label_smoothing=0.0):
    """Per pixel (0 where ignored), sum_c a_c t'_c (1 - p_c)**gamma (-log p_c): the focal loss of
    each class weighed by its target t_c (for a class map, the labelled class alone), a_c = alpha
    (None: 1; a number; or (C,) per class), t' = t (1 - label_smoothing) + label_smoothing / C
    (F.cross_entropy's label smoothing, gamma = 0). Also the class operands."""
    ops = _class_operands(input, target, ignore_index, from_logits)
    factor = 1.0 if alpha is None else _per_class(alpha, ops.log_p)
    if ops.labels is not None and not label_smoothing:
        # The labelled class only: other classes' logs (-inf for a -inf logit) never meet a 0 target.
        index = ops.labels.unsqueeze(1)
        log_p_y = ops.log_p.gather(1, index).squeeze(1)
        p_y = log_p_y.exp() if from_logits else ops.values.gather(1, index).squeeze(1)
        if isinstance(factor, torch.Tensor):
            factor = factor.expand_as(ops.log_p).gather(1, index).squeeze(1)
        loss = -factor * (1 - p_y) ** gamma * log_p_y
    else:
        t = ops.t * (1 - label_smoothing) + ops.valid.unsqueeze(1).to(ops.t.dtype) * (label_smoothing / input.shape[1])
        loss = -(factor * t * (1 - ops.p) ** gamma * ops.log_p).sum(1)
    return torch.where(ops.valid, loss, torch.zeros_like(loss)), ops


def _pixel_mean_denominator(ops, class_weight=None):
    """The pixels not ignored, or with class weights on a class map, the sum of their
    labelled classes' weights (F.cross_entropy's weighted mean); at least 1."""
    if class_weight is None or ops.labels is None:
        return ops.valid.sum().clamp(min=1)
    weights = class_weight.to(ops.values.dtype)[ops.labels]
    return torch.where(ops.valid, weights, 0.0).sum().clamp(min=torch.finfo(weights.dtype).tiny)


def multiclass_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="mean", ignore_index=None,
                          from_logits=True):
    """Softmax focal loss per pixel: -alpha * (1 - p_y)**gamma * log p_y (alpha=None: 1; (C,):
    alpha_y), mean over the pixels that are not ignored; 'none': the (N, *spatial) map, 0 where
    ignored. A dense target: sum_c alpha_c t_c (1 - p_c)**gamma (-log p_c) per pixel."""
    loss, ops = _pixel_losses(input, target, alpha, gamma, ignore_index, from_logits)
    if reduction == "mean":
        return loss.sum() / _pixel_mean_denominator(ops)
    if reduction == "sum":
        return loss.sum()
    return loss.to(input.dtype)


def _multiclass_dice_and_pixel(pixel_loss, denominator, input, target, smooth_nr, smooth_dr, per_sample, weight,
                               reduction, include_background, ignore_index, exclude_empty, dice_weight, pixel_weight,
                               process_group, squared_pred, from_logits):
    """pixel_weight * the pixel losses' sum ('mean': over ``denominator``) + dice_weight * Dice."""
    pixel = pixel_loss.sum()
    if reduction == "mean":
        pixel = pixel / denominator
    dice = multiclass_dice_loss(input, target, smooth_nr, smooth_dr, per_sample, weight, reduction,
                                include_background, ignore_index, exclude_empty, process_group, squared_pred,
                                from_logits=from_logits)
    return pixel_weight * pixel + dice_weight * dice


def dice_ce_loss(input, target, smooth_nr=1.0, smooth_dr=1.0, per_sample=False, weight=None, reduction="mean",
                 include_background=True, ignore_index=None, exclude_empty=False, dice_weight=1.0, ce_weight=1.0,
                 process_group=None, squared_pred=False, from_logits=True, ce_class_weight=None,
                 label_smoothing=0.0):
    """ce_weight * cross-entropy (F.cross_entropy(input, target, weight=ce_class_weight,
    ignore_index=..., label_smoothing=...): 'mean' over the pixels not ignored, or the sum of
    their classes' weights; of probabilities, F.nll_loss(log(p).clamp(min=-100)) likewise) +
    dice_weight * multi-class Dice loss (``weight`` weighs its classes)."""
    ce, ops = _pixel_losses(input, target, ce_class_weight, 0.0, ignore_index, from_logits, label_smoothing)
    return _multiclass_dice_and_pixel(ce, _pixel_mean_denominator(ops, ce_class_weight), input, target, smooth_nr,
                                      smooth_dr, per_sample, weight, reduction, include_background, ignore_index,
                                      exclude_empty, dice_weight, ce_weight, process_group, squared_pred, from_logits)


def multiclass_dice_focal_loss(input, target, alpha=0.25, gamma=2.0, smooth_nr=1.0, smooth_dr=1.0, per_sample=False,
                               weight=None, reduction="mean", include_background=True, ignore_index=None,
                               exclude_empty=False, dice_weight=1.0, focal_weight=1.0, process_group=None,
                               squared_pred=False, from_logits=True):
    """focal_weight * the softmax focal loss (as multiclass_focal_loss) + dice_weight * Dice."""
    focal, ops = _pixel_losses(input, target, alpha, gamma, ignore_index, from_logits)
    return _multiclass_dice_and_pixel(focal, _pixel_mean_denominator(ops), input, target, smooth_nr, smooth_dr,
                                      per_sample, weight, reduction, include_background, ignore_index, exclude_empty,
                                      dice_weight, focal_weight, process_group, squared_pred, from_logits)


# ---- Generalized Dice (Sudre et al. 2017): classes combined with weights from the target ----


def generalized_dice_loss(input, target, smooth_nr=1e-5, smooth_dr=1e-5, weight_type="square", per_sample=False,
                          include_background=True, ignore_index=None, reduction="mean", multiclass=False,
                          from_logits=True, process_group=None):
    """Per group (a sample with per_sample, else the batch), over its classes c (the channels,
    or the classes of a class map): 1 - (2 sum_c w_c I_c + smooth_nr) / (sum_c w_c (P_c + T_c) + smooth_dr),
    w_c = 1/T_c**2 ('square'), 1/T_c ('simple') or 1 ('uniform'), with no gradient; an infinite
    weight (T_c = 0) becomes the largest finite weight of its group (MONAI's rule)."""
    if multiclass:
        intersection, predicted, actual = _class_sums(input, target, per_sample, ignore_index, process_group,
                                                      from_logits=from_logits)
    else:
        intersection, predicted, actual = _region_sums(input, target, per_sample, True, process_group,
                                                       from_logits=from_logits, ignore_index=ignore_index)
    if not include_background:
        intersection, predicted, actual = intersection[..., 1:], predicted[..., 1:], actual[..., 1:]
    with torch.no_grad():
        if weight_type == "uniform":
            weights = torch.ones_like(actual)
        else:
            weights = 1.0 / (actual**2 if weight_type == "square" else actual)
            infinite = torch.isinf(weights)
            weights[infinite] = 0.0
            weights = weights + infinite * weights.max(-1, keepdim=True).values
    numerator = 2 * (weights * intersection).sum(-1) + smooth_nr
    denominator = (weights * (predicted + actual)).sum(-1) + smooth_dr
    losses = _index_loss(numerator, denominator)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


# ---- Lovász losses (Berman et al., CVPR 2018) ----


def _lovasz_extension(errors, truth):
    """The Lovász extension of the Jaccard loss at ``errors`` (1-D) for the targets ``truth``:
    the errors sorted in decreasing order (stable: ties keep their order) dotted with
    J_i - J_{i-1}, J_i = 1 - |truth \\ top i| / |truth ∪ top i| of the i+1 largest errors (the
    paper's Algorithm 1), J computed in fp64. ``errors`` enter through relu (the hinge; the
    softmax errors are >= 0 anyway)."""
    if errors.numel() == 0:
        return errors.sum()  # nothing counted: 0, and a zero gradient
    sorted_errors, order = torch.sort(errors, descending=True, stable=True)
    t = truth.to(torch.float64)[order]
    total = t.sum()
    jaccard = 1 - (total - t.cumsum(0)) / (total + (1 - t).cumsum(0))
    step = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]]).to(errors.dtype)
    return torch.dot(torch.relu(sorted_errors), step)


def _reduce_lovasz(losses, reduction):
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


def lovasz_hinge_loss(input, target, per_sample=False, ignore_index=None, reduction="mean"):
    """Per group (each sample, or the whole tensor): the Lovász extension of the Jaccard loss
    at the hinge errors 1 - x (2t - 1), over the elements not ignored."""
    x, _, t, valid = _binary_operands(input, target, True, ignore_index)
    groups = input.shape[0] if per_sample else 1
    errors = (1 - x * (2 * t - 1)).reshape(groups, -1)
    t = t.reshape(groups, -1)
    kept = torch.ones_like(t, dtype=torch.bool) if valid is None else valid.reshape(groups, -1)
    losses = torch.stack([_lovasz_extension(errors[g][kept[g]], t[g][kept[g]]) for g in range(groups)])
    return _reduce_lovasz(losses if per_sample else losses[0], reduction)


def lovasz_softmax_loss(input, target, classes="present", per_sample=False, weight=None, ignore_index=None,
                        reduction="mean", from_logits=True):
    """Per group (each sample, or the batch): the mean over the classes counted ('present': those
    in the group's target; 'all'; or a list) of weight_c times the Lovász extension of class c's
    Jaccard loss at the errors |[y = c] - p_c| over the pixels not ignored; 0 if no class counts."""
    ops = _class_operands(input, target, ignore_index, from_logits)
    n, c = input.shape[:2]
    p = ops.p.reshape(n, c, -1)
    t = ops.t.reshape(n, c, -1)
    valid = ops.valid.reshape(n, 1, -1).expand(n, c, -1)
    if not per_sample:  # one group: the batch's pixels side by side
        p, t, valid = (v.transpose(0, 1).reshape(1, c, -1) for v in (p, t, valid))
    losses = []
    for g in range(p.shape[0]):
        terms, counted = [], []
        for k in range(c):
            kept = valid[g, k]
            truth = t[g, k][kept]
            counts = classes == "all" or (classes == "present" and bool(truth.sum() > 0)) or (
                not isinstance(classes, str) and k in classes)
            if counts:
                term = _lovasz_extension((truth - p[g, k][kept]).abs(), truth)
                terms.append(term if weight is None else term * weight[k].to(term.dtype))
                counted.append(k)
        losses.append(torch.stack(terms).sum() / len(terms) if terms else p.new_zeros(()) * p.sum())
    losses = torch.stack(losses)
    return _reduce_lovasz(losses if per_sample else losses[0], reduction)
