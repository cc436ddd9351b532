"""The options of the loss-options issue on every fused backend, for both families:
split smoothing (smooth_nr / smooth_dr), V-Net's squared_pred, smp's log_loss,
probability inputs (activation='none') and Dice+Focal; against the reference
(value and gradient), the formulas users know, fp64 gradcheck, torch.compile,
determinism, NaN propagation and bad arguments."""

import pytest
import torch
import torch.nn.functional as F
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import DEVICE, INPUT_DTYPES, IGNORE, assert_close, assert_matches_reference

import fusedloss

# Each set of options on its own, then together. nr > dr makes a perfect group's loss negative.
OPTION_SETS = [dict(smooth_nr=0.0, smooth_dr=1e-5), dict(smooth_nr=2.0, smooth_dr=0.5), dict(squared_pred=True),
               dict(log_loss=True), dict(activation="none"),
               dict(activation="none", squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5)]
INDEX_LOSSES = ("dice", "iou", "tversky")  # the losses with log_loss
REGION_CASES = BINARY.cases(BINARY.region_losses) + MULTICLASS.cases(MULTICLASS.region_losses)


def _applies(case, options) -> bool:
    return "log_loss" not in options or case.name in INDEX_LOSSES


def probabilities(case, x):
    """What a model with its own sigmoid / softmax would pass with activation='none'."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = torch.sigmoid(x.to(acc)) if case.family is BINARY else torch.softmax(x.to(acc), dim=1)
    return p.to(x.dtype)


def make(case, shape, dtype, options, **kwargs):
    """An input / target pair of ``case``; the input made probabilities for activation='none'."""
    if case.family is MULTICLASS:
        kwargs.setdefault("ignore_fraction", 0.1)
    x, t = case.make_pair(shape, dtype, **kwargs)
    return (probabilities(case, x) if options.get("activation") == "none" else x), t


def call_options(case, **options) -> dict:
    """The case's options with ``options``: smooth_nr / smooth_dr replace the case's smooth;
    multiclass losses ignore pixels; Dice+CE / Dice+Focal multiclass take no 'none'."""
    merged = case.options(ignore=True, **options)
    if "smooth_nr" in options or "smooth_dr" in options:
        merged.pop("smooth", None)
    return merged


SHAPES = {BINARY: (2, 3, 7, 9), MULTICLASS: (2, 4, 7, 9)}


@parametrize(
    "case, backend, options",
    [(case, backend, options) for case, backend in with_backends(REGION_CASES) for options in OPTION_SETS
     if _applies(case, options)],
)
def test_region_options_match_reference(case, backend, options):
    x, t = make(case, SHAPES[case.family], torch.float64, options)
    assert_matches_reference(case, x, t, backend, **call_options(case, **options))
    grouped = dict(per_sample=True) if case.family is MULTICLASS else dict(per_sample=True, per_channel=True)
    if case.name not in ("dice_ce", "dice_focal") or case.family is BINARY:
        grouped["reduction"] = "none"
    assert_matches_reference(case, x, t, backend, **call_options(case, **options, **grouped))


@parametrize(
    "case, backend, dtype",
    [(case, backend, dtype) for case, backend in with_backends([BINARY.case("dice_focal"), BINARY.case("dice_bce"),
                                                                BINARY.case("focal"), MULTICLASS.case("dice_focal"),
                                                                MULTICLASS.case("dice_ce"), MULTICLASS.case("focal")])
     for dtype in INPUT_DTYPES],
)
def test_probability_inputs_every_dtype(case, backend, dtype):
    """activation='none' in each input dtype (and the focal map, reduction='none')."""
    options = dict(activation="none")
    for target_dtype in case.family.target_dtypes[:2]:
        x, t = make(case, SHAPES[case.family], dtype, options, target_dtype=target_dtype, scale=1.0)
        extra = dict(squared_pred=True) if case.name != "focal" else dict(reduction="none")
        assert_matches_reference(case, x, t, backend, **call_options(case, **options, **extra))


@parametrize("case, backend", with_backends([BINARY.case("dice_bce"), BINARY.case("focal"), MULTICLASS.case("dice_ce"),
                                             MULTICLASS.case("focal")]))
def test_saturated_probabilities(case, backend):
    """Probabilities of exactly 0 and 1, right and wrong: logs clamped at -100 (F.binary_cross_entropy,
    F.nll_loss of the clamped log) and torch's gradient ((p - t) / max(p (1 - p), 1e-12)), finite."""
    x, t = case.make_pair(SHAPES[case.family], torch.float64, scale=50.0)
    p = probabilities(case, x).round()
    compared = assert_matches_reference(case, p, t, backend, **call_options(case, activation="none"))
    assert torch.isfinite(compared.grad).all()


