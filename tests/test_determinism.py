"""The same inputs give bitwise the same loss and gradient on every run: the
reductions combine partial sums in a fixed order, with no float atomics."""

import pytest
import torch

from helpers import (ALL_LOSSES, DEVICE, FUSED_BACKENDS, IGNORE, LOSS_PARAMS, loss_and_grad, make_class_pair, make_pair,
                     multiclass_loss_and_grad)

pytestmark = pytest.mark.parametrize("backend", FUSED_BACKENDS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bitwise_repeatable(backend, name, dtype):
    # Large enough for several programs per row, so the combine order matters.
    x, t = make_pair((2, 3, 160, 161), dtype, torch.uint8)
    options = dict(LOSS_PARAMS[name])
    if name != "focal":
        options["per_channel"] = True
    first = loss_and_grad(name, x, t, backend, **options)
    for _ in range(2):
        again = loss_and_grad(name, x, t, backend, **options)
        assert torch.equal(first[0], again[0])
        assert torch.equal(first[1], again[1])


@pytest.mark.parametrize("name", ["dice", "focal", "multiclass_dice_ce"])
def test_independent_of_the_thread_count(backend, name):
    """The CPU kernels cut the work into fixed chunks, so the partial sums and their
    order are the same whatever the number of threads at::parallel_for uses."""
    if DEVICE.type != "cpu" or backend != "cpu":
        pytest.skip("thread counts apply to the C++ CPU kernels")
    if name.startswith("multiclass"):
        x, y = make_class_pair((3, 7, 150, 161), torch.float32, torch.uint8, ignore_fraction=0.1)
        run = lambda: multiclass_loss_and_grad("dice_ce", x, y, backend, ignore_index=IGNORE)  # noqa: E731
    else:
        x, t = make_pair((3, 2, 300, 301), torch.float32, torch.uint8)
        run = lambda: loss_and_grad(name, x, t, backend, **LOSS_PARAMS[name])  # noqa: E731
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(4)
        several = run()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], several[0]) and torch.equal(single[1], several[1])
