"""Triton kernels for the binary family: binary and multi-label losses, p = sigmoid(x)
(or p = x for probability inputs, FROM_LOGITS false).

Every loss of the family is one point in a single parameter space (see
``fusedloss/_spec.py``): a *region* term, the focal-Tversky loss of the
per-group sums I = sum(p*t), P = sum(p), T = sum(t), plus an *element* term,
the sum of per-element focal losses (BCE is focal with gamma=0, no alpha).

Three passes, no float atomics, so results are bitwise reproducible:
  1. ``_stats_kernel``: one read of input and target; each program writes the
     partial sums [I, P, T, E, count] of its chunk of one row (count: the
     elements not ignored).
  2. ``_finalize_kernel``: one program combines the partials of each group in
     a fixed order, applies the loss formula and the reduction, and writes the
     loss and the per-group backward coefficients [dL/dI, dL/dP, dL/dE].
  3. ``_backward_kernel``: re-reads input and target, recomputes the sigmoid
     and writes dL/dx = (cI*t + cP) * dp/dx + cE * dE/dx (squared_pred: cP * 2p;
     min_intersection: cI * dI/dp, the step [p < t], 1/2 at p == t, for cI*t).

``min_intersection`` (MIN_INTERSECTION): I = sum(min(p, t)) instead of sum(p*t), smp's and
MONAI's soft_label intersection (the same for hard targets); not with squared_pred.
``focal_form`` (FOCAL_FORM, logits only, gamma != 0; gamma = 0 is BCE in every form): the
focal factor f for soft targets (the same for hard ones) is Lin et al.'s (1 - p_t)**gamma (0),
smp's (1 - exp(-BCE))**gamma (1) or MONAI's sigmoid(-x (2t - 1))**gamma (2).
``_focal_map_kernel`` is the element-wise forward of reduction='none'.

With ``ignore_index`` (HAS_IGNORE) an element whose target equals it (compared in
the accumulation dtype) counts in no sum, gets gradient 0 and a focal map 0,
whatever its input holds (NaN included), and is exempt from the target check.

The tensor is seen as ``rows`` contiguous rows of ``row_len`` elements; row r
belongs to group ``r % num_groups`` (``_spec.group_layout``). ``LaunchPlan`` cuts
rows into chunks of ``steps`` blocks, one program per chunk.
"""

import functools

import torch
import triton
import triton.language as tl

from .._checks import kernel_target_flags
from .._spec import GroupLayout, binary_operands, check_focal_form, check_min_intersection, group_layout
from .triton_common import (REDUCTION_CODE, acc_dtypes, cdiv, check_programs, count_rows, exp_neg_abs,
                            finalize_params, focal_params, ignore_args, log2, next_power_of_2, on_input_device,
                            reciprocal, region_terms, sm_count, split, store_as, store_vectors, sum_rows,
                            target_flags, writable)


@triton.jit
def _log1p(z):
    # log(1+z) with full relative accuracy for tiny z (Goldberg's trick):
    # tl has no log1p that works in the interpreter.
    w = 1.0 + z
    exact = w == 1.0
    return tl.where(exact, z, tl.log(w) * (z / tl.where(exact, 1.0, w - 1.0)))


@triton.jit
def _log1p_unit(z):
    """log(1 + z) for z in [0, 1] (z = exp(-|x|)) to within 2 ulp, without a logarithm in fp32:
    2 atanh(s) = h (1 + u/3 + u**2/5 + ...), h = 2z / (2 + z) = 2s, u = s**2 <= 1/9, summed to
    u**6 (the rest is below 2e-8 relative): a reciprocal and seven multiply-adds where tl.log is a
    libdevice routine of about twenty instructions on a GPU. h keeps a subnormal z exact.
    fp64: _log1p (the series would need twice the terms)."""
    if z.dtype == tl.float64:
        result = _log1p(z)
    else:
        h = (2.0 * z) * reciprocal(2.0 + z)
        u = 0.25 * h * h
        series = 0.07692307692307693 * u + 0.09090909090909091  # 1/13, 1/11
        series = series * u + 0.1111111111111111
        series = series * u + 0.14285714285714285
        series = series * u + 0.2
        series = series * u + 0.3333333333333333
        result = h + h * (series * u)
    return result


@triton.jit
def _sigmoid_parts(x):
    """p = sigmoid(x), q = 1 - p (both accurate in the tails), and
    softplus(-|x|) = log(1 + exp(-|x|)), from one exp."""
    e = exp_neg_abs(x)
    big = reciprocal(1.0 + e)
    small = e * big
    pos = x >= 0
    p = tl.where(pos, big, small)
    q = tl.where(pos, small, big)
    return p, q, _log1p_unit(e)


@triton.jit
def _logit_bce(x, t, softplus_neg_abs):
    """BCE with logits, max(x, 0) - x t + log(1 + exp(-|x|)): every focal form's bce."""
    return tl.maximum(x, 0.0) - x * t + softplus_neg_abs


