"""The options of the loss-options issue on every fused backend, for both families:
split smoothing (smooth_nr / smooth_dr), V-Net's squared_pred, smp's log_loss,
probability inputs (activation='none') and Dice+Focal; against the reference
(value and gradient), the formulas users know, fp64 gradcheck, torch.compile,
determinism, NaN propagation and bad arguments."""

import pytest
import torch
import torch.nn.functional as F
from cases import BINARY, MULTICLASS, parametrize, with_backends
from helpers import DEVICE, IGNORE, INPUT_DTYPES, assert_close, assert_matches_reference, gradcheck

import fusedloss

# The options in a few combinations (each alone costs the Triton interpreter too much time for what
# it adds): MONAI's split smoothing with V-Net's squares; nr > dr (a perfect group's loss is then
# negative) with smp's log loss where the loss has it; probability inputs, alone and with the rest.
OPTION_SETS = [dict(smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True),
               dict(smooth_nr=2.0, smooth_dr=0.5, log_loss=True), dict(activation="none"),
               dict(activation="none", squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5)]
INDEX_LOSSES = ("dice", "iou", "tversky")  # the losses with log_loss
REGION_CASES = (BINARY.cases(BINARY.region_losses + ("dice_focal",))
                + MULTICLASS.cases(MULTICLASS.region_losses + ("dice_focal",)))


def _for(case, options) -> dict:
    """``options`` without log_loss where the loss has none."""
    return options if case.name in INDEX_LOSSES else {k: v for k, v in options.items() if k != "log_loss"}


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
    [(case, backend, _for(case, options)) for case, backend in with_backends(REGION_CASES) for options in OPTION_SETS],
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
    shape = (2, 2, 2, 3) if case.family is BINARY else (2, 3, 2, 3)
    x, t = make(case, shape, torch.float64, options, scale=1.0)
    call = call_options(case, **options)
    if options.get("activation") == "none":
        x = x.clamp(0.05, 0.95)  # finite differences stay inside [0, 1]
    assert gradcheck(lambda inp: case.fn(inp, t, backend=backend, **call), x, backend)


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
    x, t = x[..., :2, :3], t[..., :2, :3]  # small: gradcheck under the Triton interpreter
    options = dict(mode=family.name, per_sample=True, smooth=0.1)
    assert gradcheck(lambda inp: fusedloss.generalized_dice_loss(inp, t, backend=backend, **options), x, backend)
    assert_compiles_like_eager(lambda inp: fusedloss.generalized_dice_loss(inp, t, backend=backend, **options), x)


def test_generalized_dice_bad_arguments():
    x, t = BINARY.make_pair((2, 3, 4, 5), torch.float32)
    with pytest.raises(ValueError, match="weight_type must be one of"):
        fusedloss.generalized_dice_loss(x, t, weight_type="log")
    with pytest.raises(ValueError, match="ignore_index=1 is a label"):
        fusedloss.generalized_dice_loss(x, t, ignore_index=1)
    with pytest.raises(ValueError, match="pass either smooth or smooth_nr"):
        fusedloss.generalized_dice_loss(x, t, 1.0, smooth_dr=1.0)


# ---- binary ignore_index, class weights, label smoothing, per-class alpha, per-class (dense) targets ----


def _with_ignored(x, t, ignore_index, fraction=0.2, seed=1):
    """``t`` with a fraction of elements set to ignore_index, and NaN inputs there (they must reach nothing)."""
    gen = torch.Generator().manual_seed(seed)
    ignored = (torch.rand(t.shape, generator=gen) < fraction).to(t.device)
    t = torch.where(ignored, torch.tensor(ignore_index, dtype=t.dtype, device=t.device), t)
    x = torch.where(ignored, torch.tensor(float("nan"), dtype=x.dtype, device=x.device), x)
    return x, t


BINARY_IGNORE = [(torch.float32, -1), (torch.uint8, 255)]


