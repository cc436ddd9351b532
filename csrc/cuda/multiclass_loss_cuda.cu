// CUDA kernels of the multiclass ops (softmax over the classes, or probabilities
// as they are with from_logits=False: a template argument). Input (N, C, S) logits, read
// through (sample, class, pixel) strides (../layout.h: contiguous and channels_last in
// place), target (N, S) class indices, or a dense (N, C, S) target at the input's
// offsets. The softmax lives in registers and shared memory: no one-hot target, no
// softmax tensor. Class weights, label smoothing and dense targets run in the GENERAL
// kernels (their element form a runtime value: ElemForm); a class map without them in
// the default ones.
//
// A block's 256 threads cover `lanes` pixels a step, each pixel's classes shared by
// `slices` threads (class_plan: one when the pixels alone fill the GPU, up to 8 when they
// do not, as mc150's 32768 pixels). A warp is 32 consecutive pixels of one slice, so its
// reads of x[c * S + pixel] coalesce (channels_last: its pixels' classes are one span,
// read through L1).
//   stats_kernel        a block's tile of up to kTilePixels pixels: each pixel's label and
//                       softmax max and sum (the slices' merged in order) kept in shared
//                       memory; then the classes in chunks of kChunk, each thread summing
//                       its chunk's I, P, T over its pixels in registers and the block
//                       reducing them once a chunk (a halving warp sum, then the warps in
//                       order) into its (3, C) partials: one writer a slot, no atomics.
//                       Element sums [E, valid pixels] a block.
//   sum_partials_kernel the partials summed per group and quantity in block order (a warp
//                       reads 32 consecutive slots of a block's (3, C) row); in the loss op
//                       its last block (a count the stats kernel zeroes) runs the finalize,
//                       so the forward is two launches
//   finalize_kernel     one block: the formula per group (weights, background / empty-class
//                       exclusion), the reduction, the coefficients; from given sums (the
//                       finalize op, after the sums were all-reduced across processes)
//   backward_kernel     dL/dx_c = p_c (g_c - sum_k p_k g_k) + A (p_c - [c = y])
//                       (probabilities: g_c + F [c = y]); slices as the stats kernel's, the
//                       per-pixel sums merged across them
//   focal_map_kernel    per-pixel focal loss (reduction='none'), a thread a pixel
// Class indices outside [0, C) that are not ignore_index are treated as ignored (they
// never index memory); with check_target, the forward kernels (stats, focal map) also flag
// them, one flag per block, for a device-side assert (no host sync, target_check_cuda.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../dispatch.h"
#include "../layout.h"
#include "../loss_math.h"
#include "class_map_reader.h"
#include "grid.h"
#include "target_check_cuda.h"

namespace fusedloss {
namespace {

using at::Tensor;

using multiclass_cuda::kChunk;  // classes whose I, P, T a stats thread sums in registers at once
using multiclass_cuda::kMaxSlices;
using multiclass_cuda::kThreads;
using multiclass_cuda::kTilePixels;  // pixels a stats block keeps a label and softmax statistics for
constexpr int kWarps = kThreads / 32;
constexpr int kChunkSums = 3 * kChunk;

// A dense target's values (the input's shape, read at the input's offsets), converted on
// read: one kernel for every target dtype (the branch is uniform across the grid).
struct TargetValues {
  const void* data;
  int type;  // 0 float, 1 double, 2 half, 3 bfloat16, 4 bool, 5 uint8
  template <typename acc_t>
  __device__ __forceinline__ acc_t read(int64_t i) const {
    switch (type) {
      case 0: return static_cast<acc_t>(static_cast<const float*>(data)[i]);
      case 1: return static_cast<acc_t>(static_cast<const double*>(data)[i]);
      case 2: return static_cast<acc_t>(static_cast<float>(static_cast<const at::Half*>(data)[i]));
      case 3: return static_cast<acc_t>(static_cast<float>(static_cast<const at::BFloat16*>(data)[i]));
      case 4: return static_cast<const bool*>(data)[i] ? acc_t(1) : acc_t(0);
      default: return static_cast<acc_t>(static_cast<const uint8_t*>(data)[i]);
    }
  }
};

TargetValues target_values(const Tensor& target) {
  int type = -1;
  dispatch_probability_target(target, [&](auto tag) {  // the dtype check, and its code
    using T = decltype(tag);
    type = std::is_same_v<T, float>          ? 0
           : std::is_same_v<T, double>       ? 1
           : std::is_same_v<T, at::Half>     ? 2
           : std::is_same_v<T, at::BFloat16> ? 3
           : std::is_same_v<T, bool>         ? 4
                                             : 5;
  });
  return {target.const_data_ptr(), type};
}

// The element term's form in the GENERAL kernels (loss_math.h; dispatch.h's MulticlassElem):
// kLabelWeighted (a_y = scales[y]), or the per-class forms, w_c = a_c t'_c.
template <typename acc_t>
struct ElemForm {
  MulticlassElem kind;
  const acc_t* scales;  // a_c: class_weight, or alpha_scale(alpha)
  acc_t keep, spread;   // t' = t keep + spread (label smoothing: 1 - eps, eps / C)
  bool weighted_mean;   // the mean's denominator sums a_y (class maps)
  bool dense;           // a dense target (values: its data), else a class map
  TargetValues values;
};

// How a block's threads cover pixels: thread = slice * lanes + lane. The `slices` threads
// of a pixel share its classes in contiguous ranges; a sample's pixels are cut into chunks
// of `steps` steps of `lanes` pixels, a block each.
struct Tiling {
  int slices, lanes;
  int64_t chunks_per_row, steps;

  __device__ int slice() const { return threadIdx.x / lanes; }
  __device__ int lane() const { return threadIdx.x % lanes; }
  // This slice's classes [begin, end).
  __device__ void class_range(int64_t classes, int64_t& begin, int64_t& end) const {
    const int64_t share = (classes + slices - 1) / slices;
    begin = min(classes, slice() * share);
    end = min(classes, begin + share);
  }
};

struct ClassPlan {
  Tiling tiling;
  int64_t blocks;
};

// multiclass_cuda::plan for this input and device.
ClassPlan class_plan(const ClassMapShape& shape, const Tensor& input, bool stats, int max_slices) {
  const multiclass_cuda::Plan plan =
      multiclass_cuda::plan(shape.batch, shape.classes, shape.spatial, input.element_size(),
                            c10::elementSize(accumulation_type(input)), sm_count(input.device()), stats, max_slices);
  check_grid(plan.chunks.blocks, shape.batch, "sample");
  return {Tiling{plan.slices, plan.lanes, plan.chunks.chunks_per_row, plan.chunks.steps}, plan.chunks.blocks};
}

// A pixel's softmax statistics over some of its classes: the largest logit and the sum of
// exp(x - top).
template <typename acc_t>
struct SoftmaxStats {
  acc_t top, total;

