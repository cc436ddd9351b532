"""Any memory layout, for both families: channels_last (4-D and 5-D), permuted,
sliced and expanded tensors give the reference's results. Where the layout lets
them (binary: dense, input and target with the same strides, groups still blocks
of memory; multiclass: a dense input whose spatial dims are one run of equal
steps) the kernels read the tensors in place: the gradient then comes back in
the input's own layout, which shows no copy was made. The ops' fake kernels
promise the layouts the real kernels return (opcheck)."""

import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import DEVICE, assert_close, assert_matches_reference, op_kwargs

import fusedloss
from fusedloss._spec import LossSpec
from fusedloss.ops.schema import spec_arguments

LAYOUTS = {
    "channels_last": lambda a: a.to(memory_format=torch.channels_last),
    "channels_last_3d": lambda a: (
        a.unsqueeze(2).expand(-1, -1, 3, -1, -1).contiguous().to(memory_format=torch.channels_last_3d)
    ),
    "permuted": lambda a: a.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
}


MULTICLASS_LAYOUTS = {
    "contiguous": lambda x, y: (x, y),
    "channels_last": lambda x, y: (x.to(memory_format=torch.channels_last), y),
    "channels_last_3d": lambda x, y: (
        x.unsqueeze(2).expand(-1, -1, 3, -1, -1).contiguous().to(memory_format=torch.channels_last_3d),
        y.unsqueeze(1).expand(-1, 3, -1, -1),
    ),
    "classes_outermost": lambda x, y: (x.transpose(0, 1).contiguous().transpose(0, 1), y),
}


def _binary_layout(layout):
    return lambda x, t: (LAYOUTS[layout](x), LAYOUTS[layout](t))


# (family, layout name, (input, target) -> both in that layout, grouping options)
DENSE_LAYOUTS = [
    (BINARY, layout, _binary_layout(layout), grouping)
    for layout in sorted(LAYOUTS)
    for grouping in [dict(), dict(per_sample=True), dict(per_channel=True)]
] + [(MULTICLASS, layout, MULTICLASS_LAYOUTS[layout], dict()) for layout in sorted(MULTICLASS_LAYOUTS)]


@parametrize(
    "case, backend, layout, grouping",
    [
        (case, backend, layout, grouping)
        for family, layout, _, grouping in DENSE_LAYOUTS
        for case, backend in with_backends(family.cases(None if family is BINARY else ["dice", "focal", "dice_ce"]))
        if case.region or not grouping
    ],
)  # focal loss has no groups
def test_dense_layouts(case, backend, layout, grouping):
    """Read in place where the layout lets them: the gradient comes back with the input's
    strides. Binary per_channel groups need the plain layout (a copy); the multiclass
    target (an expanded view in the 3-D case) is copied: it is C times smaller."""
    lay_out = {name: make for family, name, make, _ in DENSE_LAYOUTS if family is case.family}[layout]
    if case.family is BINARY:
        x, t = lay_out(*case.make_pair((2, 3, 6, 7), torch.float32, torch.uint8))
    else:
        x, t = lay_out(*case.make_pair((2, 5, 6, 7), torch.float32, torch.int64, ignore_fraction=0.1))
    result = assert_matches_reference(case, x, t, backend, **case.options(ignore=True, **grouping))
    if not grouping.get("per_channel"):
        assert result.grad.stride() == x.stride()  # read and written in place: no contiguous copy


@parametrize("backend", BINARY.backends)
def test_focal_map_in_place(backend):
    x, t = BINARY.make_pair((2, 3, 6, 7), torch.float32, torch.bool)
    x, t = LAYOUTS["channels_last"](x), LAYOUTS["channels_last"](t)
    x.requires_grad_(True)
    loss_map = fusedloss.focal_loss(x, t, reduction="none", backend=backend)
    assert loss_map.stride() == x.stride()
    (grad,) = torch.autograd.grad(loss_map, x, torch.ones_like(loss_map).contiguous())
    assert grad.stride() == x.stride()
    ref = fusedloss.focal_loss(x.detach().contiguous(), t.contiguous(), reduction="none", backend="reference")
    assert_close(loss_map.detach(), ref, torch.float32)


