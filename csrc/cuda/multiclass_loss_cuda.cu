// CUDA kernels of the multiclass ops (softmax over the classes, or probabilities
// as they are with from_logits=False: a template argument). Input (N, C, S) logits, read
// through (sample, class, pixel) strides (../layout.h: contiguous and
// channels_last in place), target (N, S) class indices, or a dense (N, C, S)
// target at the input's offsets; one thread per pixel,
// looping over the classes (contiguous: reads of x[c * S + pixel] coalesced
// across the warp; channels_last: a warp's C * 32 logits are one span that the
// class loop reads through L1). The softmax lives in registers: no one-hot
// target, no softmax tensor. Class weights, label smoothing and dense targets
// run in the GENERAL kernels (their element form a runtime value: ElemForm); a
// class map without them in the default ones, unchanged.
//   stats_kernel     per (block, warp) partial class sums [C][I, P, T] (warp
//                    shuffles; each slot has one writer, no atomics) and [E, valid pixels]
//   (torch sums the partials per group: parallel fixed-order reductions)
//   finalize_kernel  one block: the formula per group, weights, background /
//                    empty-class exclusion, reduction, coefficients
//   backward_kernel  dL/dx_c = p_c (g_c - sum_k p_k g_k) + A (p_c - [c = y])
//                    (probabilities: g_c + F [c = y])
//   focal_map_kernel per-pixel focal loss (reduction='none')
// Class indices outside [0, C) that are not ignore_index are treated as ignored
// (they never index memory); with check_target, the forward kernels (stats,
// focal map) also flag them, one flag per block, for a device-side assert (no
// host sync, target_check_cuda.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
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

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

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

// Each sample's pixels cut into chunks of plan.steps * kThreads pixels, a block
// each (grid.h; a row is a sample).
LaunchPlan launch_plan(const ClassMapShape& shape, const Tensor& input) {
  return LaunchPlan(shape.batch, (shape.spatial + kThreads - 1) / kThreads, input.device(), "sample");
}

// One pixel's probabilities and its label: softmax (the max logit and the sum of
// exp(x - max)), or probabilities as they are (INPUT = kClassProbabilities). A dense
// target's pixel has label 0 (every pixel counts).
template <typename input_t, typename acc_t, MulticlassInput INPUT>
struct Pixel {
  const input_t* x;  // this pixel's logit of class 0; class c at x[c * cls]
  int64_t label;
  bool valid;
  acc_t top, total;

  __device__ Pixel(const input_t* x_, int64_t label_, bool inside, int64_t classes, int64_t cls, bool has_ignore,
                   int64_t ignore_index)
      : x(x_), label(label_) {
    valid = inside && counted_class(label, classes, has_ignore, ignore_index);
    top = -INFINITY;
    total = 0;
    if (!inside || INPUT == kClassProbabilities) return;
    for (int64_t c = 0; c < classes; ++c) top = max(top, static_cast<acc_t>(x[c * cls]));
    for (int64_t c = 0; c < classes; ++c) total += std::exp(static_cast<acc_t>(x[c * cls]) - top);
  }

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

// GENERAL: the element forms other than kLabel, and dense targets (form); else today's
// kernel (the form unused).
template <typename input_t, typename acc_t, MulticlassInput INPUT, bool GENERAL>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const input_t* __restrict__ x, ClassMapReader y, acc_t* __restrict__ class_partials,
                 acc_t* __restrict__ elem_partials, int64_t classes, int64_t spatial, ClassStrides strides,
                 int64_t chunks_per_row, int64_t steps, bool has_ignore, int64_t ignore_index, bool region,
                 bool squared, bool elem, acc_t alpha, acc_t gamma, int32_t* __restrict__ valid_flags,
                 ElemForm<acc_t> form) {
  const int64_t sample = blockIdx.x / chunks_per_row, chunk = blockIdx.x % chunks_per_row;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t part = int64_t(blockIdx.x) * kWarps + warp;               // this warp's slots: one writer each
  acc_t* slots = region ? class_partials + part * classes * 3 : nullptr;  // a dummy buffer without region
  if (region && lane == 0) {
    for (int64_t c = 0; c < classes * 3; ++c) slots[c] = 0;
  }
  const bool check = valid_flags != nullptr;
  const bool dense = GENERAL && form.dense;
  bool bad = false;
  acc_t sum_e = 0, count = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t pixel = (chunk * steps + step) * kThreads + threadIdx.x;
    const bool inside = pixel < spatial;
    const int64_t base = strides.at(sample, inside ? pixel : 0);
    const int64_t label = dense ? 0 : (inside ? y(sample * spatial + pixel) : -1);
    const Pixel<input_t, acc_t, INPUT> px(x + base, inside ? label : -1, inside, classes, strides.cls, has_ignore,
                                          ignore_index);
    if (check && inside) {
      if (dense) {
        for (int64_t c = 0; c < classes; ++c) bad |= bad_probability(px.t(form, base, c, strides.cls));
      } else {
        bad |= bad_class(px.label, classes, has_ignore, ignore_index);
      }
    }
    if (region) {
      for (int64_t c = 0; c < classes; ++c) {
        const acc_t p = px.valid ? px.p(c, strides.cls) : acc_t(0);
        acc_t sum_i, sum_p, sum_t;
        if constexpr (GENERAL) {
          const acc_t t = px.valid ? px.t(form, base, c, strides.cls) : acc_t(0);
          sum_i = warp_sum(p * t);
          sum_p = warp_sum(squared ? p * p : p);
          sum_t = warp_sum(squared ? t * t : t);
        } else {
          const bool hit = px.valid && px.label == c;
          sum_i = warp_sum(hit ? p : acc_t(0));
          sum_p = warp_sum(squared ? region_share<true>(p) : p);
          sum_t = warp_sum(hit ? acc_t(1) : acc_t(0));
        }
        if (lane == 0) {
          slots[3 * c] += sum_i;
          slots[3 * c + 1] += sum_p;
          slots[3 * c + 2] += sum_t;
        }
      }
    }
    if (elem && px.valid) {
      if constexpr (GENERAL) {
        sum_e += px.general_elem(form, base, classes, strides.cls, gamma).loss;
        count += form.weighted_mean ? form.scales[px.label] : acc_t(1);
      } else {
        sum_e += px.focal(strides.cls, alpha, gamma).loss;
        count += 1;
      }
    }
  }
  sum_e = warp_sum(sum_e);
  count = warp_sum(count);
  if (lane == 0) {
    elem_partials[part * 2] = sum_e;
    elem_partials[part * 2 + 1] = count;
  }
  if (check) write_block_flag(valid_flags, bad);
}

