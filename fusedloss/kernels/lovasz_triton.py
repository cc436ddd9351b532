"""Triton kernels for the Lovász losses' six primitives (the contract: the Lovász spec; the
ops are assembled around torch.sort by ``fusedloss/ops/lovasz.py``).

  errors     ``binary_lovasz_errors`` / ``multiclass_lovasz_errors``: per element (binary) or per
             (class, pixel) (multi-class, softmax over the classes in acc) the error e and the truth t,
             laid out as rows (G, L) / (G, C, L); an ignored element or pixel: e = -inf, t = 0.
  rows       ``lovasz_rows`` / ``lovasz_rows_backward``: the scan over each sorted row, in float64.
             Rows are cut into chunks of a fixed size (``_ROW_CHUNK``; a shorter row: one chunk of its
             length rounded up to a power of 2; never a function of the grid or the device):
             ``_chunk_totals_kernel`` writes each (row, chunk)'s sum of the gathered truth
             t_i = truth[r, order[r, i]]; an exclusive prefix over the chunks (torch.cumsum of that
             small fp64 tensor) gives every chunk its carry; ``_rows_kernel`` scans its chunk from the
             carry and writes a partial loss per (row, chunk), summed in torch in a fixed order
             (forward), or scatters grad_loss[r] * g_i to grad_errors[r, order[r, i]] (backward: each
             position exactly once, as order is a permutation). No atomics: bitwise reproducible.
  chain      ``binary_lovasz_chain`` / ``multiclass_lovasz_chain``: dL/dinput from dL/derrors,
             recomputing e (and the softmax) from input and target.

The multi-class kernels take one sample and a block of pixels a program and walk the classes in
blocks of BLOCK_C: one block holds every class of a small C (ONE_BLOCK: the logits are read once);
otherwise the softmax is an online max / sum pass over the class blocks, then the pass that writes
(the chain rule needs a third: sum_k p_k dp_k before p_c (dp_c - sum)), so any C (4096 and beyond)
fits in registers.
"""

import torch
import triton
import triton.language as tl

from .._checks import kernel_target_flags
from .triton_common import (acc_dtypes, cdiv, check_programs, ignore_args, next_power_of_2, on_input_device, store_as,
                            target_flags, writable)

# ----------------------------------------------------------------------------
# Shared math
# ----------------------------------------------------------------------------


@triton.jit
def lovasz_step(inter, union, t):
    """The Lovász gradient g_i = J_i - J_{i-1} at sorted position i, from the intersection
    I = T - c_{i-1} and union U = T + i - c_{i-1} before the step and its truth t = t_i
    (J_i = 1 - (I - t) / (U + 1 - t)); written so nothing cancels:
    g = (I (1 - t) + t U) / (U (U + 1 - t)), and 1 where U == 0 (i = 0 of a row with T = 0)."""
    empty = union == 0.0
    safe = tl.where(empty, 1.0, union)
    return tl.where(empty, 1.0, (inter * (1.0 - t) + t * safe) / (safe * (safe + 1.0 - t)))


@triton.jit
def _relu_keep_nan(e):
    # torch.relu's value: e > 0 kept, NaN kept, else 0 (-inf included).
    return tl.where(e > 0.0, e, tl.where(e != e, e, 0.0))


@triton.jit
def _outside_unit(t, mask):
    # A target value no probability has: < 0, > 1 or NaN (the binary kernels' check).
    return mask & ((t < 0.0) | (t > 1.0) | (t != t))


# ----------------------------------------------------------------------------
# Binary: errors and chain, element-wise over the flat (row-major) tensor
# ----------------------------------------------------------------------------


