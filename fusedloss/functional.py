"""The losses as functions: check the arguments, choose the backend, run.

mode='binary' (or 'multilabel', the same): ``input`` is logits, ``target`` has
input's shape (or (N, *spatial) for an (N, 1, *spatial) input) and holds
probabilities in [0, 1] (float, bool or uint8); p = sigmoid(input). Region
losses sum I = sum(p*t), P = sum(p), T = sum(t) over groups: the whole tensor
by default, one group per sample (``per_sample``), per channel (``per_channel``)
or per (sample, channel) (both). ``weight`` multiplies the per-channel losses.

mode='multiclass': ``input`` is (N, C, *spatial) logits, ``target`` (N, *spatial)
class indices (uint8, int16, int32, int64); p = softmax(input, dim=1). The
statistics are per class (per (sample, class) with ``per_sample``); ``weight``
is per class, ``include_background=False`` leaves class 0 out, ``ignore_index``
marks pixels that count nowhere, ``exclude_empty`` leaves classes absent from
the target out of the mean. No one-hot target or softmax tensor is built by the
fused backends.

``reduction`` reduces over the groups ('mean' divides by the number of groups
that count).

``sync=True`` (region losses, and the region term of Dice+BCE / Dice+CE) sums
the statistics over the processes of ``process_group`` (default: the whole
torch.distributed world) before the formula: each rank's loss is the loss of
the whole distributed batch, and its gradient that loss's gradient w.r.t. the
rank's own input (DDP then averages the parameter gradients over ranks, so
multiply the loss by the world size for the single-process gradient scale).
Element terms (BCE, CE) stay per rank. Every backend synchronises.
"""

from __future__ import annotations

import textwrap
from typing import Literal

import torch

from . import _checks, _spec, reference
from .ops import fused_ops, resolve
from .ops.generalized_dice import WEIGHT_TYPES, GeneralizedDiceLoss
from .ops.lovasz import binary_lovasz_losses, multiclass_lovasz_losses
from .ops.synced import SyncedBinaryLoss, SyncedMulticlassLoss

Mode = Literal["binary", "multilabel", "multiclass"]
Reduction = Literal["mean", "sum", "none"]
Backend = Literal["auto", "triton", "cuda", "cpu", "reference"]
Activation = Literal["sigmoid", "softmax", "none"]
WeightType = Literal["square", "simple", "uniform"]

# Each option's documentation, written once and formatted into the __doc__ of every
# loss that takes it (and of its module) by ``documented``.
OPTION_DOCS = {
    "input": "logits: any shape for mode='binary'/'multilabel'; (N, C, *spatial) for mode='multiclass'.",
    "target": (
        "binary/multilabel: input's shape (or (N, *spatial) for an (N, 1, *spatial) input), "
        "probabilities in [0, 1] (float, bool or uint8), or ignore_index. multiclass: (N, *spatial) class "
        "indices (uint8, int16, int32, int64) in [0, C), or ignore_index; or per-class targets of input's "
        "shape (one-hot or soft; float, bool or uint8 in [0, 1])."
    ),
    "smooth": (
        "added to the numerator and the denominator of the index (>= 0; None: 1.0, or smooth_nr / smooth_dr; "
        "not with them)."
    ),
    "smooth_nr": "added to the index's numerator only (>= 0; None: 1.0 unless smooth is given).",
    "smooth_dr": (
        "added to the index's denominator only (>= 0; None: 1.0 unless smooth is given). A zero "
        "denominator (nothing predicted, nothing to find, smooth_dr = 0) scores as a perfect match."
    ),
    "activation": (
        "None (the mode's own: 'sigmoid' for binary/multilabel, 'softmax' for multiclass), or 'none': "
        "the input already holds probabilities in [0, 1] (per class along dim 1 for multiclass), the "
        "gradient is taken w.r.t. them, and element terms follow F.binary_cross_entropy / F.nll_loss "
        "of log(p) (logs clamped at -100). Probabilities outside [0, 1] are not checked."
    ),
    "squared_pred": "V-Net's denominator: P = sum(p**2), T = sum(t**2) (MONAI's squared_pred).",
    "log_loss": "-log(max(score, 1e-7)) per group instead of 1 - score, score the index (smp's log_loss).",
    "mode": (
        "'binary' or 'multilabel' (the same: a sigmoid per element), or 'multiclass' (a softmax over "
        "dim 1 and a class-map target)."
    ),
    "per_sample": "one group per sample: statistics summed over each sample, losses reduced over samples.",
    "per_channel": (
        "binary/multilabel: one group per channel (dim 1); with per_sample, per (sample, channel). "
        "Not for multiclass, whose statistics are always per class."
    ),
    "weight": (
        "(C,) weights of the per-channel (binary/multilabel, with per_channel) or per-class "
        "(multiclass) losses; finite and >= 0. Only the reference differentiates it."
    ),
    "reduction": ("'mean' over the groups that count (MONAI's convention), 'sum', or 'none' (the per-group losses)."),
    "include_background": "multiclass: False leaves class 0 out.",
    "ignore_index": (
        "elements (binary/multilabel: where the target equals it, e.g. 255 in a uint8 mask, -1 in a float one) "
        "or pixels (multiclass class maps) that count in no statistic and no mean and get zero gradient "
        "(None: none ignored)."
    ),
    "exclude_empty": "multiclass: leave classes absent from the target out of the mean.",
    "sync": (
        "sum the region statistics over the processes of ``process_group`` before the formula: every "
        "rank gets the loss of the whole distributed batch (element terms stay per rank)."
    ),
    "process_group": "the torch.distributed group for sync=True (None: the whole world).",
    "backend": (
        "'auto' (the first of the device's backends that runs the call; the environment variable "
        "FUSEDLOSS_BACKEND replaces it), or 'triton', 'cuda', 'cpu', 'reference'. An explicit backend "
        "that cannot run the call raises ValueError."
    ),
}
REGION_OPTIONS = ("mode", "per_sample", "per_channel", "weight", "reduction", "include_background", "ignore_index",
                  "exclude_empty", "sync", "process_group", "backend")