@triton.jit
def _alpha_weight(alpha, t):
    """The focal loss's class balance alpha_t = alpha t + (1 - alpha)(1 - t); alpha < 0: none (1)."""
    return tl.where(alpha >= 0.0, alpha * t + (1.0 - alpha) * (1.0 - t), 1.0)


@triton.jit
def _focal_factors(q_t, numerator, gamma, GAMMA: tl.constexpr):
    """The focal modulator q_t**gamma (0**gamma = 0) and gamma * q_t**(gamma-1) * numerator, the
    modulator's part of the slope, written q_t**gamma * (numerator / q_t): for a numerator at most
    of q_t's order this stays finite where 1 / q_t overflows (a subnormal q_t); 0 at q_t = 0.
    GAMMA, the exponent's kind, known when the kernel is compiled: 0 (BCE: 1, and no slope, which
    the callers leave out), 2 (q_t**2 and 2 q_t numerator, no power), else any gamma != 0."""
    if GAMMA == 0:
        modulator = tl.full(q_t.shape, 1.0, q_t.dtype)
        slope = modulator
    elif GAMMA == 2:
        modulator = q_t * q_t
        slope = 2.0 * q_t * numerator
    else:
        positive = q_t > 0.0
        safe_q_t = tl.where(positive, q_t, 1.0)
        modulator = tl.where(positive, tl.exp2(gamma * log2(safe_q_t)), 0.0)
        slope = tl.where(positive, gamma * modulator * (numerator / safe_q_t), 0.0)
    return modulator, slope


@triton.jit
def _focal_terms(x, t, p, q, softplus_neg_abs, alpha, gamma, GAMMA: tl.constexpr):
    """Focal loss of one element and its derivative in x.

    bce = max(x,0) - x*t + log(1+exp(-|x|)); q_t = 1 - p_t = p*(1-t) + q*t;
    loss = alpha_t * q_t**gamma * bce, alpha_t = alpha*t + (1-alpha)*(1-t)
    (alpha < 0: no weighting). gamma = 0 gives plain BCE.
    d loss/dx = alpha_t * (q_t**gamma * (p - t) + gamma * q_t**(gamma-1) * p*q*(1-2t) * bce),
    with q_t**(gamma-1) * p*q = q_t**gamma * (p*q / q_t): q_t lies between p and q, so the ratio
    is at most 1. gamma = 0 has no slope (not 0 * bce, NaN at |x| = inf: BCE's gradient stays p - t).
    """
    bce = _logit_bce(x, t, softplus_neg_abs)
    q_t = p * (1.0 - t) + q * t
    modulator, slope = _focal_factors(q_t, p * q, gamma, GAMMA)
    alpha_t = _alpha_weight(alpha, t)
    loss = alpha_t * modulator * bce
    dloss = modulator * (p - t)
    if GAMMA != 0:  # BCE's gradient reads no bce (finite at |x| = inf, and no logarithm)
        dloss += slope * (1.0 - 2.0 * t) * bce
    return loss, alpha_t * dloss


@triton.jit
def _clamped_focal_terms(p, q, t, alpha, gamma, GAMMA: tl.constexpr):
    """Focal loss of one element on F.binary_cross_entropy (log p and log1p(-p) clamped at -100) and
    its derivative in p, torch's: dbce/dp = (p - t) / max(p*q, 1e-12).
    loss = alpha_t * q_t**gamma * bce, d loss/dp = alpha_t * (q_t**gamma * dbce/dp
    + gamma * q_t**(gamma-1) * (1-2t) * bce); bce is at most about 100 q_t (q_t >= p, t*q), so
    q_t**gamma * (bce / q_t) stays finite where 1 / q_t overflows (a subnormal probability)."""
    log_p = tl.maximum(tl.log(p), -100.0, propagate_nan=tl.PropagateNan.ALL)
    log_q = tl.maximum(_log1p(-p), -100.0, propagate_nan=tl.PropagateNan.ALL)  # torch's log1p(-p)
    bce = -(t * log_p + (1.0 - t) * log_q)
    dbce = (p - t) / tl.maximum(p * q, 1e-12, propagate_nan=tl.PropagateNan.ALL)
    q_t = p * (1.0 - t) + q * t
    modulator, slope = _focal_factors(q_t, bce, gamma, GAMMA)
    alpha_t = _alpha_weight(alpha, t)
    loss = alpha_t * modulator * bce
    dloss = modulator * dbce
    if GAMMA != 0:
        dloss += slope * (1.0 - 2.0 * t)
    return loss, alpha_t * dloss


@triton.jit
def _smp_focal_terms(x, t, p, softplus_neg_abs, alpha, gamma):
    """smp's focal term (focal_form 1; gamma != 0): q = exp(-bce), f = (1 - q)**gamma,
    loss = alpha_t * f * bce; d loss/dx = alpha_t * (p - t) * (f + gamma * bce * q * (1 - q)**(gamma-1)),
    the last product written bce * q * f / (1 - q) where 1 - q > 0, else 0 (its limit at bce -> 0,
    for gamma < 1 too)."""
    bce = _logit_bce(x, t, softplus_neg_abs)
    alpha_t = _alpha_weight(alpha, t)
    q = tl.exp(-bce)
    r = 1.0 - q  # as smp computes it
    positive = r > 0.0
    safe_r = tl.where(positive, r, 1.0)
    f = tl.where(positive, tl.exp2(gamma * log2(safe_r)), 0.0)
    b_q_f_over_r = tl.where(positive, (bce / safe_r) * q * f, 0.0)
    loss = alpha_t * f * bce
    dloss = alpha_t * (p - t) * (f + gamma * b_q_f_over_r)
    return loss, dloss


