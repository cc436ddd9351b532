"""segmentation_models_pytorch 0.6's losses, same signatures, defaults and numbers, on the fused kernels.

Change ``from segmentation_models_pytorch.losses import DiceLoss`` to
``from fusedloss.compat.smp import DiceLoss``: the same constructor (plus one keyword-only
``backend='auto'``), the same loss and input gradient (to fp32 rounding), without smp's
full-size temporaries (probabilities, one-hot target, masks, |p - t|).

How each class runs. The region losses and the means are smp's formulas written on the
fused statistics (``fusedloss.ops.sums``: one pass over input and target for the per-class
sums, one fused backward pass), so every smp convention holds exactly:

- ``DiceLoss``, ``JaccardLoss``, ``TverskyLoss``: fused for every option. smp's Tversky
  score (I + smooth) / clamp_min(I + alpha FP + beta FN + smooth, eps), FP = P - I,
  FN = T - I, per class over the batch (binary: one class of everything); its soft
  intersection I = sum(min(p, t)) (smp writes (P + T - |p - t|_1) / 2; = sum(p t) for hard
  targets); a class absent from the target scores 0 yet still counts in the mean;
  ``classes`` keeps those classes' losses; ``class_weights`` a weighted mean;
  ``log_loss`` -log(clamp_min(score, eps)); Tversky's mean ** gamma. ``from_logits=False``:
  the input holds probabilities (softmax / sigmoid skipped), as in smp.
- ``FocalLoss``: smp's per-class sigmoid focal loss (binary: one class; multilabel: per
  channel; multiclass: class c against [y = c], one-vs-rest, not a softmax), the per-class
  means (or sums) averaged over classes or weighted by ``class_weights``. Fused for reduction
  'mean' / 'sum', soft targets included: the kernels take smp's focusing factor
  (1 - exp(-BCE))**gamma (``focal_form``), which differs from Lin's (1 - p_t)**gamma on soft
  targets; the multiclass class map's one-vs-rest target is built in PyTorch (uint8).
  ``normalized``, ``reduced_threshold`` and the reductions 'none' and 'batchwise_mean' (whose
  outputs are per-element maps) run in PyTorch (smp's formula).
  ``from_logits=False``: smp's clamp and logit (binary, multilabel) or log (multiclass) are
  applied in PyTorch first, then the fused loss takes them as logits.
- ``SoftBCEWithLogitsLoss``: fused for 'mean' / 'sum' without ``weight`` / ``pos_weight``
  (those run F.binary_cross_entropy_with_logits). ``smooth_factor`` smooths the target in
  PyTorch first. Ignored elements count 0 but stay in the mean's denominator, as in smp.
- ``SoftCrossEntropyLoss``: fused for 'mean' / 'sum' (F.cross_entropy's label smoothing is
  smp's (1 - eps) NLL + eps / C sum(-log p)); the same denominator rule; reduction 'none' runs
  in PyTorch. Only ``dim=1``. ``smooth_factor=None`` (smp's default, which raises a TypeError
  in smp 0.6's forward) is 0 here.
- ``LovaszLoss``: fused (``fusedloss.lovasz_hinge_loss`` for 'binary' / 'multilabel': each
  image's channels in one sort, or the whole batch's; ``lovasz_softmax_loss`` with
  classes='present' for 'multiclass'), ``per_image`` without smp's Python loop over images.
  smp ignores ``from_logits`` (always logits; a softmax for 'multiclass'): so does this class.
  smp computes only in fp32 (its Lovász gradient is fp32 whatever the input); this class also
  takes fp64 (computed in fp64), fp16 and bf16 (in fp32). A batch whose every pixel is ignored
  scores 0 (smp's 'multiclass' returns an empty tensor there).

Targets of other integer dtypes than uint8 / bool (binary, multilabel) are converted to the
input's dtype first; an ``ignore_index`` the target's dtype cannot hold ignores nothing, as
in smp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._spec import LossSpec
from ..functional import Backend, lovasz_hinge_loss, lovasz_softmax_loss
from ..ops.sums import binary_sums, multiclass_sums

BINARY_MODE, MULTILABEL_MODE, MULTICLASS_MODE = "binary", "multilabel", "multiclass"
_MODES = {BINARY_MODE, MULTILABEL_MODE, MULTICLASS_MODE}
_FUSED_TARGET_DTYPES = (torch.bool, torch.uint8)
SMP_FOCAL_FORM = 1  # LossSpec.focal_form: smp's focusing factor (1 - exp(-BCE))**gamma


def _as_list_tensor(values, dtype):
    """smp's to_tensor for lists, tuples, arrays and tensors."""
    return None if values is None else torch.as_tensor(values).to(dtype)


