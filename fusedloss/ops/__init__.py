"""The op layer: torch.library registration of the fused ops (``schema.py``,
``triton_ops.py``, ``cpp_ops.py``) and the choice of backend (``selection.py``)."""

from .selection import BACKENDS, available_backends, backends, resolve


_FUSED_OPS = {}  # backend -> its namespace, once loaded (looked up on every loss call)


def fused_ops(backend: str):
    """The torch.ops namespace holding ``backend``'s ops (both loss families)."""
    ops = _FUSED_OPS.get(backend)
    if ops is None:
        ops = _FUSED_OPS[backend] = _load_fused_ops(backend)
    return ops


def _load_fused_ops(backend: str):
    if backend == "triton":
        from . import triton_ops

        return triton_ops.load()
    if backend in ("cpu", "cuda"):
        from . import cpp_ops

        return cpp_ops.ops()
    raise ValueError(f"backend {backend!r} has no fused ops")


def build_extension(verbose: bool = False) -> None:
    """Compile and load the C++/CUDA extension from csrc/ if it was not installed
    prebuilt (ninja; cached by torch). Raises if it cannot be built."""
    from . import cpp_ops

    cpp_ops.build(verbose=verbose)


__all__ = ["BACKENDS", "available_backends", "backends", "build_extension", "fused_ops", "resolve"]
