"""The Triton backend's ops: the launchers of ``kernels/binary_triton.py``,
``kernels/multiclass_triton.py`` and ``kernels/lovasz_triton.py`` registered as
torch.library ops in the ``fusedloss_triton`` namespace."""

from __future__ import annotations

import torch

from .schema import ALL_SCHEMAS, register_fake_and_autograd

NAMESPACE = "fusedloss_triton"


def _define(launchers_by_family) -> None:
    for name, schema in ALL_SCHEMAS.items():
        family = "lovasz" if "lovasz" in name else name.split("_", 1)[0]  # "binary_loss" -> binary_triton
        launchers = launchers_by_family[family]
        torch.library.custom_op(f"{NAMESPACE}::{name}", getattr(launchers, name), mutates_args=(), schema=schema)
    register_fake_and_autograd(NAMESPACE)


def load():
    """Register the ops (once) and return their namespace, or raise ImportError
    when Triton is missing."""
    if not hasattr(load, "ops"):
        from ..kernels import binary_triton, lovasz_triton, multiclass_triton

        _define({"binary": binary_triton, "multiclass": multiclass_triton, "lovasz": lovasz_triton})
        load.ops = getattr(torch.ops, NAMESPACE)
    return load.ops
