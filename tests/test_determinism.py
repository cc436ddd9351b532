"""The same inputs give bitwise the same loss and gradient on every run: the
reductions combine partial sums in a fixed order, with no float atomics."""

import pytest
import torch

from helpers import ALL_LOSSES, FUSED_BACKENDS, LOSS_PARAMS, loss_and_grad, make_pair

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
