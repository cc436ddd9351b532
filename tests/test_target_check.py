"""Target values each loss does not define are caught on every backend, with no
host sync: a binary / multi-label target outside [0, 1] (a 0/255 mask), a class
index outside [0, C) that is not ignore_index. The fused kernels check in their
statistics pass; on the CPU the error is a ValueError naming a value, on a GPU a
device-side assert (checked in a subprocess: it poisons the CUDA context).
FUSEDLOSS_CHECK_TARGETS=0 turns the check off."""

import subprocess
import sys

import pytest
import torch
from helpers import (ALL_LOSSES, DEVICE, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, IGNORE, assert_close, loss_fn,
                     make_class_pair, make_pair, multiclass_options)

import fusedloss
from fusedloss import _checks
from fusedloss._spec import LossSpec
from fusedloss.ops import fused_ops

BACKENDS = FUSED_BACKENDS + ["reference"]
SOFTMAX_BACKENDS = FUSED_MULTICLASS_BACKENDS + ["reference"]
MULTICLASS = list(fusedloss.MULTICLASS_LOSSES)
on_cpu = pytest.mark.skipif(
    DEVICE.type != "cpu", reason="on a GPU the check is a device-side assert: test_gpu_device_side_assert"
)

# (target dtype, bad value, how the message names it)
BAD_BINARY = [(torch.uint8, 255, r"255"), (torch.float32, 1.5, r"1\.5"), (torch.float32, -0.25, r"-0\.25"),
              (torch.float32, float("nan"), r"nan"), (torch.float16, 2.0, r"2(\.0)?")]


def _binary_with(dtype, value, shape=(2, 3, 5, 7)):
    x, t = make_pair(shape, target_dtype=torch.float32)
    t = t.round()
    t.view(-1)[17] = value  # in the middle of a row, not its first element
    return x, t.to(dtype)


def _classes_with(value, target_dtype=torch.int64, shape=(2, 3, 5, 7)):
    x, y = make_class_pair(shape, target_dtype=target_dtype)
    y.view(-1)[23] = value
    return x, y


@on_cpu
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype, value, shown", BAD_BINARY)
def test_binary_target_outside_unit_interval(name, backend, dtype, value, shown):
    x, t = _binary_with(dtype, value)
    with pytest.raises(ValueError, match=rf"target holds {shown}, outside \[0, 1\]: .*0/255 mask"):
        loss_fn(name)(x, t, backend=backend)


@on_cpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_checked_in_every_forward(backend):
    """The per-element focal map (reduction='none') and the per-group losses read
    the target in their own kernels: each checks."""
    x, t = _binary_with(torch.uint8, 255)
    for call in (
        lambda: fusedloss.focal_loss(x, t, reduction="none", backend=backend),
        lambda: fusedloss.dice_loss(x, t, per_sample=True, per_channel=True, reduction="none", backend=backend),
        lambda: fusedloss.dice_bce_loss(x, t, per_channel=True, backend=backend),
    ):
        with pytest.raises(ValueError, match=r"target holds 255, outside \[0, 1\]"):
            call()


@on_cpu
@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_statistics_op_checks(backend):
    """sync=True runs the statistics op on its own: it checks too."""
    x, t = _binary_with(torch.float32, 3.0)
    y_x, y = _classes_with(5)
    ops = fused_ops(backend)
    terms = dict(region=True, squared_pred=False, elem=True, focal_alpha=-1.0, focal_gamma=0.0, from_logits=True,
                 clamped_log=False, check_target=True)
    with pytest.raises(ValueError, match=r"target holds 3(\.0)?, outside \[0, 1\]"):
        ops.binary_stats(x, t, per_sample=False, per_channel=False, min_intersection=False, focal_form=0,
                         ignore_index=None, **terms)
    if backend in FUSED_MULTICLASS_BACKENDS:
        with pytest.raises(ValueError, match=r"target holds class index 5, outside \[0, 3\)"):
            ops.multiclass_stats(y_x, y, None, per_sample=False, label_smoothing=0.0, weighted_mean=False,
                                 ignore_index=None, **terms)


@on_cpu
@pytest.mark.parametrize("backend", SOFTMAX_BACKENDS)
@pytest.mark.parametrize("name", MULTICLASS)
@pytest.mark.parametrize(
    "target_dtype, value", [(torch.uint8, 3), (torch.int16, -1), (torch.int32, 200), (torch.int64, -100)]
)
def test_class_index_out_of_range(name, backend, target_dtype, value):
    x, y = _classes_with(value, target_dtype)
    options = multiclass_options(name)
    with pytest.raises(
        ValueError,
        match=rf"target holds class index {value}, outside \[0, 3\) and not "
        r"ignore_index=None",
    ):
        fusedloss.MULTICLASS_LOSSES[name](x, y, backend=backend, **options)


