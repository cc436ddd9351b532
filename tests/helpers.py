"""What the tests share: the device, the fused backends to check, input makers,
the losses with the options each accepts, and a tolerance per dtype."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import fusedloss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FUSED_BACKENDS = [name for name in fusedloss.available_backends(DEVICE) if name != "reference"]
if not FUSED_BACKENDS:
    pytest.exit(f"no fused backend runs on {DEVICE}: {fusedloss.backends()}", returncode=1)

INPUT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
TARGET_DTYPES = [torch.float32, torch.bool, torch.uint8]

REGION_LOSSES = ["dice", "iou", "tversky", "focal_tversky", "dice_bce"]
# Losses whose fused path another one already sweeps (Dice+Focal is Dice+BCE / Dice+CE with the
# focal parameters): tests/test_options.py checks them; the concern-by-concern sweeps leave them out.
SWEPT_ELSEWHERE = ["dice_focal"]
ALL_LOSSES = REGION_LOSSES + ["focal"]

# Non-default parameters, so the formulas' constants are exercised.
LOSS_PARAMS = {"dice": dict(smooth=0.5), "iou": dict(smooth=1.0), "tversky": dict(alpha=0.3, beta=0.7, smooth=1.0),
               "focal_tversky": dict(alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0),
               "dice_bce": dict(smooth=1.0, dice_weight=0.7, bce_weight=1.3), "focal": dict(alpha=0.25, gamma=2.0),
               "dice_focal": dict(alpha=0.3, gamma=1.5, smooth=0.5, dice_weight=0.7, focal_weight=1.3)}

GROUPINGS = [dict(), dict(per_sample=True), dict(per_channel=True), dict(per_sample=True, per_channel=True)]


def loss_fn(name):
    return fusedloss.LOSSES[name]


def make_pair(shape, dtype=torch.float32, target_dtype=torch.float32, mask="random", scale=3.0, seed=0):
    """Logits and a target on DEVICE. mask: 'random' (hard labels, soft for
    float targets), 'empty' (all 0), 'full' (all 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    if mask == "empty":
        t = torch.zeros(shape)
    elif mask == "full":
        t = torch.ones(shape)
    elif target_dtype.is_floating_point:
        t = torch.rand(shape, generator=gen)
        t = torch.where(torch.rand(shape, generator=gen) < 0.5, t.round(), t)  # mixed hard and soft labels
    else:
        t = (torch.rand(shape, generator=gen) < 0.4).float()
    return x.to(DEVICE), t.to(target_dtype).to(DEVICE)


def tolerance(dtype):
    """(rtol, atol as a fraction of the reference's max magnitude)."""
    return {
        torch.float64: (1e-10, 1e-12),
        torch.float32: (1e-5, 1e-6),
        torch.float16: (2e-3, 1e-3),  # one or two fp16 roundings of the same fp32 value
        torch.bfloat16: (1.6e-2, 8e-3),
    }[dtype]


def assert_close(actual, expected, dtype):
    rtol, atol_fraction = tolerance(dtype)
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    info = torch.finfo(dtype)
    # Gradients this small round in absolute steps; where the reference's p*(1-p) rounds to 0
    # (saturated sigmoid) the fused path keeps 1 - p exact: allow a floor far below any signal.
    floor = max(2 * info.smallest_normal * info.eps, 1e-3 * info.eps)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol_fraction * scale, floor), check_dtype=True)


def loss_and_grad(name, x, t, backend, **options):
    x = x.detach().clone().requires_grad_(True)
    loss = loss_fn(name)(x, t, backend=backend, **options)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, x, upstream)
    return loss.detach(), grad