@parametrize("family, backend", [(family, backend) for family in (BINARY, MULTICLASS) for backend in family.backends])
def test_element_terms_on_probabilities_are_torchs(family, backend):
    """The definitions: BCE of probabilities is F.binary_cross_entropy, CE is F.nll_loss of
    the log clamped at -100, value and gradient."""
    case = family.case("dice_bce" if family is BINARY else "dice_ce")
    x, t = make(case, SHAPES[family], torch.float64, dict(activation="none"), scale=20.0)
    p = x.detach().requires_grad_(True)
    loss = case.fn(p, t, activation="none", dice_weight=0.0, backend=backend,
                   **({} if family is BINARY else dict(ignore_index=IGNORE)))
    q = x.detach().requires_grad_(True)
    if family is BINARY:
        expected = F.binary_cross_entropy(q, t.to(q.dtype))
    else:
        expected = F.nll_loss(torch.log(q).clamp(min=-100), t.long(), ignore_index=IGNORE)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, p)[0], torch.autograd.grad(expected, q)[0])


@parametrize("family, backend", [(family, backend) for family in (BINARY, MULTICLASS) for backend in family.backends])
def test_index_options_are_the_published_formulas(family, backend):
    """V-Net's Dice (squared_pred), MONAI's split smoothing and smp's log_loss, from their formulas."""
    x, t = family.make_pair(SHAPES[family], torch.float64)
    if family is BINARY:
        p, t_dense, dims = torch.sigmoid(x), t.to(x.dtype), tuple(range(x.dim()))
    else:
        p, t_dense = torch.softmax(x, dim=1), F.one_hot(t.long(), x.shape[1]).movedim(-1, 1).to(x.dtype)
        dims = (0, *range(2, x.dim()))  # per class
    intersection = (p * t_dense).sum(dims)
    mode = dict(mode=family.name)
    vnet = 1 - (2 * intersection + 1.0) / ((p**2).sum(dims) + (t_dense**2).sum(dims) + 1.0)
    torch.testing.assert_close(fusedloss.dice_loss(x, t, squared_pred=True, backend=backend, **mode), vnet.mean())
    monai = 1 - (2 * intersection + 0.0) / (p.sum(dims) + t_dense.sum(dims) + 1e-5)
    torch.testing.assert_close(fusedloss.dice_loss(x, t, smooth_nr=0.0, smooth_dr=1e-5, backend=backend, **mode),
                               monai.mean())
    smp = -torch.log(((2 * intersection + 0.5) / (p.sum(dims) + t_dense.sum(dims) + 0.5)).clamp(min=1e-7))
    torch.testing.assert_close(fusedloss.dice_loss(x, t, 0.5, log_loss=True, backend=backend, **mode), smp.mean())


@parametrize("family, backend", [(family, backend) for family in (BINARY, MULTICLASS) for backend in family.backends])
def test_dice_focal_is_dice_plus_focal(family, backend):
    case = family.case("dice_focal")
    x, t = case.make_pair(SHAPES[family], torch.float32)
    extra = {} if family is BINARY else dict(mode="multiclass")
    combined = fusedloss.dice_focal_loss(x, t, backend=backend, **extra)
    separate = fusedloss.dice_loss(x, t, backend=backend, **extra) + fusedloss.focal_loss(x, t, backend=backend,
                                                                                           **extra)
    assert_close(combined, separate, torch.float32)


@parametrize("case, backend, options",
             [(case, backend, options) for case, backend in with_backends([BINARY.case("dice_focal"),
                                                                          MULTICLASS.case("dice_focal"),
                                                                          BINARY.case("tversky")])
              for options in (dict(activation="none", squared_pred=True), dict(smooth_nr=0.0, smooth_dr=0.5))])
