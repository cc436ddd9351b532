"""The op layer: torch.library registration of the fused ops (``schema.py``,
``triton_ops.py``) and the choice of backend (``selection.py``)."""

from .selection import BACKENDS, available_backends, backends, resolve


def fused_ops(backend: str):
    """The torch.ops namespace holding ``backend``'s sigmoid-family ops."""
    if backend == "triton":
        from . import triton_ops

        return triton_ops.load()
    raise ValueError(f"backend {backend!r} has no fused ops")


__all__ = ["BACKENDS", "available_backends", "backends", "fused_ops", "resolve"]