REGION_RETURNS = (
    "the loss: a 0-d tensor, or with reduction='none' one per group ((), (N,), (C,) or (N, C)), "
    "in float32 (float64 for a float64 input)."
)


def _wrapped(text: str) -> str:
    return textwrap.fill(text, 100, initial_indent=" " * 8, subsequent_indent=" " * 12)


def sections(argument_docs: dict, returns: str, returns_heading: str = "Returns") -> str:
    """Args and Returns sections, indented as a docstring's body."""
    args = "\n".join(_wrapped(f"{name}: {text}") for name, text in argument_docs.items())
    return f"    Args:\n{args}\n\n    {returns_heading}:\n{_wrapped(returns)}\n"


def documented(params: dict, options, returns: str = REGION_RETURNS):
    """Append Args (``params``, this loss's own, then the shared ``options``) and
    Returns sections to the function's docstring."""

    def decorate(fn):
        docs = {**{name: OPTION_DOCS[name] for name in ("input", "target")}, **params,
                **{name: OPTION_DOCS[name] for name in options}}
        fn.__doc__ = f"{fn.__doc__.rstrip()}\n\n{sections(docs, returns)}"
        fn.argument_docs, fn.returns_doc = docs, returns  # for the modules' docstrings
        return fn

    return decorate


def _run_binary(reference_loss, params: dict, spec: _spec.LossSpec, input, target, *, per_sample, per_channel, weight,
                reduction, backend, ignore_index=None, sync=False, process_group=None):
    target = _checks.input_and_target(input, target)
    _checks.binary_ignore_index(ignore_index, target.dtype)
    _checks.groups(input, per_sample, per_channel, weight)
    _checks.reduction(reduction)
    group = _checks.sync_group(sync, process_group, per_sample)
    differentiable = target.requires_grad or (weight is not None and weight.requires_grad)
    chosen = resolve(backend, input.device, differentiable_target=differentiable)
    if chosen == "reference":
        _checks.target_values(target, None, ignore_index)
        return reference_loss(input, target, per_sample=per_sample, per_channel=per_channel, weight=weight,
                              reduction=reduction, process_group=group, ignore_index=ignore_index, **params)
    if group is not None:
        return SyncedBinaryLoss.apply(input, target, weight, fused_ops(chosen), group, per_sample, per_channel, spec,
                                      ignore_index, reduction, _checks.CHECK_TARGETS)
    # By position: the spec's fields are the op's arguments after per_channel (ops/schema.py, LOSS_OP_LAYOUT).
    loss, _coef = fused_ops(chosen).binary_loss(input, target, weight, per_sample, per_channel, *spec, ignore_index,
                                                reduction, _checks.CHECK_TARGETS)
    return loss


def _run_multiclass(reference_loss, params: dict, spec: _spec.LossSpec, input, target, *, per_sample, per_channel,
                    weight, reduction, include_background, ignore_index, exclude_empty, backend, class_weight=None,
                    sync=False, process_group=None):
    """``class_weight``: the element term's per-class factor (CE weight or focal alpha), checked."""
    if per_channel:
        raise ValueError("per_channel does not apply to mode='multiclass': its statistics are always per class")
    target = _checks.input_and_class_map(input, target, ignore_index)
    _checks.class_weight(input, weight)
    _checks.reduction(reduction)
    group = _checks.sync_group(sync, process_group, per_sample)
    chosen = resolve(backend, input.device, differentiable_target=weight is not None and weight.requires_grad,
                     family="multiclass", classes=input.shape[1])
    if chosen == "reference":
        _check_class_targets(input, target, ignore_index)
        return reference_loss(input, target, per_sample=per_sample, weight=weight, reduction=reduction,
                              include_background=include_background, ignore_index=ignore_index,
                              exclude_empty=exclude_empty, process_group=group, **params)
    if group is not None:
        loss = SyncedMulticlassLoss.apply(input, target, weight, class_weight, fused_ops(chosen), group, per_sample,
                                          spec, ignore_index, include_background, exclude_empty, reduction,
                                          _checks.CHECK_TARGETS)
    else:
        loss, _coef = fused_ops(chosen).multiclass_loss(input, target, weight, class_weight, per_sample, *spec,
                                                        ignore_index, include_background, exclude_empty, reduction,
                                                        _checks.CHECK_TARGETS)
    if reduction == "none" and not include_background:
        loss = loss[..., 1:]
    return loss


