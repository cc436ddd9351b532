"""The fused ops as PyTorch ops: torch.library.opcheck (schema, fake tensor,
autograd registration, AOT dispatch) and torch.compile(fullgraph=True)."""

import pytest
import torch

import fusedloss
from fusedloss.ops import fused_ops
from helpers import ALL_LOSSES, FUSED_BACKENDS, LOSS_PARAMS, assert_close, loss_fn, make_pair

pytestmark = pytest.mark.parametrize("backend", FUSED_BACKENDS)


def sigmoid_loss_args(x, t, weight, per_sample, per_channel, reduction):
    #       region tv_a tv_b smooth r_gamma r_weight elem f_alpha f_gamma e_weight e_mean
    spec = (True, 0.3, 0.7, 1.0, 0.75, 0.8, True, 0.25, 2.0, 1.2, True)
    return (x, t, weight, per_sample, per_channel, *spec, reduction, True)


def opcheck_cases(device):
    x, t = make_pair((2, 3, 5, 7), torch.float32, torch.uint8)
    x64, t64 = make_pair((2, 3, 4), torch.float64)
    weight = torch.tensor([1.0, 0.5, 2.0], device=device)
    x.requires_grad_(True)
    x64.requires_grad_(True)
    return {
        "sigmoid_loss": [
            sigmoid_loss_args(x, t, None, False, False, "mean"),
            sigmoid_loss_args(x, t, weight, True, True, "none"),
            sigmoid_loss_args(x64, t64, None, True, False, "sum"),
        ],
        "sigmoid_focal_map": [(x, t, 0.25, 2.0, True), (x64, t64, -1.0, 0.5, False)],
    }


@pytest.mark.parametrize("op_name", ["sigmoid_loss", "sigmoid_focal_map"])
def test_opcheck(backend, op_name):
    ops = fused_ops(backend)
    for args in opcheck_cases(torch.device(make_pair((1,))[0].device))[op_name]:
        torch.library.opcheck(getattr(ops, op_name), args)


def test_opcheck_backward_ops(backend):
    ops = fused_ops(backend)
    x, t = make_pair((2, 3, 5, 7), torch.float32, torch.bool)
    loss, coef = ops.sigmoid_loss(*sigmoid_loss_args(x, t, None, True, True, "none"))
    torch.library.opcheck(ops.sigmoid_loss_backward,
                          (torch.ones_like(loss), x, t, coef, True, True, True, True, 0.25, 2.0))
    torch.library.opcheck(ops.sigmoid_focal_map_backward, (torch.ones_like(x), x, t, 0.25, 2.0))


MODULES = {
    "dice": lambda b: fusedloss.DiceLoss(backend=b),
    "iou": lambda b: fusedloss.IoULoss(per_sample=True, backend=b),
    "tversky": lambda b: fusedloss.TverskyLoss(0.3, 0.7, per_channel=True, weight=[1.0, 2.0], backend=b),
    "focal_tversky": lambda b: fusedloss.FocalTverskyLoss(gamma=0.75, reduction="none", per_channel=True,
                                                          per_sample=True, backend=b),
    "focal": lambda b: fusedloss.FocalLoss(backend=b),
    "dice_bce": lambda b: fusedloss.DiceBCELoss(backend=b),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_compile_fullgraph(backend, name):
    torch._dynamo.reset()
    criterion = MODULES[name](backend)
    x, t = make_pair((2, 2, 9, 13), torch.float32, torch.uint8)
    criterion = criterion.to(x.device)

    def step(logits, target):
        loss = criterion(logits * 1.5, target)  # an op on each side, so the graph is not just the loss
        return loss.sum() * 2

    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        logits = x.detach().clone().requires_grad_(True)
        out = fn(logits, t)
        out.backward()
        results.append((out.detach(), logits.grad))
    assert_close(results[1][0], results[0][0], torch.float32)
    assert_close(results[1][1], results[0][1], torch.float32)


def test_compile_focal_map(backend):
    torch._dynamo.reset()
    x, t = make_pair((3, 1, 7, 5), torch.float32)
    fn = lambda logits: fusedloss.focal_loss(logits, t, reduction="none", backend=backend).sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_x, compiled_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fn(eager_x).backward()
    compiled(compiled_x).backward()
    assert_close(compiled_x.grad, eager_x.grad, torch.float32)
