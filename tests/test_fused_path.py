"""What makes the fused path fused, for both families: few kernel launches,
nothing full-size kept for backward (no one-hot target, no softmax or sigmoid
tensor: the memory the loss adds does not grow with C), no write to the
caller's tensors."""

import pytest
import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import FUSED_BACKENDS, make_pair

import fusedloss
from fusedloss.kernels import binary_triton, multiclass_triton

KERNELS = ["_stats_kernel", "_finalize_kernel", "_backward_kernel", "_focal_map_kernel"]
TRITON_MODULES = {BINARY: binary_triton, MULTICLASS: multiclass_triton}


class _CountingKernel:
    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append(self.name)
        return self.kernel[grid]


@pytest.mark.skipif("triton" not in FUSED_BACKENDS, reason="counts Triton launches")
@parametrize(
    "case, reduction",
    [(case, reduction) for case in BINARY.cases() for reduction in ["mean", "none"]]
    + [(MULTICLASS.case(name), "mean") for name in ("dice", "focal", "dice_ce")]
    + [(MULTICLASS.case(name), "none") for name in ("dice", "focal")],
)
def test_two_launches_forward_one_backward(monkeypatch, case, reduction):
    module = TRITON_MODULES[case.family]
    log = []
    for kernel in KERNELS:
        monkeypatch.setattr(module, kernel, _CountingKernel(getattr(module, kernel), kernel, log))
    if case.family is BINARY:
        x, t = case.make_pair((2, 3, 40, 41))
    else:
        x, t = case.make_pair((2, 3, 40, 41), ignore_fraction=0.1)
    x.requires_grad_(True)
    extra = dict(per_channel=True) if case.family is BINARY and case.region else {}
    loss = case(x, t, "triton", reduction=reduction, ignore=True, **extra)
    forward_launches = len(log)
    loss.sum().backward()
    assert forward_launches <= 2
    assert len(log) - forward_launches == 1


# (case, input shape, the most elements saved beyond input and target: (groups, 3) coefficients)
SAVED = (
    [(case, (2, 3, 16, 16), 3 * 3 * 2) for case in BINARY.cases()]
    + [(case, (1, 3, 16, 16), 3 * 3) for case in MULTICLASS.cases()]
    + [(MULTICLASS.case("dice_ce"), (1, 95, 16, 16), 95 * 3)]
)


@parametrize("case, backend, shape, most",
             [(case, backend, shape, most) for case, shape, most in SAVED for backend in case.backends])
def test_saves_nothing_full_size_for_backward(case, backend, shape, most):
    """Only the caller's own input and target (no copies) and per-group scalars."""
    x, t = case.make_pair(shape, torch.float16, torch.uint8)
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        loss = case(x, t, backend)
    owned = {x.untyped_storage().data_ptr(), t.untyped_storage().data_ptr()}
    extra = [s for s in saved if s.untyped_storage().data_ptr() not in owned]
    assert sum(s.numel() for s in extra) <= most
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


@parametrize("case, backend", with_backends(BINARY.cases() + MULTICLASS.cases()))
def test_caller_tensors_untouched(case, backend):
    x, t = case.make_pair((2, 3, 7, 9), torch.bfloat16, torch.bool if case.family is BINARY else torch.uint8)
    x_before, t_before = x.clone(), t.clone()
    x.requires_grad_(True)
    case(x, t, backend, params=False).backward()
    assert torch.equal(x.detach(), x_before) and torch.equal(t, t_before)