  // Two ranges' statistics: the larger top, each total rescaled to it (a range whose top is
  // it, -inf included, keeps its total).
  __device__ SoftmaxStats merged(const SoftmaxStats& other) const {
    const acc_t m = max(top, other.top);
    return {m, (top == m ? total : total * std::exp(top - m)) +
                   (other.top == m ? other.total : other.total * std::exp(other.top - m))};
  }
};

// Classes [begin, end) of the pixel whose class 0 is at x (unused with probabilities).
template <typename input_t, typename acc_t, MulticlassInput INPUT>
__device__ SoftmaxStats<acc_t> range_stats(const input_t* x, bool inside, int64_t cls, int64_t begin, int64_t end) {
  acc_t top = -INFINITY, total = 0;
  if constexpr (INPUT == kSoftmax) {
    if (!inside) return {top, total};
    for (int64_t c = begin; c < end; ++c) top = max(top, static_cast<acc_t>(x[c * cls]));
    const acc_t shift = top == -INFINITY ? acc_t(0) : top;  // a range all -inf (masked classes): total 0
    for (int64_t c = begin; c < end; ++c) total += std::exp(static_cast<acc_t>(x[c * cls]) - shift);
  }
  return {top, total};
}

// The slices' values for this thread's pixel combined in slice order, every thread of the
// pixel getting the same. Called by every thread of the block (tiling.slices is uniform).
template <typename T, typename Combine>
__device__ T across_slices(T value, T* scratch, const Tiling& tiling, Combine combine) {
  if (tiling.slices == 1) return value;
  __syncthreads();  // an earlier call's reads of scratch are done
  scratch[threadIdx.x] = value;
  __syncthreads();
  const int lane = tiling.lane();
  T result = scratch[lane];
  for (int s = 1; s < tiling.slices; ++s) result = combine(result, scratch[s * tiling.lanes + lane]);
  return result;
}

// The whole pixel's statistics, its slices' ranges merged.
template <typename input_t, typename acc_t, MulticlassInput INPUT>
__device__ SoftmaxStats<acc_t> pixel_stats(const input_t* x, bool inside, int64_t classes, int64_t cls,
                                           const Tiling& tiling, SoftmaxStats<acc_t>* scratch) {
  int64_t begin, end;
  tiling.class_range(classes, begin, end);
  const SoftmaxStats<acc_t> own = range_stats<input_t, acc_t, INPUT>(x, inside, cls, begin, end);
  return across_slices(own, scratch, tiling,
                       [](const SoftmaxStats<acc_t>& a, const SoftmaxStats<acc_t>& b) { return a.merged(b); });
}

// One pixel's probabilities and its label: softmax (from its statistics, pixel_stats), or
// probabilities as they are (INPUT = kClassProbabilities). A dense
// target's pixel has label 0 (every pixel counts).
template <typename input_t, typename acc_t, MulticlassInput INPUT>
struct Pixel {
  const input_t* x;  // this pixel's logit of class 0; class c at x[c * cls]
  int64_t label;
  bool valid;
  acc_t top, total;

  __device__ Pixel(const input_t* x_, int64_t label_, bool valid_, const SoftmaxStats<acc_t>& stats)
      : x(x_), label(label_), valid(valid_), top(stats.top), total(stats.total) {}

  __device__ acc_t p(int64_t c, int64_t cls) const {
    if constexpr (INPUT == kClassProbabilities) return static_cast<acc_t>(x[c * cls]);
    return std::exp(static_cast<acc_t>(x[c * cls]) - top) / total;
  }

  // The focal loss and its gradient factor (loss_math.h), valid pixels only: softmax,
  // A (dloss/dx_c = A (p_c - [c = y])); probabilities, dloss/dp_y.
  __device__ FocalTerms<acc_t> focal(int64_t cls, acc_t alpha, acc_t gamma) const {
    if constexpr (INPUT == kClassProbabilities) {
      return multiclass_clamped_focal_terms<StdMath>(static_cast<acc_t>(x[label * cls]), alpha, gamma);
    }
    const acc_t shifted = static_cast<acc_t>(x[label * cls]) - top;
    const acc_t log_p_y = shifted - std::log(total);
    const acc_t rest = (total - std::exp(shifted)) / total;
    return multiclass_focal_terms<StdMath>(log_p_y, rest, alpha, gamma);
  }

  // The same with the factor a_y given (class weights).
  __device__ FocalTerms<acc_t> focal_scaled(int64_t cls, acc_t scale, acc_t gamma) const {
    if constexpr (INPUT == kClassProbabilities) {
      return multiclass_clamped_focal_terms_scaled<StdMath>(static_cast<acc_t>(x[label * cls]), scale, gamma);
    }
    const acc_t shifted = static_cast<acc_t>(x[label * cls]) - top;
    const acc_t log_p_y = shifted - std::log(total);
    const acc_t rest = (total - std::exp(shifted)) / total;
    return multiclass_focal_terms_scaled<StdMath>(log_p_y, rest, scale, gamma);
  }

  // t_c: a dense target's value (base: this pixel's offset, the input's), or [c = y].
  __device__ acc_t t(const ElemForm<acc_t>& form, int64_t base, int64_t c, int64_t cls) const {
    if (form.dense) return form.values.template read<acc_t>(base + c * cls);
    return label == c ? acc_t(1) : acc_t(0);
  }

  // Class c's per-class element terms: its loss w_c (1 - p_c)^gamma (-lp_c) and gradient
  // factor (softmax: h_c, dE/dx_j = h_j - p_j sum_k h_k; probabilities: dE/dp_c).
  __device__ FocalTerms<acc_t> class_terms(const ElemForm<acc_t>& form, int64_t base, int64_t c, int64_t cls,
                                           acc_t gamma) const {
    const acc_t w = class_target_weight(form.scales[c], t(form, base, c, cls), form.keep, form.spread);
    const bool modulated = form.kind == kPerClassFocal;
    if constexpr (INPUT == kClassProbabilities) {
      const acc_t p_c = static_cast<acc_t>(x[c * cls]);
      return modulated ? probability_class_terms<StdMath, true>(p_c, w, gamma)
                       : probability_class_terms<StdMath, false>(p_c, w, gamma);
    }
    const acc_t shifted = static_cast<acc_t>(x[c * cls]) - top;
    const acc_t log_p = shifted - std::log(total);
    if (!modulated) return softmax_class_terms<StdMath, false>(log_p, acc_t(0), w, gamma);
    return softmax_class_terms<StdMath, true>(log_p, (total - std::exp(shifted)) / total, w, gamma);
  }

