"""The fused ops' schemas, fake (meta) kernels and autograd, written once for
every backend that implements them.

A backend supplies the ops of a loss family under its own namespace: the
Triton backend defines them from Python (``triton_ops.py``); a C++ backend
defines them with TORCH_LIBRARY and only needs ``register_fake_and_autograd``
from here. Each family has four ops:

  <family>_loss                forward: (loss, coef); coef = per-group backward coefficients
  <family>_loss_backward       gradient w.r.t. input from grad_loss and coef
  <family>_focal_map           per-element (per-pixel) focal loss, reduction='none'
  <family>_focal_map_backward

Families: 'sigmoid' (binary / multi-label) and 'softmax' (multi-class, integer
class-map targets).
"""

from __future__ import annotations

import torch

from .._spec import group_layout, sigmoid_operands

SIGMOID_SCHEMAS = {
    "sigmoid_loss": (
        "(Tensor input, Tensor target, Tensor? weight, bool per_sample, bool per_channel, "
        "bool region, float tv_alpha, float tv_beta, float smooth, float region_gamma, float region_weight, "
        "bool elem, float focal_alpha, float focal_gamma, float elem_weight, bool elem_mean, str reduction) "
        "-> (Tensor, Tensor)"
    ),
    "sigmoid_loss_backward": (
        "(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, bool per_sample, bool per_channel, "
        "bool region, bool elem, float focal_alpha, float focal_gamma) -> Tensor"
    ),
    "sigmoid_focal_map": "(Tensor input, Tensor target, float alpha, float gamma) -> Tensor",
    "sigmoid_focal_map_backward": (
        "(Tensor grad_map, Tensor input, Tensor target, float alpha, float gamma) -> Tensor"
    ),
}

SOFTMAX_SCHEMAS = {
    "softmax_loss": (
        "(Tensor input, Tensor target, Tensor? weight, bool per_sample, "
        "bool region, float tv_alpha, float tv_beta, float smooth, float region_gamma, float region_weight, "
        "bool elem, float focal_alpha, float focal_gamma, float elem_weight, bool elem_mean, "
        "int? ignore_index, bool include_background, bool exclude_empty, str reduction) -> (Tensor, Tensor)"
    ),
    "softmax_loss_backward": (
        "(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, bool per_sample, bool region, bool elem, "
        "float focal_alpha, float focal_gamma, int? ignore_index) -> Tensor"
    ),
    "softmax_focal_map": "(Tensor input, Tensor target, float alpha, float gamma, int? ignore_index) -> Tensor",
    "softmax_focal_map_backward": (
        "(Tensor grad_map, Tensor input, Tensor target, float alpha, float gamma, int? ignore_index) -> Tensor"
    ),
}

FAMILIES = {"sigmoid": SIGMOID_SCHEMAS, "softmax": SOFTMAX_SCHEMAS}

# The forward in two halves, for statistics synchronised across processes
# (ops/synced.py): per-group sums, then the formula from (all-reduced) sums.
SYNC_SCHEMAS = {
    "sigmoid_stats": (
        "(Tensor input, Tensor target, bool per_sample, bool per_channel, bool region, bool elem, "
        "float focal_alpha, float focal_gamma) -> Tensor"
    ),
    "sigmoid_finalize": (
        "(Tensor sums, Tensor? weight, int num_channels, int group_size, bool region, float tv_alpha, "
        "float tv_beta, float smooth, float region_gamma, float region_weight, bool elem, float elem_weight, "
        "bool elem_mean, str reduction, int[] loss_shape) -> (Tensor, Tensor)"
    ),
    "softmax_stats": (
        "(Tensor input, Tensor target, bool per_sample, bool region, bool elem, float focal_alpha, "
        "float focal_gamma, int? ignore_index) -> (Tensor, Tensor)"
    ),
    "softmax_finalize": (
        "(Tensor class_sums, Tensor elem_sums, Tensor? weight, int num_classes, bool per_sample, bool region, "
        "float tv_alpha, float tv_beta, float smooth, float region_gamma, float region_weight, bool elem, "
        "float elem_weight, bool elem_mean, bool include_background, bool exclude_empty, str reduction, "
        "int[] loss_shape) -> (Tensor, Tensor)"
    ),
}
SCHEMAS = {**SIGMOID_SCHEMAS, **SOFTMAX_SCHEMAS}


