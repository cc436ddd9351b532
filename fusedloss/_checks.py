"""Argument checks shared by every public loss: each error names the argument
and says what was expected."""

from __future__ import annotations

import math
import os

import torch

INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TARGET_DTYPES = INPUT_DTYPES + (torch.bool, torch.uint8)
REDUCTIONS = ("mean", "sum", "none")

# ---- target values ----
# A binary / multi-label target must hold probabilities in [0, 1] (a 0/255 mask read
# as-is gives a Dice loss near -1); a class map, indices in [0, C) or ignore_index
# (F.cross_entropy's rule). The fused kernels check this in their statistics pass
# (a flag per program, no extra read); the reference checks here. On the CPU a
# violation is a ValueError naming a value; on a GPU it is a device-side assert
# (torch._assert_async, as F.cross_entropy's), so no host sync. Off with
# FUSEDLOSS_CHECK_TARGETS=0 (read at import; ``fusedloss._checks.CHECK_TARGETS``), which
# also skips the check of weight values (>= 0, finite).
CHECK_TARGETS = os.environ.get("FUSEDLOSS_CHECK_TARGETS", "1") != "0"

# The device-side messages, as the CUDA C++ kernels' (csrc/target_check.h).
_SKIP = "; set FUSEDLOSS_CHECK_TARGETS=0 to skip this check"
UNIT_INTERVAL_DEVICE_MESSAGE = (
    "fusedloss: target holds a value outside [0, 1] (binary and multi-label targets are probabilities)" + _SKIP
)
CLASS_INDEX_DEVICE_MESSAGE = "fusedloss: target holds a class index outside [0, C) that is not ignore_index" + _SKIP


def _names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


# The dtype errors' messages, written once (not formatted on every call).
_TARGET_DTYPE_MESSAGE = f"target must have dtype {_names(TARGET_DTYPES)}"


def input_and_target(input, target) -> torch.Tensor:
    """Check the pair; return the target viewed with input's shape (an (N, *S)
    target of an (N, 1, *S) input gains its channel dim, without a copy)."""
    _pair(input, target, TARGET_DTYPES, _TARGET_DTYPE_MESSAGE)
    if target.shape != input.shape:
        squeezed_channel = input.dim() >= 2 and input.shape[1] == 1
        if squeezed_channel and target.shape == input.shape[:1] + input.shape[2:]:
            return target.unsqueeze(1)
        raise ValueError(
            f"target must have input's shape {tuple(input.shape)}"
            + (f" or {tuple(input.shape[:1] + input.shape[2:])}" if squeezed_channel else "")
            + f", got {tuple(target.shape)}"
        )
    return target


def _pair(input, target, target_dtypes, target_dtype_message: str) -> None:
    """What every loss asks of its logits and target, whatever the mode."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of logits, got {type(input).__name__}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if input.dtype not in INPUT_DTYPES:
        raise TypeError(f"input must be a floating tensor of logits ({_names(INPUT_DTYPES)}), got {input.dtype}")
    if target.dtype not in target_dtypes:
        raise TypeError(f"{target_dtype_message}, got {target.dtype}")
    if target.device != input.device:
        raise ValueError(f"target is on {target.device} but input is on {input.device}; they must share a device")
    if input.dim() == 0:
        raise ValueError(
            "input must have at least one dim (a batch of logits), got a 0-d tensor; "
            "use input.reshape(1) for a single logit"
        )
    if input.numel() == 0:
        raise ValueError(f"input must not be empty, got shape {tuple(input.shape)}")


def groups(input: torch.Tensor, per_sample: bool, per_channel: bool, weight) -> None:
    if per_channel and input.dim() < 2:
        raise ValueError(
            f"per_channel=True needs input of shape (N, C, ...) with channel dim 1, got a {input.dim()}-D input"
        )
    if per_sample and input.dim() < 1:
        raise ValueError("per_sample=True needs input with a batch dim 0, got a 0-D input")
    if isinstance(weight, torch.Tensor) and not per_channel:
        raise ValueError("weight is per channel: it needs per_channel=True")
    _dim1_weight(input, weight, "channel")


def _dim1_weight(input: torch.Tensor, weight, unit: str, name: str = "weight") -> None:
    """A weight per entry of input's dim 1 (per channel, or per class), the argument ``name``."""
    if weight is None:
        return
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor of per-{unit} weights or None, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {weight.dtype}")
    if weight.shape != (input.shape[1],):
        raise ValueError(
            f"{name} must have shape ({input.shape[1]},), one per {unit} of input, got {tuple(weight.shape)}"
        )
    if weight.device != input.device:
        raise ValueError(f"{name} is on {weight.device} but input is on {input.device}")
    if CHECK_TARGETS:
        valid = (weight >= 0) & (weight < math.inf)  # NaN fails both
        _enforce(valid, lambda: f"{name} must hold finite numbers >= 0, got {weight[~valid][0].item()}",
                 f"fusedloss: {name} holds a negative, NaN or infinite value" + _SKIP)