def _check_class_targets(input, target, ignore_index) -> None:
    """The reference's target check: class indices, or per-class values in [0, 1] (a dense target)."""
    if _spec.is_dense_target(input, target):
        _checks.target_values(target)
    else:
        _checks.target_values(target, input.shape[1], ignore_index)


def _resolved(mode, activation, smooth, smooth_nr, smooth_dr, squared_pred) -> tuple:
    """(multiclass, spec options, the same for the reference) of the options every
    loss with a Dice term shares."""
    multiclass = _checks.mode(mode)
    activation = _checks.activation(activation, multiclass)
    smooth_nr, smooth_dr = _checks.smoothing(smooth, smooth_nr, smooth_dr)
    activation_fields = _spec.activation_spec(activation)
    spec_options = dict(smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=bool(squared_pred), **activation_fields)
    reference_options = dict(smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=bool(squared_pred),
                             from_logits=activation_fields["from_logits"])
    return multiclass, spec_options, reference_options


def _run_region(name: str, make_spec, input, target, *, mode, activation, smooth, smooth_nr, smooth_dr, squared_pred,
                per_sample, per_channel, weight, reduction, include_background, ignore_index, exclude_empty, sync,
                process_group, backend, **params):
    """Run the region loss ``name`` (its reference function's name) in ``mode``;
    ``params``: the loss's own parameters (alpha, beta, gamma, log_loss), for
    ``make_spec`` (a ``_spec`` factory) and the reference."""
    multiclass, spec_options, reference_options = _resolved(mode, activation, smooth, smooth_nr, smooth_dr,
                                                            squared_pred)
    spec = make_spec(**params, **spec_options)
    params = {**params, **reference_options}
    if multiclass:
        return _run_multiclass(getattr(reference, f"multiclass_{name}"), params, spec, input, target,
                               per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                               include_background=include_background, ignore_index=ignore_index,
                               exclude_empty=exclude_empty, backend=backend, sync=sync, process_group=process_group)
    _checks.binary_only_defaults(include_background, exclude_empty)
    return _run_binary(getattr(reference, name), params, spec, input, target, per_sample=per_sample,
                       per_channel=per_channel, weight=weight, reduction=reduction, backend=backend,
                       ignore_index=ignore_index, sync=sync, process_group=process_group)


# The losses pass their own arguments on as ``**locals()`` (taken first thing, so it
# holds exactly the arguments): each option is spelled once, in the signature.

SMOOTHING = ("smooth", "smooth_nr", "smooth_dr")
INDEX_OPTIONS = ("activation", "squared_pred")  # after the smoothing, in every loss with a Dice / Tversky index
LOG_LOSS = dict(log_loss=OPTION_DOCS["log_loss"])


def _docs(*names) -> dict:
    return {name: OPTION_DOCS[name] for name in names}


@documented({**_docs(*SMOOTHING, "mode", *INDEX_OPTIONS), **LOG_LOSS}, REGION_OPTIONS[1:])
def dice_loss(input: torch.Tensor, target: torch.Tensor, smooth: float | None = None, *, mode: Mode = "binary",
              activation: Activation | None = None, smooth_nr: float | None = None, smooth_dr: float | None = None,
              squared_pred: bool = False, log_loss: bool = False, per_sample: bool = False,
              per_channel: bool = False, weight: torch.Tensor | None = None, reduction: Reduction = "mean",
              include_background: bool = True, ignore_index: int | None = None, exclude_empty: bool = False,
              sync: bool = False, process_group=None, backend: Backend = "auto") -> torch.Tensor:
    """Dice loss 1 - (2*I + smooth_nr) / (P + T + smooth_dr) per group, I = sum(p*t),
    P = sum(p), T = sum(t) over the group's elements (p = sigmoid(input), or
    softmax(input, dim=1) with the one-hot target per class)."""
    arguments = locals()
    return _run_region("dice_loss", _spec.dice_spec, **arguments)


@documented({**_docs(*SMOOTHING, "mode", *INDEX_OPTIONS), **LOG_LOSS}, REGION_OPTIONS[1:])
def iou_loss(input: torch.Tensor, target: torch.Tensor, smooth: float | None = None, *, mode: Mode = "binary",
             activation: Activation | None = None, smooth_nr: float | None = None, smooth_dr: float | None = None,
             squared_pred: bool = False, log_loss: bool = False, per_sample: bool = False, per_channel: bool = False,
             weight: torch.Tensor | None = None, reduction: Reduction = "mean", include_background: bool = True,
             ignore_index: int | None = None, exclude_empty: bool = False, sync: bool = False, process_group=None,
             backend: Backend = "auto") -> torch.Tensor:
    """IoU (Jaccard) loss 1 - (I + smooth_nr) / (P + T - I + smooth_dr) per group."""
    arguments = locals()
    return _run_region("iou_loss", _spec.iou_spec, **arguments)


jaccard_loss = iou_loss

_TVERSKY_PARAMS = dict(alpha="weight of the false positives FP = P - I (>= 0).",
                       beta="weight of the false negatives FN = T - I (>= 0); alpha = beta = 0.5 is Dice, 1 is IoU.")


