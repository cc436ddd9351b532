"""The peers: segmentation_models_pytorch's and MONAI's own loss classes, configured to compute
the loss of a benchmark row, on the rows where they can (the plain call of binary Dice, focal
and Dice+BCE, multi-class Dice and Dice+CE).

fusedloss's defaults, in each peer's terms (the loss value check against eager's confirms them):
- dice: one group of every element, 1 - (2 I + 1) / (P + T + 1). smp DiceLoss('binary',
  smooth=0.5) (its smooth s is our 2 s); MONAI DiceLoss(sigmoid=True, batch=True, smooth_nr=1,
  smooth_dr=1) on the tensors viewed as (1, 1, -1) (MONAI's groups are channels).
- focal: the mean of torchvision's sigmoid focal loss, alpha 0.25, gamma 2: smp FocalLoss('binary',
  alpha=0.25), MONAI FocalLoss(alpha=0.25) (the same for hard targets, which the benchmark uses).
- dice_bce: mean BCE + that Dice: MONAI DiceCELoss(sigmoid=True, ...) on one channel; smp has no
  single class for it, so smp's is its DiceLoss + SoftBCEWithLogitsLoss(ignore_index=None).
- multiclass_dice: per class over the batch, mean over classes: smp DiceLoss('multiclass',
  smooth=0.5), MONAI DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1, smooth_dr=1).
- dice_ce: mean CE + that Dice: MONAI DiceCELoss(softmax=True, to_onehot_y=True, batch=True, ...);
  smp's DiceLoss + SoftCrossEntropyLoss(smooth_factor=0, ignore_index=None).
- lovasz_hinge (plain: the whole batch in one sort; per_sample: one loss per sample, their mean):
  smp LovaszLoss('binary', per_image=False / True). lovasz_softmax (classes 'present'): smp
  LovaszLoss('multiclass', per_image=False / True) (it applies the softmax itself). MONAI has no
  Lovász loss. smp's Lovász code computes in fp32 only (its hinge promotes bf16 / fp16 errors
  to fp32; its softmax loss fails on them, a dot of their dtype with fp32 Jaccard steps), so
  other logits are cast to fp32 in the call; it takes a uint8 or int64 target as it is.
What a peer needs of the inputs that the benchmark's do not have (smp's int64 class map and
float BCE target for Dice, fp32 logits for Lovász, MONAI's (N, 1, *) label map) is made inside
the timed call, as a user must.
"""

from __future__ import annotations

import importlib

import torch

PEERS = ("smp", "monai")
_MODULES = {"smp": "segmentation_models_pytorch.losses", "monai": "monai.losses"}
_PEER_LOSSES = ("dice", "focal", "dice_bce", "multiclass_dice", "dice_ce")
# Rows of one peer only, loss -> the variants it computes ("" the plain call): smp's LovaszLoss.
_PEER_ONLY = {"smp": {"lovasz_hinge": ("", "per_sample"), "lovasz_softmax": ("", "per_sample")}}


def unavailable_reason(peer: str) -> str | None:
    try:
        importlib.import_module(_MODULES[peer])
    except Exception as error:  # ImportError, or a broken dependency (torchvision) failing at import
        return f"{_MODULES[peer]} does not import ({type(error).__name__}: {error})"
    return None


def version(peer: str) -> str | None:
    """The peer package's version (None where it does not import)."""
    if unavailable_reason(peer) is not None:
        return None
    return importlib.import_module(_MODULES[peer].split(".")[0]).__version__


def loss_fn(peer: str, case):
    """A callable (logits, target) -> the row's loss computed by ``peer``, or None where the peer
    has no class for this row (another loss, or a variant)."""
    own = _PEER_ONLY.get(peer, {})
    if case.loss in own:
        if case.variant not in own[case.loss]:
            return None
        return _smp_lovasz(importlib.import_module(_MODULES[peer]), case.loss, case.variant == "per_sample")
    if case.loss not in _PEER_LOSSES or case.variant:
        return None
    losses = importlib.import_module(_MODULES[peer])
    return (_smp if peer == "smp" else _monai)(losses, case.loss)


def _smp_lovasz(losses, loss, per_image):
    lovasz = losses.LovaszLoss("binary" if loss == "lovasz_hinge" else "multiclass", per_image=per_image)
    return lambda x, t: lovasz(x.float(), t)  # fp32 only: .float() is x itself for fp32 logits


def _smp(losses, loss):
    if loss in ("dice", "dice_bce"):
        dice = losses.DiceLoss("binary", smooth=0.5)
        if loss == "dice":
            return dice
        bce = losses.SoftBCEWithLogitsLoss(ignore_index=None)
        return lambda x, t: dice(x, t) + bce(x, t.to(x.dtype))
    if loss == "focal":
        return losses.FocalLoss("binary", alpha=0.25)
    dice = losses.DiceLoss("multiclass", smooth=0.5)
    if loss == "multiclass_dice":
        return lambda x, y: dice(x, y.long())
    cross_entropy = losses.SoftCrossEntropyLoss(smooth_factor=0.0, ignore_index=None)
    return lambda x, y: dice(x, y.long()) + cross_entropy(x, y.long())


def _one_group(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(1, 1, -1)  # MONAI's groups are channels: one of every element


def _monai(losses, loss):
    smoothing = dict(smooth_nr=1.0, smooth_dr=1.0, batch=True)
    if loss == "dice":
        dice = losses.DiceLoss(sigmoid=True, **smoothing)
        return lambda x, t: dice(_one_group(x), _one_group(t))
    if loss == "focal":
        focal = losses.FocalLoss(alpha=0.25)
        return lambda x, t: focal(_one_group(x), _one_group(t))
    if loss == "dice_bce":
        dice_bce = losses.DiceCELoss(sigmoid=True, **smoothing)
        return lambda x, t: dice_bce(_one_group(x), _one_group(t))
    cls = losses.DiceLoss if loss == "multiclass_dice" else losses.DiceCELoss
    multiclass = cls(softmax=True, to_onehot_y=True, **smoothing)
    return lambda x, y: multiclass(x, y.unsqueeze(1))