@triton.jit
def _monai_focal_terms(x, t, p, softplus_neg_abs, alpha, gamma):
    """MONAI's focal term (focal_form 2): z = -x (2t - 1), f = sigmoid(z)**gamma =
    exp(gamma * logsigmoid(z)), loss = alpha_t * f * bce;
    d loss/dx = alpha_t * (f * (p - t) + gamma * bce * f * (1 - sigmoid(z)) * (1 - 2t))."""
    bce = _logit_bce(x, t, softplus_neg_abs)
    alpha_t = _alpha_weight(alpha, t)
    one_minus_2t = 1.0 - 2.0 * t
    z = x * one_minus_2t
    e_z = exp_neg_abs(z)
    log_sigmoid_z = tl.minimum(z, 0.0) - _log1p_unit(e_z)
    f = tl.exp(gamma * log_sigmoid_z)
    sigmoid_neg_z = tl.where(z >= 0.0, e_z, 1.0) / (1.0 + e_z)  # 1 - sigmoid(z)
    loss = alpha_t * f * bce
    dloss = alpha_t * (f * (p - t) + gamma * bce * f * sigmoid_neg_z * one_minus_2t)
    return loss, dloss


@triton.jit
def _probabilities(x, FROM_LOGITS: tl.constexpr, CLAMPED_LOG: tl.constexpr):
    """p, q = 1 - p, dp/dx and softplus(-|x|) (the logit BCE's; a placeholder when clamped).
    Logits: the accurate two-sided sigmoid; CLAMPED_LOG: torch.sigmoid's 1 / (1 + exp(-x))
    (p == 1 for x > ~16.6 in fp32) and q rounded from it, as the tutorial's BCE sees them.
    Probabilities (not FROM_LOGITS): p = x."""
    if not CLAMPED_LOG:
        p, q, softplus_neg_abs = _sigmoid_parts(x)
        dp_dx = p * q
    elif FROM_LOGITS:
        p = 1.0 / (1.0 + tl.exp(-x))
        q = 1.0 - p
        dp_dx = p * q
        softplus_neg_abs = q
    else:
        p = x
        q = 1.0 - p
        dp_dx = tl.full(x.shape, 1.0, x.dtype)
        softplus_neg_abs = q
    return p, q, dp_dx, softplus_neg_abs


@triton.jit
def _element_terms(x, t, p, q, dp_dx, softplus_neg_abs, alpha, gamma, CLAMPED_LOG: tl.constexpr,
                   FOCAL_FORM: tl.constexpr, GAMMA: tl.constexpr):
    """The element loss (focal; BCE at gamma = 0) and its derivative in x. FOCAL_FORM 1 (smp) or
    2 (MONAI): logits, gamma != 0 only (_focal_form), any gamma (GAMMA unread)."""
    if FOCAL_FORM == 1:
        loss, dloss = _smp_focal_terms(x, t, p, softplus_neg_abs, alpha, gamma)
    elif FOCAL_FORM == 2:
        loss, dloss = _monai_focal_terms(x, t, p, softplus_neg_abs, alpha, gamma)
    elif CLAMPED_LOG:
        loss, dloss_dp = _clamped_focal_terms(p, q, t, alpha, gamma, GAMMA)
        dloss = dloss_dp * dp_dx
    else:
        loss, dloss = _focal_terms(x, t, p, q, softplus_neg_abs, alpha, gamma, GAMMA)
    return loss, dloss


@triton.jit
def _min_keeping_nan(p, t):
    # min(p, t) with a NaN p kept (torch.minimum's; a NaN target is no probability).
    return tl.where(t < p, t, p)


@triton.jit
def _outside_unit(t, mask):
    # A target value no probability has: < 0, > 1 or NaN (a 0/255 mask read as is).
    return mask & ((t < 0.0) | (t > 1.0) | (t != t))