@on_cpu
@pytest.mark.parametrize("backend", SOFTMAX_BACKENDS)
def test_class_index_checked_in_focal_map_and_beside_ignore_index(backend):
    x, y = _classes_with(4)
    with pytest.raises(ValueError, match=r"target holds class index 4, outside \[0, 3\)"):
        fusedloss.focal_loss(x, y, mode="multiclass", reduction="none", backend=backend)
    y.view(-1)[:5] = IGNORE  # ignored pixels are fine, the 4 beside them is not
    with pytest.raises(ValueError, match=rf"class index 4, outside \[0, 3\) and not ignore_index={IGNORE}"):
        fusedloss.dice_ce_loss(x, y, ignore_index=IGNORE, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_extremes_pass(backend):
    """Exactly 0 and 1, bool masks, and ignore_index are valid."""
    x, t = make_pair((2, 3, 4), mask="full")
    t[0] = 0.0
    for target in (t, t.bool(), t.to(torch.uint8)):
        assert torch.isfinite(fusedloss.dice_bce_loss(x, target, backend=backend))
        assert torch.isfinite(fusedloss.focal_loss(x, target, reduction="none", backend=backend)).all()
    if backend in SOFTMAX_BACKENDS:
        x, y = make_class_pair((2, 3, 4, 5), target_dtype=torch.uint8, ignore_fraction=0.3)
        assert torch.isfinite(fusedloss.dice_ce_loss(x, y, ignore_index=IGNORE, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_switched_off(monkeypatch, backend):
    """FUSEDLOSS_CHECK_TARGETS=0: no check, the kernels compute with the values as
    they are (binary) or treat bad class indices as ignored (multi-class)."""
    monkeypatch.setattr(_checks, "CHECK_TARGETS", False)
    x, t = _binary_with(torch.float32, 2.0)
    assert torch.isfinite(fusedloss.dice_loss(x, t, backend=backend))
    if backend in SOFTMAX_BACKENDS and backend != "reference":  # the reference would index with it
        x, y = _classes_with(7)
        marked = y.clone()
        marked.view(-1)[23] = IGNORE
        assert_close(fusedloss.dice_ce_loss(x, y, backend=backend),
                     fusedloss.dice_ce_loss(x, marked, ignore_index=IGNORE, backend=backend), torch.float32)


@on_cpu
@pytest.mark.parametrize("backend", FUSED_MULTICLASS_BACKENDS)
def test_unchecked_out_of_range_class_is_ignored_by_the_kernels(backend):
    """With the target check off (FUSEDLOSS_CHECK_TARGETS=0) the kernels treat an
    index outside [0, C) as ignored and read nothing with it."""
    x, y = make_class_pair((2, 3, 5, 6), torch.float64)
    bad = y.clone()
    bad[0, 0, :3] = 7
    marked = y.clone()
    marked[0, 0, :3] = IGNORE
    ops = fused_ops(backend)
    spec = LossSpec(region=True, tv_alpha=0.5, tv_beta=0.5, smooth_nr=0.5, smooth_dr=0.5, region_gamma=1.0,
                    region_weight=1.0, elem=True, focal_alpha=-1.0, focal_gamma=0.0, elem_weight=1.0, elem_mean=True)
    options = dict(
        weight=None, class_weight=None, per_sample=False, **spec._asdict(), include_background=True,
        exclude_empty=False, reduction="mean"
    )
    got, _ = ops.multiclass_loss(x, bad, ignore_index=None, check_target=False, **options)
    want, _ = ops.multiclass_loss(x, marked, ignore_index=IGNORE, check_target=True, **options)
    assert_close(got, want, torch.float64)


def test_switch_is_read_from_the_environment():
    script = "import fusedloss._checks as c; print(c.CHECK_TARGETS)"
    for value, expected in (("0", "False"), ("1", "True")):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                env={**__import__("os").environ, "FUSEDLOSS_CHECK_TARGETS": value})
        assert result.stdout.strip() == expected, result.stderr[-2000:]


@on_cpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_checked_under_compile(backend):
    """torch.compile(fullgraph=True) keeps the check: inside the fused ops, and as
    torch._assert_async in the reference (a RuntimeError there)."""
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, t: fusedloss.dice_loss(x, t, backend=backend), fullgraph=True, backend="aot_eager"
    )
    x, t = _binary_with(torch.float32, 1.0)
    assert torch.isfinite(compiled(x, t))
    t.view(-1)[3] = 4.0
    with pytest.raises((ValueError, RuntimeError), match=r"outside \[0, 1\]"):
        compiled(x, t)


# ---- other bad inputs ----


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_weight_values(backend, bad):
    x, t = make_pair((2, 3, 4))
    weight = torch.tensor([1.0, bad, 0.5], device=DEVICE)
    if DEVICE.type != "cpu":
        pytest.skip("on a GPU a bad weight is a device-side assert (test_gpu_device_side_assert)")
    with pytest.raises(ValueError, match=r"weight must hold finite numbers >= 0, got"):
        fusedloss.dice_loss(x, t, per_channel=True, weight=weight, backend=backend)
    if backend in SOFTMAX_BACKENDS:
        x, y = make_class_pair((2, 3, 4, 5))
        with pytest.raises(ValueError, match=r"weight must hold finite numbers >= 0"):
            fusedloss.dice_loss(x, y, mode="multiclass", weight=weight, backend=backend)


@pytest.mark.parametrize(
    "target_dtype, ignore_index, message",
    [(torch.uint8, -100, r"ignore_index=-100 cannot occur in a uint8 target \(values 0..255\)"),
     (torch.int16, 70000, r"ignore_index=70000 cannot occur in a int16 target"),
     (torch.int64, 1, r"ignore_index=1 is a class index \(in \[0, 3\)\)"),
     (torch.int64, 0, r"ignore_index=0 is a class index")],
)
def test_bad_ignore_index(target_dtype, ignore_index, message):
    x, y = make_class_pair((2, 3, 4, 5), target_dtype=target_dtype)
    for backend in SOFTMAX_BACKENDS:
        with pytest.raises(ValueError, match=message):
            fusedloss.dice_ce_loss(x, y, ignore_index=ignore_index, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_zero_dim_input(name, backend):
    x, t = make_pair(())
    with pytest.raises(ValueError, match="input must have at least one dim"):
        loss_fn(name)(x, t, backend=backend)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_fused_backend_refuses_weight_that_requires_grad(backend):
    x, t = make_pair((2, 3, 4))
    weight = torch.ones(3, device=DEVICE, requires_grad=True)
    with pytest.raises(ValueError, match=f"backend='{backend}' does not differentiate w.r.t. target or weight"):
        fusedloss.dice_loss(x, t, per_channel=True, weight=weight, backend=backend)
    if backend in FUSED_MULTICLASS_BACKENDS:
        x, y = make_class_pair((2, 3, 4, 5))
        with pytest.raises(ValueError, match="does not differentiate w.r.t. target or weight"):
            fusedloss.dice_ce_loss(x, y, weight=weight, backend=backend)


@pytest.mark.skipif(fusedloss.ops.selection.unavailable_reason("triton", DEVICE, "multiclass", 2) is not None,
                    reason="Triton does not run here")
def test_triton_refuses_more_than_4096_classes():
    x = torch.zeros(1, 4097, 1, device=DEVICE)
    y = torch.zeros(1, 1, dtype=torch.int64, device=DEVICE)
    with pytest.raises(
        ValueError,
        match=r"backend='triton' cannot run this call: the Triton softmax kernels take "
        r"at most 4096 classes \(got 4097\)",
    ):
        fusedloss.dice_loss(x, y, mode="multiclass", backend="triton")
    chosen = fusedloss.ops.resolve("auto", DEVICE, family="multiclass", classes=4097)
    assert chosen != "triton"
    assert torch.isfinite(fusedloss.dice_loss(x, y, mode="multiclass"))  # 'auto' runs it elsewhere


# ---- on a GPU: the device-side assert ----

_GPU_CASES = {"binary": "fusedloss.dice_loss(x, t, backend=B)",
              "binary_map": "fusedloss.focal_loss(x, t, reduction='none', backend=B)",
              "classes": "fusedloss.dice_ce_loss(xm, y, backend=B)",
              "classes_map": "fusedloss.focal_loss(xm, y, mode='multiclass', reduction='none', backend=B)",
              "weight": "fusedloss.dice_loss(x, t.clamp(0, 1), per_channel=True, weight=w, backend=B)"}


@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a GPU (the CPU raises a ValueError: tests above)")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(_GPU_CASES))
def test_gpu_device_side_assert(backend, case):
    """No host sync in the loss; the next synchronisation raises the device-side
    assert. A valid call first proves the same code runs clean."""
    script = (
        "import torch, fusedloss\n"
        f"B = {backend!r}\n"
        "x = torch.randn(2, 3, 64, device='cuda'); t = (torch.rand(2, 3, 64, device='cuda') > 0.5).float()\n"
        "xm = torch.randn(2, 3, 64, device='cuda'); y = torch.randint(0, 3, (2, 64), device='cuda')\n"
        "w = torch.ones(3, device='cuda')\n"
        f"{_GPU_CASES[case]}; torch.cuda.synchronize(); print('valid call ran', flush=True)\n"
        "t[1, 2, 40] = 255.0; y[1, 40] = 3; w[1] = -1.0\n"
        f"{_GPU_CASES[case]}\n"
        "print('no sync in the call', flush=True)\n"
        "torch.cuda.synchronize()\n"
        "print('NOT CAUGHT', flush=True)\n"
    )
    if case.startswith("classes") and backend not in SOFTMAX_BACKENDS:
        pytest.skip(f"{backend} has no multi-class kernels")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert "valid call ran" in result.stdout and "no sync in the call" in result.stdout, output[-3000:]
    assert "NOT CAUGHT" not in result.stdout and result.returncode != 0, output[-3000:]
    assert "device-side assert" in output, output[-3000:]
