"""What makes the fused path fused: few kernel launches, nothing full-size
kept for backward, no write to the caller's tensors."""

import pytest
import torch

import fusedloss
from fusedloss.kernels import sigmoid_triton
from helpers import ALL_LOSSES, FUSED_BACKENDS, LOSS_PARAMS, loss_fn, make_pair

KERNELS = ["_stats_kernel", "_finalize_kernel", "_backward_kernel", "_focal_map_kernel"]


class _CountingKernel:
    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append(self.name)
        return self.kernel[grid]


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="counts Triton launches")
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_two_launches_forward_one_backward(monkeypatch, name, reduction):
    log = []
    for kernel in KERNELS:
        monkeypatch.setattr(sigmoid_triton, kernel, _CountingKernel(getattr(sigmoid_triton, kernel), kernel, log))
    x, t = make_pair((2, 3, 40, 41))
    x.requires_grad_(True)
    options = dict(LOSS_PARAMS[name], reduction=reduction)
    if name != "focal":
        options["per_channel"] = True
    loss = loss_fn(name)(x, t, backend="triton", **options)
    forward_launches = len(log)
    loss.sum().backward()
    assert forward_launches <= 2
    assert len(log) - forward_launches == 1


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_saves_nothing_full_size_for_backward(backend, name):
    """Only the caller's own input and target (no copies) and per-group scalars."""
    x, t = make_pair((2, 3, 16, 16), torch.float16, torch.uint8)
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        loss = loss_fn(name)(x, t, backend=backend, **LOSS_PARAMS[name])
    owned = {x.untyped_storage().data_ptr(), t.untyped_storage().data_ptr()}
    extra = [s for s in saved if s.untyped_storage().data_ptr() not in owned]
    assert sum(s.numel() for s in extra) <= 3 * 3 * 2  # (groups, 3) coefficients at most
    loss.backward()
    assert x.grad is not None


def test_reference_saves_full_size_tensors():
    """The contrast the fused path is measured against (and proof the hook sees saves)."""
    x, t = make_pair((2, 3, 16, 16))
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        fusedloss.dice_loss(x, t, backend="reference")
    assert sum(s.numel() for s in saved if s.data_ptr() != x.data_ptr()) >= x.numel()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_caller_tensors_untouched(backend, name):
    x, t = make_pair((2, 3, 7, 9), torch.bfloat16, torch.bool)
    x_before, t_before = x.clone(), t.clone()
    x.requires_grad_(True)
    loss_fn(name)(x, t, backend=backend).backward()
    assert torch.equal(x.detach(), x_before) and torch.equal(t, t_before)
