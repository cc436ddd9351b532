"""The Triton backend's ops: the launchers of ``kernels/binary_triton.py``,
``kernels/multiclass_triton.py`` and ``kernels/lovasz_triton.py`` registered as
torch.library ops in the ``fusedloss_triton`` namespace."""

from __future__ import annotations

import torch

from .schema import ALL_SCHEMAS, AUTOGRAD_OPS, register_fake_and_autograd, register_no_backward

NAMESPACE = "fusedloss_triton"


def _define(launchers_by_family) -> None:
    # A torch.library.Library rather than torch.library.custom_op: custom_op's autograd kernel
    # rebuilds every argument from the schema on each call (schema.py, "Autograd kernels"), and
    # its device kernel looks the schema up and checks the outputs' aliasing on each call (the
    # launchers return new tensors; opcheck's test_schema checks that in the tests). What the
    # custom ops did otherwise is kept: the pt2_compliant tag, one kernel for every device, and
    # an error when a gradient reaches an op without a backward formula.
    library = torch.library.Library(NAMESPACE, "DEF")
    for name, schema in ALL_SCHEMAS.items():
        family = "lovasz" if "lovasz" in name else name.split("_", 1)[0]  # "binary_loss" -> binary_triton
        launchers = launchers_by_family[family]
        library.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
        library.impl(name, getattr(launchers, name), "CompositeExplicitAutograd")
    _LIBRARIES.append(library)
    register_fake_and_autograd(NAMESPACE)
    for name in ALL_SCHEMAS:
        if name not in AUTOGRAD_OPS:
            register_no_backward(NAMESPACE, name)


_LIBRARIES = []  # the ops live as long as their library


def load():
    """Register the ops (once) and return their namespace, or raise ImportError
    when Triton is missing."""
    if not hasattr(load, "ops"):
        from ..kernels import binary_triton, lovasz_triton, multiclass_triton

        _define({"binary": binary_triton, "multiclass": multiclass_triton, "lovasz": lovasz_triton})
        load.ops = getattr(torch.ops, NAMESPACE)
    return load.ops