@triton.jit
def _stats_kernel(x_ptr, t_ptr, partial_ptr, ok_ptr, row_len, chunks_per_row, num_groups, members, steps,
                  ignore_index, focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, REGION: tl.constexpr,
                  SQUARED_PRED: tl.constexpr, ELEM: tl.constexpr, FROM_LOGITS: tl.constexpr,
                  CLAMPED_LOG: tl.constexpr, HAS_IGNORE: tl.constexpr, CHECK_TARGET: tl.constexpr,
                  BLOCK: tl.constexpr, ACC: tl.constexpr, MIN_INTERSECTION: tl.constexpr,
                  FOCAL_FORM: tl.constexpr, GAMMA: tl.constexpr):
    focal_alpha, focal_gamma = focal_params(focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, ACC)
    pid = tl.program_id(0).to(tl.int64)
    row = pid // chunks_per_row
    chunk = pid % chunks_per_row
    row_start = row * row_len
    chunk_start = chunk * steps * BLOCK
    lanes = tl.arange(0, BLOCK)
    sum_pt = tl.zeros([BLOCK], ACC)
    sum_p = tl.zeros([BLOCK], ACC)
    sum_t = tl.zeros([BLOCK], ACC)
    sum_e = tl.zeros([BLOCK], ACC)
    ok = tl.full([BLOCK], 1, tl.int32)
    if HAS_IGNORE:
        counted = tl.zeros([BLOCK], tl.int32)
    for step in range(0, steps):
        offs = chunk_start + step * BLOCK + lanes
        mask = offs < row_len
        x = tl.load(x_ptr + row_start + offs, mask=mask, other=0.0).to(ACC)
        t = tl.load(t_ptr + row_start + offs, mask=mask, other=0).to(ACC)
        if HAS_IGNORE:
            # Ignored lanes are masked from here on: p and the loss are zeroed by the
            # wheres below (NaN input there reaches no sum), t here.
            mask = mask & (t != ignore_index)
            t = tl.where(mask, t, 0.0)
            counted += mask.to(tl.int32)
        if CHECK_TARGET:
            ok = tl.where(_outside_unit(t, mask), 0, ok)
        p, q, dp_dx, softplus_neg_abs = _probabilities(x, FROM_LOGITS, CLAMPED_LOG)
        if REGION:
            p = tl.where(mask, p, 0.0)  # sigmoid(0) = 0.5 on masked lanes
            if MIN_INTERSECTION:
                sum_pt += _min_keeping_nan(p, t)
            else:
                sum_pt += p * t
            if SQUARED_PRED:
                sum_p += p * p
                sum_t += t * t
            else:
                sum_p += p
                sum_t += t
        if ELEM:
            # Masked lanes' losses (log(0) of a probability 0 among them) never reach the sum.
            loss, _ = _element_terms(x, t, p, q, dp_dx, softplus_neg_abs, focal_alpha, focal_gamma,
                                     CLAMPED_LOG, FOCAL_FORM, GAMMA)
            sum_e += tl.where(mask, loss, 0.0)
    group = row % num_groups
    member = row // num_groups
    slot = partial_ptr + ((group * members + member) * chunks_per_row + chunk) * 5
    tl.store(slot + 0, tl.sum(sum_pt, axis=0))
    tl.store(slot + 1, tl.sum(sum_p, axis=0))
    tl.store(slot + 2, tl.sum(sum_t, axis=0))
    tl.store(slot + 3, tl.sum(sum_e, axis=0))
    if HAS_IGNORE:
        count = tl.sum(counted, axis=0)
    else:  # every element of the chunk: no per-element work
        count = tl.minimum(row_len - chunk_start, steps * BLOCK)
    tl.store(slot + 4, count.to(ACC))
    if CHECK_TARGET:
        tl.store(ok_ptr + pid, tl.min(ok, axis=0))