def reduction(value: str) -> None:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")


def non_negative(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


MODES = ("binary", "multilabel", "multiclass")
CLASS_MAP_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)


def mode(value: str) -> bool:
    """Check ``mode``; True for 'multiclass'."""
    if value not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {value!r}")
    return value == "multiclass"


def activation(value, multiclass: bool) -> str:
    """Check ``activation`` against the mode; return it resolved (None: the mode's own)."""
    own = "softmax" if multiclass else "sigmoid"
    if value is None:
        return own
    if value not in (own, "none"):
        mode_name = "'multiclass'" if multiclass else "'binary' or 'multilabel'"
        raise ValueError(f"activation must be None, {own!r} or 'none' with mode={mode_name}, got {value!r}")
    return value


def smoothing(smooth, smooth_nr, smooth_dr, default: float = 1.0) -> tuple:
    """(smooth_nr, smooth_dr): ``smooth`` is both; each defaults to ``default``."""
    if smooth is not None and (smooth_nr is not None or smooth_dr is not None):
        raise ValueError(
            "smooth sets both smooth_nr and smooth_dr: pass either smooth or smooth_nr / smooth_dr, not both"
        )
    if smooth is not None:
        non_negative(smooth=smooth)
        return smooth, smooth
    smooth_nr = default if smooth_nr is None else smooth_nr
    smooth_dr = default if smooth_dr is None else smooth_dr
    non_negative(smooth_nr=smooth_nr, smooth_dr=smooth_dr)
    return smooth_nr, smooth_dr


def binary_only_defaults(include_background, exclude_empty) -> None:
    if not include_background or exclude_empty:
        raise ValueError("include_background and exclude_empty are options of mode='multiclass'")


def binary_ignore_index(value, target_dtype: torch.dtype) -> None:
    """A binary / multi-label ignore_index: an int the target can hold that is no label (0, 1)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"ignore_index must be an int or None, got {value!r}")
    if value in (0, 1):
        raise ValueError(
            f"ignore_index={value} is a label of a binary / multi-label target; use a value outside [0, 1], "
            "e.g. 255 (uint8 masks) or -1 (float masks)"
        )
    if target_dtype == torch.bool:
        raise ValueError("a bool target holds only 0 and 1: it cannot mark ignored elements (ignore_index)")
    if not target_dtype.is_floating_point:
        info = torch.iinfo(target_dtype)
        if not info.min <= value <= info.max:
            raise ValueError(
                f"ignore_index={value} cannot occur in a {str(target_dtype).replace('torch.', '')} target "
                f"(values {info.min}..{info.max}); e.g. 255 for uint8"
            )


DENSE_TARGET_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool, torch.uint8)


_DENSE_TARGET_DTYPE_MESSAGE = (
    f"a target of input's shape holds per-class values: its dtype must be {_names(DENSE_TARGET_DTYPES)}"
)
_CLASS_MAP_DTYPE_MESSAGE = (
    f"target must hold class indices as {_names(CLASS_MAP_DTYPES)} in mode='multiclass' (or per-class "
    f"values of input's shape)"
)


def input_and_class_map(input, target, ignore_index) -> torch.Tensor:
    """Check a multi-class pair: logits (N, C, *spatial), and a target of class indices
    (N, *spatial) or (N, 1, *spatial) (returned as (N, *spatial), a view), or of per-class
    values with input's shape (a dense target: one-hot or soft, returned as it is)."""
    if input.dim() < 2 or input.shape[1] < 2:
        raise ValueError(
            f"input must have shape (N, C, ...) with C >= 2 classes in mode='multiclass', got {tuple(input.shape)}"
        )
    if isinstance(target, torch.Tensor) and target.shape == input.shape:
        _pair(input, target, DENSE_TARGET_DTYPES, _DENSE_TARGET_DTYPE_MESSAGE)
        if ignore_index is not None:
            raise ValueError(
                "ignore_index marks pixels of a class-map target; a target of per-class values (input's shape) "
                "has no class index to ignore: leave ignore_index=None (or zero those pixels' targets)"
            )
        return target
    _pair(input, target, CLASS_MAP_DTYPES, _CLASS_MAP_DTYPE_MESSAGE)
    expected = input.shape[:1] + input.shape[2:]
    if target.shape != expected:
        if target.shape == input.shape[:1] + (1,) + input.shape[2:]:
            target = target.squeeze(1)
        else:
            raise ValueError(
                f"target must have shape {tuple(expected)} (or with a channel dim of 1) for input "
                f"{tuple(input.shape)}, got {tuple(target.shape)}"
            )
    if ignore_index is not None:
        _ignore_index(ignore_index, input.shape[1], target.dtype)
    return target