def _ignorable(ignore_index, target: torch.Tensor):
    """ignore_index, or None when the target's dtype cannot hold it (then smp's mask keeps everything)."""
    if ignore_index is None or target.is_floating_point():
        return ignore_index
    if target.dtype == torch.bool:
        return None
    info = torch.iinfo(target.dtype)
    return ignore_index if info.min <= ignore_index <= info.max else None


def _class_map(y_pred, y_true, ignore_index):
    """(class map, ignore_index) for the multiclass kernels, which refuse an ignore_index that is a
    class: smp's ignored pixels of class c count nowhere, so they are marked out of range first."""
    ignore_index = _ignorable(ignore_index, y_true)
    if ignore_index is None or not 0 <= ignore_index < y_pred.shape[1]:
        return y_true, ignore_index
    mark = -1 if torch.iinfo(y_true.dtype).min < 0 else torch.iinfo(y_true.dtype).max
    return torch.where(y_true == ignore_index, mark, y_true), mark


def _binary_target(y_pred, y_true):
    """y_true in y_pred's shape (smp pairs them by flattening) and a dtype the binary kernels read."""
    if y_true.shape != y_pred.shape and y_true.numel() == y_pred.numel():
        y_true = y_true.reshape(y_pred.shape)
    if not y_true.is_floating_point() and y_true.dtype not in _FUSED_TARGET_DTYPES:
        y_true = y_true.to(y_pred.dtype if y_pred.is_floating_point() else torch.float32)
    return y_true


def _aggregate(losses, class_weights, classes):
    """smp's aggregate_loss: the (weighted) mean of the per-class losses, ``classes`` first."""
    if class_weights is None:
        return losses.mean()
    weights = class_weights.to(losses.device)
    if classes is not None:
        weights = weights[classes]
    return (losses * weights).sum() / weights.sum()


# ---- Dice, Jaccard, Tversky ---------------------------------------------------------------


def soft_tversky_score(intersection, predicted, actual, alpha, beta, smooth, eps):
    """smp's soft_tversky_score on the sums."""
    fp, fn = predicted - intersection, actual - intersection
    return (intersection + smooth) / (intersection + alpha * fp + beta * fn + smooth).clamp_min(eps)


class _RegionLoss(nn.Module):
    """smp's DiceLoss / JaccardLoss / TverskyLoss: the constructor checks and the forward on sums."""

    alpha = beta = 0.5
    gamma = 1.0

    def __init__(self, mode: str, classes=None, log_loss: bool = False, from_logits: bool = True, smooth: float = 0.0,
                 ignore_index: int | None = None, eps: float = 1e-7, class_weights=None, *,
                 backend: Backend = "auto"):
        assert mode in _MODES
        super().__init__()
        if class_weights is not None and mode == BINARY_MODE:
            raise ValueError("class_weights are not supported with mode=binary")
        if classes is not None:
            assert mode != BINARY_MODE, "Masking classes is not supported with mode=binary"
        self.mode, self.from_logits, self.smooth, self.eps = mode, from_logits, smooth, eps
        self.log_loss, self.ignore_index, self.backend = log_loss, ignore_index, backend
        self.register_buffer("classes", _as_list_tensor(classes, torch.long), persistent=False)
        self.register_buffer("class_weights", _as_list_tensor(class_weights, torch.float), persistent=False)

    def _sums(self, y_pred, y_true):
        """Per class: I, P, T (smp's dims (0, 2): over the batch and the pixels)."""
        activation = dict(from_logits=self.from_logits, clamped_log=not self.from_logits)
        if self.mode == MULTICLASS_MODE:
            y_true, ignore_index = _class_map(y_pred, y_true, self.ignore_index)
            class_sums, _ = multiclass_sums(y_pred, y_true, LossSpec(region=True, **activation),
                                            ignore_index=ignore_index, backend=self.backend)
            return class_sums.unbind(-1)
        if self.mode == BINARY_MODE:
            # smp views both as (N, 1, -1): one group of every element.
            y_pred, y_true = y_pred.reshape(y_pred.shape[0], 1, -1), y_true.reshape(y_true.shape[0], 1, -1)
        y_true = _binary_target(y_pred, y_true)
        spec = LossSpec(region=True, **activation, **_region_spec(y_true))
        sums = binary_sums(y_pred, y_true, spec, per_channel=True, ignore_index=_ignorable(self.ignore_index, y_true),
                           backend=self.backend)
        return sums[:, 0], sums[:, 1], sums[:, 2]

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        assert y_true.size(0) == y_pred.size(0)
        intersection, predicted, actual = self._sums(y_pred, y_true)
        scores = soft_tversky_score(intersection, predicted, actual, self.alpha, self.beta, self.smooth, self.eps)
        losses = -torch.log(scores.clamp_min(self.eps)) if self.log_loss else 1.0 - scores
        losses = losses * (actual > 0).to(losses.dtype)  # smp: a class absent from the target scores 0
        if self.classes is not None:
            losses = losses[self.classes]
        loss = _aggregate(losses, self.class_weights, self.classes)
        return loss if self.gamma == 1.0 else loss**self.gamma

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, smooth={self.smooth}, eps={self.eps}, backend={self.backend!r}"


