// CPU kernels of the binary ops: one pass over input and target per
// direction. The work is cut into fixed chunks (so the reduction order, and
// the result, does not depend on the thread count) run by at::parallel_for.
// Each chunk is staged into float (double for fp64) buffers, then processed by
// loops the compiler vectorises: the float ones are compiled for AVX-512, AVX2
// and the baseline and picked at load time (target_clones), with the
// vectorisable exp/log of vector_math.h. Chunk partials are combined in a
// fixed order in double. With check_target, the forward passes also scan each
// staged target chunk for values outside [0, 1] (target_check_cpu.h). With an
// ignore_index the loops are instantiated apart (kIgnored): elements whose target
// equals it count nowhere and get gradient 0; without it, the loops are unchanged.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../layout.h"
#include "../loss_math.h"
#include "convert.h"
#include "recycled_output.h"
#include "scaled_coefficients.h"
#include "target_check_cpu.h"
#include "vector_math.h"

namespace fusedloss {
namespace {

using at::Tensor;

constexpr int64_t kChunk = 4096;        // elements per partial sum and per staging buffer
constexpr int kLanes = 16;              // independent accumulators: vector lanes, no reassociation needed
constexpr int64_t kChunksPerTask = 16;  // parallel_for grain: threads only pay off on large inputs

using Stats = std::array<double, 5>;  // I, P, T, E, elements counted (not ignored)

// ---- the loops, written once for float (VectorMath) and double (StdMath) ----

template <typename Math, int TERMS, typename acc_t>
C10_ALWAYS_INLINE BinaryProbability<acc_t> probability(acc_t x) {
  return binary_probability<Math, input_of(TERMS)>(x);
}

template <typename Math, int TERMS, typename acc_t>
C10_ALWAYS_INLINE FocalTerms<acc_t> element_terms(acc_t x, acc_t t, const BinaryProbability<acc_t>& s, acc_t alpha,
                                                  acc_t gamma) {
  return binary_element_terms<Math, input_of(TERMS), has(TERMS, kModulated), form_of(TERMS)>(x, t, s, alpha, gamma);
}

// kIgnored: whether the element counts (its target is not ignore_index); an ignored one
// then reads as x = t = 0, so whatever its input holds (NaN, inf) reaches no sum or
// gradient, and its terms are masked. Without kIgnored, true: the loops are today's.
template <int TERMS, typename acc_t>
C10_ALWAYS_INLINE bool counted(acc_t& x, acc_t& t, acc_t ignore) {
  if constexpr (has(TERMS, kIgnored)) {
    const bool keep = !ignored_probability(t, ignore);
    x = keep ? x : acc_t(0);
    t = keep ? t : acc_t(0);
    return keep;
  } else {
    return true;
  }
}

template <typename Math, int TERMS, typename acc_t>
C10_ALWAYS_INLINE void accumulate(acc_t xv, acc_t tv, acc_t ignore, acc_t alpha, acc_t gamma, acc_t& sum_i,
                                  acc_t& sum_p, acc_t& sum_t, acc_t& sum_e, acc_t& count) {
  const bool keep = counted<TERMS>(xv, tv, ignore);
  if (has(TERMS, kIgnored)) count += keep ? acc_t(1) : acc_t(0);
  const auto s = probability<Math, TERMS>(xv);
  if (has(TERMS, kRegion)) {
    sum_i += intersection_share<has(TERMS, kMinIntersection)>(s.p, tv);  // tv = 0 where ignored (x = 0: p >= 0)
    sum_p += keep ? region_share<has(TERMS, kSquared)>(s.p) : acc_t(0);
    sum_t += region_share<has(TERMS, kSquared)>(tv);
  }
  if (has(TERMS, kElem)) {
    const acc_t loss = element_terms<Math, TERMS>(xv, tv, s, alpha, gamma).loss;
    sum_e += keep ? loss : acc_t(0);
  }
}

template <typename Math, int TERMS, typename acc_t>
C10_ALWAYS_INLINE Stats stats_loop(const acc_t* x, const acc_t* t, int64_t n, acc_t ignore, acc_t alpha, acc_t gamma) {
  // count: at most kChunk / kLanes per lane, exact in float.
  acc_t sum_i[kLanes] = {}, sum_p[kLanes] = {}, sum_t[kLanes] = {}, sum_e[kLanes] = {}, count[kLanes] = {};
  const int64_t whole = n - n % kLanes;
  for (int64_t base = 0; base < whole; base += kLanes) {
    // The lanes as vector lanes (each one's order as written): left alone, GCC vectorises the
    // outer loop for the lightest terms (probabilities, region only), a shuffle or two per value.
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) {
      accumulate<Math, TERMS>(x[base + lane], t[base + lane], ignore, alpha, gamma, sum_i[lane], sum_p[lane],
                              sum_t[lane], sum_e[lane], count[lane]);
    }
  }
  for (int64_t i = whole; i < n; ++i) {
    accumulate<Math, TERMS>(x[i], t[i], ignore, alpha, gamma, sum_i[0], sum_p[0], sum_t[0], sum_e[0], count[0]);
  }
  Stats out{};
  for (int lane = 0; lane < kLanes; ++lane) {
    out[0] += sum_i[lane];
    out[1] += sum_p[lane];
    out[2] += sum_t[lane];
    out[3] += sum_e[lane];
    out[4] += count[lane];
  }
  if (!has(TERMS, kIgnored)) out[4] = static_cast<double>(n);  // every element counts
  return out;
}

template <typename Math, int TERMS, typename acc_t>
C10_ALWAYS_INLINE void grad_loop(const acc_t* x, const acc_t* t, int64_t n, acc_t ignore, acc_t ci, acc_t cp, acc_t ce,
                                 acc_t alpha, acc_t gamma, acc_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    acc_t xv = x[i], tv = t[i];
    const bool keep = counted<TERMS>(xv, tv, ignore);
    const auto s = probability<Math, TERMS>(xv);
    acc_t g = 0;
    if (has(TERMS, kRegion)) {
      g += region_dp<has(TERMS, kSquared), has(TERMS, kMinIntersection)>(ci, cp, tv, s.p) * s.dp_dx;
    }
    if (has(TERMS, kElem)) g += ce * element_terms<Math, TERMS>(xv, tv, s, alpha, gamma).dloss;
    out[i] = keep ? g : acc_t(0);
  }
}

