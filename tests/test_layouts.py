"""Any memory layout: channels_last (4-D and 5-D), permuted, sliced and
expanded tensors give the reference's results. Where the layout lets them
(sigmoid: dense, input and target with the same strides, groups still blocks
of memory; softmax: a dense input whose spatial dims are one run of equal
steps) the kernels read the tensors in place: the gradient then comes back in
the input's own layout, which shows no copy was made."""

import pytest
import torch

import fusedloss
from helpers import (ALL_LOSSES, DEVICE, FUSED_BACKENDS, FUSED_SOFTMAX_BACKENDS, IGNORE, LOSS_PARAMS, assert_close,
                     make_class_pair, make_pair, multiclass_options)


def run(fn, x, t, backend, **options):
    x = x.detach().requires_grad_(True)
    loss = fn(x, t, backend=backend, **options)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def check(fn, x, t, backend, **options):
    fused_loss, fused_grad = run(fn, x, t, backend, **options)
    ref_loss, ref_grad = run(fn, x.contiguous(), t.contiguous(), "reference", **options)
    assert_close(fused_loss, ref_loss, torch.float32)
    assert_close(fused_grad, ref_grad, torch.float32)
    return fused_grad


LAYOUTS = {
    "channels_last": lambda a: a.to(memory_format=torch.channels_last),
    "channels_last_3d": lambda a: a.unsqueeze(2).expand(-1, -1, 3, -1, -1).contiguous().to(
        memory_format=torch.channels_last_3d),
    "permuted": lambda a: a.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
}


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("grouping", [dict(), dict(per_sample=True), dict(per_channel=True)],
                         ids=["whole", "per_sample", "per_channel"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_dense_layouts(backend, name, layout, grouping):
    if name == "focal" and grouping:
        pytest.skip("focal loss has no groups")
    x, t = make_pair((2, 3, 6, 7), torch.float32, torch.uint8)
    x, t = LAYOUTS[layout](x), LAYOUTS[layout](t)
    grad = check(fusedloss.LOSSES[name], x, t, backend, **grouping, **LOSS_PARAMS[name])
    if not grouping.get("per_channel"):  # per_channel groups need the plain layout: a copy
        assert grad.stride() == x.stride()  # read and written in place: no contiguous copy


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_focal_map_in_place(backend):
    x, t = make_pair((2, 3, 6, 7), torch.float32, torch.bool)
    x, t = LAYOUTS["channels_last"](x), LAYOUTS["channels_last"](t)
    x.requires_grad_(True)
    loss_map = fusedloss.focal_loss(x, t, reduction="none", backend=backend)
    assert loss_map.stride() == x.stride()
    (grad,) = torch.autograd.grad(loss_map, x, torch.ones_like(loss_map).contiguous())
    assert grad.stride() == x.stride()
    ref = fusedloss.focal_loss(x.detach().contiguous(), t.contiguous(), reduction="none", backend="reference")
    assert_close(loss_map.detach(), ref, torch.float32)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_views_and_broadcast_targets(backend, name):
    x, t = make_pair((3, 4, 10, 12), torch.float32)
    # A sliced input, and a target broadcast over the batch (stride 0): copies are made.
    check(fusedloss.LOSSES[name], x[:, :, 1:9, ::2], t[:1, :, 1:9, ::2].expand(3, -1, -1, -1), backend,
          **LOSS_PARAMS[name])


MULTICLASS_LAYOUTS = {
    "contiguous": lambda x, y: (x, y),
    "channels_last": lambda x, y: (x.to(memory_format=torch.channels_last), y),
    "channels_last_3d": lambda x, y: (x.unsqueeze(2).expand(-1, -1, 3, -1, -1).contiguous().to(
        memory_format=torch.channels_last_3d), y.unsqueeze(1).expand(-1, 3, -1, -1)),
    "classes_outermost": lambda x, y: (x.transpose(0, 1).contiguous().transpose(0, 1), y),
}


@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)
@pytest.mark.parametrize("layout", sorted(MULTICLASS_LAYOUTS))
@pytest.mark.parametrize("name", ["dice", "focal", "dice_ce"])
def test_multiclass_dense_layouts_read_in_place(backend, name, layout):
    """Dense layouts whose spatial dims are one run of equal steps (contiguous,
    channels_last, channels_last_3d, classes outermost) are read where they lie:
    the gradient comes back with the input's strides. The target (an expanded
    view in the 3-D case) is copied: it is C times smaller."""
    x, y = MULTICLASS_LAYOUTS[layout](*make_class_pair((2, 5, 6, 7), torch.float32, torch.int64,
                                                       ignore_fraction=0.1))
    grad = check(fusedloss.MULTICLASS_LOSSES[name], x, y, backend, **multiclass_options(name, ignore_index=IGNORE))
    assert grad.stride() == x.stride()


@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)
@pytest.mark.parametrize("name", ["dice", "focal", "dice_ce"])
def test_multiclass_views_are_copied(backend, name):
    x, y = make_class_pair((2, 5, 6, 7), torch.float32, torch.int64)
    grad = check(fusedloss.MULTICLASS_LOSSES[name], x[:, :, ::2], y[:, ::2], backend, **multiclass_options(name))
    assert grad.is_contiguous()


