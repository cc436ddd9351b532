"""fusedloss.compat.monai against the real monai.losses classes: loss and input gradient for
every class and option (activations, label maps and dense targets, soft labels, ignore_index,
batch, include_background, weights, reductions incl. 'none'), fp32 and fp64, 2-D and 3-D, on
the CPU / CUDA backend and the reference, a few cases on Triton; and MONAI's errors."""

import warnings

import pytest
import torch
from helpers import DEVICE, FUSED_BACKENDS, import_peer

from fusedloss.compat import monai as compat

monai_losses = import_peer("monai.losses")

# The compiled backend (cpu here, cuda on a GPU) and the reference for the grid; Triton (the
# interpreter on a CPU: slow) for a few cases.
BACKENDS = [name for name in FUSED_BACKENDS if name != "triton"][:1] + ["reference"]
TRITON = ["triton"] if "triton" in FUSED_BACKENDS else []
TOLERANCE = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}
IGNORE = 255


def make_input(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype).to(DEVICE)


def make_target(kind, shape, seed=1, ignore=None, absent=None):
    """A target for logits of ``shape`` (B, C, *S): 'label' (B, 1, *S) int64, 'label_float',
    'onehot' (float), 'uint8', 'bool', 'soft' (float in [0, 1]), 'onehot_gaps' (float one-hot with
    all-zero pixels); ``ignore``: that value at a fifth of a label map's pixels; ``absent``: a
    class that never occurs."""
    gen = torch.Generator().manual_seed(seed)
    batch, classes, spatial = shape[0], shape[1], shape[2:]
    if kind == "soft":
        return torch.rand(shape, generator=gen).to(DEVICE)
    if kind == "binary":  # one channel, hard and soft values
        t = torch.rand(shape, generator=gen)
        return torch.where(torch.rand(shape, generator=gen) < 0.5, t.round(), t).to(DEVICE)
    labels = torch.randint(0, classes, (batch, 1, *spatial), generator=gen)
    if absent is not None:
        labels = torch.where(labels == absent, (absent + 1) % classes, labels)
    if ignore is not None:
        labels = torch.where(torch.rand(labels.shape, generator=gen) < 0.2, ignore, labels)
    if kind == "label":
        return labels.to(DEVICE)
    if kind == "label_float":
        return labels.float().to(DEVICE)
    one_hot = torch.zeros(shape).scatter_(1, labels.clamp(0, classes - 1), 1)
    if kind == "onehot_gaps":
        one_hot = one_hot * (torch.rand((batch, 1, *spatial), generator=gen) < 0.8)
    return one_hot.to({"onehot": torch.float32, "onehot_gaps": torch.float32, "uint8": torch.uint8,
                       "bool": torch.bool}[kind]).to(DEVICE)


def loss_and_grad(loss, x, t):
    x = x.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = loss(x, t)
    upstream = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype, device=value.device).reshape(value.shape)
    (grad,) = torch.autograd.grad(value, x, upstream)
    return value.detach(), grad


def assert_close(actual, expected, dtype):
    rtol, atol_fraction = TOLERANCE[dtype]
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol_fraction * scale, 1e-30), equal_nan=True)


def compare(name, options, x, t, backend, precision=None):
    """Loss and input gradient of monai.losses.<name>(**options) and ours, the same shape and dtype;
    values to the input's precision (fp32 where MONAI computes in fp32: its FocalLoss)."""
    expected = loss_and_grad(getattr(monai_losses, name)(**options), x, t)
    actual = loss_and_grad(getattr(compat, name)(**options, backend=backend), x, t)
    assert actual[0].shape == expected[0].shape, (actual[0].shape, expected[0].shape)
    assert actual[0].dtype == expected[0].dtype, (actual[0].dtype, expected[0].dtype)
    focal = name in ("FocalLoss", "DiceFocalLoss")
    dtype = torch.float32 if focal else precision or x.dtype
    assert_close(actual[0], expected[0], dtype)
    assert_close(actual[1], expected[1], dtype)


S2, S3 = (2, 3, 6, 5), (2, 4, 3, 4, 5)
tanh = torch.tanh

