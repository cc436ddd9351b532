"""The fused ops as PyTorch ops, for both families: torch.library.opcheck
(schema, fake tensor, autograd registration, AOT dispatch) and
torch.compile(fullgraph=True). The ops are called with keyword arguments, the
loss spec built by field name (fusedloss._spec.LossSpec)."""

import torch
from cases import BINARY, FAMILIES, MULTICLASS, parametrize
from helpers import DEVICE, IGNORE, assert_close, make_class_pair, make_pair, op_kwargs

import fusedloss
from fusedloss._spec import LossSpec
from fusedloss.ops import fused_ops
from fusedloss.ops.schema import spec_arguments

# Every term on, non-default constants.
SPEC = LossSpec(region=True, tv_alpha=0.3, tv_beta=0.7, smooth_nr=1.0, smooth_dr=1.0, region_gamma=0.75,
                region_weight=0.8, elem=True, focal_alpha=0.25, focal_gamma=2.0, elem_weight=1.2, elem_mean=True)
REGION_ONLY = SPEC._replace(elem=False, focal_alpha=-1.0, focal_gamma=0.0, elem_weight=1.0)
# The options of issue 13 together, on probability inputs (activation='none').
OPTIONS = SPEC._replace(smooth_nr=0.0, smooth_dr=1e-5, region_gamma=1.0, log_loss=True, squared_pred=True,
                        from_logits=False, clamped_log=True)
LOGITS = dict(from_logits=True, clamped_log=False)
PROBABILITIES = dict(from_logits=False, clamped_log=True)


def _binary_calls():
    x, t = make_pair((2, 3, 5, 7), torch.float32, torch.uint8)
    x64, t64 = make_pair((2, 3, 4), torch.float64)
    weight = torch.tensor([1.0, 0.5, 2.0], device=DEVICE)
    x.requires_grad_(True)
    x64.requires_grad_(True)
    p = torch.sigmoid(x.detach()).requires_grad_(True)  # probability inputs: activation='none'
    ignored = torch.where(torch.arange(t.numel(), device=DEVICE).reshape(t.shape) % 4 == 0, 255, t).to(t.dtype)

    def loss(reduction, spec=SPEC, ignore_index=None, **kw):
        return op_kwargs(spec, **kw, ignore_index=ignore_index, reduction=reduction, check_target=True)

    return {
        "binary_loss": [((x, t), loss("mean", weight=None, per_sample=False, per_channel=False)),
                        ((x, t), loss("none", weight=weight, per_sample=True, per_channel=True)),
                        ((x64, t64), loss("sum", weight=None, per_sample=True, per_channel=False)),
                        ((p, t), loss("mean", OPTIONS, weight=weight, per_sample=False, per_channel=True)),
                        ((x, ignored), loss("none", ignore_index=255, weight=None, per_sample=True,
                                            per_channel=False))],
        "binary_focal_map": [((x, t), dict(alpha=0.25, gamma=2.0, focal_form=0, **LOGITS, ignore_index=None,
                                           check_target=True)),
                             ((x64, t64), dict(alpha=-1.0, gamma=0.5, focal_form=0, **LOGITS, ignore_index=None,
                                               check_target=False)),
                             ((p, ignored), dict(alpha=0.25, gamma=2.0, focal_form=0, **PROBABILITIES,
                                                 ignore_index=255, check_target=True)),
                             ((x64, t64), dict(alpha=0.25, gamma=2.0, focal_form=1, **LOGITS, ignore_index=None,
                                               check_target=True)),
                             ((x, ignored), dict(alpha=-1.0, gamma=0.5, focal_form=2, **LOGITS, ignore_index=255,
                                                 check_target=True))],
        # The statistics ops have no autograd of their own (their callers' autograd uses them).
        "binary_stats": [((x.detach(), t), dict(per_sample=True, per_channel=True,
                                                **spec_arguments("binary_stats", SPEC), ignore_index=None,
                                                check_target=True)),
                         ((p.detach(), ignored), dict(per_sample=False, per_channel=True,
                                             **spec_arguments("binary_stats", OPTIONS), ignore_index=255,
                                             check_target=False))],
    }