def accumulation_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _fake_sigmoid_loss(input, target, weight, per_sample, per_channel, region, tv_alpha, tv_beta, smooth,
                       region_gamma, region_weight, elem, focal_alpha, focal_gamma, elem_weight, elem_mean,
                       reduction):
    layout = group_layout(input.shape, per_sample, per_channel)
    dtype = accumulation_dtype(input)
    loss = input.new_empty(layout.shape if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty((layout.num_groups, 3), dtype=dtype)


def _fake_sigmoid_gradient(grad, input, target, coef, per_sample, per_channel, *args):
    return torch.empty_like(input, memory_format=sigmoid_operands(input, target, per_sample, per_channel)[2])


def _fake_focal_map(input, target, *args):
    return torch.empty_like(input, memory_format=sigmoid_operands(input, target, False, False)[2])


def _fake_gradient(grad, input, *args):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _fake_softmax_loss(input, target, weight, per_sample, *args):
    reduction = args[-1]
    batch, classes = input.shape[0], input.shape[1]
    dtype = accumulation_dtype(input)
    loss = input.new_empty(((batch, classes) if per_sample else (classes,)) if reduction == "none" else (),
                           dtype=dtype)
    return loss, input.new_empty((batch * classes if per_sample else classes, 3), dtype=dtype)


def _fake_softmax_focal_map(input, target, alpha, gamma, ignore_index):
    return input.new_empty(target.shape)


def register_fake_and_autograd(namespace: str, families=("sigmoid",)) -> None:
    if "sigmoid" in families:
        _register_sigmoid(namespace)
    if "softmax" in families:
        _register_softmax(namespace)


def _register_softmax(namespace: str) -> None:
    ops = getattr(torch.ops, namespace)
    torch.library.register_fake(f"{namespace}::softmax_loss", _fake_softmax_loss)
    torch.library.register_fake(f"{namespace}::softmax_loss_backward", _fake_gradient)
    torch.library.register_fake(f"{namespace}::softmax_focal_map", _fake_softmax_focal_map)
    torch.library.register_fake(f"{namespace}::softmax_focal_map_backward", _fake_gradient)

    def setup_loss(ctx, inputs, output):
        (input, target, _weight, per_sample, region, _tv_alpha, _tv_beta, _smooth, _region_gamma, _region_weight,
         elem, focal_alpha, focal_gamma, _elem_weight, _elem_mean, ignore_index, *_) = inputs
        ctx.save_for_backward(input, target, output[1])  # the inputs themselves and a (groups, 3) tensor
        ctx.backward_args = (per_sample, region, elem, focal_alpha, focal_gamma, ignore_index)

    def backward_loss(ctx, grad_loss, _grad_coef):
        input, target, coef = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = ops.softmax_loss_backward(grad_loss, input, target, coef, *ctx.backward_args)
        return (grad,) + (None,) * 18

    def setup_map(ctx, inputs, output):
        input, target, alpha, gamma, ignore_index = inputs
        ctx.save_for_backward(input, target)
        ctx.focal = (alpha, gamma, ignore_index)

    def backward_map(ctx, grad_map):
        input, target = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = ops.softmax_focal_map_backward(grad_map, input, target, *ctx.focal)
        return grad, None, None, None, None

    torch.library.register_autograd(f"{namespace}::softmax_loss", backward_loss, setup_context=setup_loss)
    torch.library.register_autograd(f"{namespace}::softmax_focal_map", backward_map, setup_context=setup_map)


def _register_sigmoid(namespace: str) -> None:
    ops = getattr(torch.ops, namespace)

    torch.library.register_fake(f"{namespace}::sigmoid_loss", _fake_sigmoid_loss)
    torch.library.register_fake(f"{namespace}::sigmoid_loss_backward", _fake_sigmoid_gradient)
    torch.library.register_fake(f"{namespace}::sigmoid_focal_map", _fake_focal_map)
    torch.library.register_fake(f"{namespace}::sigmoid_focal_map_backward",
                                lambda grad_map, input, target, *args: _fake_focal_map(input, target))

    def setup_loss(ctx, inputs, output):
        (input, target, _weight, per_sample, per_channel, region, _tv_alpha, _tv_beta, _smooth,
         _region_gamma, _region_weight, elem, focal_alpha, focal_gamma, *_) = inputs
        ctx.save_for_backward(input, target, output[1])  # the inputs themselves and a (groups, 3) tensor
        ctx.backward_args = (per_sample, per_channel, region, elem, focal_alpha, focal_gamma)

    def backward_loss(ctx, grad_loss, _grad_coef):
        input, target, coef = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = ops.sigmoid_loss_backward(grad_loss, input, target, coef, *ctx.backward_args)
        return (grad,) + (None,) * 16

    def setup_map(ctx, inputs, output):
        input, target, alpha, gamma = inputs
        ctx.save_for_backward(input, target)
        ctx.focal = (alpha, gamma)

    def backward_map(ctx, grad_map):
        input, target = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = ops.sigmoid_focal_map_backward(grad_map, input, target, *ctx.focal)
        return grad, None, None, None

    torch.library.register_autograd(f"{namespace}::sigmoid_loss", backward_loss, setup_context=setup_loss)
    torch.library.register_autograd(f"{namespace}::sigmoid_focal_map", backward_map, setup_context=setup_map)
