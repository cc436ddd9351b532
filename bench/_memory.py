"""How much: the memory a loss call adds beyond its inputs and its gradient."""

from __future__ import annotations

import torch
from _cases import FWD_BWD, Case
from _timing import synchronize

PEAK_ALLOCATED = "peak allocated during the call, less inputs and gradient"
SAVED_FOR_BACKWARD = "bytes saved for backward, less input and target"


def method(device: torch.device) -> str:
    return PEAK_ALLOCATED if device.type == "cuda" else SAVED_FOR_BACKWARD


def extra_memory_bytes(step, forward, case: Case, logits, target, device: torch.device):
    """What the loss adds: on CUDA the allocator's peak over the call, less the gradient;
    elsewhere the bytes autograd keeps for backward. None where nothing is measurable
    (forward only on CPU: nothing is saved under no_grad and transient use is not seen).
    """
    if device.type == "cuda":
        return _peak_extra_cuda(step, case, logits, device)
    if case.mode != FWD_BWD:
        return None
    return saved_for_backward_bytes(forward, logits, target)


def _peak_extra_cuda(step, case: Case, logits, device: torch.device) -> int:
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = step()  # keeps the gradient alive until the peak is read
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    gradient = logits.numel() * logits.element_size() if case.mode == FWD_BWD else 0
    del result
    return max(peak - before - gradient, 0)


def saved_for_backward_bytes(forward, logits, target) -> int:
    """Bytes of the tensors autograd saves during `forward(logits, target)`.

    Tensors that share storage with the input or the target are not counted (the user
    holds those anyway); each storage is counted once, whole.
    """
    owned = {_storage_key(logits), _storage_key(target)}
    saved = {}

    def pack(tensor):
        key = _storage_key(tensor)
        if key not in owned:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward(logits, target)
    del loss  # frees the graph and what it saved
    return sum(saved.values())


def _storage_key(tensor):
    return (tensor.device, tensor.untyped_storage().data_ptr())
