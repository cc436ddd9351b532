"""Triton kernels for the multiclass family: p = softmax(x, dim=1), class-map or dense targets.

Input (N, C, *spatial) logits seen as (N, C, S) through (sample, class, pixel)
strides, so contiguous and channels_last (classes innermost) layouts are read
where they lie (_spec.multiclass_operands); target (N, S) integer class indices,
or (DENSE) per-class values t_c in [0, 1] of the input's shape, read at the
input's offsets. A program takes one sample and tiles of pixels, loads all C
logits (and dense targets) of each pixel at once ([C, pixels] in registers),
computes the softmax there, and accumulates every class's I, P, T and the
element loss (-a_y (1 - p_y)**gamma log p_y; CE is gamma = 0) of its pixels: no
one-hot target and no softmax tensor ever exists in memory. a_c is the element
term's per-class factor: class_weight[c] (HAS_CLASS_WEIGHT), else alpha >= 0,
else 1. Label smoothing (SMOOTHING) and dense targets take the soft form
E = sum_c a_c t'_c (1 - p_c)**gamma (-log p_c), t' = t (1 - eps) + eps / C (t the
one-hot of a class map). Ignored pixels (target == ignore_index) count nowhere;
an index outside [0, C) (a dense value outside [0, 1] or NaN) is flagged per
program when the target is checked (check_target), and otherwise counts nowhere
too. FROM_LOGITS false: the input holds probabilities, p = x (no softmax), the
element loss takes max(log p, -100) as F.nll_loss(log(p).clamp(min=-100)) does,
and the backward has no softmax Jacobian: dL/dx_c = g_c + c_E dloss/dp_c.

  _stats_kernel     partials per program: [3, C] class sums (I, P, T rows, each
                    C contiguous values) and [2] = (E, valid pixels;
                    WEIGHTED_MEAN: sum of a_y over them)
  _finalize_kernel  a program per 16 groups (classes, or one sample's classes):
                    fixed-order combine over their parts (contiguous reads),
                    the Tversky region formula, weights, background /
                    empty-class exclusion and the backward coefficients; the
                    last program to finish adds the programs' totals in a
                    fixed order for a reduced loss
  _backward_kernel  recomputes the softmax; dL/dx_c = p_c (g_c - sum_k p_k g_k)
                    + c_E * dE/dx_c, g_c = c_I t_c + c_P (squared_pred:
                    c_P * 2 p_c); also the focal map's backward (a per-pixel
                    upstream gradient)
  _focal_map_kernel the per-pixel element loss (reduction='none')
"""

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .._checks import kernel_target_flags
from .._spec import check_focal_form, check_min_intersection, multiclass_operands
from .triton_common import (REDUCTION_CODE, acc_dtypes, check_programs, finalize_params, focal_params, on_input_device,
                            param, pow_or_zero, region_terms, sm_count, split, store_as, target_flags,
                            writable)