@triton.jit
def _finalize_kernel(partial_ptr, weight_ptr, loss_ptr, coef_ptr, num_groups, parts_per_group, num_channels,
                     tv_alpha_hi, tv_alpha_lo, tv_beta_hi, tv_beta_lo, smooth_nr_hi, smooth_nr_lo, smooth_dr_hi,
                     smooth_dr_lo, region_gamma_hi, region_gamma_lo, region_weight_hi, region_weight_lo,
                     elem_weight_hi, elem_weight_lo, REGION: tl.constexpr, LOG_LOSS: tl.constexpr, ELEM: tl.constexpr,
                     HAS_WEIGHT: tl.constexpr, ELEM_MEAN: tl.constexpr, REDUCTION: tl.constexpr,
                     GROUP_BLOCK: tl.constexpr, PART_BLOCK: tl.constexpr, ACC: tl.constexpr):
    # REDUCTION: 0 = 'none' (one loss per group), 1 = 'mean', 2 = 'sum'.
    tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight, elem_weight = finalize_params(
        tv_alpha_hi, tv_alpha_lo, tv_beta_hi, tv_beta_lo, smooth_nr_hi, smooth_nr_lo, smooth_dr_hi, smooth_dr_lo,
        region_gamma_hi, region_gamma_lo, region_weight_hi, region_weight_lo, elem_weight_hi, elem_weight_lo, ACC)
    # Integer arguments equal to 1 arrive as constexpr on GPU (no .to()): widen by addition.
    if REDUCTION == 1:
        out_scale = 1.0 / (tl.zeros([], ACC) + num_groups)
    else:
        out_scale = tl.full([], 1.0, ACC)
    total = tl.zeros([GROUP_BLOCK], ACC)
    for group_start in range(0, num_groups, GROUP_BLOCK):
        groups = group_start + tl.arange(0, GROUP_BLOCK)
        group_mask = groups < num_groups
        sum_i = tl.zeros([GROUP_BLOCK], ACC)
        sum_p = tl.zeros([GROUP_BLOCK], ACC)
        sum_t = tl.zeros([GROUP_BLOCK], ACC)
        sum_e = tl.zeros([GROUP_BLOCK], ACC)
        count = tl.zeros([GROUP_BLOCK], tl.int64)
        for part_start in range(0, parts_per_group, PART_BLOCK):
            parts = part_start + tl.arange(0, PART_BLOCK)
            tile_mask = group_mask[:, None] & (parts < parts_per_group)[None, :]
            slots = partial_ptr + (groups.to(tl.int64)[:, None] * parts_per_group + parts[None, :]) * 5
            sum_i += sum_rows(slots + 0, tile_mask)
            sum_p += sum_rows(slots + 1, tile_mask)
            sum_t += sum_rows(slots + 2, tile_mask)
            sum_e += sum_rows(slots + 3, tile_mask)
            count += count_rows(slots + 4, tile_mask)

        if HAS_WEIGHT:
            group_weight = tl.load(weight_ptr + groups % num_channels, mask=group_mask, other=0.0).to(ACC)
        else:
            group_weight = tl.full([GROUP_BLOCK], 1.0, ACC)
        scale = group_weight * out_scale
        group_loss = tl.zeros([GROUP_BLOCK], ACC)
        coef_i = tl.zeros([GROUP_BLOCK], ACC)
        coef_p = tl.zeros([GROUP_BLOCK], ACC)
        if REGION:
            region, dregion_di, dregion_dp = region_terms(sum_i, sum_p, sum_t, tv_alpha, tv_beta, smooth_nr,
                                                          smooth_dr, region_gamma, LOG_LOSS)
            group_loss += region_weight * region
            coef_i = scale * region_weight * dregion_di
            coef_p = scale * region_weight * dregion_dp
        if ELEM_MEAN:  # over the elements counted (none: the element term is 0)
            elem_scale = elem_weight / tl.maximum(count, 1).to(ACC)
        else:
            elem_scale = elem_weight
        if ELEM:
            group_loss += elem_scale * sum_e
        coef_e = scale * elem_scale
        weighted = group_weight * group_loss
        if REDUCTION == 0:
            tl.store(loss_ptr + groups, weighted, mask=group_mask)
        else:
            total += tl.where(group_mask, weighted, 0.0)
        coef_slots = coef_ptr + groups.to(tl.int64) * 3
        tl.store(coef_slots + 0, coef_i, mask=group_mask)
        tl.store(coef_slots + 1, coef_p, mask=group_mask)
        tl.store(coef_slots + 2, coef_e, mask=group_mask)
    if REDUCTION != 0:
        tl.store(loss_ptr, tl.sum(total, axis=0) * out_scale)


@triton.jit
def _backward_kernel(x_ptr, t_ptr, coef_ptr, grad_out_ptr, grad_ptr, row_len, chunks_per_row, num_groups, steps,
                     grad_out_group_stride, ignore_index, focal_alpha_hi, focal_alpha_lo, focal_gamma_hi,
                     focal_gamma_lo, REGION: tl.constexpr, SQUARED_PRED: tl.constexpr, ELEM: tl.constexpr,
                     FROM_LOGITS: tl.constexpr, CLAMPED_LOG: tl.constexpr, HAS_IGNORE: tl.constexpr,
                     GRAD_OUT_PER_ELEMENT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
                     GRAD_BF16: tl.constexpr, MIN_INTERSECTION: tl.constexpr, FOCAL_FORM: tl.constexpr,
                     GAMMA: tl.constexpr):
    focal_alpha, focal_gamma = focal_params(focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, ACC)
    pid = tl.program_id(0).to(tl.int64)
    row = pid // chunks_per_row
    chunk = pid % chunks_per_row
    group = row % num_groups
    row_start = row * row_len
    chunk_start = chunk * steps * BLOCK
    lanes = tl.arange(0, BLOCK)
    if GRAD_OUT_PER_ELEMENT:
        # reduction='none' of the element loss: the incoming gradient is a map.
        coef_i = tl.full([], 0.0, ACC)
        coef_p = tl.full([], 0.0, ACC)
        coef_e = tl.full([], 1.0, ACC)
    else:
        upstream = tl.load(grad_out_ptr + group * grad_out_group_stride).to(ACC)
        coef_i = tl.load(coef_ptr + group * 3 + 0) * upstream
        coef_p = tl.load(coef_ptr + group * 3 + 1) * upstream
        coef_e = tl.load(coef_ptr + group * 3 + 2) * upstream
    for step in range(0, steps):
        offs = store_vectors(chunk_start + step * BLOCK, lanes, grad_ptr)
        mask = offs < row_len
        x = tl.load(x_ptr + row_start + offs, mask=mask, other=0.0).to(ACC)
        t = tl.load(t_ptr + row_start + offs, mask=mask, other=0).to(ACC)
        p, q, dp_dx, softplus_neg_abs = _probabilities(x, FROM_LOGITS, CLAMPED_LOG)
        grad = tl.zeros([BLOCK], ACC)
        if REGION:
            if SQUARED_PRED:  # dP/dp = 2p
                grad += (coef_i * t + coef_p * (2.0 * p)) * dp_dx
            elif MIN_INTERSECTION:  # dI/dp = [p < t], 1/2 at p == t (torch's subgradient of |p - t|)
                grad += (coef_i * tl.where(p < t, 1.0, tl.where(p == t, 0.5, 0.0)) + coef_p) * dp_dx
            else:
                grad += (coef_i * t + coef_p) * dp_dx
        if ELEM:
            _, dloss = _element_terms(x, t, p, q, dp_dx, softplus_neg_abs, focal_alpha, focal_gamma,
                                     CLAMPED_LOG, FOCAL_FORM, GAMMA)
            if GRAD_OUT_PER_ELEMENT:
                upstream_map = tl.load(grad_out_ptr + row_start + offs, mask=mask, other=0.0).to(ACC)
                grad += upstream_map * dloss
            else:
                grad += coef_e * dloss
        if HAS_IGNORE:  # exactly 0, whatever the input (NaN) or the upstream map holds there
            grad = tl.where(t != ignore_index, grad, 0.0)
        store_as(grad_ptr + row_start + offs, grad, mask, GRAD_BF16)


