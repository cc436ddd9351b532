"""fusedloss: fused segmentation losses for PyTorch.

One fused pass forward, one hand-written pass backward, the same numbers as
the plain definitions (``fusedloss.reference``). ``fusedloss.backends()`` says
which backends run on this machine.
"""

from . import functional, reference
from .functional import (LOSSES, MULTICLASS_LOSSES, dice_bce_loss, dice_ce_loss, dice_focal_loss, dice_loss,
                         focal_loss, focal_tversky_loss, generalized_dice_loss, iou_loss, jaccard_loss,
                         lovasz_hinge_loss, lovasz_softmax_loss, tversky_loss)
from .modules import (DiceBCELoss, DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, FocalTverskyLoss,
                      GeneralizedDiceLoss, IoULoss, JaccardLoss, LovaszHingeLoss, LovaszSoftmaxLoss, TverskyLoss)
from .ops import BACKENDS, available_backends, backends, build_extension

__version__ = "0.1.0"

__all__ = ["BACKENDS", "LOSSES", "MULTICLASS_LOSSES", "DiceBCELoss", "DiceCELoss", "DiceFocalLoss", "DiceLoss",
           "FocalLoss", "FocalTverskyLoss", "GeneralizedDiceLoss", "IoULoss", "JaccardLoss", "TverskyLoss",
           "available_backends", "backends", "build_extension", "dice_bce_loss", "dice_ce_loss",
           "dice_focal_loss", "dice_loss", "focal_loss", "focal_tversky_loss", "functional",
           "generalized_dice_loss", "iou_loss", "jaccard_loss", "lovasz_hinge_loss", "lovasz_softmax_loss",
           "LovaszHingeLoss", "LovaszSoftmaxLoss", "reference", "tversky_loss"]
