"""The Lovász hinge and Lovász-softmax losses: every backend against the reference (loss and
gradient), against smp and kornia, fp64 gradcheck, opcheck of the primitives, torch.compile,
determinism with ties, and bad input."""

from __future__ import annotations

import pytest
import torch

import fusedloss
from fusedloss.ops import fused_ops
from helpers import DEVICE, FUSED_BACKENDS, assert_close, gradcheck, import_peer

BACKENDS = FUSED_BACKENDS
TRITON_SUBSET = [b for b in BACKENDS if b != "triton" or DEVICE.type == "cuda"]  # the interpreter is slow


def _binary(shape=(3, 2, 5, 6), dtype=torch.float32, target="hard", ties=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    if ties:
        x = (x * 2).round() / 2
    t = (torch.rand(shape, generator=gen) < 0.4).float()
    if target == "soft":
        t = torch.where(torch.rand(shape, generator=gen) < 0.5, torch.rand(shape, generator=gen), t)
    elif target == "uint8":
        t = torch.where(torch.rand(shape, generator=gen) < 0.15, 255.0, t).to(torch.uint8)
    elif target == "bool":
        t = t.bool()
    return x.to(dtype).to(DEVICE), t.to(DEVICE)


def _multiclass(shape=(3, 4, 5, 6), dtype=torch.float32, target="labels", seed=0, absent=(2,)):
    gen = torch.Generator().manual_seed(seed)
    n, c = shape[:2]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (n,) + shape[2:], generator=gen)
    for k in absent:  # a class no pixel holds: 'present' and 'all' differ
        labels[labels == k] = 0
    if target == "ignore":
        labels = torch.where(torch.rand(labels.shape, generator=gen) < 0.2, -100, labels)
    elif target == "dense":
        labels = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64) * 3, 1).float()
    return x.to(dtype).to(DEVICE), labels.to(DEVICE)


def _loss_and_grad(fn, x, t, **options):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, t, **options)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, x, upstream)
    return loss, grad