def _region_spec(y_true) -> dict:
    """smp's intersection sum(min(p, t)) for a floating-point target (it may be soft); = sum(p t)
    for bool / uint8 targets, which hold only 0 and 1 (and the ignore value)."""
    return dict(min_intersection=y_true.is_floating_point())


class DiceLoss(_RegionLoss):
    """smp.losses.DiceLoss: 1 - (I + smooth) / ((P + T) / 2 + smooth) per class, fused."""


class JaccardLoss(_RegionLoss):
    """smp.losses.JaccardLoss: 1 - (I + smooth) / (P + T - I + smooth) per class, fused."""

    alpha = beta = 1.0


class TverskyLoss(_RegionLoss):
    """smp.losses.TverskyLoss: (mean of 1 - Tversky score) ** gamma, fused."""

    def __init__(self, mode: str, classes=None, log_loss: bool = False, from_logits: bool = True, smooth: float = 0.0,
                 ignore_index: int | None = None, eps: float = 1e-7, alpha: float = 0.5, beta: float = 0.5,
                 gamma: float = 1.0, class_weights=None, *, backend: Backend = "auto"):
        super().__init__(mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights,
                         backend=backend)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma


# ---- Focal ----------------------------------------------------------------------------------


def _smp_focal_elements(output, target, gamma, alpha, reduced_threshold):
    """smp's focal_loss_with_logits per element (the PyTorch path): (loss, focal factor)."""
    target = target.to(dtype=output.dtype)
    logpt = F.binary_cross_entropy_with_logits(output, target, reduction="none")
    pt = torch.exp(-logpt)
    if reduced_threshold is None:
        focal = (1.0 - pt).pow(gamma)
    else:
        focal = torch.where(pt < reduced_threshold, 1.0, ((1.0 - pt) / reduced_threshold).pow(gamma))
    loss = focal * logpt
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss, focal


def _smp_reduce(loss, focal, reduction, normalized, eps=1e-6):
    if normalized:
        loss = loss / focal.sum().clamp_min(eps)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchwise_mean":
        return loss.sum(0)
    return loss