def _ignore_index(value, classes: int, target_dtype: torch.dtype) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"ignore_index must be an int or None, got {value!r}")
    if 0 <= value < classes:
        raise ValueError(
            f"ignore_index={value} is a class index (in [0, {classes})): its pixels would be "
            "both a class and ignored; use a value outside [0, C), e.g. -100 or 255"
        )
    info = torch.iinfo(target_dtype)
    if not info.min <= value <= info.max:
        raise ValueError(
            f"ignore_index={value} cannot occur in a {str(target_dtype).replace('torch.', '')} "
            f"target (values {info.min}..{info.max}); use one the target can hold, e.g. 255 "
            "for uint8"
        )


def class_weight(input: torch.Tensor, weight, name: str = "weight") -> None:
    _dim1_weight(input, weight, "class", name)


def per_class(input: torch.Tensor, values, name: str):
    """A per-class option given as a sequence or a tensor: a (C,) tensor on input's device (in
    the accumulation dtype when it is not a tensor yet), checked; None stays None."""
    if values is None or not isinstance(input, torch.Tensor):  # a bad input: the pair check says so
        return values
    if not isinstance(values, torch.Tensor):
        dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        values = torch.as_tensor(values, dtype=dtype, device=input.device)
    class_weight(input, values, name)
    return values


def unit_interval(**values) -> None:
    for name, value in values.items():
        non_negative(**{name: value})
        if value > 1:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def sync_group(sync: bool, process_group, per_sample: bool = False):
    """The process group whose statistics are summed (sync=True), or None."""
    if not sync:
        if process_group is not None:
            raise ValueError("process_group is used with sync=True only")
        return None
    if per_sample:
        raise ValueError(
            "sync=True sums each group's statistics over the ranks; per_sample groups are whole on "
            "their own rank already: use per_sample=False, or sync=False"
        )
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("sync=True needs torch.distributed initialised (torch.distributed.init_process_group)")
    return process_group if process_group is not None else torch.distributed.group.WORLD


# ---- target values (see CHECK_TARGETS) ----


def _bad_targets(target: torch.Tensor, classes, ignore_index) -> torch.Tensor | None:
    """Where ``target`` holds a value its loss does not define (None: it cannot).
    ``classes`` None: a binary / multi-label target (NaN is bad too)."""
    if classes is None:  # binary / multi-label, or a multi-class target of per-class values
        if target.dtype == torch.bool:
            return None
        bad = ~((target >= 0) & (target <= 1))
        return bad if ignore_index is None else bad & (target != ignore_index)
    bad = (target < 0) | (target >= classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    return bad


def target_error(target: torch.Tensor, classes=None, ignore_index=None) -> str:
    """The CPU error's message, naming a bad value (found on the error path only)."""
    value = target[_bad_targets(target, classes, ignore_index)].flatten()[0].item()
    if classes is None:
        return (
            f"target holds {value}, outside [0, 1]"
            + ("" if ignore_index is None else f" and not ignore_index={ignore_index!r}")
            + ": binary, multi-label and per-class targets are probabilities (a 0/255 mask needs target / 255 "
            "or target > 0, or ignore_index=255 for pixels to leave out)"
        )
    return f"target holds class index {value}, outside [0, {classes}) and not ignore_index={ignore_index!r}"


def _enforce(ok: torch.Tensor, message, device_message: str) -> None:
    """ok: a bool / int tensor, nonzero where all is well. CPU (eager): ValueError(message());
    on a GPU or under torch.compile: a device-side assert, no host sync."""
    if ok.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(ok.all()):
            raise ValueError(message())
    else:
        torch._assert_async(ok.all(), device_message)


def target_values(target: torch.Tensor, classes=None, ignore_index=None) -> None:
    """The reference backend's target check (the fused ones check in their kernels)."""
    if not CHECK_TARGETS:
        return
    bad = _bad_targets(target, classes, ignore_index)
    if bad is not None:
        _enforce(~bad, lambda: target_error(target, classes, ignore_index),
                 UNIT_INTERVAL_DEVICE_MESSAGE if classes is None else CLASS_INDEX_DEVICE_MESSAGE)


def kernel_target_flags(ok: torch.Tensor, target: torch.Tensor, classes=None, ignore_index=None) -> None:
    """Raise for a target a fused kernel flagged: ``ok`` holds 1 for each program whose
    target values were all valid, 0 for one that met a bad one."""
    _enforce(ok, lambda: target_error(target, classes, ignore_index),
             UNIT_INTERVAL_DEVICE_MESSAGE if classes is None else CLASS_INDEX_DEVICE_MESSAGE)