  // The element loss of a valid pixel and, for kLabelWeighted, its gradient factor (the
  // per-class forms' are class by class: class_terms).
  __device__ FocalTerms<acc_t> general_elem(const ElemForm<acc_t>& form, int64_t base, int64_t classes, int64_t cls,
                                            acc_t gamma) const {
    if (form.kind == kLabelWeighted) return focal_scaled(cls, form.scales[label], gamma);
    acc_t loss = 0;
    for (int64_t c = 0; c < classes; ++c) loss += class_terms(form, base, c, cls, gamma).loss;
    return {loss, acc_t(0)};
  }
};

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  return value;  // valid in lane 0
}

// One exchange of halving_warp_sum: lanes `offset` apart swap halves of their first `live`
// values, each keeping the sum of the half it keeps.
template <int OFFSET, int LIVE, typename acc_t, int N>
__device__ __forceinline__ void halve(acc_t (&v)[N], int lane) {
  const bool upper = lane & OFFSET;
#pragma unroll
  for (int i = 0; i < LIVE / 2; ++i) {
    const acc_t keep = upper ? v[i + LIVE / 2] : v[i];
    const acc_t give = upper ? v[i] : v[i + LIVE / 2];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, give, OFFSET);
  }
}

// Each of N values summed over a warp's lanes with N/2 + N/4 + N/8 + 2 N/8 shuffles instead
// of 5 N: after it, lane l holds in v[0, N/8) the sums of values (l / 4) N/8 + i (a fixed
// order: each sum has one lane computing it).
template <int N, typename acc_t>
__device__ __forceinline__ void halving_warp_sum(acc_t (&v)[N], int lane) {
  static_assert(N % 8 == 0, "eight lane groups hold N / 8 sums each");
  halve<16, N>(v, lane);
  halve<8, N / 2>(v, lane);
  halve<4, N / 4>(v, lane);
#pragma unroll
  for (int i = 0; i < N / 8; ++i) {
    v[i] += __shfl_xor_sync(0xffffffffu, v[i], 2);
    v[i] += __shfl_xor_sync(0xffffffffu, v[i], 1);
  }
}

// A value summed over the block's threads in a fixed order (a tree in shared memory), every
// thread getting the sum.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* scratch) {
  __syncthreads();  // an earlier call's reads of scratch are done
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  return scratch[0];
}

// GENERAL: the element forms other than kLabel, and dense targets (form); else the form is
// unused. class_partials: (blocks, 3, C) = I, P, T of the block's pixels (a dummy without
// region); elem_partials: (blocks, 2) = E and the mean's denominator. finalize_count, when
// given, is zeroed for the loss op's sum_partials_kernel.
template <typename input_t, typename acc_t, MulticlassInput INPUT, bool GENERAL>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const input_t* __restrict__ x, ClassMapReader y, acc_t* __restrict__ class_partials,
                 acc_t* __restrict__ elem_partials, int64_t classes, int64_t spatial, ClassStrides strides,
                 Tiling tiling, bool has_ignore, int64_t ignore_index, bool region, bool squared, bool elem,
                 acc_t alpha, acc_t gamma, int32_t* __restrict__ valid_flags, ElemForm<acc_t> form,
                 int32_t* __restrict__ finalize_count) {
  __shared__ acc_t tile_top[kTilePixels], tile_total[kTilePixels];
  __shared__ int32_t tile_label[kTilePixels];  // -1: outside the sample, or not counted
  __shared__ SoftmaxStats<acc_t> stats_scratch[kThreads];
  __shared__ acc_t warp_sums[kWarps][kChunkSums];
  if (finalize_count != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *finalize_count = 0;
  const int64_t sample = blockIdx.x / tiling.chunks_per_row, chunk = blockIdx.x % tiling.chunks_per_row;
  const int slice = tiling.slice(), lane = tiling.lane();
  const int warp = threadIdx.x / 32, warp_lane = threadIdx.x % 32;
  const bool check = valid_flags != nullptr;
  const bool dense = GENERAL && form.dense;
  const bool per_class = GENERAL && is_per_class(form.kind);
  bool bad = false;
  acc_t sum_e = 0, count = 0;
  // The tile: each pixel's label and statistics; the element term of the labelled-class forms.
  for (int64_t step = 0; step < tiling.steps; ++step) {
    const int64_t pixel = (chunk * tiling.steps + step) * tiling.lanes + lane;
    const bool inside = pixel < spatial;
    const int64_t base = strides.at(sample, inside ? pixel : 0);
    const int64_t label = dense ? 0 : (inside ? y(sample * spatial + pixel) : -1);
    const bool valid = inside && (dense || counted_class(label, classes, has_ignore, ignore_index));
    const SoftmaxStats<acc_t> s =
        pixel_stats<input_t, acc_t, INPUT>(x + base, inside, classes, strides.cls, tiling, stats_scratch);
    if (slice != 0) continue;  // the merges above are the loop's only block-wide steps
    const int64_t index = step * tiling.lanes + lane;
    tile_top[index] = s.top;
    tile_total[index] = s.total;
    tile_label[index] = valid ? static_cast<int32_t>(label) : -1;
    if (check && inside && !dense) bad |= bad_class(label, classes, has_ignore, ignore_index);
    if (elem && valid) {
      const Pixel<input_t, acc_t, INPUT> px(x + base, label, true, s);
      if constexpr (GENERAL) {
        if (!per_class) sum_e += px.focal_scaled(strides.cls, form.scales[label], gamma).loss;
        count += form.weighted_mean ? form.scales[label] : acc_t(1);
      } else {
        sum_e += px.focal(strides.cls, alpha, gamma).loss;
        count += 1;
      }
    }
  }
  // The classes, a chunk of kChunk a slice each round, over the tile's counted pixels.
  if (region || (elem && per_class) || (check && dense)) {
    __syncthreads();  // the tile is written
    for (int64_t first = 0; first < classes; first += int64_t(tiling.slices) * kChunk) {
      const int64_t c0 = first + int64_t(slice) * kChunk;
      acc_t sums[kChunkSums];  // I, P, T of classes c0 + j: sums[j], sums[kChunk + j], sums[2 kChunk + j]
#pragma unroll
      for (int i = 0; i < kChunkSums; ++i) sums[i] = 0;
      for (int64_t step = 0; step < tiling.steps; ++step) {
        const int64_t index = step * tiling.lanes + lane;
        const int64_t label = tile_label[index];
        if (label < 0) continue;
        const int64_t base = strides.at(sample, (chunk * tiling.steps + step) * tiling.lanes + lane);
        const Pixel<input_t, acc_t, INPUT> px(x + base, label, true, {tile_top[index], tile_total[index]});
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          const int64_t c = c0 + j;
          if (c >= classes) break;
          const acc_t p = px.p(c, strides.cls);
          if constexpr (GENERAL) {
            const acc_t t = px.t(form, base, c, strides.cls);
            bad |= check && dense && bad_probability(t);
            sums[j] += p * t;
            sums[kChunk + j] += squared ? p * p : p;
            sums[2 * kChunk + j] += squared ? t * t : t;
            if (elem && per_class) sum_e += px.class_terms(form, base, c, strides.cls, gamma).loss;
          } else {
            const bool hit = label == c;
            sums[j] += hit ? p : acc_t(0);
            sums[kChunk + j] += squared ? region_share<true>(p) : p;
            sums[2 * kChunk + j] += hit ? acc_t(1) : acc_t(0);
          }
        }
      }
      if (!region) continue;
      halving_warp_sum(sums, warp_lane);
      if (warp_lane % 4 == 0) {
#pragma unroll
        for (int i = 0; i < kChunkSums / 8; ++i) warp_sums[warp][(warp_lane / 4) * (kChunkSums / 8) + i] = sums[i];
      }
      __syncthreads();
      if (threadIdx.x < tiling.slices * kChunkSums) {  // a slot: one slice's (quantity, class)
        const int owner = threadIdx.x / kChunkSums, slot = threadIdx.x % kChunkSums;
        const int warps_per_slice = tiling.lanes / 32;
        acc_t total = 0;
        for (int w = 0; w < warps_per_slice; ++w) total += warp_sums[owner * warps_per_slice + w][slot];
        const int64_t c = first + int64_t(owner) * kChunk + slot % kChunk;
        if (c < classes) class_partials[(int64_t(blockIdx.x) * 3 + slot / kChunk) * classes + c] = total;
      }
      __syncthreads();  // warp_sums is read before the next round writes it
    }
  }
  if (check) write_block_flag(valid_flags, bad);
  __shared__ acc_t elem_scratch[kWarps][2];
  sum_e = warp_sum(sum_e);
  count = warp_sum(count);
  if (warp_lane == 0) {
    elem_scratch[warp][0] = sum_e;
    elem_scratch[warp][1] = count;
  }
  __syncthreads();
  if (threadIdx.x < 2) {
    acc_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += elem_scratch[w][threadIdx.x];
    elem_partials[int64_t(blockIdx.x) * 2 + threadIdx.x] = total;
  }
}