# (class name, options, target kind, shape, target options)
CASES = [
    # DiceLoss
    ("DiceLoss", dict(sigmoid=True), "onehot", S2, {}),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True), "label", S2, {}),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, include_background=False, batch=True), "label_float", S3, {}),
    ("DiceLoss", dict(softmax=True, reduction="none"), "onehot", S3, {}),
    ("DiceLoss", dict(sigmoid=True, to_onehot_y=True, squared_pred=True, reduction="sum"), "label", S2, {}),
    ("DiceLoss", dict(other_act=tanh, jaccard=True), "onehot", S2, {}),
    ("DiceLoss", dict(reduction="none", batch=True), "soft", S3, {}),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, weight=[0.5, 1.0, 2.0], smooth_nr=0.1, smooth_dr=0.2), "label",
     S2, {}),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, include_background=False, weight=[1.0, 2.0]), "label", S2, {}),
    ("DiceLoss", dict(sigmoid=True, weight=2.0, reduction="none"), "uint8", S2, {}),
    ("DiceLoss", dict(sigmoid=True, soft_label=True), "soft", S2, {}),
    ("DiceLoss", dict(softmax=True, soft_label=True, batch=True), "soft", S3, {}),
    ("DiceLoss", dict(other_act=tanh, soft_label=True), "soft", S2, {}),
    ("DiceLoss", dict(sigmoid=True, soft_label=True, squared_pred=True), "soft", S2, {}),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, soft_label=True), "label", S2, {}),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, ignore_index=IGNORE), "label", S3, dict(ignore=IGNORE)),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True, ignore_index=1, reduction="none"), "label", S2, {}),
    ("DiceLoss", dict(sigmoid=True, to_onehot_y=True, ignore_index=-1), "label", S2, dict(ignore=-1)),
    ("DiceLoss", dict(other_act=tanh, to_onehot_y=True, ignore_index=IGNORE), "label", S2, dict(ignore=IGNORE)),
    ("DiceLoss", dict(sigmoid=True, ignore_index=2), "onehot", S2, {}),
    ("DiceLoss", dict(softmax=True, ignore_index=-1, include_background=False), "onehot_gaps", S2, {}),
    ("DiceLoss", dict(sigmoid=True, ignore_index=-1, reduction="none"), "binary", (2, 1, 6, 5), {}),
    ("DiceLoss", dict(softmax=True), "binary", (2, 1, 6, 5), {}),
    ("DiceLoss", dict(sigmoid=True, ignore_index=0, batch=True), "binary", (2, 1, 6, 5), {}),
    ("DiceLoss", dict(sigmoid=True, ignore_index=0, reduction="none"), "onehot", S2, {}),
    ("DiceLoss", dict(sigmoid=True), "bool", S3, {}),
    ("DiceLoss", dict(softmax=True, batch=True), "uint8", S2, {}),
    # TverskyLoss
    ("TverskyLoss", dict(sigmoid=True, alpha=0.3, beta=0.7), "onehot", S2, {}),
    ("TverskyLoss", dict(softmax=True, to_onehot_y=True, include_background=False, reduction="none"), "label", S3,
     {}),
    ("TverskyLoss", dict(sigmoid=True, batch=True, reduction="none", smooth_nr=0.5), "uint8", S2, {}),
    ("TverskyLoss", dict(softmax=True, to_onehot_y=True, ignore_index=IGNORE, reduction="sum"), "label", S2,
     dict(ignore=IGNORE)),
    ("TverskyLoss", dict(sigmoid=True, soft_label=True, alpha=0.6, beta=0.4), "soft", S2, {}),
    ("TverskyLoss", dict(other_act=tanh), "soft", S3, {}),
    # GeneralizedDiceLoss
    ("GeneralizedDiceLoss", dict(softmax=True, to_onehot_y=True), "label", S2, dict(absent=1)),
    ("GeneralizedDiceLoss", dict(sigmoid=True, w_type="simple", batch=True), "onehot", S3, {}),
    ("GeneralizedDiceLoss", dict(sigmoid=True, w_type="uniform", reduction="none"), "uint8", S2, {}),
    ("GeneralizedDiceLoss", dict(softmax=True, to_onehot_y=True, include_background=False), "label", S2,
     dict(absent=2)),
    ("GeneralizedDiceLoss", dict(sigmoid=True, soft_label=True), "soft", S2, {}),
    ("GeneralizedDiceLoss", dict(softmax=True, batch=True, reduction="none"), "onehot", S3, {}),
    ("GeneralizedDiceLoss", dict(other_act=tanh, reduction="sum"), "onehot", S2, {}),
    # FocalLoss
    ("FocalLoss", dict(), "onehot", S2, {}),
    ("FocalLoss", dict(alpha=0.25), "uint8", S3, {}),
    ("FocalLoss", dict(to_onehot_y=True, alpha=0.25, weight=[1.0, 2.0, 3.0]), "label", S2, {}),
    ("FocalLoss", dict(to_onehot_y=True, ignore_index=IGNORE), "label", S2, dict(ignore=IGNORE)),
    ("FocalLoss", dict(to_onehot_y=True, ignore_index=IGNORE, reduction="sum"), "label", S3, dict(ignore=IGNORE)),
    ("FocalLoss", dict(to_onehot_y=True, include_background=False, reduction="sum", gamma=1.5), "label", S2, {}),
    ("FocalLoss", dict(use_softmax=True, to_onehot_y=True, alpha=0.25, weight=2.0), "label", S2, {}),
    ("FocalLoss", dict(use_softmax=True, to_onehot_y=True, include_background=False, alpha=0.25), "label", S3, {}),
    ("FocalLoss", dict(use_softmax=True, to_onehot_y=True, include_background=False, alpha=[0.2, 0.5, 0.8],
                       reduction="sum"), "label", S3, {}),
    ("FocalLoss", dict(use_softmax=True, weight=[1.0, 0.5, 2.0]), "soft", S2, {}),
    ("FocalLoss", dict(use_softmax=True, include_background=False, reduction="sum"), "onehot", S3, {}),
    ("FocalLoss", dict(use_softmax=True, to_onehot_y=True, ignore_index=IGNORE), "label", S2, dict(ignore=IGNORE)),
    ("FocalLoss", dict(use_softmax=True, to_onehot_y=True, ignore_index=1, reduction="sum"), "label", S2, {}),
    ("FocalLoss", dict(use_softmax=True, to_onehot_y=True, include_background=False, ignore_index=IGNORE), "label",
     S2, dict(ignore=IGNORE)),
    ("FocalLoss", dict(reduction="none", alpha=0.3), "soft", S2, {}),
    ("FocalLoss", dict(alpha=[0.2, 0.5, 0.8]), "uint8", S2, {}),
    ("FocalLoss", dict(gamma=0.0, alpha=0.4), "soft", S2, {}),
    ("FocalLoss", dict(gamma=2.0), "soft", S2, {}),
    ("FocalLoss", dict(ignore_index=-1, gamma=0.0), "binary", (2, 1, 6, 5), {}),
    ("FocalLoss", dict(ignore_index=2, reduction="sum"), "onehot", S2, {}),
    ("FocalLoss", dict(use_softmax=True, gamma=1.0), "binary", (2, 1, 6, 5), {}),
    # DiceCELoss
    ("DiceCELoss", dict(softmax=True, to_onehot_y=True), "label", S2, {}),
    ("DiceCELoss", dict(softmax=True, to_onehot_y=True, weight=torch.tensor([0.5, 1.0, 2.0, 1.5]),
                        label_smoothing=0.1, include_background=False), "label", S3, {}),
    ("DiceCELoss", dict(softmax=True, weight=torch.tensor([0.5, 1.0, 2.0]), reduction="sum", batch=True), "onehot",
     S2, {}),
    ("DiceCELoss", dict(softmax=True, label_smoothing=0.2), "soft", S2, {}),
    ("DiceCELoss", dict(sigmoid=True, to_onehot_y=True, lambda_dice=0.3, lambda_ce=1.7), "label_float", S2, {}),
    ("DiceCELoss", dict(other_act=tanh, squared_pred=True, jaccard=True), "onehot", S2, {}),
    ("DiceCELoss", dict(other_act=tanh), "uint8", S2, {}),
    ("DiceCELoss", dict(sigmoid=True), "binary", (2, 1, 6, 5), {}),
    ("DiceCELoss", dict(sigmoid=True, weight=torch.tensor([2.0]), reduction="sum"), "binary", (2, 1, 6, 5), {}),
    ("DiceCELoss", dict(), "binary", (2, 1, 4, 3, 5), {}),
    # DiceFocalLoss
    ("DiceFocalLoss", dict(sigmoid=True), "uint8", S2, {}),
    ("DiceFocalLoss", dict(sigmoid=True, to_onehot_y=True, alpha=0.3, weight=[1.0, 2.0, 0.5, 1.5], batch=True), "label",
     S3, {}),
    ("DiceFocalLoss", dict(softmax=True, to_onehot_y=True, include_background=False, reduction="sum"), "label", S2,
     {}),
    ("DiceFocalLoss", dict(sigmoid=True, gamma=1.5, lambda_dice=0.4, lambda_focal=2.0), "onehot", S2, {}),
    ("DiceFocalLoss", dict(sigmoid=True, to_onehot_y=True, reduction="none"), "label", S2, {}),
    ("DiceFocalLoss", dict(other_act=tanh, squared_pred=True, jaccard=True), "onehot", S2, {}),
    ("DiceFocalLoss", dict(softmax=True, include_background=False), "bool", S3, {}),
]


