"""What a fused loss computes, independent of any backend: the ``LossSpec``.

Every built-in loss, in both families (binary: sigmoid, binary and multi-label;
multiclass: softmax over class-map targets), is one ``LossSpec``:

    loss_g = region_weight * R(TI_g)  +  elem_scale * E_g

over the elements of group g, with p the probabilities (sigmoid / softmax of the
input, or the input itself when ``from_logits`` is False):

  TI_g = (I + smooth_nr) / (I + a*(P - I) + b*(T - I) + smooth_dr), the Tversky index
       of I = sum(p*t), P = sum(p), T = sum(t) (``squared_pred``: P = sum(p**2),
       T = sum(t**2), V-Net's denominator; ``min_intersection``: I = sum(min(p, t)), smp's and
       MONAI's soft_label intersection, the same for hard targets; binary family only);
  R = (1 - TI) ** region_gamma, or with ``log_loss`` -log(max(TI, 1e-7)) (smp's);
  E_g = the sum of per-element focal losses: binary, alpha_t * (1 - p_t)**gamma * BCE
       (BCE alone is gamma = 0 without alpha); multiclass, -alpha (1 - p_y)**gamma
       log p_y (CE at gamma = 0). The BCE is on logits (softplus, exact in the
       tails) unless ``clamped_log``: then it is F.binary_cross_entropy of p, each
       log clamped at -100, and its gradient torch's (p - t) / max(p (1 - p), 1e-12)
       (always so for probability inputs; with a sigmoid it is the tutorial's
       F.binary_cross_entropy(torch.sigmoid(x)), p = 1 / (1 + exp(-x)) rounded as torch does).
       ``elem_scale`` is ``elem_weight / group size`` when ``elem_mean``, else ``elem_weight``.
       ``focal_form`` (binary, logits only) swaps the focal factor (1 - p_t)**gamma for
       smp's (1 - exp(-BCE))**gamma (1) or MONAI's sigmoid(-x (2t - 1))**gamma (2): the same
       for hard targets, not for soft ones; gamma = 0 is BCE in every form.

Per-group losses are multiplied by ``weight[channel]`` and reduced over groups
('mean' divides by the number of groups, MONAI's convention).

Dice is the Tversky index with a = b = 1/2 and halved smoothing:
(I + n/2) / ((P + T)/2 + d/2) = (2I + n) / (P + T + d); IoU is a = b = 1.
An undefined index (denominator <= 0: nothing predicted, nothing to find and
smooth_dr = 0) scores as a perfect match.

The field names are the op schemas' argument names (``ops/schema.py`` checks
this at import), so a spec is passed to an op by name: ``**spec_arguments(op, spec)``;
the loss ops take it whole, in field order (``LOSS_OP_LAYOUT``), so the losses pass
it by position: ``op(input, target, ..., *spec, ...)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossSpec(NamedTuple):
    """The scalar parameters of one loss (see the module docstring)."""

    region: bool = False  # the Tversky region term is on
    tv_alpha: float = 0.5  # a: weight of false positives
    tv_beta: float = 0.5  # b: weight of false negatives
    smooth_nr: float = 1.0  # added to the index's numerator
    smooth_dr: float = 1.0  # added to its denominator
    region_gamma: float = 1.0  # focal Tversky exponent
    region_weight: float = 1.0
    log_loss: bool = False  # R = -log(max(TI, 1e-7)) instead of (1 - TI) ** region_gamma
    squared_pred: bool = False  # P = sum(p**2), T = sum(t**2)
    min_intersection: bool = False  # I = sum(min(p, t)) instead of sum(p * t) (smp's, MONAI's soft_label)
    elem: bool = False  # the per-element focal / BCE / CE term is on
    focal_alpha: float = -1.0  # < 0: no alpha weighting
    focal_gamma: float = 0.0
    # The binary focal factor f for soft targets (all agree on hard ones): 0, Lin et al.'s and
    # torchvision's (1 - p_t)**gamma; 1, smp's (1 - exp(-BCE))**gamma; 2, MONAI's
    # sigmoid(-x (2t - 1))**gamma. 1 and 2: binary family, logits (from_logits, not clamped_log).
    focal_form: int = 0
    elem_weight: float = 1.0
    elem_mean: bool = True  # element sum divided by the elements (pixels) counted: not ignored
    label_smoothing: float = 0.0  # multiclass CE: targets t (1 - eps) + eps / C (F.cross_entropy's)
    weighted_mean: bool = False  # multiclass class maps: the mean divides by sum of class_weight[y], not the count
    from_logits: bool = True  # False: the input holds probabilities (activation='none')
    clamped_log: bool = False  # element terms from log p, log(1 - p) clamped at -100


MIN_INTERSECTION_SQUARED = "fusedloss: min_intersection (I = sum(min(p, t))) does not combine with squared_pred"
MIN_INTERSECTION_MULTICLASS = (
    "fusedloss: min_intersection (I = sum(min(p, t))) is implemented for the binary family only, not for "
    "multi-class losses"
)


def check_min_intersection(squared_pred: bool, min_intersection: bool, multiclass: bool = False) -> None:
    """min_intersection: binary family only, and not with squared_pred (ValueError)."""
    if min_intersection and multiclass:
        raise ValueError(MIN_INTERSECTION_MULTICLASS)
    if min_intersection and squared_pred:
        raise ValueError(MIN_INTERSECTION_SQUARED)


FOCAL_FORMS = (0, 1, 2)  # Lin et al. / torchvision, smp, MONAI
FOCAL_FORM_LOGITS = (
    "fusedloss: focal_form 1 (smp) and 2 (MONAI) take logits (from_logits=True, clamped_log=False)"
)
FOCAL_FORM_MULTICLASS = (
    "fusedloss: focal_form 1 (smp) and 2 (MONAI) are implemented for the binary family only, not for multi-class "
    "losses"
)


def check_focal_form(focal_form: int, from_logits: bool, clamped_log: bool, multiclass: bool = False) -> None:
    """focal_form: 0, 1 or 2; 1 and 2 binary family only, on logits (ValueError)."""
    if focal_form not in FOCAL_FORMS:
        raise ValueError(f"fusedloss: focal_form must be 0 (torchvision), 1 (smp) or 2 (MONAI), got {focal_form!r}")
    if focal_form and multiclass:
        raise ValueError(FOCAL_FORM_MULTICLASS)
    if focal_form and (not from_logits or clamped_log):
        raise ValueError(f"{FOCAL_FORM_LOGITS}, got from_logits={from_logits}, clamped_log={clamped_log}")


def activation_spec(activation: str) -> dict:
    """The spec fields of a public ``activation`` ('sigmoid', 'softmax' or 'none')."""
    if activation == "none":
        return dict(from_logits=False, clamped_log=True)
    return dict(from_logits=True, clamped_log=False)


def tversky_spec(alpha: float, beta: float, smooth_nr: float, smooth_dr: float, gamma: float = 1.0,
                 **options) -> LossSpec:
    """``options``: other LossSpec fields (log_loss, squared_pred, from_logits, ...)."""
    return LossSpec(region=True, tv_alpha=alpha, tv_beta=beta, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                    region_gamma=gamma, **options)


def dice_spec(smooth_nr: float, smooth_dr: float, **options) -> LossSpec:
    return tversky_spec(0.5, 0.5, smooth_nr / 2, smooth_dr / 2, **options)


def iou_spec(smooth_nr: float, smooth_dr: float, **options) -> LossSpec:
    return tversky_spec(1.0, 1.0, smooth_nr, smooth_dr, **options)


def dice_elem_spec(smooth_nr: float, smooth_dr: float, dice_weight: float, elem_weight: float,
                   alpha: float | None = None, gamma: float = 0.0, elem_mean: bool = True, **options) -> LossSpec:
    """Dice + an element term (BCE or CE at gamma = 0 without alpha; focal otherwise)."""
    return dice_spec(smooth_nr, smooth_dr, **options)._replace(
        region_weight=dice_weight, elem=True, elem_weight=elem_weight, focal_alpha=-1.0 if alpha is None else alpha,
        focal_gamma=gamma, elem_mean=elem_mean)


def focal_spec(alpha: float | None, gamma: float, reduction: str, **options) -> LossSpec:
    return LossSpec(elem=True, focal_alpha=-1.0 if alpha is None else alpha, focal_gamma=gamma,
                    elem_mean=reduction == "mean", **options)


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


# The layout helpers read a tensor's shape and strides once (each Tensor.stride(dim) call is a
# torch call of its own): they run on every call of a Triton launcher and its fake kernel.


def _dense(tensor) -> bool:
    """Non-overlapping and dense: a permutation of a contiguous layout."""
    return _dense_layout(tensor.shape, tensor.stride())


def _dense_layout(shape, strides) -> bool:
    expected = 1
    for dim in sorted(range(len(shape)), key=strides.__getitem__):
        if shape[dim] == 1:
            continue
        if strides[dim] != expected:
            return False
        expected *= shape[dim]
    return True


def _same_strides(shape, strides, target) -> bool:
    """Whether ``target`` has the strides ``strides`` in every dim of ``shape`` longer than 1."""
    target_strides = target.stride()
    if len(target_strides) < len(shape):  # a malformed call: fail as Tensor.stride(dim) fails
        return all(strides[d] == target.stride(d) for d in range(len(shape)) if shape[d] > 1)
    return all(strides[d] == target_strides[d] for d in range(len(shape)) if shape[d] > 1)


def reads_in_place(input, target, per_sample: bool, per_channel: bool) -> bool:
    """Whether the binary kernels can read input and target as they lie in memory
    (a channels_last or permuted dense layout) instead of a contiguous copy: both
    dense with the same strides, and the groups still contiguous blocks of memory
    (the whole tensor; per_sample: dim 0 outermost; per_channel: the plain layout)."""
    shape, strides = input.shape, input.stride()
    # size-1 dims: any stride (an unsqueezed (N, H, W) target)
    if not _same_strides(shape, strides, target) or not _dense_layout(shape, strides):
        return False
    if per_channel:
        return input.is_contiguous()
    if per_sample and len(shape) > 0 and shape[0] > 1:
        return strides[0] * shape[0] == input.numel()
    return True


def binary_operands(input, target, per_sample: bool, per_channel: bool):
    """Input and target as the kernels read them (in memory order), and the
    memory format their outputs take (the input's when read in place)."""
    if reads_in_place(input, target, per_sample, per_channel):
        return input, target, torch.preserve_format
    return input.contiguous(), target.contiguous(), torch.contiguous_format


class MulticlassOperands(NamedTuple):
    """An (N, C, *spatial) input and its target as the multi-class kernels read them: logit
    (n, c, p) at ``n * strides[0] + c * strides[1] + p * strides[2]``, p the flattened spatial
    index; a class map (N, *spatial) contiguous, a dense target (N, C, *spatial) with the
    input's strides (``dense``); ``format``: the gradient's."""

    input: torch.Tensor
    target: torch.Tensor
    strides: tuple
    format: torch.memory_format
    dense: bool


def class_strides(input) -> tuple | None:
    """(sample, class, pixel) strides when the multi-class kernels can read ``input``
    where it lies: dense, with its spatial dims one run of equal steps (contiguous,
    channels_last and channels_last_3d, where the classes are innermost); else None."""
    shape, strides = input.shape, input.stride()
    if not _dense_layout(shape, strides):
        return None
    pixel, expected = None, None
    for dim in reversed(range(2, len(shape))):
        if shape[dim] == 1:
            continue
        if pixel is None:
            pixel = strides[dim]
        elif strides[dim] != expected:
            return None
        expected = strides[dim] * shape[dim]
    return strides[0], strides[1], 1 if pixel is None else pixel


def is_dense_target(input, target) -> bool:
    """A multi-class target of per-class values (N, C, *spatial), not a class map (N, *spatial)."""
    return target.dim() == input.dim()


def multiclass_operands(input, target) -> MulticlassOperands:
    dense = is_dense_target(input, target)
    strides = class_strides(input)
    same_strides = not dense or _same_strides(input.shape, input.stride(), target)
    if strides is not None and same_strides:
        return MulticlassOperands(input, target if dense else target.contiguous(), strides, torch.preserve_format,
                                  dense)
    input = input.contiguous()  # (N, C, S) in order: pixel stride 1
    return MulticlassOperands(input, target.contiguous(), (input.stride(0), input.stride(1), 1),
                              torch.contiguous_format, dense)
