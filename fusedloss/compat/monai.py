"""MONAI's loss classes, with their signatures and their numbers, on the fused statistics.

Swap the import and the loss and its input gradient stay MONAI 1.6's (to fp32 rounding):

    from fusedloss.compat.monai import DiceCELoss

``DiceLoss``, ``GeneralizedDiceLoss``, ``TverskyLoss``, ``DiceCELoss``, ``DiceFocalLoss`` and
``FocalLoss`` take MONAI's constructor arguments and defaults, raise its errors for invalid
combinations (same exception types and messages), and add one keyword-only ``backend='auto'``.
monai is not imported: its formulas are written here on the per-group sums of
``fusedloss.ops.sums`` (I = sum p t, P = sum p, T = sum t, E = sum of element losses, the
elements counted), which one fused pass computes and whose gradient autograd turns into the
fused backward. NaN where MONAI gives NaN (smooth_dr=0 and an empty class: 0/0).

What runs where. "Fused": the statistics pass reads logits and target once, no full-size
temporary. "Eager, then fused": the named step runs in PyTorch (a full-size tensor), the sums
fused. "Eager": MONAI's definition in plain PyTorch (written here).

Region losses (DiceLoss, GeneralizedDiceLoss, TverskyLoss, the Dice part of DiceCE / DiceFocal):

- ``sigmoid=True``: fused, binary family, one group per (sample, class) (``batch=True``: per class).
- ``softmax=True`` (C > 1): fused, multi-class family; a label map (``to_onehot_y``) is passed as
  a class map, never one-hot encoded (a float map is cast to int64 first). With one channel MONAI
  ignores softmax (and warns): so do we, activation none.
- ``other_act`` / no activation: eager, then fused: ``other_act`` is applied in PyTorch, the sums
  fused on its output as probabilities.
- ``to_onehot_y`` with a sigmoid / none / other_act: eager, then fused: a uint8 one-hot target.
- ``include_background=False``: fused: class 0 is dropped in the formula on the sums (after the
  activation, as MONAI; the softmax still runs over all classes).
- ``squared_pred``, ``jaccard``, ``batch``, ``smooth_nr``, ``smooth_dr``, ``weight``, ``w_type``,
  every ``reduction`` (MONAI's output shapes), Tversky's ``alpha`` / ``beta``: fused (formulas).
- ``soft_label=True``: the same as False for hard targets (label maps, bool / integer targets:
  fused); with a float target and a sigmoid or softmax, I = sum min(p, t) (the min_intersection
  kernels): fused with a sigmoid; with a softmax, eager softmax, then fused (the multi-class
  kernels have no min_intersection); with ``other_act`` / no activation (p may be negative:
  MONAI's |p| norms): eager.
  With ``squared_pred`` it is the squared form (MONAI's ord-2 norms equal it): fused.
- ``ignore_index`` with a label map: fused (pixels holding it count nowhere; a class index in
  [0, C) is first replaced by -1 in an int64 copy of the map). With a dense target: eager, then
  fused: MONAI's create_ignore_mask (a class index masks the pixels where that channel is 1, any
  other value the all-zero pixels) multiplies the activated input and the target in PyTorch;
  one channel and a value other than 0 / 1 that the target can hold: fused (the elements
  holding it are ignored).

FocalLoss (and DiceFocal's focal part, a sigmoid focal loss on the logits even when the Dice
part uses a softmax). As MONAI, it computes in fp32 (an fp64 input is cast to fp32 first):

- ``use_softmax=False``, ``reduction`` 'mean' / 'sum': fused, soft targets included: the kernels
  take MONAI's focusing factor exp(gamma logsigmoid(-x (2t - 1))) (``focal_form``; it differs
  from Lin's (1 - p_t)**gamma on soft targets); scalar ``alpha`` and ``weight`` fused,
  ``include_background=False`` dropped on the per-(sample, class) sums. Eager: per-class
  ``alpha`` (applied where t == 1 only).
- ``use_softmax=True``, 'mean' / 'sum': fused, multi-class family on the logits (class map or
  dense target); alpha ([1 - a, a, ...] or per class) and ``weight`` as per-class factors;
  ``include_background=False`` drops channel 0 before the softmax, as MONAI (a copy of the
  other channels; label 0 becomes ignored, the mean's denominator still counts those pixels).
  Eager: one channel, and 'sum' with ``ignore_index`` (a per-sample denominator).
- ``ignore_index``: label maps and one-channel targets fused as above; dense targets eager.
- ``reduction='none'`` (the per-element map): eager.

DiceCELoss: with ``softmax=True`` the Dice sums and the cross-entropy (``weight``,
``label_smoothing``, F.cross_entropy's weighted mean) come from one fused multi-class pass; with
another activation the cross-entropy is a second fused pass (no region term). One channel:
BCE with logits, fused (with the sigmoid Dice: one pass), except ``weight`` (BCE's pos_weight):
eager. 'none' is rejected, as MONAI.

DiceFocalLoss: sigmoid Dice and a fusable focal part: one fused binary pass; otherwise two
(softmax Dice: multi-class; focal: binary), or eager parts as listed above; 'none': Dice (B, C,
1, ...) + the focal map (eager), broadcast as MONAI.

Nothing raises NotImplementedError: every option is fused or computed in PyTorch as listed.
Targets must hold values in [0, 1] (label maps: class indices), as the fused kernels check.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._spec import LossSpec, activation_spec
from ..functional import Backend
from ..ops.sums import binary_sums, multiclass_sums

_REDUCTIONS = ("none", "mean", "sum")
MONAI_FOCAL_FORM = 2  # LossSpec.focal_form: MONAI's sigmoid focusing factor exp(gamma logsigmoid(-x (2t - 1)))
_WEIGHT_TYPES = ("square", "simple", "uniform")


# ---- MONAI's argument checks ----


def _reduction(value, allowed=_REDUCTIONS) -> str:
    value = getattr(value, "value", value)  # a LossReduction member
    if value not in allowed:
        raise ValueError(f"Unsupported option '{value}', available options are {list(allowed)}.")
    return value


def _activation(sigmoid: bool, softmax: bool, other_act) -> None:
    if other_act is not None and not callable(other_act):
        raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
    if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
        raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")


def _non_negative(**lambdas) -> None:
    for name, value in lambdas.items():
        if value < 0.0:
            raise ValueError(f"{name} should be no less than 0.0.")


def _pair(input, target) -> None:
    """DiceCE's and DiceFocal's shape checks."""
    if input.dim() != target.dim():
        raise ValueError(
            "the number of dimensions for input and target should be the same, "
            f"got shape {input.shape} (nb dims: {len(input.shape)}) and {target.shape} (nb dims: {len(target.shape)}). "
            "if target is not one-hot encoded, please provide a tensor with shape B1H[WD]."
        )
    if target.shape[1] != 1 and target.shape[1] != input.shape[1]:
        raise ValueError(
            "number of channels for target is neither 1 (without one-hot encoding) nor the same as input, "
            f"got shape {input.shape} and {target.shape}."
        )


def _warn_single_channel(option: str) -> None:
    warnings.warn(f"single channel prediction, `{option}` ignored.", stacklevel=3)


def _as_weight(weight):
    """MONAI's ``torch.as_tensor(weight)`` buffer, and whether it holds a negative value (checked
    here, on the host, so forward raises MONAI's error without a device sync)."""
    if weight is None:
        return None, False
    weight = torch.as_tensor(weight)
    return weight, bool((weight < 0).any())


