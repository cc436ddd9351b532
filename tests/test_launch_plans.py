"""The multi-class Triton launch plans, checked without a GPU. LaunchPlan is a pure function of
(shape, element sizes, device type, SM count), so the plans of a 132-SM GPU (H100 / H200) are
computed here: the forward's partials stay within 5% of the input's bytes at every class count,
save for tiny inputs (one chunk per sample, documented); the finalize runs a program per 16
classes of each row of groups. The losses' values under these plans: the interpreter runs the
multi-program finalize (several class blocks, several chunks per sample, the last program's
combine and rescale) against the reference here, and the whole suite compares the rest."""

import math

import pytest
import torch
from helpers import DEVICE, FUSED_MULTICLASS_BACKENDS, IGNORE, assert_matches_reference, make_class_pair

pytest.importorskip("triton")
from fusedloss.kernels.multiclass_triton import (  # noqa: E402
    FINALIZE_CLASS_BLOCK,
    FINALIZE_TILE,
    INPUT_BYTES_PER_PARTIAL_BYTE,
    LaunchPlan,
    finalize_plan,
    partial_row_bytes,
)

SMS = 132  # an H100 / H200
CLASS_COUNTS = (2, 19, 150, 1024, 4096)
# (N, *spatial): 2-D and 3-D, small (where ~8 programs per SM would put far more than 5% of the
# input in partials at many classes) and large (where they would not).
SHAPES = ((2, 64, 64), (8, 256, 256), (1, 32, 32, 32), (2, 64, 128, 128))
TINY = (2, 4, 4)  # 16 pixels a sample: one partial row is more than 5% of a sample's bytes
# (input element size, accumulator element size): bf16 / fp16, fp32, fp64 logits
ELEMENT_SIZES = {"bf16": (2, 4), "fp32": (4, 4), "fp64": (8, 8)}


def _cuda_plan(shape, sizes, partials=True):
    return LaunchPlan.for_shape(shape, *sizes, "cuda", SMS, partials=partials)


def _check_tiling(plan, shape):
    """The tiles cover every pixel of a sample, no chunk is empty, a tile holds at most 4096 values."""
    spatial = math.prod(shape[2:])
    assert plan.spatial == spatial
    assert plan.block_c == 1 << (shape[1] - 1).bit_length()
    assert plan.block_c * plan.block_s <= 4096
    pixels_per_chunk = plan.steps * plan.block_s
    assert plan.chunks_per_sample * pixels_per_chunk >= spatial > (plan.chunks_per_sample - 1) * pixels_per_chunk
    assert plan.programs == shape[0] * plan.chunks_per_sample