@documented({**_TVERSKY_PARAMS, **_docs(*SMOOTHING, "mode", *INDEX_OPTIONS), **LOG_LOSS}, REGION_OPTIONS[1:])
def tversky_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, beta: float = 0.5,
                 smooth: float | None = None, *, mode: Mode = "binary", activation: Activation | None = None,
                 smooth_nr: float | None = None, smooth_dr: float | None = None, squared_pred: bool = False,
                 log_loss: bool = False, per_sample: bool = False, per_channel: bool = False,
                 weight: torch.Tensor | None = None, reduction: Reduction = "mean", include_background: bool = True,
                 ignore_index: int | None = None, exclude_empty: bool = False, sync: bool = False, process_group=None,
                 backend: Backend = "auto") -> torch.Tensor:
    """Tversky loss 1 - (I + smooth_nr) / (I + alpha*FP + beta*FN + smooth_dr) per group."""
    arguments = locals()
    _checks.non_negative(alpha=alpha, beta=beta)
    return _run_region("tversky_loss", _spec.tversky_spec, **arguments)


@documented(
    dict(**_TVERSKY_PARAMS,
         gamma="exponent of the Tversky loss (>= 0; 1: the Tversky loss; otherwise a negative loss counts as 0).",
         **_docs(*SMOOTHING, "mode", *INDEX_OPTIONS)),
    REGION_OPTIONS[1:],
)
def focal_tversky_loss(input: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, beta: float = 0.5,
                       gamma: float = 1.0, smooth: float | None = None, *, mode: Mode = "binary",
                       activation: Activation | None = None, smooth_nr: float | None = None,
                       smooth_dr: float | None = None, squared_pred: bool = False, per_sample: bool = False,
                       per_channel: bool = False, weight: torch.Tensor | None = None, reduction: Reduction = "mean",
                       include_background: bool = True, ignore_index: int | None = None, exclude_empty: bool = False,
                       sync: bool = False, process_group=None, backend: Backend = "auto") -> torch.Tensor:
    """Focal Tversky loss (Tversky loss) ** gamma per group."""
    arguments = locals()
    _checks.non_negative(alpha=alpha, beta=beta, gamma=gamma)
    return _run_region("focal_tversky_loss", _spec.tversky_spec, **arguments)


# Dice + an element term (BCE, CE or focal) in one pass.

_DICE_WEIGHT = dict(dice_weight="weight of the Dice term (>= 0).")
_MULTICLASS_COMBINED_RETURNS = "the loss, a 0-d tensor (reduction 'mean' or 'sum'; 'none' is refused)."


_TERM_WEIGHTS = ("dice_weight", "bce_weight", "ce_weight", "focal_weight")  # the terms' weights, numbers >= 0


def _run_dice_and_element(name: str, input, target, *, mode, activation, smooth, smooth_nr, smooth_dr, squared_pred,
                          dice_weight, element_weight, alpha, gamma, per_sample, per_channel, weight, reduction,
                          include_background, ignore_index, exclude_empty, sync, process_group, backend,
                          reference_params, class_weight=None, label_smoothing=0.0):
    """Dice + element term: binary per group (the element losses' mean per group);
    multiclass the element losses' mean over the pixels not ignored (sum with 'sum').
    ``alpha``: a number, None, or (multiclass) one per class; ``class_weight``: CE's class
    weights (its 'mean' is then weighted, as F.cross_entropy's)."""
    multiclass, spec_options, reference_options = _resolved(mode, activation, smooth, smooth_nr, smooth_dr,
                                                            squared_pred)
    alpha, alpha_per_class = _alpha(input, alpha, multiclass)
    term_weights = {key: value for key, value in reference_params.items() if key in _TERM_WEIGHTS}
    _checks.non_negative(gamma=gamma, **term_weights)
    params = {**reference_params, **reference_options}
    if alpha_per_class is not None:
        params["alpha"] = alpha_per_class
    if multiclass:
        if reduction == "none":
            raise ValueError(
                f"reduction='none' is not defined for {name} with mode='multiclass' (a per-class Dice and a "
                f"per-pixel element loss); use 'mean' or 'sum'"
            )
        dense = _spec.is_dense_target(input, target) and target.shape == input.shape
        spec = _spec.dice_elem_spec(dice_weight=dice_weight, elem_weight=element_weight, alpha=alpha, gamma=gamma,
                                    elem_mean=reduction == "mean", label_smoothing=label_smoothing,
                                    weighted_mean=class_weight is not None and not dense, **spec_options)
        reference_name = name if name == "dice_ce_loss" else f"multiclass_{name}"
        return _run_multiclass(getattr(reference, reference_name), params, spec, input, target, per_sample=per_sample,
                               per_channel=per_channel, weight=weight, reduction=reduction,
                               include_background=include_background, ignore_index=ignore_index,
                               exclude_empty=exclude_empty, class_weight=alpha_per_class if class_weight is None
                               else class_weight, sync=sync, process_group=process_group, backend=backend)
    _checks.binary_only_defaults(include_background, exclude_empty)
    spec = _spec.dice_elem_spec(dice_weight=dice_weight, elem_weight=element_weight, alpha=alpha, gamma=gamma,
                                **spec_options)
    params["clamped_log"] = spec.clamped_log
    return _run_binary(getattr(reference, name), params, spec, input, target, per_sample=per_sample,
                       per_channel=per_channel, weight=weight, reduction=reduction, backend=backend,
                       ignore_index=ignore_index, sync=sync, process_group=process_group)


