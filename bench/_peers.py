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
What a peer needs of the inputs that the benchmark's do not have (smp's int64 class map and
float BCE target, MONAI's (N, 1, *) label map) is made inside the timed call, as a user must.
"""

from __future__ import annotations

import importlib

import torch

PEERS = ("smp", "monai")
_MODULES = {"smp": "segmentation_models_pytorch.losses", "monai": "monai.losses"}
_PEER_LOSSES = ("dice", "focal", "dice_bce", "multiclass_dice", "dice_ce")


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
    if case.loss not in _PEER_LOSSES or case.variant:
        return None
    losses = importlib.import_module(_MODULES[peer])
    return (_smp if peer == "smp" else _monai)(losses, case.loss)


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
