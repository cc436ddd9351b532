"""The fused ops' schemas, fake (meta) kernels and autograd, written once for
every backend that implements them.

A backend supplies the ops of a loss family under its own namespace: the
Triton backend defines them from Python (``triton_ops.py``); a C++ backend
defines them with TORCH_LIBRARY and only needs ``register_fake_and_autograd``
from here. Each family has four ops:

  <family>_loss                forward: (loss, coef); coef = per-group backward coefficients
  <family>_loss_backward       gradient w.r.t. input from grad_loss and coef
  <family>_focal_map           per-element (per-pixel) focal loss, reduction='none'
  <family>_focal_map_backward

Families: 'binary' (sigmoid: binary and multi-label targets) and 'multiclass'
(softmax: integer class-map targets).

The forward ops (and ``*_stats``) take ``check_target``: check the target's
values in the statistics pass (``fusedloss/_checks.py``, CHECK_TARGETS): a
ValueError on the CPU, a device-side assert on a GPU.
"""

from __future__ import annotations

import torch

from .._spec import LossSpec, binary_operands, group_layout, multiclass_operands

BINARY_SCHEMAS = {
    "binary_loss": (
        "(Tensor input, Tensor target, Tensor? weight, bool per_sample, bool per_channel, "
        "bool region, float tv_alpha, float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, "
        "float region_weight, bool log_loss, bool squared_pred, bool min_intersection, bool elem, float focal_alpha, "
        "float focal_gamma, int focal_form, float elem_weight, bool elem_mean, float label_smoothing, "
        "bool weighted_mean, "
        "bool from_logits, bool clamped_log, int? ignore_index, str reduction, bool check_target) -> (Tensor, Tensor)"
    ),
    "binary_loss_backward": (
        "(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, bool per_sample, bool per_channel, "
        "bool region, bool squared_pred, bool min_intersection, bool elem, float focal_alpha, float focal_gamma, "
        "int focal_form, bool from_logits, bool clamped_log, int? ignore_index) -> Tensor"
    ),
    "binary_focal_map": (
        "(Tensor input, Tensor target, float alpha, float gamma, int focal_form, bool from_logits, "
        "bool clamped_log, int? ignore_index, bool check_target) -> Tensor"
    ),
    "binary_focal_map_backward": (
        "(Tensor grad_map, Tensor input, Tensor target, float alpha, float gamma, int focal_form, "
        "bool from_logits, bool clamped_log, int? ignore_index) -> Tensor"
    ),
}

MULTICLASS_SCHEMAS = {
    "multiclass_loss": (
        "(Tensor input, Tensor target, Tensor? weight, Tensor? class_weight, bool per_sample, "
        "bool region, float tv_alpha, float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, "
        "float region_weight, bool log_loss, bool squared_pred, bool min_intersection, bool elem, float focal_alpha, "
        "float focal_gamma, int focal_form, float elem_weight, bool elem_mean, float label_smoothing, "
        "bool weighted_mean, "
        "bool from_logits, bool clamped_log, int? ignore_index, bool include_background, bool exclude_empty, "
        "str reduction, bool check_target) -> (Tensor, Tensor)"
    ),
    "multiclass_loss_backward": (
        "(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, Tensor? class_weight, bool per_sample, "
        "bool region, bool squared_pred, bool elem, float focal_alpha, float focal_gamma, float label_smoothing, "
        "bool from_logits, bool clamped_log, int? ignore_index) -> Tensor"
    ),
    "multiclass_focal_map": (
        "(Tensor input, Tensor target, Tensor? class_weight, float alpha, float gamma, bool from_logits, "
        "bool clamped_log, int? ignore_index, bool check_target) -> Tensor"
    ),
    "multiclass_focal_map_backward": (
        "(Tensor grad_map, Tensor input, Tensor target, Tensor? class_weight, float alpha, float gamma, "
        "bool from_logits, bool clamped_log, int? ignore_index) -> Tensor"
    ),
}

