"""A NaN logit (a diverged model) gives a NaN loss and a NaN gradient, as the
reference does, for both families: never a finite loss that hides it (except at
an ignored pixel, which counts nowhere). Clamps and 'is the
denominator positive' tests must let NaN through (on a GPU, max() returns the
non-NaN operand, and a bf16 store must not round NaN into a number)."""

import pytest
import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import assert_matches_reference, fused_and_reference


def _with_nan(x, index):
    x = x.clone()
    x.view(-1)[index] = float("nan")
    return x


def _assert_same_nans(fused, ref):
    assert torch.equal(torch.isnan(fused).cpu(), torch.isnan(ref).cpu()), (fused, ref)


GROUPINGS = {BINARY: [dict(), dict(per_channel=True, reduction="none")], MULTICLASS: [dict()]}


@parametrize(
    "case, backend, options, dtype",
    [
        (case, backend, options, dtype)
        for case, backend in with_backends(BINARY.cases() + MULTICLASS.cases())
        for options in GROUPINGS[case.family]
        for dtype in [torch.float32, torch.bfloat16]
    ],
)
def test_nan_logit(case, backend, options, dtype):
    if case.family is BINARY:
        x, t = case.make_pair((2, 3, 4, 5), dtype, torch.uint8)
        x = _with_nan(x, 7)  # sample 0, channel 0
        if not case.region and "per_channel" in options:
            options = dict(reduction="none")
    else:
        x, t = case.make_pair((2, 4, 3, 5), dtype)
        x = _with_nan(x, 16)  # sample 0, class 1, one pixel
    (fused_loss, fused_grad), (ref_loss, ref_grad) = fused_and_reference(case, x, t, backend, **case.options(**options))
    assert torch.isnan(ref_loss).any()  # the premise
    _assert_same_nans(fused_loss, ref_loss)
    _assert_same_nans(fused_grad, ref_grad)


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")  # the interpreter's NaN-dropping max
@parametrize(
    "case, backend, options",
    [(case, backend, {}) for case, backend in with_backends(MULTICLASS.cases())]
    + [(MULTICLASS.case("focal"), backend, dict(reduction="none")) for backend in MULTICLASS.backends],
)
def test_nan_at_an_ignored_pixel_counts_nowhere(case, backend, options):
    """Multiclass only (binary targets have no ignored pixels): ignored pixels count
    nowhere, whatever their logits: a NaN there (e.g. padding outside the image) changes
    neither the loss nor any gradient, and gets gradient 0."""
    x, y = case.make_pair((2, 4, 3, 5), torch.float32, ignore_fraction=0.3)
    n, h, w = (y == case.family.ignore_index).nonzero()[0].tolist()
    x[n, :, h, w] = float("nan")
    result = assert_matches_reference(case, x, y, backend, **case.options(ignore=True, **options))
    assert torch.isfinite(result.ref_loss).all() and torch.isfinite(result.ref_grad).all()  # the definition
    assert (result.grad[n, :, h, w] == 0).all()
