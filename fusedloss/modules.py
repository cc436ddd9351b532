"""Drop-in ``nn.Module`` losses: ``criterion = fusedloss.DiceLoss(); criterion(logits, target)``.

Each module holds its options and calls its twin in ``fusedloss.functional``;
the docstrings there give the formulas and the options. ``weight`` is kept as
a (non-persistent) buffer so it follows ``.to(device)``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import functional as F


class _FunctionalLoss(nn.Module):
    """A loss module whose forward is ``loss_fn(input, target, **options)``."""

    loss_fn = None

    def __init_subclass__(cls, **kwargs):
        # The docstring: the function's summary, its options as constructor Args, and
        # forward's input, target and result.
        super().__init_subclass__(**kwargs)
        fn = cls.loss_fn
        if fn is None:  # the shared base classes
            return
        options = {name: text for name, text in fn.argument_docs.items() if name not in ("input", "target")}
        summary = fn.__doc__.split("\n\n")[0].strip()
        cls.__doc__ = (f"{summary}\n\n    The module form of ``fusedloss.{fn.__name__}``: "
                       f"``{cls.__name__}(**options)(input, target)``.\n\n"
                       + F.sections(options, fn.returns_doc, returns_heading="forward(input, target) returns"))

    def __init__(self, weight=None, **options):
        super().__init__()
        self.options = options
        if weight is not None and not isinstance(weight, torch.Tensor):
            weight = torch.as_tensor(weight, dtype=torch.get_default_dtype())  # [1, 2] means weights, not ints
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            return type(self).loss_fn(input, target, weight=self.weight, **self.options)
        return type(self).loss_fn(input, target, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())


class _RegionLoss(_FunctionalLoss):
    """The options every region loss shares, in both modes."""

    def __init__(self, *, mode, per_sample, per_channel, weight, reduction, include_background, ignore_index,
                 exclude_empty, sync, process_group, backend, **params):
        super().__init__(weight, **params, mode=mode, per_sample=per_sample, per_channel=per_channel,
                         reduction=reduction, include_background=include_background, ignore_index=ignore_index,
                         exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


class _SmoothRegionLoss(_RegionLoss):
    """A region loss whose only parameter is ``smooth`` (Dice, IoU)."""

    def __init__(self, smooth=1.0, *, mode: F.Mode = "binary", per_sample=False, per_channel=False, weight=None,
                 reduction: F.Reduction = "mean", include_background=True, ignore_index=None, exclude_empty=False,
                 sync=False, process_group=None, backend: F.Backend = "auto"):
        super().__init__(smooth=smooth, mode=mode, per_sample=per_sample, per_channel=per_channel, weight=weight,
                         reduction=reduction, include_background=include_background, ignore_index=ignore_index,
                         exclude_empty=exclude_empty, sync=sync, process_group=process_group, backend=backend)


class DiceLoss(_SmoothRegionLoss):
    loss_fn = F.dice_loss


class IoULoss(_SmoothRegionLoss):
    loss_fn = F.iou_loss


JaccardLoss = IoULoss


class TverskyLoss(_RegionLoss):
    loss_fn = F.tversky_loss

    def __init__(self, alpha=0.5, beta=0.5, smooth=1.0, *, mode: F.Mode = "binary", per_sample=False, per_channel=False,
                 weight=None, reduction: F.Reduction = "mean", include_background=True, ignore_index=None,
                 exclude_empty=False, sync=False, process_group=None, backend: F.Backend = "auto"):
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, mode=mode, per_sample=per_sample,
                         per_channel=per_channel, weight=weight, reduction=reduction,
                         include_background=include_background, ignore_index=ignore_index, exclude_empty=exclude_empty,
                         sync=sync, process_group=process_group, backend=backend)


class FocalTverskyLoss(_RegionLoss):
    loss_fn = F.focal_tversky_loss

    def __init__(self, alpha=0.5, beta=0.5, gamma=1.0, smooth=1.0, *, mode: F.Mode = "binary", per_sample=False,
                 per_channel=False, weight=None, reduction: F.Reduction = "mean", include_background=True,
                 ignore_index=None, exclude_empty=False, sync=False, process_group=None, backend: F.Backend = "auto"):
        super().__init__(alpha=alpha, beta=beta, gamma=gamma, smooth=smooth, mode=mode, per_sample=per_sample,
                         per_channel=per_channel, weight=weight, reduction=reduction,
                         include_background=include_background, ignore_index=ignore_index, exclude_empty=exclude_empty,
                         sync=sync, process_group=process_group, backend=backend)


class FocalLoss(_FunctionalLoss):
    loss_fn = F.focal_loss

    def __init__(self, alpha=0.25, gamma=2.0, *, mode: F.Mode = "binary", reduction: F.Reduction = "mean",
                 ignore_index=None, backend: F.Backend = "auto"):
        super().__init__(
            None, alpha=alpha, gamma=gamma, mode=mode, reduction=reduction, ignore_index=ignore_index, backend=backend
        )


class DiceBCELoss(_FunctionalLoss):
    loss_fn = F.dice_bce_loss

    def __init__(self, smooth=1.0, *, per_sample=False, per_channel=False, weight=None, reduction: F.Reduction = "mean",
                 dice_weight=1.0, bce_weight=1.0, sync=False, process_group=None, backend: F.Backend = "auto"):
        super().__init__(weight, smooth=smooth, per_sample=per_sample, per_channel=per_channel, reduction=reduction,
                         dice_weight=dice_weight, bce_weight=bce_weight, sync=sync, process_group=process_group,
                         backend=backend)


class DiceCELoss(_FunctionalLoss):
    loss_fn = F.dice_ce_loss

    def __init__(self, smooth=1.0, *, per_sample=False, weight=None, reduction: F.Reduction = "mean",
                 include_background=True, ignore_index=None, exclude_empty=False, dice_weight=1.0, ce_weight=1.0,
                 sync=False, process_group=None, backend: F.Backend = "auto"):
        super().__init__(weight, smooth=smooth, per_sample=per_sample, reduction=reduction,
                         include_background=include_background, ignore_index=ignore_index, exclude_empty=exclude_empty,
                         dice_weight=dice_weight, ce_weight=ce_weight, sync=sync, process_group=process_group,
                         backend=backend)