class FocalLoss(nn.Module):
    """smp.losses.FocalLoss: per-class sigmoid focal loss (see the module docstring)."""

    def __init__(self, mode: str, alpha: float | None = None, gamma: float | None = 2.0,
                 ignore_index: int | None = None, from_logits: bool = True, eps: float = 1e-7,
                 reduction: str | None = "mean", normalized: bool = False, reduced_threshold: float | None = None,
                 class_weights=None, *, backend: Backend = "auto"):
        assert mode in _MODES
        super().__init__()
        if class_weights is not None and mode == BINARY_MODE:
            raise ValueError("class_weights are not supported with mode=binary")
        self.mode, self.alpha, self.gamma, self.ignore_index = mode, alpha, gamma, ignore_index
        self.from_logits, self.eps, self.reduction = from_logits, eps, reduction
        self.normalized, self.reduced_threshold, self.backend = normalized, reduced_threshold, backend
        self.register_buffer("class_weights", _as_list_tensor(class_weights, torch.float), persistent=False)

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if not self.from_logits:  # smp's own transform, then its loss on logits
            y_pred = torch.clamp(y_pred, self.eps, 1 - self.eps)
            y_pred = torch.log(y_pred) if self.mode == MULTICLASS_MODE else torch.log(y_pred / (1 - y_pred))
        if (self.reduction in ("mean", "sum") and not self.normalized and self.reduced_threshold is None
                and not (self.mode == MULTILABEL_MODE and self.ignore_index is not None)):
            return self._fused(y_pred, y_true)
        return self._eager(y_pred, y_true)

    def _fused(self, y_pred, y_true):
        """Per-class element sums and counts from one fused pass, then smp's means."""
        spec = LossSpec(elem=True, focal_alpha=-1.0 if self.alpha is None else float(self.alpha),
                        focal_gamma=float(self.gamma), focal_form=SMP_FOCAL_FORM)
        if self.mode == BINARY_MODE:
            y_true = _binary_target(y_pred, y_true)
            sums = binary_sums(y_pred, y_true, spec, ignore_index=_ignorable(self.ignore_index, y_true),
                               backend=self.backend)
            return sums[0, 3] / sums[0, 4] if self.reduction == "mean" else sums[0, 3]
        if self.mode == MULTICLASS_MODE:
            y_true, ignore_index = _one_vs_rest(y_pred, y_true, self.ignore_index)
        else:
            y_true, ignore_index = _binary_target(y_pred, y_true), None
        sums = binary_sums(y_pred, y_true, spec, per_channel=True, ignore_index=ignore_index, backend=self.backend)
        class_losses = sums[:, 3] / sums[:, 4] if self.reduction == "mean" else sums[:, 3]
        return _aggregate(class_losses, self.class_weights, None)

    def _eager(self, y_pred, y_true):
        """smp's own computation, in PyTorch."""

        def focal(output, target):
            loss, factor = _smp_focal_elements(output, target, self.gamma, self.alpha, self.reduced_threshold)
            return _smp_reduce(loss, factor, self.reduction, self.normalized)

        if self.mode == BINARY_MODE:
            y_true, y_pred = y_true.reshape(-1), y_pred.reshape(-1)
            if self.ignore_index is not None:
                kept = y_true != self.ignore_index
                y_pred, y_true = y_pred[kept], y_true[kept]
            return focal(y_pred, y_true)
        kept = None if self.ignore_index is None else y_true != self.ignore_index
        class_losses = []
        for cls in range(y_pred.size(1)):
            cls_true = (y_true == cls).long() if self.mode == MULTICLASS_MODE else y_true[:, cls, ...]
            cls_pred = y_pred[:, cls, ...]
            if kept is not None:  # multilabel: smp indexes a channel with the (N, C, ...) mask and fails
                cls_true, cls_pred = cls_true[kept], cls_pred[kept]
            class_losses.append(focal(cls_pred, cls_true))
        return _aggregate(torch.stack(class_losses), self.class_weights, None)


def _one_vs_rest(y_pred, y_true, ignore_index):
    """The multiclass target as smp's per-class [y = c] (uint8, ignored pixels 2 in every class)."""
    classes = torch.arange(y_pred.shape[1], device=y_true.device).reshape((1, -1) + (1,) * (y_true.dim() - 1))
    one_hot = (y_true.unsqueeze(1) == classes).to(torch.uint8)
    if ignore_index is None:
        return one_hot, None
    return torch.where((y_true == ignore_index).unsqueeze(1), 2, one_hot).to(torch.uint8), 2


# ---- Soft BCE and soft CE --------------------------------------------------------------------


class SoftBCEWithLogitsLoss(nn.Module):
    """smp.losses.SoftBCEWithLogitsLoss: BCE with logits on (smoothed) targets, ignored elements 0."""

    __constants__ = ["weight", "pos_weight", "reduction", "ignore_index", "smooth_factor"]

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int | None = -100, reduction: str = "mean",
                 smooth_factor: float | None = None, pos_weight: torch.Tensor | None = None, *,
                 backend: Backend = "auto"):
        super().__init__()
        self.ignore_index, self.reduction, self.smooth_factor, self.backend = ignore_index, reduction, smooth_factor, \
            backend
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        soft = y_true
        if self.smooth_factor is not None:
            soft = (1 - y_true) * self.smooth_factor + y_true * (1 - self.smooth_factor)
        if self.weight is not None or self.pos_weight is not None or self.reduction not in ("mean", "sum"):
            loss = F.binary_cross_entropy_with_logits(y_pred, soft, self.weight, pos_weight=self.pos_weight,
                                                      reduction="none")
            if self.ignore_index is not None:
                loss = loss * (y_true != self.ignore_index).type_as(loss)
            return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss
        ignore_index = _ignorable(self.ignore_index, y_true)
        if ignore_index is not None and self.smooth_factor is not None:
            soft = torch.where(y_true == ignore_index, y_true, soft)  # the smoothed target keeps the marks
        soft = _binary_target(y_pred, soft)
        sums = binary_sums(y_pred, soft, LossSpec(elem=True), ignore_index=ignore_index, backend=self.backend)
        total = sums[0, 3]
        # smp multiplies ignored elements' losses by 0 and averages over every element.
        return total / y_pred.numel() if self.reduction == "mean" else total


