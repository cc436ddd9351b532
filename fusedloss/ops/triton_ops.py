"""The Triton backend's ops: the launchers of ``kernels/sigmoid_triton.py`` and
``kernels/softmax_triton.py`` registered as torch.library ops in the
``fusedloss_triton`` namespace."""

from __future__ import annotations

import torch

from .schema import FAMILIES, SYNC_SCHEMAS, register_fake_and_autograd

NAMESPACE = "fusedloss_triton"


def _define(launchers_by_family) -> None:
    for family, launchers in launchers_by_family.items():
        schemas = {**FAMILIES[family], **{name: schema for name, schema in SYNC_SCHEMAS.items()
                                          if name.startswith(family)}}
        for name, schema in schemas.items():
            torch.library.custom_op(f"{NAMESPACE}::{name}", getattr(launchers, name), mutates_args=(), schema=schema)
    register_fake_and_autograd(NAMESPACE, tuple(launchers_by_family))


def load():
    """Register the ops (once) and return their namespace, or raise ImportError
    when Triton is missing."""
    if not hasattr(load, "ops"):
        from ..kernels import sigmoid_triton, softmax_triton

        _define({"sigmoid": sigmoid_triton, "softmax": softmax_triton})
        load.ops = getattr(torch.ops, NAMESPACE)
    return load.ops