def _multiclass_calls():
    x, y = make_class_pair((2, 4, 3, 5), torch.float32, torch.uint8, ignore_fraction=0.2)
    x.requires_grad_(True)
    p = torch.softmax(x.detach(), dim=1).requires_grad_(True)
    weight = torch.tensor([1.0, 0.5, 2.0, 1.0], device=DEVICE)
    soft = torch.softmax(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), dim=1).to(DEVICE)
    cross_entropy = SPEC._replace(focal_alpha=-1.0, focal_gamma=0.0, label_smoothing=0.1, weighted_mean=True)

    def loss(spec, target_weight=None, **kw):
        defaults = dict(class_weight=target_weight, include_background=True, exclude_empty=False, check_target=True)
        return op_kwargs(spec, **{**defaults, **kw})

    return {
        "multiclass_loss": [
            ((x, y), loss(SPEC, weight=weight, per_sample=True, ignore_index=IGNORE, include_background=False,
                          exclude_empty=True, reduction="mean")),
            ((x, y), loss(REGION_ONLY, weight=None, per_sample=False, ignore_index=None, reduction="none",
                          check_target=False)),
            ((p, y), loss(OPTIONS, weight=None, per_sample=False, ignore_index=IGNORE, reduction="sum")),
            ((x, y), loss(cross_entropy, weight, weight=None, per_sample=False, ignore_index=IGNORE,
                          reduction="mean")),
            ((x, soft), loss(cross_entropy._replace(weighted_mean=False), weight, weight=None, per_sample=True,
                             ignore_index=None, reduction="mean")),
        ],
        "multiclass_focal_map": [
            ((x, y), dict(class_weight=None, alpha=0.25, gamma=2.0, **LOGITS, ignore_index=IGNORE, check_target=True)),
            ((p, y), dict(class_weight=weight, alpha=-1.0, gamma=2.0, **PROBABILITIES, ignore_index=IGNORE,
                          check_target=True)),
            ((x, soft), dict(class_weight=weight, alpha=-1.0, gamma=2.0, **LOGITS, ignore_index=None,
                             check_target=True)),
        ],
        "multiclass_stats": [
            ((x.detach(), y), dict(class_weight=None, per_sample=True, **spec_arguments("multiclass_stats", SPEC),
                                   ignore_index=IGNORE, check_target=True)),
            ((p.detach(), y), dict(class_weight=weight, per_sample=False,
                                   **spec_arguments("multiclass_stats", OPTIONS), ignore_index=None,
                                   check_target=False)),
            ((x.detach(), soft), dict(class_weight=None, per_sample=True, **spec_arguments("multiclass_stats", SPEC),
                                      ignore_index=None, check_target=True)),
        ],
    }


CALLS = {BINARY: _binary_calls, MULTICLASS: _multiclass_calls}


@parametrize(
    "family, backend, op_name",
    [
        (family, backend, f"{family.name}_{op}")
        for family in FAMILIES
        for backend in family.backends
        for op in ("loss", "focal_map", "stats")
    ],
)
def test_opcheck(family, backend, op_name):
    op = getattr(fused_ops(backend), op_name)
    calls = CALLS[family]()[op_name]
    for args, kwargs in calls:
        torch.library.opcheck(op, args, kwargs)


