"""The losses as functions: check the arguments, choose the backend, run.

``input`` is logits (any shape; (N, C, *spatial) for the per-sample and
per-channel options), ``target`` has input's shape (or (N, *spatial) for an
(N, 1, *spatial) input) and holds probabilities in [0, 1] (float, bool or
uint8). Region losses sum I = sum(p*t), P = sum(p), T = sum(t) with
p = sigmoid(input) over groups: the whole tensor by default, one group per
sample (``per_sample``), per channel (``per_channel``) or per (sample, channel)
(both). ``weight`` multiplies the per-channel losses; ``reduction`` reduces
over the groups ('mean' divides by the number of groups).
"""

from __future__ import annotations

import torch

from . import _checks, _spec, reference
from .ops import fused_ops, resolve


def _run_sigmoid_loss(reference_loss, options: dict, spec: _spec.SigmoidLossSpec, input, target, *,
                      per_sample=False, per_channel=False, weight=None, reduction="mean", backend="auto"):
    target = _checks.input_and_target(input, target)
    _checks.groups(input, per_sample, per_channel, weight)
    _checks.reduction(reduction)
    differentiable = target.requires_grad or (weight is not None and weight.requires_grad)
    chosen = resolve(backend, input.device, differentiable_target=differentiable)
    if chosen == "reference":
        return reference_loss(input, target, per_sample=per_sample, per_channel=per_channel, weight=weight,
                              reduction=reduction, **options)
    loss, _coef = fused_ops(chosen).sigmoid_loss(input, target, weight, per_sample, per_channel, *spec, reduction)
    return loss


def dice_loss(input, target, smooth=1.0, *, per_sample=False, per_channel=False, weight=None,
              reduction="mean", backend="auto") -> torch.Tensor:
    """Dice loss 1 - (2*I + smooth) / (P + T + smooth) per group."""
    _checks.non_negative(smooth=smooth)
    return _run_sigmoid_loss(reference.dice_loss, dict(smooth=smooth), _spec.dice_spec(smooth), input, target,
                             per_sample=per_sample, per_channel=per_channel, weight=weight,
                             reduction=reduction, backend=backend)


def iou_loss(input, target, smooth=1.0, *, per_sample=False, per_channel=False, weight=None,
             reduction="mean", backend="auto") -> torch.Tensor:
    """IoU (Jaccard) loss 1 - (I + smooth) / (P + T - I + smooth) per group."""
    _checks.non_negative(smooth=smooth)
    return _run_sigmoid_loss(reference.iou_loss, dict(smooth=smooth), _spec.iou_spec(smooth), input, target,
                             per_sample=per_sample, per_channel=per_channel, weight=weight,
                             reduction=reduction, backend=backend)


jaccard_loss = iou_loss


def tversky_loss(input, target, alpha=0.5, beta=0.5, smooth=1.0, *, per_sample=False, per_channel=False,
                 weight=None, reduction="mean", backend="auto") -> torch.Tensor:
    """Tversky loss 1 - (I + smooth) / (I + alpha*FP + beta*FN + smooth), FP = P - I, FN = T - I."""
    _checks.non_negative(alpha=alpha, beta=beta, smooth=smooth)
    return _run_sigmoid_loss(reference.tversky_loss, dict(alpha=alpha, beta=beta, smooth=smooth),
                             _spec.tversky_spec(alpha, beta, smooth), input, target,
                             per_sample=per_sample, per_channel=per_channel, weight=weight,
                             reduction=reduction, backend=backend)


def focal_tversky_loss(input, target, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, *, per_sample=False,
                       per_channel=False, weight=None, reduction="mean", backend="auto") -> torch.Tensor:
    """Focal Tversky loss (Tversky loss) ** gamma."""
    _checks.non_negative(alpha=alpha, beta=beta, gamma=gamma, smooth=smooth)
    return _run_sigmoid_loss(reference.focal_tversky_loss, dict(alpha=alpha, beta=beta, gamma=gamma, smooth=smooth),
                             _spec.tversky_spec(alpha, beta, smooth, gamma), input, target,
                             per_sample=per_sample, per_channel=per_channel, weight=weight,
                             reduction=reduction, backend=backend)


def dice_bce_loss(input, target, smooth=1.0, *, per_sample=False, per_channel=False, weight=None,
                  reduction="mean", dice_weight=1.0, bce_weight=1.0, backend="auto") -> torch.Tensor:
    """bce_weight * BCE-with-logits (mean over the group) + dice_weight * Dice loss, per group.
    With the defaults: mean BCE over the tensor + Dice loss of the tensor."""
    _checks.non_negative(smooth=smooth, dice_weight=dice_weight, bce_weight=bce_weight)
    return _run_sigmoid_loss(reference.dice_bce_loss, dict(smooth=smooth, dice_weight=dice_weight,
                                                           bce_weight=bce_weight),
                             _spec.dice_bce_spec(smooth, dice_weight, bce_weight), input, target,
                             per_sample=per_sample, per_channel=per_channel, weight=weight,
                             reduction=reduction, backend=backend)


def focal_loss(input, target, alpha=0.25, gamma=2.0, *, reduction="mean", backend="auto") -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), as torchvision.ops.sigmoid_focal_loss:
    alpha_t * (1 - p_t)**gamma * BCE-with-logits per element, p_t = p*t + (1-p)*(1-t),
    alpha_t = alpha*t + (1-alpha)*(1-t) (alpha=None: no alpha weighting).
    'mean' over elements, 'sum', or 'none': the per-element map in input's dtype."""
    if alpha is not None:
        _checks.non_negative(alpha=alpha)
        if alpha > 1:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
    _checks.non_negative(gamma=gamma)
    _checks.reduction(reduction)
    target = _checks.input_and_target(input, target)
    chosen = resolve(backend, input.device, differentiable_target=target.requires_grad)
    if chosen == "reference":
        return reference.focal_loss(input, target, alpha=alpha, gamma=gamma, reduction=reduction)
    ops = fused_ops(chosen)
    spec = _spec.focal_spec(alpha, gamma, reduction)
    if reduction == "none":
        return ops.sigmoid_focal_map(input, target, spec.focal_alpha, spec.focal_gamma)
    loss, _coef = ops.sigmoid_loss(input, target, None, False, False, *spec, "sum")
    return loss


LOSSES = {
    "dice": dice_loss,
    "iou": iou_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "focal": focal_loss,
    "dice_bce": dice_bce_loss,
}