// upstream == nullptr: the focal loss map; else upstream * its derivative.
template <typename Math, int TERMS, typename acc_t>
C10_ALWAYS_INLINE void focal_map_loop(const acc_t* x, const acc_t* t, const acc_t* upstream, int64_t n, acc_t ignore,
                                      acc_t alpha, acc_t gamma, acc_t* out) {
  if (upstream == nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      acc_t xv = x[i], tv = t[i];
      const bool keep = counted<TERMS>(xv, tv, ignore);
      const acc_t loss = element_terms<Math, TERMS>(xv, tv, probability<Math, TERMS>(xv), alpha, gamma).loss;
      out[i] = keep ? loss : acc_t(0);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      acc_t xv = x[i], tv = t[i];
      const bool keep = counted<TERMS>(xv, tv, ignore);
      const acc_t dloss = element_terms<Math, TERMS>(xv, tv, probability<Math, TERMS>(xv), alpha, gamma).dloss;
      out[i] = keep ? upstream[i] * dloss : acc_t(0);  // a NaN upstream there too
    }
  }
}

// ---- one function per TERMS: float with one vectorised clone per instruction set,
// double with the standard functions ----

// Whether the float loops for TERMS also come with SquareMath, run for gamma = 2 (the focal
// default, passed as a constant): a focal factor that is a power (MONAI's is an exp: no pow).
template <int TERMS>
constexpr bool kSquarable = has(TERMS, kModulated) && form_of(TERMS) != kFocalMonai;