def _alpha(input, alpha, multiclass: bool):
    """(the scalar alpha or None, the per-class alpha tensor or None), checked. Binary: a number
    in [0, 1] (the positives' weight) or None; multiclass: also one factor per class (>= 0)."""
    if alpha is None or isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        if alpha is not None:
            _checks.non_negative(alpha=alpha)
            if alpha > 1:
                raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
        return alpha, None
    if not multiclass:
        raise ValueError(
            f"alpha must be a number in [0, 1] or None with mode='binary' or 'multilabel' (the positives' weight); "
            f"one alpha per class is for mode='multiclass', got {alpha!r}"
        )
    return None, _checks.per_class(input, alpha, "alpha")


@documented(
    dict(**_docs(*SMOOTHING), **_DICE_WEIGHT, bce_weight="weight of the BCE term (>= 0).",
         **_docs(*INDEX_OPTIONS)),
    ("per_sample", "per_channel", "weight", "reduction", "ignore_index", "sync", "process_group", "backend"),
)
def dice_bce_loss(input: torch.Tensor, target: torch.Tensor, smooth: float | None = None, *,
                  activation: Activation | None = None, smooth_nr: float | None = None,
                  smooth_dr: float | None = None, squared_pred: bool = False, per_sample: bool = False,
                  per_channel: bool = False, weight: torch.Tensor | None = None, reduction: Reduction = "mean",
                  ignore_index: int | None = None, dice_weight: float = 1.0, bce_weight: float = 1.0,
                  sync: bool = False, process_group=None, backend: Backend = "auto") -> torch.Tensor:
    """Binary / multi-label: bce_weight * BCE (mean over the group; with logits
    BCE-with-logits) + dice_weight * Dice loss, per group, in one pass. With the
    defaults: the mean BCE over the tensor + the Dice loss of the tensor."""
    return _run_dice_and_element("dice_bce_loss", input, target, mode="binary", activation=activation, smooth=smooth,
                                 smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=squared_pred,
                                 dice_weight=dice_weight, element_weight=bce_weight, alpha=None, gamma=0.0,
                                 per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                                 include_background=True, ignore_index=ignore_index, exclude_empty=False, sync=sync,
                                 process_group=process_group, backend=backend,
                                 reference_params=dict(dice_weight=dice_weight, bce_weight=bce_weight))


@documented(
    dict(**_docs(*SMOOTHING), **_DICE_WEIGHT, ce_weight="weight of the cross-entropy term (>= 0).",
         ce_class_weight=(
             "(C,) class weights of the cross-entropy term, F.cross_entropy's weight= ('mean' then divides by the "
             "sum of the pixels' class weights, as F.cross_entropy; of a per-class target, by the pixels); "
             "``weight`` weighs the Dice term's classes."
         ),
         label_smoothing="F.cross_entropy's label_smoothing, in [0, 1]: targets t (1 - eps) + eps / C.",
         **_docs(*INDEX_OPTIONS)),
    ("per_sample", "weight", "reduction", "include_background", "ignore_index", "exclude_empty", "sync",
     "process_group", "backend"),
    returns=_MULTICLASS_COMBINED_RETURNS,
)
def dice_ce_loss(input: torch.Tensor, target: torch.Tensor, smooth: float | None = None, *,
                 activation: Activation | None = None, smooth_nr: float | None = None, smooth_dr: float | None = None,
                 squared_pred: bool = False, per_sample: bool = False, weight: torch.Tensor | None = None,
                 reduction: Reduction = "mean", include_background: bool = True, ignore_index: int | None = None,
                 exclude_empty: bool = False, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 ce_class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0, sync: bool = False,
                 process_group=None, backend: Backend = "auto") -> torch.Tensor:
    """Multi-class: ce_weight * cross-entropy (as F.cross_entropy, with ce_class_weight,
    ignore_index and label_smoothing; 'mean' over the pixels not ignored) + dice_weight *
    multi-class Dice loss, in one pass. ``input`` (N, C, *spatial) logits, ``target``
    (N, *spatial) class indices or (N, C, *spatial) per-class targets; reduction 'mean' or
    'sum' (both terms)."""
    _checks.unit_interval(label_smoothing=label_smoothing)
    class_weight = _checks.per_class(input, ce_class_weight, "ce_class_weight")
    return _run_dice_and_element("dice_ce_loss", input, target, mode="multiclass", activation=activation,
                                 smooth=smooth, smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=squared_pred,
                                 dice_weight=dice_weight, element_weight=ce_weight, alpha=None, gamma=0.0,
                                 per_sample=per_sample, per_channel=False, weight=weight, reduction=reduction,
                                 include_background=include_background, ignore_index=ignore_index,
                                 exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend,
                                 reference_params=dict(dice_weight=dice_weight, ce_weight=ce_weight,
                                                       ce_class_weight=class_weight, label_smoothing=label_smoothing),
                                 class_weight=class_weight, label_smoothing=label_smoothing)


_FOCAL_PARAMS = dict(
    alpha=(
        "binary: weight of the positives, in [0, 1] (negatives: 1 - alpha); multiclass: a "
        "factor of every pixel's loss, or one per class (a sequence or a (C,) tensor: alpha_y per "
        "pixel); None: no alpha weighting."
    ),
    gamma="focusing exponent (>= 0; 0 with alpha=None: BCE or cross-entropy).",
)


