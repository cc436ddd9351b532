"""Fused backends against the reference, for both families: loss values and
input gradients across input dtype x target dtype x options x awkward shapes x
masks (binary) and class counts x ignored pixels x absent classes (multiclass)."""

import torch
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import DEVICE, GROUPINGS, IGNORE, INPUT_DTYPES, assert_close, assert_matches_reference, loss_and_grad


@parametrize(
    "case, backend, dtype, target_dtype",
    [
        (case, backend, dtype, target_dtype)
        for case, backend in with_backends(BINARY.cases() + MULTICLASS.cases())
        for dtype in INPUT_DTYPES
        for target_dtype in case.family.target_dtypes
    ],
)
def test_dtypes(case, backend, dtype, target_dtype):
    if case.family is BINARY:
        x, t = case.make_pair((2, 3, 33, 17), dtype, target_dtype)
    else:
        x, t = case.make_pair((2, 5, 9, 13), dtype, target_dtype, ignore_fraction=0.1)
    assert_matches_reference(case, x, t, backend, **case.options(ignore=True))


# Smaller than a block, odd, not a multiple of any block size, 1-D to 5-D; 2 to 150 classes.
SHAPES = {BINARY: [(7,), (3, 1, 5, 7), (2, 3, 33, 17), (1, 2, 8193), (4, 5), (1, 2, 5, 6, 7)],
          MULTICLASS: [(2, 2, 7), (1, 3, 5, 6, 7), (3, 7, 33, 17), (1, 150, 4, 5), (2, 19, 41)]}


@parametrize(
    "case, backend, shape",
    [
        (case, backend, shape)
        for case, backend in with_backends(BINARY.cases() + MULTICLASS.cases())
        for shape in SHAPES[case.family]
    ],
)
def test_awkward_shapes(case, backend, shape):
    x, t = case.make_pair(shape, torch.float32)
    assert_matches_reference(case, x, t, backend, **case.options())
    if case.family is BINARY and case.region and len(shape) >= 2:
        assert_matches_reference(
            case, x, t, backend, **case.options(per_sample=True, per_channel=True, reduction="none")
        )
    if case.family is MULTICLASS and case.region and shape[1] >= 16:  # CUDA: classes split across threads
        assert_matches_reference(case, x, t, backend, **case.options(per_sample=True))


REGION_OPTIONS = {
    BINARY: GROUPINGS,
    MULTICLASS: [dict(), dict(per_sample=True), dict(include_background=False), dict(exclude_empty=True),
                 dict(per_sample=True, include_background=False, exclude_empty=True), dict(ignore_index=IGNORE),
                 dict(weight="per-class")],
}


@parametrize(
    "case, backend, options, reduction",
    [
        (case, backend, options, reduction)
        for case, backend in with_backends(
            BINARY.cases(BINARY.region_losses) + MULTICLASS.cases(["dice", "iou", "tversky", "focal_tversky"])
        )
        for options in REGION_OPTIONS[case.family]
        for reduction in ["mean", "sum", "none"]
    ],
)
def test_region_options(case, backend, options, reduction):
    """Binary: the groupings (whole, per sample, per channel, both); multiclass: per
    sample, background, empty classes, ignored pixels, class weights."""
    if case.family is BINARY:
        x, t = case.make_pair((3, 4, 9, 11), torch.float64)
    else:
        x, t = case.make_pair(
            (3, 4, 8, 9), torch.float64, ignore_fraction=0.2 if "ignore_index" in options else 0.0, absent=(2,)
        )
    if options.get("weight") == "per-class":
        options = dict(options, weight=torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64, device=DEVICE))
    assert_matches_reference(case, x, t, backend, **case.options(reduction=reduction, **options))


@parametrize(
    "case, backend, per_sample, reduction",
    [
        (case, backend, per_sample, reduction)
        for case, backend in with_backends(BINARY.cases(BINARY.region_losses))
        for per_sample in [False, True]
        for reduction in ["mean", "sum", "none"]
    ],
)
def test_channel_weights(case, backend, per_sample, reduction):
    """Binary per-channel weights (the multi-class per-class weights: test_region_options)."""
    x, t = case.make_pair((2, 3, 10, 7), torch.float32, torch.uint8)
    weight = torch.tensor([0.2, 1.0, 3.5], device=x.device)
    assert_matches_reference(
        case, x, t, backend, **case.options(per_sample=per_sample, per_channel=True, weight=weight, reduction=reduction)
    )