@parametrize("family, backend", [(family, backend) for family in FAMILIES for backend in family.backends])
def test_opcheck_backward_ops(family, backend):
    """The backward ops have no backward of their own: called on detached inputs."""
    ops = fused_ops(backend)
    if family is BINARY:
        x, t = make_pair((2, 3, 5, 7), torch.float32, torch.bool)
        groups = dict(per_sample=True, per_channel=True)
        loss, coef = ops.binary_loss(
            x, t, **op_kwargs(SPEC, weight=None, **groups, ignore_index=None, reduction="none", check_target=True)
        )
        torch.library.opcheck(ops.binary_loss_backward, (torch.ones_like(loss), x, t, coef),
                              dict(**groups, **spec_arguments("binary_loss_backward", SPEC), ignore_index=None))
        torch.library.opcheck(ops.binary_focal_map_backward, (torch.ones_like(x), x, t),
                              dict(alpha=0.25, gamma=2.0, focal_form=0, **LOGITS, ignore_index=None))
    else:
        x, y = make_class_pair((2, 4, 3, 5), torch.float32, torch.uint8, ignore_fraction=0.2)
        loss, coef = ops.multiclass_loss(
            x,
            y,
            **op_kwargs(SPEC, weight=None, class_weight=None, per_sample=True, ignore_index=IGNORE,
                        include_background=True, exclude_empty=False, reduction="sum", check_target=True),
        )
        torch.library.opcheck(
            ops.multiclass_loss_backward,
            (torch.ones_like(loss), x, y, coef),
            dict(class_weight=None, per_sample=True, **spec_arguments("multiclass_loss_backward", SPEC),
                 ignore_index=IGNORE),
        )
        weight = torch.tensor([1.0, 0.5, 2.0, 1.0], device=DEVICE)
        torch.library.opcheck(ops.multiclass_focal_map_backward, (torch.ones(y.shape, device=DEVICE), x, y),
                              dict(class_weight=weight, alpha=-1.0, gamma=2.0, **LOGITS, ignore_index=IGNORE))


MODULES = {
    BINARY: {
        "dice": lambda b: fusedloss.DiceLoss(backend=b),
        "iou": lambda b: fusedloss.IoULoss(per_sample=True, backend=b),
        "tversky": lambda b: fusedloss.TverskyLoss(0.3, 0.7, per_channel=True, weight=[1.0, 2.0], backend=b),
        "focal_tversky": lambda b: fusedloss.FocalTverskyLoss(
            gamma=0.75, reduction="none", per_channel=True, per_sample=True, backend=b
        ),
        "focal": lambda b: fusedloss.FocalLoss(backend=b),
        "dice_bce": lambda b: fusedloss.DiceBCELoss(backend=b),
    },
    MULTICLASS: {
        "dice": lambda b: fusedloss.DiceLoss(
            mode="multiclass", include_background=False, ignore_index=IGNORE, backend=b
        ),
        "focal": lambda b: fusedloss.FocalLoss(mode="multiclass", ignore_index=IGNORE, backend=b),
        "dice_ce": lambda b: fusedloss.DiceCELoss(ignore_index=IGNORE, backend=b),
    },
}


@parametrize(
    "family, backend, name",
    [(family, backend, name) for family in FAMILIES for backend in family.backends for name in MODULES[family]],
)
def test_compile_fullgraph(family, backend, name):
    torch._dynamo.reset()
    criterion = MODULES[family][name](backend)
    if family is BINARY:
        x, t = make_pair((2, 2, 9, 13), torch.float32, torch.uint8)
    else:
        x, t = make_class_pair((2, 4, 9, 7), torch.float32, ignore_fraction=0.1)
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


@parametrize("family, backend", [(family, backend) for family in FAMILIES for backend in family.backends])
def test_compile_focal_map(family, backend):
    torch._dynamo.reset()
    if family is BINARY:
        x, t = make_pair((3, 1, 7, 5), torch.float32)
    else:
        x, t = make_class_pair((3, 4, 7, 5), torch.float32, ignore_fraction=0.1)
    options = family.options("focal", params=False, ignore=True)
    fn = lambda logits: fusedloss.focal_loss(logits, t, reduction="none", backend=backend, **options).sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_x, compiled_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fn(eager_x).backward()
    compiled(compiled_x).backward()
    assert_close(compiled_x.grad, eager_x.grad, torch.float32)