def test_gradcheck(case, backend, options):
    shape = (2, 2, 3, 4) if case.family is BINARY else (2, 3, 3, 4)
    x, t = make(case, shape, torch.float64, options, scale=1.0)
    call = call_options(case, **options)
    if options.get("activation") == "none":
        x = x.clamp(0.05, 0.95)  # finite differences stay inside [0, 1]
    torch.autograd.gradcheck(lambda inp: case.fn(inp, t, backend=backend, **call),
                             (x.detach().requires_grad_(True),), eps=1e-6, atol=1e-6)


def assert_compiles_like_eager(loss_of, x):
    """torch.compile(fullgraph=True) of ``loss_of`` gives the eager loss and input gradient."""
    torch._dynamo.reset()
    compiled = torch.compile(loss_of, fullgraph=True)
    eager_x, compiled_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    eager, result = loss_of(eager_x), compiled(compiled_x)
    eager.backward()
    result.backward()
    assert_close(result, eager, x.dtype)
    assert_close(compiled_x.grad, eager_x.grad, x.dtype)


@parametrize("case, backend", with_backends([BINARY.case("dice_focal"), MULTICLASS.case("dice_focal")]))
def test_compile_fullgraph(case, backend):
    options = call_options(case, activation="none", squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5)
    x, t = make(case, SHAPES[case.family], torch.float32, options)
    assert_compiles_like_eager(lambda inp: case.fn(inp, t, backend=backend, **options), x)