template <int TERMS>
FUSEDLOSS_CLONES Stats stats_terms(const float* x, const float* t, int64_t n, float ignore, float alpha, float gamma) {
  if constexpr (kSquarable<TERMS>) {
    if (gamma == 2.0f) return stats_loop<SquareMath, TERMS>(x, t, n, ignore, alpha, 2.0f);
  }
  return stats_loop<VectorMath, TERMS>(x, t, n, ignore, alpha, gamma);
}
template <int TERMS>
Stats stats_terms(const double* x, const double* t, int64_t n, double ignore, double alpha, double gamma) {
  return stats_loop<StdMath, TERMS>(x, t, n, ignore, alpha, gamma);
}

template <int TERMS>
FUSEDLOSS_CLONES void grad_terms(const float* x, const float* t, int64_t n, float ignore, float ci, float cp, float ce,
                                 float alpha, float gamma, float* out) {
  if constexpr (kSquarable<TERMS>) {
    if (gamma == 2.0f) return grad_loop<SquareMath, TERMS>(x, t, n, ignore, ci, cp, ce, alpha, 2.0f, out);
  }
  grad_loop<VectorMath, TERMS>(x, t, n, ignore, ci, cp, ce, alpha, gamma, out);
}
template <int TERMS>
void grad_terms(const double* x, const double* t, int64_t n, double ignore, double ci, double cp, double ce,
                double alpha, double gamma, double* out) {
  grad_loop<StdMath, TERMS>(x, t, n, ignore, ci, cp, ce, alpha, gamma, out);
}

template <int TERMS>
FUSEDLOSS_CLONES void focal_map_terms(const float* x, const float* t, const float* upstream, int64_t n, float ignore,
                                      float alpha, float gamma, float* out) {
  if constexpr (kSquarable<TERMS>) {
    if (gamma == 2.0f) return focal_map_loop<SquareMath, TERMS>(x, t, upstream, n, ignore, alpha, 2.0f, out);
  }
  focal_map_loop<VectorMath, TERMS>(x, t, upstream, n, ignore, alpha, gamma, out);
}
template <int TERMS>
void focal_map_terms(const double* x, const double* t, const double* upstream, int64_t n, double ignore, double alpha,
                     double gamma, double* out) {
  focal_map_loop<StdMath, TERMS>(x, t, upstream, n, ignore, alpha, gamma, out);
}

// Runtime terms (terms_of, | kIgnored) to the function instantiated for them; `ignore`:
// ignore_index in acc_t (read with kIgnored only).
template <typename acc_t>
Stats stats_chunk(const acc_t* x, const acc_t* t, int64_t n, acc_t ignore, acc_t alpha, acc_t gamma, int terms) {
  return with_terms(terms, [&](auto tag) { return stats_terms<decltype(tag)::value>(x, t, n, ignore, alpha, gamma); });
}

template <typename acc_t>
void grad_chunk(const acc_t* x, const acc_t* t, int64_t n, acc_t ignore, acc_t ci, acc_t cp, acc_t ce, acc_t alpha,
                acc_t gamma, int terms, acc_t* out) {
  with_terms(terms,
             [&](auto tag) { grad_terms<decltype(tag)::value>(x, t, n, ignore, ci, cp, ce, alpha, gamma, out); });
}

// The element term alone: input mode x modulated x ignored.
template <typename acc_t>
void focal_map_chunk(const acc_t* x, const acc_t* t, const acc_t* upstream, int64_t n, acc_t ignore, acc_t alpha,
                     acc_t gamma, int terms, acc_t* out) {
  if (form_of(terms) != kFocalLin) {  // logits, modulated (terms_of): a loop per form x ignored
    auto run_form = [&](auto form_tag) {
      constexpr int kBase = kElem | kModulated | (decltype(form_tag)::value << kFocalFormShift);
      if (has(terms, kIgnored)) {
        focal_map_terms<kBase | kIgnored>(x, t, upstream, n, ignore, alpha, gamma, out);
      } else {
        focal_map_terms<kBase>(x, t, upstream, n, ignore, alpha, gamma, out);
      }
    };
    if (form_of(terms) == kFocalSmp) {
      run_form(std::integral_constant<int, kFocalSmp>{});
    } else {
      run_form(std::integral_constant<int, kFocalMonai>{});
    }
    return;
  }
  with_binary_input(input_of(terms), [&](auto input_tag) {
    constexpr int kInput = decltype(input_tag)::value << kInputShift;
    auto run = [&](auto ignored_tag) {
      constexpr int kBase = kInput | kElem | decltype(ignored_tag)::value;
      if (has(terms, kModulated)) {
        focal_map_terms<kBase | kModulated>(x, t, upstream, n, ignore, alpha, gamma, out);
      } else {
        focal_map_terms<kBase>(x, t, upstream, n, ignore, alpha, gamma, out);
      }
    };
    if (has(terms, kIgnored)) {
      run(std::integral_constant<int, kIgnored>{});
    } else {
      run(std::integral_constant<int, 0>{});
    }
  });
}

