"""The losses as functions: check the arguments, choose the backend, run.

mode='binary' (or 'multilabel', the same): ``input`` is logits, ``target`` has
input's shape (or (N, *spatial) for an (N, 1, *spatial) input) and holds
probabilities in [0, 1] (float, bool or uint8); p = sigmoid(input). Region
losses sum I = sum(p*t), P = sum(p), T = sum(t) over groups: the whole tensor
by default, one group per sample (``per_sample``), per channel (``per_channel``)
or per (sample, channel) (both). ``weight`` multiplies the per-channel losses.

mode='multiclass': ``input`` is (N, C, *spatial) logits, ``target`` (N, *spatial)
class indices (uint8, int16, int32, int64); p = softmax(input, dim=1). The
statistics are per class (per (sample, class) with ``per_sample``); ``weight``
is per class, ``include_background=False`` leaves class 0 out, ``ignore_index``
marks pixels that count nowhere, ``exclude_empty`` leaves classes absent from
the target out of the mean. No one-hot target or softmax tensor is built by the
fused backends.

``reduction`` reduces over the groups ('mean' divides by the number of groups
that count).

``sync=True`` (region losses, and the region term of Dice+BCE / Dice+CE) sums
the statistics over the processes of ``process_group`` (default: the whole
torch.distributed world) before the formula: each rank's loss is the loss of
the whole distributed batch, and its gradient that loss's gradient w.r.t. the
rank's own input (DDP then averages the parameter gradients over ranks, so
multiply the loss by the world size for the single-process gradient scale).
Element terms (BCE, CE) stay per rank. Every backend synchronises.
"""

from __future__ import annotations

import torch

from . import _checks, _spec, reference
from .ops import fused_ops, resolve
from .ops.synced import SyncedSigmoidLoss, SyncedSoftmaxLoss


def _run_sigmoid(reference_loss, options: dict, spec: _spec.SigmoidLossSpec, input, target, *, per_sample,
                 per_channel, weight, reduction, backend, sync=False, process_group=None):
    target = _checks.input_and_target(input, target)
    _checks.groups(input, per_sample, per_channel, weight)
    _checks.reduction(reduction)
    group = _checks.sync_group(sync, process_group, per_sample)
    differentiable = target.requires_grad or (weight is not None and weight.requires_grad)
    chosen = resolve(backend, input.device, differentiable_target=differentiable, sync=group is not None)
    if chosen == "reference":
        _checks.target_values(target)
        return reference_loss(input, target, per_sample=per_sample, per_channel=per_channel, weight=weight,
                              reduction=reduction, process_group=group, **options)
    if group is not None:
        return SyncedSigmoidLoss.apply(input, target, weight, fused_ops(chosen), group, per_sample, per_channel, spec,
                                       reduction, _checks.CHECK_TARGETS)
    loss, _coef = fused_ops(chosen).sigmoid_loss(input, target, weight, per_sample, per_channel, *spec, reduction,
                                                 _checks.CHECK_TARGETS)
    return loss


def _run_softmax(reference_loss, options: dict, spec: _spec.SigmoidLossSpec, input, target, *, per_sample,
                 per_channel, weight, reduction, include_background, ignore_index, exclude_empty, backend, sync=False,
                 process_group=None):
    if per_channel:
        raise ValueError("per_channel does not apply to mode='multiclass': its statistics are always per class")
    target = _checks.input_and_class_map(input, target, ignore_index)
    _checks.class_weight(input, weight)
    _checks.reduction(reduction)
    group = _checks.sync_group(sync, process_group, per_sample)
    chosen = resolve(backend, input.device, differentiable_target=weight is not None and weight.requires_grad,
                     family="softmax", classes=input.shape[1], sync=group is not None)
    if chosen == "reference":
        _checks.target_values(target, input.shape[1], ignore_index)
        return reference_loss(input, target, per_sample=per_sample, weight=weight, reduction=reduction,
                              include_background=include_background, ignore_index=ignore_index,
                              exclude_empty=exclude_empty, process_group=group, **options)
    if group is not None:
        loss = SyncedSoftmaxLoss.apply(input, target, weight, fused_ops(chosen), group, per_sample, spec, ignore_index,
                                       include_background, exclude_empty, reduction, _checks.CHECK_TARGETS)
    else:
        loss, _coef = fused_ops(chosen).softmax_loss(input, target, weight, per_sample, *spec, ignore_index,
                                                     include_background, exclude_empty, reduction,
                                                     _checks.CHECK_TARGETS)
    if reduction == "none" and not include_background:
        loss = loss[..., 1:]
    return loss