FAMILIES = ("binary", "multiclass")

# The forward in two halves, for statistics synchronised across processes
# (ops/synced.py): per-group sums, then the formula from (all-reduced) sums.
SYNC_SCHEMAS = {
    "binary_stats": (
        "(Tensor input, Tensor target, bool per_sample, bool per_channel, bool region, bool squared_pred, "
        "bool min_intersection, bool elem, float focal_alpha, float focal_gamma, int focal_form, bool from_logits, "
        "bool clamped_log, int? ignore_index, bool check_target) -> Tensor"
    ),
    "binary_finalize": (
        "(Tensor sums, Tensor? weight, int num_channels, bool region, float tv_alpha, "
        "float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, float region_weight, bool log_loss, "
        "bool elem, float elem_weight, bool elem_mean, str reduction, int[] loss_shape) -> (Tensor, Tensor)"
    ),
    "multiclass_stats": (
        "(Tensor input, Tensor target, Tensor? class_weight, bool per_sample, bool region, bool squared_pred, "
        "bool elem, float focal_alpha, float focal_gamma, float label_smoothing, bool weighted_mean, "
        "bool from_logits, bool clamped_log, int? ignore_index, bool check_target) -> (Tensor, Tensor)"
    ),
    "multiclass_finalize": (
        "(Tensor class_sums, Tensor elem_sums, Tensor? weight, int num_classes, bool per_sample, bool region, "
        "float tv_alpha, float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, float region_weight, "
        "bool log_loss, bool elem, float elem_weight, bool elem_mean, bool include_background, bool exclude_empty, "
        "str reduction, int[] loss_shape) -> (Tensor, Tensor)"
    ),
}
# The Lovász losses' primitives (assembled around torch.sort by ops/lovasz.py): errors and truth values per
# row, the scan over the sorted rows (loss; gradient scattered back to the original positions), and the
# chain rule from the errors to the input.
LOVASZ_SCHEMAS = {
    "binary_lovasz_errors": (
        "(Tensor input, Tensor target, bool per_sample, int? ignore_index, bool check_target) -> (Tensor, Tensor)"
    ),
    "multiclass_lovasz_errors": (
        "(Tensor input, Tensor target, bool per_sample, bool from_logits, int? ignore_index, bool check_target) "
        "-> (Tensor, Tensor)"
    ),
    "lovasz_rows": "(Tensor sorted_errors, Tensor truth, Tensor order) -> (Tensor, Tensor)",
    "lovasz_rows_backward": "(Tensor grad_loss, Tensor truth, Tensor order) -> Tensor",
    "binary_lovasz_chain": (
        "(Tensor grad_errors, Tensor input, Tensor target, bool per_sample, int? ignore_index) -> Tensor"
    ),
    "multiclass_lovasz_chain": (
        "(Tensor grad_errors, Tensor input, Tensor target, bool per_sample, bool from_logits, int? ignore_index) "
        "-> Tensor"
    ),
}
SCHEMAS = {**BINARY_SCHEMAS, **MULTICLASS_SCHEMAS}
ALL_SCHEMAS = {**SCHEMAS, **SYNC_SCHEMAS, **LOVASZ_SCHEMAS}


def argument_names(schema: str) -> list[str]:
    """The argument names of a schema string "(Type name, ...) -> ..."."""
    arguments = schema[schema.index("(") + 1 : schema.index(") ->")]
    return [argument.split()[-1] for argument in arguments.split(",")]


