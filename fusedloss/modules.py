"""Drop-in ``nn.Module`` losses: ``criterion = fusedloss.DiceLoss(); criterion(logits, target)``.

Each module holds its options and calls its twin in ``fusedloss.functional``:
the constructor takes exactly the function's arguments after ``input`` and
``target`` (the same names, defaults and order; its signature is the function's),
and the docstrings there give the formulas and the options. ``weight`` is kept
as a (non-persistent) buffer so it follows ``.to(device)``.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from . import functional as F


_PER_CLASS = ("weight", "ce_class_weight", "alpha")  # the options that may hold one value per channel / class


def _is_values(option) -> bool:
    return isinstance(option, (torch.Tensor, list, tuple))


class _FunctionalLoss(nn.Module):
    """A loss module whose forward is ``loss_fn(input, target, **options)``."""

    loss_fn = None

    def __init_subclass__(cls, **kwargs):
        # The constructor's signature and docstring come from the function: its summary,
        # its options as constructor Args, and forward's input, target and result.
        super().__init_subclass__(**kwargs)
        fn = cls.loss_fn
        parameters = list(inspect.signature(fn).parameters.values())[2:]  # after input, target
        cls.__signature__ = inspect.Signature(parameters)
        options = {name: text for name, text in fn.argument_docs.items() if name not in ("input", "target")}
        summary = fn.__doc__.split("\n\n")[0].strip()
        cls.__doc__ = (f"{summary}\n\n    The module form of ``fusedloss.{fn.__name__}``: "
                       f"``{cls.__name__}(**options)(input, target)``.\n\n"
                       + F.sections(options, fn.returns_doc, returns_heading="forward(input, target) returns"))

    def __init__(self, *args, **kwargs):
        super().__init__()
        bound = type(self).__signature__.bind(*args, **kwargs)  # a wrong name fails here, as in a call
        bound.apply_defaults()
        self.options = dict(bound.arguments)
        # Per-channel / per-class values are buffers: they follow .to(device) (not saved in state_dict).
        self._buffered = [name for name in _PER_CLASS if _is_values(self.options.get(name))]
        for name in self._buffered:
            values = self.options.pop(name)
            if not isinstance(values, torch.Tensor):
                values = torch.as_tensor(values, dtype=torch.get_default_dtype())  # [1, 2] means weights, not ints
            self.register_buffer(name, values, persistent=False)
        if "weight" in type(self).__signature__.parameters and "weight" not in self._buffered:
            self.register_buffer("weight", None, persistent=False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self._buffered:
            return type(self).loss_fn(input, target, **self.options)
        buffers = {name: getattr(self, name) for name in self._buffered}
        return type(self).loss_fn(input, target, **buffers, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())


class DiceLoss(_FunctionalLoss):
    loss_fn = F.dice_loss


class IoULoss(_FunctionalLoss):
    loss_fn = F.iou_loss


JaccardLoss = IoULoss


class TverskyLoss(_FunctionalLoss):
    loss_fn = F.tversky_loss


class FocalTverskyLoss(_FunctionalLoss):
    loss_fn = F.focal_tversky_loss


class FocalLoss(_FunctionalLoss):
    loss_fn = F.focal_loss


class DiceBCELoss(_FunctionalLoss):
    loss_fn = F.dice_bce_loss


class DiceCELoss(_FunctionalLoss):
    loss_fn = F.dice_ce_loss


class DiceFocalLoss(_FunctionalLoss):
    loss_fn = F.dice_focal_loss


class GeneralizedDiceLoss(_FunctionalLoss):
    loss_fn = F.generalized_dice_loss


class LovaszHingeLoss(_FunctionalLoss):
    loss_fn = F.lovasz_hinge_loss


class LovaszSoftmaxLoss(_FunctionalLoss):
    loss_fn = F.lovasz_softmax_loss
