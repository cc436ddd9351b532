"""The Lovász losses on a fused backend: everything but the sort in the backend's kernels.

Forward: one pass computes each row's errors and targets (``<family>_lovasz_errors``: a row is a
sample with per_sample, else the whole batch; per class for the softmax loss), ``torch.sort``
orders every row at once (one batched sort, stable: ties keep their index order, so results are
reproducible), and one pass over the sorted rows (``lovasz_rows``) scans the running counts,
takes the Lovász gradient of the Jaccard loss at each step and sums the loss. Only the
permutation is kept for backward (int32 where the rows allow, 4 bytes an element), with the
caller's input and target. Backward recomputes the targets, rescans the sorted order
(``lovasz_rows_backward``: each step's gradient written back to the element it came from) and
applies the chain rule to the input (``<family>_lovasz_chain``).
"""

from __future__ import annotations

import torch

INT32_ROWS = 2**31 - 1  # rows up to this long keep their permutation in int32


class _LovaszRows(torch.autograd.Function):
    """(losses, positives) per row: (G,) for the hinge, (G, C) for the softmax loss; positives
    (the targets' sum per row) carry no gradient."""

    @staticmethod
    def forward(ctx, input, target, ops, multiclass, per_sample, from_logits, ignore_index, check_target):
        input, target = input.contiguous(), target.contiguous()
        ctx.ops, ctx.multiclass, ctx.args = ops, multiclass, (per_sample, from_logits, ignore_index)
        errors, truth = _errors(ops, multiclass, input, target, per_sample, from_logits, ignore_index, check_target)
        sorted_errors, order = _sorted_rows(errors)
        del errors
        if order.shape[-1] <= INT32_ROWS:
            order = order.to(torch.int32)
        losses, positives = ops.lovasz_rows(sorted_errors, truth, order)
        ctx.save_for_backward(input, target, order)
        ctx.mark_non_differentiable(positives)
        ctx.set_materialize_grads(False)  # no zero gradient made for positives
        return losses, positives

    @staticmethod
    def backward(ctx, grad_losses, _grad_positives):
        if grad_losses is None:
            return None, None, None, None, None, None, None, None
        input, target, order = ctx.saved_tensors
        per_sample, from_logits, ignore_index = ctx.args
        ops = ctx.ops
        _, truth = _errors(ops, ctx.multiclass, input, target, per_sample, from_logits, ignore_index, False)
        grad_errors = ops.lovasz_rows_backward(grad_losses.contiguous(), truth, order)
        del truth
        if ctx.multiclass:
            grad = ops.multiclass_lovasz_chain(grad_errors, input, target, per_sample, from_logits, ignore_index)
        else:
            grad = ops.binary_lovasz_chain(grad_errors, input, target, per_sample, ignore_index)
        return grad, None, None, None, None, None, None, None


def _sorted_rows(errors):
    """torch.sort(errors, dim=-1, descending=True, stable=True). One fp32 row on the CPU (the
    hinge over a whole batch) is sorted as int32 keys instead, the same permutation: the float's
    bits made order-preserving and complemented (descending), which torch sorts with its parallel
    radix sort (1-D integer tensors only), about 2.4x faster than its float sort of 4M elements.
    Only -0 would sort apart from +0, and the errors passes never write -0 (1 - y and |d| give +0)."""
    if errors.device.type != "cpu" or errors.dtype != torch.float32 or errors.numel() != errors.shape[-1]:
        return torch.sort(errors, dim=-1, descending=True, stable=True)
    keys, order = torch.sort(~_ordered_bits(errors.reshape(-1).view(torch.int32)), stable=True)
    return _ordered_bits(~keys).view(torch.float32).view(errors.shape), order.view(errors.shape)


def _ordered_bits(bits):
    """fp32 bits <-> int32 values in the floats' order (its own inverse): a negative float's other
    bits order backwards, so they are flipped; ~ of these reverses the order."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _errors(ops, multiclass, input, target, per_sample, from_logits, ignore_index, check_target):
    if multiclass:
        return ops.multiclass_lovasz_errors(input, target, per_sample, from_logits, ignore_index, check_target)
    return ops.binary_lovasz_errors(input, target, per_sample, ignore_index, check_target)


def binary_lovasz_losses(input, target, ops, *, per_sample, ignore_index, check_target):
    """The Lovász hinge loss of each sample (per_sample, (N,)) or of the whole tensor ((1,))."""
    losses, _ = _LovaszRows.apply(input, target, ops, False, per_sample, True, ignore_index, check_target)
    return losses


def multiclass_lovasz_losses(input, target, ops, *, per_sample, from_logits, ignore_index, check_target):
    """(losses, positives) per (group, class): (N, C) with per_sample, else (1, C)."""
    return _LovaszRows.apply(input, target, ops, True, per_sample, from_logits, ignore_index, check_target)