@documented(
    dict(**_FOCAL_PARAMS, **_docs(*SMOOTHING, "mode", *INDEX_OPTIONS), **_DICE_WEIGHT,
         focal_weight="weight of the focal term (>= 0)."),
    REGION_OPTIONS[1:],
    returns=(
        "the loss: a 0-d tensor, or with reduction='none' (binary/multilabel only) one per group, "
        "in float32 (float64 for a float64 input)."
    ),
)
def dice_focal_loss(input: torch.Tensor, target: torch.Tensor, alpha=0.25, gamma: float = 2.0,
                    smooth: float | None = None, *, mode: Mode = "binary", activation: Activation | None = None,
                    smooth_nr: float | None = None, smooth_dr: float | None = None, squared_pred: bool = False,
                    dice_weight: float = 1.0, focal_weight: float = 1.0, per_sample: bool = False,
                    per_channel: bool = False, weight: torch.Tensor | None = None, reduction: Reduction = "mean",
                    include_background: bool = True, ignore_index: int | None = None, exclude_empty: bool = False,
                    sync: bool = False, process_group=None, backend: Backend = "auto") -> torch.Tensor:
    """focal_weight * focal loss + dice_weight * Dice loss in one pass, with the
    defaults of ``focal_loss`` and ``dice_loss`` (so with the defaults, their sum).
    binary/multilabel: per group, the focal losses' mean over the group + the
    group's Dice loss; multiclass: the softmax focal loss's mean over the pixels
    not ignored ('sum': its sum) + the multi-class Dice loss (as ``dice_ce_loss``)."""
    return _run_dice_and_element("dice_focal_loss", input, target, mode=mode, activation=activation, smooth=smooth,
                                 smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=squared_pred,
                                 dice_weight=dice_weight, element_weight=focal_weight, alpha=alpha, gamma=gamma,
                                 per_sample=per_sample, per_channel=per_channel, weight=weight, reduction=reduction,
                                 include_background=include_background, ignore_index=ignore_index,
                                 exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend,
                                 reference_params=dict(alpha=alpha, gamma=gamma, dice_weight=dice_weight,
                                                       focal_weight=focal_weight))


@documented(
    dict(**_FOCAL_PARAMS, mode=OPTION_DOCS["mode"], activation=OPTION_DOCS["activation"],
         reduction="'mean' (see Returns), 'sum' or 'none'."),
    ("ignore_index", "backend"),
    returns=(
        "the loss: a 0-d tensor ('mean': over the elements, or the pixels not ignored; 'sum'), or "
        "with reduction='none' the per-element (binary) or per-pixel (multiclass, (N, *spatial)) "
        "map in input's dtype."
    ),
)
def focal_loss(input: torch.Tensor, target: torch.Tensor, alpha=0.25, gamma: float = 2.0, *,
               mode: Mode = "binary", activation: Activation | None = None, reduction: Reduction = "mean",
               ignore_index: int | None = None, backend: Backend = "auto") -> torch.Tensor:
    """Focal loss (Lin et al. 2017).

    binary: as torchvision.ops.sigmoid_focal_loss, alpha_t * (1 - p_t)**gamma *
    BCE-with-logits per element, p_t = p*t + (1-p)*(1-t), alpha_t = alpha*t +
    (1-alpha)*(1-t).
    multiclass: -alpha * (1 - p_y)**gamma * log p_y per pixel (alpha_y with one alpha
    per class), not divided by C (MONAI and kornia average over classes too, so theirs
    is ours / C); a per-class target: sum_c alpha_c t_c (1 - p_c)**gamma (-log p_c)."""
    _checks.non_negative(gamma=gamma)
    _checks.reduction(reduction)
    multiclass = _checks.mode(mode)
    scalar_alpha, class_alpha = _alpha(input, alpha, multiclass)
    activation_fields = _spec.activation_spec(_checks.activation(activation, multiclass))
    spec = _spec.focal_spec(scalar_alpha, gamma, reduction, **activation_fields)
    if multiclass:
        target = _checks.input_and_class_map(input, target, ignore_index)
        chosen = resolve(backend, input.device, family="multiclass", classes=input.shape[1])
        if chosen == "reference":
            _check_class_targets(input, target, ignore_index)
            return reference.multiclass_focal_loss(input, target, alpha=alpha if class_alpha is None else class_alpha,
                                                   gamma=gamma, reduction=reduction, ignore_index=ignore_index,
                                                   from_logits=spec.from_logits)
        ops = fused_ops(chosen)
        if reduction == "none":
            return ops.multiclass_focal_map(input, target, class_alpha, spec.focal_alpha, spec.focal_gamma,
                                            spec.from_logits, spec.clamped_log, ignore_index, _checks.CHECK_TARGETS)
        loss, _coef = ops.multiclass_loss(input, target, None, class_alpha, False, *spec, ignore_index, True, False,
                                          "sum", _checks.CHECK_TARGETS)
        return loss
    target = _checks.input_and_target(input, target)
    _checks.binary_ignore_index(ignore_index, target.dtype)
    chosen = resolve(backend, input.device, differentiable_target=target.requires_grad)
    if chosen == "reference":
        _checks.target_values(target, None, ignore_index)
        return reference.focal_loss(input, target, alpha=alpha, gamma=gamma, reduction=reduction,
                                    from_logits=spec.from_logits, clamped_log=spec.clamped_log,
                                    ignore_index=ignore_index)
    ops = fused_ops(chosen)
    if reduction == "none":
        return ops.binary_focal_map(input, target, spec.focal_alpha, spec.focal_gamma, spec.focal_form,
                                    spec.from_logits, spec.clamped_log, ignore_index, _checks.CHECK_TARGETS)
    loss, _coef = ops.binary_loss(input, target, None, False, False, *spec, ignore_index, "sum",
                                  _checks.CHECK_TARGETS)
    return loss


