"""Region losses with statistics summed over the processes of a
torch.distributed group before the formula, so a batch split over ranks gets
the Dice (IoU, Tversky...) of the whole batch.

Each rank runs the statistics half of the fused forward (``*_stats`` ops),
all-reduces the region sums (I, P, T; the element terms, BCE / CE / focal,
stay per rank: DDP averages them like any other mean), runs the formula half
(``*_finalize``) on the global sums, and keeps the per-group coefficients for
the usual fused backward. Each rank's loss is the global loss; its gradient is
the global loss's gradient with respect to this rank's own input.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .._spec import LossSpec, check_focal_form, check_min_intersection, group_layout
from .schema import spec_arguments


def _all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    tensor = tensor.contiguous()
    dist.all_reduce(tensor, group=group)
    return tensor


class _SyncedLoss(torch.autograd.Function):
    """The backward both families share: the fused ``<family>_loss_backward`` op
    with the coefficients the forward computed from the global sums."""

    @staticmethod
    def save(ctx, family: str, ops, input, target, coef, spec: LossSpec, **backward_args) -> None:
        ctx.save_for_backward(input, target, coef)
        op = f"{family}_loss_backward"
        ctx.backward_op = getattr(ops, op)
        ctx.backward_args = {**backward_args, **spec_arguments(op, spec)}

    @staticmethod
    def backward(ctx, grad_loss):
        input, target, coef = ctx.saved_tensors
        grad = ctx.backward_op(grad_loss, input, target, coef, **ctx.backward_args)
        return (grad,) + (None,) * (len(ctx.needs_input_grad) - 1)


class SyncedBinaryLoss(_SyncedLoss):
    @staticmethod
    def forward(ctx, input, target, weight, ops, group, per_sample, per_channel, spec: LossSpec, ignore_index,
                reduction, check_target):
        layout = group_layout(input.shape, per_sample, per_channel)
        sums = ops.binary_stats(input, target, per_sample, per_channel, **spec_arguments("binary_stats", spec),
                                ignore_index=ignore_index, check_target=check_target)
        # [I, P, T] summed over the ranks; the element sum and its count stay per rank.
        sums = torch.cat([_all_reduce(sums[:, :3], group), sums[:, 3:]], dim=1)
        loss, coef = ops.binary_finalize(sums, weight, layout.num_channels, **spec_arguments("binary_finalize", spec),
                                         reduction=reduction, loss_shape=list(layout.shape))
        _SyncedLoss.save(ctx, "binary", ops, input, target, coef, spec, per_sample=per_sample, per_channel=per_channel,
                         ignore_index=ignore_index)
        return loss


class SyncedMulticlassLoss(_SyncedLoss):
    @staticmethod
    def forward(ctx, input, target, weight, class_weight, ops, group, per_sample, spec: LossSpec, ignore_index,
                include_background, exclude_empty, reduction, check_target):
        check_min_intersection(spec.squared_pred, spec.min_intersection, multiclass=True)  # no op of the half takes it
        check_focal_form(spec.focal_form, spec.from_logits, spec.clamped_log, multiclass=True)  # nor this
        class_sums, elem_sums = ops.multiclass_stats(input, target, class_weight, per_sample,
                                                     **spec_arguments("multiclass_stats", spec),
                                                     ignore_index=ignore_index, check_target=check_target)
        class_sums = _all_reduce(class_sums, group)
        loss_shape = [input.shape[0], input.shape[1]] if per_sample else [input.shape[1]]
        loss, coef = ops.multiclass_finalize(class_sums, elem_sums, weight, input.shape[1], per_sample,
                                             **spec_arguments("multiclass_finalize", spec),
                                             include_background=include_background, exclude_empty=exclude_empty,
                                             reduction=reduction, loss_shape=loss_shape)
        _SyncedLoss.save(ctx, "multiclass", ops, input, target, coef, spec, class_weight=class_weight,
                         per_sample=per_sample, ignore_index=ignore_index)
        return loss