// Per-group sums in: class_sums (groups, 3) = I, P, T; elem_sums = [E, valid pixels].
// The rules are loss_math.h's multiclass_*, as the CPU's.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    finalize_kernel(const acc_t* __restrict__ class_sums, const acc_t* __restrict__ elem_sums,
                    const acc_t* __restrict__ weight, acc_t* group_losses,  // group_losses is loss for 'none'
                    acc_t* loss, acc_t* __restrict__ coef, int64_t groups, MulticlassRules rules, LossParams lp,
                    Reduction reduction) {
  __shared__ acc_t counted;  // groups that count, for the mean
  if (threadIdx.x == 0) {
    acc_t n = 0;
    for (int64_t g = 0; g < groups; ++g) n += rules.counts(g, class_sums[3 * g + 2]) ? acc_t(1) : acc_t(0);
    counted = n;
  }
  __syncthreads();
  const LossScales<acc_t> scales = multiclass_scales<acc_t>(counted, elem_sums[1], lp, reduction);
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    const acc_t group_weight = weight != nullptr ? weight[g % rules.classes] : acc_t(1);
    const GroupResult<acc_t> r = multiclass_group(class_sums + 3 * g, g, group_weight, scales, rules, lp);
    group_losses[g] = r.loss;
    coef[3 * g] = r.coef_i;
    coef[3 * g + 1] = r.coef_p;
    coef[3 * g + 2] = r.coef_e;
  }
  if (reduction == Reduction::None) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = 0;
    for (int64_t g = 0; g < groups; ++g) total += group_losses[g];
    loss[0] = multiclass_total(total, elem_sums[0], scales);
  }
}