// Where the finalize writes, and its rules: per group a loss (the loss itself with
// reduction 'none') and the coefficients (groups, 3); loss[0] otherwise.
template <typename acc_t>
struct FinalizeArgs {
  const acc_t* weight;  // per class, or nullptr
  acc_t *group_losses, *loss, *coef;
  int64_t groups;
  MulticlassRules rules;
  LossParams lp;
  Reduction reduction;
};

// The finalize by one block from per-group sums (class_sums (groups, 3) = I, P, T; elem_sums
// = E and the mean's denominator), each thread its groups tid, tid + kThreads, ...; the
// counted groups and the total summed across threads in a fixed order. The rules are
// loss_math.h's multiclass_*, as the CPU's. The sums may come from other blocks of the same
// launch: read through L2 (__ldcg).
template <typename acc_t>
__device__ void finalize_block(const acc_t* class_sums, const acc_t* elem_sums, const FinalizeArgs<acc_t>& f) {
  __shared__ acc_t scratch[kThreads];
  acc_t counted = 0;
  for (int64_t g = threadIdx.x; g < f.groups; g += kThreads) {
    counted += f.rules.counts(g, __ldcg(class_sums + 3 * g + 2)) ? acc_t(1) : acc_t(0);
  }
  counted = block_sum(counted, scratch);
  const LossScales<acc_t> scales = multiclass_scales<acc_t>(counted, __ldcg(elem_sums + 1), f.lp, f.reduction);
  acc_t total = 0;
  for (int64_t g = threadIdx.x; g < f.groups; g += kThreads) {
    const acc_t sums[3] = {__ldcg(class_sums + 3 * g), __ldcg(class_sums + 3 * g + 1), __ldcg(class_sums + 3 * g + 2)};
    const acc_t group_weight = f.weight != nullptr ? f.weight[g % f.rules.classes] : acc_t(1);
    const GroupResult<acc_t> r = multiclass_group(sums, g, group_weight, scales, f.rules, f.lp);
    f.group_losses[g] = r.loss;
    f.coef[3 * g] = r.coef_i;
    f.coef[3 * g + 1] = r.coef_p;
    f.coef[3 * g + 2] = r.coef_e;
    total += r.loss;
  }
  if (f.reduction == Reduction::None) return;
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) f.loss[0] = multiclass_total(total, __ldcg(elem_sums), scales);
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    finalize_kernel(const acc_t* __restrict__ class_sums, const acc_t* __restrict__ elem_sums, FinalizeArgs<acc_t> f) {
  finalize_block(class_sums, elem_sums, f);
}

// How the stats blocks' partials add up: a group row a sample (per_sample: the sample's
// chunks_per_row blocks) or one of all the blocks.
struct PartialLayout {
  int64_t classes, samples, chunks_per_row;
  bool per_sample, region;
};

constexpr int kColumns = 32, kRows = kThreads / kColumns;

// Column k of the sums: a group row's (quantity, class) slot, or after them E and the
// mean's denominator. A block's threads are kColumns consecutive columns (a warp each row)
// by kRows rows, row r adding blocks r, r + kRows, ... in order, then the rows in order:
// class_sums (groups, 3) and elem_sums [2]. With finalize_count, the block that finishes
// last runs the finalize on them (the others' writes made visible by a fence before each
// block's count, as CUDA's threadFenceReduction sample).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const acc_t* __restrict__ class_partials, const acc_t* __restrict__ elem_partials,
                        PartialLayout layout, acc_t* class_sums, acc_t* elem_sums, int32_t* finalize_count,
                        FinalizeArgs<acc_t> f) {
  __shared__ acc_t row_sums[kRows][kColumns];
  __shared__ bool last;
  const int column_in_block = threadIdx.x % kColumns, row = threadIdx.x / kColumns;
  const int64_t width = 3 * layout.classes;  // a block's partials row
  const int64_t class_columns = (layout.per_sample ? layout.samples : 1) * width;
  const int64_t column = int64_t(blockIdx.x) * kColumns + column_in_block;
  const int64_t blocks = layout.samples * layout.chunks_per_row;
  acc_t sum = 0;
  if (column < class_columns) {
    const int64_t first = layout.per_sample ? (column / width) * layout.chunks_per_row : 0;
    const int64_t end = layout.per_sample ? first + layout.chunks_per_row : blocks;
    if (layout.region) {
      for (int64_t b = first + row; b < end; b += kRows) sum += class_partials[b * width + column % width];
    }
  } else if (column < class_columns + 2) {
    for (int64_t b = row; b < blocks; b += kRows) sum += elem_partials[b * 2 + (column - class_columns)];
  }
  row_sums[row][column_in_block] = sum;
  __syncthreads();
  if (row == 0 && column < class_columns + 2) {
    acc_t total = 0;
    for (int r = 0; r < kRows; ++r) total += row_sums[r][column_in_block];
    if (column < class_columns) {
      const int64_t group_row = column / width, quantity = (column % width) / layout.classes;
      class_sums[(group_row * layout.classes + column % layout.classes) * 3 + quantity] = total;
    } else {
      elem_sums[column - class_columns] = total;
    }
  }
  if (finalize_count == nullptr) return;
  __threadfence();  // this block's sums are visible before its count
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(finalize_count, 1) == static_cast<int32_t>(gridDim.x) - 1;
    __threadfence();  // the observing thread's fence, before the barrier (as a grid sync's)
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  finalize_block(class_sums, elem_sums, f);
}