def _case_id(case):
    name, options, kind, shape, _ = case
    text = ",".join(f"{k}={getattr(v, '__name__', v) if not isinstance(v, torch.Tensor) else v.tolist()}"
                    for k, v in options.items())
    return f"{name}({text})-{kind}-{len(shape) - 2}d"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
def test_matches_monai(case, backend, dtype):
    name, options, kind, shape, target_options = case
    # CrossEntropyLoss wants its weight in the input's dtype
    options = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    x = make_input(shape, dtype)
    t = make_target(kind, shape, **target_options)
    if t.is_floating_point() and kind != "label_float":
        t = t.to(dtype)  # MONAI sums an fp32 target in fp32, even for an fp64 input
    # MONAI's one-hot of a label map is fp32: with squared_pred its sum of squares is an fp32 norm, squared
    fp32_in_monai = options.get("squared_pred") and options.get("to_onehot_y")
    compare(name, options, x, t, backend, torch.float32 if fp32_in_monai else None)


def _cases(*wanted):
    """The CASES entries with these ids."""
    by_id = {_case_id(case): case for case in CASES}
    return [by_id[case_id] for case_id in wanted]


# One per fused path: multi-class region (class map), binary region (uint8 one-hot with ignored
# pixels), multi-class region + CE (weights, smoothing), binary Dice + focal in one pass,
# multi-class focal (ignored pixels).
TRITON_CASES = _cases("DiceLoss(softmax=True,to_onehot_y=True)-label-2d",
                      "DiceLoss(sigmoid=True,to_onehot_y=True,ignore_index=-1)-label-2d",
                      "DiceCELoss(softmax=True,to_onehot_y=True,weight=[0.5, 1.0, 2.0, 1.5],label_smoothing=0.1,"
                      "include_background=False)-label-3d",
                      "DiceFocalLoss(sigmoid=True)-uint8-2d",
                      "FocalLoss(use_softmax=True,to_onehot_y=True,ignore_index=255)-label-2d")