// ignore_index as the loops take it: in acc_t, and a kIgnored bit for their terms.
template <typename acc_t>
acc_t ignore_value(const std::optional<int64_t>& ignore_index) {
  return ignore_index.has_value() ? static_cast<acc_t>(*ignore_index) : acc_t(0);
}
inline int ignored_bit(const std::optional<int64_t>& ignore_index) { return ignore_index.has_value() ? kIgnored : 0; }

// ---- staging: any input and target dtype into acc_t buffers, and back ----

// A chunk's elements as acc_t: the source itself when it already is, else a converted copy.
template <typename acc_t>
struct Staged {
  alignas(64) acc_t values[kChunk];

  template <typename T>
  const acc_t* load(const T* source, int64_t n) {
    if constexpr (std::is_same_v<T, acc_t>) {
      return source;
    } else {
      convert(source, values, n);
      return values;
    }
  }

  // Where results for `destination` go: itself when it is acc_t, else this buffer (see store).
  template <typename T>
  acc_t* output(T* destination) {
    if constexpr (std::is_same_v<T, acc_t>) {
      return destination;
    } else {
      return values;
    }
  }

  template <typename T>
  void store(T* destination, int64_t n) const {
    if constexpr (!std::is_same_v<T, acc_t>) {
      convert(values, destination, n);
    }
  }
};

// Runs fn(row, chunk, start, n) for every chunk, in parallel.
template <typename Fn>
void for_each_chunk(const GroupLayout& layout, int64_t chunks_per_row, Fn&& fn) {
  at::parallel_for(0, layout.rows * chunks_per_row, kChunksPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t row = job / chunks_per_row, chunk = job % chunks_per_row;
      const int64_t n = std::min(kChunk, layout.row_len - chunk * kChunk);
      fn(row, chunk, row * layout.row_len + chunk * kChunk, n);
    }
  });
}

// ---- the ops ----

constexpr int kSums = 5;  // per group: I, P, T, E, elements counted

// Per-group sums [I, P, T, E, count] (groups x 5, in double), each group's chunk partials
// combined in a fixed order. lp: LossParams::per_element.
std::vector<double> group_sums(const Tensor& input_, const Tensor& target_, bool per_sample, bool per_channel,
                               const LossParams& lp, const std::optional<int64_t>& ignore_index, bool check_target) {
  const BinaryOperands operands = binary_operands(input_, target_, per_sample, per_channel);
  const Tensor &input = operands.input, &target = operands.target;
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const int64_t chunks_per_row = (layout.row_len + kChunk - 1) / kChunk;
  const int64_t members = layout.rows / layout.num_groups;
  std::vector<Stats> partials(layout.rows * chunks_per_row);
  dispatch_binary_data(input, target, "binary_stats_cpu", [&](const auto* x, const auto* t) {
    using input_t = pointee_t<decltype(x)>;
    using target_t = pointee_t<decltype(t)>;
    using acc_t = at::opmath_type<input_t>;
    const acc_t ignore = ignore_value<acc_t>(ignore_index);
    const int terms = terms_of(lp) | ignored_bit(ignore_index);
    // Chunks in memory order (row-major); a bool target cannot leave [0, 1].
    FirstBadTargets<acc_t> bad(check_target && !std::is_same_v<target_t, bool>, layout.rows * chunks_per_row);
    for_each_chunk(layout, chunks_per_row, [&](int64_t row, int64_t chunk, int64_t start, int64_t n) {
      Staged<acc_t> xs, ts;
      const int64_t group = row % layout.num_groups, member = row / layout.num_groups;
      const acc_t* tv = ts.load(t + start, n);
      partials[(group * members + member) * chunks_per_row + chunk] =
          stats_chunk(xs.load(x + start, n), tv, n, ignore, static_cast<acc_t>(lp.focal_alpha),
                      static_cast<acc_t>(lp.focal_gamma), terms);
      if (bad.checking()) bad.record(row * chunks_per_row + chunk, tv, first_bad_target(tv, n, ignore_index));
    });
    check_probabilities(bad);
  });
  const int64_t parts_per_group = members * chunks_per_row;
  std::vector<double> sums(layout.num_groups * kSums, 0.0);
  for (int64_t g = 0; g < layout.num_groups; ++g) {
    for (int64_t q = 0; q < parts_per_group; ++q) {
      for (int k = 0; k < kSums; ++k) sums[kSums * g + k] += partials[g * parts_per_group + q][k];
    }
  }
  return sums;
}