// MAP: the focal map's backward (upstream is a per-pixel map).
// dL/dx_c from g_c = the region term's dL/dp_c and F = the element term's scale:
//   softmax:       p_c (g_c - sum_k p_k g_k) + F A (p_c - [c = y])
//                  (per-class forms: + F (h_c - p_c sum_k h_k));
//   probabilities: g_c + F [c = y] dE/dp_y (per-class forms: + F dE/dp_c);
// 0 on pixels that do not count. A thread writes its slice's classes; the per-pixel sums
// (softmax statistics, sum_k p_k g_k, sum_k h_k) are merged across the slices.
template <typename input_t, typename acc_t, MulticlassInput INPUT, bool MAP, bool GENERAL>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const input_t* __restrict__ x, ClassMapReader y, const acc_t* __restrict__ coef,
                    const acc_t* __restrict__ grad_loss, int64_t grad_loss_group_stride,
                    const input_t* __restrict__ grad_map, input_t* __restrict__ grad, int64_t classes, int64_t spatial,
                    ClassStrides strides, Tiling tiling, bool has_ignore, int64_t ignore_index, bool per_sample,
                    bool region, bool squared, bool elem, acc_t alpha, acc_t gamma, ElemForm<acc_t> form) {
  __shared__ SoftmaxStats<acc_t> stats_scratch[kThreads];
  __shared__ acc_t sum_scratch[kThreads];
  const int64_t sample = blockIdx.x / tiling.chunks_per_row, chunk = blockIdx.x % tiling.chunks_per_row;
  const int64_t group_base = per_sample ? sample * classes : 0;
  const acc_t elem_coef = MAP ? acc_t(1) : coef[2] * grad_loss[0];
  const bool dense = GENERAL && form.dense;
  const bool per_class = GENERAL && is_per_class(form.kind);
  int64_t begin, end;  // this thread's classes
  tiling.class_range(classes, begin, end);
  const auto add = [](acc_t a, acc_t b) { return a + b; };
  for (int64_t step = 0; step < tiling.steps; ++step) {
    const int64_t pixel = (chunk * tiling.steps + step) * tiling.lanes + tiling.lane();
    const bool inside = pixel < spatial;                          // no `continue` before the merges
    const int64_t base = strides.at(sample, inside ? pixel : 0);  // the gradient has the input's strides
    const int64_t label = dense ? 0 : (inside ? y(sample * spatial + pixel) : -1);
    const Pixel<input_t, acc_t, INPUT> px(
        x + base, label, inside && (dense || counted_class(label, classes, has_ignore, ignore_index)),
        pixel_stats<input_t, acc_t, INPUT>(x + base, inside, classes, strides.cls, tiling, stats_scratch));
    // g_c = c_I t_c + c_P dP/dp_c, times the upstream gradient of the group.
    auto g = [&](int64_t c, acc_t p) {
      const int64_t group = group_base + c;
      const acc_t upstream = grad_loss[group * grad_loss_group_stride];
      const acc_t ci = coef[3 * group], cp = coef[3 * group + 1];
      if constexpr (GENERAL) {
        const acc_t t = px.t(form, base, c, strides.cls);
        return (squared ? region_dp<true>(ci, cp, t, p) : region_dp<false>(ci, cp, t, p)) * upstream;
      }
      const bool hit = px.label == c;
      return (squared ? region_dp_one_hot<true>(ci, cp, hit, p) : region_dp_one_hot<false>(ci, cp, hit, p)) * upstream;
    };
    acc_t dot = 0, factor = 0, h_sum = 0;  // h_sum: F sum_k h_k (per-class forms)
    if (!MAP && region && INPUT == kSoftmax) {
      acc_t own = 0;
      if (px.valid) {
        for (int64_t c = begin; c < end; ++c) {
          const acc_t p = px.p(c, strides.cls);
          own += p * g(c, p);
        }
      }
      dot = across_slices(own, sum_scratch, tiling, add);
    }
    if (MAP || elem) {
      if (px.valid) factor = MAP ? static_cast<acc_t>(grad_map[sample * spatial + pixel]) : elem_coef;
      if (per_class) {
        acc_t own = 0;
        if (px.valid) {
          for (int64_t c = begin; c < end; ++c) own += px.class_terms(form, base, c, strides.cls, gamma).dloss;
        }
        h_sum = across_slices(own, sum_scratch, tiling, add) * factor;
      } else if (px.valid) {
        if constexpr (GENERAL) {
          factor *= px.focal_scaled(strides.cls, form.scales[px.label], gamma).dloss;
        } else {
          factor *= px.focal(strides.cls, alpha, gamma).dloss;
        }
      }
    }
    if (!inside) continue;
    for (int64_t c = begin; c < end; ++c) {
      acc_t value = 0;
      if (px.valid) {
        const acc_t p = px.p(c, strides.cls);
        if constexpr (INPUT == kClassProbabilities) {
          if (!MAP && region) value += g(c, p);
          if (MAP || elem) {
            if (per_class) {
              value += factor * px.class_terms(form, base, c, strides.cls, gamma).dloss;
            } else if (px.label == c) {
              value += factor;
            }
          }
        } else {
          if (!MAP && region) value += p * (g(c, p) - dot);
          if (MAP || elem) {
            if (per_class) {
              value += factor * px.class_terms(form, base, c, strides.cls, gamma).dloss - p * h_sum;
            } else {
              value += factor * (p - (px.label == c ? acc_t(1) : acc_t(0)));
            }
          }
        }
      }
      grad[base + c * strides.cls] = static_cast<input_t>(value);
    }
  }
}