@parametrize(
    "case, backend, options, reduction",
    [
        (case, backend, options, reduction)
        for case, backend in with_backends(MULTICLASS.cases(["dice_ce"]))
        for options in [dict(), dict(per_sample=True, include_background=False),
                        dict(ignore_index=IGNORE, exclude_empty=True), dict(weight="per-class")]
        for reduction in ["mean", "sum"]
    ],
)
def test_dice_ce_options(case, backend, options, reduction):
    """Dice+CE (multiclass only; Dice+BCE runs with every grouping in test_region_options)."""
    x, y = case.make_pair((2, 3, 10, 11), torch.float64, ignore_fraction=0.15, absent=(1,))
    if "ignore_index" not in options:
        y = torch.where(y == IGNORE, torch.zeros_like(y), y)
    if options.get("weight") == "per-class":
        options = dict(options, weight=torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64, device=DEVICE))
    assert_matches_reference(case, x, y, backend, **case.options(reduction=reduction, **options))


@parametrize(
    "case, backend, mask, dtype",
    [
        (case, backend, mask, dtype)
        for case, backend in with_backends(BINARY.cases())
        for mask in ["empty", "full"]
        for dtype in [torch.float64, torch.float32, torch.float16]
    ],
)
def test_empty_and_full_masks(case, backend, mask, dtype):
    """Binary masks with nothing or everything to find (multiclass: one class only and
    every pixel ignored are in test_properties and test_extremes)."""
    x, t = case.make_pair((2, 2, 15, 9), dtype, torch.bool, mask=mask)
    extra = dict(per_channel=True) if case.region else {}
    assert_matches_reference(case, x, t, backend, **case.options(**extra))


FOCAL_PARAMETERS = {
    BINARY: [dict(alpha=0.25, gamma=2.0), dict(alpha=None, gamma=0.5), dict(alpha=0.9, gamma=0.0),
             dict(alpha=None, gamma=3.0)],
    MULTICLASS: [dict(alpha=0.25, gamma=2.0), dict(alpha=None, gamma=0.0), dict(alpha=None, gamma=0.5),
                 dict(alpha=0.8, gamma=3.0)],
}
FOCAL_DTYPES = {BINARY: INPUT_DTYPES, MULTICLASS: [torch.float64, torch.float32, torch.bfloat16]}


@parametrize(
    "case, backend, dtype, params, reduction",
    [
        (case, backend, dtype, params, reduction)
        for case, backend in with_backends([BINARY.case("focal"), MULTICLASS.case("focal")])
        for dtype in FOCAL_DTYPES[case.family]
        for params in FOCAL_PARAMETERS[case.family]
        for reduction in ["mean", "sum", "none"]
    ],
)
def test_focal_parameters(case, backend, dtype, params, reduction):
    if case.family is BINARY:
        x, t = case.make_pair((2, 1, 13, 21), dtype)
    else:
        x, t = case.make_pair((2, 6, 7, 11), dtype, torch.uint8, ignore_fraction=0.1)
    assert_matches_reference(case, x, t, backend, **case.options(ignore=True, reduction=reduction, **params))


@parametrize(
    "case, backend, gamma",
    [
        (case, backend, gamma)
        for case, backend in with_backends([BINARY.case("focal_tversky"), MULTICLASS.case("focal_tversky")])
        for gamma in [0.5, 1.0, 2.0, 3.0]
    ],
)
def test_focal_tversky_gammas(case, backend, gamma):
    x, t = case.make_pair((2, 3, 8, 8), torch.float64)
    extra = dict(per_channel=True) if case.family is BINARY else dict(per_sample=True)
    assert_matches_reference(
        case, x, t, backend, **case.options(params=False, gamma=gamma, alpha=0.7, beta=0.3, **extra)
    )


@parametrize("case, backend", with_backends(BINARY.cases(BINARY.region_losses)))
def test_target_without_channel_dim(case, backend):
    """Binary only: an (N, 1, H, W) input with an (N, H, W) target."""
    x, t = case.make_pair((2, 1, 9, 10), torch.float32, torch.uint8)
    fused = assert_matches_reference(case, x, t[:, 0], backend, per_sample=True)
    ref_loss, ref_grad = loss_and_grad(case.name, x, t, "reference", per_sample=True)  # the target with its dim
    assert_close(fused.loss, ref_loss, torch.float32)
    assert_close(fused.grad, ref_grad, torch.float32)


@parametrize("case, backend", with_backends([BINARY.case("dice"), MULTICLASS.case("dice")]))
def test_non_contiguous_input(case, backend):
    x, t = case.make_pair((2, 3, 8, 12), torch.float32)
    target = t.transpose(2, 3) if case.family is BINARY else t.transpose(1, 2)
    extra = dict(per_channel=True) if case.family is BINARY else {}
    assert_matches_reference(case, x.transpose(2, 3), target, backend, **case.options(params=False, **extra))