@documented(
    dict(smooth="added to the numerator and the denominator (>= 0; None: 1e-5, MONAI's, as the weights make "
                "the sums small; not with smooth_nr / smooth_dr).",
         mode=OPTION_DOCS["mode"] + " binary/multilabel: the classes are the channels (dim 1).",
         activation=OPTION_DOCS["activation"],
         smooth_nr="added to the numerator only (>= 0; None: 1e-5 unless smooth is given).",
         smooth_dr="added to the denominator only (>= 0; None: 1e-5 unless smooth is given).",
         weight_type="w_c = 1/T_c**2 ('square', Sudre's), 1/T_c ('simple') or 1 ('uniform'); a class absent "
                     "from the target takes the largest finite weight of its group (MONAI's rule); the weights "
                     "carry no gradient.",
         per_sample="one loss per sample (its classes' sums), reduced over samples; else one for the batch.",
         reduction="'mean' over the groups, 'sum', or 'none' ((N,) with per_sample, else ()).",
         include_background="False leaves class (channel) 0 out of the sums.",
         ignore_index=OPTION_DOCS["ignore_index"]),
    ("sync", "process_group", "backend"),
    returns="the loss: a 0-d tensor, or with reduction='none' one per group, in float32 (float64 for float64 input).",
)
def generalized_dice_loss(input: torch.Tensor, target: torch.Tensor, smooth: float | None = None, *,
                          mode: Mode = "binary", activation: Activation | None = None, smooth_nr: float | None = None,
                          smooth_dr: float | None = None, weight_type: WeightType = "square",
                          per_sample: bool = False, reduction: Reduction = "mean", include_background: bool = True,
                          ignore_index: int | None = None, sync: bool = False, process_group=None,
                          backend: Backend = "auto") -> torch.Tensor:
    """Generalized Dice loss (Sudre et al. 2017) per group, over its classes:
    1 - (2 sum_c w_c I_c + smooth_nr) / (sum_c w_c (P_c + T_c) + smooth_dr)."""
    multiclass = _checks.mode(mode)
    activation_fields = _spec.activation_spec(_checks.activation(activation, multiclass))
    smooth_nr, smooth_dr = _checks.smoothing(smooth, smooth_nr, smooth_dr, default=1e-5)
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    _checks.reduction(reduction)
    if multiclass:
        target = _checks.input_and_class_map(input, target, ignore_index)
    else:
        target = _checks.input_and_target(input, target)
        _checks.binary_ignore_index(ignore_index, target.dtype)
        _checks.groups(input, per_sample, True, None)
    group = _checks.sync_group(sync, process_group, per_sample)
    family = "multiclass" if multiclass else "binary"
    chosen = resolve(backend, input.device, differentiable_target=not multiclass and target.requires_grad,
                     family=family, classes=input.shape[1] if multiclass else 0)
    if chosen == "reference":
        if multiclass:
            _check_class_targets(input, target, ignore_index)
        else:
            _checks.target_values(target, None, ignore_index)
        return reference.generalized_dice_loss(input, target, smooth_nr, smooth_dr, weight_type, per_sample,
                                               include_background, ignore_index, reduction, multiclass,
                                               activation_fields["from_logits"], group)
    spec = _spec.LossSpec(region=True, smooth_nr=smooth_nr, smooth_dr=smooth_dr, **activation_fields)
    return GeneralizedDiceLoss.apply(input, target, fused_ops(chosen), family, spec, per_sample, weight_type,
                                     include_background, ignore_index, reduction, group, _checks.CHECK_TARGETS)


# The Lovász losses: per group (each sample with per_sample, else the whole batch), the Lovász
# extension of the Jaccard loss; the fused backends sort with torch.sort and fuse the rest.

_LOVASZ_RETURNS = ("the loss: a 0-d tensor, or with reduction='none' and per_sample one per sample ((N,)), in "
                   "float32 (float64 for a float64 input).")
_LOVASZ_OPTIONS = dict(
    per_sample="one loss per sample (smp's and the paper's per_image), reduced over samples; else one loss "
               "for the whole batch (all its elements in one sort).",
    reduction="'mean' over the samples (a sample with every element ignored counts as 0, as in smp), 'sum', or "
              "'none'.",
)


def _reduce_samples(losses: torch.Tensor, per_sample: bool, reduction: str) -> torch.Tensor:
    if not per_sample:
        return losses.view(())  # the one group's loss; a view, whose backward allocates nothing (losses[0]'s did)
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


