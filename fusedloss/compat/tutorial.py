"""The classic tutorial's loss classes, with their signatures and their numbers, fused.

Many people meet segmentation losses through the well-known tutorial notebooks that
define ``DiceLoss``, ``DiceBCELoss``, ``IoULoss``, ``FocalLoss``, ``TverskyLoss`` and
``FocalTverskyLoss`` as ``nn.Module``s: ``__init__(self, weight=None, size_average=True)``
(both accepted and ignored, as there) and ``forward(self, inputs, targets, smooth=1, ...)``.
Each applies a sigmoid to the logits ``inputs`` and flattens everything into one group.
Swap the import and the numbers stay the same:

    from fusedloss.compat.tutorial import DiceBCELoss

What each class is here (``backend=`` is our one addition, keyword-only):

- ``DiceLoss``, ``IoULoss``, ``TverskyLoss``, ``FocalTverskyLoss``: ``fusedloss.dice_loss``,
  ``iou_loss``, ``tversky_loss``, ``focal_tversky_loss`` with the tutorial's smooth, alpha,
  beta and gamma (the same formulas).
- ``DiceBCELoss``: ``fusedloss.dice_bce_loss``, except that the BCE is the tutorial's
  ``F.binary_cross_entropy(torch.sigmoid(inputs), targets)``: the sigmoid rounded as torch
  rounds it and each log clamped at -100. It differs from BCE on logits at saturated logits
  (|x| > ~17 in fp32: BCE on logits keeps growing with |x|; here it stops at 100), in value
  and gradient.
- ``FocalLoss``: not ``fusedloss.FocalLoss``. The tutorial's is a different function: the
  mean BCE (as above) first, then ``alpha * (1 - exp(-BCE))**gamma * BCE`` with alpha = 0.8,
  gamma = 2. fusedloss.FocalLoss is Lin et al.'s per-element focal loss (= torchvision's);
  this one keeps the tutorial's semantics under the tutorial's name. The BCE mean is one
  fused pass; the scalar formula and its derivative dL/dBCE are a few 0-d tensor operations
  on the device (no host sync), which autograd chains into the fused backward.

Shapes: ``targets`` may have any shape with as many elements as ``inputs`` (the tutorial's
``view(-1)`` pairs them in that order); float, bool or uint8 values in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from .. import functional, reference
from .._spec import LossSpec, dice_elem_spec
from ..functional import Backend

# The tutorial's BCE: F.binary_cross_entropy(torch.sigmoid(inputs), targets), mean over every element.
_TUTORIAL_BCE = dict(from_logits=True, clamped_log=True)


def _paired(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """targets with inputs' shape when only their element counts agree (the tutorial flattens both)."""
    if targets.shape != inputs.shape and targets.numel() == inputs.numel():
        return targets.reshape(inputs.shape)
    return targets


def _whole_tensor(spec: LossSpec, reference_loss, params: dict, inputs, targets, backend):
    """One group over every element, reduced by mean (the tutorial's flattening)."""
    return functional._run_binary(reference_loss, params, spec, inputs, _paired(inputs, targets), per_sample=False,
                                  per_channel=False, weight=None, reduction="mean", backend=backend)


def tutorial_bce(inputs, targets, backend: Backend = "auto") -> torch.Tensor:
    """The mean of F.binary_cross_entropy(torch.sigmoid(inputs), targets), fused."""
    spec = LossSpec(elem=True, **_TUTORIAL_BCE)
    params = dict(smooth_nr=1.0, smooth_dr=1.0, dice_weight=0.0, bce_weight=1.0, **_TUTORIAL_BCE)
    return _whole_tensor(spec, reference.dice_bce_loss, params, inputs, targets, backend)


class _TutorialLoss(nn.Module):
    """The tutorial's constructor: weight and size_average are accepted and ignored, as there."""

    def __init__(self, weight=None, size_average=True, *, backend: Backend = "auto"):
        super().__init__()
        self.backend = backend

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"


class DiceLoss(_TutorialLoss):
    """1 - (2 I + smooth) / (P + T + smooth) over every element, p = sigmoid(inputs)."""

    def forward(self, inputs, targets, smooth=1):
        return functional.dice_loss(inputs, _paired(inputs, targets), smooth, backend=self.backend)


class IoULoss(_TutorialLoss):
    """1 - (I + smooth) / (P + T - I + smooth) over every element."""

    def forward(self, inputs, targets, smooth=1):
        return functional.iou_loss(inputs, _paired(inputs, targets), smooth, backend=self.backend)


class TverskyLoss(_TutorialLoss):
    """1 - (TP + smooth) / (TP + alpha FP + beta FN + smooth) over every element."""

    def forward(self, inputs, targets, smooth=1, alpha=0.5, beta=0.5):
        return functional.tversky_loss(inputs, _paired(inputs, targets), alpha, beta, smooth, backend=self.backend)


class FocalTverskyLoss(_TutorialLoss):
    """(Tversky loss) ** gamma over every element."""

    def forward(self, inputs, targets, smooth=1, alpha=0.5, beta=0.5, gamma=1):
        return functional.focal_tversky_loss(inputs, _paired(inputs, targets), alpha, beta, gamma, smooth,
                                             backend=self.backend)


class DiceBCELoss(_TutorialLoss):
    """The tutorial's BCE (on sigmoid(inputs), logs clamped at -100) + the Dice loss, in one pass."""

    def forward(self, inputs, targets, smooth=1):
        spec = dice_elem_spec(smooth, smooth, dice_weight=1.0, elem_weight=1.0, **_TUTORIAL_BCE)
        params = dict(smooth_nr=smooth, smooth_dr=smooth, **_TUTORIAL_BCE)
        return _whole_tensor(spec, reference.dice_bce_loss, params, inputs, targets, self.backend)


class FocalLoss(_TutorialLoss):
    """The tutorial's focal loss: alpha * (1 - exp(-BCE))**gamma * BCE of the mean BCE
    (not fusedloss.FocalLoss: see the module docstring)."""

    def forward(self, inputs, targets, alpha=0.8, gamma=2, smooth=1):
        bce = tutorial_bce(inputs, targets, self.backend)
        return alpha * (1 - torch.exp(-bce)) ** gamma * bce
