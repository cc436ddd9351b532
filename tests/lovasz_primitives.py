"""The Lovász primitives (fusedloss/ops/schema.py LOVASZ_SCHEMAS) transcribed into PyTorch from their
specification: what tests/test_lovasz_kernels.py holds every backend's kernels to. Plain loops over the
sorted positions in float64, written for clarity, not speed (keep the tensors small)."""

from __future__ import annotations

import torch


def _acc(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def binary_lovasz_errors(input, target, per_sample, ignore_index):
    groups = input.shape[0] if per_sample else 1
    x = input.to(_acc(input)).reshape(groups, -1)
    raw = target.reshape(groups, -1)
    t = raw.to(x.dtype)
    errors = 1 - x * (2 * t - 1)
    if ignore_index is not None:
        ignored = raw == ignore_index
        errors = errors.masked_fill(ignored, float("-inf"))
        t = t.masked_fill(ignored, 0)
    return errors, t


def _class_truth(input, target, ignore_index):
    """(p, t, ignored): (N, C, S) probabilities and per-class targets, (N, 1, S) ignored pixels."""
    n, c = input.shape[:2]
    if target.shape == input.shape:
        t = target.reshape(n, c, -1).to(_acc(input))
        return t, torch.zeros(n, 1, t.shape[-1], dtype=torch.bool, device=input.device)
    labels = target.reshape(n, 1, -1).long()
    classes = torch.arange(c, device=input.device).view(1, c, 1)
    ignored = (labels == ignore_index) if ignore_index is not None else torch.zeros_like(labels, dtype=torch.bool)
    return (labels == classes).to(_acc(input)), ignored


def _probabilities(input, from_logits):
    n, c = input.shape[:2]
    x = input.to(_acc(input)).reshape(n, c, -1)
    return torch.softmax(x, dim=1) if from_logits else x


def _grouped(values, per_sample):
    """(N, C, S) -> (G, C, L), pixel j = n_local * S + s."""
    n, c, s = values.shape
    return values if per_sample else values.permute(1, 0, 2).reshape(1, c, n * s)


def multiclass_lovasz_errors(input, target, per_sample, from_logits, ignore_index):
    p = _probabilities(input, from_logits)
    t, ignored = _class_truth(input, target, ignore_index)
    errors = (t - p).abs().masked_fill(ignored, float("-inf"))
    t = t.masked_fill(ignored, 0)
    return _grouped(errors, per_sample), _grouped(t, per_sample)


def _steps(truth_row, order_row):
    """g_i along one sorted row, float64, by the spec's formula."""
    t = truth_row.double()[order_row.long()]
    total = t.sum()
    g = torch.empty_like(t)
    before = torch.zeros((), dtype=torch.float64)
    for i in range(t.numel()):
        inter, union = total - before, total + i - before
        g[i] = 1.0 if union == 0 else (inter * (1 - t[i]) + t[i] * union) / (union * (union + 1 - t[i]))
        before = before + t[i]
    return g, total


def lovasz_rows(sorted_errors, truth, order):
    rows = sorted_errors.shape[:-1]
    e, t, o = (a.reshape(-1, a.shape[-1]) for a in (sorted_errors, truth, order))
    loss = torch.empty(e.shape[0], dtype=torch.float64)
    positives = torch.empty(e.shape[0], dtype=torch.float64)
    for r in range(e.shape[0]):
        g, positives[r] = _steps(t[r], o[r])
        loss[r] = (torch.relu(e[r].double()) * g).sum()
    return loss.reshape(rows).to(sorted_errors.dtype), positives.reshape(rows).to(sorted_errors.dtype)


def lovasz_rows_backward(grad_loss, truth, order):
    t, o = truth.reshape(-1, truth.shape[-1]), order.reshape(-1, order.shape[-1])
    grad = grad_loss.reshape(-1).double()
    out = torch.empty(t.shape, dtype=torch.float64)
    for r in range(t.shape[0]):
        g, _ = _steps(t[r], o[r])
        out[r, o[r].long()] = grad[r] * g
    return out.reshape(truth.shape).to(truth.dtype)


def binary_lovasz_chain(grad_errors, input, target, per_sample, ignore_index):
    errors, _ = binary_lovasz_errors(input, target, per_sample, ignore_index)
    x = input.to(_acc(input))
    sign = (2 * target.to(x.dtype) - 1).reshape(errors.shape)
    grad = torch.where(errors > 0, -grad_errors * sign, torch.zeros_like(errors))
    return grad.reshape(input.shape).to(input.dtype)


def multiclass_lovasz_chain(grad_errors, input, target, per_sample, from_logits, ignore_index):
    n, c = input.shape[:2]
    p = _probabilities(input, from_logits)
    t, ignored = _class_truth(input, target, ignore_index)
    grad_e = grad_errors if per_sample else grad_errors.reshape(c, n, -1).permute(1, 0, 2)
    dp = grad_e * ((t - p).abs() > 0) * torch.sign(p - t)
    grad = p * (dp - (p * dp).sum(1, keepdim=True)) if from_logits else dp
    return grad.masked_fill(ignored, 0).reshape(input.shape).to(input.dtype)
