"""fusedloss.ops.sums: the fused statistics as differentiable tensors (what fusedloss.compat writes
its peers' formulas on). Every fused backend against the reference: the sums, and the input
gradient of an arbitrary function of them (the fused backward fed autograd's coefficients)."""

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS, FUSED_MULTICLASS_BACKENDS, IGNORE, assert_close, make_class_pair, make_pair

from fusedloss._spec import LossSpec
from fusedloss.ops.sums import binary_sums, multiclass_sums

BINARY_SPECS = {
    "region": LossSpec(region=True),
    "focal": LossSpec(region=True, elem=True, focal_alpha=0.25, focal_gamma=2.0),
    "min_intersection": LossSpec(region=True, min_intersection=True, elem=True),
    "probabilities_squared": LossSpec(region=True, squared_pred=True, from_logits=False, clamped_log=True),
}
MULTICLASS_SPECS = {
    "dice_ce": (LossSpec(region=True, elem=True), None),
    "smoothed_weighted": (LossSpec(region=True, elem=True, label_smoothing=0.1, weighted_mean=True), "weights"),
    "focal_squared": (LossSpec(region=True, squared_pred=True, elem=True, focal_alpha=0.3, focal_gamma=2.0), None),
}


def _weighted(sums):
    """An arbitrary differentiable function of the sums: a different weight per entry."""
    weights = torch.linspace(0.5, 2.0, sums.numel(), dtype=sums.dtype, device=sums.device).reshape(sums.shape)
    return (sums * weights).sum() + (sums[..., 0] / (1 + sums[..., 1])).sum()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("grouping", [dict(), dict(per_sample=True, per_channel=True)], ids=["whole", "per-group"])
@pytest.mark.parametrize("spec_name", BINARY_SPECS)
def test_binary_sums_and_their_gradient_equal_the_reference(spec_name, grouping, dtype, backend):
    spec = BINARY_SPECS[spec_name]
    x, t = make_pair((2, 3, 5, 7), dtype, torch.float32)
    t = torch.where(torch.rand(t.shape, generator=torch.Generator().manual_seed(1)) < 0.1, -1.0, t.cpu()).to(DEVICE)
    if not spec.from_logits:
        x = torch.sigmoid(x)
    results = []
    for name in (backend, "reference"):
        leaf = x.detach().clone().requires_grad_(True)
        sums = binary_sums(leaf, t, spec, ignore_index=-1, backend=name, **grouping)
        (grad,) = torch.autograd.grad(_weighted(sums), leaf)
        results.append((sums.detach(), grad))
    (sums, grad), (expected_sums, expected_grad) = results
    assert sums.shape == (1 if not grouping else 6, 5)
    assert_close(sums, expected_sums, dtype)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("backend", FUSED_MULTICLASS_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("spec_name", MULTICLASS_SPECS)
def test_multiclass_sums_and_their_gradient_equal_the_reference(spec_name, per_sample, dtype, backend):
    spec, weights = MULTICLASS_SPECS[spec_name]
    x, y = make_class_pair((2, 4, 5, 7), dtype, ignore_fraction=0.2)
    class_weight = None if weights is None else torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=dtype, device=DEVICE)
    results = []
    for name in (backend, "reference"):
        leaf = x.detach().clone().requires_grad_(True)
        class_sums, elem_sums = multiclass_sums(leaf, y, spec, class_weight=class_weight, per_sample=per_sample,
                                                ignore_index=IGNORE, backend=name)
        (grad,) = torch.autograd.grad(_weighted(class_sums) + 3 * elem_sums[0] / elem_sums[1], leaf)
        results.append((class_sums.detach(), elem_sums.detach(), grad))
    for actual, expected in zip(results[0], results[1]):
        assert_close(actual, expected, dtype)
    assert results[0][0].shape == (8 if per_sample else 4, 3)


def test_sums_compile_without_graph_breaks():
    backend = FUSED_BACKENDS[-1]
    x, t = make_pair((2, 3, 5, 7), torch.float32, torch.float32)

    def loss(input, target):
        sums = binary_sums(input, target, LossSpec(region=True, min_intersection=True), per_channel=True,
                           backend=backend)
        return (1 - (2 * sums[:, 0] + 1) / (sums[:, 1] + sums[:, 2] + 1)).mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    leaf, compiled_leaf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    expected, actual = loss(leaf, t), compiled(compiled_leaf, t)
    expected.backward()
    actual.backward()
    assert_close(actual, expected, torch.float32)
    assert_close(compiled_leaf.grad, leaf.grad, torch.float32)