class SoftCrossEntropyLoss(nn.Module):
    """smp.losses.SoftCrossEntropyLoss: (1 - eps) NLL + eps / C sum_c(-log p_c) per pixel, ignored pixels 0."""

    __constants__ = ["reduction", "ignore_index", "smooth_factor"]

    def __init__(self, reduction: str = "mean", smooth_factor: float | None = None, ignore_index: int | None = -100,
                 dim: int = 1, *, backend: Backend = "auto"):
        super().__init__()
        if dim != 1:
            raise NotImplementedError(f"dim={dim}: fusedloss.compat.smp.SoftCrossEntropyLoss takes classes on dim 1")
        self.smooth_factor, self.ignore_index, self.reduction, self.dim = smooth_factor, ignore_index, reduction, dim
        self.backend = backend

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        epsilon = 0.0 if self.smooth_factor is None else float(self.smooth_factor)
        if self.reduction not in ("mean", "sum"):
            return _label_smoothed_nll_map(F.log_softmax(y_pred, dim=1), y_true, epsilon, self.ignore_index)
        y_true, ignore_index = _class_map(y_pred, y_true, self.ignore_index)
        spec = LossSpec(elem=True, label_smoothing=epsilon)
        _, elem_sums = multiclass_sums(y_pred, y_true, spec, ignore_index=ignore_index, backend=self.backend)
        # smp zeroes ignored pixels and averages over every pixel.
        return elem_sums[0] / math.prod(y_true.shape) if self.reduction == "mean" else elem_sums[0]


def _label_smoothed_nll_map(lprobs, target, epsilon, ignore_index):
    """smp's label_smoothed_nll_loss with reduction 'none' (its shapes: (N, 1, ...) with an ignore_index)."""
    target = target.unsqueeze(1)
    if ignore_index is not None:
        pad = target.eq(ignore_index)
        target = target.masked_fill(pad, 0)
    nll = -lprobs.gather(dim=1, index=target)
    smooth = -lprobs.sum(dim=1, keepdim=True)
    if ignore_index is not None:
        nll, smooth = nll.masked_fill(pad, 0.0), smooth.masked_fill(pad, 0.0)
    else:
        nll, smooth = nll.squeeze(1), smooth.squeeze(1)
    return (1.0 - epsilon) * nll + epsilon / lprobs.size(1) * smooth


class LovaszLoss(nn.Module):
    """smp.losses.LovaszLoss: the Lovász hinge (binary, multilabel) or Lovász-softmax over the classes
    present (multiclass), per image (mean over images) or over the batch."""

    def __init__(self, mode: str, per_image: bool = False, ignore_index: int | None = None, from_logits: bool = True,
                 *, backend: Backend = "auto"):
        assert mode in _MODES  # smp's check, and its AssertionError
        super().__init__()
        self.mode, self.ignore_index, self.per_image = mode, ignore_index, per_image
        self.from_logits = from_logits  # unused, as in smp
        self.backend = backend

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if self.mode == MULTICLASS_MODE:
            y_true, ignore_index = _class_map(y_pred, y_true, self.ignore_index)
            return lovasz_softmax_loss(y_pred, y_true, per_sample=self.per_image, ignore_index=ignore_index,
                                       backend=self.backend)
        y_true = _binary_target(y_pred, y_true)
        return lovasz_hinge_loss(y_pred, y_true, per_sample=self.per_image,
                                 ignore_index=_ignorable(self.ignore_index, y_true), backend=self.backend)


__all__ = ["DiceLoss", "JaccardLoss", "TverskyLoss", "FocalLoss", "SoftBCEWithLogitsLoss", "SoftCrossEntropyLoss",
           "LovaszLoss", "BINARY_MODE", "MULTILABEL_MODE", "MULTICLASS_MODE"]