# ---- MONAI's definitions, eager (the paths the fused sums cannot take) ----


def _one_hot(labels: torch.Tensor, classes: int, dtype=torch.float32) -> torch.Tensor:
    """monai.networks.one_hot of a (B, 1, *S) label map."""
    if labels.shape[1] != 1:
        raise AssertionError("labels should have a channel with length equal to one.")
    shape = list(labels.shape)
    shape[1] = classes
    return torch.zeros(shape, dtype=dtype, device=labels.device).scatter_(1, labels.long(), 1)


def _ignore_mask(target: torch.Tensor, ignore_index) -> torch.Tensor | None:
    """monai.metrics.utils.create_ignore_mask: (B, 1, *S), 1 = kept."""
    if ignore_index is None:
        return None
    if target.shape[1] == 1:
        return (target != ignore_index).float()
    if 0 <= ignore_index < target.shape[1]:
        return 1.0 - target[:, ignore_index : ignore_index + 1]
    return (target.sum(dim=1, keepdim=True) > 0).float()


def _onehot_target(target, classes, ignore_index, dtype=torch.float32):
    """MONAI's to_onehot_y: an out-of-range ignore_index becomes 0 before one_hot."""
    if ignore_index is not None and (ignore_index < 0 or ignore_index >= classes):
        target = torch.where(target == ignore_index, torch.zeros_like(target), target)
    return _one_hot(target, classes, dtype)


def _tp_fp_fn_definition(p, t, axes, ord: int, soft_label: bool):
    """monai.losses.utils.compute_tp_fp_fn (decoupled) for ord 1 with soft labels: the vector norms."""
    pred = torch.linalg.vector_norm(p, ord=ord, dim=axes)
    ground = torch.linalg.vector_norm(t, ord=ord, dim=axes)
    difference = torch.linalg.vector_norm(p - t, ord=ord, dim=axes)
    if ord > 1:
        pred, ground, difference = pred**ord, ground**ord, difference**ord
    tp = (pred + ground - difference) / 2
    return tp, pred - tp, ground - tp


def _sigmoid_focal_definition(x, t, gamma, alpha):
    loss = x - x * t - F.logsigmoid(x)
    loss = torch.exp(F.logsigmoid(-x * (t * 2 - 1)) * gamma) * loss
    if alpha is None:
        return loss
    alpha = torch.as_tensor(alpha, device=x.device, dtype=x.dtype)
    if alpha.ndim == 0:
        return (t * alpha + (1 - t) * (1 - alpha)) * loss
    if alpha.shape[0] != t.shape[1]:
        raise ValueError(f"The length of alpha ({alpha.shape[0]}) must match the number of classes ({t.shape[1]}).")
    alpha = alpha.view([-1] + [1] * (t.dim() - 2))
    return torch.where(t == 1, alpha, torch.ones_like(alpha)) * loss


def _softmax_focal_definition(x, t, gamma, alpha):
    log_p = x.log_softmax(1)
    loss = -(1 - log_p.exp()).pow(gamma) * log_p * t
    if alpha is None:
        return loss
    factor = _softmax_alpha(alpha, t.shape[1], x)
    return factor.view([-1] + [1] * (t.dim() - 2)) * loss


