"""What a fused loss computes, independent of any backend: the ``LossSpec``.

Every built-in loss, in both families (binary: sigmoid, binary and multi-label;
multiclass: softmax over class-map targets), is one ``LossSpec``:

    loss_g = region_weight * (1 - TI_g) ** region_gamma  +  elem_scale * E_g

where, over the elements of group g, TI_g = (I + s) / (I + a*(P - I) + b*(T - I) + s)
is the Tversky index of I = sum(p*t), P = sum(p), T = sum(t), and E_g is the sum of
per-element focal losses: binary, alpha_t * (1 - p_t)**gamma * BCE (BCE alone is
gamma = 0 without alpha); multiclass, -alpha (1 - p_y)**gamma log p_y (CE at
gamma = 0). ``elem_scale`` is ``elem_weight / group size`` when ``elem_mean``,
else ``elem_weight``. Per-group losses are multiplied by ``weight[channel]`` and
reduced over groups ('mean' divides by the number of groups, MONAI's convention).

Dice is the Tversky index with a = b = 1/2 and s/2: (I + s/2) / ((P + T)/2 + s/2)
= (2I + s) / (P + T + s); IoU is a = b = 1 with s.

The field names are the op schemas' argument names (``ops/schema.py`` checks
this at import), so a spec is passed to an op by name: ``**spec_arguments(op, spec)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossSpec(NamedTuple):
    """The scalar parameters of one loss (see the module docstring)."""

    region: bool = False  # the Tversky region term is on
    tv_alpha: float = 0.5  # a: weight of false positives
    tv_beta: float = 0.5  # b: weight of false negatives
    smooth: float = 1.0
    region_gamma: float = 1.0  # focal Tversky exponent
    region_weight: float = 1.0
    elem: bool = False  # the per-element focal / BCE / CE term is on
    focal_alpha: float = -1.0  # < 0: no alpha weighting
    focal_gamma: float = 0.0
    elem_weight: float = 1.0
    elem_mean: bool = True  # element sum divided by the group size (or the pixels not ignored)


def tversky_spec(alpha: float, beta: float, smooth: float, gamma: float = 1.0) -> LossSpec:
    return LossSpec(region=True, tv_alpha=alpha, tv_beta=beta, smooth=smooth, region_gamma=gamma)


def dice_spec(smooth: float) -> LossSpec:
    return tversky_spec(0.5, 0.5, smooth / 2)


def iou_spec(smooth: float) -> LossSpec:
    return tversky_spec(1.0, 1.0, smooth)


def dice_bce_spec(smooth: float, dice_weight: float, bce_weight: float) -> LossSpec:
    return dice_spec(smooth)._replace(region_weight=dice_weight, elem=True, elem_weight=bce_weight)


def dice_ce_spec(smooth: float, dice_weight: float, ce_weight: float, reduction: str) -> LossSpec:
    """Multi-class Dice + cross-entropy (focal with gamma = 0, no alpha); 'mean'
    divides the CE sum by the number of pixels not ignored."""
    return dice_spec(smooth)._replace(
        region_weight=dice_weight, elem=True, elem_weight=ce_weight, elem_mean=reduction == "mean"
    )


def focal_spec(alpha: float | None, gamma: float, reduction: str) -> LossSpec:
    return LossSpec(elem=True, focal_alpha=-1.0 if alpha is None else alpha, focal_gamma=gamma,
                    elem_mean=reduction == "mean")


class GroupLayout(NamedTuple):
    """The tensor as ``rows`` contiguous rows of ``row_len`` elements; row r
    belongs to group ``r % num_groups``; the groups' losses have ``shape``."""

    rows: int
    row_len: int
    num_groups: int
    num_channels: int
    shape: tuple


def group_layout(shape, per_sample: bool, per_channel: bool) -> GroupLayout:
    numel = 1
    for size in shape:
        numel *= size
    if per_channel:
        batch, channels = shape[0], shape[1]
        rows = batch * channels
        if per_sample:
            return GroupLayout(rows, numel // rows, rows, channels, (batch, channels))
        return GroupLayout(rows, numel // rows, channels, channels, (channels,))
    if per_sample:
        batch = shape[0]
        return GroupLayout(batch, numel // batch, batch, 1, (batch,))
    return GroupLayout(1, numel, 1, 1, ())


def _dense(tensor) -> bool:
    """Non-overlapping and dense: a permutation of a contiguous layout."""
    expected = 1
    for dim in sorted(range(tensor.dim()), key=tensor.stride):
        if tensor.shape[dim] == 1:
            continue
        if tensor.stride(dim) != expected:
            return False
        expected *= tensor.shape[dim]
    return True


def reads_in_place(input, target, per_sample: bool, per_channel: bool) -> bool:
    """Whether the binary kernels can read input and target as they lie in memory
    (a channels_last or permuted dense layout) instead of a contiguous copy: both
    dense with the same strides, and the groups still contiguous blocks of memory
    (the whole tensor; per_sample: dim 0 outermost; per_channel: the plain layout)."""
    same_strides = all(input.stride(d) == target.stride(d) for d in range(input.dim()) if input.shape[d] > 1)
    if not same_strides or not _dense(input):  # size-1 dims: any stride (an unsqueezed (N, H, W) target)
        return False
    if per_channel:
        return input.is_contiguous()
    if per_sample and input.dim() > 0 and input.shape[0] > 1:
        return input.stride(0) * input.shape[0] == input.numel()
    return True


def binary_operands(input, target, per_sample: bool, per_channel: bool):
    """Input and target as the kernels read them (in memory order), and the
    memory format their outputs take (the input's when read in place)."""
    if reads_in_place(input, target, per_sample, per_channel):
        return input, target, torch.preserve_format
    return input.contiguous(), target.contiguous(), torch.contiguous_format


class MulticlassOperands(NamedTuple):
    """An (N, C, *spatial) input and (N, *spatial) target as the multi-class kernels
    read them: logit (n, c, p) at ``n * strides[0] + c * strides[1] + p * strides[2]``,
    p the flattened spatial index; the target contiguous; ``format``: the gradient's."""

    input: torch.Tensor
    target: torch.Tensor
    strides: tuple
    format: torch.memory_format


def class_strides(input) -> tuple | None:
    """(sample, class, pixel) strides when the multi-class kernels can read ``input``
    where it lies: dense, with its spatial dims one run of equal steps (contiguous,
    channels_last and channels_last_3d, where the classes are innermost); else None."""
    if not _dense(input):
        return None
    pixel, expected = None, None
    for dim in reversed(range(2, input.dim())):
        if input.shape[dim] == 1:
            continue
        if pixel is None:
            pixel = input.stride(dim)
        elif input.stride(dim) != expected:
            return None
        expected = input.stride(dim) * input.shape[dim]
    return input.stride(0), input.stride(1), 1 if pixel is None else pixel


def multiclass_operands(input, target) -> MulticlassOperands:
    strides = class_strides(input)
    if strides is not None:
        return MulticlassOperands(input, target.contiguous(), strides, torch.preserve_format)
    input = input.contiguous()  # (N, C, S) in order: pixel stride 1
    return MulticlassOperands(
        input, target.contiguous(), (input.stride(0), input.stride(1), 1), torch.contiguous_format
    )
