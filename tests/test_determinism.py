"""The same inputs give bitwise the same loss and gradient on every run, for both
families: the reductions combine partial sums in a fixed order, with no float
atomics."""

import pytest
import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import DEVICE

DTYPES = {BINARY: [torch.float32, torch.bfloat16], MULTICLASS: [torch.float32]}


def _run(case, x, t, backend, options):
    x = x.detach().requires_grad_(True)
    loss = case.fn(x, t, backend=backend, **options)
    (grad,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
    return loss.detach(), grad


def _large_pair(case, dtype):
    # Large enough for several programs per row (class), so the combine order matters.
    if case.family is BINARY:
        return case.make_pair((2, 3, 160, 161), dtype, torch.uint8)
    return case.make_pair((2, 7, 90, 91), dtype, torch.uint8, ignore_fraction=0.05)


@parametrize("case, backend, dtype", with_backends(BINARY.cases() + MULTICLASS.cases(), per_family=DTYPES))
def test_bitwise_repeatable(case, backend, dtype):
    x, t = _large_pair(case, dtype)
    options = case.options(ignore=True, **(dict(per_channel=True) if case.family is BINARY and case.region else {}))
    first = _run(case, x, t, backend, options)
    for _ in range(2):
        again = _run(case, x, t, backend, options)
        assert torch.equal(first[0], again[0])
        assert torch.equal(first[1], again[1])


@pytest.mark.skipif(DEVICE.type != "cpu" or "cpu" not in BINARY.backends + MULTICLASS.backends,
                    reason="thread counts apply to the C++ CPU kernels ('cpu' backend on a CPU)")
@parametrize("case", [BINARY.case("dice"), BINARY.case("focal"), MULTICLASS.case("dice_ce")])
def test_independent_of_the_thread_count(case):
    """The CPU kernels cut the work into fixed chunks, so the partial sums and their
    order are the same whatever the number of threads at::parallel_for uses."""
    if case.family is BINARY:
        x, t = case.make_pair((3, 2, 300, 301), torch.float32, torch.uint8)
        options = case.options()
    else:
        x, t = case.make_pair((3, 7, 150, 161), torch.float32, torch.uint8, ignore_fraction=0.1)
        options = case.options(params=False, ignore=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _run(case, x, t, "cpu", options)
        torch.set_num_threads(4)
        several = _run(case, x, t, "cpu", options)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], several[0]) and torch.equal(single[1], several[1])