// A thread a pixel (tiling.slices == 1).
template <typename input_t, typename acc_t, MulticlassInput INPUT, bool GENERAL>
__global__ void __launch_bounds__(kThreads)
    focal_map_kernel(const input_t* __restrict__ x, ClassMapReader y, input_t* __restrict__ out, int64_t classes,
                     int64_t spatial, ClassStrides strides, Tiling tiling, bool has_ignore, int64_t ignore_index,
                     acc_t alpha, acc_t gamma, int32_t* __restrict__ valid_flags, ElemForm<acc_t> form) {
  const int64_t sample = blockIdx.x / tiling.chunks_per_row, chunk = blockIdx.x % tiling.chunks_per_row;
  const bool check = valid_flags != nullptr;
  const bool dense = GENERAL && form.dense;
  bool bad = false;
  for (int64_t step = 0; step < tiling.steps; ++step) {
    const int64_t pixel = (chunk * tiling.steps + step) * kThreads + threadIdx.x;
    if (pixel >= spatial) continue;
    const int64_t base = strides.at(sample, pixel);
    const int64_t label = dense ? 0 : y(sample * spatial + pixel);
    const Pixel<input_t, acc_t, INPUT> px(x + base, label,
                                          dense || counted_class(label, classes, has_ignore, ignore_index),
                                          range_stats<input_t, acc_t, INPUT>(x + base, true, strides.cls, 0, classes));
    if (check) {
      if (dense) {
        for (int64_t c = 0; c < classes; ++c) bad |= bad_probability(px.t(form, base, c, strides.cls));
      } else {
        bad |= bad_class(px.label, classes, has_ignore, ignore_index);
      }
    }
    acc_t loss = 0;
    if (px.valid) {
      if constexpr (GENERAL) {
        loss = px.general_elem(form, base, classes, strides.cls, gamma).loss;
      } else {
        loss = px.focal(strides.cls, alpha, gamma).loss;
      }
    }
    out[sample * spatial + pixel] = static_cast<input_t>(loss);
  }
  if (check) write_block_flag(valid_flags, bad);  // every thread gets here: the loop only skips
}

// The element form for the GENERAL kernels (kLabel on a class map: the default kernels,
// general = false); scales (a_c) live in `scales`, on the input's device.
template <typename acc_t>
struct FormSetup {
  bool general;
  Tensor scales;
  ElemForm<acc_t> form;

  FormSetup(const MulticlassOperands& operands, const LossParams& lp, const std::optional<Tensor>& class_weight) {
    const Tensor& input = operands.input;
    const int64_t C = input.size(1);
    const MulticlassElem kind = multiclass_elem(lp, operands.dense_target, class_weight.has_value());
    general = kind != kLabel || operands.dense_target;
    form = ElemForm<acc_t>{kind, nullptr, acc_t(1), acc_t(0), false, operands.dense_target, TargetValues{nullptr, 0}};
    if (!general) return;
    const at::TensorOptions options = accumulation_options(input);
    if (class_weight.has_value()) {
      TORCH_CHECK(class_weight->numel() == C, "fusedloss: class_weight must hold one value per class (", C, "), got ",
                  class_weight->sizes());
      scales = class_weight->to(options).contiguous();  // a device copy, queued: no sync
    } else {
      scales = at::full({C}, static_cast<double>(alpha_scale(lp.focal_alpha)), options);
    }
    const double eps = lp.label_smoothing;
    form.scales = scales.const_data_ptr<acc_t>();
    form.keep = static_cast<acc_t>(1 - eps);
    form.spread = static_cast<acc_t>(eps / double(C));
    form.weighted_mean = lp.weighted_mean && !operands.dense_target;  // a dense target's mean is over its pixels
    if (operands.dense_target) form.values = target_values(operands.target);
  }
};

