"""Triton pieces shared by the loss families' kernels and launchers."""

import functools
import struct

import torch
import triton
import triton.language as tl
from triton import knobs

# The kernels are compiled for a GPU, not run by the interpreter (decided, as Triton decides it, when
# this module is imported): only then may they use PTX (the fast log2, the native bf16 conversion).
COMPILED = tl.constexpr(not knobs.runtime.interpret)


@triton.jit
def param(hi, lo, ACC: tl.constexpr):
    # Triton passes Python floats as fp32: the launcher splits each parameter
    # into an fp32 pair whose sum is exact enough for fp64 accumulation.
    return (tl.zeros([], ACC) + hi) + lo


@triton.jit
def focal_params(alpha_hi, alpha_lo, gamma_hi, gamma_lo, ACC: tl.constexpr):
    """The focal term's (alpha, gamma), as every kernel with an element term reads them."""
    return param(alpha_hi, alpha_lo, ACC), param(gamma_hi, gamma_lo, ACC)


@triton.jit
def finalize_params(tv_alpha_hi, tv_alpha_lo, tv_beta_hi, tv_beta_lo, smooth_nr_hi, smooth_nr_lo, smooth_dr_hi,
                    smooth_dr_lo, region_gamma_hi, region_gamma_lo, region_weight_hi, region_weight_lo, elem_weight_hi,
                    elem_weight_lo, ACC: tl.constexpr):
    """The loss formula's scalars (tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma,
    region_weight, elem_weight), as both finalize kernels read them."""
    return (param(tv_alpha_hi, tv_alpha_lo, ACC), param(tv_beta_hi, tv_beta_lo, ACC),
            param(smooth_nr_hi, smooth_nr_lo, ACC), param(smooth_dr_hi, smooth_dr_lo, ACC),
            param(region_gamma_hi, region_gamma_lo, ACC), param(region_weight_hi, region_weight_lo, ACC),
            param(elem_weight_hi, elem_weight_lo, ACC))