@documented(_LOVASZ_OPTIONS, ("ignore_index", "backend"), returns=_LOVASZ_RETURNS)
def lovasz_hinge_loss(input: torch.Tensor, target: torch.Tensor, *, per_sample: bool = False,
                      reduction: Reduction = "mean", ignore_index: int | None = None,
                      backend: Backend = "auto") -> torch.Tensor:
    """Lovász hinge loss (Berman et al. 2018), binary / multi-label, on logits: the hinge
    errors e = 1 - x (2t - 1) sorted in decreasing order (stable), dotted with the Lovász
    gradient of the Jaccard loss J_i - J_{i-1}, J_i = 1 - |T minus top i| / |T union top i|,
    relu(e) entering; over the elements not ignored. As smp's LovaszLoss (mode 'binary' or
    'multilabel': all of a sample's channels in one sort) and kornia's lovasz_hinge_loss
    (per_sample=True)."""
    target = _checks.input_and_target(input, target)
    _checks.binary_ignore_index(ignore_index, target.dtype)
    _checks.reduction(reduction)
    chosen = resolve(backend, input.device, differentiable_target=target.requires_grad, family="lovasz")
    if chosen == "reference":
        _checks.target_values(target, None, ignore_index)
        return reference.lovasz_hinge_loss(input, target, per_sample=per_sample, ignore_index=ignore_index,
                                           reduction=reduction)
    losses = binary_lovasz_losses(input, target, fused_ops(chosen), per_sample=per_sample,
                                  ignore_index=ignore_index, check_target=_checks.CHECK_TARGETS)
    return _reduce_samples(losses, per_sample, reduction)


def _lovasz_classes(classes, num_classes: int, device) -> torch.Tensor | None:
    """The (C,) mask of the classes a list names (None for 'present' and 'all'), checked."""
    if isinstance(classes, str):
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present', 'all' or a list of class indices, got {classes!r}")
        return None
    listed = list(classes)
    bad = [k for k in listed if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < num_classes]
    if not listed or bad or len(set(listed)) != len(listed):
        raise ValueError(f"classes must list distinct class indices in [0, {num_classes}), got {classes!r}")
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[listed] = True
    return mask.to(device)


@documented(
    dict(classes=("the classes averaged in each group: 'present' (those the group's target holds; smp's and the "
                  "paper's default), 'all' (kornia's), or a list of class indices."),
         activation=OPTION_DOCS["activation"],
         weight=("(C,) factors of the classes' terms (kornia's weight): the mean still divides by the number of "
                 "classes counted. Only the reference differentiates it."),
         **_LOVASZ_OPTIONS),
    ("ignore_index", "backend"),
    returns=_LOVASZ_RETURNS,
)
def lovasz_softmax_loss(input: torch.Tensor, target: torch.Tensor, classes="present", *, per_sample: bool = False,
                        activation: Activation | None = None, weight: torch.Tensor | None = None,
                        reduction: Reduction = "mean", ignore_index: int | None = None,
                        backend: Backend = "auto") -> torch.Tensor:
    """Lovász-softmax loss (Berman et al. 2018), multi-class: per group, the mean over the
    classes counted of the Lovász extension of class c's Jaccard loss at the errors
    |[y = c] - p_c| (p = softmax(input, dim=1)) over the pixels not ignored; a group with no
    class counted scores 0. As smp's LovaszLoss (mode 'multiclass', classes 'present') and
    kornia's lovasz_softmax_loss (per_sample=True, classes 'all')."""
    target = _checks.input_and_class_map(input, target, ignore_index)
    from_logits = _spec.activation_spec(_checks.activation(activation, True))["from_logits"]
    class_mask = _lovasz_classes(classes, input.shape[1], input.device)
    _checks.class_weight(input, weight)
    _checks.reduction(reduction)
    chosen = resolve(backend, input.device, differentiable_target=weight is not None and weight.requires_grad,
                     family="lovasz")
    if chosen == "reference":
        _check_class_targets(input, target, ignore_index)
        return reference.lovasz_softmax_loss(input, target, classes, per_sample=per_sample, weight=weight,
                                             ignore_index=ignore_index, reduction=reduction, from_logits=from_logits)
    losses, positives = multiclass_lovasz_losses(input, target, fused_ops(chosen), per_sample=per_sample,
                                                 from_logits=from_logits, ignore_index=ignore_index,
                                                 check_target=_checks.CHECK_TARGETS)
    counted = positives > 0 if classes == "present" else (
        torch.ones_like(positives, dtype=torch.bool) if class_mask is None else class_mask.expand_as(positives))
    if weight is not None:
        losses = losses * weight.to(losses.dtype)
    group_losses = torch.where(counted, losses, 0.0).sum(-1) / counted.sum(-1).clamp(min=1)
    return _reduce_samples(group_losses, per_sample, reduction)


LOSSES = {"dice": dice_loss, "iou": iou_loss, "tversky": tversky_loss, "focal_tversky": focal_tversky_loss,
          "focal": focal_loss, "dice_bce": dice_bce_loss, "dice_focal": dice_focal_loss}

# The losses that take mode='multiclass', and the multi-class-only Dice+CE.
MULTICLASS_LOSSES = {"dice": dice_loss, "iou": iou_loss, "tversky": tversky_loss, "focal_tversky": focal_tversky_loss,
                     "focal": focal_loss, "dice_ce": dice_ce_loss, "dice_focal": dice_focal_loss}