@triton.jit
def _pixel_probabilities(x_ptr, y_ptr, sample, pixels, num_classes, spatial, sample_stride, class_stride,
                         pixel_stride, ignore_index, HAS_IGNORE: tl.constexpr, FROM_LOGITS: tl.constexpr,
                         DENSE: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """Probabilities of a [classes, pixels] tile: its softmax. Returns x, p, e
    (unnormalised exp), the log-sum-exp pieces (max, total), the target tile `hit`
    (a class map's one-hot, bool; DENSE: the per-class values in ACC, 0 off the
    tile), the valid-pixel mask, the tile offsets and `bad`: pixels whose class index is
    outside [0, C) and not ignore_index, or (DENSE) with a value outside [0, 1] or NaN
    (counted nowhere; an error when checked).
    Not FROM_LOGITS: the tile holds probabilities, p = x (e, max, total unused)."""
    classes = tl.arange(0, BLOCK_C)
    class_mask = classes < num_classes
    pixel_mask = pixels < spatial
    offsets = (
        sample * sample_stride
        + classes.to(tl.int64)[:, None] * class_stride
        + pixels.to(tl.int64)[None, :] * pixel_stride
    )
    tile_mask = class_mask[:, None] & pixel_mask[None, :]
    if DENSE:  # the target has the input's strides: every pixel counts
        hit = tl.load(y_ptr + offsets, mask=tile_mask, other=0).to(ACC)
        valid = pixel_mask
        outside = tile_mask & ~((hit >= 0.0) & (hit <= 1.0))  # NaN fails both
        bad = tl.max(outside.to(tl.int32), axis=0) > 0
    else:
        y = tl.load(y_ptr + sample * spatial + pixels, mask=pixel_mask, other=-1).to(tl.int64)
        in_range = (y >= 0) & (y < num_classes)
        valid = pixel_mask & in_range
        bad = pixel_mask & ~in_range
        if HAS_IGNORE:
            valid = valid & (y != ignore_index)
            bad = bad & (y != ignore_index)
        hit = (classes[:, None] == y[None, :]) & valid[None, :]
    if FROM_LOGITS:
        x = tl.load(x_ptr + offsets, mask=tile_mask, other=float("-inf")).to(ACC)
        top = tl.max(x, axis=0)
        top = tl.where(pixel_mask, top, 0.0)
        e = tl.where(tile_mask, tl.exp(x - top[None, :]), 0.0)
        total = tl.sum(e, axis=0)
        total = tl.where(pixel_mask, total, 1.0)
        p = e / total[None, :]
    else:
        x = tl.load(x_ptr + offsets, mask=tile_mask, other=0.0).to(ACC)
        p = x
        e = x
        top = tl.zeros(pixels.shape, ACC)
        total = top + 1.0
    return x, p, e, top, total, hit, valid, offsets, tile_mask, bad


@triton.jit
def _class_factors(class_weight_ptr, alpha, num_classes, HAS_CLASS_WEIGHT: tl.constexpr, BLOCK_C: tl.constexpr,
                   ACC: tl.constexpr):
    """a_c, the element term's per-class factor: class_weight[c], else alpha >= 0, else 1;
    0 on the tile's padding classes."""
    classes = tl.arange(0, BLOCK_C)
    class_mask = classes < num_classes
    if HAS_CLASS_WEIGHT:
        factors = tl.load(class_weight_ptr + classes, mask=class_mask, other=0.0).to(ACC)
    else:
        factors = tl.where(class_mask, tl.where(alpha >= 0.0, alpha, 1.0), 0.0).to(ACC)
    return factors


@triton.jit
def _label_factor(hit, factors):
    """a_y per pixel of a class map (0 where ignored)."""
    return tl.sum(tl.where(hit, factors[:, None], 0.0), axis=0)


@triton.jit
def _focal_from_log(log_p, p, rest, scale, gamma):
    """Elementwise: the focal loss -scale (1 - p)**gamma log p from log p, p and rest = 1 - p,
    and scale * Afocal(p), Afocal = (1 - p)**gamma - gamma (1 - p)**(gamma - 1) p log p
    (dloss/dz of the logit z whose softmax gives p)."""
    modulator = pow_or_zero(rest, gamma)
    # (1 - p)**(gamma - 1) * p log p -> 0 as p -> 1.
    slope = tl.where(rest > 0.0, gamma * (modulator / tl.where(rest > 0.0, rest, 1.0)) * p * log_p, 0.0)
    slope = tl.where(gamma == 0.0, 0.0, slope)  # not 0 * log p, NaN where p = 0 (a -inf logit)
    return -scale * modulator * log_p, scale * (modulator - slope)


@triton.jit
def _focal_terms(x, e, top, total, hit, scale, gamma):
    """Per pixel: the focal loss -a_y (1 - p_y)**gamma log p_y (scale = a_y) and
    A = dloss/dz factor with dloss/dx_c = A (p_c - [c = y]):
    A = a_y ((1 - p_y)**gamma - gamma (1 - p_y)**(gamma - 1) p_y log p_y)."""
    log_p_y = (tl.sum(tl.where(hit, x, 0.0), axis=0) - top) - tl.log(total)
    p_y = tl.exp(log_p_y)
    rest = tl.sum(tl.where(hit, 0.0, e), axis=0) / total  # 1 - p_y without cancellation
    return _focal_from_log(log_p_y, p_y, rest, scale, gamma)


@triton.jit
def _prob_focal(p, scale, gamma):
    """Elementwise on probabilities: the focal loss -scale (1 - p)**gamma lp, lp = max(log p, -100)
    (gamma = 0: F.nll_loss(log(p).clamp(min=-100))), and its derivative in p:
    -scale ((1 - p)**gamma dlp/dp - gamma (1 - p)**(gamma - 1) lp), dlp/dp = 1 / p above
    the clamp, 0 on it (torch's clamp backward)."""
    log_p = tl.log(p)
    clamped_log_p = tl.maximum(log_p, -100.0, propagate_nan=tl.PropagateNan.ALL)
    rest = 1.0 - p
    modulator = pow_or_zero(rest, gamma)
    slope = tl.where(rest > 0.0, gamma * (modulator / tl.where(rest > 0.0, rest, 1.0)) * clamped_log_p, 0.0)
    slope = tl.where(gamma == 0.0, 0.0, slope)  # not 0 * lp (NaN at a NaN p is kept by the modulator)
    dlog = tl.where(log_p >= -100.0, 1.0 / tl.where(p > 0.0, p, 1.0), 0.0)
    return -scale * modulator * clamped_log_p, -scale * (modulator * dlog - slope)


@triton.jit
def _prob_focal_terms(p, hit, scale, gamma):
    """Per pixel of a probability tile: _prob_focal of p_y (scale = a_y)."""
    p_y = tl.sum(tl.where(hit, p, 0.0), axis=0)  # 0 at ignored pixels, whatever p holds there
    return _prob_focal(p_y, scale, gamma)


@triton.jit
def _one_minus_p(x, e, top, total, p):
    """1 - p_c of a softmax tile. Only a top class can hold p_c > 1/2: there it is the other
    classes' exp sum over the total (other top classes' exps are 1), without cancellation."""
    at_top = x == top[None, :]
    others = tl.sum(tl.where(at_top, 0.0, e), axis=0) + (tl.sum(tl.where(at_top, 1.0, 0.0), axis=0) - 1.0)
    return tl.where(at_top, (others / total)[None, :], 1.0 - p)


@triton.jit
def _soft_terms(x, p, e, top, total, target, tile_mask, factors, gamma, smoothing, num_classes,
                FROM_LOGITS: tl.constexpr, SMOOTHING: tl.constexpr, ACC: tl.constexpr):
    """Per pixel E = sum_c a_c t'_c (1 - p_c)**gamma (-lp_c), t' = t (1 - eps) + eps / C (t a dense
    target, or a class map's one-hot), and the [classes, pixels] tile of its gradient:
    softmax, dE/dx_j = h_j - p_j sum_c h_c with h_c = -a_c t'_c Afocal(p_c);
    probabilities, dE/dp_c = -a_c t'_c ((1 - p_c)**gamma g(p_c) - gamma (1 - p_c)**(gamma - 1) lp_c)."""
    t = target.to(ACC)
    if SMOOTHING:
        t = t * (1.0 - smoothing) + smoothing / num_classes
    scale = tl.where(tile_mask, factors[:, None] * t, 0.0)
    if FROM_LOGITS:
        log_p = (x - top[None, :]) - tl.log(total)[None, :]
        loss, factor = _focal_from_log(log_p, p, _one_minus_p(x, e, top, total, p), scale, gamma)
        factor = tl.where(tile_mask, factor, 0.0)  # padding classes: 0 * NaN
        grad = p * tl.sum(factor, axis=0)[None, :] - factor
    else:
        loss, grad = _prob_focal(p, scale, gamma)
        grad = tl.where(tile_mask, grad, 0.0)
    return tl.sum(tl.where(tile_mask, loss, 0.0), axis=0), grad


@triton.jit
def _pixel_losses(x, p, e, top, total, hit, tile_mask, factors, alpha, gamma, smoothing, num_classes,
                  FROM_LOGITS: tl.constexpr, HAS_CLASS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
                  DENSE: tl.constexpr, ACC: tl.constexpr):
    """The per-pixel element loss and its backward factor. A class map without smoothing:
    a factor per pixel, softmax's A (dloss/dx_c = A (p_c - [c = y])) or for probabilities
    dloss/dp_y. DENSE or SMOOTHING: the [classes, pixels] tile dloss/dx (dloss/dp)."""
    if DENSE or SMOOTHING:
        loss, factor = _soft_terms(x, p, e, top, total, hit, tile_mask, factors, gamma, smoothing, num_classes,
                                   FROM_LOGITS, SMOOTHING, ACC)
    else:
        if HAS_CLASS_WEIGHT:
            scale = _label_factor(hit, factors)
        else:
            scale = tl.where(alpha >= 0.0, alpha, 1.0)
        if FROM_LOGITS:
            loss, factor = _focal_terms(x, e, top, total, hit, scale, gamma)
        else:
            loss, factor = _prob_focal_terms(p, hit, scale, gamma)
    return loss, factor


@triton.jit
def _stats_kernel(x_ptr, y_ptr, class_weight_ptr, class_partial_ptr, elem_partial_ptr, ok_ptr, finished_ptr,
                  num_classes, spatial, sample_stride, class_stride, pixel_stride, chunks_per_sample, steps,
                  ignore_index, focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, smoothing_hi,
                  smoothing_lo, REGION: tl.constexpr, SQUARED_PRED: tl.constexpr, ELEM: tl.constexpr,
                  FROM_LOGITS: tl.constexpr, HAS_IGNORE: tl.constexpr, CHECK_TARGET: tl.constexpr,
                  HAS_CLASS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr, DENSE: tl.constexpr,
                  WEIGHTED_MEAN: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
                  STAGES: tl.constexpr):
    focal_alpha, focal_gamma = focal_params(focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, ACC)
    smoothing = param(smoothing_hi, smoothing_lo, ACC)
    factors = _class_factors(class_weight_ptr, focal_alpha, num_classes, HAS_CLASS_WEIGHT, BLOCK_C, ACC)
    pid = tl.program_id(0).to(tl.int64)
    sample = pid // chunks_per_sample
    chunk = pid % chunks_per_sample
    sum_i = tl.zeros([BLOCK_C, BLOCK_S], ACC)
    sum_p = tl.zeros([BLOCK_C, BLOCK_S], ACC)
    sum_t = tl.zeros([BLOCK_C, BLOCK_S], ACC)
    sum_e = tl.zeros([BLOCK_S], ACC)
    count = tl.zeros([BLOCK_S], ACC)
    ok = tl.full([BLOCK_S], 1, tl.int32)
    for step in tl.range(0, steps, num_stages=STAGES):  # STAGES > 1: later tiles already loading
        pixels = (chunk * steps + step) * BLOCK_S + tl.arange(0, BLOCK_S)
        x, p, e, top, total, hit, valid, _, tile_mask, bad = _pixel_probabilities(
            x_ptr, y_ptr, sample, pixels, num_classes, spatial, sample_stride, class_stride, pixel_stride, ignore_index,
            HAS_IGNORE, FROM_LOGITS, DENSE, BLOCK_C, ACC)
        if REGION:
            if DENSE:
                sum_i += tl.where(valid[None, :], p * hit, 0.0)
            else:
                sum_i += tl.where(hit, p, 0.0)
            if SQUARED_PRED:
                sum_p += tl.where(valid[None, :], p * p, 0.0)
            else:
                sum_p += tl.where(valid[None, :], p, 0.0)
            if DENSE:
                if SQUARED_PRED:
                    sum_t += tl.where(valid[None, :], hit * hit, 0.0)
                else:
                    sum_t += tl.where(valid[None, :], hit, 0.0)
            else:  # one-hot: t squared is t
                sum_t += tl.where(hit, 1.0, 0.0)
        if ELEM:
            loss, _ = _pixel_losses(x, p, e, top, total, hit, tile_mask, factors, focal_alpha, focal_gamma, smoothing,
                                    num_classes, FROM_LOGITS, HAS_CLASS_WEIGHT, SMOOTHING, DENSE, ACC)
            sum_e += tl.where(valid, loss, 0.0)
            if WEIGHTED_MEAN:  # F.cross_entropy's weighted mean divides by sum of a_y
                count += tl.where(valid, _label_factor(hit, factors), 0.0)
            else:
                count += tl.where(valid, 1.0, 0.0)
        if CHECK_TARGET:
            ok = tl.where(bad, 0, ok)
    if CHECK_TARGET:
        tl.store(ok_ptr + pid, tl.min(ok, axis=0))
    classes = tl.arange(0, BLOCK_C)
    slots = class_partial_ptr + pid * 3 * num_classes + classes  # (parts, 3, C): the finalize reads classes in a row
    class_mask = classes < num_classes
    tl.store(slots, tl.sum(sum_i, axis=1), mask=class_mask)
    tl.store(slots + num_classes, tl.sum(sum_p, axis=1), mask=class_mask)
    tl.store(slots + 2 * num_classes, tl.sum(sum_t, axis=1), mask=class_mask)
    tl.store(elem_partial_ptr + pid * 2 + 0, tl.sum(sum_e, axis=0))
    tl.store(elem_partial_ptr + pid * 2 + 1, tl.sum(count, axis=0))
    if pid == 0:  # the finalize's count of finished programs: zeroed here, not by a memset launch
        tl.store(finished_ptr, 0)


@triton.jit
def _group_sums(class_partial_ptr, first_part, classes, class_mask, parts_per_group, part_stride, stat_stride,
                class_stride, CLASS_BLOCK: tl.constexpr, PART_BLOCK: tl.constexpr, ACC: tl.constexpr):
    """I, P and T of a block of groups (classes of one row of groups), each summed over the row's parts in a
    fixed order, a [classes, parts] tile a step. The stats kernel's (parts, 3, C) layout puts a part's
    classes side by side: each part of a tile is one contiguous read."""
    sum_i = tl.zeros([CLASS_BLOCK, PART_BLOCK], ACC)
    sum_p = tl.zeros([CLASS_BLOCK, PART_BLOCK], ACC)
    sum_t = tl.zeros([CLASS_BLOCK, PART_BLOCK], ACC)
    for part_start in range(0, parts_per_group, PART_BLOCK):
        parts = part_start + tl.arange(0, PART_BLOCK)
        tile_mask = class_mask[:, None] & (parts < parts_per_group)[None, :]
        slots = class_partial_ptr + (first_part + parts)[None, :] * part_stride + classes[:, None] * class_stride
        sum_i += tl.where(tile_mask, tl.load(slots, mask=tile_mask), 0.0)
        sum_p += tl.where(tile_mask, tl.load(slots + stat_stride, mask=tile_mask), 0.0)
        sum_t += tl.where(tile_mask, tl.load(slots + 2 * stat_stride, mask=tile_mask), 0.0)
    return tl.sum(sum_i, axis=1), tl.sum(sum_p, axis=1), tl.sum(sum_t, axis=1)


@triton.jit
def _elem_sums(elem_partial_ptr, num_parts, ELEM_BLOCK: tl.constexpr, ACC: tl.constexpr):
    """(E, valid pixels) over every part: the (parts, 2) partials read as one run, E in the even slots."""
    sums = tl.zeros([ELEM_BLOCK], ACC)
    for start in range(0, 2 * num_parts, ELEM_BLOCK):
        slots = start + tl.arange(0, ELEM_BLOCK)
        mask = slots < 2 * num_parts
        sums += tl.where(mask, tl.load(elem_partial_ptr + slots, mask=mask), 0.0)
    is_loss = tl.arange(0, ELEM_BLOCK) % 2 == 0
    return tl.sum(tl.where(is_loss, sums, 0.0), axis=0), tl.sum(tl.where(is_loss, 0.0, sums), axis=0)


@triton.jit
def _mean_scale(counted, ACC: tl.constexpr):
    # 'mean': 1 / the number of groups that count (1 where none does).
    return 1.0 / tl.maximum(counted.to(ACC), 1.0)


# Finalize programs' totals, or groups' coefficients, the last finalize program reads a step.
COMBINE_BLOCK: tl.constexpr = tl.constexpr(1024)


@triton.jit
def _program_totals(total_ptr, programs, ACC: tl.constexpr):
    """Sums of every finalize program's (weighted region total, groups counted), in a fixed order. Read
    at the L2 (.cg), where the other programs wrote them."""
    totals = tl.zeros([COMBINE_BLOCK], ACC)
    counted = tl.zeros([COMBINE_BLOCK], ACC)
    for start in range(0, programs, COMBINE_BLOCK):
        index = start + tl.arange(0, COMBINE_BLOCK)
        mask = index < programs
        slots = total_ptr + index.to(tl.int64) * 2
        totals += tl.where(mask, tl.load(slots, mask=mask, cache_modifier=".cg"), 0.0)
        counted += tl.where(mask, tl.load(slots + 1, mask=mask, cache_modifier=".cg"), 0.0)
    return tl.sum(totals, axis=0), tl.sum(counted, axis=0)


@triton.jit
def _scale_coefficients(coef_ptr, num_groups, scale):
    """coef[:, :2] *= scale over every group, as the other programs wrote them (read at the L2)."""
    for start in range(0, num_groups, COMBINE_BLOCK):
        groups = start + tl.arange(0, COMBINE_BLOCK)
        mask = groups < num_groups
        slots = coef_ptr + groups.to(tl.int64) * 3
        tl.store(slots, tl.load(slots, mask=mask, cache_modifier=".cg") * scale, mask=mask)
        tl.store(slots + 1, tl.load(slots + 1, mask=mask, cache_modifier=".cg") * scale, mask=mask)


@triton.jit
def _finalize_kernel(class_partial_ptr, elem_partial_ptr, weight_ptr, loss_ptr, coef_ptr, total_ptr, finished_ptr,
                     num_classes, parts_per_group, num_parts, part_stride, stat_stride, class_stride, tv_alpha_hi,
                     tv_alpha_lo, tv_beta_hi, tv_beta_lo, smooth_nr_hi, smooth_nr_lo, smooth_dr_hi, smooth_dr_lo,
                     region_gamma_hi, region_gamma_lo, region_weight_hi, region_weight_lo, elem_weight_hi,
                     elem_weight_lo, REGION: tl.constexpr, LOG_LOSS: tl.constexpr, ELEM: tl.constexpr,
                     HAS_WEIGHT: tl.constexpr, ELEM_MEAN: tl.constexpr, INCLUDE_BACKGROUND: tl.constexpr,
                     EXCLUDE_EMPTY: tl.constexpr, REDUCTION: tl.constexpr, CLASS_BLOCK: tl.constexpr,
                     PART_BLOCK: tl.constexpr, ELEM_BLOCK: tl.constexpr, ACC: tl.constexpr):
    # REDUCTION: 0 = 'none', 1 = 'mean' (over the groups that count), 2 = 'sum'.
    # A program per CLASS_BLOCK groups of one row: group = row * C + class, a row being a sample (its
    # parts_per_group chunks) with per_sample, else the one row (every part).
    tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight, elem_weight = finalize_params(
        tv_alpha_hi, tv_alpha_lo, tv_beta_hi, tv_beta_lo, smooth_nr_hi, smooth_nr_lo, smooth_dr_hi, smooth_dr_lo,
        region_gamma_hi, region_gamma_lo, region_weight_hi, region_weight_lo, elem_weight_hi, elem_weight_lo, ACC)
    pid = tl.program_id(0).to(tl.int64)
    programs = tl.num_programs(0)
    class_blocks = tl.cdiv(num_classes, CLASS_BLOCK)
    rows = programs // class_blocks
    row = pid // class_blocks
    classes = (pid % class_blocks) * CLASS_BLOCK + tl.arange(0, CLASS_BLOCK)
    class_mask = classes < num_classes
    groups = row * num_classes + classes

    # The element term: sum over every part, mean over valid pixels (or their summed a_y). Each program
    # sums the element partials itself (2 per stats program) for its groups' coefficients.
    elem_sum = tl.zeros([], ACC)
    valid_pixels = tl.zeros([], ACC)
    if ELEM:
        elem_sum, valid_pixels = _elem_sums(elem_partial_ptr, num_parts, ELEM_BLOCK, ACC)
    if ELEM_MEAN:
        # valid_pixels: a count, or (weighted mean) a sum of class weights that may lie in (0, 1).
        elem_scale = elem_weight / tl.where(valid_pixels > 0.0, valid_pixels, 1.0)
    else:
        elem_scale = elem_weight + tl.zeros([], ACC)

    if REGION or EXCLUDE_EMPTY:
        sum_i, sum_p, sum_t = _group_sums(class_partial_ptr, row * parts_per_group, classes, class_mask,
                                          parts_per_group, part_stride, stat_stride, class_stride, CLASS_BLOCK,
                                          PART_BLOCK, ACC)
    else:  # focal / CE alone: no class statistics were gathered
        sum_i = tl.zeros([CLASS_BLOCK], ACC)
        sum_p = tl.zeros([CLASS_BLOCK], ACC)
        sum_t = tl.zeros([CLASS_BLOCK], ACC)
    keep = class_mask
    if not INCLUDE_BACKGROUND:
        keep = keep & (classes != 0)
    if EXCLUDE_EMPTY:
        keep = keep & (sum_t > 0.0)
    # The mean's denominator: every row's classes (less the background) unless empty groups are
    # excluded; then only the last program knows it, and rescales the coefficients written here.
    if REDUCTION == 1 and not EXCLUDE_EMPTY:
        if INCLUDE_BACKGROUND:
            out_scale = _mean_scale(rows * num_classes, ACC)
        else:
            out_scale = _mean_scale(rows * (num_classes - 1), ACC)
    else:
        out_scale = tl.full([], 1.0, ACC)
    if HAS_WEIGHT:
        group_weight = tl.load(weight_ptr + classes, mask=class_mask, other=0.0).to(ACC)
    else:
        group_weight = tl.full([CLASS_BLOCK], 1.0, ACC)
    group_weight = tl.where(keep, group_weight, 0.0)
    coef_i = tl.zeros([CLASS_BLOCK], ACC)
    coef_p = tl.zeros([CLASS_BLOCK], ACC)
    weighted = tl.zeros([CLASS_BLOCK], ACC)
    if REGION:
        region, dregion_di, dregion_dp = region_terms(sum_i, sum_p, sum_t, tv_alpha, tv_beta, smooth_nr, smooth_dr,
                                                      region_gamma, LOG_LOSS)
        weighted = group_weight * region_weight * region
        # Groups that do not count get exactly 0 (not 0 * a huge coefficient). The scale last: the
        # last program's rescale (exclude_empty) is the same product.
        coef_i = tl.where(keep, group_weight * region_weight * dregion_di * out_scale, 0.0)
        coef_p = tl.where(keep, group_weight * region_weight * dregion_dp * out_scale, 0.0)
    if REDUCTION == 0:
        tl.store(loss_ptr + groups, weighted, mask=class_mask)
    coef_slots = coef_ptr + groups * 3
    tl.store(coef_slots + 0, coef_i, mask=class_mask)
    tl.store(coef_slots + 1, coef_p, mask=class_mask)
    tl.store(coef_slots + 2, tl.zeros([CLASS_BLOCK], ACC) + elem_scale, mask=class_mask)
    if REDUCTION != 0:
        tl.store(total_ptr + pid * 2, tl.sum(weighted, axis=0))
        tl.store(total_ptr + pid * 2 + 1, tl.sum(tl.where(keep, 1.0, 0.0), axis=0))
        # The last program to finish adds every program's totals (finished_ptr is zeroed before the
        # launch). The barrier puts all this program's stores before its count, whose release
        # publishes them to the last program's acquire.
        tl.debug_barrier()
        if tl.atomic_add(finished_ptr, 1, sem="acq_rel", scope="gpu") == programs - 1:
            total, counted = _program_totals(total_ptr, programs, ACC)
            loss_scale = out_scale
            if REDUCTION == 1 and EXCLUDE_EMPTY:
                loss_scale = _mean_scale(counted, ACC)
                _scale_coefficients(coef_ptr, rows * num_classes, loss_scale)
            tl.store(loss_ptr, total * loss_scale + elem_scale * elem_sum)


@triton.jit
def _backward_kernel(x_ptr, y_ptr, class_weight_ptr, coef_ptr, grad_out_ptr, grad_ptr, num_classes, spatial,
                     sample_stride, class_stride, pixel_stride, chunks_per_sample, steps, ignore_index,
                     grad_out_group_stride, focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo,
                     smoothing_hi, smoothing_lo, REGION: tl.constexpr, SQUARED_PRED: tl.constexpr,
                     ELEM: tl.constexpr, FROM_LOGITS: tl.constexpr, HAS_IGNORE: tl.constexpr, PER_SAMPLE: tl.constexpr,
                     GRAD_OUT_PER_PIXEL: tl.constexpr, HAS_CLASS_WEIGHT: tl.constexpr, SMOOTHING: tl.constexpr,
                     DENSE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
                     GRAD_BF16: tl.constexpr, STAGES: tl.constexpr):
    focal_alpha, focal_gamma = focal_params(focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, ACC)
    smoothing = param(smoothing_hi, smoothing_lo, ACC)
    factors = _class_factors(class_weight_ptr, focal_alpha, num_classes, HAS_CLASS_WEIGHT, BLOCK_C, ACC)
    pid = tl.program_id(0).to(tl.int64)
    sample = pid // chunks_per_sample
    chunk = pid % chunks_per_sample
    classes = tl.arange(0, BLOCK_C)
    class_mask = classes < num_classes
    if PER_SAMPLE:
        groups = sample * num_classes + classes
    else:
        groups = classes.to(tl.int64)
    if GRAD_OUT_PER_PIXEL:  # the focal map's backward: the upstream gradient is a map
        coef_i = tl.zeros([BLOCK_C], ACC)
        coef_p = tl.zeros([BLOCK_C], ACC)
        coef_e = tl.full([], 1.0, ACC)
    else:
        upstream = tl.load(grad_out_ptr + groups * grad_out_group_stride, mask=class_mask, other=0.0).to(ACC)
        coef_i = tl.load(coef_ptr + groups * 3 + 0, mask=class_mask, other=0.0) * upstream
        coef_p = tl.load(coef_ptr + groups * 3 + 1, mask=class_mask, other=0.0) * upstream
        coef_e = tl.load(coef_ptr + 2) * tl.load(grad_out_ptr).to(ACC)  # element term: scalar outputs only
    for step in tl.range(0, steps, num_stages=STAGES):  # STAGES > 1: later tiles already loading
        pixels = (chunk * steps + step) * BLOCK_S + tl.arange(0, BLOCK_S)
        x, p, e, top, total, hit, valid, offsets, tile_mask, _ = _pixel_probabilities(
            x_ptr, y_ptr, sample, pixels, num_classes, spatial, sample_stride, class_stride, pixel_stride, ignore_index,
            HAS_IGNORE, FROM_LOGITS, DENSE, BLOCK_C, ACC)
        grad = tl.zeros([BLOCK_C, BLOCK_S], ACC)
        if REGION:
            # g_c = dL/dp_c of the region term: c_I t_c + c_P (squared_pred: c_P * 2 p_c)
            if DENSE:
                region_i = coef_i[:, None] * hit
            else:
                region_i = tl.where(hit, coef_i[:, None], 0.0)
            if SQUARED_PRED:
                g = region_i + coef_p[:, None] * (2.0 * p)
            else:
                g = region_i + coef_p[:, None]
            g = tl.where(valid[None, :], g, 0.0)
            if FROM_LOGITS:  # through the softmax's Jacobian
                grad += p * (g - tl.sum(p * g, axis=0)[None, :])
            else:
                grad += g
        if ELEM:
            _, factor = _pixel_losses(x, p, e, top, total, hit, tile_mask, factors, focal_alpha, focal_gamma,
                                      smoothing, num_classes, FROM_LOGITS, HAS_CLASS_WEIGHT, SMOOTHING, DENSE, ACC)
            if GRAD_OUT_PER_PIXEL:
                upstream_map = tl.load(grad_out_ptr + sample * spatial + pixels, mask=pixels < spatial,
                                       other=0.0).to(ACC)
            if DENSE or SMOOTHING:  # factor: the tile dloss/dx (dloss/dp) itself
                if GRAD_OUT_PER_PIXEL:
                    factor = factor * upstream_map[None, :]
                grad += tl.where(valid[None, :], factor * coef_e, 0.0)
            else:
                if GRAD_OUT_PER_PIXEL:
                    factor = factor * upstream_map
                factor = tl.where(valid, factor * coef_e, 0.0)
                if FROM_LOGITS:
                    grad += factor[None, :] * (p - tl.where(hit, 1.0, 0.0))
                else:  # dloss/dp_y, on the target class only
                    grad += tl.where(hit, factor[None, :], 0.0)
        # Ignored pixels count nowhere, whatever their logits (a NaN there is NaN in p).
        store_as(grad_ptr + offsets, tl.where(valid[None, :], grad, 0.0), tile_mask, GRAD_BF16)


@triton.jit
def _focal_map_kernel(x_ptr, y_ptr, class_weight_ptr, out_ptr, ok_ptr, num_classes, spatial, sample_stride,
                      class_stride, pixel_stride, chunks_per_sample, ignore_index, focal_alpha_hi, focal_alpha_lo,
                      focal_gamma_hi, focal_gamma_lo, FROM_LOGITS: tl.constexpr, HAS_IGNORE: tl.constexpr,
                      CHECK_TARGET: tl.constexpr, HAS_CLASS_WEIGHT: tl.constexpr, DENSE: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr, OUT_BF16: tl.constexpr):
    focal_alpha, focal_gamma = focal_params(focal_alpha_hi, focal_alpha_lo, focal_gamma_hi, focal_gamma_lo, ACC)
    factors = _class_factors(class_weight_ptr, focal_alpha, num_classes, HAS_CLASS_WEIGHT, BLOCK_C, ACC)
    pid = tl.program_id(0).to(tl.int64)
    sample = pid // chunks_per_sample
    pixels = (pid % chunks_per_sample) * BLOCK_S + tl.arange(0, BLOCK_S)
    x, p, e, top, total, hit, valid, _, tile_mask, bad = _pixel_probabilities(
        x_ptr, y_ptr, sample, pixels, num_classes, spatial, sample_stride, class_stride, pixel_stride, ignore_index,
        HAS_IGNORE, FROM_LOGITS, DENSE, BLOCK_C, ACC)
    loss, _ = _pixel_losses(x, p, e, top, total, hit, tile_mask, factors, focal_alpha, focal_gamma, 0.0, num_classes,
                            FROM_LOGITS, HAS_CLASS_WEIGHT, False, DENSE, ACC)
    store_as(out_ptr + sample * spatial + pixels, tl.where(valid, loss, 0.0), pixels < spatial, OUT_BF16)
    if CHECK_TARGET:
        tl.store(ok_ptr + pid, tl.min(tl.where(bad, 0, 1), axis=0))


# ----------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------


# The forward's partials (each stats program's class and element sums and its target flag) take at most
# 1/20 (5%) of the input's bytes: a floor on the pixels a stats program takes.
INPUT_BYTES_PER_PARTIAL_BYTE = 20


def partial_row_bytes(num_classes: int, acc_size: int) -> int:
    """One stats program's partials: I, P, T per class and (E, valid pixels) in the accumulator type,
    and its target flag (int32, where the target is checked; counted always)."""
    return (3 * num_classes + 2) * acc_size + 4


def cuda_tile(input_size: int) -> int:
    """The [classes, pixels] tile of the streaming kernels on CUDA, by the logits' element size: 8
    values a thread in fp32, 4 in bf16 / fp16 (at 16, the kernels took 150-230 registers and one CTA
    per SM; bf16's Dice+CE at 8 still 140-180), for 2 CTAs of 8 warps per SM at up to 32 classes
    (bench/results/triton-sm90.md)."""
    return 2048 if input_size >= 4 else 1024


# The streaming loops' software pipelining (tl.range's num_stages; the interpreter ignores it):
# the next tiles' loads are asynchronous copies to shared memory while one is computed. At 2-4
# CTAs per SM (the tile's registers) a plain loop has one tile per CTA in flight.
PIPELINE_STAGES = 3


class LaunchPlan:
    """Tiles of [all classes, block_s pixels]; each program takes `steps` consecutive tiles of one sample.

    A pure function of the shape, the input's and the accumulators' element sizes, the device type and the
    SM count (``for_shape``), so a given input always reduces in the same order. Programs: on CUDA about 8
    per SM (4 in the interpreter); with ``partials`` (the forward's statistics), fewer and longer where
    that many would make the partials more than 1/20 of the input's bytes (many classes: a tile is then
    a few pixels). A program never spans samples, so a tiny input, whose samples hold fewer than about
    60 * acc_size / input_size pixels (one partial row is then more than 1/20 of a sample), gets one
    chunk per sample, and its partials exceed 5% (``partial_bytes`` says by how much)."""

    def __init__(self, input: torch.Tensor, partials: bool = True):
        cuda = input.device.type == "cuda"
        self._choose(tuple(input.shape), input.element_size(), acc_dtypes(input)[0].itemsize, input.device.type,
                     sm_count(input.device) if cuda else 0, partials)

    @classmethod
    def for_shape(cls, shape, input_size: int, acc_size: int, device_type: str, sms: int = 0,
                  partials: bool = True) -> "LaunchPlan":
        plan = cls.__new__(cls)
        plan._choose(tuple(shape), input_size, acc_size, device_type, sms, partials)
        return plan

    def _choose(self, shape, input_size, acc_size, device_type, sms, partials):
        batch, classes = shape[0], shape[1]
        self.spatial = math.prod(shape[2:])
        self.block_c = triton.next_power_of_2(classes)
        if device_type == "cuda":
            tile, self.num_warps = cuda_tile(input_size), 8
            target_programs = 8 * sms
        else:  # Triton interpreter: large tiles, few programs
            tile, self.num_warps = 16384, 4
            target_programs = 4
        self.block_s = max(1, min(tile // self.block_c, triton.next_power_of_2(self.spatial)))
        tiles_per_sample = triton.cdiv(self.spatial, self.block_s)
        steps = triton.cdiv(batch * tiles_per_sample, target_programs)
        row_bytes = partial_row_bytes(classes, acc_size)
        if partials:
            sample_bytes = classes * self.spatial * input_size
            max_chunks = max(1, sample_bytes // (INPUT_BYTES_PER_PARTIAL_BYTE * row_bytes))
            steps = max(steps, triton.cdiv(tiles_per_sample, max_chunks))
        self.steps = max(1, min(tiles_per_sample, steps))
        self.chunks_per_sample = triton.cdiv(tiles_per_sample, self.steps)
        self.programs = batch * self.chunks_per_sample
        self.partial_bytes = self.programs * row_bytes if partials else 0
        check_programs(self.programs, batch, "sample")


# A finalize program's classes: 16 contiguous values of a part's statistic are 64 (fp32) or 128 (fp64)
# bytes, whole 32-byte sectors, and C = 19 already gets 2 programs.
FINALIZE_CLASS_BLOCK = 16
FINALIZE_TILE = 2048  # partial values a finalize program loads a step, per statistic
FINALIZE_NUM_WARPS = 8  # 3 statistics' tiles of 2048 values: 24 a thread (fp64 in about 130 registers)


class FinalizePlan(NamedTuple):
    """The finalize's grid: a program per class_block classes of each row of groups (rows: the samples
    with per_sample, else 1), summing the row's parts part_block at a time."""

    class_block: int
    part_block: int
    elem_block: int  # element partials (2 per stats program) summed a step
    programs: int


def finalize_plan(rows: int, num_classes: int, parts_per_group: int, num_parts: int) -> FinalizePlan:
    """The same on every device: a function of the group and part counts only."""
    class_block = min(FINALIZE_CLASS_BLOCK, triton.next_power_of_2(num_classes))
    part_block = min(triton.next_power_of_2(parts_per_group), FINALIZE_TILE // class_block)
    elem_block = min(triton.next_power_of_2(2 * num_parts), FINALIZE_TILE)
    programs = rows * triton.cdiv(num_classes, class_block)
    check_programs(programs, rows, "sample")
    return FinalizePlan(class_block, part_block, elem_block, programs)


def _ignore(ignore_index, dense=False):
    if dense and ignore_index is not None:
        raise ValueError(f"dense (per-class) targets take no ignore_index, got ignore_index={ignore_index!r}")
    return (ignore_index, True) if ignore_index is not None else (0, False)


def _from_logits(from_logits, clamped_log) -> bool:
    """The kernels take softmax logits with the exact log-softmax, or probabilities with
    the clamped log (as F.nll_loss(log(p).clamp(min=-100))): no other combination."""
    if from_logits == clamped_log:
        raise ValueError(
            f"multiclass kernels take from_logits=True with clamped_log=False (softmax) or from_logits=False with "
            f"clamped_log=True (probabilities), not from_logits={from_logits}, clamped_log={clamped_log}"
        )
    return from_logits


def _class_weight(class_weight, elem, placeholder):
    """(pointer, HAS_CLASS_WEIGHT): the element term's per-class factors, only where it is on."""
    if class_weight is None or not elem:
        return placeholder, False
    return class_weight.contiguous(), True


def _check_flags(ok, y, dense, num_classes, ignore_index):
    """Raise for a flagged target: dense values outside [0, 1], or class indices outside [0, C)."""
    if dense:
        kernel_target_flags(ok, y)
    else:
        kernel_target_flags(ok, y, num_classes, ignore_index)


def _stats(input, target, class_weight, region, squared_pred, elem, focal_alpha, focal_gamma, label_smoothing,
           weighted_mean, from_logits, clamped_log, ignore_index, check_target):
    """Launch the statistics kernel: class partials (programs, 3, C), element partials (programs, 2),
    the finalize's count of finished programs (zeroed by this launch) and the plan."""
    acc, ACC = acc_dtypes(input)
    x, y, strides, _, dense = multiclass_operands(input, target)
    plan = LaunchPlan(x)
    ignore_value, has_ignore = _ignore(ignore_index, dense)
    weights, has_class_weight = _class_weight(class_weight, elem, x)
    class_partials = torch.empty((plan.programs, 3, x.shape[1]), dtype=acc, device=x.device)
    elem_partials = torch.empty((plan.programs, 2), dtype=acc, device=x.device)
    finished = torch.empty(1, dtype=torch.int32, device=x.device)
    ok = target_flags(plan.programs, x.device, check_target)
    _stats_kernel[(plan.programs,)](x, y, weights, class_partials, elem_partials, ok, finished, x.shape[1],
                                    plan.spatial, *strides, plan.chunks_per_sample, plan.steps, ignore_value,
                                    *split(focal_alpha), *split(focal_gamma), *split(label_smoothing), REGION=region,
                                    SQUARED_PRED=region and squared_pred, ELEM=elem,
                                    FROM_LOGITS=_from_logits(from_logits, clamped_log), HAS_IGNORE=has_ignore,
                                    CHECK_TARGET=check_target, HAS_CLASS_WEIGHT=has_class_weight,
                                    SMOOTHING=elem and label_smoothing != 0.0, DENSE=dense,
                                    WEIGHTED_MEAN=elem and weighted_mean and not dense, BLOCK_C=plan.block_c,
                                    BLOCK_S=plan.block_s, ACC=ACC, STAGES=PIPELINE_STAGES, num_warps=plan.num_warps)
    if check_target:
        _check_flags(ok, y, dense, x.shape[1], ignore_index)
    return class_partials, elem_partials, finished, plan


def _finalize(class_partials, elem_partials, finished, rows, weight, region, tv_alpha, tv_beta, smooth_nr, smooth_dr,
              region_gamma, region_weight, log_loss, elem, elem_weight, elem_mean, include_background, exclude_empty,
              reduction, loss_shape):
    """Launch the finalize kernel over class partials (parts, 3, C), any strides, the parts of each of
    ``rows`` rows of groups consecutive; ``finished``: a zeroed int32."""
    parts, _, num_classes = class_partials.shape
    ACC = tl.float64 if class_partials.dtype == torch.float64 else tl.float32
    code = REDUCTION_CODE[reduction]
    loss = class_partials.new_empty(tuple(loss_shape) if code == 0 else ())
    coef = class_partials.new_empty((rows * num_classes, 3))
    plan = finalize_plan(rows, num_classes, parts // rows, elem_partials.shape[0])
    totals = class_partials.new_empty((plan.programs, 2))  # each program's (region total, groups counted)
    _finalize_kernel[(plan.programs,)](class_partials, elem_partials,
                                       weight.contiguous() if weight is not None else elem_partials, loss, coef,
                                       totals, finished, num_classes, parts // rows, elem_partials.shape[0],
                                       *class_partials.stride(), *split(tv_alpha), *split(tv_beta),
                                       *split(smooth_nr), *split(smooth_dr), *split(region_gamma),
                                       *split(region_weight), *split(elem_weight), REGION=region,
                                       LOG_LOSS=region and log_loss, ELEM=elem, HAS_WEIGHT=weight is not None,
                                       ELEM_MEAN=elem_mean, INCLUDE_BACKGROUND=include_background,
                                       EXCLUDE_EMPTY=exclude_empty, REDUCTION=code, CLASS_BLOCK=plan.class_block,
                                       PART_BLOCK=plan.part_block, ELEM_BLOCK=plan.elem_block, ACC=ACC,
                                       num_warps=FINALIZE_NUM_WARPS)
    return loss, coef


def _loss_shape(input, per_sample):
    return (input.shape[0], input.shape[1]) if per_sample else (input.shape[1],)


@on_input_device
def multiclass_loss(input, target, weight, class_weight, per_sample, region, tv_alpha, tv_beta, smooth_nr, smooth_dr,
                    region_gamma, region_weight, log_loss, squared_pred, min_intersection, elem, focal_alpha,
                    focal_gamma, focal_form, elem_weight, elem_mean, label_smoothing, weighted_mean, from_logits,
                    clamped_log, ignore_index, include_background, exclude_empty, reduction, check_target):
    check_min_intersection(squared_pred, min_intersection, multiclass=True)  # the op takes the whole LossSpec
    check_focal_form(focal_form, from_logits, clamped_log, multiclass=True)
    class_partials, elem_partials, finished, _ = _stats(input, target, class_weight, region, squared_pred, elem,
                                                        focal_alpha, focal_gamma, label_smoothing, weighted_mean,
                                                        from_logits, clamped_log, ignore_index, check_target)
    return _finalize(class_partials, elem_partials, finished, input.shape[0] if per_sample else 1, weight, region,
                     tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight, log_loss, elem, elem_weight,
                     elem_mean, include_background, exclude_empty, reduction, _loss_shape(input, per_sample))


@on_input_device
def multiclass_stats(input, target, class_weight, per_sample, region, squared_pred, elem, focal_alpha, focal_gamma,
                     label_smoothing, weighted_mean, from_logits, clamped_log, ignore_index, check_target):
    class_partials, elem_partials, _, plan = _stats(input, target, class_weight, region, squared_pred, elem,
                                                    focal_alpha, focal_gamma, label_smoothing, weighted_mean,
                                                    from_logits, clamped_log, ignore_index, check_target)
    rows, classes = (input.shape[0] if per_sample else 1), input.shape[1]  # a row of groups per sample, or one
    # (groups, 3) sums, rows * C groups: the (parts, 3, C) partials summed over each row's parts into place.
    parts = class_partials.view(rows, plan.programs // rows, 3, classes).transpose(2, 3)
    class_sums = torch.sum(parts, dim=1, out=class_partials.new_empty((rows, classes, 3)))
    return class_sums.view(-1, 3), elem_partials.sum(0)


@on_input_device
def multiclass_finalize(class_sums, elem_sums, weight, num_classes, per_sample, region, tv_alpha, tv_beta, smooth_nr,
                        smooth_dr, region_gamma, region_weight, log_loss, elem, elem_weight, elem_mean,
                        include_background, exclude_empty, reduction, loss_shape):
    # The (groups, 3) sums read as partials (rows, 3, C) of one part per row. No stats launch zeroes the
    # count of finished programs here: a memset (this path's all-reduce costs far more).
    rows = class_sums.shape[0] // num_classes
    finished = torch.zeros(1, dtype=torch.int32, device=class_sums.device)
    return _finalize(class_sums.contiguous().view(rows, num_classes, 3).transpose(1, 2),
                     elem_sums.contiguous().view(1, 2), finished, rows, weight, region, tv_alpha, tv_beta, smooth_nr,
                     smooth_dr, region_gamma, region_weight, log_loss, elem, elem_weight, elem_mean,
                     include_background, exclude_empty, reduction, loss_shape)


@on_input_device
def multiclass_loss_backward(grad_loss, input, target, coef, class_weight, per_sample, region, squared_pred, elem,
                             focal_alpha, focal_gamma, label_smoothing, from_logits, clamped_log, ignore_index):
    _, ACC = acc_dtypes(input)
    x, y, strides, _, dense = multiclass_operands(input, target)
    plan = LaunchPlan(x, partials=False)
    ignore_value, has_ignore = _ignore(ignore_index, dense)
    weights, has_class_weight = _class_weight(class_weight, elem, x)
    grad = torch.empty_like(x)  # x's strides: written at the offsets read
    _backward_kernel[(plan.programs,)](x, y, weights, coef, grad_loss.contiguous(), writable(grad), x.shape[1],
                                       plan.spatial, *strides, plan.chunks_per_sample, plan.steps, ignore_value,
                                       1 if grad_loss.dim() > 0 else 0, *split(focal_alpha), *split(focal_gamma),
                                       *split(label_smoothing), REGION=region, SQUARED_PRED=region and squared_pred,
                                       ELEM=elem, FROM_LOGITS=_from_logits(from_logits, clamped_log),
                                       HAS_IGNORE=has_ignore, PER_SAMPLE=per_sample, GRAD_OUT_PER_PIXEL=False,
                                       HAS_CLASS_WEIGHT=has_class_weight, SMOOTHING=elem and label_smoothing != 0.0,
                                       DENSE=dense, BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, ACC=ACC,
                                       GRAD_BF16=x.dtype == torch.bfloat16, STAGES=PIPELINE_STAGES,
                                       num_warps=plan.num_warps)
    return grad


class _MapLaunch(NamedTuple):
    """What the focal map's forward and backward launch over: a tile of pixels a program."""

    acc: tl.dtype
    x: torch.Tensor
    y: torch.Tensor
    strides: tuple
    dense: bool
    plan: LaunchPlan
    ignore_value: int
    has_ignore: bool
    weights: torch.Tensor  # class_weight, or a placeholder
    has_class_weight: bool
    tiles: int  # per sample
    grid: tuple


def _map_launch(input, target, class_weight, ignore_index) -> _MapLaunch:
    _, ACC = acc_dtypes(input)
    x, y, strides, _, dense = multiclass_operands(input, target)
    plan = LaunchPlan(x, partials=False)
    tiles = triton.cdiv(plan.spatial, plan.block_s)
    return _MapLaunch(ACC, x, y, strides, dense, plan, *_ignore(ignore_index, dense),
                      *_class_weight(class_weight, True, x), tiles, (x.shape[0] * tiles,))


@on_input_device
def multiclass_focal_map(input, target, class_weight, alpha, gamma, from_logits, clamped_log, ignore_index,
                         check_target):
    launch = _map_launch(input, target, class_weight, ignore_index)
    x, y, plan = launch.x, launch.y, launch.plan
    out = torch.empty(x.shape[:1] + x.shape[2:], dtype=x.dtype, device=x.device)  # per pixel
    ok = target_flags(launch.grid[0], x.device, check_target)
    _focal_map_kernel[launch.grid](x, y, launch.weights, writable(out), ok, x.shape[1], plan.spatial, *launch.strides,
                                   launch.tiles, launch.ignore_value, *split(alpha), *split(gamma),
                                   FROM_LOGITS=_from_logits(from_logits, clamped_log), HAS_IGNORE=launch.has_ignore,
                                   CHECK_TARGET=check_target, HAS_CLASS_WEIGHT=launch.has_class_weight,
                                   DENSE=launch.dense, BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, ACC=launch.acc,
                                   OUT_BF16=x.dtype == torch.bfloat16, num_warps=plan.num_warps)
    if check_target:
        _check_flags(ok, y, launch.dense, x.shape[1], ignore_index)
    return out


@on_input_device
def multiclass_focal_map_backward(grad_map, input, target, class_weight, alpha, gamma, from_logits, clamped_log,
                                  ignore_index):
    launch = _map_launch(input, target, class_weight, ignore_index)
    x, y, plan = launch.x, launch.y, launch.plan
    grad = torch.empty_like(x)  # x's strides: written at the offsets read
    # One tile a program (steps = 1): no later tile to load ahead, so STAGES=1.
    _backward_kernel[launch.grid](x, y, launch.weights, x, grad_map.contiguous(), writable(grad), x.shape[1],
                                  plan.spatial, *launch.strides, launch.tiles, 1, launch.ignore_value, 0,
                                  *split(alpha), *split(gamma), *split(0.0), REGION=False, SQUARED_PRED=False,
                                  ELEM=True, FROM_LOGITS=_from_logits(from_logits, clamped_log),
                                  HAS_IGNORE=launch.has_ignore, PER_SAMPLE=False, GRAD_OUT_PER_PIXEL=True,
                                  HAS_CLASS_WEIGHT=launch.has_class_weight, SMOOTHING=False, DENSE=launch.dense,
                                  BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, ACC=launch.acc,
                                  GRAD_BF16=x.dtype == torch.bfloat16, STAGES=1, num_warps=plan.num_warps)
    return grad
