"""torch.autograd.gradcheck in fp64: the hand-written backward against finite
differences of the fused forward, for every loss, grouping and reduction."""

import pytest
import torch

from helpers import ALL_LOSSES, FUSED_BACKENDS, GROUPINGS, LOSS_PARAMS, REGION_LOSSES, loss_fn, make_pair

pytestmark = pytest.mark.parametrize("backend", FUSED_BACKENDS)


def gradcheck(name, backend, x, t, **options):
    x = x.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: loss_fn(name)(inp, t, backend=backend, **options), (x,),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("grouping", GROUPINGS, ids=lambda g: "-".join(g) or "whole")
@pytest.mark.parametrize("name", REGION_LOSSES)
def test_region_losses(backend, name, grouping, reduction):
    x, t = make_pair((2, 3, 2, 3), torch.float64)
    gradcheck(name, backend, x, t, reduction=reduction, **grouping, **LOSS_PARAMS[name])


@pytest.mark.parametrize("name", REGION_LOSSES)
def test_region_losses_weighted_sum(backend, name):
    x, t = make_pair((2, 3, 5), torch.float64, torch.uint8)
    weight = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64, device=x.device)
    gradcheck(name, backend, x, t, per_channel=True, weight=weight, reduction="sum", **LOSS_PARAMS[name])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("params", [dict(alpha=0.25, gamma=2.0), dict(alpha=None, gamma=0.5),
                                    dict(alpha=0.6, gamma=0.0)], ids=str)
def test_focal(backend, params, reduction):
    x, t = make_pair((2, 1, 3, 5), torch.float64)
    gradcheck("focal", backend, x, t, reduction=reduction, **params)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_default_options(backend, name):
    x, t = make_pair((1, 2, 4, 3), torch.float64, torch.bool)
    gradcheck(name, backend, x, t)
