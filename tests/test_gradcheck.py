"""torch.autograd.gradcheck in fp64, for both families: the hand-written backward
against finite differences of the fused forward, for every loss, grouping,
reduction, and (multiclass) ignored pixels and absent classes."""

import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import GROUPINGS, IGNORE
from helpers import gradcheck as checked


def gradcheck(case, backend, x, t, **options):
    assert checked(lambda inp: case.fn(inp, t, backend=backend, **options), x, backend, atol=1e-8, rtol=1e-6)


REGION_OPTIONS = {
    BINARY: [dict(reduction=reduction, **grouping) for grouping in GROUPINGS for reduction in ["mean", "none"]],
    MULTICLASS: [dict(ignore_index=IGNORE, per_sample=True)],
}


@parametrize("case, backend, options",
             with_backends(BINARY.cases(BINARY.region_losses) + MULTICLASS.cases(MULTICLASS.region_losses),
                           per_family=REGION_OPTIONS))
def test_region_losses(case, backend, options):
    if case.family is BINARY:
        # 2 samples x 3 channels x 2 elements: every grouping has groups of several elements, and
        # the interpreter's finite differences (two launches per element) stay short.
        x, t = case.make_pair((2, 3, 2), torch.float64)
    else:
        x, t = case.make_pair((2, 3, 2, 3), torch.float64, ignore_fraction=0.2, absent=(1,))
    gradcheck(case, backend, x, t, **case.options(**options))


@parametrize("case, backend", with_backends(BINARY.cases(BINARY.region_losses)))
def test_region_losses_weighted_sum(case, backend):
    x, t = case.make_pair((2, 3, 5), torch.float64, torch.uint8)
    weight = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64, device=x.device)
    gradcheck(case, backend, x, t, **case.options(per_channel=True, weight=weight, reduction="sum"))


FOCAL_OPTIONS = {
    BINARY: [
        dict(reduction=reduction, **params)
        for params in [dict(alpha=0.25, gamma=2.0), dict(alpha=None, gamma=0.5), dict(alpha=0.6, gamma=0.0)]
        for reduction in ["mean", "sum", "none"]
    ],
    MULTICLASS: [dict(ignore_index=IGNORE)],
}


@parametrize("case, backend, options",
             with_backends([BINARY.case("focal"), MULTICLASS.case("focal")], per_family=FOCAL_OPTIONS))
def test_focal(case, backend, options):
    if case.family is BINARY:
        x, t = case.make_pair((2, 1, 3, 5), torch.float64)
    else:
        x, t = case.make_pair((2, 3, 2, 3), torch.float64, ignore_fraction=0.2, absent=(1,))
    gradcheck(case, backend, x, t, **case.options(**options))


@parametrize("case, backend", with_backends(BINARY.cases() + MULTICLASS.cases()))
def test_default_options(case, backend):
    x, t = case.make_pair((1, 2, 4, 3), torch.float64, torch.bool if case.family is BINARY else torch.int64)
    gradcheck(case, backend, x, t, **case.options(params=False))
