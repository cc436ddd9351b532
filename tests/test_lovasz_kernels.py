"""Every fused backend's Lovász primitives against their specification in PyTorch
(tests/lovasz_primitives.py): errors and truth, the scan over sorted rows (loss, positives,
the gradient scattered back), and the chain rule to the input."""

from __future__ import annotations

import pytest
import torch

from fusedloss.ops import fused_ops
from helpers import DEVICE, FUSED_BACKENDS

import lovasz_primitives as spec

DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def _close(actual, expected, dtype=None):
    dtype = dtype or expected.dtype
    tol = {torch.float64: 1e-11, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=tol, atol=tol, equal_nan=True)


def _binary_pair(shape, dtype, target_kind, ties=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    if ties:
        x = x.round()  # many equal errors: the tie order must not matter for the loss
    t = (torch.rand(shape, generator=gen) < 0.4).float()
    ignore = None
    if target_kind == "soft":
        t = torch.where(torch.rand(shape, generator=gen) < 0.5, torch.rand(shape, generator=gen), t)
    elif target_kind == "uint8_ignore":
        t = torch.where(torch.rand(shape, generator=gen) < 0.2, 255.0, t).to(torch.uint8)
        ignore = 255
    elif target_kind == "float_ignore":
        t = torch.where(torch.rand(shape, generator=gen) < 0.2, -1.0, t)
        ignore = -1
    elif target_kind == "bool":
        t = t.bool()
    return x.to(dtype).to(DEVICE), t.to(DEVICE), ignore


def _multiclass_pair(shape, dtype, target_kind, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n, c = shape[:2]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (n,) + shape[2:], generator=gen)
    ignore = None
    if target_kind == "dense":
        target = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64), 1).float()
    elif target_kind == "ignore":
        target = torch.where(torch.rand(labels.shape, generator=gen) < 0.2, -100, labels)
        ignore = -100
    elif target_kind == "uint8":
        target = labels.to(torch.uint8)
    else:
        target = labels
    return x.to(dtype).to(DEVICE), target.to(DEVICE), ignore


def _rows_case(ops, errors, truth, order_dtype):
    sorted_errors, order = torch.sort(errors, dim=-1, descending=True, stable=True)
    order = order.to(order_dtype)
    loss, positives = ops.lovasz_rows(sorted_errors, truth, order)
    want_loss, want_positives = spec.lovasz_rows(sorted_errors.cpu(), truth.cpu(), order.cpu())
    _close(loss, want_loss)
    _close(positives, want_positives)
    grad_loss = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    grad = ops.lovasz_rows_backward(grad_loss, truth, order)
    _close(grad, spec.lovasz_rows_backward(grad_loss.cpu(), truth.cpu(), order.cpu()))
    return grad


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target_kind", ["hard", "soft", "uint8_ignore", "float_ignore", "bool"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_binary_primitives(backend, dtype, target_kind, per_sample):
    ops = fused_ops(backend)
    x, t, ignore = _binary_pair((3, 2, 5, 7), dtype, target_kind, ties=target_kind == "hard")
    errors, truth = ops.binary_lovasz_errors(x, t, per_sample, ignore, True)
    want_errors, want_truth = spec.binary_lovasz_errors(x.cpu(), t.cpu(), per_sample, ignore)
    _close(errors, want_errors)
    _close(truth, want_truth)
    grad_errors = _rows_case(ops, errors, truth, torch.int32 if per_sample else torch.int64)
    grad = ops.binary_lovasz_chain(grad_errors, x, t, per_sample, ignore)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    _close(grad, spec.binary_lovasz_chain(grad_errors.cpu(), x.cpu(), t.cpu(), per_sample, ignore), dtype)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target_kind", ["labels", "ignore", "uint8", "dense"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("from_logits", [True, False])
def test_multiclass_primitives(backend, dtype, target_kind, per_sample, from_logits):
    ops = fused_ops(backend)
    x, t, ignore = _multiclass_pair((2, 4, 5, 6), dtype, target_kind)
    if not from_logits:
        x = torch.softmax(x.double(), 1).to(dtype)
    errors, truth = ops.multiclass_lovasz_errors(x, t, per_sample, from_logits, ignore, True)
    want_errors, want_truth = spec.multiclass_lovasz_errors(x.cpu(), t.cpu(), per_sample, from_logits, ignore)
    assert errors.shape == want_errors.shape == ((2, 4, 30) if per_sample else (1, 4, 60))
    _close(errors, want_errors)
    _close(truth, want_truth)
    grad_errors = _rows_case(ops, errors, truth, torch.int32)
    grad = ops.multiclass_lovasz_chain(grad_errors, x, t, per_sample, from_logits, ignore)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    want = spec.multiclass_lovasz_chain(grad_errors.cpu(), x.cpu(), t.cpu(), per_sample, from_logits, ignore)
    _close(grad, want, dtype)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("length", [1, 2, 3000])
def test_rows_lengths_and_carries(backend, length):
    """Rows of one element (g = 1), and rows longer than a chunk (the carry between chunks)."""
    ops = fused_ops(backend)
    gen = torch.Generator().manual_seed(length)
    errors = torch.randn(3, length, generator=gen, dtype=torch.float64).to(DEVICE)
    truth = (torch.rand(3, length, generator=gen) < 0.3).double().to(DEVICE)
    truth[1] = 0  # a row with nothing to find
    _rows_case(ops, errors, truth, torch.int64)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_rows_propagate_nan(backend):
    ops = fused_ops(backend)
    errors = torch.tensor([[0.5, float("nan"), -1.0, 2.0], [0.5, 0.25, -1.0, float("-inf")]], device=DEVICE)
    truth = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]], device=DEVICE)
    sorted_errors, order = torch.sort(errors, dim=-1, descending=True, stable=True)
    loss, _ = ops.lovasz_rows(sorted_errors, truth, order)
    assert loss[0].isnan() and loss[1].isfinite()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_many_classes(backend):
    """More classes than one block of a pixel's logits (the softmax in passes)."""
    ops = fused_ops(backend)
    x, t, _ = _multiclass_pair((1, 300, 3, 4), torch.float64, "labels")
    errors, truth = ops.multiclass_lovasz_errors(x, t, True, True, None, True)
    want_errors, want_truth = spec.multiclass_lovasz_errors(x.cpu(), t.cpu(), True, True, None)
    _close(errors, want_errors)
    _close(truth, want_truth)
    grad_errors = torch.randn(errors.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grad = ops.multiclass_lovasz_chain(grad_errors.to(DEVICE), x, t, True, True, None)
    _close(grad, spec.multiclass_lovasz_chain(grad_errors, x.cpu(), t.cpu(), True, True, None))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("family", ["binary", "multiclass"])
def test_bad_targets_raise(backend, family):
    ops = fused_ops(backend)
    if family == "binary":
        x, t, _ = _binary_pair((2, 1, 4, 4), torch.float32, "hard")
        t[0, 0, 1, 1] = 2.0
        call = lambda: ops.binary_lovasz_errors(x, t, False, None, True)  # noqa: E731
    else:
        x, t, _ = _multiclass_pair((2, 3, 4, 4), torch.float32, "labels")
        t[1, 2, 2] = 3
        call = lambda: ops.multiclass_lovasz_errors(x, t, False, True, None, True)  # noqa: E731
    if DEVICE.type != "cpu":
        pytest.skip("a bad target is a device-side assert on a GPU, which would end the process")
    with pytest.raises((ValueError, RuntimeError), match="target"):
        call()
