"""fusedloss.compat.smp against segmentation_models_pytorch 0.6 itself: loss and input gradient,
over smp's modes (binary, multilabel, multiclass), targets (hard and soft floats, bool, uint8,
class maps), 2-D and 3-D, fp64 and fp32, and its options; every backend; and smp's errors."""

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS, assert_close, import_peer

from fusedloss.compat import smp

smp_losses = import_peer("segmentation_models_pytorch.losses")

BACKENDS = FUSED_BACKENDS + ["reference"]
# The Triton interpreter is slow on the CPU: a subset of cases runs there (all of them on a GPU).
QUICK_BACKENDS = [name for name in BACKENDS if name != "triton" or DEVICE.type == "cuda"]


def _inputs(mode, shape, dtype, target_kind, ignore_index=None, seed=0):
    """(logits, target) for ``mode``: binary (N, 1, *S) with an (N, *S) target; multilabel (N, C, *S);
    multiclass (N, C, *S) with an int64 class map. target_kind: 'hard', 'soft', 'bool', 'uint8',
    'absent' (hard, class / channel 1 never present)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).mul(3).to(dtype)
    if mode == "multiclass":
        y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
        if target_kind == "absent":
            y = torch.where(y == 1, 0, y)
        if ignore_index is not None:
            y = torch.where(torch.rand(y.shape, generator=gen) < 0.2, ignore_index, y)
        return x.to(DEVICE), y.to(DEVICE)
    target_shape = shape[:1] + shape[2:] if mode == "binary" else shape
    t = (torch.rand(target_shape, generator=gen) < 0.4).double()
    if target_kind == "soft":
        t = torch.where(torch.rand(target_shape, generator=gen) < 0.5, torch.rand(target_shape, generator=gen), t)
    if target_kind == "absent" and mode == "multilabel":
        t[:, 1] = 0
    if ignore_index is not None:
        t = torch.where(torch.rand(target_shape, generator=gen) < 0.2, float(ignore_index), t)
    dtype_of = {"bool": torch.bool, "uint8": torch.uint8}
    return x.to(DEVICE), t.to(dtype_of.get(target_kind, dtype)).to(DEVICE)


def _compare(ours, theirs, x, y, dtype, probabilities=False, close=None):
    """Loss and input gradient of both modules on (x, y); ``close(actual, expected, dtype)``
    compares them (default: helpers.assert_close)."""
    close = close or assert_close
    results = []
    for module in (ours, theirs):
        leaf = (torch.sigmoid(x) if probabilities else x).detach().clone().requires_grad_(True)
        loss = module(leaf, y)
        upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
        (grad,) = torch.autograd.grad(loss, leaf, upstream)
        results.append((loss.detach(), grad))
    (loss, grad), (expected_loss, expected_grad) = results
    close(loss.to(expected_loss.dtype), expected_loss, dtype)
    close(grad, expected_grad, dtype)


REGION_CLASSES = ["DiceLoss", "JaccardLoss", "TverskyLoss"]
# (mode, shape, target kind, options): smp's option grid for the region losses.
REGION_CASES = [
    ("binary", (2, 1, 4, 5), "hard", {}),
    ("binary", (2, 1, 4, 5), "soft", dict(smooth=0.5)),
    ("binary", (2, 1, 4, 5), "bool", dict(log_loss=True)),
    ("binary", (2, 1, 3, 4, 5), "uint8", dict(ignore_index=255)),
    ("binary", (2, 1, 4, 5), "soft", dict(ignore_index=-1, from_logits=False)),
    ("multilabel", (2, 3, 4, 5), "soft", dict(smooth=1.0, eps=1e-3)),
    ("multilabel", (2, 3, 4, 5), "absent", dict(class_weights=[0.2, 1.0, 2.0])),
    ("multilabel", (2, 3, 4, 5), "uint8", dict(classes=[0, 2], ignore_index=255, log_loss=True)),
    ("multilabel", (2, 3, 4, 5), "hard", dict(from_logits=False, classes=[1, 2], class_weights=[1.0, 0.5, 3.0])),
    ("multiclass", (2, 4, 4, 5), "hard", {}),
    ("multiclass", (2, 4, 3, 4, 5), "absent", dict(smooth=0.5, ignore_index=255)),
    ("multiclass", (2, 4, 4, 5), "hard", dict(from_logits=False, log_loss=True, class_weights=[1, 2, 3, 4])),
    ("multiclass", (2, 4, 4, 5), "absent", dict(classes=[1, 3], ignore_index=2)),
]
TVERSKY_OPTIONS = dict(alpha=0.3, beta=0.7, gamma=1.5)


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", REGION_CASES, ids=lambda case: f"{case[0]}-{case[2]}-{sorted(case[3])}")
@pytest.mark.parametrize("name", REGION_CLASSES)
def test_region_losses_equal_smp(name, case, dtype, backend):
    mode, shape, target_kind, options = case
    options = {**options, **(TVERSKY_OPTIONS if name == "TverskyLoss" else {})}
    ignore_index = options.get("ignore_index")
    x, y = _inputs(mode, shape, dtype, target_kind, ignore_index)
    ours = getattr(smp, name)(mode, **options, backend=backend)
    theirs = getattr(smp_losses, name)(mode, **options)
    _compare(ours, theirs, x, y, dtype, probabilities=not options.get("from_logits", True))


# The Triton backend on a few cases (one per mode, with options).
@pytest.mark.parametrize("case", [REGION_CASES[i] for i in (1, 7, 10)], ids=["binary", "multilabel", "multiclass"])
def test_region_losses_equal_smp_on_triton(case):
    if "triton" not in FUSED_BACKENDS or DEVICE.type == "cuda":
        pytest.skip("the Triton backend runs every case on a GPU (test_region_losses_equal_smp); none here")
    mode, shape, target_kind, options = case
    x, y = _inputs(mode, shape, torch.float64, target_kind, options.get("ignore_index"))
    for name in REGION_CLASSES:
        _compare(getattr(smp, name)(mode, **options, backend="triton"), getattr(smp_losses, name)(mode, **options),
                 x, y, torch.float64)


FOCAL_CASES = [
    ("binary", (2, 1, 4, 5), "hard", {}),
    ("binary", (2, 1, 4, 5), "uint8", dict(alpha=0.25, ignore_index=255)),
    ("binary", (2, 1, 4, 5), "bool", dict(reduction="sum", gamma=1.5)),
    ("binary", (2, 1, 4, 5), "soft", dict(alpha=0.3)),  # soft targets: smp's focal factor (focal_form)
    ("multilabel", (2, 3, 4, 5), "soft", dict(gamma=0.5, class_weights=[0.5, 1.0, 2.0])),
    ("binary", (2, 1, 4, 5), "hard", dict(normalized=True)),
    ("binary", (2, 1, 4, 5), "hard", dict(reduced_threshold=0.5, reduction="none")),
    ("binary", (2, 1, 4, 5), "hard", dict(reduction="batchwise_mean", from_logits=False)),
    ("multilabel", (2, 3, 4, 5), "uint8", dict(alpha=0.25, class_weights=[0.5, 1.0, 2.0])),
    ("multilabel", (2, 3, 3, 4, 5), "bool", dict(reduction="sum")),
    ("multiclass", (2, 4, 4, 5), "hard", {}),
    ("multiclass", (2, 4, 3, 4, 5), "hard", dict(alpha=0.25, ignore_index=255, class_weights=[1, 2, 3, 4])),
    ("multiclass", (2, 4, 4, 5), "hard", dict(from_logits=False, reduction="sum", gamma=3.0)),
]


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", FOCAL_CASES, ids=lambda case: f"{case[0]}-{case[2]}-{sorted(case[3])}")
def test_focal_loss_equals_smp(case, dtype, backend):
    mode, shape, target_kind, options = case
    x, y = _inputs(mode, shape, dtype, target_kind, options.get("ignore_index"))
    if options.get("from_logits") is False and mode == "multiclass":
        x = torch.softmax(x, 1).log()  # probabilities below: softmax ones for multiclass
    probabilities = options.get("from_logits") is False
    _compare(smp.FocalLoss(mode, **options, backend=backend), smp_losses.FocalLoss(mode, **options), x, y, dtype,
             probabilities)


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("options", [{}, dict(smooth_factor=0.1), dict(reduction="sum", ignore_index=None),
                                     dict(reduction="none"), dict(pos_weight=torch.tensor([2.0]))],
                         ids=["default", "smooth", "sum", "none", "pos_weight"])
def test_soft_bce_equals_smp(options, dtype, backend):
    x, y = _inputs("multilabel", (2, 3, 4, 5), dtype, "hard", ignore_index=options.get("ignore_index", -100))
    if options.get("pos_weight") is not None:
        options = {**options, "pos_weight": options["pos_weight"].to(dtype).to(DEVICE)}
    _compare(smp.SoftBCEWithLogitsLoss(**options, backend=backend), smp_losses.SoftBCEWithLogitsLoss(**options), x, y,
             dtype)


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("options", [dict(smooth_factor=0.1), dict(smooth_factor=0.0, reduction="sum"),
                                     dict(smooth_factor=0.2, ignore_index=None), dict(smooth_factor=0.1,
                                                                                      reduction="none")],
                         ids=["smooth", "sum", "no-ignore", "none"])
def test_soft_cross_entropy_equals_smp(options, dtype, backend):
    x, y = _inputs("multiclass", (2, 4, 3, 4, 5), dtype, "hard", ignore_index=-100)
    if options.get("ignore_index", -100) is None:
        y = torch.where(y < 0, 0, y)
    _compare(smp.SoftCrossEntropyLoss(**options, backend=backend), smp_losses.SoftCrossEntropyLoss(**options), x, y,
             dtype)


def test_soft_cross_entropy_without_smooth_factor_is_plain_cross_entropy():
    """smp 0.6 raises a TypeError for smooth_factor=None (its default); ours is smooth_factor=0."""
    x, y = _inputs("multiclass", (2, 4, 4, 5), torch.float64, "hard", ignore_index=-100)
    with pytest.raises(TypeError):
        smp_losses.SoftCrossEntropyLoss()(x, y)
    expected = smp_losses.SoftCrossEntropyLoss(smooth_factor=0.0)(x, y)
    torch.testing.assert_close(smp.SoftCrossEntropyLoss(backend="reference")(x, y), expected)


@pytest.mark.parametrize("name", REGION_CLASSES + ["FocalLoss"])
def test_same_errors_as_smp(name):
    for cls in (getattr(smp, name), getattr(smp_losses, name)):
        with pytest.raises(AssertionError):
            cls("segmentation")
        with pytest.raises(ValueError, match="class_weights"):
            cls("binary", class_weights=[1.0])
        if name != "FocalLoss":
            with pytest.raises(AssertionError):
                cls("binary", classes=[0])
    x, y = _inputs("multilabel", (2, 3, 4, 5), torch.float64, "hard", ignore_index=-1)
    if name == "FocalLoss":  # smp indexes one channel with the whole multi-label mask
        for cls in (smp.FocalLoss, smp_losses.FocalLoss):
            with pytest.raises(IndexError):
                cls("multilabel", ignore_index=-1)(x, y)


def test_modules_keep_per_class_values_on_the_device():
    loss = smp.DiceLoss("multiclass", classes=[0, 1], class_weights=[1.0, 2.0, 3.0])
    assert set(dict(loss.named_buffers())) == {"classes", "class_weights"}
    assert loss.state_dict() == {}


@pytest.mark.parametrize("mode, target_kind", [("binary", "soft"), ("multilabel", "soft"), ("multiclass", "hard")])
def test_focal_loss_of_soft_and_class_targets_is_fused(mode, target_kind, monkeypatch):
    """Float (maybe soft) targets run the fused kernels with smp's focal factor, not smp's code in PyTorch."""
    monkeypatch.setattr(smp.FocalLoss, "_eager", lambda *args: pytest.fail("the PyTorch path ran"))
    shape = (2, 1, 4, 5) if mode == "binary" else (2, 3, 4, 5)
    x, y = _inputs(mode, shape, torch.float64, target_kind)
    _compare(smp.FocalLoss(mode, alpha=0.25, backend=QUICK_BACKENDS[0]), smp_losses.FocalLoss(mode, alpha=0.25), x, y,
             torch.float64)


# LovaszLoss: smp computes in fp32 only (its Lovász gradient is fp32 whatever the input), and takes
# each step's gradient as J_i - J_{i-1} of fp32 values (cancellation: errors of ~1e-7 absolute).


def _lovasz_close(actual, expected, _dtype):
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale)
LOVASZ_CASES = [
    ("binary", (3, 1, 5, 6), "hard", None),
    ("binary", (3, 1, 5, 6), "soft", -1),
    ("binary", (3, 1, 5, 6), "uint8", None),
    ("multilabel", (2, 3, 4, 5), "hard", -1),
    ("multiclass", (3, 4, 5, 6), "absent", None),
    ("multiclass", (2, 4, 5, 6), "hard", -100),
    ("multiclass", (2, 4, 3, 5, 6), "hard", 1),  # 3-D; ignore_index a class: those pixels count nowhere
]


@pytest.mark.parametrize("backend", QUICK_BACKENDS)
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("case", LOVASZ_CASES, ids=str)
def test_lovasz_loss_equals_smp(case, per_image, backend):
    mode, shape, target_kind, ignore_index = case
    x, y = _inputs(mode, shape, torch.float32, target_kind, ignore_index=ignore_index)
    _compare(smp.LovaszLoss(mode, per_image=per_image, ignore_index=ignore_index, backend=backend),
             smp_losses.LovaszLoss(mode, per_image=per_image, ignore_index=ignore_index), x, y, torch.float32,
             close=_lovasz_close)


def test_lovasz_loss_same_errors_as_smp():
    for cls in (smp.LovaszLoss, smp_losses.LovaszLoss):
        with pytest.raises(AssertionError):
            cls("segmentation")
