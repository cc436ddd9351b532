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

The forward ops (and ``*_stats``) take ``check_target``: check the target's
values in the statistics pass (``fusedloss/_checks.py``, CHECK_TARGETS): a
ValueError on the CPU, a device-side assert on a GPU.
"""

from __future__ import annotations

import torch

from .._spec import group_layout, sigmoid_operands, softmax_operands

SIGMOID_SCHEMAS = {
    "sigmoid_loss": (
        "(Tensor input, Tensor target, Tensor? weight, bool per_sample, bool per_channel, "
        "bool region, float tv_alpha, float tv_beta, float smooth, float region_gamma, float region_weight, "
        "bool elem, float focal_alpha, float focal_gamma, float elem_weight, bool elem_mean, str reduction, "
        "bool check_target) -> (Tensor, Tensor)"
    ),
    "sigmoid_loss_backward": (
        "(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, bool per_sample, bool per_channel, "
        "bool region, bool elem, float focal_alpha, float focal_gamma) -> Tensor"
    ),
    "sigmoid_focal_map": "(Tensor input, Tensor target, float alpha, float gamma, bool check_target) -> Tensor",
    "sigmoid_focal_map_backward": (
        "(Tensor grad_map, Tensor input, Tensor target, float alpha, float gamma) -> Tensor"
    ),
}

SOFTMAX_SCHEMAS = {
    "softmax_loss": (
        "(Tensor input, Tensor target, Tensor? weight, bool per_sample, "
        "bool region, float tv_alpha, float tv_beta, float smooth, float region_gamma, float region_weight, "
        "bool elem, float focal_alpha, float focal_gamma, float elem_weight, bool elem_mean, "
        "int? ignore_index, bool include_background, bool exclude_empty, str reduction, bool check_target) "
        "-> (Tensor, Tensor)"
    ),
    "softmax_loss_backward": (
        "(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, bool per_sample, bool region, bool elem, "
        "float focal_alpha, float focal_gamma, int? ignore_index) -> Tensor"
    ),
    "softmax_focal_map": (
        "(Tensor input, Tensor target, float alpha, float gamma, int? ignore_index, bool check_target) -> Tensor"
    ),
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
        "float focal_alpha, float focal_gamma, bool check_target) -> Tensor"
    ),
    "sigmoid_finalize": (
        "(Tensor sums, Tensor? weight, int num_channels, int group_size, bool region, float tv_alpha, "
        "float tv_beta, float smooth, float region_gamma, float region_weight, bool elem, float elem_weight, "
        "bool elem_mean, str reduction, int[] loss_shape) -> (Tensor, Tensor)"
    ),
    "softmax_stats": (
        "(Tensor input, Tensor target, bool per_sample, bool region, bool elem, float focal_alpha, "
        "float focal_gamma, int? ignore_index, bool check_target) -> (Tensor, Tensor)"
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
                       reduction, check_target):
    layout = group_layout(input.shape, per_sample, per_channel)
    dtype = accumulation_dtype(input)
    loss = input.new_empty(layout.shape if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty((layout.num_groups, 3), dtype=dtype)


def _fake_sigmoid_gradient(grad, input, target, coef, per_sample, per_channel, *args):
    return torch.empty_like(input, memory_format=sigmoid_operands(input, target, per_sample, per_channel)[2])


def _fake_focal_map(input, target, *args):
    return torch.empty_like(input, memory_format=sigmoid_operands(input, target, False, False)[2])


def _fake_softmax_gradient(grad, input, target, *args):
    return torch.empty_like(input, memory_format=softmax_operands(input, target).format)


def _fake_softmax_loss(input, target, weight, per_sample, region, tv_alpha, tv_beta, smooth, region_gamma,
                       region_weight, elem, focal_alpha, focal_gamma, elem_weight, elem_mean, ignore_index,
                       include_background, exclude_empty, reduction, check_target):
    batch, classes = input.shape[0], input.shape[1]
    dtype = accumulation_dtype(input)
    loss = input.new_empty(((batch, classes) if per_sample else (classes,)) if reduction == "none" else (),
                           dtype=dtype)
    return loss, input.new_empty((batch * classes if per_sample else classes, 3), dtype=dtype)


def _fake_softmax_focal_map(input, target, alpha, gamma, ignore_index, check_target):
    return input.new_empty(target.shape)


FAKES = {
    "sigmoid_loss": _fake_sigmoid_loss,
    "sigmoid_loss_backward": _fake_sigmoid_gradient,
    "sigmoid_focal_map": _fake_focal_map,
    "sigmoid_focal_map_backward": lambda grad_map, input, target, *args: _fake_focal_map(input, target),
    "softmax_loss": _fake_softmax_loss,
    "softmax_loss_backward": _fake_softmax_gradient,
    "softmax_focal_map": _fake_softmax_focal_map,
    "softmax_focal_map_backward": _fake_softmax_gradient,
}


def register_fake_and_autograd(namespace: str, families) -> None:
    """Fake kernels and autograd for the ``families`` ops of ``namespace``."""
    for family in families:
        for name in FAMILIES[family]:
            torch.library.register_fake(f"{namespace}::{name}", FAKES[name])
        _register_autograd(namespace, f"{family}_loss", saves_output=True)
        _register_autograd(namespace, f"{family}_focal_map", saves_output=False)


def _register_autograd(namespace: str, forward: str, saves_output: bool) -> None:
    """Autograd of ``forward`` through its ``<forward>_backward`` op, which takes the
    upstream gradient, input, target, (the forward's coefficients output,) then
    forward arguments by name: nothing full-size is saved beyond input and target."""
    ops = getattr(torch.ops, namespace)
    backward_op = getattr(ops, f"{forward}_backward")
    forward_names = [arg.name for arg in getattr(ops, forward).default._schema.arguments]
    backward_names = [arg.name for arg in backward_op.default._schema.arguments]
    passed = backward_names[4 if saves_output else 3:]  # after upstream, input, target (, coef)

    def setup_context(ctx, inputs, output):
        args = dict(zip(forward_names, inputs))
        saved = (args["input"], args["target"]) + ((output[1],) if saves_output else ())
        ctx.save_for_backward(*saved)  # the caller's own tensors and a (groups, 3) tensor
        ctx.passed = [args[name] for name in passed]

    def backward(ctx, upstream, *_unused_output_grads):
        grad = None
        if ctx.needs_input_grad[0]:
            grad = backward_op(upstream, *ctx.saved_tensors, *ctx.passed)
        return (grad,) + (None,) * (len(forward_names) - 1)

    torch.library.register_autograd(f"{namespace}::{forward}", backward, setup_context=setup_context)