// MAP: the focal map's backward (upstream is a per-pixel map).
// dL/dx_c from g_c = the region term's dL/dp_c and F = the element term's scale:
//   softmax:       p_c (g_c - sum_k p_k g_k) + F A (p_c - [c = y])
//                  (per-class forms: + F (h_c - p_c sum_k h_k));
//   probabilities: g_c + F [c = y] dE/dp_y (per-class forms: + F dE/dp_c);
// 0 on pixels that do not count.
template <typename input_t, typename acc_t, MulticlassInput INPUT, bool MAP, bool GENERAL>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const input_t* __restrict__ x, ClassMapReader y, const acc_t* __restrict__ coef,
                    const acc_t* __restrict__ grad_loss, int64_t grad_loss_group_stride,
                    const input_t* __restrict__ grad_map, input_t* __restrict__ grad, int64_t classes, int64_t spatial,
                    ClassStrides strides, int64_t chunks_per_row, int64_t steps, bool has_ignore, int64_t ignore_index,
                    bool per_sample, bool region, bool squared, bool elem, acc_t alpha, acc_t gamma,
                    ElemForm<acc_t> form) {
  const int64_t sample = blockIdx.x / chunks_per_row, chunk = blockIdx.x % chunks_per_row;
  const int64_t group_base = per_sample ? sample * classes : 0;
  const acc_t elem_coef = MAP ? acc_t(1) : coef[2] * grad_loss[0];
  const bool dense = GENERAL && form.dense;
  const bool per_class = GENERAL && is_per_class(form.kind);
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t pixel = (chunk * steps + step) * kThreads + threadIdx.x;
    if (pixel >= spatial) continue;                  // no warp-wide operations below
    const int64_t base = strides.at(sample, pixel);  // the gradient has the input's strides
    const Pixel<input_t, acc_t, INPUT> px(x + base, dense ? 0 : y(sample * spatial + pixel), true, classes, strides.cls,
                                          has_ignore, ignore_index);
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
    if (px.valid) {
      if (!MAP && region && INPUT == kSoftmax) {
        for (int64_t c = 0; c < classes; ++c) {
          const acc_t p = px.p(c, strides.cls);
          dot += p * g(c, p);
        }
      }
      if (MAP || elem) {
        factor = MAP ? static_cast<acc_t>(grad_map[sample * spatial + pixel]) : elem_coef;
        if (per_class) {
          for (int64_t c = 0; c < classes; ++c) h_sum += px.class_terms(form, base, c, strides.cls, gamma).dloss;
          h_sum *= factor;
        } else if (GENERAL) {
          factor *= px.focal_scaled(strides.cls, form.scales[px.label], gamma).dloss;
        } else {
          factor *= px.focal(strides.cls, alpha, gamma).dloss;
        }
      }
    }
    for (int64_t c = 0; c < classes; ++c) {
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

template <typename input_t, typename acc_t, MulticlassInput INPUT, bool GENERAL>
__global__ void __launch_bounds__(kThreads)
    focal_map_kernel(const input_t* __restrict__ x, ClassMapReader y, input_t* __restrict__ out, int64_t classes,
                     int64_t spatial, ClassStrides strides, int64_t chunks_per_row, int64_t steps, bool has_ignore,
                     int64_t ignore_index, acc_t alpha, acc_t gamma, int32_t* __restrict__ valid_flags,
                     ElemForm<acc_t> form) {
  const int64_t sample = blockIdx.x / chunks_per_row, chunk = blockIdx.x % chunks_per_row;
  const bool check = valid_flags != nullptr;
  const bool dense = GENERAL && form.dense;
  bool bad = false;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t pixel = (chunk * steps + step) * kThreads + threadIdx.x;
    if (pixel >= spatial) continue;
    const int64_t base = strides.at(sample, pixel);
    const Pixel<input_t, acc_t, INPUT> px(x + base, dense ? 0 : y(sample * spatial + pixel), true, classes, strides.cls,
                                          has_ignore, ignore_index);
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

// The stats kernel's per-warp partials: class sums (parts, C, 3) (a dummy when
// there is no region term) and element sums (parts, 2).
struct Partials {
  Tensor classes, elems;
};

Partials launch_stats(const MulticlassOperands& operands, const ClassMapShape& shape, const LaunchPlan& plan,
                      const LossParams& lp, const std::optional<Tensor>& class_weight,
                      std::optional<int64_t> ignore_index, bool check_target) {
  const Tensor &input = operands.input, &target = operands.target;
  const int64_t C = shape.classes, parts = plan.blocks * kWarps;
  const at::TensorOptions options = accumulation_options(input);
  Partials partials{at::empty({lp.region ? parts : 1, C, 3}, options), at::empty({parts, 2}, options)};
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
                input.const_data_ptr<input_t>(), labels, partials.classes.mutable_data_ptr<acc_t>(),
                partials.elems.mutable_data_ptr<acc_t>(), C, shape.spatial, operands.strides, plan.chunks_per_row,
                plan.steps, ignore_index.has_value(), ignore_index.value_or(0), lp.region, lp.squared_pred, lp.elem,
                static_cast<acc_t>(lp.focal_alpha), static_cast<acc_t>(lp.focal_gamma), flags.data(), setup.form);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  flags.assert_valid(operands.dense_target ? kBadProbabilityMessage : kBadClassMessage);
  return partials;
}

std::vector<int64_t> loss_shape_of(const Tensor& input, bool per_sample) {
  if (per_sample) return {input.size(0), input.size(1)};
  return {input.size(1)};
}

// The forward in two halves, also used on their own for statistics summed across
// processes (ops/synced.py): the stats kernel, then the per-warp partials summed
// by torch (fixed-order, parallel reductions: no atomics, and no single thread
// walking thousands of partials) into the per-group class sums (groups, 3) and
// the element sums [E, the mean's denominator]; then the finalize kernel on those sums.
// lp: LossParams::per_element, with label_smoothing and weighted_mean.
std::tuple<Tensor, Tensor> stats(const Tensor& input_, const Tensor& target_, const std::optional<Tensor>& class_weight,
                                 bool per_sample, const LossParams& lp, std::optional<int64_t> ignore_index,
                                 bool check_target) {
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const ClassMapShape shape(operands.input);
  const LaunchPlan plan = launch_plan(shape, operands.input);
  const int64_t C = shape.classes, groups = per_sample ? shape.batch * C : C;
  const Partials partials = launch_stats(operands, shape, plan, lp, class_weight, ignore_index, check_target);
  Tensor class_sums = !lp.region   ? at::zeros({groups, 3}, partials.elems.options())
                      : per_sample ? partials.classes.view({shape.batch, -1, C, 3}).sum(1).view({groups, 3})
                                   : partials.classes.sum(0);
  return {class_sums, partials.elems.sum(0)};
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
  const int64_t groups = class_sums.size(0);
  const at::TensorOptions options = class_sums.options();
  Tensor group_losses = at::empty({groups}, options);
  Tensor loss = reduction == Reduction::None ? group_losses.view(loss_shape) : at::empty({}, options);
  Tensor coef = at::empty({groups, 3}, options);
  Tensor weight_acc;
  if (weight.has_value()) weight_acc = weight->to(options).contiguous();
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "multiclass_finalize_cuda", [&] {
    finalize_kernel<scalar_t><<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        class_sums.const_data_ptr<scalar_t>(), elem_sums.const_data_ptr<scalar_t>(),
        weight_acc.defined() ? weight_acc.const_data_ptr<scalar_t>() : nullptr,
        group_losses.mutable_data_ptr<scalar_t>(), loss.mutable_data_ptr<scalar_t>(), coef.mutable_data_ptr<scalar_t>(),
        groups, rules, lp, reduction);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, coef};
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
  return stats(input, target, class_weight, per_sample, lp, ignore_index, check_target);
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

std::tuple<Tensor, Tensor> multiclass_loss_cuda(
    const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight,
    const std::optional<Tensor>& class_weight, bool per_sample, bool region, double tv_alpha, double tv_beta,
    double smooth_nr, double smooth_dr, double region_gamma, double region_weight, bool log_loss, bool squared_pred,
    bool min_intersection, bool elem, double focal_alpha, double focal_gamma, int64_t focal_form, double elem_weight,
    bool elem_mean, double label_smoothing, bool weighted_mean, bool from_logits, bool clamped_log,
    std::optional<int64_t> ignore_index, bool include_background, bool exclude_empty, c10::string_view reduction,
    bool check_target) {
  check_no_min_intersection(min_intersection);
  check_no_focal_form(focal_form);
  LossParams lp = LossParams::from_op(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight,
                                      log_loss, squared_pred, false, elem, focal_alpha, focal_gamma, 0, elem_weight,
                                      elem_mean, from_logits, clamped_log);
  lp.label_smoothing = label_smoothing;
  lp.weighted_mean = weighted_mean;
  const auto [class_sums, elem_sums] = stats(input, target, class_weight, per_sample, lp, ignore_index, check_target);
  return finalize(class_sums, elem_sums, weight, MulticlassRules{input.size(1), include_background, exclude_empty}, lp,
                  parse_reduction(reduction), loss_shape_of(input, per_sample));
}

template <bool MAP>
Tensor multiclass_backward_cuda(const Tensor& upstream_, const Tensor& input_, const Tensor& target_,
                                const Tensor* coef_, const std::optional<Tensor>& class_weight, bool per_sample,
                                const LossParams& lp, std::optional<int64_t> ignore_index) {
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor &input = operands.input, &target = operands.target;
  const ClassMapShape shape(input);
  const LaunchPlan plan = launch_plan(shape, input);
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
                shape.spatial, operands.strides, plan.chunks_per_row, plan.steps, ignore_index.has_value(),
                ignore_index.value_or(0), per_sample, lp.region, lp.squared_pred, lp.elem,
                static_cast<acc_t>(lp.focal_alpha), static_cast<acc_t>(lp.focal_gamma), setup.form);
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
  const LaunchPlan plan = launch_plan(shape, input);
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
                operands.strides, plan.chunks_per_row, plan.steps, ignore_index.has_value(), ignore_index.value_or(0),
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
