"""The CPU backend's large outputs (32 MiB and more: gradients, focal maps) reuse the memory of
its two most recent ones once nobody holds them (csrc/cpu/recycled_output.h): a gradient the
caller keeps is never written again, one it dropped is handed out again, and the values are
those of a fresh buffer."""

import pytest
import torch

import fusedloss

pytestmark = pytest.mark.skipif("cpu" not in fusedloss.available_backends(torch.device("cpu")),
                                reason="the C++ extension is not built")

LARGE = (1, 4, 1024, 2048)  # 8M float32 values: 32 MiB


def _grad(fn, x, t):
    x = x.clone().requires_grad_(True)
    fn(x, t, backend="cpu").backward()
    return x.grad


@pytest.mark.parametrize("family", ["binary", "multiclass", "focal_map"])
def test_kept_gradients_are_never_rewritten(family):
    gen = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(LARGE, generator=gen) for _ in range(2))
    if family == "multiclass":
        t = torch.randint(0, LARGE[1], (LARGE[0], *LARGE[2:]), generator=gen, dtype=torch.uint8)
    else:
        t = (torch.rand(LARGE, generator=gen) < 0.3).float()
    fn = {"binary": fusedloss.dice_loss, "multiclass": fusedloss.dice_ce_loss,
          "focal_map": lambda x, t, **kw: fusedloss.focal_loss(x, t, reduction="none", **kw).sum()}[family]
    kept = _grad(fn, x1, t)
    expected_kept = kept.clone()
    second = _grad(fn, x2, t)
    third = _grad(fn, x2, t)  # `second` is still held: a third buffer or the first... never `kept`
    assert kept.data_ptr() not in (second.data_ptr(), third.data_ptr()) and second.data_ptr() != third.data_ptr()
    assert torch.equal(kept, expected_kept)
    assert torch.equal(second, third)
    pointer = third.data_ptr()
    del third
    again = _grad(fn, x2, t)  # the dropped buffer handed out again, written in full
    assert again.data_ptr() == pointer
    assert torch.equal(again, second) and torch.equal(kept, expected_kept)