# ---- multi-class (softmax) ----
FUSED_MULTICLASS_BACKENDS = [name for name in fusedloss.available_backends(DEVICE, "multiclass") if name != "reference"]
CLASS_MAP_DTYPES = [torch.int64, torch.uint8, torch.int16, torch.int32]
MULTICLASS_REGION_LOSSES = ["dice", "iou", "tversky", "focal_tversky"]
MULTICLASS_PARAMS = {"dice": dict(smooth=0.5), "iou": dict(smooth=1.0),
                     "tversky": dict(alpha=0.3, beta=0.7, smooth=1.0),
                     "focal_tversky": dict(alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0),
                     "focal": dict(alpha=0.25, gamma=2.0), "dice_ce": dict(smooth=1.0, dice_weight=0.7, ce_weight=1.3),
                     "dice_focal": dict(alpha=0.3, gamma=1.5, smooth=0.5, dice_weight=0.7, focal_weight=1.3)}
IGNORE = 255


def make_class_pair(
    shape, dtype=torch.float32, target_dtype=torch.int64, ignore_fraction=0.0, absent=(), scale=3.0, seed=0
):
    """Logits of ``shape`` (N, C, *spatial) and class indices (N, *spatial) on DEVICE;
    a fraction of pixels set to IGNORE; classes in ``absent`` never appear."""
    gen = torch.Generator().manual_seed(seed)
    classes = shape[1]
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, classes, shape[:1] + shape[2:], generator=gen)
    for missing in absent:
        labels = torch.where(labels == missing, (missing + 1) % classes, labels)
    if ignore_fraction:
        labels = torch.where(torch.rand(labels.shape, generator=gen) < ignore_fraction, IGNORE, labels)
    return x.to(DEVICE), labels.to(target_dtype).to(DEVICE)


def multiclass_loss_and_grad(name, x, y, backend, **options):
    x = x.detach().clone().requires_grad_(True)
    loss = fusedloss.MULTICLASS_LOSSES[name](x, y, backend=backend, **options)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=loss.device).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, x, upstream)
    return loss.detach(), grad


def multiclass_options(name, **options):
    """The call's options: mode='multiclass' where the loss takes a mode."""
    if name != "dice_ce":
        options["mode"] = "multiclass"
    return {**MULTICLASS_PARAMS[name], **options}


# ---- one comparison with the reference, for every family ----


def _loss_callable(loss, options):
    """A loss given as a case (cases.LossCase: its ``fn``), a function, or a name: a
    multi-class loss when the options say mode='multiclass' (or it is dice_ce), else binary."""
    if isinstance(loss, str):
        multiclass = options.get("mode") == "multiclass" or loss not in fusedloss.LOSSES
        return (fusedloss.MULTICLASS_LOSSES if multiclass else fusedloss.LOSSES)[loss]
    return getattr(loss, "fn", loss)


def fused_and_reference(loss, x, t, backend, *, under=None, **options):
    """((loss, grad) of the fused ``backend``, (loss, grad) of the reference) for the same
    call; the gradient w.r.t. input for an upstream gradient that differs per element.
    The input is used as it lies (a view keeps its layout: no copy); the reference gets
    contiguous copies. ``under``: a context manager the fused call runs in (autocast)."""
    fn = _loss_callable(loss, options)

    def run(inp, target, name):
        inp = inp.detach().requires_grad_(True)
        value = fn(inp, target, backend=name, **options)
        upstream = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype, device=value.device).reshape(value.shape)
        (grad,) = torch.autograd.grad(value, inp, upstream)
        return value.detach(), grad

    if under is None:
        fused = run(x, t, backend)
    else:
        with under:
            fused = run(x, t, backend)
    return fused, run(x.contiguous(), t.contiguous(), "reference")


class Compared(NamedTuple):
    loss: torch.Tensor
    grad: torch.Tensor
    ref_loss: torch.Tensor
    ref_grad: torch.Tensor