@pytest.mark.parametrize("sizes", ELEMENT_SIZES.values(), ids=ELEMENT_SIZES.keys())
@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("batch_spatial", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_partials_within_5_percent_of_the_input(batch_spatial, classes, sizes):
    shape = (batch_spatial[0], classes) + batch_spatial[1:]
    plan = _cuda_plan(shape, sizes)
    _check_tiling(plan, shape)
    input_bytes = math.prod(shape) * sizes[0]
    assert plan.partial_bytes == plan.programs * partial_row_bytes(classes, sizes[1])
    assert plan.partial_bytes * INPUT_BYTES_PER_PARTIAL_BYTE <= input_bytes, (plan.partial_bytes, input_bytes)
    # The bound only lengthens programs: it never makes more than the occupancy plan (~8 per SM).
    occupancy = _cuda_plan(shape, sizes, partials=False)
    assert occupancy.partial_bytes == 0
    assert plan.programs <= occupancy.programs
    if occupancy.programs * partial_row_bytes(classes, sizes[1]) * INPUT_BYTES_PER_PARTIAL_BYTE <= input_bytes:
        assert vars(plan) | {"partial_bytes": 0} == vars(occupancy)  # unchanged where within the bound
    else:  # no longer than needed: a step less a program would pass 5%
        tiles = -(-plan.spatial // plan.block_s)
        shorter = shape[0] * -(-tiles // (plan.steps - 1)) * partial_row_bytes(classes, sizes[1])
        assert shorter * INPUT_BYTES_PER_PARTIAL_BYTE > input_bytes


def test_the_bound_binds_at_many_classes():
    """What the bound changes: 2 x 4096 x 64 x 64 bf16 logits (67 MB) had 1024 programs, 50 MB of
    partials; now 68 programs of 121 pixels, 3.2 MB (4.98%)."""
    shape, sizes = (2, 4096, 64, 64), ELEMENT_SIZES["bf16"]
    assert _cuda_plan(shape, sizes, partials=False).programs == 1024
    plan = _cuda_plan(shape, sizes)
    assert (plan.programs, plan.steps * plan.block_s) == (68, 121)
    assert 0.049 < plan.partial_bytes / (math.prod(shape) * 2) <= 0.05


@pytest.mark.parametrize("sizes", ELEMENT_SIZES.values(), ids=ELEMENT_SIZES.keys())
@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_tiny_input_gets_one_chunk_per_sample(classes, sizes):
    """A program never spans samples: where one partial row is more than 5% of a sample, each
    sample is one chunk, and the partials are that one row a sample (more than 5%)."""
    shape = (TINY[0], classes) + TINY[1:]
    plan = _cuda_plan(shape, sizes)
    _check_tiling(plan, shape)
    assert (plan.chunks_per_sample, plan.programs) == (1, TINY[0])
    assert plan.partial_bytes * INPUT_BYTES_PER_PARTIAL_BYTE > math.prod(shape) * sizes[0]


EXPECTED_FINALIZE_PROGRAMS = {2: 1, 19: 2, 150: 10, 1024: 64, 4096: 256}  # a program per 16 classes


@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("batch_spatial", SHAPES + (TINY,), ids=lambda s: "x".join(map(str, s)))
def test_finalize_grid(batch_spatial, classes):
    """Groups over the batch: a program per 16 classes; per sample: that for each sample. Each
    program sums its row's parts (all parts, or its sample's chunks) a [16, part_block] tile a step."""
    batch = batch_spatial[0]
    plan = _cuda_plan((batch, classes) + batch_spatial[1:], ELEMENT_SIZES["fp32"])
    for rows, parts_per_group in ((1, plan.programs), (batch, plan.chunks_per_sample)):
        finalize = finalize_plan(rows, classes, parts_per_group, plan.programs)
        assert finalize.programs == rows * EXPECTED_FINALIZE_PROGRAMS[classes]
        assert finalize.class_block == min(FINALIZE_CLASS_BLOCK, 1 << (classes - 1).bit_length())
        assert finalize.class_block * finalize.part_block <= FINALIZE_TILE
        assert finalize.part_block >= min(parts_per_group, FINALIZE_TILE // finalize.class_block)
        assert finalize.elem_block >= min(2 * plan.programs, FINALIZE_TILE)


def test_plan_of_a_tensor_is_the_plan_of_its_shape():
    x = torch.zeros(3, 7, 5, 9, dtype=torch.float64)
    for partials in (True, False):
        plan = LaunchPlan(x, partials=partials)
        assert vars(plan) == vars(LaunchPlan.for_shape(x.shape, 8, 8, "cpu", partials=partials))


# The interpreter's plan (4 programs' worth of tiles, 16384 values a tile): 40 classes (3 finalize
# class blocks), 32 x 32 pixels (4 tiles a sample: 2 chunks a sample), absent classes (exclude_empty
# then counts only some groups: the last program's rescale).
MULTI_PROGRAM_SHAPE = (2, 40, 32, 32)


@pytest.mark.skipif("triton" not in FUSED_MULTICLASS_BACKENDS, reason=f"no Triton backend on {DEVICE}")
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("exclude_empty", [False, True])
def test_multi_program_finalize_matches_reference(exclude_empty, per_sample, reduction):
    x, y = make_class_pair(MULTI_PROGRAM_SHAPE, torch.float64, absent=(3, 17, 33), ignore_fraction=0.05)
    if DEVICE.type == "cpu":
        plan = LaunchPlan(x)
        assert plan.chunks_per_sample == 2
        assert finalize_plan(x.shape[0] if per_sample else 1, x.shape[1], 2, plan.programs).programs > 1
    weight = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(DEVICE)
    options = dict(mode="multiclass", per_sample=per_sample, exclude_empty=exclude_empty, reduction=reduction,
                   include_background=False, ignore_index=IGNORE, weight=weight)
    assert_matches_reference("dice", x, y, "triton", **options)
    if reduction == "mean":  # the element term (mean over valid pixels) with the region term
        options.pop("mode")
        assert_matches_reference("dice_ce", x, y, "triton", **options)


@pytest.mark.skipif("triton" not in FUSED_MULTICLASS_BACKENDS, reason=f"no Triton backend on {DEVICE}")
@pytest.mark.parametrize("per_sample", [False, True])
def test_stats_and_finalize_halves_match_the_fused_loss(per_sample):
    """The synced path's halves: the summed (groups, 3) sums read back with one part per row, by the
    same multi-program finalize (its count of finished programs zeroed by a memset there)."""
    from fusedloss._spec import LossSpec
    from fusedloss.ops import triton_ops
    from fusedloss.ops.schema import spec_arguments

    ops = triton_ops.load()
    x, y = make_class_pair(MULTI_PROGRAM_SHAPE, torch.float64, absent=(3, 17, 33), ignore_fraction=0.05)
    spec = LossSpec(region=True, elem=True)
    options = dict(include_background=False, exclude_empty=True, reduction="mean")
    loss, coef = ops.multiclass_loss(x, y, None, None, per_sample, **spec_arguments("multiclass_loss", spec),
                                     ignore_index=IGNORE, check_target=False, **options)
    class_sums, elem_sums = ops.multiclass_stats(x, y, None, per_sample, **spec_arguments("multiclass_stats", spec),
                                                 ignore_index=IGNORE, check_target=False)
    loss_shape = list(x.shape[:2]) if per_sample else [x.shape[1]]
    halves = ops.multiclass_finalize(class_sums, elem_sums, None, x.shape[1], per_sample,
                                     **spec_arguments("multiclass_finalize", spec), loss_shape=loss_shape, **options)
    torch.testing.assert_close(halves[0], loss)
    torch.testing.assert_close(halves[1], coef)