@triton.jit
def _binary_errors_kernel(x_ptr, t_ptr, errors_ptr, truth_ptr, ok_ptr, numel, ignore_index,
                          HAS_IGNORE: tl.constexpr, CHECK_TARGET: tl.constexpr, BLOCK: tl.constexpr,
                          ACC: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(ACC)
    errors = 1.0 - x * (2.0 * t - 1.0)
    truth = t
    checked = mask
    if HAS_IGNORE:
        kept = t != ignore_index
        errors = tl.where(kept, errors, float("-inf"))
        truth = tl.where(kept, truth, 0.0)
        checked = mask & kept
    tl.store(errors_ptr + offs, errors, mask=mask)
    tl.store(truth_ptr + offs, truth, mask=mask)
    if CHECK_TARGET:
        tl.store(ok_ptr + pid, tl.min(tl.where(_outside_unit(t, checked), 0, 1), axis=0))


@triton.jit
def _binary_chain_kernel(grad_errors_ptr, x_ptr, t_ptr, grad_ptr, numel, ignore_index, HAS_IGNORE: tl.constexpr,
                         BLOCK: tl.constexpr, ACC: tl.constexpr, GRAD_BF16: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(ACC)
    grad_e = tl.load(grad_errors_ptr + offs, mask=mask, other=0.0).to(ACC)
    sign = 2.0 * t - 1.0
    errors = 1.0 - x * sign
    # relu's gradient: e > 0 strictly (a NaN e, or a NaN upstream at e <= 0, gives 0).
    keep = errors > 0.0
    if HAS_IGNORE:
        keep = keep & (t != ignore_index)
    grad = tl.where(keep, -grad_e * sign, 0.0)
    store_as(grad_ptr + offs, grad, mask, GRAD_BF16)


# ----------------------------------------------------------------------------
# Multi-class: errors and chain over (sample, block of pixels), classes in blocks
# ----------------------------------------------------------------------------


@triton.jit
def _class_tile(x_ptr, sample_base, classes_from, pixels, pixel_mask, num_classes, spatial, FROM_LOGITS: tl.constexpr,
                BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """A [BLOCK_C, BLOCK_S] tile of logits (padding: -inf; probabilities: 0), its class indices,
    tile mask and element offsets (n C S + c S + s, the input's and the gradient's)."""
    classes = classes_from + tl.arange(0, BLOCK_C)
    class_mask = classes < num_classes
    tile_mask = class_mask[:, None] & pixel_mask[None, :]
    offsets = sample_base + classes.to(tl.int64)[:, None] * spatial + pixels[None, :]
    if FROM_LOGITS:
        x = tl.load(x_ptr + offsets, mask=tile_mask, other=float("-inf")).to(ACC)
    else:
        x = tl.load(x_ptr + offsets, mask=tile_mask, other=0.0).to(ACC)
    return x, classes, tile_mask, offsets


@triton.jit
def _softmax_shift(top):
    # The max subtracted before exp(): 0 where every logit is -inf (so -inf - -inf never happens;
    # such a pixel sums to 0 and gets p = 0/0 = NaN, as torch.softmax).
    return tl.where(top == float("-inf"), 0.0, top)


@triton.jit
def _softmax_stats(x_ptr, sample_base, pixels, pixel_mask, num_classes, spatial, BLOCK_C: tl.constexpr,
                   BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    """Per pixel the softmax's shift (the max over all classes) and sum of exp(x - shift): one online
    pass over the class blocks, the sum rescaled as the max grows. NaN or +inf logits give NaN sums
    (NaN p), as torch's; pixels off the tile get sum 1."""
    top = tl.full([BLOCK_S], float("-inf"), ACC)
    total = tl.zeros([BLOCK_S], ACC)
    for classes_from in range(0, num_classes, BLOCK_C):
        x, _, tile_mask, _ = _class_tile(x_ptr, sample_base, classes_from, pixels, pixel_mask, num_classes, spatial,
                                         True, BLOCK_C, ACC)
        new_top = tl.maximum(top, tl.max(x, axis=0))
        shift = _softmax_shift(new_top)
        # exp(-inf) = 0 while nothing was summed yet; 1 while the max stays.
        total = total * tl.exp(top - shift) + tl.sum(tl.where(tile_mask, tl.exp(x - shift[None, :]), 0.0), axis=0)
        top = new_top
    return _softmax_shift(top), tl.where(pixel_mask, total, 1.0)


@triton.jit
def _tile_probabilities(x, tile_mask, shift, total, FROM_LOGITS: tl.constexpr):
    """p of a tile: the softmax from the (shift, sum) of its pixels, or the probabilities read (0 off the tile)."""
    if FROM_LOGITS:
        p = tl.exp(x - shift[None, :]) / total[None, :]
    else:
        p = x
    return tl.where(tile_mask, p, 0.0)


@triton.jit
def _one_block_probabilities(x, tile_mask, pixel_mask, FROM_LOGITS: tl.constexpr):
    """p of a tile that holds every class of its pixels."""
    if FROM_LOGITS:
        e = tl.exp(x - _softmax_shift(tl.max(x, axis=0))[None, :])
        total = tl.where(pixel_mask, tl.sum(tl.where(tile_mask, e, 0.0), axis=0), 1.0)
        p = e / total[None, :]
    else:
        p = x
    return tl.where(tile_mask, p, 0.0)


@triton.jit
def _tile_truth(y, ignored, t_ptr, classes, tile_mask, offsets, DENSE: tl.constexpr, ACC: tl.constexpr):
    """t_c of a tile: a class map's (label == c), 0 where ignored; a dense target's values."""
    if DENSE:
        t = tl.load(t_ptr + offsets, mask=tile_mask, other=0).to(ACC)
    else:
        t = tl.where((classes[:, None] == y[None, :]) & ~ignored[None, :], 1.0, 0.0).to(ACC)
    return t


@triton.jit
def _pixel_labels(t_ptr, sample, pixels, pixel_mask, num_classes, spatial, ignore_index, HAS_IGNORE: tl.constexpr,
                  DENSE: tl.constexpr):
    """The class map's labels of the pixels (int64), which are ignored, and which hold an index
    outside [0, C) that is not ignore_index (bad when checked). Dense: placeholders."""
    if DENSE:
        y = tl.zeros(pixels.shape, tl.int64)
        ignored = pixels < 0  # all False
        bad = ignored
    else:
        y = tl.load(t_ptr + sample * spatial + pixels, mask=pixel_mask, other=0).to(tl.int64)
        if HAS_IGNORE:
            ignored = pixel_mask & (y == ignore_index)
        else:
            ignored = pixels < 0
        bad = pixel_mask & ~ignored & ((y < 0) | (y >= num_classes))
    return y, ignored, bad


@triton.jit
def _pixel_tile(pid, tiles_per_sample, num_classes, spatial, members, row_len, BLOCK_S: tl.constexpr):
    """Program pid's tile of BLOCK_S pixels of one sample, and where its errors go: rows (G, C, L),
    L = row_len = members * S, sample n member n % members of group n // members; element (c, s) of
    the sample's input at offsets s + c S goes to offsets + c * out_scale + out_shift = g C L + c L +
    n_local S + s."""
    sample = pid // tiles_per_sample
    pixels = (pid % tiles_per_sample) * BLOCK_S + tl.arange(0, BLOCK_S)
    pixel_mask = pixels < spatial
    sample_base = sample * num_classes * spatial
    out_shift = (sample // members) * num_classes * row_len + (sample % members) * spatial - sample_base
    return sample, pixels, pixel_mask, sample_base, out_shift, row_len - spatial


@triton.jit
def _class_block(x_ptr, t_ptr, sample_base, classes_from, pixels, pixel_mask, num_classes, spatial, y, ignored, top,
                 total, out_scale, out_shift, ONE_BLOCK: tl.constexpr, FROM_LOGITS: tl.constexpr, DENSE: tl.constexpr,
                 BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """The tile's classes [classes_from, classes_from + BLOCK_C): p, t, the tile's mask, its input offsets and
    its offsets in the (G, C, L) rows. ONE_BLOCK: every class in this block, the softmax taken here (top and
    total unused); else from the softmax's max and sum over every block (top, total)."""
    x, classes, tile_mask, offsets = _class_tile(x_ptr, sample_base, classes_from, pixels, pixel_mask, num_classes,
                                                 spatial, FROM_LOGITS, BLOCK_C, ACC)
    if ONE_BLOCK:
        p = _one_block_probabilities(x, tile_mask, pixel_mask, FROM_LOGITS)
    else:
        p = _tile_probabilities(x, tile_mask, top, total, FROM_LOGITS)
    t = _tile_truth(y, ignored, t_ptr, classes, tile_mask, offsets, DENSE, ACC)
    out = offsets + classes.to(tl.int64)[:, None] * out_scale + out_shift
    return p, t, tile_mask, offsets, out


@triton.jit
def _multiclass_errors_kernel(x_ptr, t_ptr, errors_ptr, truth_ptr, ok_ptr, num_classes, spatial, members, row_len,
                              tiles_per_sample, ignore_index, HAS_IGNORE: tl.constexpr, FROM_LOGITS: tl.constexpr,
                              DENSE: tl.constexpr, CHECK_TARGET: tl.constexpr, ONE_BLOCK: tl.constexpr,
                              BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    sample, pixels, pixel_mask, sample_base, out_shift, out_scale = _pixel_tile(pid, tiles_per_sample, num_classes,
                                                                                spatial, members, row_len, BLOCK_S)
    y, ignored, bad = _pixel_labels(t_ptr, sample, pixels, pixel_mask, num_classes, spatial, ignore_index, HAS_IGNORE,
                                    DENSE)
    if ONE_BLOCK:
        p, t, tile_mask, offsets, out = _class_block(x_ptr, t_ptr, sample_base, 0, pixels, pixel_mask, num_classes,
                                                     spatial, y, ignored, 0.0, 0.0, out_scale, out_shift, True,
                                                     FROM_LOGITS, DENSE, BLOCK_C, ACC)
        errors = tl.where(ignored[None, :], float("-inf"), tl.abs(t - p))
        tl.store(errors_ptr + out, errors, mask=tile_mask)
        tl.store(truth_ptr + out, t, mask=tile_mask)
        if DENSE:
            bad = tl.max(_outside_unit(t, tile_mask).to(tl.int32), axis=0) > 0
    else:
        if FROM_LOGITS:
            top, total = _softmax_stats(x_ptr, sample_base, pixels, pixel_mask, num_classes, spatial, BLOCK_C,
                                        BLOCK_S, ACC)
        else:
            top = tl.zeros([BLOCK_S], ACC)
            total = top + 1.0
        for classes_from in range(0, num_classes, BLOCK_C):
            p, t, tile_mask, offsets, out = _class_block(x_ptr, t_ptr, sample_base, classes_from, pixels, pixel_mask,
                                                         num_classes, spatial, y, ignored, top, total, out_scale,
                                                         out_shift, False, FROM_LOGITS, DENSE, BLOCK_C, ACC)
            errors = tl.where(ignored[None, :], float("-inf"), tl.abs(t - p))
            tl.store(errors_ptr + out, errors, mask=tile_mask)
            tl.store(truth_ptr + out, t, mask=tile_mask)
            if DENSE:
                bad = bad | (tl.max(_outside_unit(t, tile_mask).to(tl.int32), axis=0) > 0)
    if CHECK_TARGET:
        tl.store(ok_ptr + pid, tl.min(tl.where(bad, 0, 1), axis=0))


@triton.jit
def _probability_grad(grad_errors_ptr, p, t, tile_mask, out):
    """dp_c = grad_e_c * (e_c > 0) * sign(p_c - t_c), e_c = |t_c - p_c| (0 off the tile)."""
    grad_e = tl.load(grad_errors_ptr + out, mask=tile_mask, other=0.0).to(p.dtype)
    keep = tile_mask & (tl.abs(t - p) > 0.0)
    return tl.where(keep, tl.where(p > t, grad_e, -grad_e), 0.0)


@triton.jit
def _multiclass_chain_kernel(grad_errors_ptr, x_ptr, t_ptr, grad_ptr, num_classes, spatial, members, row_len,
                             tiles_per_sample, ignore_index, HAS_IGNORE: tl.constexpr, FROM_LOGITS: tl.constexpr,
                             DENSE: tl.constexpr, ONE_BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
                             BLOCK_S: tl.constexpr, ACC: tl.constexpr, GRAD_BF16: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    sample, pixels, pixel_mask, sample_base, out_shift, out_scale = _pixel_tile(pid, tiles_per_sample, num_classes,
                                                                                spatial, members, row_len, BLOCK_S)
    y, ignored, _ = _pixel_labels(t_ptr, sample, pixels, pixel_mask, num_classes, spatial, ignore_index, HAS_IGNORE,
                                  DENSE)
    if ONE_BLOCK:
        p, t, tile_mask, offsets, out = _class_block(x_ptr, t_ptr, sample_base, 0, pixels, pixel_mask, num_classes,
                                                     spatial, y, ignored, 0.0, 0.0, out_scale, out_shift, True,
                                                     FROM_LOGITS, DENSE, BLOCK_C, ACC)
        dp = _probability_grad(grad_errors_ptr, p, t, tile_mask, out)
        if FROM_LOGITS:
            dot = tl.sum(tl.where(tile_mask, p * dp, 0.0), axis=0)
            grad = p * (dp - dot[None, :])
        else:
            grad = dp
        grad = tl.where(ignored[None, :], 0.0, grad)
        store_as(grad_ptr + offsets, grad, tile_mask, GRAD_BF16)
    else:
        if FROM_LOGITS:
            top, total = _softmax_stats(x_ptr, sample_base, pixels, pixel_mask, num_classes, spatial, BLOCK_C,
                                        BLOCK_S, ACC)
            dot = tl.zeros([BLOCK_S], ACC)
            for classes_from in range(0, num_classes, BLOCK_C):
                p, t, tile_mask, offsets, out = _class_block(x_ptr, t_ptr, sample_base, classes_from, pixels,
                                                             pixel_mask, num_classes, spatial, y, ignored, top, total,
                                                             out_scale, out_shift, False, FROM_LOGITS, DENSE, BLOCK_C,
                                                             ACC)
                dp = _probability_grad(grad_errors_ptr, p, t, tile_mask, out)
                dot += tl.sum(tl.where(tile_mask, p * dp, 0.0), axis=0)
        else:
            top = tl.zeros([BLOCK_S], ACC)
            total = top + 1.0
            dot = top
        for classes_from in range(0, num_classes, BLOCK_C):
            p, t, tile_mask, offsets, out = _class_block(x_ptr, t_ptr, sample_base, classes_from, pixels, pixel_mask,
                                                         num_classes, spatial, y, ignored, top, total, out_scale,
                                                         out_shift, False, FROM_LOGITS, DENSE, BLOCK_C, ACC)
            dp = _probability_grad(grad_errors_ptr, p, t, tile_mask, out)
            if FROM_LOGITS:
                grad = p * (dp - dot[None, :])
            else:
                grad = dp
            grad = tl.where(ignored[None, :], 0.0, grad)
            store_as(grad_ptr + offsets, grad, tile_mask, GRAD_BF16)


# ----------------------------------------------------------------------------
# Rows: the scan over sorted rows, in float64, chunk by chunk
# ----------------------------------------------------------------------------


@triton.jit
def _sorted_truth(truth_ptr, order_ptr, pid, chunks, length, CHUNK: tl.constexpr):
    """Chunk `pid % chunks` of row `pid // chunks`: sorted positions i, their mask, the row's start,
    the original positions order[r, i] and the gathered truth t_i in fp64 (0 off the row)."""
    row = pid // chunks
    positions = (pid % chunks) * CHUNK + tl.arange(0, CHUNK)
    mask = positions < length
    row_start = row * length
    original = tl.load(order_ptr + row_start + positions, mask=mask, other=0).to(tl.int64)
    t = tl.load(truth_ptr + row_start + original, mask=mask, other=0.0).to(tl.float64)
    return row, positions, mask, row_start, original, t


@triton.jit
def _chunk_totals_kernel(truth_ptr, order_ptr, totals_ptr, length, chunks, CHUNK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    _, positions, mask, _, _, t = _sorted_truth(truth_ptr, order_ptr, pid, chunks, length, CHUNK)
    # The chunk's total as the last entry of the same scan _rows_kernel runs: the running count at a
    # row's end is then exactly the row's total T.
    scan = tl.cumsum(t, axis=0)
    last = tl.minimum(length - 1, (pid % chunks) * CHUNK + CHUNK - 1)
    tl.store(totals_ptr + pid, tl.sum(tl.where(mask & (positions == last), scan, 0.0), axis=0))


@triton.jit
def _rows_kernel(errors_ptr, truth_ptr, order_ptr, carry_ptr, positives_ptr, out_ptr, length, chunks,
                 BACKWARD: tl.constexpr, CHUNK: tl.constexpr):
    """Forward: out_ptr[pid] = sum over the chunk of relu(e_i) g_i (fp64); errors_ptr holds the
    sorted errors. BACKWARD: errors_ptr holds grad_loss (one per row) and out_ptr the gradient,
    written at the original positions."""
    pid = tl.program_id(0).to(tl.int64)
    row, positions, mask, row_start, original, t = _sorted_truth(truth_ptr, order_ptr, pid, chunks, length, CHUNK)
    total = tl.load(positives_ptr + row)
    before = tl.load(carry_ptr + pid) + (tl.cumsum(t, axis=0) - t)  # c_{i-1}
    inter = total - before
    union = total + positions.to(tl.float64) - before
    g = lovasz_step(inter, union, t)
    if BACKWARD:
        grad = tl.load(errors_ptr + row).to(tl.float64) * g
        tl.store(out_ptr + row_start + original, grad.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        e = tl.load(errors_ptr + row_start + positions, mask=mask, other=0.0).to(tl.float64)
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, _relu_keep_nan(e) * g, 0.0), axis=0))


# ----------------------------------------------------------------------------
# Launchers: plain functions over torch tensors, called by the op layer
# (arguments as the schemas', in order).
# ----------------------------------------------------------------------------


def _elementwise_block(device: torch.device):
    # (block, num_warps): large blocks in the interpreter, few programs.
    return (1024, 4) if device.type == "cuda" else (8192, 4)


_ROW_CHUNK = 2048  # the row scan's chunk (its longest): rows of 4M elements take 2048 programs each


def _row_chunk(length: int):
    """(chunk, num_warps) of the row scan: a function of the row length alone (not of the device's
    size or the grid), so a given shape always adds in the same order; short rows take a short chunk."""
    chunk = max(16, min(_ROW_CHUNK, next_power_of_2(length)))
    return chunk, max(1, min(8, chunk // 256))


def _class_blocks(num_classes: int, spatial: int, device: torch.device):
    """(BLOCK_C, BLOCK_S, ONE_BLOCK, num_warps) of the multi-class kernels."""
    if device.type == "cuda":  # 8 elements a thread (at 16, ptxas spilled the chain kernel's int64 offsets)
        max_block_c, tile, num_warps = 64, 2048, 8
    else:  # Triton interpreter: large tiles
        max_block_c, tile, num_warps = 128, 16384, 4
    block_c = min(next_power_of_2(num_classes), max_block_c)
    block_s = max(1, min(tile // block_c, next_power_of_2(spatial)))
    return block_c, block_s, block_c >= num_classes, num_warps


def _as_loadable(target: torch.Tensor) -> torch.Tensor:
    # A view, never a converted copy: bool is read as its bytes.
    return target.view(torch.uint8) if target.dtype == torch.bool else target


def _groups(input: torch.Tensor, per_sample: bool) -> int:
    return input.shape[0] if per_sample else 1


@on_input_device
def binary_lovasz_errors(input, target, per_sample, ignore_index, check_target):
    if target.numel() != input.numel():
        raise ValueError(f"target must have input's {input.numel()} elements, got {target.numel()}")
    acc, ACC = acc_dtypes(input)
    x = input.contiguous()
    check_target = check_target and target.dtype != torch.bool  # bool holds nothing else
    target = _as_loadable(target.contiguous())
    groups = _groups(input, per_sample)
    shape = (groups, x.numel() // groups)
    errors = torch.empty(shape, dtype=acc, device=x.device)
    truth = torch.empty(shape, dtype=acc, device=x.device)
    block, num_warps = _elementwise_block(x.device)
    programs = cdiv(x.numel(), block)
    check_programs(programs, 1, "block")
    ok = target_flags(programs, x.device, check_target)
    ignore_value, has_ignore = ignore_args(ignore_index)
    _binary_errors_kernel[(programs,)](x, target, errors, truth, ok, x.numel(), ignore_value, HAS_IGNORE=has_ignore,
                                       CHECK_TARGET=check_target, BLOCK=block, ACC=ACC, num_warps=num_warps)
    if check_target:
        kernel_target_flags(ok, target, None, ignore_index)
    return errors, truth


@on_input_device
def binary_lovasz_chain(grad_errors, input, target, per_sample, ignore_index):
    if grad_errors.numel() != input.numel() or target.numel() != input.numel():
        raise ValueError("grad_errors and target must have input's number of elements")
    _, ACC = acc_dtypes(input)
    x = input.contiguous()
    target = _as_loadable(target.contiguous())
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    block, num_warps = _elementwise_block(x.device)
    programs = cdiv(x.numel(), block)
    check_programs(programs, 1, "block")
    ignore_value, has_ignore = ignore_args(ignore_index)
    _binary_chain_kernel[(programs,)](grad_errors.contiguous(), x, target, writable(grad), x.numel(), ignore_value,
                                      HAS_IGNORE=has_ignore, BLOCK=block, ACC=ACC,
                                      GRAD_BF16=x.dtype == torch.bfloat16, num_warps=num_warps)
    return grad


def _multiclass_operands(input, target, ignore_index):
    """(x, target, dense, spatial, members, plan, grid, ignore_value, has_ignore) of a multi-class launch."""
    if input.dim() < 2:
        raise ValueError(f"input must have shape (N, C, ...), got {tuple(input.shape)}")
    dense = target.dim() == input.dim()
    batch, classes = input.shape[0], input.shape[1]
    if dense:
        if target.shape != input.shape:
            raise ValueError(f"a dense target must have input's shape {tuple(input.shape)}, got {tuple(target.shape)}")
        if ignore_index is not None:
            raise ValueError(f"dense (per-class) targets take no ignore_index, got ignore_index={ignore_index!r}")
    elif target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(f"a class map must have shape {tuple(input.shape[:1] + input.shape[2:])}, "
                         f"got {tuple(target.shape)}")
    x = input.contiguous()
    spatial = x.numel() // (batch * classes) if batch * classes else 0
    plan = _class_blocks(classes, spatial, x.device)
    tiles = cdiv(spatial, plan[1])
    programs = batch * tiles
    check_programs(programs, batch, "sample")
    return x, _as_loadable(target.contiguous()), dense, spatial, plan, tiles, programs, *ignore_args(ignore_index)


@on_input_device
def multiclass_lovasz_errors(input, target, per_sample, from_logits, ignore_index, check_target):
    acc, ACC = acc_dtypes(input)
    check_target = check_target and target.dtype != torch.bool
    (x, y, dense, spatial, (block_c, block_s, one_block, num_warps), tiles, programs, ignore_value,
     has_ignore) = _multiclass_operands(input, target, ignore_index)
    batch, classes = x.shape[0], x.shape[1]
    groups = _groups(x, per_sample)
    members = batch // groups
    shape = (groups, classes, members * spatial)
    errors = torch.empty(shape, dtype=acc, device=x.device)
    truth = torch.empty(shape, dtype=acc, device=x.device)
    if programs == 0:
        return errors, truth
    ok = target_flags(programs, x.device, check_target)
    _multiclass_errors_kernel[(programs,)](x, y, errors, truth, ok, classes, spatial, members,
                                           members * spatial, tiles, ignore_value,
                                           HAS_IGNORE=has_ignore, FROM_LOGITS=from_logits, DENSE=dense,
                                           CHECK_TARGET=check_target, ONE_BLOCK=one_block, BLOCK_C=block_c,
                                           BLOCK_S=block_s, ACC=ACC, num_warps=num_warps)
    if check_target:
        if dense:
            kernel_target_flags(ok, y)
        else:
            kernel_target_flags(ok, y, classes, ignore_index)
    return errors, truth


@on_input_device
def multiclass_lovasz_chain(grad_errors, input, target, per_sample, from_logits, ignore_index):
    _, ACC = acc_dtypes(input)
    (x, y, dense, spatial, (block_c, block_s, one_block, num_warps), tiles, programs, ignore_value,
     has_ignore) = _multiclass_operands(input, target, ignore_index)
    if grad_errors.numel() != x.numel():
        raise ValueError(f"grad_errors must have input's {x.numel()} elements, got {grad_errors.numel()}")
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    if programs == 0:
        return grad
    members = x.shape[0] // _groups(x, per_sample)
    _multiclass_chain_kernel[(programs,)](grad_errors.contiguous(), x, y, writable(grad), x.shape[1], spatial, members,
                                          members * spatial, tiles, ignore_value, HAS_IGNORE=has_ignore,
                                          FROM_LOGITS=from_logits, DENSE=dense, ONE_BLOCK=one_block, BLOCK_C=block_c,
                                          BLOCK_S=block_s, ACC=ACC, GRAD_BF16=x.dtype == torch.bfloat16,
                                          num_warps=num_warps)
    return grad


def _check_rows(truth, order, what):
    if order.shape != truth.shape:
        raise ValueError(f"order must have truth's shape {tuple(truth.shape)}, got {tuple(order.shape)}")
    if order.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"order must be int32 or int64, got {order.dtype}")
    if truth.dim() < 1:
        raise ValueError(f"{what} needs rows (..., L), got a 0-d truth")


def _row_scan(truth, order):
    """Pass 1 and the prefix over chunks: (truth, order, rows, length, chunks, chunk, num_warps, carry,
    positives), carry (rows, chunks) and positives (rows,) in fp64."""
    length = truth.shape[-1]
    rows = truth.numel() // length
    truth, order = truth.contiguous(), order.contiguous()
    chunk, num_warps = _row_chunk(length)
    chunks = cdiv(length, chunk)
    check_programs(rows * chunks, rows, "row")
    totals = torch.empty((rows, chunks), dtype=torch.float64, device=truth.device)
    _chunk_totals_kernel[(rows * chunks,)](truth, order, totals, length, chunks, CHUNK=chunk, num_warps=num_warps)
    carry = torch.zeros_like(totals)
    if chunks > 1:
        carry[:, 1:] = torch.cumsum(totals[:, :-1], dim=1)
    positives = carry[:, -1] + totals[:, -1]  # the running count's value at the row's end
    return truth, order, rows, length, chunks, chunk, num_warps, carry, positives


@on_input_device
def lovasz_rows(sorted_errors, truth, order):
    _check_rows(truth, order, "lovasz_rows")
    if sorted_errors.shape != truth.shape:
        raise ValueError(
            f"sorted_errors must have truth's shape {tuple(truth.shape)}, got {tuple(sorted_errors.shape)}"
        )
    out_shape = sorted_errors.shape[:-1]
    if truth.numel() == 0:
        zeros = torch.zeros(out_shape, dtype=sorted_errors.dtype, device=sorted_errors.device)
        return zeros, zeros.clone()
    truth, order, rows, length, chunks, chunk, num_warps, carry, positives = _row_scan(truth, order)
    partials = torch.empty((rows, chunks), dtype=torch.float64, device=truth.device)
    _rows_kernel[(rows * chunks,)](sorted_errors.contiguous(), truth, order, carry, positives, partials, length,
                                   chunks, BACKWARD=False, CHUNK=chunk, num_warps=num_warps)
    loss = partials.sum(dim=1)  # a fixed order for a given shape: deterministic
    return loss.to(sorted_errors.dtype).reshape(out_shape), positives.to(sorted_errors.dtype).reshape(out_shape)


@on_input_device
def lovasz_rows_backward(grad_loss, truth, order):
    _check_rows(truth, order, "lovasz_rows_backward")
    if grad_loss.shape != truth.shape[:-1]:
        raise ValueError(f"grad_loss must have shape {tuple(truth.shape[:-1])}, got {tuple(grad_loss.shape)}")
    grad = torch.empty(truth.shape, dtype=truth.dtype, device=truth.device)
    if truth.numel() == 0:
        return grad
    truth, order, rows, length, chunks, chunk, num_warps, carry, positives = _row_scan(truth, order)
    _rows_kernel[(rows * chunks,)](grad_loss.contiguous(), truth, order, carry, positives, grad, length, chunks,
                                   BACKWARD=True, CHUNK=chunk, num_warps=num_warps)
    return grad
