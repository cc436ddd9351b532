"""The fused statistics as differentiable tensors: any formula on the sums, fused passes around it.

Every region loss, and the mean of an element term, is a formula on a few sums per
group: I = sum(p*t), P = sum(p), T = sum(t), E = sum of the element losses, and the
elements counted. ``binary_sums`` and ``multiclass_sums`` return them from the fused
statistics pass (one read of input and target, no full-size temporary) as tensors that
autograd differentiates: the gradient of whatever is computed from them (dL/dI, dL/dP,
dL/dE per group) becomes the backward coefficients of the fused backward pass, which
recomputes the activation. So a loss whose formula is not one of the finalize kernels'
``LossSpec`` points (another library's conventions: clamps, absent-class rules, class
subsets, weighted means) is written once in PyTorch on (groups,)-sized tensors, with no
host sync, and runs fused. Backend 'reference' computes the same sums in plain PyTorch.
"""

from __future__ import annotations

import torch

from .. import _checks, reference
from .._spec import LossSpec, check_focal_form
from . import fused_ops
from .schema import spec_arguments
from .selection import resolve

BINARY_COLUMNS = ("intersection", "predicted", "actual", "element", "count")


class _BinarySums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, ops, spec: LossSpec, per_sample, per_channel, ignore_index, check_target):
        sums = ops.binary_stats(input, target, per_sample, per_channel, **spec_arguments("binary_stats", spec),
                                ignore_index=ignore_index, check_target=check_target)
        ctx.backward_op = ops.binary_loss_backward
        ctx.backward_args = dict(per_sample=per_sample, per_channel=per_channel, ignore_index=ignore_index,
                                 **spec_arguments("binary_loss_backward", spec))
        ctx.save_for_backward(input, target)
        return sums

    @staticmethod
    def backward(ctx, grad_sums):
        input, target = ctx.saved_tensors
        coef = grad_sums[:, [0, 1, 3]].contiguous()  # dL/dI, dL/dP, dL/dE: T and the count hold no input
        one = torch.ones((), dtype=coef.dtype, device=coef.device)
        return (ctx.backward_op(one, input, target, coef, **ctx.backward_args),) + (None,) * 7


class _MulticlassSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, ops, spec: LossSpec, class_weight, per_sample, ignore_index, check_target):
        class_sums, elem_sums = ops.multiclass_stats(input, target, class_weight, per_sample,
                                                     **spec_arguments("multiclass_stats", spec),
                                                     ignore_index=ignore_index, check_target=check_target)
        ctx.backward_op = ops.multiclass_loss_backward
        ctx.backward_args = dict(class_weight=class_weight, per_sample=per_sample, ignore_index=ignore_index,
                                 **spec_arguments("multiclass_loss_backward", spec))
        ctx.save_for_backward(input, target)
        return class_sums, elem_sums

    @staticmethod
    def backward(ctx, grad_class, grad_elem):
        input, target = ctx.saved_tensors
        # The element term's coefficient is one number, read from the first group's third column.
        elem_column = torch.zeros_like(grad_class[:, 0])
        elem_column[0] = grad_elem[0]
        coef = torch.stack([grad_class[:, 0], grad_class[:, 1], elem_column], -1)
        one = torch.ones((), dtype=coef.dtype, device=coef.device)
        return (ctx.backward_op(one, input, target, coef, **ctx.backward_args),) + (None,) * 7


def binary_sums(input, target, spec: LossSpec, *, per_sample=False, per_channel=False, ignore_index=None,
                backend="auto") -> torch.Tensor:
    """(groups, 5) sums [I, P, T, E, elements counted] of the binary family (p = sigmoid(input),
    or the input with ``spec.from_logits`` False), groups as in ``functional`` (per_sample,
    per_channel); E sums the element term ``spec`` describes (when ``spec.elem``), else 0.
    Differentiable w.r.t. ``input``."""
    target = _checks.input_and_target(input, target)
    _checks.binary_ignore_index(ignore_index, target.dtype)
    chosen = resolve(backend, input.device)
    if chosen == "reference":
        _checks.target_values(target, None, ignore_index)
        return _reference_binary_sums(input, target, spec, per_sample, per_channel, ignore_index)
    return _BinarySums.apply(input, target, fused_ops(chosen), spec, per_sample, per_channel, ignore_index,
                             _checks.CHECK_TARGETS)


def multiclass_sums(input, target, spec: LossSpec, *, class_weight=None, per_sample=False, ignore_index=None,
                    backend="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """((groups, 3) per-class sums [I, P, T], (2,) [E, pixels counted]) of the multiclass family
    (p = softmax(input, dim=1), or the input), groups the classes, or (sample, class) with
    ``per_sample``; E the element term's sum (class_weight: per-class factors of it; with
    ``spec.weighted_mean`` the second value sums the pixels' class weights instead).
    Differentiable w.r.t. ``input``."""
    target = _checks.input_and_class_map(input, target, ignore_index)
    check_focal_form(spec.focal_form, spec.from_logits, spec.clamped_log, multiclass=True)  # no multiclass op takes it
    chosen = resolve(backend, input.device, family="multiclass", classes=input.shape[1])
    if chosen == "reference":
        from ..functional import _check_class_targets

        _check_class_targets(input, target, ignore_index)
        return _reference_multiclass_sums(input, target, spec, class_weight, per_sample, ignore_index)
    return _MulticlassSums.apply(input, target, fused_ops(chosen), spec, class_weight, per_sample, ignore_index,
                                 _checks.CHECK_TARGETS)


def _reference_binary_sums(input, target, spec, per_sample, per_channel, ignore_index):
    dims = reference._group_dims(input, per_sample, per_channel)
    region = reference._region_sums(input, target, per_sample, per_channel, squared_pred=spec.squared_pred,
                                    from_logits=spec.from_logits, ignore_index=ignore_index,
                                    min_intersection=spec.min_intersection)
    count = reference._valid_count(input, target, ignore_index, dims)
    if spec.elem:
        alpha = None if spec.focal_alpha < 0 else spec.focal_alpha
        element = reference._sum(reference._focal_map(input, target, alpha, spec.focal_gamma, spec.from_logits,
                                                      spec.clamped_log, ignore_index, spec.focal_form), dims)
    else:
        element = torch.zeros_like(count)
    return torch.stack([*region, element, count], -1).reshape(-1, 5)


def _reference_multiclass_sums(input, target, spec, class_weight, per_sample, ignore_index):
    region = reference._class_sums(input, target, per_sample, ignore_index, squared_pred=spec.squared_pred,
                                   from_logits=spec.from_logits)
    class_sums = torch.stack(region, -1).reshape(-1, 3)
    alpha = class_weight if class_weight is not None else (None if spec.focal_alpha < 0 else spec.focal_alpha)
    pixel, operands = reference._pixel_losses(input, target, alpha, spec.focal_gamma, ignore_index,
                                              spec.from_logits, spec.label_smoothing)
    element = pixel.sum() if spec.elem else torch.zeros((), dtype=class_sums.dtype, device=class_sums.device)
    if spec.weighted_mean and class_weight is not None and operands.labels is not None:
        counted = torch.where(operands.valid, class_weight.to(class_sums.dtype)[operands.labels], 0.0).sum()
    else:
        counted = operands.valid.sum().to(class_sums.dtype)
    return class_sums, torch.stack([element, counted])
