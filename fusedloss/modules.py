"""Drop-in ``nn.Module`` losses: ``criterion = fusedloss.DiceLoss(); criterion(logits, target)``.

Each module holds its options and calls its twin in ``fusedloss.functional``;
the docstrings there give the formulas. ``weight`` is kept as a buffer so it
follows ``.to(device)``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import functional as F


class _FunctionalLoss(nn.Module):
    """A loss module whose forward is ``loss_fn(input, target, **options)``."""

    loss_fn = None

    def __init__(self, weight=None, **options):
        super().__init__()
        self.options = options
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight), persistent=False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            return type(self).loss_fn(input, target, weight=self.weight, **self.options)
        return type(self).loss_fn(input, target, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())


class DiceLoss(_FunctionalLoss):
    loss_fn = F.dice_loss

    def __init__(self, smooth=1.0, *, per_sample=False, per_channel=False, weight=None, reduction="mean",
                 backend="auto"):
        super().__init__(weight, smooth=smooth, per_sample=per_sample, per_channel=per_channel,
                         reduction=reduction, backend=backend)


class IoULoss(_FunctionalLoss):
    loss_fn = F.iou_loss

    def __init__(self, smooth=1.0, *, per_sample=False, per_channel=False, weight=None, reduction="mean",
                 backend="auto"):
        super().__init__(weight, smooth=smooth, per_sample=per_sample, per_channel=per_channel,
                         reduction=reduction, backend=backend)


JaccardLoss = IoULoss


class TverskyLoss(_FunctionalLoss):
    loss_fn = F.tversky_loss

    def __init__(self, alpha=0.5, beta=0.5, smooth=1.0, *, per_sample=False, per_channel=False, weight=None,
                 reduction="mean", backend="auto"):
        super().__init__(weight, alpha=alpha, beta=beta, smooth=smooth, per_sample=per_sample,
                         per_channel=per_channel, reduction=reduction, backend=backend)


class FocalTverskyLoss(_FunctionalLoss):
    loss_fn = F.focal_tversky_loss

    def __init__(self, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, *, per_sample=False, per_channel=False,
                 weight=None, reduction="mean", backend="auto"):
        super().__init__(weight, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, per_sample=per_sample,
                         per_channel=per_channel, reduction=reduction, backend=backend)


class FocalLoss(_FunctionalLoss):
    loss_fn = F.focal_loss

    def __init__(self, alpha=0.25, gamma=2.0, *, reduction="mean", backend="auto"):
        super().__init__(None, alpha=alpha, gamma=gamma, reduction=reduction, backend=backend)


class DiceBCELoss(_FunctionalLoss):
    loss_fn = F.dice_bce_loss

    def __init__(self, smooth=1.0, *, per_sample=False, per_channel=False, weight=None, reduction="mean",
                 dice_weight=1.0, bce_weight=1.0, backend="auto"):
        super().__init__(weight, smooth=smooth, per_sample=per_sample, per_channel=per_channel,
                         reduction=reduction, dice_weight=dice_weight, bce_weight=bce_weight, backend=backend)
