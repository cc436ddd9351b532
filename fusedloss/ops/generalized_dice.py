"""Generalized Dice (Sudre et al. 2017) on the fused statistics pass.

Its formula mixes the classes of a group through weights that depend on the
target sums (w_c = 1/T_c**2, 1/T_c or 1), so it is not one of the ``LossSpec``
points the finalize kernels compute. The heavy parts are the fused ones: the
``<family>_stats`` op reads input and target once for the per-class sums I, P, T
(no one-hot, probability or weight tensor), and the ``<family>_loss_backward`` op
recomputes the activation for the gradient. In between, on (groups, classes)
tensors on the device and without a host sync:

    loss = 1 - (2 sum_c w_c I_c + smooth_nr) / (sum_c w_c (P_c + T_c) + smooth_dr)

and its coefficients dL/dI_c = -2 w_c / den, dL/dP_c = w_c num / den**2, written
by hand (the weights carry no gradient, as in MONAI).
"""

from __future__ import annotations

import torch

from .._spec import LossSpec, check_focal_form, check_min_intersection
from .schema import spec_arguments
from .synced import _all_reduce

WEIGHT_TYPES = ("square", "simple", "uniform")


def class_weights(actual: torch.Tensor, weight_type: str) -> torch.Tensor:
    """w_c of T_c (classes on the last dim): 1/T**2, 1/T or 1; a class absent from the
    target (infinite weight) takes its group's largest finite weight (0 if none), MONAI's rule."""
    if weight_type == "uniform":
        return torch.ones_like(actual)
    weights = 1.0 / (actual * actual if weight_type == "square" else actual)
    infinite = torch.isinf(weights)
    weights = torch.where(infinite, 0.0, weights)
    return torch.where(infinite, weights.amax(-1, keepdim=True), weights)


def generalized_dice(sums: torch.Tensor, weight_type: str, smooth_nr: float, smooth_dr: float,
                     include_background: bool):
    """Per group (first dim) of (groups, classes, [I, P, T]) sums: the loss, and dL/dI, dL/dP
    per (group, class). A zero denominator scores as a perfect match (loss 0), as elsewhere."""
    intersection, predicted, actual = sums.unbind(-1)
    first = 0 if include_background else 1
    intersection, predicted, actual = intersection[:, first:], predicted[:, first:], actual[:, first:]
    weights = class_weights(actual, weight_type)
    numerator = 2 * (weights * intersection).sum(-1) + smooth_nr
    denominator = (weights * (predicted + actual)).sum(-1) + smooth_dr
    undefined = denominator <= 0  # NaN is not: it propagates
    denominator = torch.where(undefined, 1.0, denominator)
    ratio = numerator / denominator
    loss = torch.where(undefined, 0.0, 1 - ratio)
    scale = torch.where(undefined, 0.0, 1 / denominator).unsqueeze(-1)
    d_intersection = -2 * weights * scale
    d_predicted = ratio.unsqueeze(-1) * weights * scale  # w num / den**2 through the ratio: no den**2 overflow
    if not include_background:  # class 0 is in no sum: zero coefficients
        pad = torch.zeros_like(d_intersection[:, :1])
        d_intersection, d_predicted = torch.cat([pad, d_intersection], 1), torch.cat([pad, d_predicted], 1)
    return loss, d_intersection, d_predicted


class GeneralizedDiceLoss(torch.autograd.Function):
    """Forward: the fused statistics (summed over ``group``'s processes when given), then the
    formula; backward: the fused backward op with the coefficients times the upstream gradient."""

    @staticmethod
    def forward(ctx, input, target, ops, family: str, spec: LossSpec, per_sample: bool, weight_type: str,
                include_background: bool, ignore_index, reduction: str, group, check_target: bool):
        classes = input.shape[1]
        if family == "binary":
            sums = ops.binary_stats(input, target, per_sample, True, **spec_arguments("binary_stats", spec),
                                    ignore_index=ignore_index, check_target=check_target)[:, :3]
            backward_args = dict(per_sample=per_sample, per_channel=True, ignore_index=ignore_index)
        else:
            check_min_intersection(spec.squared_pred, spec.min_intersection, multiclass=True)  # not an argument there
            check_focal_form(spec.focal_form, spec.from_logits, spec.clamped_log, multiclass=True)
            sums, _ = ops.multiclass_stats(input, target, None, per_sample, **spec_arguments("multiclass_stats", spec),
                                           ignore_index=ignore_index, check_target=check_target)
            backward_args = dict(class_weight=None, per_sample=per_sample, ignore_index=ignore_index)
        if group is not None:
            sums = _all_reduce(sums, group)
        losses, d_intersection, d_predicted = generalized_dice(sums.reshape(-1, classes, 3), weight_type,
                                                               spec.smooth_nr, spec.smooth_dr, include_background)
        op = f"{family}_loss_backward"
        ctx.backward_op = getattr(ops, op)
        ctx.backward_args = {**backward_args, **spec_arguments(op, spec)}
        ctx.reduction, ctx.groups = reduction, losses.shape[0]
        ctx.save_for_backward(input, target, d_intersection, d_predicted)
        if reduction == "mean":
            return losses.mean()
        if reduction == "sum":
            return losses.sum()
        return losses.reshape((-1,) if per_sample else ())

    @staticmethod
    def backward(ctx, grad_loss):
        input, target, d_intersection, d_predicted = ctx.saved_tensors
        upstream = grad_loss.reshape(-1, 1).to(d_intersection.dtype)  # one per group, or one for all
        if ctx.reduction == "mean":
            upstream = upstream / ctx.groups
        coef = torch.stack([d_intersection * upstream, d_predicted * upstream, torch.zeros_like(d_predicted)], -1)
        one = torch.ones((), dtype=coef.dtype, device=coef.device)
        grad = ctx.backward_op(one, input, target, coef.reshape(-1, 3), **ctx.backward_args)
        return (grad,) + (None,) * 11