def _softmax_alpha(alpha, classes: int, like: torch.Tensor) -> torch.Tensor:
    """The softmax focal loss's per-class alpha: a scalar a is [1 - a, a, a, ...]."""
    if isinstance(alpha, torch.Tensor) and alpha.ndim > 0:
        if alpha.shape[0] != classes:
            raise ValueError(f"The length of alpha ({alpha.shape[0]}) must match the number of classes ({classes}).")
        return alpha.to(device=like.device, dtype=like.dtype)
    alpha = float(alpha)
    return torch.tensor([1 - alpha] + [alpha] * (classes - 1), device=like.device, dtype=like.dtype)


def _focal_weight(loss_classes: int, weight, weight_negative: bool):
    """FocalLoss's class_weight checks (MONAI's messages); the weight or None."""
    if weight is None:
        return None
    if weight.ndim > 0:
        if loss_classes == 1:
            raise ValueError("Per-class class_weight is not supported for single-channel outputs.")
        if weight.numel() != loss_classes:
            raise ValueError(
                f"The number of class_weight ({weight.numel()}) must match the number of "
                f"output channels ({loss_classes})."
            )
    if weight_negative:
        raise ValueError("class_weight values must be non-negative.")
    return weight


def _focal_eager(focal: FocalLoss, input, target) -> torch.Tensor:
    """MONAI's FocalLoss.forward, in PyTorch."""
    classes = input.shape[1]
    original_target = target
    if focal.to_onehot_y and classes > 1:
        target = _onehot_target(target, classes, focal.ignore_index)
    if not focal.include_background and classes > 1:
        target, input = target[:, 1:], input[:, 1:]
    mask = _ignore_mask(original_target, focal.ignore_index)
    if target.shape != input.shape:
        raise ValueError(f"ground truth has different shape ({target.shape}) from input ({input.shape})")
    if mask is not None:
        input, target = input * mask, target * mask
    input, target = input.float(), target.float()
    if focal.use_softmax:
        loss = _softmax_focal_definition(input, target, focal.gamma, _softmax_alpha_argument(focal, classes))
    else:
        loss = _sigmoid_focal_definition(input, target, focal.gamma, focal.alpha)
    if mask is not None:
        loss = loss * mask
    weight = _focal_weight(loss.shape[1], focal.class_weight, focal._weight_negative)
    if weight is not None:
        weight = weight.to(device=loss.device, dtype=loss.dtype)
        loss = loss * (weight if weight.ndim == 0 else weight.view([1, -1] + [1] * (loss.dim() - 2)))
    spatial = list(range(2, loss.dim()))
    if focal.reduction == "sum":
        if mask is not None:
            per_class = loss.sum(spatial, keepdim=True) / mask.sum(spatial, keepdim=True).clamp(
                min=torch.finfo(mask.dtype).eps)
        else:
            per_class = loss.mean(spatial)
        return per_class.sum()
    if focal.reduction == "mean":
        return loss.sum() / mask.sum().clamp(min=torch.finfo(mask.dtype).eps) if mask is not None else loss.mean()
    return loss


def _softmax_alpha_argument(focal: FocalLoss, classes: int):
    """MONAI ignores a scalar alpha (and warns) for a softmax focal loss without the background."""
    if focal.alpha is not None and not focal.include_background and classes > 1 and not isinstance(
            focal.alpha, torch.Tensor):
        warnings.warn("`include_background=False`, scalar `alpha` ignored when using softmax.", stacklevel=3)
        return None
    return focal.alpha


# ---- the statistics: what the fused pass reads, and the per-group sums ----


class _Plan(NamedTuple):
    """How one call's region sums are computed: ``family`` 'multiclass' (softmax on the logits),
    'binary' (sigmoid on the logits, or ``input`` already probabilities: ``from_logits``) or
    'definition' (MONAI's norms, eager); ``target`` as that family reads it."""

    family: str
    act: object  # the activation still to apply ('definition') or applied
    input: torch.Tensor
    target: torch.Tensor
    from_logits: bool
    ignore_index: int | None
    min_intersection: bool


class _Sums(NamedTuple):
    """Per group ((B, C), or (C,) with batch; every class): MONAI's tp, fp, fn, the target sum
    (GDL's weights), and the element term's sum and elements counted (None when not asked)."""

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    ground: torch.Tensor
    element: torch.Tensor | None = None
    count: torch.Tensor | None = None


def _fits(value: int, dtype: torch.dtype) -> bool:
    if dtype.is_floating_point:
        return True
    info = torch.iinfo(dtype)
    return info.min <= value <= info.max