// The formula from per-group sums (groups x 5), in double.
std::tuple<Tensor, Tensor> finalize(const double* sums, int64_t num_groups, const std::optional<Tensor>& weight,
                                    int64_t num_channels, const LossParams& lp, Reduction reduction,
                                    c10::IntArrayRef loss_shape, const at::TensorOptions& options) {
  Tensor loss = at::empty(reduction == Reduction::None ? loss_shape : c10::IntArrayRef{}, options);
  Tensor coef = at::empty({num_groups, 3}, options);
  Tensor weight_d;
  if (weight.has_value()) weight_d = weight->to(at::kDouble).contiguous();
  double total = 0, out_scale = 1;
  AT_DISPATCH_FLOATING_TYPES(options.dtype().toScalarType(), "binary_finalize_cpu", [&] {
    scalar_t* loss_out = loss.mutable_data_ptr<scalar_t>();
    scalar_t* coef_out = coef.mutable_data_ptr<scalar_t>();
    for (int64_t g = 0; g < num_groups; ++g) {
      const double* s = sums + kSums * g;
      const LossScales<double> scales = binary_scales<double>(num_groups, s[4], lp, reduction);
      out_scale = scales.out_scale;  // the same for every group
      const double group_weight = weight_d.defined() ? weight_d.const_data_ptr<double>()[g % num_channels] : 1.0;
      const auto result =
          finalize_group<double>(s[0], s[1], s[2], s[3], group_weight, scales.out_scale, scales.elem_scale, lp);
      if (reduction == Reduction::None) loss_out[g] = static_cast<scalar_t>(result.loss);
      total += result.loss;
      coef_out[3 * g + 0] = static_cast<scalar_t>(result.coef_i);
      coef_out[3 * g + 1] = static_cast<scalar_t>(result.coef_p);
      coef_out[3 * g + 2] = static_cast<scalar_t>(result.coef_e);
    }
    if (reduction != Reduction::None) loss_out[0] = static_cast<scalar_t>(total * out_scale);
  });
  return {loss, coef};
}

// label_smoothing and weighted_mean are multiclass options: taken (the loss ops take the
// whole LossSpec) and ignored.
std::tuple<Tensor, Tensor> binary_loss_cpu(const Tensor& input, const Tensor& target,
                                           const std::optional<Tensor>& weight, bool per_sample, bool per_channel,
                                           bool region, double tv_alpha, double tv_beta, double smooth_nr,
                                           double smooth_dr, double region_gamma, double region_weight, bool log_loss,
                                           bool squared_pred, bool min_intersection, bool elem, double focal_alpha,
                                           double focal_gamma, int64_t focal_form, double elem_weight, bool elem_mean,
                                           double /*label_smoothing*/, bool /*weighted_mean*/, bool from_logits,
                                           bool clamped_log, std::optional<int64_t> ignore_index,
                                           c10::string_view reduction, bool check_target) {
  const LossParams lp = LossParams::from_op(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma,
                                            region_weight, log_loss, squared_pred, min_intersection, elem, focal_alpha,
                                            focal_gamma, focal_form, elem_weight, elem_mean, from_logits, clamped_log);
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const std::vector<double> sums = group_sums(input, target, per_sample, per_channel, lp, ignore_index, check_target);
  return finalize(sums.data(), layout.num_groups, weight, layout.num_channels, lp, parse_reduction(reduction),
                  layout.shape, accumulation_options(input));
}

