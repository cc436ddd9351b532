"""Fused backends against the reference: loss values and input gradients
across input dtype x target dtype x options x awkward shapes x masks."""

import pytest
import torch

from helpers import (ALL_LOSSES, FUSED_BACKENDS, GROUPINGS, INPUT_DTYPES, LOSS_PARAMS, REGION_LOSSES,
                     TARGET_DTYPES, assert_close, loss_and_grad, make_pair)

pytestmark = pytest.mark.parametrize("backend", FUSED_BACKENDS)

# Smaller than a block, odd, not a multiple of any block size, 1-D to 5-D.
SHAPES = [(7,), (3, 1, 5, 7), (2, 3, 33, 17), (1, 2, 8193), (4, 5), (1, 2, 5, 6, 7)]


def check_against_reference(name, backend, x, t, **options):
    fused_loss, fused_grad = loss_and_grad(name, x, t, backend, **options)
    ref_loss, ref_grad = loss_and_grad(name, x, t, "reference", **options)
    assert fused_loss.shape == ref_loss.shape
    assert fused_grad.dtype == x.dtype
    assert torch.isfinite(fused_loss).all() and torch.isfinite(fused_grad).all()
    loss_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert_close(fused_loss, ref_loss, x.dtype if fused_loss.dtype == x.dtype else loss_dtype)
    assert_close(fused_grad, ref_grad, x.dtype)


@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
@pytest.mark.parametrize("dtype", INPUT_DTYPES)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_dtypes(backend, name, dtype, target_dtype):
    x, t = make_pair((2, 3, 33, 17), dtype, target_dtype)
    check_against_reference(name, backend, x, t, **LOSS_PARAMS[name])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("grouping", GROUPINGS, ids=lambda g: "-".join(g) or "whole")
@pytest.mark.parametrize("name", REGION_LOSSES)
def test_groupings_and_reductions(backend, name, grouping, reduction):
    x, t = make_pair((3, 4, 9, 11), torch.float64)
    check_against_reference(name, backend, x, t, reduction=reduction, **grouping, **LOSS_PARAMS[name])


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", REGION_LOSSES)
def test_channel_weights(backend, name, per_sample, reduction):
    x, t = make_pair((2, 3, 10, 7), torch.float32, torch.uint8)
    weight = torch.tensor([0.2, 1.0, 3.5], device=x.device)
    check_against_reference(name, backend, x, t, per_sample=per_sample, per_channel=True, weight=weight,
                            reduction=reduction, **LOSS_PARAMS[name])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_awkward_shapes(backend, name, shape):
    x, t = make_pair(shape, torch.float32)
    check_against_reference(name, backend, x, t, **LOSS_PARAMS[name])
    if name != "focal" and len(shape) >= 2:
        check_against_reference(name, backend, x, t, per_sample=True, per_channel=True, reduction="none",
                                **LOSS_PARAMS[name])


@pytest.mark.parametrize("mask", ["empty", "full"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_empty_and_full_masks(backend, name, dtype, mask):
    x, t = make_pair((2, 2, 15, 9), dtype, torch.bool, mask=mask)
    extra = {} if name == "focal" else dict(per_channel=True)
    check_against_reference(name, backend, x, t, **extra, **LOSS_PARAMS[name])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("params", [dict(alpha=0.25, gamma=2.0), dict(alpha=None, gamma=0.5),
                                    dict(alpha=0.9, gamma=0.0), dict(alpha=None, gamma=3.0)], ids=str)
@pytest.mark.parametrize("dtype", INPUT_DTYPES)
def test_focal_parameters(backend, dtype, params, reduction):
    x, t = make_pair((2, 1, 13, 21), dtype)
    check_against_reference("focal", backend, x, t, reduction=reduction, **params)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
def test_focal_tversky_gammas(backend, gamma):
    x, t = make_pair((2, 3, 8, 8), torch.float64)
    check_against_reference("focal_tversky", backend, x, t, gamma=gamma, per_channel=True, alpha=0.7, beta=0.3)


@pytest.mark.parametrize("name", REGION_LOSSES)
def test_target_without_channel_dim(backend, name):
    x, t = make_pair((2, 1, 9, 10), torch.float32, torch.uint8)
    fused_loss, fused_grad = loss_and_grad(name, x, t[:, 0], backend, per_sample=True)
    ref_loss, ref_grad = loss_and_grad(name, x, t, "reference", per_sample=True)
    assert_close(fused_loss, ref_loss, torch.float32)
    assert_close(fused_grad, ref_grad, torch.float32)


def test_non_contiguous_input(backend):
    x, t = make_pair((2, 3, 8, 12), torch.float32)
    x_t, t_t = x.transpose(2, 3), t.transpose(2, 3)
    check_against_reference("dice", backend, x_t, t_t, per_channel=True)