@parametrize("case, backend", with_backends([BINARY.case("dice_focal"), MULTICLASS.case("dice_focal")]))
def test_deterministic_and_nan_propagating(case, backend):
    options = call_options(case, activation="none", squared_pred=True)
    x, t = make(case, SHAPES[case.family], torch.float32, options)
    runs = []
    for _ in range(2):
        inp = x.clone().requires_grad_(True)
        loss = case.fn(inp, t, backend=backend, **options)
        loss.backward()
        runs.append((loss.detach(), inp.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    poisoned = x.clone()
    poisoned.view(-1)[5] = float("nan")
    assert torch.isnan(case.fn(poisoned, t, backend=backend, **options))


@pytest.mark.parametrize("call, message", [
    (lambda x, t: fusedloss.dice_loss(x, t, 1.0, smooth_nr=0.0), "pass either smooth or smooth_nr / smooth_dr"),
    (lambda x, t: fusedloss.dice_loss(x, t, smooth_dr=-1.0), "smooth_dr must be a finite number >= 0"),
    (lambda x, t: fusedloss.dice_loss(x, t, activation="softmax"), "activation must be None, 'sigmoid' or 'none'"),
    (lambda x, t: fusedloss.focal_loss(x, t, activation="relu"), "activation must be None, 'sigmoid' or 'none'"),
    (lambda x, t: fusedloss.dice_focal_loss(x, t.long(), mode="multiclass", reduction="none"),
     "reduction='none' is not defined for dice_focal_loss with mode='multiclass'"),
    (lambda x, t: fusedloss.dice_focal_loss(x, t, focal_weight=-1.0), "focal_weight must be a finite number >= 0"),
])
def test_bad_options(call, message):
    x = torch.randn(2, 3, 4, device=DEVICE)
    t = torch.zeros(2, 3, 4, device=DEVICE)
    if "multiclass" in message:
        t = torch.zeros(2, 4, device=DEVICE)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(x, t)


def test_multiclass_activation_is_softmax_or_none():
    x, y = MULTICLASS.make_pair((2, 3, 4), torch.float32)
    with pytest.raises(ValueError, match="activation must be None, 'softmax' or 'none' with mode='multiclass'"):
        fusedloss.dice_loss(x, y, mode="multiclass", activation="sigmoid")


def test_modules_take_the_options():
    x, t = BINARY.make_pair((2, 3, 4, 5), torch.float32)
    module = fusedloss.DiceFocalLoss(0.5, 1.0, activation="none", squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5,
                                     backend="reference")
    p = torch.sigmoid(x)
    assert_close(module(p, t), fusedloss.dice_focal_loss(p, t, 0.5, 1.0, activation="none", squared_pred=True,
                                                         smooth_nr=0.0, smooth_dr=1e-5, backend="reference"),
                 torch.float32)
    with pytest.raises(TypeError):
        fusedloss.DiceLoss(smoth=1.0)


# ---- Generalized Dice: the fused statistics and backward, the cross-class formula on the sums ----

GDL_OPTIONS = [dict(), dict(per_sample=True, reduction="none"), dict(weight_type="simple", include_background=False),
               dict(weight_type="uniform", reduction="sum", smooth=0.5), dict(activation="none", per_sample=True),
               dict(smooth_nr=0.0, smooth_dr=1e-3)]


def _gdl_pair(family, dtype, options, **kwargs):
    case = family.case("dice")
    shape = (2, 4, 6, 7)
    if family is MULTICLASS:
        x, t = case.make_pair(shape, dtype, absent=(2,), **kwargs)  # an absent class: an infinite weight replaced
    else:
        x, t = case.make_pair(shape, dtype, **kwargs)
        t[:, 2] = 0  # an empty channel
    return (probabilities(case, x) if options.get("activation") == "none" else x), t


@parametrize("family, backend, options",
             [(family, backend, options) for family in (BINARY, MULTICLASS) for backend in family.backends
              for options in GDL_OPTIONS + ([dict(ignore_index=IGNORE)] if family is MULTICLASS else [])])
def test_generalized_dice_matches_reference(family, backend, options):
    x, t = _gdl_pair(family, torch.float64, options,
                     **(dict(ignore_fraction=0.2) if "ignore_index" in options else {}))
    assert_matches_reference(fusedloss.generalized_dice_loss, x, t, backend, mode=family.name, **options)
    x32, t32 = _gdl_pair(family, torch.float32, options)
    assert_matches_reference(fusedloss.generalized_dice_loss, x32, t32, backend, mode=family.name, **options)


@parametrize("family, backend", [(family, backend) for family in (BINARY, MULTICLASS) for backend in family.backends])
def test_generalized_dice_is_sudres(family, backend):
    """Sudre et al. 2017, eq. 2 with w_c = 1/T_c**2, per sample, the absent class's weight
    replaced by its sample's largest (MONAI's rule)."""
    x, t = _gdl_pair(family, torch.float64, {})
    p = torch.sigmoid(x) if family is BINARY else torch.softmax(x, dim=1)
    t_dense = t.to(x.dtype) if family is BINARY else F.one_hot(t.long(), 4).movedim(-1, 1).to(x.dtype)
    dims = tuple(range(2, x.dim()))
    intersection, predicted, actual = (p * t_dense).sum(dims), p.sum(dims), t_dense.sum(dims)
    weights = 1 / actual**2
    weights = torch.where(actual == 0, weights.masked_fill(actual == 0, 0).amax(1, keepdim=True), weights)
    expected = 1 - (2 * (weights * intersection).sum(1) + 1e-5) / ((weights * (predicted + actual)).sum(1) + 1e-5)
    loss = fusedloss.generalized_dice_loss(x, t, mode=family.name, per_sample=True, reduction="none", backend=backend)
    torch.testing.assert_close(loss, expected)


@parametrize("family, backend", [(family, backend) for family in (BINARY, MULTICLASS) for backend in family.backends])
def test_generalized_dice_gradcheck_and_compile(family, backend):
    x, t = _gdl_pair(family, torch.float64, {}, scale=1.0)
    options = dict(mode=family.name, per_sample=True, smooth=0.1)
    torch.autograd.gradcheck(lambda inp: fusedloss.generalized_dice_loss(inp, t, backend=backend, **options),
                             (x.detach().requires_grad_(True),), eps=1e-6, atol=1e-6)
    assert_compiles_like_eager(lambda inp: fusedloss.generalized_dice_loss(inp, t, backend=backend, **options), x)


def test_generalized_dice_bad_arguments():
    x, t = BINARY.make_pair((2, 3, 4, 5), torch.float32)
    with pytest.raises(ValueError, match="weight_type must be one of"):
        fusedloss.generalized_dice_loss(x, t, weight_type="log")
    with pytest.raises(ValueError, match="ignore_index"):
        fusedloss.generalized_dice_loss(x, t, ignore_index=255)
    with pytest.raises(ValueError, match="pass either smooth or smooth_nr"):
        fusedloss.generalized_dice_loss(x, t, 1.0, smooth_dr=1.0)
