"""Bad arguments raise a ValueError/TypeError that names the argument, for both
families (bad target values: test_target_check)."""

import pytest
import torch
from helpers import ALL_LOSSES, DEVICE, FUSED_BACKENDS, REGION_LOSSES, loss_fn, make_class_pair, make_pair

import fusedloss

BACKENDS = FUSED_BACKENDS + ["reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_shape_mismatch(name, backend):
    x, t = make_pair((2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"target must have input's shape \(2, 3, 4, 5\).*got \(2, 3, 5, 4\)"):
        loss_fn(name)(x, t.transpose(2, 3), backend=backend)


def test_squeezed_target_needs_single_channel():
    x, t = make_pair((2, 3, 4, 5))
    with pytest.raises(ValueError, match="target must have input's shape"):
        fusedloss.dice_loss(x, t[:, 0])


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_target_on_other_device(name):
    x, t = make_pair((2, 3, 4))
    other = torch.device("meta")
    with pytest.raises(ValueError, match="target is on meta but input is on"):
        loss_fn(name)(x, t.to(other))


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.complex64])
def test_unsupported_input_dtype(name, dtype):
    x, t = make_pair((2, 3, 4))
    with pytest.raises(TypeError, match="input must be a floating tensor of logits"):
        loss_fn(name)(x.to(dtype), t)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8])
def test_unsupported_target_dtype(name, dtype):
    x, t = make_pair((2, 3, 4))
    with pytest.raises(TypeError, match="target must have dtype"):
        loss_fn(name)(x, t.to(dtype))


def test_not_tensors():
    x, t = make_pair((2, 3))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        fusedloss.dice_loss(x.tolist(), t)
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        fusedloss.focal_loss(x, t.tolist())


def test_empty_input():
    with pytest.raises(ValueError, match="input must not be empty"):
        fusedloss.dice_loss(torch.empty(0, 3, device=DEVICE), torch.empty(0, 3, device=DEVICE))


@pytest.mark.parametrize("name", REGION_LOSSES)
def test_channel_option_on_1d_input(name):
    x, t = make_pair((10,))
    with pytest.raises(ValueError, match=r"per_channel=True needs input of shape \(N, C, ...\)"):
        loss_fn(name)(x, t, per_channel=True)


@pytest.mark.parametrize("name", REGION_LOSSES)
def test_weight_of_wrong_length(name):
    x, t = make_pair((2, 3, 4))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got \(4,\)"):
        loss_fn(name)(x, t, per_channel=True, weight=torch.ones(4, device=DEVICE))


def test_weight_needs_per_channel():
    x, t = make_pair((2, 3, 4))
    with pytest.raises(ValueError, match="weight is per channel: it needs per_channel=True"):
        fusedloss.dice_loss(x, t, weight=torch.ones(3, device=DEVICE))


def test_weight_dtype_and_device():
    x, t = make_pair((2, 3, 4))
    with pytest.raises(TypeError, match="weight must be a floating tensor"):
        fusedloss.dice_loss(x, t, per_channel=True, weight=torch.ones(3, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="weight is on meta"):
        fusedloss.dice_loss(x, t, per_channel=True, weight=torch.ones(3, device="meta"))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bad_reduction(name):
    x, t = make_pair((2, 3))
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        loss_fn(name)(x, t, reduction="avg")


@pytest.mark.parametrize(
    "call, message",
    [(lambda x, t: fusedloss.dice_loss(x, t, smooth=-1.0), "smooth must be a finite number >= 0"),
     (lambda x, t: fusedloss.tversky_loss(x, t, alpha=float("nan")), "alpha must be a finite number >= 0"),
     (lambda x, t: fusedloss.focal_tversky_loss(x, t, gamma=-2), "gamma must be a finite number >= 0"),
     (lambda x, t: fusedloss.focal_loss(x, t, alpha=1.5), r"alpha must be in \[0, 1\] or None"),
     (lambda x, t: fusedloss.focal_loss(x, t, gamma="2"), "gamma must be a finite number >= 0"),
     (lambda x, t: fusedloss.dice_bce_loss(x, t, bce_weight=-0.1), "bce_weight must be a finite number >= 0")],
)
def test_bad_parameters(call, message):
    x, t = make_pair((2, 3))
    with pytest.raises(ValueError, match=message):
        call(x, t)


def test_unknown_backend():
    x, t = make_pair((2, 3))
    with pytest.raises(ValueError, match=r"backend='fast' is not a backend; expected one of \('auto', "):
        fusedloss.dice_loss(x, t, backend="fast")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_fused_backend_refuses_differentiable_target(backend):
    x, t = make_pair((2, 3))
    with pytest.raises(ValueError, match=f"backend='{backend}' does not differentiate w.r.t. target"):
        fusedloss.dice_loss(x, t.requires_grad_(True), backend=backend)


# ---- multiclass ----


def test_bad_multiclass_input():
    x, y = make_class_pair((2, 3, 4, 5))
    with pytest.raises(TypeError, match="target must hold class indices"):
        fusedloss.dice_loss(x, y.float(), mode="multiclass")
    with pytest.raises(ValueError, match=r"target must have shape \(2, 4, 5\)"):
        fusedloss.dice_loss(x, y[:, :2], mode="multiclass")
    with pytest.raises(ValueError, match="C >= 2 classes"):
        fusedloss.dice_loss(x[:, :1], y, mode="multiclass")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), one per class"):
        fusedloss.dice_loss(x, y, mode="multiclass", weight=torch.ones(2, device=DEVICE))
    with pytest.raises(ValueError, match="per_channel does not apply"):
        fusedloss.dice_loss(x, y, mode="multiclass", per_channel=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        fusedloss.dice_loss(x, y, mode="softmax")
    with pytest.raises(ValueError, match="options of mode='multiclass'"):
        fusedloss.dice_loss(x, y.float(), include_background=False)
    with pytest.raises(ValueError, match="reduction='none' is not defined for dice_ce_loss"):
        fusedloss.dice_ce_loss(x, y, reduction="none")
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        fusedloss.dice_ce_loss(x, y, ignore_index=2.5)