@triton.jit
def store_as(ptr, value, mask, BF16_BITS: tl.constexpr):
    # bf16 outputs are written as int16 bits rounded to nearest even. Compiled, by the GPU's own
    # conversion (cvt.rn.bf16.f32, one instruction; a NaN becomes the canonical 0x7FFF). In the
    # interpreter, whose bf16 store truncates, by integer rounding; NaN is written as a quiet NaN
    # there: rounding a NaN's bits (0x7FFFFFFF) would carry into the sign bit and store -0.0.
    if BF16_BITS:
        value = value.to(tl.float32)
        if COMPILED:
            bits = value.to(tl.bfloat16, fp_downcast_rounding="rtne").to(tl.int16, bitcast=True)
        else:
            wide = value.to(tl.uint32, bitcast=True)
            bits = tl.where(value != value, 0x7FC0, (wide + (((wide >> 16) & 1) + 0x7FFF)) >> 16).to(tl.int16)
        tl.store(ptr, bits, mask=mask)
    else:
        tl.store(ptr, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def store_vectors(start, lanes, out_ptr):
    """start + lanes, the offsets of a loop that loads and stores ``out_ptr``, their contiguity
    capped at one 128-bit store: the loads then take the store's layout. Triton widens a load to
    its widest neighbour (a uint8 target: 8 elements a thread) but a store to 128 bits at most
    (4 fp32), and converting between the two goes through shared memory with a barrier every trip.
    (The hint must be on an operation made here: on an argument it is lost.)"""
    return tl.max_contiguous(start + lanes, 128 // out_ptr.dtype.element_ty.primitive_bitwidth)


@triton.jit
def sum_rows(ptr, mask):
    """Row sums of a masked [rows, columns] load. The where() between load and sum
    keeps Triton <= 3.6 compiling: a sum fed straight by a load in a loop trips an
    assertion in its OptimizeThreadLocality pass (loopResult.hasOneUse())."""
    return tl.sum(tl.where(mask, tl.load(ptr, mask=mask), 0.0), axis=1)


@triton.jit
def count_rows(ptr, mask):
    """Row sums of a masked [rows, columns] load of element counts held as floats, added
    as integers: exact at any size (one rounding, where the caller converts the total)."""
    return tl.sum(tl.where(mask, tl.load(ptr, mask=mask), 0.0).to(tl.int64), axis=1)


@triton.jit
def log2(x):
    """log2 of an fp32 (or fp64) tensor. Compiled, fp32: the GPU's lg2.approx.f32 (one MUFU
    instruction; absolute error about 2**-22, enough for the powers it feeds) instead of
    tl.log2's libdevice routine (about 20 instructions); fp64 and the interpreter: tl.log2."""
    if COMPILED and x.dtype == tl.float32:
        return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        return tl.log2(x)


@triton.jit
def reciprocal(x):
    """1 / x for an x whose reciprocal is normal (a sigmoid's 1 + e in [1, 2]). Compiled, fp32:
    the GPU's rcp.approx.ftz.f32 (one MUFU instruction, within 1 ulp) instead of the division's
    six with their range checks; fp64 and the interpreter: 1 / x."""
    if COMPILED and x.dtype == tl.float32:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 1.0 / x


@triton.jit
def exp_neg_abs(x):
    """exp(-|x|) as one exp2 with the log2(e) scale folded into its argument's multiply."""
    return tl.exp2(tl.abs(x) * -1.4426950408889634)


@triton.jit
def _pow_or_zero(base, exponent, FAST_LOG2: tl.constexpr):
    # base**exponent for base >= 0 with 0**e = 0 for e > 0, 1 for e == 0; NaN stays NaN.
    zero = base <= 0.0
    safe = tl.where(zero, 1.0, base)
    if FAST_LOG2:
        powered = tl.exp2(exponent * log2(safe))
    else:
        powered = tl.exp2(exponent * tl.log2(safe))
    return tl.where(zero, tl.where(exponent == 0.0, 1.0, 0.0), powered)


@triton.jit
def pow_or_zero(base, exponent):
    """base**exponent per element (a focal modulator): with the fast log2 where compiled."""
    return _pow_or_zero(base, exponent, True)


@triton.jit
def region_terms(sum_i, sum_p, sum_t, tv_alpha, tv_beta, smooth_nr, smooth_dr, gamma, LOG_LOSS: tl.constexpr):
    """The region loss R of the Tversky index TI = (I + n) / (I + a*FP + b*FN + d),
    FP = P - I, FN = T - I (Dice and IoU are special cases), and dR/dI, dR/dP (T
    carries no gradient). R = 1 - TI (gamma = 1: negative when n > d), else
    max(1 - TI, 0)**gamma; LOG_LOSS: R = -log(max(TI, 1e-7)). NaN sums (a NaN
    logit) give NaN: the clamps propagate it (a GPU's max() would drop it)."""
    # FP and FN are not clamped at 0: with squared_pred, P = sum(p**2) may be below I (the
    # index's denominator is still the definition's, e.g. (P + T) / 2 for Dice).
    false_pos = sum_p - sum_i
    false_neg = sum_t - sum_i
    numer = sum_i + smooth_nr
    denom = sum_i + tv_alpha * false_pos + tv_beta * false_neg + smooth_dr
    # smooth_dr = 0 with nothing predicted and nothing to find: 0/0, scored as a perfect
    # match. A NaN denom is not undefined: NaN propagates.
    undefined = denom <= 0.0
    denom = tl.where(undefined, 1.0, denom)
    ratio = numer / denom
    if LOG_LOSS:
        clamped = tl.maximum(ratio, 1e-7, propagate_nan=tl.PropagateNan.ALL)
        region = tl.where(undefined, 0.0, -tl.log(clamped))
        # dR/d(1 - TI) = 1 / TI above the clamp, 0 on it.
        dregion = tl.where(ratio > 1e-7, 1.0 / clamped, 0.0)
    else:
        one_minus = 1.0 - ratio
        tversky = tl.where(undefined, 0.0, tl.maximum(one_minus, 0.0, propagate_nan=tl.PropagateNan.ALL))
        region = tl.where(gamma == 1.0, tl.where(undefined, 0.0, one_minus), _pow_or_zero(tversky, gamma, False))
        dregion = tl.where(
            gamma == 1.0, 1.0, tl.where(tversky > 0.0, gamma * region / tl.where(tversky > 0.0, tversky, 1.0), 0.0)
        )
    dregion = tl.where(undefined, 0.0, dregion)
    # d(1 - TI)/dI = -(1 - TI * (1 - a - b)) / denom, d(1 - TI)/dP = TI * a / denom:
    # written with the ratio, so a tiny denom does not overflow denom**2.
    dtv_di = -(1.0 - ratio * (1.0 - tv_alpha - tv_beta)) / denom
    dtv_dp = ratio * tv_alpha / denom
    return region, dregion * dtv_di, dregion * dtv_dp


# ----------------------------------------------------------------------------
# Launcher helpers
# ----------------------------------------------------------------------------


def cdiv(a: int, b: int) -> int:
    # Host-side integer maths in plain Python: triton.cdiv and triton.next_power_of_2 are
    # constexpr-function wrappers, a few microseconds a call on a launch path that makes ten.
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (0 for n = 0, as triton.next_power_of_2)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def split(value: float):
    """Python floats reach Triton as fp32: pass (hi, lo) with hi + lo == value
    to fp64 precision (see _param)."""
    hi = struct.unpack("f", struct.pack("f", value))[0]
    return hi, value - hi


def acc_dtypes(x: torch.Tensor):
    if x.dtype == torch.float64:
        return torch.float64, tl.float64
    return torch.float32, tl.float32


REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}  # the finalize kernels' REDUCTION


def ignore_args(ignore_index):
    """(ignore_index, HAS_IGNORE) as the kernels take them: a placeholder 0 when None."""
    return (0, False) if ignore_index is None else (ignore_index, True)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sm_count(device: torch.device) -> int:
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


MAX_PROGRAMS = 2**31 - 1  # a CUDA grid's x dimension (the interpreter has no limit; checked everywhere alike)


def check_programs(programs: int, rows: int, what: str) -> None:
    """Every row (sample) gets a program of its own: refuse more than a grid holds
    rather than launch a grid the driver rejects."""
    if programs > MAX_PROGRAMS:
        raise ValueError(
            f"the Triton kernels need a program per {what} at least: {rows} {what}s need "
            f"{programs} programs, more than a CUDA grid holds ({MAX_PROGRAMS}); "
            f"use backend='reference', or fewer, longer {what}s"
        )


def target_flags(programs: int, device: torch.device, check_target: bool) -> torch.Tensor:
    """Where each program writes 1 if its target values were all valid, else 0
    (``_checks.kernel_target_flags`` reads them); a placeholder when unchecked."""
    return torch.empty(programs if check_target else 1, dtype=torch.int32, device=device)


def writable(out: torch.Tensor) -> torch.Tensor:
    return out.view(torch.int16) if out.dtype == torch.bfloat16 else out


def on_input_device(launcher):
    """Triton launches on the current CUDA device: make it the input's."""

    @functools.wraps(launcher)
    def launch(*args):
        input = next(arg for arg in args if isinstance(arg, torch.Tensor) and arg.dim() > 0)
        if input.device.type != "cuda":
            return launcher(*args)
        with torch.cuda.device(input.device):
            return launcher(*args)

    return launch