// The two halves on their own, for statistics summed across processes (ops/synced.py).
Tensor binary_stats_cpu(const Tensor& input, const Tensor& target, bool per_sample, bool per_channel, bool region,
                        bool squared_pred, bool min_intersection, bool elem, double focal_alpha, double focal_gamma,
                        int64_t focal_form, bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index,
                        bool check_target) {
  const std::vector<double> sums =
      group_sums(input, target, per_sample, per_channel,
                 LossParams::per_element(region, squared_pred, min_intersection, elem, focal_alpha, focal_gamma,
                                         from_logits, clamped_log, focal_form),
                 ignore_index, check_target);
  const int64_t groups = static_cast<int64_t>(sums.size() / kSums);
  return at::from_blob(const_cast<double*>(sums.data()), {groups, kSums}, at::TensorOptions().dtype(at::kDouble))
      .to(accumulation_options(input), /*non_blocking=*/false, /*copy=*/true);  // own the memory
}

std::tuple<Tensor, Tensor> binary_finalize_cpu(const Tensor& sums, const std::optional<Tensor>& weight,
                                               int64_t num_channels, bool region, double tv_alpha, double tv_beta,
                                               double smooth_nr, double smooth_dr, double region_gamma,
                                               double region_weight, bool log_loss, bool elem, double elem_weight,
                                               bool elem_mean, c10::string_view reduction,
                                               c10::IntArrayRef loss_shape) {
  TORCH_CHECK(sums.dim() == 2 && sums.size(1) == kSums, "fusedloss: sums must be (groups, 5), got ", sums.sizes());
  const Tensor sums_d = sums.to(at::kDouble).contiguous();
  const LossParams lp = LossParams::for_finalize(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma,
                                                 region_weight, log_loss, elem, elem_weight, elem_mean);
  return finalize(sums_d.const_data_ptr<double>(), sums.size(0), weight, num_channels, lp, parse_reduction(reduction),
                  loss_shape, sums.options());
}

Tensor binary_loss_backward_cpu(const Tensor& grad_loss, const Tensor& input_, const Tensor& target_,
                                const Tensor& coef, bool per_sample, bool per_channel, bool region, bool squared_pred,
                                bool min_intersection, bool elem, double focal_alpha, double focal_gamma,
                                int64_t focal_form, bool from_logits, bool clamped_log,
                                std::optional<int64_t> ignore_index) {
  const LossParams lp = LossParams::per_element(region, squared_pred, min_intersection, elem, focal_alpha, focal_gamma,
                                                from_logits, clamped_log, focal_form);
  const BinaryOperands operands = binary_operands(input_, target_, per_sample, per_channel);
  const Tensor &input = operands.input, &target = operands.target;
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const int64_t chunks_per_row = (layout.row_len + kChunk - 1) / kChunk;
  Tensor grad = recycled_output(input, operands.format);
  const std::vector<double> scaled = scaled_coefficients(coef, grad_loss);
  const double* c = scaled.data();

  dispatch_binary_data(input, target, "binary_loss_backward_cpu", [&](const auto* x, const auto* t) {
    using input_t = pointee_t<decltype(x)>;
    using acc_t = at::opmath_type<input_t>;
    const acc_t ignore = ignore_value<acc_t>(ignore_index);
    const int terms = terms_of(lp) | ignored_bit(ignore_index);
    input_t* out = grad.mutable_data_ptr<input_t>();
    for_each_chunk(layout, chunks_per_row, [&](int64_t row, int64_t, int64_t start, int64_t n) {
      Staged<acc_t> xs, ts, gs;
      const double* gc = c + 3 * (row % layout.num_groups);
      grad_chunk(xs.load(x + start, n), ts.load(t + start, n), n, ignore, static_cast<acc_t>(gc[0]),
                 static_cast<acc_t>(gc[1]), static_cast<acc_t>(gc[2]), static_cast<acc_t>(lp.focal_alpha),
                 static_cast<acc_t>(lp.focal_gamma), terms, gs.output(out + start));
      gs.store(out + start, n);
    });
  });
  return grad;
}