// Calls fn(std::bool_constant<GENERAL>) for the runtime `general`.
template <typename Fn>
void with_general(bool general, Fn&& fn) {
  if (general) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

// The stats kernel's launch and its per-block partials: class sums (blocks, 3, C) (a dummy
// when there is no region term) and element sums (blocks, 2).
struct Stats {
  ClassPlan plan;
  Tensor classes, elems;
};

Stats launch_stats(const MulticlassOperands& operands, const ClassMapShape& shape, const LossParams& lp,
                   const std::optional<Tensor>& class_weight, std::optional<int64_t> ignore_index, bool check_target,
                   int32_t* finalize_count) {
  const Tensor &input = operands.input, &target = operands.target;
  const ClassPlan plan = class_plan(shape, input, true, kMaxSlices);
  const int64_t C = shape.classes;
  const at::TensorOptions options = accumulation_options(input);
  Stats stats{plan, at::empty({lp.region ? plan.blocks : 1, 3, C}, options), at::empty({plan.blocks, 2}, options)};
  TargetFlags flags(check_target, plan.blocks, input);
  dispatch_input(input, "multiclass_stats_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    const FormSetup<acc_t> setup(operands, lp, class_weight);
    const ClassMapReader labels = operands.dense_target ? ClassMapReader{nullptr, 8} : class_map_reader(target);
    with_multiclass_input(multiclass_input(lp), [&](auto mode) {
      with_general(setup.general, [&](auto general) {
        stats_kernel<input_t, acc_t, decltype(mode)::value, decltype(general)::value>
            <<<plan.blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                input.const_data_ptr<input_t>(), labels, stats.classes.mutable_data_ptr<acc_t>(),
                stats.elems.mutable_data_ptr<acc_t>(), C, shape.spatial, operands.strides, plan.tiling,
                ignore_index.has_value(), ignore_index.value_or(0), lp.region, lp.squared_pred, lp.elem,
                static_cast<acc_t>(lp.focal_alpha), static_cast<acc_t>(lp.focal_gamma), flags.data(), setup.form,
                finalize_count);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  flags.assert_valid(operands.dense_target ? kBadProbabilityMessage : kBadClassMessage);
  return stats;
}

std::vector<int64_t> loss_shape_of(const Tensor& input, bool per_sample) {
  if (per_sample) return {input.size(0), input.size(1)};
  return {input.size(1)};
}

// The finalize's outputs: the group losses (the loss itself, as loss_shape, with reduction
// 'none'), the loss and the coefficients (groups, 3); the class weights in the sums' dtype.
struct FinalizeOutputs {
  Tensor group_losses, loss, coef, weight;

  FinalizeOutputs(int64_t groups, const at::TensorOptions& options, const std::optional<Tensor>& weight_,
                  Reduction reduction, c10::IntArrayRef loss_shape)
      : group_losses(at::empty({groups}, options)),
        loss(reduction == Reduction::None ? group_losses.view(loss_shape) : at::empty({}, options)),
        coef(at::empty({groups, 3}, options)) {
    if (weight_.has_value()) weight = weight_->to(options).contiguous();
  }

  template <typename acc_t>
  FinalizeArgs<acc_t> args(const MulticlassRules& rules, const LossParams& lp, Reduction reduction) {
    return {weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr,
            group_losses.mutable_data_ptr<acc_t>(),
            loss.mutable_data_ptr<acc_t>(),
            coef.mutable_data_ptr<acc_t>(),
            group_losses.numel(),
            rules,
            lp,
            reduction};
  }
};

// The stats kernel's partials summed per group (sum_partials_kernel) into class_sums (groups,
// 3) and elem_sums [2]; with `finalize`, its last block runs the finalize into those outputs.
void sum_partials(const Stats& stats, const ClassMapShape& shape, bool per_sample, bool region, Tensor& class_sums,
                  Tensor& elem_sums, int32_t* finalize_count, FinalizeOutputs* finalize, const MulticlassRules& rules,
                  const LossParams& lp, Reduction reduction) {
  const PartialLayout layout{shape.classes, shape.batch, stats.plan.tiling.chunks_per_row, per_sample, region};
  const int64_t columns = (per_sample ? shape.batch : 1) * 3 * shape.classes + 2;
  const int64_t blocks = (columns + kColumns - 1) / kColumns;
  check_grid(blocks, columns, "sums column");
  AT_DISPATCH_FLOATING_TYPES(class_sums.scalar_type(), "multiclass_sum_partials_cuda", [&] {
    const FinalizeArgs<scalar_t> args =
        finalize != nullptr ? finalize->args<scalar_t>(rules, lp, reduction) : FinalizeArgs<scalar_t>{};
    sum_partials_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        stats.classes.const_data_ptr<scalar_t>(), stats.elems.const_data_ptr<scalar_t>(), layout,
        class_sums.mutable_data_ptr<scalar_t>(), elem_sums.mutable_data_ptr<scalar_t>(), finalize_count, args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The forward's first half on its own, for statistics summed across processes
// (ops/synced.py): the per-group class sums (groups, 3) and the element sums [E, the
// mean's denominator]. lp: LossParams::per_element, with label_smoothing and weighted_mean.
std::tuple<Tensor, Tensor> stats_sums(const Tensor& input_, const Tensor& target_,
                                      const std::optional<Tensor>& class_weight, bool per_sample, const LossParams& lp,
                                      std::optional<int64_t> ignore_index, bool check_target) {
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const ClassMapShape shape(operands.input);
  const Stats stats = launch_stats(operands, shape, lp, class_weight, ignore_index, check_target, nullptr);
  const int64_t groups = per_sample ? shape.batch * shape.classes : shape.classes;
  Tensor class_sums = at::empty({groups, 3}, stats.elems.options()), elem_sums = at::empty({2}, stats.elems.options());
  sum_partials(stats, shape, per_sample, lp.region, class_sums, elem_sums, nullptr, nullptr,
               MulticlassRules{shape.classes, true, false}, lp, Reduction::Sum);
  return {class_sums, elem_sums};
}

std::tuple<Tensor, Tensor> finalize(const Tensor& class_sums_, const Tensor& elem_sums_,
                                    const std::optional<Tensor>& weight, const MulticlassRules& rules,
                                    const LossParams& lp, Reduction reduction, c10::IntArrayRef loss_shape) {
  const c10::cuda::CUDAGuard device_guard(class_sums_.device());
  TORCH_CHECK(class_sums_.dim() == 2 && class_sums_.size(1) == 3 && class_sums_.size(0) % rules.classes == 0,
              "fusedloss: class_sums must be (groups, 3) with groups a multiple of ", rules.classes, ", got ",
              class_sums_.sizes());
  TORCH_CHECK(elem_sums_.numel() == 2, "fusedloss: elem_sums must hold 2 values, got ", elem_sums_.sizes());
  const at::ScalarType acc_dtype = accumulation_type(class_sums_);
  const Tensor class_sums = class_sums_.to(acc_dtype).contiguous(), elem_sums = elem_sums_.to(acc_dtype).contiguous();
  FinalizeOutputs out(class_sums.size(0), class_sums.options(), weight, reduction, loss_shape);
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "multiclass_finalize_cuda", [&] {
    finalize_kernel<scalar_t><<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        class_sums.const_data_ptr<scalar_t>(), elem_sums.const_data_ptr<scalar_t>(),
        out.args<scalar_t>(rules, lp, reduction));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out.loss, out.coef};
}

std::tuple<Tensor, Tensor> multiclass_stats_cuda(const Tensor& input, const Tensor& target,
                                                 const std::optional<Tensor>& class_weight, bool per_sample,
                                                 bool region, bool squared_pred, bool elem, double focal_alpha,
                                                 double focal_gamma, double label_smoothing, bool weighted_mean,
                                                 bool from_logits, bool clamped_log,
                                                 std::optional<int64_t> ignore_index, bool check_target) {
  LossParams lp =
      LossParams::per_element(region, squared_pred, false, elem, focal_alpha, focal_gamma, from_logits, clamped_log);
  lp.label_smoothing = label_smoothing;
  lp.weighted_mean = weighted_mean;
  return stats_sums(input, target, class_weight, per_sample, lp, ignore_index, check_target);
}

std::tuple<Tensor, Tensor> multiclass_finalize_cuda(const Tensor& class_sums, const Tensor& elem_sums,
                                                    const std::optional<Tensor>& weight, int64_t num_classes,
                                                    bool per_sample, bool region, double tv_alpha, double tv_beta,
                                                    double smooth_nr, double smooth_dr, double region_gamma,
                                                    double region_weight, bool log_loss, bool elem, double elem_weight,
                                                    bool elem_mean, bool include_background, bool exclude_empty,
                                                    c10::string_view reduction, c10::IntArrayRef loss_shape) {
  return finalize(class_sums, elem_sums, weight, MulticlassRules{num_classes, include_background, exclude_empty},
                  LossParams::for_finalize(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight,
                                           log_loss, elem, elem_weight, elem_mean),
                  parse_reduction(reduction), loss_shape);
}

// The forward in two launches: the stats kernel, then sum_partials_kernel with the finalize
// in its last block.
std::tuple<Tensor, Tensor> multiclass_loss_cuda(
    const Tensor& input_, const Tensor& target_, const std::optional<Tensor>& weight,
    const std::optional<Tensor>& class_weight, bool per_sample, bool region, double tv_alpha, double tv_beta,
    double smooth_nr, double smooth_dr, double region_gamma, double region_weight, bool log_loss, bool squared_pred,
    bool min_intersection, bool elem, double focal_alpha, double focal_gamma, int64_t focal_form, double elem_weight,
    bool elem_mean, double label_smoothing, bool weighted_mean, bool from_logits, bool clamped_log,
    std::optional<int64_t> ignore_index, bool include_background, bool exclude_empty, c10::string_view reduction_,
    bool check_target) {
  check_no_min_intersection(min_intersection);
  check_no_focal_form(focal_form);
  LossParams lp = LossParams::from_op(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight,
                                      log_loss, squared_pred, false, elem, focal_alpha, focal_gamma, 0, elem_weight,
                                      elem_mean, from_logits, clamped_log);
  lp.label_smoothing = label_smoothing;
  lp.weighted_mean = weighted_mean;
  const Reduction reduction = parse_reduction(reduction_);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const ClassMapShape shape(operands.input);
  Tensor finalize_count = at::empty({1}, operands.input.options().dtype(at::kInt));  // zeroed by the stats kernel
  const Stats stats = launch_stats(operands, shape, lp, class_weight, ignore_index, check_target,
                                   finalize_count.mutable_data_ptr<int32_t>());
  const int64_t groups = per_sample ? shape.batch * shape.classes : shape.classes;
  const at::TensorOptions options = stats.elems.options();
  Tensor class_sums = at::empty({groups, 3}, options), elem_sums = at::empty({2}, options);
  FinalizeOutputs out(groups, options, weight, reduction, loss_shape_of(input_, per_sample));
  sum_partials(stats, shape, per_sample, lp.region, class_sums, elem_sums, finalize_count.mutable_data_ptr<int32_t>(),
               &out, MulticlassRules{shape.classes, include_background, exclude_empty}, lp, reduction);
  return {out.loss, out.coef};
}

template <bool MAP>
Tensor multiclass_backward_cuda(const Tensor& upstream_, const Tensor& input_, const Tensor& target_,
                                const Tensor* coef_, const std::optional<Tensor>& class_weight, bool per_sample,
                                const LossParams& lp, std::optional<int64_t> ignore_index) {
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor &input = operands.input, &target = operands.target;
  const ClassMapShape shape(input);
  const ClassPlan plan = class_plan(shape, input, false, kMaxSlices);
  Tensor grad = at::empty_like(input, operands.format);  // the input's strides: written at the offsets read
  const at::ScalarType acc_dtype = accumulation_type(input);
  const Tensor upstream = upstream_.to(MAP ? input.scalar_type() : acc_dtype).contiguous();
  Tensor coef;  // (groups, 3) in the accumulation dtype, read by index
  if (!MAP) {
    coef = coef_->to(acc_dtype).contiguous();
    TORCH_CHECK(coef.numel() == (per_sample ? shape.batch : 1) * shape.classes * 3,
                "fusedloss: coef must be (groups, 3), got ", coef_->sizes());
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_input(input, "multiclass_backward_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    const FormSetup<acc_t> setup(operands, lp, class_weight);
    const ClassMapReader labels = operands.dense_target ? ClassMapReader{nullptr, 8} : class_map_reader(target);
    with_multiclass_input(multiclass_input(lp), [&](auto mode) {
      with_general(setup.general, [&](auto general) {
        backward_kernel<input_t, acc_t, decltype(mode)::value, MAP, decltype(general)::value>
            <<<plan.blocks, kThreads, 0, stream>>>(
                input.const_data_ptr<input_t>(), labels, MAP ? nullptr : coef.const_data_ptr<acc_t>(),
                MAP ? nullptr : upstream.const_data_ptr<acc_t>(), upstream.dim() > 0 ? 1 : 0,
                MAP ? upstream.const_data_ptr<input_t>() : nullptr, grad.mutable_data_ptr<input_t>(), shape.classes,
                shape.spatial, operands.strides, plan.tiling, ignore_index.has_value(), ignore_index.value_or(0),
                per_sample, lp.region, lp.squared_pred, lp.elem, static_cast<acc_t>(lp.focal_alpha),
                static_cast<acc_t>(lp.focal_gamma), setup.form);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return grad;
}

Tensor multiclass_loss_backward_cuda(const Tensor& grad_loss, const Tensor& input, const Tensor& target,
                                     const Tensor& coef, const std::optional<Tensor>& class_weight, bool per_sample,
                                     bool region, bool squared_pred, bool elem, double focal_alpha, double focal_gamma,
                                     double label_smoothing, bool from_logits, bool clamped_log,
                                     std::optional<int64_t> ignore_index) {
  LossParams lp =
      LossParams::per_element(region, squared_pred, false, elem, focal_alpha, focal_gamma, from_logits, clamped_log);
  lp.label_smoothing = label_smoothing;
  return multiclass_backward_cuda<false>(grad_loss, input, target, &coef, class_weight, per_sample, lp, ignore_index);
}

Tensor multiclass_focal_map_backward_cuda(const Tensor& grad_map, const Tensor& input, const Tensor& target,
                                          const std::optional<Tensor>& class_weight, double alpha, double gamma,
                                          bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index) {
  return multiclass_backward_cuda<true>(grad_map, input, target, nullptr, class_weight, false,
                                        LossParams::focal_map(alpha, gamma, from_logits, clamped_log), ignore_index);
}

Tensor multiclass_focal_map_cuda(const Tensor& input_, const Tensor& target_, const std::optional<Tensor>& class_weight,
                                 double alpha, double gamma, bool from_logits, bool clamped_log,
                                 std::optional<int64_t> ignore_index, bool check_target) {
  const LossParams lp = LossParams::focal_map(alpha, gamma, from_logits, clamped_log);
  const MulticlassInput mode = multiclass_input(lp);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor &input = operands.input, &target = operands.target;
  const ClassMapShape shape(input);
  const ClassPlan plan = class_plan(shape, input, false, 1);
  Tensor out = at::empty(pixel_shape(input), input.options());
  const auto stream = at::cuda::getCurrentCUDAStream();
  TargetFlags flags(check_target, plan.blocks, input);
  dispatch_input(input, "multiclass_focal_map_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    const FormSetup<acc_t> setup(operands, lp, class_weight);
    const ClassMapReader labels = operands.dense_target ? ClassMapReader{nullptr, 8} : class_map_reader(target);
    with_multiclass_input(mode, [&](auto mode_tag) {
      with_general(setup.general, [&](auto general) {
        focal_map_kernel<input_t, acc_t, decltype(mode_tag)::value, decltype(general)::value>
            <<<plan.blocks, kThreads, 0, stream>>>(
                input.const_data_ptr<input_t>(), labels, out.mutable_data_ptr<input_t>(), shape.classes, shape.spatial,
                operands.strides, plan.tiling, ignore_index.has_value(), ignore_index.value_or(0),
                static_cast<acc_t>(alpha), static_cast<acc_t>(gamma), flags.data(), setup.form);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  flags.assert_valid(operands.dense_target ? kBadProbabilityMessage : kBadClassMessage);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CUDA, m) {
  m.impl("multiclass_loss", &multiclass_loss_cuda);
  m.impl("multiclass_loss_backward", &multiclass_loss_backward_cuda);
  m.impl("multiclass_focal_map", &multiclass_focal_map_cuda);
  m.impl("multiclass_focal_map_backward", &multiclass_focal_map_backward_cuda);
  m.impl("multiclass_stats", &multiclass_stats_cuda);
  m.impl("multiclass_finalize", &multiclass_finalize_cuda);
}

}  // namespace fusedloss
