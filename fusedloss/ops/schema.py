"""The fused ops' schemas, fake (meta) kernels and autograd, written once for
every backend that implements them.

A backend supplies the four ops of the sigmoid family under its own
namespace: the Triton backend defines them from Python (``triton_ops.py``);
a C++ backend defines them with TORCH_LIBRARY and only needs
``register_fake_and_autograd`` from here.

  sigmoid_loss            forward: (loss, coef); coef = per-group backward coefficients
  sigmoid_loss_backward   gradient w.r.t. input from grad_loss and coef
  sigmoid_focal_map       per-element focal loss (reduction='none')
  sigmoid_focal_map_backward
"""

from __future__ import annotations

import torch

from .._spec import group_layout

SCHEMAS = {
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


def accumulation_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _fake_sigmoid_loss(input, target, weight, per_sample, per_channel, region, tv_alpha, tv_beta, smooth,
                       region_gamma, region_weight, elem, focal_alpha, focal_gamma, elem_weight, elem_mean,
                       reduction):
    layout = group_layout(input.shape, per_sample, per_channel)
    dtype = accumulation_dtype(input)
    loss = input.new_empty(layout.shape if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty((layout.num_groups, 3), dtype=dtype)


def _fake_gradient(grad, input, *args):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _fake_focal_map(input, target, alpha, gamma):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def register_fake_and_autograd(namespace: str) -> None:
    ops = getattr(torch.ops, namespace)

    torch.library.register_fake(f"{namespace}::sigmoid_loss", _fake_sigmoid_loss)
    torch.library.register_fake(f"{namespace}::sigmoid_loss_backward", _fake_gradient)
    torch.library.register_fake(f"{namespace}::sigmoid_focal_map", _fake_focal_map)
    torch.library.register_fake(f"{namespace}::sigmoid_focal_map_backward", _fake_gradient)

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