@triton.jit
def _focal_map_kernel(x_ptr, t_ptr, out_ptr, ok_ptr, numel, ignore_index, focal_alpha_hi, focal_alpha_lo,
                      focal_gamma_hi, focal_gamma_lo, FROM_LOGITS: tl.constexpr, CLAMPED_LOG: tl.constexpr,
                      HAS_IGNORE: tl.constexpr, CHECK_TARGET: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
                      OUT_BF16: tl.constexpr, FOCAL_FORM: tl.constexpr, GAMMA: tl.constexpr):
    focal_alpha, focal_gamma = focal_params(focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, ACC)
    pid = tl.program_id(0).to(tl.int64)
    offs = store_vectors(pid * BLOCK, tl.arange(0, BLOCK), out_ptr)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(ACC)
    p, q, dp_dx, softplus_neg_abs = _probabilities(x, FROM_LOGITS, CLAMPED_LOG)
    loss, _ = _element_terms(x, t, p, q, dp_dx, softplus_neg_abs, focal_alpha, focal_gamma, CLAMPED_LOG, FOCAL_FORM,
                             GAMMA)
    checked = mask
    if HAS_IGNORE:
        kept = t != ignore_index
        loss = tl.where(kept, loss, 0.0)
        checked = mask & kept
    store_as(out_ptr + offs, loss, mask, OUT_BF16)
    if CHECK_TARGET:
        tl.store(ok_ptr + pid, tl.min(tl.where(_outside_unit(t, checked), 0, 1), axis=0))


# ----------------------------------------------------------------------------
# Launchers: plain functions over torch tensors, called by the op layer.
# ----------------------------------------------------------------------------


class LaunchPlan:
    """How rows are cut into chunks of ``steps`` blocks of ``block`` elements.

    Depends only on the shape and the device, so a given input always reduces
    in the same order (bitwise reproducible)."""

    def __init__(self, layout: GroupLayout, device: torch.device):
        if device.type == "cuda":
            max_block, self.num_warps = 2048, 8
            target_programs = 8 * sm_count(device)
        else:  # Triton interpreter: large blocks, few programs
            max_block, self.num_warps = 8192, 4
            target_programs = 4
        self.block = max(16, min(max_block, next_power_of_2(layout.row_len)))
        blocks_per_row = cdiv(layout.row_len, self.block)
        steps = cdiv(layout.rows * blocks_per_row, target_programs)
        self.steps = max(1, min(blocks_per_row, steps))
        self.chunks_per_row = cdiv(blocks_per_row, self.steps)
        self.programs = layout.rows * self.chunks_per_row
        check_programs(self.programs, layout.rows, "row")


@functools.lru_cache(maxsize=1024)
def launch_plan(layout: GroupLayout, device: torch.device) -> LaunchPlan:
    """The LaunchPlan of a layout on a device, made once (a plan depends on nothing else)."""
    return LaunchPlan(layout, device)


def _as_loadable(target: torch.Tensor) -> torch.Tensor:
    # A view, never a converted copy: bool is read as its bytes.
    return target.view(torch.uint8) if target.dtype == torch.bool else target


def _focal_form(focal_form, elem, focal_gamma, from_logits, clamped_log):
    """FOCAL_FORM: focal_form with the element term and gamma != 0, else 0 (gamma = 0 is BCE in
    every form: the kernels' gamma-0 path)."""
    check_focal_form(focal_form, from_logits, clamped_log)
    return focal_form if elem and focal_gamma != 0 else 0


def _gamma_kind(elem, focal_gamma):
    """GAMMA, the focal exponent's kind the kernels are compiled for: 0 (BCE, and no element
    term), 2 (the default), 1 (any other; read at run time)."""
    if not elem or focal_gamma == 0:
        return 0
    return 2 if focal_gamma == 2 else 1