# Each op's arguments that are LossSpec fields, in schema order.
SPEC_ARGUMENTS = {
    op: [name for name in argument_names(schema) if name in LossSpec._fields] for op, schema in ALL_SCHEMAS.items()
}
# The loss ops take the whole spec, in LossSpec's field order, between these arguments: the losses
# (functional.py) call them by position, op(*leading, *spec, *trailing), as parsing 30 keywords
# costs more per call than the kernels at small sizes.
LOSS_OP_LAYOUT = {
    "binary_loss": (("input", "target", "weight", "per_sample", "per_channel"),
                    ("ignore_index", "reduction", "check_target")),
    "multiclass_loss": (("input", "target", "weight", "class_weight", "per_sample"),
                        ("ignore_index", "include_background", "exclude_empty", "reduction", "check_target")),
}
for _op, (_leading, _trailing) in LOSS_OP_LAYOUT.items():
    if argument_names(ALL_SCHEMAS[_op]) != [*_leading, *LossSpec._fields, *_trailing]:
        raise ImportError(
            f"the {_op} schema's arguments {argument_names(ALL_SCHEMAS[_op])} are not {list(_leading)}, LossSpec's "
            f"fields {list(LossSpec._fields)}, then {list(_trailing)}: make them match (the losses pass them by "
            "position)"
        )


def spec_arguments(op: str, spec: LossSpec) -> dict:
    """The fields of ``spec`` that ``op`` takes, by argument name."""
    return {name: getattr(spec, name) for name in SPEC_ARGUMENTS[op]}


def accumulation_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


