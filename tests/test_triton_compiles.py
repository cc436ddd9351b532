"""The Triton kernels compile for a real GPU, checked ahead of time on a machine
without one. The interpreter (the CPU tests) runs the kernels as Python and
accepts what the compiler may reject: Triton 3.6's compiler crashed on both
finalize kernels, which the interpreter ran fine. Every launch a set of loss
calls makes is recorded here, then tests/triton_aot.py compiles each for sm_90
(Triton's own compiler and ptxas; nothing runs), with each Triton in
FUSEDLOSS_AOT_TRITON_PATHS (`make test`: the GPU machine's 3.6), else the installed one.

The calls cover every kernel and flag combination with fp32, bf16, fp16 and fp64
logits, uint8, bool and float targets, uint8, int16, int32 and int64 class maps
and 2 to 4096 classes (the softmax kernels' largest), at sizes whose integers are
multiples of 16 and sizes whose are not, aligned and misaligned tensors. Each
launch is compiled as a GPU launch specialises it: pointers aligned to 16 bytes
and ints divisible by 16 get tt.divisibility=16 (vectorised loads), ints equal to
1 become constexprs."""

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import DEVICE, IGNORE, make_class_pair, make_pair

import fusedloss
from triton_aot import record_launches, run_compile, tree_version, triton_trees

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or DEVICE.type != "cpu",
                                reason="on a GPU the Triton kernels are compiled (and run) by every other test")


LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
TARGET_DTYPES = (torch.uint8, torch.bool, torch.float32)
CLASS_MAP_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)
# Class counts: binary-like, Cityscapes, ADE20K, and the largest the Triton softmax kernels take
# (one class by one pixel: the softmax kernels take at most 4096 classes).
CLASS_COUNTS = (2, 19, 150, 4096)
CUDA_SOFTMAX_TILE = 2048  # multiclass_triton.cuda_tile of fp32
# Sizes whose integer arguments (row lengths, strides, counts) are multiples of 16, as a GPU
# launch on real images gets them (specialised as divisible by 16), with rows long enough for
# the CUDA plan's largest block; and sizes whose are not. Small enough for the interpreter.
SIGMOID_SHAPE, SIGMOID_ODD_SHAPE = (2, 4, 32, 48), (2, 3, 9, 11)
ODD_SPATIAL = (3, 5)