# Cases the module docstring calls fused: no eager activation, definition or focal map.
FUSED_CASES = _cases(
    "DiceLoss(sigmoid=True)-onehot-2d", "DiceLoss(softmax=True,to_onehot_y=True)-label-2d",
    "DiceLoss(softmax=True,reduction=none)-onehot-3d",
    "DiceLoss(softmax=True,to_onehot_y=True,include_background=False,batch=True)-label_float-3d",
    "DiceLoss(softmax=True,to_onehot_y=True,ignore_index=1,reduction=none)-label-2d",
    "DiceLoss(softmax=True,to_onehot_y=True,soft_label=True)-label-2d",
    "DiceLoss(sigmoid=True,to_onehot_y=True,ignore_index=-1)-label-2d",
    "DiceLoss(sigmoid=True,ignore_index=-1,reduction=none)-binary-2d",
    "TverskyLoss(softmax=True,to_onehot_y=True,include_background=False,reduction=none)-label-3d",
    "GeneralizedDiceLoss(softmax=True,to_onehot_y=True)-label-2d",
    "GeneralizedDiceLoss(sigmoid=True,w_type=simple,batch=True)-onehot-3d",
    "FocalLoss(alpha=0.25)-uint8-3d", "FocalLoss(to_onehot_y=True,ignore_index=255,reduction=sum)-label-3d",
    "FocalLoss(use_softmax=True,to_onehot_y=True,include_background=False,alpha=[0.2, 0.5, 0.8],reduction=sum)"
    "-label-3d",
    "FocalLoss(use_softmax=True,weight=[1.0, 0.5, 2.0])-soft-2d",
    "FocalLoss(use_softmax=True,to_onehot_y=True,include_background=False,ignore_index=255)-label-2d",
    "FocalLoss(gamma=0.0,alpha=0.4)-soft-2d", "FocalLoss(ignore_index=-1,gamma=0.0)-binary-2d",
    "FocalLoss(gamma=2.0)-soft-2d", "FocalLoss()-onehot-2d",  # MONAI's focal factor (focal_form) on soft targets
    "DiceFocalLoss(sigmoid=True,gamma=1.5,lambda_dice=0.4,lambda_focal=2.0)-onehot-2d",
    "DiceCELoss(softmax=True,to_onehot_y=True)-label-2d", "DiceCELoss(softmax=True,label_smoothing=0.2)-soft-2d",
    "DiceCELoss(sigmoid=True,to_onehot_y=True,lambda_dice=0.3,lambda_ce=1.7)-label_float-2d",
    "DiceCELoss(sigmoid=True)-binary-2d", "DiceFocalLoss(sigmoid=True)-uint8-2d",
    "DiceFocalLoss(sigmoid=True,to_onehot_y=True,alpha=0.3,weight=[1.0, 2.0, 0.5, 1.5],batch=True)-label-3d",
    "DiceFocalLoss(softmax=True,to_onehot_y=True,include_background=False,reduction=sum)-label-2d",
)
SOFT_LABEL_CASES = [case for case in CASES if case[1].get("soft_label")]