def assert_matches_reference(loss, x, t, backend, *, finite=True, compare_loss=True, grad_if_reference_finite=False,
                             loss_dtype=None, under=None, **options) -> Compared:
    """Run the fused ``backend`` and the reference on the same call and compare the loss
    and the gradient w.r.t. input with the tolerance of their dtype (the loss: its own
    dtype when it has the input's, else the accumulation dtype, fp64 or fp32; the
    gradient: the input's). Also: same loss shape, gradient in the input's dtype, and
    (``finite``) a finite fused loss and gradient.

    ``loss``: a name, a cases.LossCase or a loss function; ``options``: the call's
    keyword arguments, as given (build them with ``case.options(...)``). Knobs for the
    edge cases: ``compare_loss=False`` (an infinite loss), ``grad_if_reference_finite``
    (the reference's gradient overflows where the fused one does not), ``loss_dtype``
    (a tighter tolerance for the loss), ``under`` (see fused_and_reference)."""
    (fused_loss, fused_grad), (ref_loss, ref_grad) = fused_and_reference(loss, x, t, backend, under=under, **options)
    assert fused_loss.shape == ref_loss.shape, (fused_loss.shape, ref_loss.shape)
    assert fused_grad.dtype == x.dtype, (fused_grad.dtype, x.dtype)
    if finite:
        assert torch.isfinite(fused_loss).all() and torch.isfinite(fused_grad).all(), (fused_loss, fused_grad)
    if compare_loss:
        accumulation = torch.float64 if x.dtype == torch.float64 else torch.float32
        assert_close(fused_loss, ref_loss, loss_dtype or (x.dtype if fused_loss.dtype == x.dtype else accumulation))
    if not grad_if_reference_finite or torch.isfinite(ref_grad).all():
        assert_close(fused_grad, ref_grad, x.dtype)
    return Compared(fused_loss, fused_grad, ref_loss, ref_grad)


def op_kwargs(spec, **others):
    """An op call's keyword arguments: the LossSpec's fields by name, and the others."""
    return {**spec._asdict(), **others}


# ---- a copy of the package without its extension, run in a fresh process ----

# An editable install's finder would find the prebuilt _C beside the original package.
ONLY_THE_COPY = (
    "import sys\nsys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
)


def package_without_extension(tmp_path):
    """A copy of the package (and csrc/) without fusedloss/_C*.so: an install that skipped it.
    Run code against it with ``run_python(ONLY_THE_COPY + code, root, PYTHONPATH=str(root))``."""
    import shutil
    from pathlib import Path

    root = Path(fusedloss.__file__).resolve().parents[1]
    shutil.copytree(root / "fusedloss", tmp_path / "fusedloss", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(root / "csrc", tmp_path / "csrc")
    return tmp_path


def run_python(code: str, cwd, timeout: int = 300, **env):
    """``python -c code`` in ``cwd`` with ``env`` added, without the suite's interpreter and
    backend settings (the real kernels, backends chosen by the code)."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, **env}
    environment.pop("TRITON_INTERPRET", None)
    environment.pop("FUSEDLOSS_BACKEND", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)



# ---- the peer libraries (fusedloss.compat's tests) ----
# `make test` (and so CI) installs them and sets FUSEDLOSS_EXPECT_PEERS=1: there a missing one
# fails the suite. Elsewhere (the GPU machine has no package registry) their tests are skipped.
def import_peer(module: str):
    import importlib
    import os

    if os.environ.get("FUSEDLOSS_EXPECT_PEERS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed here (make test installs it)")


def gradcheck(fn, x, backend, eps=1e-6, atol=1e-6, rtol=1e-3) -> bool:
    """torch.autograd.gradcheck of ``fn`` at the fp64 ``x``. Under the Triton interpreter (Triton
    on a CPU) in torch's fast_mode: the finite differences along one random direction against the
    backward's projection on it, instead of two launches per element (each launch costs the
    interpreter ~0.1 s; the full Jacobian is checked on every other backend and on a GPU)."""
    fast = backend == "triton" and DEVICE.type == "cpu"
    return torch.autograd.gradcheck(fn, (x.detach().requires_grad_(True),), eps=eps, atol=atol, rtol=rtol,
                                    fast_mode=fast)