def _run_region(name: str, options: dict, spec, input, target, *, mode, per_sample, per_channel, weight, reduction,
                include_background, ignore_index, exclude_empty, backend, sync, process_group):
    if _checks.mode(mode):
        return _run_softmax(getattr(reference, f"multiclass_{name}"), options, spec, input, target,
                            per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                            include_background=include_background, ignore_index=ignore_index,
                            exclude_empty=exclude_empty, backend=backend, sync=sync, process_group=process_group)
    _checks.binary_only_defaults(include_background, ignore_index, exclude_empty)
    return _run_sigmoid(getattr(reference, name), options, spec, input, target, per_sample=per_sample,
                        per_channel=per_channel, weight=weight, reduction=reduction, backend=backend, sync=sync,
                        process_group=process_group)


def dice_loss(input, target, smooth=1.0, *, mode="binary", per_sample=False, per_channel=False, weight=None,
              reduction="mean", include_background=True, ignore_index=None, exclude_empty=False,
              sync=False, process_group=None, backend="auto") -> torch.Tensor:
    """Dice loss 1 - (2*I + smooth) / (P + T + smooth) per group."""
    _checks.non_negative(smooth=smooth)
    return _run_region("dice_loss", dict(smooth=smooth), _spec.dice_spec(smooth), input, target, mode=mode,
                       per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                       include_background=include_background, ignore_index=ignore_index,
                       exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


def iou_loss(input, target, smooth=1.0, *, mode="binary", per_sample=False, per_channel=False, weight=None,
             reduction="mean", include_background=True, ignore_index=None, exclude_empty=False,
             sync=False, process_group=None, backend="auto") -> torch.Tensor:
    """IoU (Jaccard) loss 1 - (I + smooth) / (P + T - I + smooth) per group."""
    _checks.non_negative(smooth=smooth)
    return _run_region("iou_loss", dict(smooth=smooth), _spec.iou_spec(smooth), input, target, mode=mode,
                       per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                       include_background=include_background, ignore_index=ignore_index,
                       exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


jaccard_loss = iou_loss


def tversky_loss(input, target, alpha=0.5, beta=0.5, smooth=1.0, *, mode="binary", per_sample=False,
                 per_channel=False, weight=None, reduction="mean", include_background=True, ignore_index=None,
                 exclude_empty=False, sync=False, process_group=None, backend="auto") -> torch.Tensor:
    """Tversky loss 1 - (I + smooth) / (I + alpha*FP + beta*FN + smooth), FP = P - I, FN = T - I."""
    _checks.non_negative(alpha=alpha, beta=beta, smooth=smooth)
    return _run_region("tversky_loss", dict(alpha=alpha, beta=beta, smooth=smooth),
                       _spec.tversky_spec(alpha, beta, smooth), input, target, mode=mode, per_sample=per_sample,
                       per_channel=per_channel, weight=weight, reduction=reduction,
                       include_background=include_background, ignore_index=ignore_index,
                       exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


def focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, *, mode="binary",
                       per_sample=False, per_channel=False, weight=None, reduction="mean", include_background=True,
                       ignore_index=None, exclude_empty=False, sync=False, process_group=None,
                       backend="auto") -> torch.Tensor:
    """Focal Tversky loss (Tversky loss) ** gamma."""
    _checks.non_negative(alpha=alpha, beta=beta, gamma=gamma, smooth=smooth)
    return _run_region("focal_tversky_loss", dict(alpha=alpha, beta=beta, gamma=gamma, smooth=smooth),
                       _spec.tversky_spec(alpha, beta, smooth, gamma), input, target, mode=mode,
                       per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                       include_background=include_background, ignore_index=ignore_index,
                       exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


def dice_bce_loss(input, target, smooth=1.0, *, per_sample=False, per_channel=False, weight=None,
                  reduction="mean", dice_weight=1.0, bce_weight=1.0, sync=False, process_group=None,
                  backend="auto") -> torch.Tensor:
    """bce_weight * BCE-with-logits (mean over the group) + dice_weight * Dice loss, per group.
    With the defaults: mean BCE over the tensor + Dice loss of the tensor."""
    _checks.non_negative(smooth=smooth, dice_weight=dice_weight, bce_weight=bce_weight)
    return _run_sigmoid(reference.dice_bce_loss, dict(smooth=smooth, dice_weight=dice_weight, bce_weight=bce_weight),
                        _spec.dice_bce_spec(smooth, dice_weight, bce_weight), input, target, per_sample=per_sample,
                        per_channel=per_channel, weight=weight, reduction=reduction, backend=backend, sync=sync,
                        process_group=process_group)


def dice_ce_loss(input, target, smooth=1.0, *, per_sample=False, weight=None, reduction="mean",
                 include_background=True, ignore_index=None, exclude_empty=False, dice_weight=1.0, ce_weight=1.0,
                 sync=False, process_group=None, backend="auto") -> torch.Tensor:
    """Multi-class: ce_weight * cross-entropy (as F.cross_entropy, 'mean' over the
    pixels not ignored) + dice_weight * multi-class Dice loss, in one pass.
    reduction 'mean' or 'sum' (both terms)."""
    _checks.non_negative(smooth=smooth, dice_weight=dice_weight, ce_weight=ce_weight)
    if reduction == "none":
        raise ValueError("reduction='none' is not defined for dice_ce_loss (a per-class Dice and a per-pixel CE); "
                         "use 'mean' or 'sum'")
    spec = _spec.dice_ce_spec(smooth, dice_weight, ce_weight, reduction)
    return _run_softmax(reference.dice_ce_loss, dict(smooth=smooth, dice_weight=dice_weight, ce_weight=ce_weight),
                        spec, input, target, per_sample=per_sample, per_channel=False, weight=weight,
                        reduction=reduction, include_background=include_background, ignore_index=ignore_index,
                        exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


def focal_loss(input, target, alpha=0.25, gamma=2.0, *, mode="binary", reduction="mean", ignore_index=None,
               backend="auto") -> torch.Tensor:
    """Focal loss (Lin et al. 2017).

    binary: as torchvision.ops.sigmoid_focal_loss, alpha_t * (1 - p_t)**gamma *
    BCE-with-logits per element, p_t = p*t + (1-p)*(1-t), alpha_t = alpha*t +
    (1-alpha)*(1-t) (alpha=None: no alpha weighting); 'mean' over elements.
    multiclass: -alpha * (1 - p_y)**gamma * log p_y per pixel (alpha=None: 1),
    'mean' over the pixels not ignored; not divided by C (MONAI and kornia
    average over classes too, so theirs is ours / C).
    'none': the per-element (per-pixel) map in input's dtype."""
    if alpha is not None:
        _checks.non_negative(alpha=alpha)
        if alpha > 1:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
    _checks.non_negative(gamma=gamma)
    _checks.reduction(reduction)
    spec = _spec.focal_spec(alpha, gamma, reduction)
    if _checks.mode(mode):
        target = _checks.input_and_class_map(input, target, ignore_index)
        chosen = resolve(backend, input.device, family="softmax", classes=input.shape[1])
        if chosen == "reference":
            _checks.target_values(target, input.shape[1], ignore_index)
            return reference.multiclass_focal_loss(input, target, alpha=alpha, gamma=gamma, reduction=reduction,
                                                   ignore_index=ignore_index)
        ops = fused_ops(chosen)
        if reduction == "none":
            return ops.softmax_focal_map(input, target, spec.focal_alpha, spec.focal_gamma, ignore_index,
                                         _checks.CHECK_TARGETS)
        loss, _coef = ops.softmax_loss(input, target, None, False, *spec, ignore_index, True, False, "sum",
                                       _checks.CHECK_TARGETS)
        return loss
    _checks.binary_only_defaults(True, ignore_index, False)
    target = _checks.input_and_target(input, target)
    chosen = resolve(backend, input.device, differentiable_target=target.requires_grad)
    if chosen == "reference":
        _checks.target_values(target)
        return reference.focal_loss(input, target, alpha=alpha, gamma=gamma, reduction=reduction)
    ops = fused_ops(chosen)
    if reduction == "none":
        return ops.sigmoid_focal_map(input, target, spec.focal_alpha, spec.focal_gamma, _checks.CHECK_TARGETS)
    loss, _coef = ops.sigmoid_loss(input, target, None, False, False, *spec, "sum", _checks.CHECK_TARGETS)
    return loss


LOSSES = {
    "dice": dice_loss,
    "iou": iou_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "focal": focal_loss,
    "dice_bce": dice_bce_loss,
}

# The losses that take mode='multiclass', and the multi-class-only Dice+CE.
MULTICLASS_LOSSES = {
    "dice": dice_loss,
    "iou": iou_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "focal": focal_loss,
    "dice_ce": dice_ce_loss,
}