@parametrize("case, backend, target_dtype, options",
             [(case, backend, target_dtype, options) for case, backend in with_backends(BINARY.cases())
              for target_dtype, _ in BINARY_IGNORE
              for options in ([dict()] if case.name == "focal" else [dict(), dict(per_sample=True, per_channel=True,
                                                                                    reduction="none")])]
             + [(BINARY.case("focal"), backend, torch.uint8, dict(reduction="none")) for backend in BINARY.backends]
             + [(BINARY.case("dice_bce"), backend, torch.float32, dict(activation="none"))
                for backend in BINARY.backends])
def test_binary_ignore_index_matches_reference(case, backend, target_dtype, options):
    ignore_index = dict(BINARY_IGNORE)[target_dtype]
    x, t = make(case, SHAPES[BINARY], torch.float64, options, target_dtype=target_dtype)
    x, t = _with_ignored(x, t, ignore_index)
    compared = assert_matches_reference(case, x, t, backend, **case.options(ignore_index=ignore_index, **options))
    assert (compared.grad[t == ignore_index] == 0).all()


@parametrize("name, backend",
             [(name, backend) for name in ("dice", "dice_bce", "focal")
              for backend in BINARY.backends + ("reference",)])
def test_binary_ignore_index_leaves_the_elements_out(name, backend):
    """With ignore_index the loss is the loss of the elements kept, whatever the ignored ones hold."""
    case = BINARY.case(name)
    x, t = case.make_pair((2, 3, 8, 9), torch.float32, torch.uint8)
    x, t = _with_ignored(x, t, 255)
    kept = t != 255
    loss = case(x, t, backend, ignore_index=255)
    torch.testing.assert_close(loss, case(x[kept], t[kept], backend))


CLASS_WEIGHT = [0.5, 1.0, 2.0, 0.25]


@parametrize("case, backend, options",
             [(MULTICLASS.case("dice_ce"), backend, options) for backend in MULTICLASS.backends
              for options in (dict(ce_class_weight=CLASS_WEIGHT), dict(label_smoothing=0.1),
                              dict(ce_class_weight=CLASS_WEIGHT, label_smoothing=0.2, per_sample=True,
                                   reduction="sum"),
                              dict(ce_class_weight=CLASS_WEIGHT, label_smoothing=0.1, activation="none"))]
             + [(MULTICLASS.case(name), backend, options) for name in ("focal", "dice_focal")
                for backend in MULTICLASS.backends
                for options in (dict(alpha=CLASS_WEIGHT), dict(alpha=CLASS_WEIGHT, activation="none"))]
             + [(MULTICLASS.case("focal"), backend, dict(alpha=CLASS_WEIGHT, reduction="none"))
                for backend in MULTICLASS.backends])
def test_class_weights_and_label_smoothing_match_reference(case, backend, options):
    options = dict(options)
    for name in ("ce_class_weight", "alpha"):
        if name in options:
            options[name] = torch.tensor(options[name], device=DEVICE)
    x, t = make(case, SHAPES[MULTICLASS], torch.float64, options)
    assert_matches_reference(case, x, t, backend, **call_options(case, **options))
    x32, t32 = make(case, SHAPES[MULTICLASS], torch.float32, options)
    assert_matches_reference(case, x32, t32, backend, **call_options(case, **options))


@parametrize("backend, dense",
             [(backend, dense) for backend in MULTICLASS.backends + ("reference",) for dense in (False, True)])
