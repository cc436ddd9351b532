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

from .._spec import SigmoidLossSpec, group_layout


def _all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    tensor = tensor.contiguous()
    dist.all_reduce(tensor, group=group)
    return tensor


class SyncedSigmoidLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, ops, group, per_sample, per_channel, spec: SigmoidLossSpec, reduction,
                check_target):
        layout = group_layout(input.shape, per_sample, per_channel)
        sums = ops.sigmoid_stats(input, target, per_sample, per_channel, spec.region, spec.elem, spec.focal_alpha,
                                 spec.focal_gamma, check_target)
        sums = torch.cat([_all_reduce(sums[:, :3], group), sums[:, 3:]], dim=1)
        loss, coef = ops.sigmoid_finalize(
            sums, weight, layout.num_channels, layout.rows // layout.num_groups * layout.row_len, spec.region,
            spec.tv_alpha, spec.tv_beta, spec.smooth, spec.region_gamma, spec.region_weight, spec.elem,
            spec.elem_weight, spec.elem_mean, reduction, list(layout.shape))
        ctx.save_for_backward(input, target, coef)
        ctx.ops = ops
        ctx.backward_args = (per_sample, per_channel, spec.region, spec.elem, spec.focal_alpha, spec.focal_gamma)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        input, target, coef = ctx.saved_tensors
        grad = ctx.ops.sigmoid_loss_backward(grad_loss, input, target, coef, *ctx.backward_args)
        return (grad,) + (None,) * 9


class SyncedSoftmaxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, ops, group, per_sample, spec: SigmoidLossSpec, ignore_index,
                include_background, exclude_empty, reduction, check_target):
        class_sums, elem_sums = ops.softmax_stats(input, target, per_sample, spec.region, spec.elem,
                                                  spec.focal_alpha, spec.focal_gamma, ignore_index, check_target)
        class_sums = _all_reduce(class_sums, group)
        loss_shape = [input.shape[0], input.shape[1]] if per_sample else [input.shape[1]]
        loss, coef = ops.softmax_finalize(
            class_sums, elem_sums, weight, input.shape[1], per_sample, spec.region, spec.tv_alpha, spec.tv_beta,
            spec.smooth, spec.region_gamma, spec.region_weight, spec.elem, spec.elem_weight, spec.elem_mean,
            include_background, exclude_empty, reduction, loss_shape)
        ctx.save_for_backward(input, target, coef)
        ctx.ops = ops
        ctx.backward_args = (per_sample, spec.region, spec.elem, spec.focal_alpha, spec.focal_gamma, ignore_index)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        input, target, coef = ctx.saved_tensors
        grad = ctx.ops.softmax_loss_backward(grad_loss, input, target, coef, *ctx.backward_args)
        return (grad,) + (None,) * 11
