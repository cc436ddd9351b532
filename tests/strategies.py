"""Hypothesis strategies for loss calls: random shapes, dtypes, options, modes,
masks (degenerate ones included) and memory layouts. A new loss gets property tests by being
listed in fusedloss.LOSSES / MULTICLASS_LOSSES: the strategies read those."""

from __future__ import annotations

import torch
from helpers import DEVICE
from hypothesis import strategies as st

FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
BINARY_TARGET_DTYPES = [torch.float32, torch.float16, torch.bool, torch.uint8]
CLASS_MAP_DTYPES = [torch.uint8, torch.int16, torch.int32, torch.int64]
MASKS = ["random", "empty", "full", "soft"]

# The parameters each loss takes beyond its options, as strategies.
_unit = st.one_of(st.just(0.0), st.floats(0.01, 1.0))  # no subnormal weights
_smooth_values = st.sampled_from([0.0, 1e-5, 0.5, 1.0, 10.0])
# smooth, or smooth_nr / smooth_dr apart (MONAI's 0 / 1e-5 among them), with or without V-Net's squares.
_smoothing = st.one_of(st.fixed_dictionaries({"smooth": _smooth_values}),
                       st.fixed_dictionaries({"smooth_nr": _smooth_values, "smooth_dr": _smooth_values}))
_index_options = st.fixed_dictionaries({"squared_pred": st.booleans()})
_log_loss = st.fixed_dictionaries({"log_loss": st.booleans()})
_gamma = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0])


def _merged(*strategies):
    return st.tuples(*strategies).map(lambda dicts: {key: value for d in dicts for key, value in d.items()})


LOSS_PARAMETERS = {
    "dice": _merged(_smoothing, _index_options, _log_loss),
    "iou": _merged(_smoothing, _index_options, _log_loss),
    "tversky": _merged(st.fixed_dictionaries({"alpha": _unit, "beta": _unit}), _smoothing, _index_options, _log_loss),
    "focal_tversky": _merged(
        st.fixed_dictionaries({"alpha": _unit, "beta": _unit, "gamma": st.sampled_from([0.5, 1.0, 2.0])}), _smoothing,
        _index_options),
    "focal": st.fixed_dictionaries({"alpha": st.one_of(st.none(), _unit), "gamma": _gamma}),
    "dice_bce": _merged(st.fixed_dictionaries({"dice_weight": _unit, "bce_weight": _unit}), _smoothing,
                        _index_options),
    "dice_ce": _merged(st.fixed_dictionaries({"dice_weight": _unit, "ce_weight": _unit}), _smoothing, _index_options),
    "dice_focal": _merged(
        st.fixed_dictionaries({"alpha": st.one_of(st.none(), _unit), "gamma": _gamma, "dice_weight": _unit,
                               "focal_weight": _unit}), _smoothing, _index_options),
}


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


@st.composite
def _in_memory_layout(draw, *tensors):
    """The tensors' values in one drawn memory layout: as made (contiguous), dense but
    with the dims in another memory order (channels_last is one), or a strided view
    (every other element of a wider tensor's last dim), which no kernel reads in place.
    Tensors of one shape get the same strides (the binary kernels then read both in place)."""
    layout = draw(st.sampled_from(["contiguous", "permuted", "strided"]))
    order = draw(st.permutations(range(tensors[0].dim())))
    inverse = sorted(range(len(order)), key=order.__getitem__)
    laid_out = []
    for tensor in tensors:
        if tensor.dim() == 0 or layout == "contiguous":
            laid_out.append(tensor)
        elif layout == "permuted":
            laid_out.append(tensor.permute(order).contiguous().permute(inverse))
        else:
            wide = torch.zeros(tensor.shape[:-1] + (2 * tensor.shape[-1],), dtype=tensor.dtype, device=tensor.device)
            wide[..., ::2] = tensor
            laid_out.append(wide[..., ::2])
    return laid_out