@parametrize("case, backend", with_backends(BINARY.cases() + MULTICLASS.cases(["dice", "focal", "dice_ce"])))
def test_views_and_broadcast_targets(case, backend):
    """Binary: a sliced input and a target broadcast over the batch (stride 0);
    multiclass: every other pixel of a row. Copies are made."""
    if case.family is BINARY:
        x, t = case.make_pair((3, 4, 10, 12), torch.float32)
        x, t = x[:, :, 1:9, ::2], t[:1, :, 1:9, ::2].expand(3, -1, -1, -1)
    else:
        x, t = case.make_pair((2, 5, 6, 7), torch.float32, torch.int64)
        x, t = x[:, :, ::2], t[:, ::2]
    result = assert_matches_reference(case, x, t, backend, **case.options())
    if case.family is MULTICLASS:
        assert result.grad.is_contiguous()


SPEC = LossSpec(region=True, tv_alpha=0.5, tv_beta=0.5, smooth_nr=0.5, smooth_dr=0.5, region_gamma=1.0,
                region_weight=1.0, elem=True, focal_alpha=0.25, focal_gamma=2.0, elem_weight=1.0, elem_mean=True)
OPCHECK_LAYOUTS = [
    (BINARY, "channels_last", grouping)
    for grouping in [dict(per_sample=False, per_channel=False), dict(per_sample=True, per_channel=False),
                     dict(per_sample=False, per_channel=True)]
] + [(MULTICLASS, layout, dict(per_sample=False)) for layout in ["channels_last", "channels_last_3d"]]


@parametrize(
    "family, backend, layout, grouping",
    [
        (family, backend, layout, grouping)
        for family, layout, grouping in OPCHECK_LAYOUTS
        for backend in family.backends
    ],
)
def test_opcheck_output_layouts(family, backend, layout, grouping):
    """The fake kernels promise the layouts the real kernels return."""
    ops = fusedloss.ops.fused_ops(backend)
    if family is BINARY:
        x, t = _binary_layout(layout)(*BINARY.make_pair((2, 3, 5, 6), torch.float32, torch.uint8))
        loss, coef = ops.binary_loss(
            x, t, **op_kwargs(SPEC, weight=None, **grouping, ignore_index=None, reduction="mean", check_target=True)
        )
        torch.library.opcheck(ops.binary_loss_backward, (torch.ones_like(loss), x, t, coef),
                              dict(**grouping, **spec_arguments("binary_loss_backward", SPEC), ignore_index=None))
        logits = dict(alpha=0.25, gamma=2.0, focal_form=0, from_logits=True, clamped_log=False, ignore_index=None)
        torch.library.opcheck(ops.binary_focal_map, (x.requires_grad_(True), t), dict(**logits, check_target=True))
        torch.library.opcheck(ops.binary_focal_map_backward, (torch.ones(x.shape, device=DEVICE), x.detach(), t),
                              logits)
    else:
        x, y = MULTICLASS_LAYOUTS[layout](*MULTICLASS.make_pair((2, 4, 5, 6), torch.float32, torch.int64))
        loss, coef = ops.multiclass_loss(
            x,
            y,
            **op_kwargs(SPEC, weight=None, class_weight=None, **grouping, ignore_index=None, include_background=True,
                        exclude_empty=False, reduction="mean", check_target=True),
        )
        torch.library.opcheck(ops.multiclass_loss_backward, (torch.ones_like(loss), x, y, coef),
                              dict(**grouping, **spec_arguments("multiclass_loss_backward", SPEC), class_weight=None,
                                   ignore_index=None))
        torch.library.opcheck(ops.multiclass_focal_map_backward, (torch.ones(y.shape, device=DEVICE), x, y),
                              dict(class_weight=None, alpha=0.25, gamma=2.0, from_logits=True, clamped_log=False,
                                   ignore_index=None))


@parametrize("backend", BINARY.backends)
def test_single_channel_channels_last_with_squeezed_target(backend):
    """Binary: (N, 1, H, W) channels_last logits and an (N, H, W) mask: the common binary
    case is read in place too (strides of size-1 dims do not matter)."""
    x, t = BINARY.make_pair((3, 1, 8, 9), torch.float32, torch.uint8)
    x = x.to(memory_format=torch.channels_last)
    result = assert_matches_reference("dice", x, t[:, 0], backend)
    assert result.grad.stride() == x.stride()