def _matches_reference(fn, x, t, backend, **options):
    loss, grad = _loss_and_grad(fn, x, t, backend=backend, **options)
    want_loss, want_grad = _loss_and_grad(fn, x, t, backend="reference", **options)
    assert loss.dtype == want_loss.dtype and loss.shape == want_loss.shape
    assert_close(loss, want_loss, torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert_close(grad, want_grad, x.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("target", ["hard", "soft", "uint8", "bool"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_hinge_matches_reference(backend, dtype, target, per_sample):
    x, t = _binary(dtype=dtype, target=target, ties=target == "hard")
    ignore = 255 if target == "uint8" else None
    for reduction in (("mean", "none") if per_sample else ("mean",)):
        _matches_reference(fusedloss.lovasz_hinge_loss, x, t, backend, per_sample=per_sample, ignore_index=ignore,
                           reduction=reduction)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("target", ["labels", "ignore", "dense"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_softmax_matches_reference(backend, dtype, target, per_sample):
    x, t = _multiclass(dtype=dtype, target=target)
    ignore = -100 if target == "ignore" else None
    for classes in ("present", "all", [1, 2]):
        _matches_reference(fusedloss.lovasz_softmax_loss, x, t, backend, classes=classes, per_sample=per_sample,
                           ignore_index=ignore, reduction="none" if per_sample else "mean")


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_options_match_reference(backend):
    """Probabilities as input (activation='none'), class weights, 'sum', and an image whose every pixel
    is ignored (its loss is 0 and it counts in the mean, as in smp)."""
    x, t = _multiclass(target="ignore")
    t[1] = -100
    probabilities = torch.softmax(x, 1)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.0], device=DEVICE)
    _matches_reference(fusedloss.lovasz_softmax_loss, probabilities, t, backend, activation="none",
                       ignore_index=-100, per_sample=True)
    _matches_reference(fusedloss.lovasz_softmax_loss, x, t, backend, weight=weight, classes="all",
                       ignore_index=-100, per_sample=True, reduction="sum")
    loss = fusedloss.lovasz_softmax_loss(x, t, ignore_index=-100, per_sample=True, reduction="none",
                                         backend=backend)
    assert loss[1] == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["binary", "multiclass"])
def test_gradcheck(backend, family):
    """fp64 gradcheck away from ties (continuous random logits: no two errors are equal)."""
    if family == "binary":
        x, t = _binary((2, 1, 3, 4), torch.float64)
        fn = lambda x: fusedloss.lovasz_hinge_loss(x, t, per_sample=True, backend=backend)  # noqa: E731
    else:
        x, t = _multiclass((2, 3, 2, 3), torch.float64, absent=())
        fn = lambda x: fusedloss.lovasz_softmax_loss(x, t, per_sample=True, backend=backend)  # noqa: E731
    assert gradcheck(fn, x, backend, eps=1e-7, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    ops = fused_ops(backend)
    x, t = _binary((2, 1, 3, 4), torch.float32, target="uint8")
    xm, tm = _multiclass((2, 3, 2, 3), torch.float32, target="ignore")
    errors, truth = ops.binary_lovasz_errors(x, t, True, 255, True)
    sorted_errors, order = torch.sort(errors, dim=-1, descending=True, stable=True)
    order = order.to(torch.int32)
    grad_loss = torch.ones(errors.shape[0], device=DEVICE)
    grad_errors = ops.lovasz_rows_backward(grad_loss, truth, order)
    merrors, _ = ops.multiclass_lovasz_errors(xm, tm, False, True, -100, True)
    cases = [
        (ops.binary_lovasz_errors, (x, t, True, 255, True)),
        (ops.multiclass_lovasz_errors, (xm, tm, False, True, -100, True)),
        (ops.lovasz_rows, (sorted_errors, truth, order)),
        (ops.lovasz_rows_backward, (grad_loss, truth, order)),
        (ops.binary_lovasz_chain, (grad_errors, x, t, True, 255)),
        (ops.multiclass_lovasz_chain, (torch.ones_like(merrors), xm, tm, False, True, -100)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", TRITON_SUBSET)
def test_compiles_fullgraph(backend):
    x, t = _binary((2, 1, 4, 4))
    xm, tm = _multiclass((2, 3, 4, 4), target="ignore")

    def both(x, xm):
        return (fusedloss.lovasz_hinge_loss(x, t, per_sample=True, backend=backend)
                + fusedloss.lovasz_softmax_loss(xm, tm, ignore_index=-100, backend=backend))

    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    x, xm = x.requires_grad_(True), xm.requires_grad_(True)
    loss = compiled(x, xm)
    grads = torch.autograd.grad(loss, (x, xm))
    want = both(x, xm)
    want_grads = torch.autograd.grad(want, (x, xm))
    torch.testing.assert_close(loss, want)
    for grad, want_grad in zip(grads, want_grads):
        torch.testing.assert_close(grad, want_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_deterministic_with_ties(backend):
    """Ties in the errors: the stable sort fixes which element takes which step, so the gradient
    is the same every run (and equals the reference's, which sorts stably too)."""
    x, t = _binary((2, 1, 16, 16), ties=True)
    runs = [_loss_and_grad(fusedloss.lovasz_hinge_loss, x, t, backend=backend) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    xm, tm = _multiclass((2, 3, 8, 8))
    xm = (xm * 2).round() / 2
    runs = [_loss_and_grad(fusedloss.lovasz_softmax_loss, xm, tm, backend=backend) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_cpu_result_independent_of_threads():
    if "cpu" not in BACKENDS:
        pytest.skip("the C++ CPU backend runs on CPU tensors only")
    x, t = _binary((2, 1, 300, 300), ties=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _loss_and_grad(fusedloss.lovasz_hinge_loss, x, t, backend="cpu")
        torch.set_num_threads(max(2, threads))
        many = _loss_and_grad(fusedloss.lovasz_hinge_loss, x, t, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates_and_finite_stays_finite(backend):
    x, t = _binary((2, 1, 4, 4))
    x = x * 1e30  # huge but finite logits: a finite loss
    assert fusedloss.lovasz_hinge_loss(x, t, backend=backend).isfinite()
    x[0, 0, 1, 1] = float("nan")
    assert fusedloss.lovasz_hinge_loss(x, t, backend=backend).isnan()


def test_bad_input():
    x, t = _binary()
    xm, tm = _multiclass()
    with pytest.raises(ValueError, match="target must have input's shape"):
        fusedloss.lovasz_hinge_loss(x, t[:, :1])
    with pytest.raises(ValueError, match="ignore_index=1"):
        fusedloss.lovasz_hinge_loss(x, t, ignore_index=1)
    with pytest.raises(ValueError, match="reduction"):
        fusedloss.lovasz_hinge_loss(x, t, reduction="max")
    with pytest.raises(ValueError, match="classes"):
        fusedloss.lovasz_softmax_loss(xm, tm, classes="some")
    with pytest.raises(ValueError, match="classes"):
        fusedloss.lovasz_softmax_loss(xm, tm, classes=[0, 7])
    with pytest.raises(ValueError, match="classes"):
        fusedloss.lovasz_softmax_loss(xm, tm, classes=[1, 1])
    with pytest.raises(ValueError, match="weight"):
        fusedloss.lovasz_softmax_loss(xm, tm, weight=torch.ones(3, device=DEVICE))
    with pytest.raises(ValueError, match="ignore_index=1"):
        fusedloss.lovasz_softmax_loss(xm, tm, ignore_index=1)
    with pytest.raises(ValueError, match="activation"):
        fusedloss.lovasz_softmax_loss(xm, tm, activation="sigmoid")
    if DEVICE.type == "cpu":
        bad = tm.clone()
        bad[0, 0, 0] = 9
        for backend in BACKENDS + ["reference"]:
            with pytest.raises(ValueError, match="class index 9"):
                fusedloss.lovasz_softmax_loss(xm, bad, backend=backend)


def test_modules():
    x, t = _binary()
    torch.testing.assert_close(fusedloss.LovaszHingeLoss(per_sample=True)(x, t),
                               fusedloss.lovasz_hinge_loss(x, t, per_sample=True))
    xm, tm = _multiclass()
    weight = torch.rand(4, device=DEVICE)
    module = fusedloss.LovaszSoftmaxLoss(classes="all", weight=weight)
    torch.testing.assert_close(module(xm, tm), fusedloss.lovasz_softmax_loss(xm, tm, classes="all", weight=weight))


# ---- the peers: smp's LovaszLoss and kornia's losses, on the same inputs ----


@pytest.mark.parametrize("backend", TRITON_SUBSET + ["reference"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_hinge_equals_smp(backend, per_sample):
    smp_losses = import_peer("segmentation_models_pytorch.losses")
    x, t = _binary((3, 1, 6, 7), target="uint8")
    for ignore in (None, 255):
        target = t if ignore else (t == 1).float()
        ours = _loss_and_grad(fusedloss.lovasz_hinge_loss, x, target, per_sample=per_sample, ignore_index=ignore,
                              backend=backend)
        theirs = _loss_and_grad(smp_losses.LovaszLoss("binary", per_image=per_sample, ignore_index=ignore), x,
                                target)
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("backend", TRITON_SUBSET + ["reference"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_softmax_equals_smp(backend, per_sample):
    smp_losses = import_peer("segmentation_models_pytorch.losses")
    x, t = _multiclass((3, 5, 6, 7), target="ignore")
    ours = _loss_and_grad(fusedloss.lovasz_softmax_loss, x, t, per_sample=per_sample, ignore_index=-100,
                          backend=backend)
    theirs = _loss_and_grad(smp_losses.LovaszLoss("multiclass", per_image=per_sample, ignore_index=-100), x, t)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("backend", TRITON_SUBSET + ["reference"])
def test_equals_kornia(backend):
    kornia_losses = import_peer("kornia.losses")
    x, t = _binary((3, 1, 6, 7))
    ours = _loss_and_grad(fusedloss.lovasz_hinge_loss, x, t[:, 0], per_sample=True, backend=backend)
    theirs = _loss_and_grad(kornia_losses.lovasz_hinge_loss, x, t[:, 0])
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)
    xm, tm = _multiclass((3, 5, 6, 7))
    weight = torch.rand(5, device=DEVICE)
    ours = _loss_and_grad(fusedloss.lovasz_softmax_loss, xm, tm, classes="all", per_sample=True, weight=weight,
                          backend=backend)
    theirs = _loss_and_grad(lambda x, t: kornia_losses.lovasz_softmax_loss(x, t, weight=weight), xm, tm)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)


def test_cpu_single_row_sort_is_torchs_float_sort():
    """The int32-key radix path for one fp32 row on the CPU gives torch's stable descending sort:
    ties (in index order), infinities, NaN (first), subnormals and both signs."""
    from fusedloss.ops.lovasz import _sorted_rows

    gen = torch.Generator().manual_seed(0)
    errors = (torch.randn(1, 50_000, generator=gen) * 4).round() / 4 + 0.0  # many ties; no -0 (see _sorted_rows)
    errors[0, ::7] = float("-inf")
    errors[0, 3], errors[0, 9], errors[0, 11] = float("inf"), float("nan"), 1e-40
    got_values, got_order = _sorted_rows(errors)
    want_values, want_order = torch.sort(errors, dim=-1, descending=True, stable=True)
    assert torch.equal(got_order, want_order)
    assert torch.equal(got_values.nan_to_num(), want_values.nan_to_num()) and got_values[0, 0].isnan()