@pytest.mark.parametrize("backend", FUSED_SOFTMAX_BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "channels_last_3d"])
def test_multiclass_opcheck_output_layouts(backend, layout):
    """The softmax ops' fake kernels promise the layouts the real kernels return."""
    ops = fusedloss.ops.fused_ops(backend)
    x, y = MULTICLASS_LAYOUTS[layout](*make_class_pair((2, 4, 5, 6), torch.float32, torch.int64))
    spec = (True, 0.5, 0.5, 0.5, 1.0, 1.0, True, 0.25, 2.0, 1.0, True)
    loss, coef = ops.softmax_loss(x, y, None, False, *spec, None, True, False, "mean", True)
    torch.library.opcheck(ops.softmax_loss_backward, (torch.ones_like(loss), x, y, coef, False, True, True, 0.25,
                                                      2.0, None))
    torch.library.opcheck(ops.softmax_focal_map_backward, (torch.ones(y.shape, device=DEVICE), x, y, 0.25, 2.0,
                                                           None))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("per_sample, per_channel", [(False, False), (True, False), (False, True)])
def test_opcheck_output_layouts(backend, per_sample, per_channel):
    """The fake kernels promise the layouts the real kernels return."""
    ops = fusedloss.ops.fused_ops(backend)
    x, t = make_pair((2, 3, 5, 6), torch.float32, torch.uint8)
    x, t = LAYOUTS["channels_last"](x), LAYOUTS["channels_last"](t)
    spec = (True, 0.5, 0.5, 0.5, 1.0, 1.0, True, 0.25, 2.0, 1.0, True)
    loss, coef = ops.sigmoid_loss(x, t, None, per_sample, per_channel, *spec, "mean", True)
    torch.library.opcheck(ops.sigmoid_loss_backward,
                          (torch.ones_like(loss), x, t, coef, per_sample, per_channel, True, True, 0.25, 2.0))
    torch.library.opcheck(ops.sigmoid_focal_map, (x.requires_grad_(True), t, 0.25, 2.0, True))
    torch.library.opcheck(ops.sigmoid_focal_map_backward, (torch.ones(x.shape, device=DEVICE), x.detach(), t,
                                                           0.25, 2.0))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_single_channel_channels_last_with_squeezed_target(backend):
    """(N, 1, H, W) channels_last logits and an (N, H, W) mask: the common binary
    case is read in place too (strides of size-1 dims do not matter)."""
    x, t = make_pair((3, 1, 8, 9), torch.float32, torch.uint8)
    x = x.to(memory_format=torch.channels_last)
    grad = check(fusedloss.dice_loss, x, t[:, 0], backend)
    assert grad.stride() == x.stride()
