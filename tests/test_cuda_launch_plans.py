"""The CUDA C++ multi-class launch plans, checked without a GPU: csrc/launch_plan.h is plain
arithmetic on (shape, element sizes, SM count), and the extension exposes it as
fusedloss._C.cuda_multiclass_plan, so the plans a 132-SM GPU (H100 / H200) gets are computed
here. The statistics kernel's (3, C) partials stay within 5% of the input's bytes, its tile of
softmax statistics fits its shared memory, every pixel is covered once, and the grid fills the
GPU at mc19, mc150 and 3-D shapes (more threads a pixel where pixels are few) unless the 5%
bound is what stops more blocks. The kernels' values under these plans: the suite's CUDA runs
(shapes of 2 to 150 classes, test_matches_reference.py; masked classes, test_extremes.py)."""

import math

import pytest

_C = pytest.importorskip("fusedloss._C", reason="the C++ extension is not built")

SMS = 132
THREADS, TILE_PIXELS, CHUNK = 256, 2048, 8  # csrc/launch_plan.h
ELEMENT_SIZES = {"bf16": (2, 4), "fp32": (4, 4), "fp64": (8, 8)}  # (input, accumulator) bytes
CLASS_COUNTS = (2, 5, 19, 32, 150, 1024, 4096)
BATCH_SPATIAL = ((2, 64, 64), (8, 256, 256), (1, 32, 32, 32), (2, 64, 128, 128), (4, 256, 256), (2, 128, 128))
# The shapes the issue names: mc19, mc150, a 3-D volume.
FLAGSHIPS = {"mc19": (4, 19, 256, 256), "mc150": (2, 150, 128, 128), "3d": (2, 4, 128, 128, 128),
             "3d-14": (1, 14, 96, 96, 96)}


def plan(shape, sizes, stats=True, max_slices=8):
    slices, lanes, steps, chunks_per_row, blocks = _C.cuda_multiclass_plan(
        shape[0], shape[1], math.prod(shape[2:]), *sizes, SMS, stats, max_slices)
    return dict(slices=slices, lanes=lanes, steps=steps, chunks_per_row=chunks_per_row, blocks=blocks)


def partial_bytes(shape, sizes, p):
    return p["blocks"] * 3 * shape[1] * sizes[1]


@pytest.mark.parametrize("sizes", ELEMENT_SIZES.values(), ids=ELEMENT_SIZES.keys())
@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("batch_spatial", BATCH_SPATIAL, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("stats", [True, False], ids=["stats", "backward"])
def test_tiling(batch_spatial, classes, sizes, stats):
    """Slices x lanes = the block; a warp one slice's; every pixel of a sample in exactly one
    chunk; the stats tile within its shared memory; the stats partials within 5% of the input."""
    shape = (batch_spatial[0], classes) + batch_spatial[1:]
    p = plan(shape, sizes, stats)
    spatial = math.prod(shape[2:])
    assert p["slices"] * p["lanes"] == THREADS and p["lanes"] >= 32 and p["slices"] in (1, 2, 4, 8)
    assert p["slices"] == 1 or CHUNK * p["slices"] <= classes  # each slice a chunk of classes at least
    pixels_per_chunk = p["steps"] * p["lanes"]
    assert p["chunks_per_row"] * pixels_per_chunk >= spatial > (p["chunks_per_row"] - 1) * pixels_per_chunk
    assert p["blocks"] == shape[0] * p["chunks_per_row"]
    if stats:
        assert pixels_per_chunk <= TILE_PIXELS
        input_bytes = math.prod(shape) * sizes[0]
        assert partial_bytes(shape, sizes, p) * 20 <= input_bytes, (p, input_bytes)


@pytest.mark.parametrize("sizes", ELEMENT_SIZES.values(), ids=ELEMENT_SIZES.keys())
@pytest.mark.parametrize("name", FLAGSHIPS)
def test_grid_fills_the_gpu(name, sizes):
    """At least two blocks of 8 warps an SM (16 warps), for the backward always, for the
    statistics unless twice its blocks would break the 5% bound (mc150 in bf16: 256 blocks of
    128 pixels x 150 classes); few pixels get several threads each (mc150: 8 a pixel)."""
    shape = FLAGSHIPS[name]
    pixels = shape[0] * math.prod(shape[2:])
    backward = plan(shape, sizes, stats=False)
    assert backward["blocks"] >= 2 * SMS, backward
    stats = plan(shape, sizes)
    at_bound = 2 * partial_bytes(shape, sizes, stats) * 20 > math.prod(shape) * sizes[0]
    assert stats["blocks"] >= 2 * SMS or at_bound, stats
    for p in (stats, backward):
        assert pixels * p["slices"] >= SMS * 1024 or p["slices"] == 8 or CHUNK * 2 * p["slices"] > shape[1], p


def test_slices_follow_pixels_and_classes():
    """One thread a pixel where pixels are many or classes few (the kernels' first form); 8 at
    mc150; the focal map, which has no class loop to share, keeps 1."""
    assert plan(FLAGSHIPS["mc19"], (4, 4))["slices"] == 1
    assert plan(FLAGSHIPS["3d"], (4, 4))["slices"] == 1
    assert plan((1, 5, 8, 8), (4, 4))["slices"] == 1  # 5 classes: nothing to share
    assert plan(FLAGSHIPS["mc150"], (4, 4))["slices"] == 8
    assert plan((1, 32, 5, 6), (4, 4))["slices"] == 4  # test_extremes' masked classes: 24-31 one slice's
    assert plan(FLAGSHIPS["mc150"], (4, 4), stats=False, max_slices=1)["slices"] == 1


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="at least 1"):
        _C.cuda_multiclass_plan(0, 19, 64, 4, 4, SMS, True, 8)