@st.composite
def binary_calls(draw, losses):
    """(loss name, input, target, options) for mode='binary'."""
    name = draw(st.sampled_from(sorted(losses)))
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    target_dtype = draw(st.sampled_from(BINARY_TARGET_DTYPES))
    mask = draw(st.sampled_from(MASKS))
    probabilities = draw(st.booleans())  # activation='none': the input holds sigmoid(logits)
    # Saturated tails: test_extremes (probabilities near 0 or 1 have gradients beyond fp16).
    scale = draw(st.sampled_from([0.1, 1.0] if probabilities else [0.1, 1.0, 3.0]))
    gen = _seeded(draw(st.integers(0, 2**16)))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    x = (torch.sigmoid(x) if probabilities else x).to(dtype)
    if mask == "empty":
        t = torch.zeros(shape)
    elif mask == "full":
        t = torch.ones(shape)
    elif mask == "soft" and target_dtype.is_floating_point:
        t = torch.rand(shape, generator=gen)
    else:
        t = (torch.rand(shape, generator=gen) < 0.5).float()
    options = dict(draw(LOSS_PARAMETERS[name]))
    if probabilities:
        options["activation"] = "none"
    if name != "focal":
        options["per_sample"] = draw(st.booleans())
        options["per_channel"] = ndim >= 2 and draw(st.booleans())
        if options["per_channel"] and draw(st.booleans()):
            options["weight"] = torch.rand(shape[1], generator=gen, dtype=torch.float64).to(DEVICE)
    options["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    t = t.to(target_dtype)
    if target_dtype != torch.bool and draw(st.booleans()):  # ignored elements, holding any input
        options["ignore_index"] = 255 if target_dtype == torch.uint8 else -1
        ignored = torch.rand(shape, generator=gen) < 0.3
        t = torch.where(ignored, torch.tensor(options["ignore_index"], dtype=t.dtype), t)
        x = torch.where(ignored, torch.tensor(float("nan"), dtype=x.dtype), x)
    x, t = x.to(DEVICE), t.to(DEVICE)
    if draw(st.booleans()):
        x, t = draw(_in_memory_layout(x, t))
    else:
        (x,), (t,) = draw(_in_memory_layout(x)), draw(_in_memory_layout(t))
    return name, x, t, options


@st.composite
def multiclass_calls(draw, losses, ignore_index=255):
    """(loss name, input, target, options) for mode='multiclass': a class map, or per-class targets
    of the input's shape (one-hot or soft)."""
    name = draw(st.sampled_from(sorted(losses)))
    classes = draw(st.sampled_from([2, 3, 5, 17, 64]))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=3)))
    batch = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    target_dtype = draw(st.sampled_from(CLASS_MAP_DTYPES))
    probabilities = draw(st.booleans())  # activation='none': the input holds softmax(logits)
    gen = _seeded(draw(st.integers(0, 2**16)))
    x = torch.randn((batch, classes) + spatial, generator=gen, dtype=torch.float64) * draw(
        st.sampled_from([0.1, 1.0] if probabilities else [0.1, 1.0, 3.0]))
    x = (torch.softmax(x, dim=1) if probabilities else x).to(dtype)
    layout = draw(st.sampled_from(["random", "one_class", "ignored_some", "ignored_all"]))
    y = torch.randint(0, classes, (batch,) + spatial, generator=gen)
    if layout == "one_class":
        y = torch.full_like(y, draw(st.integers(0, classes - 1)))
    elif layout.startswith("ignored"):
        fraction = 1.0 if layout == "ignored_all" else 0.3
        y = torch.where(torch.rand(y.shape, generator=gen) < fraction, ignore_index, y)
    options = dict(draw(LOSS_PARAMETERS[name]))
    if name != "dice_ce":
        options["mode"] = "multiclass"
    if probabilities:
        options["activation"] = "none"
    dense = not layout.startswith("ignored") and draw(st.booleans())
    if dense:  # per-class targets: the one-hot of y, softened or not, in a dense dtype
        target_dtype = draw(st.sampled_from([torch.float32, torch.uint8, torch.bool]))
        one_hot = torch.nn.functional.one_hot(y, classes).movedim(-1, 1).double()
        if target_dtype == torch.float32 and draw(st.booleans()):
            noise = torch.rand(one_hot.shape, generator=gen, dtype=torch.float64)
            one_hot = 0.8 * one_hot + 0.2 * noise / noise.sum(1, keepdim=True)
        y = one_hot
    elif layout.startswith("ignored") or draw(st.booleans()):
        options["ignore_index"] = ignore_index
    if name == "dice_ce" and draw(st.booleans()):
        options["ce_class_weight"] = (torch.rand(classes, generator=gen, dtype=torch.float64) + 0.1).to(DEVICE)
        options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1]))
    if name in ("focal", "dice_focal") and draw(st.booleans()):
        options["alpha"] = torch.rand(classes, generator=gen, dtype=torch.float64).to(DEVICE)
    reductions = ["mean", "sum"] if name in ("dice_ce", "dice_focal") else ["mean", "sum", "none"]
    options["reduction"] = draw(st.sampled_from(reductions))
    if name != "focal":
        options["per_sample"] = draw(st.booleans())
        options["include_background"] = draw(st.booleans())
        options["exclude_empty"] = draw(st.booleans())
        if draw(st.booleans()):
            options["weight"] = torch.rand(classes, generator=gen, dtype=torch.float64).to(DEVICE)
    (x,), (y,) = draw(_in_memory_layout(x.to(DEVICE))), draw(_in_memory_layout(y.to(target_dtype).to(DEVICE)))
    return name, x, y, options