def _tile_spatial(classes):
    """A spatial size (multiple of 16) that fills the CUDA plan's [classes, pixels] tile."""
    pixels = max(16, CUDA_SOFTMAX_TILE // (1 << (classes - 1).bit_length()))
    return (pixels // 16, 16)


def _misaligned(tensor):
    """The same values at an address that is not a multiple of 16 (a dense view at an offset)."""
    flat = torch.empty(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)[1:]
    return flat.view(tensor.shape).copy_(tensor)


def _class_map(x, classes, dtype):
    """A class map of ``dtype`` for logits ``x`` with about 10% ignored pixels, and its
    ignore_index (one the dtype can hold that is no class; None where there is none)."""
    ignore = IGNORE if classes <= IGNORE else (-100 if dtype.is_signed else None)
    labels = torch.randint(0, min(classes, torch.iinfo(dtype).max + 1), x.shape[:1] + x.shape[2:],
                           generator=torch.Generator().manual_seed(classes))
    if ignore is not None:
        labels[..., ::10] = ignore
    return labels.to(dtype).to(x.device), ignore


def _loss_calls():
    """Calls that reach every kernel with each flag combination, logit dtype, target dtype
    and class count, with and without the divisibility and alignment a GPU launch specialises."""
    losses, multiclass = fusedloss.LOSSES, fusedloss.MULTICLASS_LOSSES
    sigmoid_calls = (("dice_bce", {"per_channel": True}), ("focal", {"reduction": "none"}), ("dice", {}), ("focal", {}))
    for j, dtype in enumerate(LOGIT_DTYPES):
        for target_dtype in TARGET_DTYPES:
            x, t = make_pair(SIGMOID_SHAPE, dtype, target_dtype)
            for name, options in sigmoid_calls:
                yield losses[name], x, t, options
        # Odd sizes: every logit dtype and every target dtype once.
        x, t = make_pair(SIGMOID_ODD_SHAPE, dtype, TARGET_DTYPES[j % len(TARGET_DTYPES)])
        for name, options in sigmoid_calls:
            yield losses[name], x, t, options
    x, t = make_pair(SIGMOID_ODD_SHAPE, torch.float32, torch.uint8)
    weight = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(0)).to(x.device)
    for name, options in (("focal_tversky", {"per_sample": True, "reduction": "none"}),
                          ("iou", {"per_sample": True, "per_channel": True, "weight": weight, "reduction": "sum"}),
                          ("dice_bce", {"per_sample": True})):
        yield losses[name], x, t, options
    x, t = make_pair(SIGMOID_SHAPE, torch.float32, torch.float32)
    yield losses["dice_bce"], _misaligned(x), _misaligned(t), {}
    yield losses["focal"], _misaligned(x), _misaligned(t), {"reduction": "none"}
    x, t = make_pair(SIGMOID_SHAPE, torch.float16, torch.bool)
    yield losses["tversky"], x.to(memory_format=torch.channels_last), t.to(memory_format=torch.channels_last), {}
    # The option constexprs once each, not crossed with the rest: SQUARED_PRED and LOG_LOSS;
    # probabilities (FROM_LOGITS false, CLAMPED_LOG); the sigmoid with the clamped BCE.
    x, t = make_pair(SIGMOID_SHAPE, torch.float32, torch.uint8)
    yield losses["dice"], x, t, {"squared_pred": True, "log_loss": True}
    # A focal exponent other than the kernels' compile-time 0 and 2 (the run-time power: the fast log2).
    yield losses["focal"], x, t, {"gamma": 1.5}
    yield losses["focal"], x.to(torch.bfloat16), t, {"gamma": 0.5, "reduction": "none"}
    yield losses["dice_bce"], torch.sigmoid(x), t, {"activation": "none"}
    yield losses["focal"], torch.sigmoid(x), t, {"activation": "none", "reduction": "none"}
    yield _clamped_sigmoid_dice_focal, x, t, {}
    # HAS_IGNORE (binary ignore_index) once: every binary kernel, the target check on.
    yield _binary_ignore_index, x, torch.where(t.bool() & (x > 1), 255, t), {}
    # MIN_INTERSECTION once (statistics and backward), on a soft target.
    yield _min_intersection, x, torch.rand(x.shape, generator=torch.Generator().manual_seed(2)).to(x.device), {}
    # FOCAL_FORM once: smp's (statistics and backward), MONAI's (the focal map), on a soft target.
    yield _focal_form, x, torch.rand(x.shape, generator=torch.Generator().manual_seed(3)).to(x.device), {}

    multiclass_calls = (("dice", {"mode": "multiclass", "exclude_empty": True, "include_background": False}),
                        ("focal", {"mode": "multiclass", "reduction": "none"}), ("dice_ce", {"per_sample": True}))
    for i, classes in enumerate(CLASS_COUNTS):
        for j, dtype in enumerate(LOGIT_DTYPES):
            target_dtype = CLASS_MAP_DTYPES[(i + j) % len(CLASS_MAP_DTYPES)]  # each pairing once over the counts
            spatial = _tile_spatial(classes) if j % 2 == 0 else ODD_SPATIAL
            x, _ = make_class_pair((2, classes) + spatial, dtype)
            y, ignore = _class_map(x, classes, target_dtype)
            for name, options in multiclass_calls:
                yield multiclass[name], x, y, dict(options, ignore_index=ignore)
    x, _ = make_class_pair((2, 19, 4, 4), torch.float32)
    y, ignore = _class_map(x, 19, torch.uint8)
    weight = torch.rand(19, generator=torch.Generator().manual_seed(0)).to(x.device)
    yield (multiclass["focal_tversky"], x, y,
           {"mode": "multiclass", "weight": weight, "per_sample": True, "reduction": "none", "ignore_index": ignore})
    yield multiclass["focal"], x, y.clamp(max=18), {"mode": "multiclass"}  # no ignore_index
    yield multiclass["dice_ce"], x.to(memory_format=torch.channels_last), y, {"ignore_index": ignore}
    yield multiclass["dice_ce"], _misaligned(x), _misaligned(y), {"ignore_index": ignore}
    yield multiclass["dice"], x, y, {"mode": "multiclass", "squared_pred": True, "log_loss": True,
                                     "ignore_index": ignore}
    probabilities = torch.softmax(x, dim=1)
    yield multiclass["dice_ce"], probabilities, y, {"activation": "none", "ignore_index": ignore}
    yield (multiclass["focal"], probabilities, y,
           {"mode": "multiclass", "activation": "none", "reduction": "none", "ignore_index": ignore})
    # Per-class element weights with the weighted mean and label smoothing (logits, probabilities),
    # per-class alpha in the focal map, and per-class (dense) targets, checked: once each.
    class_weight = torch.rand(19, generator=torch.Generator().manual_seed(1)).to(x.device) + 0.1
    smoothed = {"ce_class_weight": class_weight, "label_smoothing": 0.1}
    yield multiclass["dice_ce"], x, y, dict(smoothed, ignore_index=ignore)
    yield multiclass["dice_ce"], probabilities, y, dict(smoothed, activation="none", ignore_index=ignore)
    yield (multiclass["focal"], x, y,
           {"mode": "multiclass", "alpha": class_weight, "reduction": "none", "ignore_index": ignore})
    one_hot = torch.nn.functional.one_hot(y.clamp(max=18).long(), 19).movedim(-1, 1)
    yield multiclass["dice_ce"], x, one_hot.to(torch.uint8), smoothed
    yield multiclass["dice"], x, one_hot.float(), {"mode": "multiclass", "squared_pred": True}
    yield multiclass["focal"], x, one_hot.bool(), {"mode": "multiclass", "alpha": class_weight, "reduction": "none"}
    yield multiclass["dice_focal"], probabilities, one_hot.float(), {"mode": "multiclass", "activation": "none"}
    yield from _lovasz_calls()


def _lovasz_calls():
    """The Lovász kernels (errors, chunk totals, row scan forward and backward, chain): every
    logit dtype, the target kinds, ignore_index, per-sample rows, int32 order (every row here is
    short), a softmax in one class block and in several, probabilities, per-class targets."""
    for j, dtype in enumerate(LOGIT_DTYPES):
        x, t = make_pair(SIGMOID_SHAPE if j % 2 == 0 else SIGMOID_ODD_SHAPE, dtype, TARGET_DTYPES[j % 3])
        yield fusedloss.lovasz_hinge_loss, x, t, {"per_sample": j % 2 == 0}
        for classes in (19, 300) if j < 2 else (19,):  # 300: the softmax over class blocks (fp32, bf16)
            xm, _ = make_class_pair((2, classes) + ((4, 16) if j % 2 == 0 else ODD_SPATIAL), dtype)
            y, ignore = _class_map(xm, classes, CLASS_MAP_DTYPES[j])
            yield fusedloss.lovasz_softmax_loss, xm, y, {"ignore_index": ignore, "per_sample": j % 2 == 1}
    x, t = make_pair(SIGMOID_SHAPE, torch.float32, torch.uint8)
    yield fusedloss.lovasz_hinge_loss, x, torch.where(x > 2, 255, t).to(torch.uint8), {"ignore_index": 255}
    x, _ = make_class_pair((2, 19, 4, 4), torch.float32)
    y, _ = _class_map(x, 19, torch.int64)
    one_hot = torch.nn.functional.one_hot(y.clamp(min=0, max=18), 19).movedim(-1, 1).float()
    yield fusedloss.lovasz_softmax_loss, torch.softmax(x, 1), one_hot, {"activation": "none", "classes": "all"}


def _clamped_sigmoid_dice_focal(x, t, backend):
    """from_logits with clamped_log (no public option yet): the op itself."""
    from fusedloss._spec import LossSpec
    from fusedloss.ops import triton_ops
    from fusedloss.ops.schema import spec_arguments

    spec = LossSpec(region=True, elem=True, focal_alpha=0.25, focal_gamma=2.0, clamped_log=True)
    ops = triton_ops.load()
    assert backend == "triton"
    loss, _ = ops.binary_loss(x, t, None, False, False, **spec_arguments("binary_loss", spec), ignore_index=None,
                              reduction="mean", check_target=False)
    return loss + ops.binary_focal_map(x, t, 0.25, 2.0, 0, True, True, None, False).sum()


def _binary_ignore_index(x, t, backend):
    """A binary ignore_index (255 in a uint8 mask), checked: the op itself, with and without reduction."""
    from fusedloss._spec import LossSpec
    from fusedloss.ops import triton_ops
    from fusedloss.ops.schema import spec_arguments

    spec = LossSpec(region=True, elem=True)
    ops = triton_ops.load()
    assert backend == "triton"
    loss, _ = ops.binary_loss(x, t, None, False, True, **spec_arguments("binary_loss", spec), ignore_index=255,
                              reduction="mean", check_target=True)
    return loss + ops.binary_focal_map(x, t, 0.25, 2.0, 0, True, False, 255, True).sum()


def _min_intersection(x, t, backend):
    """min_intersection (no public option: the compat layer's): the op itself."""
    from fusedloss._spec import LossSpec
    from fusedloss.ops import triton_ops
    from fusedloss.ops.schema import spec_arguments

    spec = LossSpec(region=True, elem=True, min_intersection=True)
    ops = triton_ops.load()
    assert backend == "triton"
    loss, _ = ops.binary_loss(x, t, None, False, True, **spec_arguments("binary_loss", spec), ignore_index=None,
                              reduction="mean", check_target=True)
    return loss


def _focal_form(x, t, backend):
    """focal_form (no public option: the compat layer's): the ops themselves."""
    from fusedloss._spec import LossSpec
    from fusedloss.ops import triton_ops
    from fusedloss.ops.schema import spec_arguments

    spec = LossSpec(region=True, elem=True, focal_alpha=0.25, focal_gamma=2.0, focal_form=1)
    ops = triton_ops.load()
    assert backend == "triton"
    loss, _ = ops.binary_loss(x, t, None, False, True, **spec_arguments("binary_loss", spec), ignore_index=None,
                              reduction="mean", check_target=True)
    return loss + ops.binary_focal_map(x, t, 0.25, 2.0, 2, True, False, None, True).sum()


def _recorded_dtypes(launches, module_suffix, kernel, argument):
    return {
        value[0]
        for launch in launches
        if launch["module"].endswith(module_suffix) and launch["name"] == kernel
        for name, _, kind, value in launch["args"]
        if name == argument and kind == "tensor"
    }


def _recorded_values(launches, module_suffix, kernel, argument):
    return {
        value
        for launch in launches
        if launch["module"].endswith(module_suffix) and launch["name"] == kernel
        for name, _, _, value in launch["args"]
        if name == argument
    }


@pytest.fixture(scope="module")
def recorded_launches(tmp_path_factory):
    pytest.importorskip("triton.backends.nvidia", reason="this Triton has no NVIDIA backend to compile with")
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorded = record_launches(monkeypatch)
        for fn, x, t, options in _loss_calls():
            x = x.detach().requires_grad_(True)
            loss = fn(x, t, backend="triton", **options)
            torch.autograd.grad(loss.sum(), x)
    launches = list(recorded.values())
    kernels = {(launch["module"], launch["name"]) for launch in launches}
    # stats, finalize, backward and focal map of both families; the Lovász errors, totals, rows and chain
    # kernels of lovasz_triton (binary and multiclass errors and chain)
    assert len(kernels) == 14, kernels
    # The recording reached what it is meant to cover (not vacuous if a call stops launching).
    logits = {str(dtype) for dtype in LOGIT_DTYPES}
    for module in ("binary_triton", "multiclass_triton"):
        for kernel in ("_stats_kernel", "_backward_kernel", "_focal_map_kernel"):
            assert _recorded_dtypes(launches, module, kernel, "x_ptr") == logits, (module, kernel)
    # bool targets are read as their bytes (uint8)
    assert _recorded_dtypes(launches, "binary_triton", "_stats_kernel", "t_ptr") == {"torch.uint8", "torch.float32"}
    assert _recorded_dtypes(launches, "multiclass_triton", "_stats_kernel", "y_ptr") == {
        str(dtype) for dtype in CLASS_MAP_DTYPES
    } | {"torch.float32"}  # per-class targets: float32 (uint8 and bool, read as uint8, are among the maps')
    assert _recorded_values(launches, "multiclass_triton", "_stats_kernel", "BLOCK_C") == {
        1 << (classes - 1).bit_length() for classes in CLASS_COUNTS
    }
    # Each compile-time kind of focal exponent (0, 2, any other) in both streaming kernels.
    for kernel in ("_stats_kernel", "_backward_kernel"):
        assert _recorded_values(launches, "binary_triton", kernel, "GAMMA") == {0, 1, 2}, kernel
    path = tmp_path_factory.mktemp("aot") / "launches.json"
    path.write_text(json.dumps(launches))
    return path


# What each Triton must compile at least (about 370 configurations with Triton 3.6 and 3.8, of
# which about 230 have an int divisible by 16, 290 an int equal to 1, 6 a misaligned pointer):
# a recording or a specialisation that silently shrinks fails here, not passes on a few kernels.
MIN_COMPILED = 250
MIN_PER_KERNEL = 10
MIN_PER_LOVASZ_KERNEL = 4  # fewer flags: 5 to 16 configurations each
MIN_PER_SPECIALISATION = {"aligned_pointer": 250, "unaligned_pointer": 4, "divisible_int": 150, "int_as_constexpr": 200}


@pytest.mark.parametrize("tree", triton_trees(), ids=lambda tree: "installed" if tree is None else Path(tree).name)
def test_every_triton_kernel_compiles_for_sm90(recorded_launches, tree, tmp_path):
    # Only the listed Tritons, to keep the suite's minutes: the GPU runs what 3.6 compiles.
    result, summary, _ = run_compile(recorded_launches, tree, tmp_path)
    # The failures come first in the output, the summary last (none if the script broke).
    assert result.returncode == 0, result.stdout[:6000] + "\n...\n" + result.stdout[-1500:] + result.stderr[-3000:]
    print(result.stdout.splitlines()[-2])  # with -s: how many, how long
    assert summary["failed"] == 0, result.stdout[:6000]
    if tree is not None:
        assert summary["triton"] == tree_version(tree), summary
    assert summary["compiled"] >= MIN_COMPILED, summary
    per_kernel = summary["per_kernel"]
    assert len(per_kernel) == 14, summary
    assert all(count >= (MIN_PER_LOVASZ_KERNEL if "lovasz" in kernel else MIN_PER_KERNEL)
               for kernel, count in per_kernel.items()), summary
    # The GPU specialisations are there: pointers aligned to 16 bytes and not (a view at an
    # offset), ints divisible by 16, ints equal to 1 made constexpr.
    assert all(
        summary["specialisations"].get(kind, 0) >= minimum for kind, minimum in MIN_PER_SPECIALISATION.items()
    ), summary