def _stats(input, target, per_sample, per_channel, region, squared_pred, min_intersection, elem, focal_alpha,
           focal_gamma, focal_form, from_logits, clamped_log, ignore_index, check_target):
    """Launch the statistics kernel: partial sums (groups * parts_per_group, 5) and parts_per_group."""
    check_min_intersection(squared_pred, min_intersection)
    form = _focal_form(focal_form, elem, focal_gamma, from_logits, clamped_log)
    layout = group_layout(input.shape, per_sample, per_channel)
    acc, ACC = acc_dtypes(input)
    x, target, _ = binary_operands(input, target, per_sample, per_channel)
    check_target = check_target and target.dtype != torch.bool  # bool holds nothing else
    target = _as_loadable(target)
    plan = launch_plan(layout, x.device)
    members = layout.rows // layout.num_groups
    partials = torch.empty((plan.programs, 5), dtype=acc, device=x.device)
    ok = target_flags(plan.programs, x.device, check_target)
    ignore_value, has_ignore = ignore_args(ignore_index)
    _stats_kernel[(plan.programs,)](x, target, partials, ok, layout.row_len, plan.chunks_per_row, layout.num_groups,
                                    members, plan.steps, ignore_value, *split(focal_alpha), *split(focal_gamma),
                                    REGION=region, SQUARED_PRED=region and squared_pred, ELEM=elem,
                                    FROM_LOGITS=from_logits, CLAMPED_LOG=_clamped(from_logits, clamped_log),
                                    HAS_IGNORE=has_ignore, CHECK_TARGET=check_target, BLOCK=plan.block, ACC=ACC,
                                    MIN_INTERSECTION=region and min_intersection, FOCAL_FORM=form,
                                    GAMMA=_gamma_kind(elem, focal_gamma), num_warps=plan.num_warps)
    if check_target:
        kernel_target_flags(ok, target, None, ignore_index)
    return partials, members * plan.chunks_per_row


def _clamped(from_logits, clamped_log):
    # Probabilities have no logit BCE: their element term is always the clamped one.
    return clamped_log or not from_logits