@pytest.mark.parametrize("case", FUSED_CASES, ids=[_case_id(case) for case in FUSED_CASES])
def test_fused_cases_run_no_eager_step(case, monkeypatch):
    """What the docstring calls fused reaches neither an eager activation nor MONAI's definition."""

    def eager(*args, **kwargs):
        raise AssertionError("an eager step ran")

    for name in ("_activated", "_definition_sums", "_focal_eager"):
        monkeypatch.setattr(compat, name, eager)
    name, options, kind, shape, target_options = case
    compare(name, options, make_input(shape, torch.float32), make_target(kind, shape, **target_options),
            BACKENDS[0])


@pytest.mark.parametrize("case", SOFT_LABEL_CASES, ids=[_case_id(case) for case in SOFT_LABEL_CASES])
def test_soft_label_on_the_min_intersection_kernels(case):
    """soft_label with a float target: I = sum min(p, t) on the fused kernels."""
    name, options, kind, shape, target_options = case
    compare(name, options, make_input(shape, torch.float32), make_target(kind, shape, **target_options),
            BACKENDS[0])


@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("case", TRITON_CASES, ids=[_case_id(case) for case in TRITON_CASES])
def test_matches_monai_triton(case, backend):
    name, options, kind, shape, target_options = case
    compare(name, options, make_input(shape, torch.float32), make_target(kind, shape, **target_options), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_where_monai_gives_nan(backend):
    """smooth_nr = smooth_dr = 0 and a class neither predicted nor present: 0/0, as MONAI."""
    x = make_input(S2, torch.float64).abs()
    x[:, 1] = 0
    t = make_target("onehot", S2).double()
    t[:, 1] = 0
    t[:, 0] = 1 - t[:, 2]
    compare("DiceLoss", dict(reduction="none", smooth_nr=0.0, smooth_dr=0.0), x, t, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp64_focal_is_fp32_as_monai(backend):
    """MONAI's FocalLoss computes in fp32 (input.float()): the loss is fp32 for an fp64 input."""
    x = make_input(S2, torch.float64)
    loss = compat.FocalLoss(backend=backend)(x, make_target("uint8", S2))
    assert loss.dtype == torch.float32


def test_signatures_match():
    import inspect

    for name in ("DiceLoss", "GeneralizedDiceLoss", "DiceCELoss", "DiceFocalLoss", "TverskyLoss", "FocalLoss"):
        theirs = inspect.signature(getattr(monai_losses, name).__init__).parameters
        ours = inspect.signature(getattr(compat, name).__init__).parameters
        assert list(ours)[: len(theirs)] == list(theirs), name
        for argument, parameter in theirs.items():
            assert ours[argument].default == parameter.default, (name, argument)
        assert ours["backend"].kind == inspect.Parameter.KEYWORD_ONLY


# (class name, constructor options, call: (target kind, shape) or None for a constructor error)
ERRORS = [
    ("DiceLoss", dict(sigmoid=True, softmax=True), None),
    ("DiceLoss", dict(other_act="tanh"), None),
    ("DiceLoss", dict(softmax=True, other_act=tanh), None),
    ("DiceLoss", dict(reduction="median"), None),
    ("GeneralizedDiceLoss", dict(w_type="cubic"), None),
    ("GeneralizedDiceLoss", dict(sigmoid=True, softmax=True), None),
    ("TverskyLoss", dict(other_act=3), None),
    ("DiceCELoss", dict(reduction="none"), None),
    ("DiceCELoss", dict(lambda_ce=-1.0), None),
    ("DiceFocalLoss", dict(lambda_dice=-0.5), None),
    ("DiceFocalLoss", dict(sigmoid=True, softmax=True), None),
    ("DiceLoss", dict(sigmoid=True, weight=[1.0, 2.0]), ("onehot", S2)),
    ("DiceLoss", dict(sigmoid=True, weight=[1.0, -2.0, 1.0]), ("onehot", S2)),
    ("DiceLoss", dict(softmax=True, include_background=False, weight=[1.0, 2.0, 3.0]), ("onehot", S2)),
    ("DiceLoss", dict(softmax=True), ("label", S2)),
    ("DiceLoss", dict(softmax=True, to_onehot_y=True), ("onehot", S2)),
    ("FocalLoss", dict(weight=[1.0, 2.0]), ("uint8", S2)),
    ("FocalLoss", dict(weight=-1.0), ("uint8", S2)),
    ("FocalLoss", dict(use_softmax=True, alpha=[0.1, 0.9]), ("onehot", S2)),
    ("FocalLoss", dict(alpha=[0.1, 0.9]), ("onehot", S2)),
    ("FocalLoss", dict(), ("label", S2)),
    ("DiceCELoss", dict(softmax=True), ("label", S2)),
    ("DiceCELoss", dict(softmax=True, to_onehot_y=True), ("label_squeezed", S2)),
    ("DiceFocalLoss", dict(sigmoid=True), ("soft4", S2)),
    ("DiceFocalLoss", dict(sigmoid=True, weight=[1.0, 2.0]), ("uint8", S2)),
]


@pytest.mark.parametrize("error", ERRORS, ids=[f"{e[0]}{sorted(e[1])}-{e[2] and e[2][0]}" for e in ERRORS])
def test_errors_as_monai(error):
    """The same exception type as MONAI, at the same step (construction or call)."""
    name, options, call = error

    def run(module):
        loss = getattr(module, name)(**options)
        if call is not None:
            kind, shape = call
            x = make_input(shape, torch.float32)
            if kind == "label_squeezed":
                t = make_target("label", shape).squeeze(1)
            elif kind == "soft4":
                t = make_target("soft", (shape[0], 4) + shape[2:])
            else:
                t = make_target(kind, shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss(x, t)

    with pytest.raises(Exception) as theirs:
        run(monai_losses)
    with pytest.raises(theirs.type):
        run(compat)