// The per-element focal loss (reduction='none'), and its backward (which does not
// check the target: its forward did).
Tensor focal_map_cpu(const Tensor* grad_map_, const Tensor& input_, const Tensor& target_, const LossParams& lp,
                     const std::optional<int64_t>& ignore_index, bool check_target) {
  const BinaryOperands operands = binary_operands(input_, target_, false, false);
  const Tensor &input = operands.input, &target = operands.target;
  Tensor out = recycled_output(input, operands.format);
  // The upstream map is read in the input's memory order.
  Tensor grad_map;
  if (grad_map_ != nullptr) {
    const bool as_is = grad_map_->strides() == out.strides() && grad_map_->scalar_type() == out.scalar_type();
    grad_map = as_is ? *grad_map_ : at::empty_like(out).copy_(*grad_map_);
  }
  const GroupLayout layout = group_layout({input.numel()}, false, false);
  const int64_t chunks = (layout.row_len + kChunk - 1) / kChunk;
  dispatch_binary_data(input, target, "binary_focal_map_cpu", [&](const auto* x, const auto* t) {
    using input_t = pointee_t<decltype(x)>;
    using target_t = pointee_t<decltype(t)>;
    using acc_t = at::opmath_type<input_t>;
    const acc_t ignore = ignore_value<acc_t>(ignore_index);
    const int terms = terms_of(lp) | ignored_bit(ignore_index);
    const input_t* upstream = grad_map.defined() ? grad_map.const_data_ptr<input_t>() : nullptr;
    input_t* o = out.mutable_data_ptr<input_t>();
    FirstBadTargets<acc_t> bad(check_target && !std::is_same_v<target_t, bool>, chunks);
    for_each_chunk(layout, chunks, [&](int64_t, int64_t chunk, int64_t start, int64_t n) {
      Staged<acc_t> xs, ts, us, results;
      const acc_t* tv = ts.load(t + start, n);
      focal_map_chunk(xs.load(x + start, n), tv, upstream != nullptr ? us.load(upstream + start, n) : nullptr, n,
                      ignore, static_cast<acc_t>(lp.focal_alpha), static_cast<acc_t>(lp.focal_gamma), terms,
                      results.output(o + start));
      results.store(o + start, n);
      if (bad.checking()) bad.record(chunk, tv, first_bad_target(tv, n, ignore_index));
    });
    check_probabilities(bad);
  });
  return out;
}

Tensor binary_focal_map_cpu(const Tensor& input, const Tensor& target, double alpha, double gamma, int64_t focal_form,
                            bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index,
                            bool check_target) {
  return focal_map_cpu(nullptr, input, target,
                       LossParams::focal_map(alpha, gamma, from_logits, clamped_log, focal_form), ignore_index,
                       check_target);
}

Tensor binary_focal_map_backward_cpu(const Tensor& grad_map, const Tensor& input, const Tensor& target, double alpha,
                                     double gamma, int64_t focal_form, bool from_logits, bool clamped_log,
                                     std::optional<int64_t> ignore_index) {
  return focal_map_cpu(&grad_map, input, target,
                       LossParams::focal_map(alpha, gamma, from_logits, clamped_log, focal_form), ignore_index, false);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CPU, m) {
  m.impl("binary_loss", &binary_loss_cpu);
  m.impl("binary_loss_backward", &binary_loss_backward_cpu);
  m.impl("binary_focal_map", &binary_focal_map_cpu);
  m.impl("binary_focal_map_backward", &binary_focal_map_backward_cpu);
  m.impl("binary_stats", &binary_stats_cpu);
  m.impl("binary_finalize", &binary_finalize_cpu);
}

}  // namespace fusedloss