def _class_map(target: torch.Tensor, classes: int, ignore_index):
    """A (B, 1, *S) label map as the multi-class family reads it: (B, *S) integers, and the
    ignore_index to pass (a class index is first replaced by -1, outside [0, C))."""
    labels = target.squeeze(1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        labels = labels.long()  # MONAI's one_hot casts with .long() too
    if ignore_index is None:
        return labels, None
    if 0 <= ignore_index < classes:
        return torch.where(labels == ignore_index, -1, labels.long()), -1
    return labels, ignore_index if _fits(ignore_index, labels.dtype) else None


def _uint8_one_hot(target: torch.Tensor, classes: int, ignore_index):
    """A (B, 1, *S) label map as a (B, C, *S) uint8 one-hot (the binary family's target), 255
    at ignored pixels in every channel; and the ignore_index to pass."""
    labels = target.long()
    ignored = None if ignore_index is None else labels == ignore_index
    if ignored is not None:
        labels = labels.masked_fill(ignored, 0)
    one_hot = _one_hot(labels, classes, torch.uint8)
    if ignored is None:
        return one_hot, None
    return one_hot.masked_fill_(ignored, 255), 255


def _activated(input, act):
    """p in PyTorch: act is 'sigmoid', 'softmax', 'none' or a callable."""
    if act == "sigmoid":
        return torch.sigmoid(input)
    if act == "softmax":
        return torch.softmax(input, 1)
    if callable(act):
        return act(input)
    return input


def _plan(input, target, act, *, to_onehot_y=False, ignore_index=None, soft_label=False,
          squared_pred=False) -> _Plan:
    """Route one call (see the module docstring); ``act`` as in ``_activated``."""
    classes = input.shape[1]
    if act == "softmax" and classes == 1:
        _warn_single_channel("softmax=True")
        act = "none"
    label_map = to_onehot_y and classes > 1
    if to_onehot_y and classes == 1:
        _warn_single_channel("to_onehot_y=True")
    if label_map and target.shape[1] != 1:
        raise AssertionError("labels should have a channel with length equal to one.")
    expected = input.shape[:1] + (1,) + input.shape[2:] if label_map else input.shape
    if target.shape != expected:
        raise AssertionError(f"ground truth has different shape ({target.shape}) from input ({input.shape})")
    hard = label_map or not target.is_floating_point()
    soft = soft_label and not squared_pred and not hard  # I = sum min(p, t), MONAI's ord-1 norms
    if soft_label and not squared_pred and act not in ("sigmoid", "softmax"):
        return _Plan("definition", act, input, target, False, ignore_index, False)  # p may be negative: |p|
    if not target.is_floating_point() and target.dtype not in (torch.bool, torch.uint8) and not label_map:
        target = target.to(torch.uint8)
    if ignore_index is not None and not label_map:
        direct = (classes == 1 and ignore_index not in (0, 1) and target.dtype != torch.bool
                  and _fits(ignore_index, target.dtype))
        if not direct:
            # MONAI's mask multiplies the activated input and the target (a dense target).
            mask = _ignore_mask(target, ignore_index)
            p = _activated(input, act) * mask
            return _Plan("binary", act, p, target * mask, False, None, soft)
    if act == "softmax" and not soft:
        if label_map:
            labels, index = _class_map(target, classes, ignore_index)
            return _Plan("multiclass", act, input, labels, True, index, False)
        return _Plan("multiclass", act, input, target, True, None, False)
    if act == "softmax" or callable(act):
        input, from_logits = _activated(input, act), False  # the fused pass reads the probabilities
    else:
        from_logits = act == "sigmoid"
    if label_map:
        target, index = _uint8_one_hot(target, classes, ignore_index)
        return _Plan("binary", act, input, target, from_logits, index, soft)
    return _Plan("binary", act, input, target, from_logits, ignore_index, soft)


def _statistics(plan: _Plan, *, batch: bool, squared_pred=False, soft_label=False, region=True,
                elem: dict | None = None, class_weight=None, backend: Backend = "auto") -> _Sums:
    """The per-group sums of ``plan`` (one fused pass), with the element term ``elem`` (LossSpec
    fields) when given."""
    input, classes = plan.input, plan.input.shape[1]
    shape = (classes,) if batch else (input.shape[0], classes)
    if plan.family == "definition":
        return _definition_sums(plan, batch, soft_label, squared_pred)
    spec = LossSpec(region=region, squared_pred=squared_pred, **activation_spec("sigmoid" if plan.from_logits
                                                                                 else "none"), **(elem or {}))
    if plan.min_intersection:
        spec = spec._replace(min_intersection=True)
    if plan.family == "multiclass":
        class_sums, (element, count) = multiclass_sums(input, plan.target, spec, class_weight=class_weight,
                                                       per_sample=not batch, ignore_index=plan.ignore_index,
                                                       backend=backend)
        intersection, predicted, actual = class_sums.reshape(*shape, 3).unbind(-1)
    else:
        sums = binary_sums(input, plan.target, spec, per_sample=not batch, per_channel=True,
                           ignore_index=plan.ignore_index, backend=backend)
        intersection, predicted, actual, element, count = sums.reshape(*shape, 5).unbind(-1)
    return _Sums(intersection, predicted - intersection, actual - intersection, actual, element, count)


def _definition_sums(plan: _Plan, batch, soft_label, squared_pred) -> _Sums:
    """MONAI's compute_tp_fp_fn on the activated, one-hot, masked tensors (eager)."""
    input, target = plan.input, plan.target
    classes = input.shape[1]
    p = _activated(input, plan.act)
    original_target = target
    if target.shape[1] != classes:
        target = _onehot_target(target, classes, plan.ignore_index)
    mask = _ignore_mask(original_target, plan.ignore_index)
    if mask is not None:
        p, target = p * mask, target * mask
    axes = ([0] if batch else []) + list(range(2, input.dim()))
    tp, fp, fn = _tp_fp_fn_definition(p, target, axes, 2 if squared_pred else 1, soft_label)
    return _Sums(tp, fp, fn, target.sum(axes))


def _drop_background(sums: _Sums, include_background: bool, classes: int) -> _Sums:
    """MONAI's ``input[:, 1:]`` after the activation, on the sums (one-channel inputs keep it)."""
    if include_background:
        return sums
    if classes == 1:
        _warn_single_channel("include_background=False")
        return sums
    return _Sums(*(value[..., 1:] if value is not None and value.dim() else value for value in sums))


def _act(sigmoid: bool, softmax: bool, other_act):
    return "sigmoid" if sigmoid else "softmax" if softmax else other_act if other_act is not None else "none"


# ---- MONAI's formulas on the sums ----


def dice_formula(sums: _Sums, jaccard: bool, smooth_nr: float, smooth_dr: float) -> torch.Tensor:
    """DiceLoss: 1 - (2 tp + s_nr) / (2 (tp + fp + fn) + s_dr), fp and fn halved unless jaccard."""
    fp, fn = (sums.fp, sums.fn) if jaccard else (sums.fp * 0.5, sums.fn * 0.5)
    return 1 - (2 * sums.tp + smooth_nr) / (2 * (sums.tp + fp + fn) + smooth_dr)


def tversky_formula(sums: _Sums, alpha: float, beta: float, smooth_nr: float, smooth_dr: float) -> torch.Tensor:
    """TverskyLoss: 1 - (tp + s_nr) / (tp + alpha fp + beta fn + s_dr)."""
    return 1.0 - (sums.tp + smooth_nr) / (sums.tp + sums.fp * alpha + sums.fn * beta + smooth_dr)


def generalized_dice_formula(sums: _Sums, w_type: str, batch: bool, smooth_nr: float, smooth_dr: float):
    """GeneralizedDiceLoss: 1 - (2 sum_c w_c tp_c + s_nr) / (sum_c w_c (2 tp + fp + fn)_c + s_dr), w of the
    target sums in fp32 (MONAI's ``.float()``); an infinite weight takes the largest finite one."""
    ground = sums.ground.detach().float()
    w = 1.0 / ground if w_type == "simple" else 1.0 / (ground * ground) if w_type == "square" else torch.ones_like(
        ground)
    infinite = torch.isinf(w)
    w = torch.where(infinite, 0.0, w)
    w = w + infinite * (w.max() if batch else w.max(dim=1)[0].unsqueeze(1))
    reduce = 0 if batch else 1
    numerator = 2.0 * (sums.tp * w).sum(reduce, keepdim=True) + smooth_nr
    denominator = ((2 * sums.tp + sums.fp + sums.fn) * w).sum(reduce, keepdim=True) + smooth_dr
    return 1.0 - numerator / denominator


def _weighted(f: torch.Tensor, weight, weight_negative: bool) -> torch.Tensor:
    """DiceLoss's class weight (a scalar or one per class left), MONAI's checks and messages."""
    classes = f.shape[-1]
    if weight is None or classes == 1:
        return f
    if weight.ndim == 0:
        weight = weight.expand(classes)
    elif weight.shape[0] != classes:
        raise ValueError(
            "The length of the `weight` sequence should be the same as the number of classes. "
            "If `include_background=False`, the weight should not include the background category class 0."
        )
    if weight_negative:
        raise ValueError("the value/values of the `weight` should be no less than 0.")
    return f * weight.to(f)


def _reduced(f: torch.Tensor, reduction: str, spatial_dims: int) -> torch.Tensor:
    """MONAI's reductions; 'none' keeps (B, C) (or (C,)) and appends a 1 per spatial dim."""
    if reduction == "mean":
        return f.mean()
    if reduction == "sum":
        return f.sum()
    return f.view(list(f.shape[0:2]) + [1] * spatial_dims)


def _output_dtype(input, target) -> torch.dtype:
    """MONAI's loss dtype: the input's, promoted by a floating target's."""
    return torch.promote_types(input.dtype, target.dtype) if target.is_floating_point() else input.dtype


# ---- the classes ----


class _MonaiLoss(nn.Module):
    def __init__(self, backend: Backend):
        super().__init__()
        self.backend = backend

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, backend={self.backend!r}"


class DiceLoss(_MonaiLoss):
    """monai.losses.DiceLoss (see the module docstring for what runs fused)."""

    def __init__(self, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act: Callable | None = None, squared_pred: bool = False,
                 jaccard: bool = False, reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch: bool = False, weight: Sequence[float] | float | int | torch.Tensor | None = None,
                 soft_label: bool = False, ignore_index: int | None = None, *, backend: Backend = "auto"):
        super().__init__(backend)
        self.reduction = _reduction(reduction)
        _activation(sigmoid, softmax, other_act)
        self.include_background, self.to_onehot_y = include_background, to_onehot_y
        self.sigmoid, self.softmax, self.other_act = sigmoid, softmax, other_act
        self.squared_pred, self.jaccard = squared_pred, jaccard
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.batch, self.soft_label, self.ignore_index = batch, soft_label, ignore_index
        weight, self._weight_negative = _as_weight(weight)
        self.register_buffer("class_weight", weight)

    def _sums(self, input, target, elem=None, class_weight=None) -> _Sums:
        act = _act(self.sigmoid, self.softmax, self.other_act)
        plan = _plan(input, target, act, to_onehot_y=self.to_onehot_y, ignore_index=self.ignore_index,
                     soft_label=self.soft_label, squared_pred=self.squared_pred)
        return _statistics(plan, batch=self.batch, squared_pred=self.squared_pred, soft_label=self.soft_label,
                           elem=elem, class_weight=class_weight, backend=self.backend)

    def _loss(self, sums: _Sums, input) -> torch.Tensor:
        sums = _drop_background(sums, self.include_background, input.shape[1])
        f = dice_formula(sums, self.jaccard, self.smooth_nr, self.smooth_dr)
        return _reduced(_weighted(f, self.class_weight, self._weight_negative), self.reduction, input.dim() - 2)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._loss(self._sums(input, target), input).to(_output_dtype(input, target))


class GeneralizedDiceLoss(_MonaiLoss):
    """monai.losses.GeneralizedDiceLoss."""

    def __init__(self, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act: Callable | None = None, w_type: str = "square",
                 reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch: bool = False,
                 soft_label: bool = False, *, backend: Backend = "auto"):
        super().__init__(backend)
        self.reduction = _reduction(reduction)
        _activation(sigmoid, softmax, other_act)
        self.include_background, self.to_onehot_y = include_background, to_onehot_y
        self.sigmoid, self.softmax, self.other_act = sigmoid, softmax, other_act
        self.w_type = _reduction(w_type, _WEIGHT_TYPES)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.batch, self.soft_label = batch, soft_label

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        act = _act(self.sigmoid, self.softmax, self.other_act)
        plan = _plan(input, target, act, to_onehot_y=self.to_onehot_y, soft_label=self.soft_label)
        sums = _statistics(plan, batch=self.batch, soft_label=self.soft_label, backend=self.backend)
        sums = _drop_background(sums, self.include_background, input.shape[1])
        f = generalized_dice_formula(sums, self.w_type, self.batch, self.smooth_nr, self.smooth_dr)
        return _reduced(f, self.reduction, input.dim() - 2).to(_output_dtype(input, target))


class TverskyLoss(_MonaiLoss):
    """monai.losses.TverskyLoss ('none': the (B, C) or, with batch, (C,) scores)."""

    def __init__(self, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act: Callable | None = None, alpha: float = 0.5, beta: float = 0.5,
                 reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch: bool = False,
                 soft_label: bool = False, ignore_index: int | None = None, *, backend: Backend = "auto"):
        super().__init__(backend)
        self.reduction = _reduction(reduction)
        _activation(sigmoid, softmax, other_act)
        self.include_background, self.to_onehot_y = include_background, to_onehot_y
        self.sigmoid, self.softmax, self.other_act = sigmoid, softmax, other_act
        self.alpha, self.beta = alpha, beta
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.batch, self.soft_label, self.ignore_index = batch, soft_label, ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        act = _act(self.sigmoid, self.softmax, self.other_act)
        plan = _plan(input, target, act, to_onehot_y=self.to_onehot_y, ignore_index=self.ignore_index,
                     soft_label=self.soft_label)
        sums = _statistics(plan, batch=self.batch, soft_label=self.soft_label, backend=self.backend)
        sums = _drop_background(sums, self.include_background, input.shape[1])
        score = tversky_formula(sums, self.alpha, self.beta, self.smooth_nr, self.smooth_dr)
        if self.reduction == "sum":
            score = score.sum()
        elif self.reduction == "mean":
            score = score.mean()
        return score.to(_output_dtype(input, target))


class FocalLoss(_MonaiLoss):
    """monai.losses.FocalLoss (sigmoid, or softmax with use_softmax); computed in fp32, as MONAI."""

    def __init__(self, include_background: bool = True, to_onehot_y: bool = False, gamma: float = 2.0,
                 alpha: float | Sequence[float] | None = None,
                 weight: Sequence[float] | float | int | torch.Tensor | None = None, reduction: str = "mean",
                 use_softmax: bool = False, ignore_index: int | None = None, *, backend: Backend = "auto"):
        super().__init__(backend)
        self.reduction = _reduction(reduction)
        self.include_background, self.to_onehot_y = include_background, to_onehot_y
        self.gamma, self.use_softmax, self.ignore_index = gamma, use_softmax, ignore_index
        self.alpha = None if alpha is None else float(alpha) if isinstance(alpha, (float, int)) else torch.as_tensor(
            alpha)
        self.weight = weight
        weight, self._weight_negative = _as_weight(weight)
        self.register_buffer("class_weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.dtype == torch.float64:  # MONAI's input.float(); other dtypes the kernels read as fp32
            input = input.float()
        fused = _fused_focal(self, input, target)
        return _focal_eager(self, input, target) if fused is None else fused


def _focal_target(focal: FocalLoss, input, target, softmax: bool):
    """(target, ignore_index, masked) as the fused focal pass reads it, or None: eager."""
    classes = input.shape[1]
    label_map = focal.to_onehot_y and classes > 1
    if label_map:
        if target.shape[1] != 1:
            raise AssertionError("labels should have a channel with length equal to one.")
        if softmax:
            labels, index = _class_map(target, classes, focal.ignore_index)
            return labels, index, focal.ignore_index is not None
        one_hot, index = _uint8_one_hot(target, classes, focal.ignore_index)
        return one_hot, index, focal.ignore_index is not None
    if target.shape != input.shape:
        return None  # MONAI's error, from the eager path
    if focal.ignore_index is not None and not (
            classes == 1 and not softmax and focal.ignore_index not in (0, 1) and target.dtype != torch.bool
            and _fits(focal.ignore_index, target.dtype)):
        return None  # create_ignore_mask on a dense target
    if not target.is_floating_point() and target.dtype not in (torch.bool, torch.uint8):
        target = target.to(torch.uint8)
    return target, focal.ignore_index, focal.ignore_index is not None


def _fused_focal(focal: FocalLoss, input, target):
    """The fused FocalLoss, or None where it is computed eagerly (see the module docstring)."""
    if focal.reduction == "none":
        return None
    if focal.use_softmax:
        return _fused_softmax_focal(focal, input, target)
    alpha = focal.alpha
    if isinstance(alpha, torch.Tensor) or (alpha is not None and not 0 <= alpha <= 1):
        return None
    operands = _focal_target(focal, input, target, softmax=False)
    if operands is None:
        return None
    target, index, masked = operands
    classes = input.shape[1]
    sums = binary_sums(input, target, _sigmoid_focal_spec(focal), per_sample=True, per_channel=True,
                       ignore_index=index, backend=focal.backend).reshape(input.shape[0], classes, 5)
    element, count = sums[..., 3], sums[..., 4]
    if not focal.include_background and classes > 1:
        element = element[:, 1:]
    return _focal_reduction(focal, element, input, count[:, :1] if masked else None)


def _sigmoid_focal_spec(focal: FocalLoss) -> LossSpec:
    alpha = focal.alpha
    return LossSpec(elem=True, focal_alpha=-1.0 if alpha is None else alpha, focal_gamma=float(focal.gamma),
                    focal_form=MONAI_FOCAL_FORM)


def _focal_reduction(focal: FocalLoss, element, input, kept=None):
    """MONAI's weight and reductions on per-class sums ``element`` ((B, C') or (C',)); ``kept``:
    (B, 1) pixels kept per sample when masked. 'mean': the sum over the elements (masked: over
    the pixels kept); 'sum': the per-(sample, class) spatial means, summed."""
    weight = _focal_weight(element.shape[-1], focal.class_weight, focal._weight_negative)
    if weight is not None:
        element = element * weight.to(element)
    spatial = math.prod(input.shape[2:])
    eps = torch.finfo(torch.float32).eps
    if focal.reduction == "mean":
        if kept is not None:
            return element.sum() / kept.sum().clamp(min=eps)
        return element.sum() / (input.shape[0] * element.shape[-1] * spatial)
    return (element / (kept.clamp(min=eps) if kept is not None else spatial)).sum()


def _fused_softmax_focal(focal: FocalLoss, input, target):
    classes = input.shape[1]
    loss_classes = classes if focal.include_background else classes - 1
    if loss_classes < 2:
        return None  # a softmax over one class: the multi-class family needs two
    operands = _focal_target(focal, input, target, softmax=True)
    if operands is None:
        return None
    target, index, masked = operands
    if masked and focal.reduction == "sum":
        return None  # a per-sample denominator: the multi-class element sum is one number
    spatial = math.prod(input.shape[2:])
    if masked:  # MONAI's mask.sum(): the pixels not holding ignore_index
        kept = (target != index).sum() if index is not None else torch.tensor(input.shape[0] * spatial)
    if not focal.include_background:  # MONAI drops channel 0 before the softmax
        input = input[:, 1:]
        if target.dim() == input.dim():
            target = target[:, 1:]
        else:  # label 0 has no class left (its loss was 0): ignored, as the ignored pixels
            dropped = target == 0 if index is None else (target == 0) | (target == index)
            target, index = torch.where(dropped, -1, target.long() - 1), -1
    alpha = _softmax_alpha_argument(focal, classes)
    factor = None if alpha is None else _softmax_alpha(alpha, loss_classes, input.float())
    weight = _focal_weight(loss_classes, focal.class_weight, focal._weight_negative)
    if weight is not None:
        weight = weight.to(device=input.device, dtype=torch.float32).expand(loss_classes)
        factor = weight if factor is None else factor * weight
    _, (element, _) = multiclass_sums(input, target, LossSpec(elem=True, focal_gamma=float(focal.gamma)),
                                      class_weight=factor, ignore_index=index, backend=focal.backend)
    if focal.reduction == "sum":
        return element / spatial
    if masked:
        return element / kept.clamp(min=torch.finfo(torch.float32).eps)
    return element / (input.shape[0] * loss_classes * spatial)


class DiceCELoss(_MonaiLoss):
    """monai.losses.DiceCELoss: Dice + cross-entropy (BCE with logits for one channel)."""

    def __init__(self, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act: Callable | None = None, squared_pred: bool = False,
                 jaccard: bool = False, reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch: bool = False, weight: torch.Tensor | None = None, lambda_dice: float = 1.0,
                 lambda_ce: float = 1.0, label_smoothing: float = 0.0, *, backend: Backend = "auto"):
        super().__init__(backend)
        self.reduction = _reduction(reduction, ("mean", "sum"))
        dice_weight = weight[1:] if weight is not None and not include_background else weight
        self.dice = DiceLoss(include_background, to_onehot_y, sigmoid, softmax, other_act, squared_pred, jaccard,
                             self.reduction, smooth_nr, smooth_dr, batch, dice_weight, backend=backend)
        self.register_buffer("weight", weight)  # CrossEntropyLoss's class weights / BCE's pos_weight
        _non_negative(lambda_dice=lambda_dice, lambda_ce=lambda_ce)
        self.lambda_dice, self.lambda_ce, self.label_smoothing = lambda_dice, lambda_ce, label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _pair(input, target)
        classes, dice = input.shape[1], self.dice
        if classes == 1:
            return self._binary(input, target)
        ce_spec = dict(elem=True, label_smoothing=float(self.label_smoothing), weighted_mean=True)
        class_weight = None if self.weight is None else self.weight.to(device=input.device, dtype=torch.float32)
        if dice.softmax:  # one pass: the Dice sums and the cross-entropy
            sums = dice._sums(input, target, elem=ce_spec, class_weight=class_weight)
            element, count = sums.element, sums.count
        else:
            sums = dice._sums(input, target)
            _, (element, count) = multiclass_sums(input, _ce_target(input, target), LossSpec(**ce_spec),
                                                  class_weight=class_weight, backend=self.backend)
        ce = element / count if self.reduction == "mean" else element
        loss = self.lambda_dice * dice._loss(sums, input) + self.lambda_ce * ce
        return loss.to(_output_dtype(input, target))

    def _binary(self, input, target):
        """One channel: Dice + BCE with logits (pos_weight = weight)."""
        dice = self.dice
        if self.weight is not None:  # pos_weight: eager BCE
            bce = F.binary_cross_entropy_with_logits(input, target.to(input.dtype), pos_weight=self.weight,
                                                     reduction=self.reduction)
            return (self.lambda_dice * dice(input, target) + self.lambda_ce * bce)
        elem = dict(elem=True)
        if dice.sigmoid:  # one pass: the sigmoid Dice sums and the BCE
            sums = dice._sums(input, target, elem=elem)
            element, count = sums.element, sums.count
        else:
            sums = dice._sums(input, target)
            bce_target = target if target.dtype in (torch.bool, torch.uint8) else target.to(input.dtype)
            bce_sums = binary_sums(input, bce_target, LossSpec(elem=True), backend=self.backend)
            element, count = bce_sums[0, 3], bce_sums[0, 4]
        bce = element.sum() / count.sum() if self.reduction == "mean" else element.sum()
        loss = self.lambda_dice * dice._loss(sums, input) + self.lambda_ce * bce
        return loss.to(_output_dtype(input, target))


def _ce_target(input, target):
    """DiceCE's cross-entropy target for the multi-class family: a label map squeezed (integers,
    as MONAI's .long()), or the per-class target (integers as uint8)."""
    if target.shape[1] == 1:
        labels = target.squeeze(1)
        return labels.long() if labels.is_floating_point() or labels.dtype == torch.bool else labels
    return target if target.is_floating_point() or target.dtype in (torch.bool, torch.uint8) else target.to(
        torch.uint8)


class DiceFocalLoss(_MonaiLoss):
    """monai.losses.DiceFocalLoss: Dice (its activation) + a sigmoid focal loss on the logits."""

    def __init__(self, include_background: bool = True, to_onehot_y: bool = False, sigmoid: bool = False,
                 softmax: bool = False, other_act: Callable | None = None, squared_pred: bool = False,
                 jaccard: bool = False, reduction: str = "mean", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch: bool = False, gamma: float = 2.0,
                 weight: Sequence[float] | float | int | torch.Tensor | None = None, lambda_dice: float = 1.0,
                 lambda_focal: float = 1.0, alpha: float | None = None, *, backend: Backend = "auto"):
        super().__init__(backend)
        self.dice = DiceLoss(include_background, False, sigmoid, softmax, other_act, squared_pred, jaccard,
                             reduction, smooth_nr, smooth_dr, batch, weight, backend=backend)
        self.focal = FocalLoss(include_background, False, gamma, alpha, weight, reduction, backend=backend)
        _non_negative(lambda_dice=lambda_dice, lambda_focal=lambda_focal)
        self.lambda_dice, self.lambda_focal, self.to_onehot_y = lambda_dice, lambda_focal, to_onehot_y
        self.reduction = self.dice.reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _pair(input, target)
        classes = input.shape[1]
        if self.to_onehot_y:
            if classes == 1:
                _warn_single_channel("to_onehot_y=True")
            else:  # the one-hot both parts read (uint8: hard, so the focal part fuses)
                target = _one_hot(target, classes, torch.uint8)
        dice, focal = self.dice, self.focal
        alpha = focal.alpha
        one_pass = (dice.sigmoid and self.reduction != "none" and input.dtype != torch.float64
                    and (alpha is None or (not isinstance(alpha, torch.Tensor) and 0 <= alpha <= 1))
                    and target.dtype in (torch.bool, torch.uint8, torch.float32))
        if one_pass:  # the sigmoid Dice sums and the focal sums (fp32 either way) in one pass
            spec = _sigmoid_focal_spec(focal)
            sums = dice._sums(input, target, elem=dict(elem=True, focal_alpha=spec.focal_alpha,
                                                       focal_gamma=spec.focal_gamma, focal_form=spec.focal_form))
            dice_loss = dice._loss(sums, input)
            element = _drop_background(sums, focal.include_background, classes).element
            focal_loss = _focal_reduction(focal, element, input)  # unmasked: per class is enough
        else:
            dice_loss = dice(input, target)
            focal_loss = focal(input, target)
        return self.lambda_dice * dice_loss + self.lambda_focal * focal_loss