# Fake (meta) kernels: what each op returns, from the arguments it needs by name.
def _fake_binary_loss(input, per_sample, per_channel, reduction, **_):
    layout = group_layout(input.shape, per_sample, per_channel)
    dtype = accumulation_dtype(input)
    loss = input.new_empty(layout.shape if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty((layout.num_groups, 3), dtype=dtype)


def _fake_binary_gradient(input, target, per_sample=False, per_channel=False, **_):
    return torch.empty_like(input, memory_format=binary_operands(input, target, per_sample, per_channel)[2])


def _fake_multiclass_loss(input, per_sample, reduction, **_):
    batch, classes = input.shape[0], input.shape[1]
    dtype = accumulation_dtype(input)
    loss = input.new_empty(((batch, classes) if per_sample else (classes,)) if reduction == "none" else (), dtype=dtype)
    return loss, input.new_empty((batch * classes if per_sample else classes, 3), dtype=dtype)


def _fake_multiclass_gradient(input, target, **_):
    return torch.empty_like(input, memory_format=multiclass_operands(input, target).format)


def _fake_multiclass_focal_map(input, **_):
    return input.new_empty(input.shape[:1] + input.shape[2:])  # per pixel


def _fake_binary_stats(input, per_sample, per_channel, **_):
    groups = group_layout(input.shape, per_sample, per_channel).num_groups
    return input.new_empty((groups, 5), dtype=accumulation_dtype(input))  # [I, P, T, E, elements counted]


def _fake_multiclass_stats(input, per_sample, **_):
    groups = input.shape[0] * input.shape[1] if per_sample else input.shape[1]
    dtype = accumulation_dtype(input)
    return input.new_empty((groups, 3), dtype=dtype), input.new_empty((2,), dtype=dtype)  # [E, valid pixels]


def _fake_finalize(sums, reduction, loss_shape):
    return sums.new_empty(tuple(loss_shape) if reduction == "none" else ()), sums.new_empty((sums.shape[0], 3))


def _fake_lovasz_errors(input, per_sample, multiclass: bool):
    groups = input.shape[0] if per_sample else 1
    rows = (groups, input.shape[1]) if multiclass else (groups,)
    length = (input.numel() // input.shape[1] if multiclass else input.numel()) // groups
    shape = rows + (length,)
    dtype = accumulation_dtype(input)
    return input.new_empty(shape, dtype=dtype), input.new_empty(shape, dtype=dtype)


def _fake_lovasz_rows(sorted_errors, **_):
    return sorted_errors.new_empty(sorted_errors.shape[:-1]), sorted_errors.new_empty(sorted_errors.shape[:-1])


FAKES = {
    "binary_loss": _fake_binary_loss,
    "binary_loss_backward": _fake_binary_gradient,
    "binary_focal_map": _fake_binary_gradient,  # the map has the input's shape and layout
    "binary_focal_map_backward": _fake_binary_gradient,
    "multiclass_loss": _fake_multiclass_loss,
    "multiclass_loss_backward": _fake_multiclass_gradient,
    "multiclass_focal_map": _fake_multiclass_focal_map,
    "multiclass_focal_map_backward": _fake_multiclass_gradient,
    # The forward's halves (sync=True, Generalized Dice): traceable by torch.compile too.
    "binary_stats": _fake_binary_stats,
    "binary_finalize": lambda sums, reduction, loss_shape, **_: _fake_finalize(sums, reduction, loss_shape),
    "multiclass_stats": _fake_multiclass_stats,
    "multiclass_finalize": lambda class_sums, reduction, loss_shape, **_: _fake_finalize(class_sums, reduction,
                                                                                          loss_shape),
    "binary_lovasz_errors": lambda input, per_sample, **_: _fake_lovasz_errors(input, per_sample, False),
    "multiclass_lovasz_errors": lambda input, per_sample, **_: _fake_lovasz_errors(input, per_sample, True),
    "lovasz_rows": _fake_lovasz_rows,
    "lovasz_rows_backward": lambda truth, **_: torch.empty_like(truth),
    "binary_lovasz_chain": lambda input, **_: torch.empty_like(input, memory_format=torch.contiguous_format),
    "multiclass_lovasz_chain": lambda input, **_: torch.empty_like(input, memory_format=torch.contiguous_format),
}


def _by_name(op: str, fake):
    """``fake`` called with the op's arguments as keywords (the dispatcher passes them by position)."""
    names = argument_names(ALL_SCHEMAS[op])
    return lambda *args, **kwargs: fake(**dict(zip(names, args)), **kwargs)


def register_fake_and_autograd(namespace: str) -> None:
    """Fake kernels and autograd for the loss ops of ``namespace`` (both families)."""
    ops = getattr(torch.ops, namespace)
    for name in ALL_SCHEMAS:
        if hasattr(ops, name):  # an extension built before an op existed lacks it (tests/test_cpp_extension.py)
            torch.library.register_fake(f"{namespace}::{name}", _by_name(name, FAKES[name]))
    for family in FAMILIES:
        _register_autograd(namespace, f"{family}_loss", saves_output=True)
        _register_autograd(namespace, f"{family}_focal_map", saves_output=False)


# The ops with a backward formula (register_fake_and_autograd).
AUTOGRAD_OPS = tuple(f"{family}_{kind}" for family in FAMILIES for kind in ("loss", "focal_map"))


# Autograd kernels, registered from Python (torch.library.Library.impl on the Autograd key).
#
# They do what torch.library.register_autograd's kernel does, less its per-call cost: that kernel
# rebuilds the forward's arguments from the schema on every call (``fill_defaults``, which reads
# ``schema.arguments`` once per argument: ~0.4 ms a call for the loss ops' 30 arguments). These
# schemas have no defaults and no keyword-only arguments, so the dispatcher passes every argument
# by position, and where each one is is known here once.

_AUTOGRAD_LIBRARIES = []  # a kernel lives as long as its library
_BELOW_AUTOGRAD = torch._C._after_autograd_keyset


def _positional_schema(op) -> list:
    arguments = op._schema.arguments
    if any(arg.kwarg_only or arg.has_default_value() for arg in arguments):
        raise ImportError(f"{op}: the autograd kernels expect no defaults and no keyword-only arguments, got "
                          f"{op._schema}")
    return arguments


def _tensor_positions(arguments) -> list[int]:
    return [at for at, arg in enumerate(arguments) if str(arg.type) in ("Tensor", "Optional[Tensor]")]


def _redispatch_below_autograd(op, keyset, args):
    with torch._C._AutoDispatchBelowAutograd():
        return op.redispatch(keyset & _BELOW_AUTOGRAD, *args)


def _function(op, forward, backward):
    """An autograd.Function of ``forward`` and ``backward``, named as torch.library names its own (its
    node, a tensor's grad_fn: GeneratedBackwardFor_<namespace>_<op>_defaultBackward)."""
    name = f"GeneratedBackwardFor_{op._namespace}_{op._opname}_{op._overloadname}"
    methods = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    return type(name, (torch.autograd.Function,), methods)


def _register_autograd_kernel(namespace: str, name: str, op, function, tensors_at) -> None:
    """Register ``function`` (an autograd.Function taking (keyset, args, *the tensor arguments)) as
    ``op``'s autograd, for calls that need a graph. Only the tensor arguments go through
    Function.apply (it handles each of its arguments): the whole argument tuple travels as one object."""

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return function.apply(keyset, args, *[args[at] for at in tensors_at])
        return _redispatch_below_autograd(op, keyset, args)

    library = torch.library.Library(namespace, "IMPL")
    library.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    _AUTOGRAD_LIBRARIES.append(library)


def _register_autograd(namespace: str, forward: str, saves_output: bool) -> None:
    """Autograd of ``forward`` through its ``<forward>_backward`` op, which takes the
    upstream gradient, input, target, (the forward's coefficients output,) then
    forward arguments by name: nothing full-size is saved beyond input and target."""
    ops = getattr(torch.ops, namespace)
    forward_op = getattr(ops, forward).default
    backward_op = getattr(ops, f"{forward}_backward").default
    arguments = _positional_schema(forward_op)
    forward_names = [arg.name for arg in arguments]
    backward_names = [arg.name for arg in backward_op._schema.arguments]
    # the forward's arguments the backward op takes after upstream, input, target (, coef)
    passed = [forward_names.index(name) for name in backward_names[4 if saves_output else 3 :]]
    input_at, target_at = forward_names.index("input"), forward_names.index("target")
    tensors_at = _tensor_positions(arguments)
    input_grad_at = 2 + tensors_at.index(input_at)  # apply's arguments: keyset, args, *tensors
    no_grads = (None,) * (2 + len(tensors_at))

    def forward_with_context(ctx, keyset, args, *_tensors):
        output = _redispatch_below_autograd(forward_op, keyset, args)
        saved = (args[input_at], args[target_at]) + ((output[1],) if saves_output else ())
        ctx.save_for_backward(*saved)  # the caller's own tensors and a (groups, 3) tensor
        ctx.passed = [args[at] for at in passed]
        ctx.set_materialize_grads(False)  # no zero gradient made for the coefficients output
        return output

    def backward(ctx, upstream, *_unused_output_grads):
        grads = list(no_grads)
        if upstream is not None and ctx.needs_input_grad[input_grad_at]:
            grads[input_grad_at] = backward_op(upstream, *ctx.saved_tensors, *ctx.passed)
        return tuple(grads)

    _register_autograd_kernel(namespace, forward, forward_op, _function(forward_op, forward_with_context, backward),
                              tensors_at)


def register_no_backward(namespace: str, name: str) -> None:
    """Autograd for an op without a backward formula (a backward op, the forward's halves, the
    Lovász primitives): a gradient that reaches it raises, as torch.library.custom_op's kernel does
    (the C++ ops have torch's autograd fallback instead, which warns and passes no gradient)."""
    op = getattr(getattr(torch.ops, namespace), name).default
    tensors_at = _tensor_positions(_positional_schema(op))
    message = (f"Trying to backward through {op} but no autograd formula was registered. Please use "
               "register_autograd to add one.")

    def forward(ctx, keyset, args, *_tensors):
        return _redispatch_below_autograd(op, keyset, args)

    def backward(ctx, *_grads):
        raise RuntimeError(message)

    _register_autograd_kernel(namespace, name, op, _function(op, forward, backward), tensors_at)