def test_cross_entropy_options_are_f_cross_entropy(backend, dense):
    """Dice+CE's CE term (dice_weight=0) with class weights and label smoothing, on a class map
    with ignored pixels or on soft per-class targets, is F.cross_entropy, value and gradient."""
    x, y = MULTICLASS.make_pair(SHAPES[MULTICLASS], torch.float64, ignore_fraction=0.0 if dense else 0.2)
    weight = torch.tensor(CLASS_WEIGHT, dtype=torch.float64, device=DEVICE)
    if dense:
        y = torch.softmax(torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype), 1).to(DEVICE)
    ignore = {} if dense else dict(ignore_index=IGNORE)
    p, q = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    loss = fusedloss.dice_ce_loss(p, y, dice_weight=0.0, ce_class_weight=weight, label_smoothing=0.15, backend=backend,
                                  **ignore)
    expected = F.cross_entropy(q, y if dense else y.long(), weight=weight, label_smoothing=0.15,
                               **({} if dense else dict(ignore_index=IGNORE)))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, p)[0], torch.autograd.grad(expected, q)[0])


def _dense_pair(case, dtype, target_dtype, soft, options):
    x, y = case.make_pair(SHAPES[MULTICLASS], dtype)
    t = F.one_hot(y.long(), x.shape[1]).movedim(-1, 1).to(DEVICE)
    if soft:  # a soft target: label-smoothed / mixed-up one-hot rows
        noise = torch.rand(t.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
        t = 0.7 * t + 0.3 * noise / noise.sum(1, keepdim=True)
    x = probabilities(case, x) if options.get("activation") == "none" else x
    return x, y, t.to(target_dtype)


@parametrize("case, backend, target_dtype",
             [(case, backend, target_dtype) for case, backend in with_backends(MULTICLASS.cases(), reference=True)
              for target_dtype in (torch.float32, torch.uint8, torch.bool)])
def test_one_hot_targets_equal_class_maps(case, backend, target_dtype):
    """A one-hot target of input's shape gives the class map's loss and gradient (every loss)."""
    x, y, t = _dense_pair(case, torch.float64, target_dtype, soft=False, options={})
    options = case.options(params=True)
    dense_loss, dense_grad = _loss_and_grad(case, x, t, backend, options)
    map_loss, map_grad = _loss_and_grad(case, x, y, backend, options)
    assert_close(dense_loss, map_loss, torch.float64)
    assert_close(dense_grad, map_grad, torch.float64)


def _loss_and_grad(case, x, t, backend, options):
    x = x.detach().clone().requires_grad_(True)
    loss = case.fn(x, t, backend=backend, **options)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


@parametrize("case, backend, options",
             [(case, backend, options) for case, backend in with_backends(MULTICLASS.cases())
              for options in (dict(), dict(activation="none", **({} if case.name == "focal" else
                                                                  dict(squared_pred=True))))]
             + [(MULTICLASS.case("dice_ce"), backend, dict(ce_class_weight=CLASS_WEIGHT, label_smoothing=0.1))
                for backend in MULTICLASS.backends]
             + [(MULTICLASS.case("focal"), backend, dict(alpha=CLASS_WEIGHT, reduction="none"))
                for backend in MULTICLASS.backends])
def test_soft_targets_match_reference(case, backend, options):
    options = {key: torch.tensor(value, device=DEVICE) if isinstance(value, list) else value
               for key, value in options.items()}
    x, _, t = _dense_pair(case, torch.float64, torch.float64, soft=True, options=options)
    assert_matches_reference(case, x, t, backend, **case.options(**options))
    x32, _, t32 = _dense_pair(case, torch.float32, torch.float32, soft=True, options=options)
    assert_matches_reference(case, x32, t32, backend, **case.options(**options))


@parametrize("backend", MULTICLASS.backends)
def test_generalized_dice_soft_targets(backend):
    case = MULTICLASS.case("dice")
    x, y, t = _dense_pair(case, torch.float64, torch.float64, soft=True, options={})
    assert_matches_reference(fusedloss.generalized_dice_loss, x, t, backend, mode="multiclass", per_sample=True,
                             reduction="none")


@parametrize("case, backend", with_backends([BINARY.case("dice_bce"), MULTICLASS.case("dice_ce")]))
def test_gradcheck_wave_two(case, backend):
    """fp64 gradcheck: binary ignore_index; class-weighted, label-smoothed CE on soft targets."""
    if case.family is BINARY:
        x, t = case.make_pair((2, 2, 3, 4), torch.float64, torch.uint8, scale=1.0)
        t = torch.where(torch.arange(t.numel(), device=t.device).reshape(t.shape) % 5 == 0, 255, t).to(torch.uint8)
        options = dict(ignore_index=255, per_sample=True)
    else:
        x, _, t = _dense_pair(case, torch.float64, torch.float64, soft=True, options={})
        x, t = x[:, :, :2, :3], t[:, :, :2, :3]
        options = dict(ce_class_weight=torch.tensor(CLASS_WEIGHT, dtype=torch.float64, device=DEVICE),
                       label_smoothing=0.1)
    assert gradcheck(lambda inp: case.fn(inp, t, backend=backend, **options), x, backend)


@parametrize("case, backend", with_backends([BINARY.case("dice_focal"), MULTICLASS.case("dice_ce")]))
def test_compile_fullgraph_wave_two(case, backend):
    if case.family is BINARY:
        x, t = case.make_pair(SHAPES[BINARY], torch.float32, torch.uint8)
        x, t = _with_ignored(x, t, 255)
        options = dict(ignore_index=255, per_channel=True)
    else:
        x, _, t = _dense_pair(case, torch.float32, torch.float32, soft=True, options={})
        options = dict(ce_class_weight=torch.tensor(CLASS_WEIGHT, device=DEVICE), label_smoothing=0.1)
    assert_compiles_like_eager(lambda inp: case.fn(inp, t, backend=backend, **options), x)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, t, y: fusedloss.dice_loss(x, t.bool(), ignore_index=255), ValueError, "a bool target holds only"),
    (lambda x, t, y: fusedloss.dice_loss(x, t, ignore_index=1), ValueError, "ignore_index=1 is a label"),
    (lambda x, t, y: fusedloss.dice_loss(x, t.to(torch.uint8), ignore_index=-1), ValueError, "cannot occur in a uint8"),
    (lambda x, t, y: fusedloss.dice_ce_loss(x, F.one_hot(y, 3).movedim(-1, 1).float(), ignore_index=255), ValueError,
     "has no class index to ignore"),
    (lambda x, t, y: fusedloss.dice_ce_loss(x, y, label_smoothing=1.5), ValueError, "label_smoothing must be in"),
    (lambda x, t, y: fusedloss.dice_ce_loss(x, y, ce_class_weight=[1.0, 2.0]), ValueError,
     r"ce_class_weight must have shape \(3,\)"),
    (lambda x, t, y: fusedloss.focal_loss(x, t, alpha=[0.1, 0.2, 0.3]), ValueError,
     "one alpha per class is for mode='multiclass'"),
    (lambda x, t, y: fusedloss.focal_loss(x, y, alpha=[0.1, -0.2, 0.3], mode="multiclass", backend="reference"),
     ValueError, "alpha must hold finite numbers >= 0"),
    (lambda x, t, y: fusedloss.dice_ce_loss(x, F.one_hot(y, 3).movedim(-1, 1).long()), TypeError,
     "a target of input's shape holds per-class values"),
])
def test_bad_options_wave_two(call, error, message):
    x = torch.randn(2, 3, 4, device=DEVICE)
    t = torch.zeros(2, 3, 4, device=DEVICE)
    y = torch.zeros(2, 4, dtype=torch.long, device=DEVICE)
    with pytest.raises(error, match=message):
        call(x, t, y)


@parametrize("backend", MULTICLASS.backends + ("reference",))
def test_dense_target_values_are_checked(backend):
    x, y = MULTICLASS.make_pair((2, 3, 4), torch.float32)
    t = F.one_hot(y.long(), 3).movedim(-1, 1).float() * 2  # 0 / 2: not probabilities
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        fusedloss.dice_loss(x, t, mode="multiclass", backend=backend)