def _finalize(partials, parts_per_group, weight, num_channels, region, tv_alpha, tv_beta, smooth_nr, smooth_dr,
              region_gamma, region_weight, log_loss, elem, elem_weight, elem_mean, reduction, loss_shape):
    """Launch the finalize kernel over partials laid out (groups, parts_per_group, 5)."""
    num_groups = partials.shape[0] // parts_per_group
    ACC = tl.float64 if partials.dtype == torch.float64 else tl.float32
    code = REDUCTION_CODE[reduction]
    loss = partials.new_empty(tuple(loss_shape) if code == 0 else ())
    coef = partials.new_empty((num_groups, 3))
    part_block = min(1024, next_power_of_2(parts_per_group))
    group_block = min(next_power_of_2(num_groups), max(1, 4096 // part_block))
    has_weight = weight is not None
    _finalize_kernel[(1,)](partials, weight.contiguous() if has_weight else partials, loss, coef, num_groups,
                           parts_per_group, num_channels, *split(tv_alpha), *split(tv_beta),
                           *split(smooth_nr), *split(smooth_dr), *split(region_gamma), *split(region_weight),
                           *split(elem_weight), REGION=region, LOG_LOSS=region and log_loss, ELEM=elem,
                           HAS_WEIGHT=has_weight, ELEM_MEAN=elem_mean, REDUCTION=code, GROUP_BLOCK=group_block,
                           PART_BLOCK=part_block, ACC=ACC, num_warps=4)
    return loss, coef


@on_input_device
def binary_loss(input, target, weight, per_sample, per_channel, region, tv_alpha, tv_beta, smooth_nr, smooth_dr,
                region_gamma, region_weight, log_loss, squared_pred, min_intersection, elem, focal_alpha, focal_gamma,
                focal_form, elem_weight, elem_mean, label_smoothing, weighted_mean, from_logits, clamped_log,
                ignore_index, reduction, check_target):
    # label_smoothing and weighted_mean are multi-class options: the binary family has neither.
    layout = group_layout(input.shape, per_sample, per_channel)
    partials, parts_per_group = _stats(input, target, per_sample, per_channel, region, squared_pred, min_intersection,
                                       elem, focal_alpha, focal_gamma, focal_form, from_logits, clamped_log,
                                       ignore_index, check_target)
    return _finalize(partials, parts_per_group, weight, layout.num_channels, region, tv_alpha, tv_beta, smooth_nr,
                     smooth_dr, region_gamma, region_weight, log_loss, elem, elem_weight, elem_mean, reduction,
                     layout.shape)


@on_input_device
def binary_stats(input, target, per_sample, per_channel, region, squared_pred, min_intersection, elem, focal_alpha,
                 focal_gamma, focal_form, from_logits, clamped_log, ignore_index, check_target):
    partials, parts_per_group = _stats(input, target, per_sample, per_channel, region, squared_pred, min_intersection,
                                       elem, focal_alpha, focal_gamma, focal_form, from_logits, clamped_log,
                                       ignore_index, check_target)
    return partials.view(-1, parts_per_group, 5).sum(1)  # fixed order: deterministic


@on_input_device
def binary_finalize(sums, weight, num_channels, region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma,
                    region_weight, log_loss, elem, elem_weight, elem_mean, reduction, loss_shape):
    return _finalize(sums.contiguous(), 1, weight, num_channels, region, tv_alpha, tv_beta, smooth_nr, smooth_dr,
                     region_gamma, region_weight, log_loss, elem, elem_weight, elem_mean, reduction, loss_shape)


@on_input_device
def binary_loss_backward(grad_loss, input, target, coef, per_sample, per_channel, region, squared_pred,
                         min_intersection, elem, focal_alpha, focal_gamma, focal_form, from_logits, clamped_log,
                         ignore_index):
    check_min_intersection(squared_pred, min_intersection)
    form = _focal_form(focal_form, elem, focal_gamma, from_logits, clamped_log)
    layout = group_layout(input.shape, per_sample, per_channel)
    _, ACC = acc_dtypes(input)
    x, target, memory_format = binary_operands(input, target, per_sample, per_channel)
    target = _as_loadable(target)
    grad = torch.empty_like(x, memory_format=memory_format)
    plan = launch_plan(layout, x.device)
    ignore_value, has_ignore = ignore_args(ignore_index)
    _backward_kernel[(plan.programs,)](x, target, coef, grad_loss.contiguous(), writable(grad), layout.row_len,
                                       plan.chunks_per_row, layout.num_groups, plan.steps,
                                       1 if grad_loss.dim() > 0 else 0, ignore_value, *split(focal_alpha),
                                       *split(focal_gamma), REGION=region, SQUARED_PRED=region and squared_pred,
                                       ELEM=elem, FROM_LOGITS=from_logits,
                                       CLAMPED_LOG=_clamped(from_logits, clamped_log), HAS_IGNORE=has_ignore,
                                       GRAD_OUT_PER_ELEMENT=False, BLOCK=plan.block, ACC=ACC,
                                       GRAD_BF16=x.dtype == torch.bfloat16,
                                       MIN_INTERSECTION=region and min_intersection, FOCAL_FORM=form,
                                    GAMMA=_gamma_kind(elem, focal_gamma), num_warps=plan.num_warps)
    return grad


def _map_plan(x):
    return launch_plan(group_layout((x.numel(),), False, False), x.device)


@on_input_device
def binary_focal_map(input, target, alpha, gamma, focal_form, from_logits, clamped_log, ignore_index, check_target):
    form = _focal_form(focal_form, True, gamma, from_logits, clamped_log)
    _, ACC = acc_dtypes(input)
    x, target, memory_format = binary_operands(input, target, False, False)
    check_target = check_target and target.dtype != torch.bool
    target = _as_loadable(target)
    out = torch.empty_like(x, memory_format=memory_format)
    plan = _map_plan(x)
    programs = cdiv(x.numel(), plan.block)
    ok = target_flags(programs, x.device, check_target)
    ignore_value, has_ignore = ignore_args(ignore_index)
    _focal_map_kernel[(programs,)](x, target, writable(out), ok, x.numel(), ignore_value, *split(alpha),
                                   *split(gamma), FROM_LOGITS=from_logits,
                                   CLAMPED_LOG=_clamped(from_logits, clamped_log), HAS_IGNORE=has_ignore,
                                   CHECK_TARGET=check_target, BLOCK=plan.block, ACC=ACC,
                                   OUT_BF16=x.dtype == torch.bfloat16, FOCAL_FORM=form,
                                   GAMMA=_gamma_kind(True, gamma), num_warps=plan.num_warps)
    if check_target:
        kernel_target_flags(ok, target, None, ignore_index)
    return out


@on_input_device
def binary_focal_map_backward(grad_map, input, target, alpha, gamma, focal_form, from_logits, clamped_log,
                              ignore_index):
    form = _focal_form(focal_form, True, gamma, from_logits, clamped_log)
    _, ACC = acc_dtypes(input)
    x, target, memory_format = binary_operands(input, target, False, False)
    target = _as_loadable(target)
    grad = torch.empty_like(x, memory_format=memory_format)
    if grad_map.stride() != x.stride():  # the upstream map is read in x's memory order
        grad_map = torch.empty_like(x, memory_format=memory_format).copy_(grad_map)
    plan = _map_plan(x)
    ignore_value, has_ignore = ignore_args(ignore_index)
    _backward_kernel[(plan.programs,)](x, target, x, grad_map, writable(grad), x.numel(), plan.chunks_per_row, 1,
                                       plan.steps, 0, ignore_value, *split(alpha), *split(gamma), REGION=False,
                                       SQUARED_PRED=False, ELEM=True, FROM_LOGITS=from_logits,
                                       CLAMPED_LOG=_clamped(from_logits, clamped_log), HAS_IGNORE=has_ignore,
                                       GRAD_OUT_PER_ELEMENT=True,
                                       BLOCK=plan.block, ACC=ACC, GRAD_BF16=x.dtype == torch.bfloat16,
                                       MIN_INTERSECTION=False, FOCAL_FORM=form, GAMMA=_gamma_kind(True, gamma),
                                       num_warps=plan.num_warps)
    return grad
