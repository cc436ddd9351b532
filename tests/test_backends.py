"""Backend choice: what 'auto' picks, the FUSEDLOSS_BACKEND override, the
report of what is available, and the modules' plumbing."""

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS, assert_close, make_pair

import fusedloss
from fusedloss.ops import selection as backend_choice


def test_auto_order():
    if DEVICE.type == "cuda":
        assert backend_choice.resolve("auto", DEVICE) == "triton"
    # The interpreter is for tests: never chosen automatically.
    expected_cpu = "cpu" if "cpu" in fusedloss.available_backends("cpu") else "reference"
    assert backend_choice.resolve("auto", torch.device("cpu")) == expected_cpu


def test_auto_uses_reference_for_a_differentiable_target():
    assert backend_choice.resolve("auto", DEVICE, differentiable_target=True) == "reference"
    x, t = make_pair((2, 3, 4), torch.float64)
    t.requires_grad_(True)
    loss = fusedloss.dice_loss(x, t)
    (grad_t,) = torch.autograd.grad(loss, t)
    assert torch.isfinite(grad_t).all() and grad_t.abs().sum() > 0


def test_env_var_overrides_auto(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "reference")
    assert backend_choice.resolve("auto", DEVICE) == "reference"
    assert backend_choice.resolve(FUSED_BACKENDS[0], DEVICE) == FUSED_BACKENDS[0]  # explicit argument wins
    monkeypatch.setenv("FUSEDLOSS_BACKEND", FUSED_BACKENDS[0])
    assert backend_choice.resolve("auto", DEVICE) == FUSED_BACKENDS[0]
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="FUSEDLOSS_BACKEND='nonsense' is not a backend"):
        backend_choice.resolve("auto", DEVICE)


def test_env_var_runs_the_named_backend(monkeypatch):
    x, t = make_pair((2, 3, 4))
    calls = []
    real_reference = fusedloss.reference.dice_loss
    monkeypatch.setattr(fusedloss.reference, "dice_loss", lambda *a, **k: calls.append(1) or real_reference(*a, **k))
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "reference")
    fusedloss.DiceLoss()(x, t)
    assert calls == [1]


def test_unavailable_backend_raises_instead_of_falling_back():
    with pytest.raises(ValueError, match="backend='triton' cannot run this call: Triton kernels run on CUDA"):
        backend_choice.resolve("triton", torch.device("meta"))


def test_backends_report():
    report = fusedloss.backends()
    assert set(report) == set(fusedloss.BACKENDS)
    assert report["reference"].startswith("available on")
    assert DEVICE.type in report[FUSED_BACKENDS[0]]
    assert set(fusedloss.available_backends(DEVICE)) >= set(FUSED_BACKENDS) | {"reference"}


def test_module_weight_follows_to_and_repr():
    criterion = fusedloss.TverskyLoss(0.3, 0.7, per_channel=True, weight=[1.0, 2.0, 0.5])
    assert "alpha=0.3" in repr(criterion) and "per_channel=True" in repr(criterion)
    criterion = criterion.to(torch.float64)
    assert criterion.weight.dtype == torch.float64
    x, t = make_pair((2, 3, 5), torch.float64)
    expected = fusedloss.tversky_loss(x, t, 0.3, 0.7, per_channel=True,
                                      weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, device=DEVICE),
                                      backend="reference")
    assert_close(criterion.to(DEVICE)(x, t), expected, torch.float64)
    assert "weight" not in criterion.state_dict()  # a constant, not a learned parameter


def test_modules_are_drop_in():
    x, t = make_pair((2, 1, 6, 6))
    for cls in (fusedloss.DiceLoss, fusedloss.IoULoss, fusedloss.TverskyLoss, fusedloss.FocalTverskyLoss,
                fusedloss.FocalLoss, fusedloss.DiceBCELoss):
        criterion = cls()
        assert isinstance(criterion, torch.nn.Module)
        loss = criterion(x, t)
        assert loss.dim() == 0 and torch.isfinite(loss)
