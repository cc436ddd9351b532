// CPU kernels of the multiclass ops (softmax over the classes, or probabilities
// as they are with from_logits=False). Input (N, C, S) logits, read
// through (sample, class, pixel) strides (../layout.h: contiguous and
// channels_last in place), target (N, S) class indices. Work is cut into fixed
// chunks of kPixels pixels of one sample, so the result does not depend on the
// thread count. A chunk's logits are staged as a [C][kPixels] block in the
// accumulation type, so every class loop runs over contiguous pixels whatever
// the layout; the chunk's probabilities live in a second such block: no one-hot
// target and no full softmax tensor exist. The float loops are compiled for
// AVX-512, AVX2 and the baseline and picked at load time (target_clones), with
// vector_math.h's exp / log / pow; their sums use kLanes independent
// accumulators (a fixed order: no reassociation needed to vectorise). Chunk
// partials are combined in a fixed order in double. With check_target, the
// forward passes also scan each chunk's class indices (target_check_cpu.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../layout.h"
#include "../loss_math.h"
#include "convert.h"
#include "target_check_cpu.h"
#include "vector_math.h"

namespace fusedloss {
namespace {

using at::Tensor;

constexpr int64_t kPixels = 256;  // pixels per chunk
constexpr int64_t kLanes = 16;    // independent accumulators; loops run over whole multiples of it
constexpr int64_t kChunksPerTask = 8;

// The class map cut into fixed chunks of kPixels pixels of one sample, a job each.
struct ClassMapChunks : ClassMapShape {
  int64_t chunks_per_sample, jobs;
  explicit ClassMapChunks(const Tensor& input)
      : ClassMapShape(input), chunks_per_sample((spatial + kPixels - 1) / kPixels), jobs(batch * chunks_per_sample) {}
};

// One chunk's working set, allocated once per task. Pixels past the chunk's end
// (up to a multiple of kLanes) are padding: logits 0, label -1, never counted.
template <typename acc_t>
struct Chunk {
  std::vector<acc_t> x, e;  // [C][kPixels]: staged logits (later the gradient), exp(x - max)
  alignas(64) acc_t top[kPixels], total[kPixels];
  alignas(64) acc_t weight[kPixels];                 // 1 / total for counted pixels, else 0: p = e * weight
  alignas(64) acc_t loss[kPixels], factor[kPixels];  // the focal loss and its gradient factor A
  alignas(64) int32_t label[kPixels];                // -1: ignored, out of [0, C), or padding
  int64_t classes = 0, n = 0, m = 0;                 // m: n rounded up to kLanes

  explicit Chunk(int64_t classes_) : x(classes_ * kPixels), e(classes_ * kPixels), classes(classes_) {}

  // logits: class 0 of the chunk's first pixel; labels: that pixel's.
  template <typename input_t, typename target_t>
  void stage(const input_t* logits, const target_t* labels, const ClassStrides& strides, int64_t pixels,
             std::optional<int64_t> ignore_index) {
    const int64_t class_stride = strides.cls, pixel_stride = strides.pixel;
    n = pixels;
    m = (n + kLanes - 1) / kLanes * kLanes;
    const bool has_ignore = ignore_index.has_value();
    const int64_t ignore = ignore_index.value_or(0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = static_cast<int64_t>(labels[i]);
      label[i] = counted_class(y, classes, has_ignore, ignore) ? static_cast<int32_t>(y) : -1;
    }
    for (int64_t i = n; i < m; ++i) label[i] = -1;
    for (int64_t c = 0; c < classes; ++c) {
      acc_t* row = x.data() + c * kPixels;
      const input_t* source = logits + c * class_stride;
      if (pixel_stride == 1) {
        convert(source, row, n);
      } else {
        for (int64_t i = 0; i < n; ++i) row[i] = static_cast<acc_t>(source[i * pixel_stride]);
      }
      // Ignored pixels count nowhere, whatever their logits (NaN included): staged as padding.
      for (int64_t i = 0; i < n; ++i) row[i] = label[i] >= 0 ? row[i] : acc_t(0);
      for (int64_t i = n; i < m; ++i) row[i] = acc_t(0);
    }
  }

  // The staged x (the gradient by then) back to the output, at the offsets read.
  template <typename input_t>
  void unstage(input_t* out, const ClassStrides& strides) const {
    const int64_t class_stride = strides.cls, pixel_stride = strides.pixel;
    for (int64_t c = 0; c < classes; ++c) {
      const acc_t* row = x.data() + c * kPixels;
      input_t* destination = out + c * class_stride;
      if (pixel_stride == 1) {
        convert(row, destination, n);
      } else {
        for (int64_t i = 0; i < n; ++i) destination[i * pixel_stride] = static_cast<input_t>(row[i]);
      }
    }
  }
};

// ---- the chunk math, written once for float (VectorMath) and double (StdMath) ----

// e = exp(x - max) per class, total = sum_c e, weight = 1 / total where counted.
// (Local __restrict__ pointers: the buffers never overlap, which lets the loops vectorise.)
template <typename Math, typename acc_t>
C10_ALWAYS_INLINE void softmax_block(Chunk<acc_t>& chunk) {
  const int64_t C = chunk.classes, m = chunk.m;
  acc_t* __restrict__ top = chunk.top;
  acc_t* __restrict__ total = chunk.total;
  acc_t* __restrict__ weight = chunk.weight;
  const int32_t* __restrict__ label = chunk.label;
  for (int64_t i = 0; i < m; ++i) top[i] = -std::numeric_limits<acc_t>::infinity();
  for (int64_t c = 0; c < C; ++c) {
    const acc_t* __restrict__ row = chunk.x.data() + c * kPixels;
    for (int64_t i = 0; i < m; ++i) top[i] = row[i] > top[i] ? row[i] : top[i];
  }
  for (int64_t i = 0; i < m; ++i) total[i] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const acc_t* __restrict__ row = chunk.x.data() + c * kPixels;
    acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
    for (int64_t i = 0; i < m; ++i) {
      e[i] = Math::exp(row[i] - top[i]);
      total[i] += e[i];
    }
  }
  for (int64_t i = 0; i < m; ++i) weight[i] = label[i] >= 0 ? acc_t(1) / total[i] : acc_t(0);
}

// Probability inputs as they are: e = x (0 where not counted: staged so), weight = 1
// where counted, so that p = e * weight as after the softmax.
template <typename acc_t>
C10_ALWAYS_INLINE void probability_block(Chunk<acc_t>& chunk) {
  std::copy(chunk.x.begin(), chunk.x.end(), chunk.e.begin());
  for (int64_t i = 0; i < chunk.m; ++i) chunk.weight[i] = chunk.label[i] >= 0 ? acc_t(1) : acc_t(0);
}

template <typename Math, MulticlassInput INPUT, typename acc_t>
C10_ALWAYS_INLINE void probabilities_block(Chunk<acc_t>& chunk) {
  if constexpr (INPUT == kSoftmax) {
    softmax_block<Math>(chunk);
  } else {
    probability_block(chunk);
  }
}

// Per counted pixel: the focal loss and its gradient factor (0 elsewhere): softmax,
// -alpha (1 - p_y)^gamma log p_y and A (dloss/dx_c = A (p_c - [c = y])); probabilities,
// the clamped-log loss and dloss/dp_y. The target class's logit and exp are gathered
// first, so the arithmetic loop has no indirect access.
template <typename Math, MulticlassInput INPUT, typename acc_t>
C10_ALWAYS_INLINE void focal_block(Chunk<acc_t>& chunk, acc_t alpha, acc_t gamma) {
  alignas(64) acc_t x_y[kPixels], e_y[kPixels];
  for (int64_t i = 0; i < chunk.m; ++i) {
    const int64_t at = (chunk.label[i] >= 0 ? chunk.label[i] : 0) * kPixels + i;
    x_y[i] = chunk.x[at];
    e_y[i] = chunk.e[at];
  }
  const acc_t* __restrict__ top = chunk.top;
  const acc_t* __restrict__ total = chunk.total;
  const int32_t* __restrict__ label = chunk.label;
  acc_t* __restrict__ loss = chunk.loss;
  acc_t* __restrict__ factor = chunk.factor;
  for (int64_t i = 0; i < chunk.m; ++i) {
    FocalTerms<acc_t> terms;
    if constexpr (INPUT == kSoftmax) {
      const acc_t log_p_y = (x_y[i] - top[i]) - Math::log(total[i]);
      const acc_t rest = (total[i] - e_y[i]) / total[i];  // 1 - p_y without cancellation
      terms = multiclass_focal_terms<Math>(log_p_y, rest, alpha, gamma);
    } else {
      terms = multiclass_clamped_focal_terms<Math>(x_y[i], alpha, gamma);
    }
    loss[i] = label[i] >= 0 ? terms.loss : acc_t(0);
    factor[i] = label[i] >= 0 ? terms.dloss : acc_t(0);
  }
}

// The chunk's I, P, T per class (class_sums[3c..3c+2]) and [E, counted pixels].
template <typename Math, MulticlassInput INPUT, bool SQUARED, typename acc_t>
C10_ALWAYS_INLINE void stats_block(Chunk<acc_t>& chunk, bool region, bool elem, acc_t alpha, acc_t gamma,
                                   double* class_sums, double* elem_sums) {
  probabilities_block<Math, INPUT>(chunk);
  if (region) {
    for (int64_t c = 0; c < chunk.classes; ++c) {
      const acc_t* e = chunk.e.data() + c * kPixels;
      const int32_t cls = static_cast<int32_t>(c);
      acc_t sum_i[kLanes] = {}, sum_p[kLanes] = {}, sum_t[kLanes] = {};
      for (int64_t start = 0; start < chunk.m; start += kLanes) {
        for (int64_t j = 0; j < kLanes; ++j) {
          const int64_t i = start + j;
          const acc_t p = e[i] * chunk.weight[i];
          const acc_t hit = chunk.label[i] == cls ? acc_t(1) : acc_t(0);
          sum_i[j] += p * hit;
          sum_p[j] += region_share<SQUARED>(p);
          sum_t[j] += hit;  // a one-hot t: t^2 = t
        }
      }
      double total_i = 0, total_p = 0, total_t = 0;
      for (int64_t j = 0; j < kLanes; ++j) {
        total_i += sum_i[j];
        total_p += sum_p[j];
        total_t += sum_t[j];
      }
      class_sums[3 * c] = total_i;
      class_sums[3 * c + 1] = total_p;
      class_sums[3 * c + 2] = total_t;
    }
  }
  double total_e = 0, counted = 0;
  if (elem) {
    focal_block<Math, INPUT>(chunk, alpha, gamma);
    acc_t sum_e[kLanes] = {}, count[kLanes] = {};
    for (int64_t start = 0; start < chunk.m; start += kLanes) {
      for (int64_t j = 0; j < kLanes; ++j) {
        sum_e[j] += chunk.loss[start + j];
        count[j] += chunk.label[start + j] >= 0 ? acc_t(1) : acc_t(0);
      }
    }
    for (int64_t j = 0; j < kLanes; ++j) {
      total_e += sum_e[j];
      counted += count[j];
    }
  }
  elem_sums[0] = total_e;
  elem_sums[1] = counted;
}

// The gradient into chunk.x, g_c = region_dp (ci[c] [c = y] + cp[c] dP/dp_c) the region
// term's dL/dp_c, F the focal factor times elem_scale (the element term), or times
// upstream[i] for the focal map (upstream non-null):
//   softmax:       dL/dx_c = p_c (g_c - sum_k p_k g_k) + F (p_c - [c = y]);
//   probabilities: dL/dx_c = g_c + F [c = y] on counted pixels, 0 elsewhere.
template <typename Math, MulticlassInput INPUT, bool SQUARED, typename acc_t>
C10_ALWAYS_INLINE void backward_block(Chunk<acc_t>& chunk, const acc_t* ci, const acc_t* cp, bool elem, acc_t alpha,
                                      acc_t gamma, acc_t elem_scale, const acc_t* upstream) {
  probabilities_block<Math, INPUT>(chunk);
  if (elem) {
    focal_block<Math, INPUT>(chunk, alpha, gamma);
    for (int64_t i = 0; i < chunk.m; ++i) chunk.factor[i] *= upstream != nullptr ? upstream[i] : elem_scale;
  } else {
    for (int64_t i = 0; i < chunk.m; ++i) chunk.factor[i] = 0;  // so the gradient loop needs no branch
  }
  const acc_t* __restrict__ weight = chunk.weight;
  const acc_t* __restrict__ factor = chunk.factor;
  const int32_t* __restrict__ label = chunk.label;
  if constexpr (INPUT == kClassProbabilities) {
    for (int64_t c = 0; c < chunk.classes; ++c) {
      const acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
      acc_t* __restrict__ grad = chunk.x.data() + c * kPixels;
      const int32_t cls = static_cast<int32_t>(c);
      const acc_t coef_i = ci != nullptr ? ci[c] : acc_t(0), coef_p = ci != nullptr ? cp[c] : acc_t(0);
      for (int64_t i = 0; i < chunk.m; ++i) {
        const bool hit = label[i] == cls;
        const acc_t g = region_dp_one_hot<SQUARED>(coef_i, coef_p, hit, e[i]);
        grad[i] = label[i] >= 0 ? g + (hit ? factor[i] : acc_t(0)) : acc_t(0);
      }
    }
    return;
  }
  alignas(64) acc_t dot[kPixels];  // sum_k p_k g_k
  for (int64_t i = 0; i < chunk.m; ++i) dot[i] = 0;
  if (ci != nullptr) {
    for (int64_t c = 0; c < chunk.classes; ++c) {
      const acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
      const int32_t cls = static_cast<int32_t>(c);
      const acc_t g_hit = ci[c] + cp[c], g_miss = cp[c];
      for (int64_t i = 0; i < chunk.m; ++i) {
        const acc_t p = e[i] * weight[i];
        if constexpr (SQUARED) {
          dot[i] += p * region_dp_one_hot<true>(ci[c], cp[c], label[i] == cls, p);
        } else {
          dot[i] += p * (label[i] == cls ? g_hit : g_miss);
        }
      }
    }
  }
  for (int64_t c = 0; c < chunk.classes; ++c) {
    const acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
    acc_t* __restrict__ grad = chunk.x.data() + c * kPixels;
    const int32_t cls = static_cast<int32_t>(c);
    const acc_t coef_i = ci != nullptr ? ci[c] : acc_t(0), coef_p = ci != nullptr ? cp[c] : acc_t(0);
    const acc_t g_hit = coef_i + coef_p, g_miss = coef_p;
    for (int64_t i = 0; i < chunk.m; ++i) {
      const acc_t p = e[i] * weight[i];
      const bool hit = label[i] == cls;
      const acc_t g = SQUARED ? region_dp_one_hot<true>(coef_i, coef_p, hit, p) : (hit ? g_hit : g_miss);
      grad[i] = p * (g - dot[i]) + factor[i] * (p - (hit ? acc_t(1) : acc_t(0)));
    }
  }
}

// Entry points per variant (input mode, squared_pred) and accumulation type: float
// through target_clones (one set per variant), double as is.
template <MulticlassInput INPUT, bool SQUARED>
FUSEDLOSS_CLONES void stats_chunk(Chunk<float>& chunk, bool region, bool elem, float alpha, float gamma,
                                  double* class_sums, double* elem_sums) {
  stats_block<VectorMath, INPUT, SQUARED>(chunk, region, elem, alpha, gamma, class_sums, elem_sums);
}
template <MulticlassInput INPUT, bool SQUARED>
void stats_chunk(Chunk<double>& chunk, bool region, bool elem, double alpha, double gamma, double* class_sums,
                 double* elem_sums) {
  stats_block<StdMath, INPUT, SQUARED>(chunk, region, elem, alpha, gamma, class_sums, elem_sums);
}

template <MulticlassInput INPUT, bool SQUARED>
FUSEDLOSS_CLONES void backward_chunk(Chunk<float>& chunk, const float* ci, const float* cp, bool elem, float alpha,
                                     float gamma, float elem_scale, const float* upstream) {
  backward_block<VectorMath, INPUT, SQUARED>(chunk, ci, cp, elem, alpha, gamma, elem_scale, upstream);
}
template <MulticlassInput INPUT, bool SQUARED>
void backward_chunk(Chunk<double>& chunk, const double* ci, const double* cp, bool elem, double alpha, double gamma,
                    double elem_scale, const double* upstream) {
  backward_block<StdMath, INPUT, SQUARED>(chunk, ci, cp, elem, alpha, gamma, elem_scale, upstream);
}

template <MulticlassInput INPUT>
FUSEDLOSS_CLONES void focal_map_chunk(Chunk<float>& chunk, float alpha, float gamma) {
  probabilities_block<VectorMath, INPUT>(chunk);
  focal_block<VectorMath, INPUT>(chunk, alpha, gamma);
}
template <MulticlassInput INPUT>
void focal_map_chunk(Chunk<double>& chunk, double alpha, double gamma) {
  probabilities_block<StdMath, INPUT>(chunk);
  focal_block<StdMath, INPUT>(chunk, alpha, gamma);
}

// Runtime input mode and squared_pred to the variant instantiated for them:
// fn(std::integral_constant<MulticlassInput, INPUT>, std::bool_constant<SQUARED>).
template <typename Fn>
void with_variant(MulticlassInput input, bool squared, Fn&& fn) {
  with_multiclass_input(
      input, [&](auto input_tag) { squared ? fn(input_tag, std::true_type{}) : fn(input_tag, std::false_type{}); });
}

// check_target: the first class index outside [0, C) that is not ignore_index, or -1;
// per instruction set (the baseline has no 64-bit integer compare to vectorise with).
// Narrower maps compare in int32 (C fits: labels are staged as int32), not widened to int64.
#define FUSEDLOSS_FIRST_BAD_CLASS(T, I)                                                                              \
  FUSEDLOSS_CLONES int64_t first_bad_class(const T* labels, int64_t n, I classes, bool has_ignore, I ignore_index) { \
    return first_bad(labels, n, [=](T y) { return bad_class<I>(y, classes, has_ignore, ignore_index); });            \
  }
FUSEDLOSS_FIRST_BAD_CLASS(uint8_t, int32_t)
FUSEDLOSS_FIRST_BAD_CLASS(int16_t, int32_t)
FUSEDLOSS_FIRST_BAD_CLASS(int32_t, int32_t)
FUSEDLOSS_FIRST_BAD_CLASS(int64_t, int64_t)
#undef FUSEDLOSS_FIRST_BAD_CLASS

// Records the chunk's first bad class index, if any.
template <typename target_t>
void scan_classes(FirstBadTargets<int64_t>& bad, int64_t job, const target_t* labels, int64_t n, int64_t classes,
                  std::optional<int64_t> ignore_index) {
  using index_t = std::conditional_t<sizeof(target_t) < sizeof(int64_t), int32_t, int64_t>;
  // An ignore_index that index_t cannot hold equals no label.
  const bool has_ignore = ignore_index.has_value() && *ignore_index >= std::numeric_limits<index_t>::min() &&
                          *ignore_index <= std::numeric_limits<index_t>::max();
  bad.record(job, labels,
             first_bad_class(labels, n, static_cast<index_t>(classes), has_ignore,
                             has_ignore ? static_cast<index_t>(*ignore_index) : index_t(0)));
}

// Runs fn(chunk buffers, sample, chunk index in the sample, first_pixel, pixels) for
// every chunk, in parallel; each task allocates its buffers once.
template <typename acc_t, typename Fn>
void for_each_chunk(const ClassMapChunks& shape, Fn&& fn) {
  at::parallel_for(0, shape.jobs, kChunksPerTask, [&](int64_t begin, int64_t end) {
    Chunk<acc_t> buffers(shape.classes);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t sample = job / shape.chunks_per_sample, index = job % shape.chunks_per_sample;
      const int64_t first = index * kPixels;
      fn(buffers, sample, index, first, std::min(kPixels, shape.spatial - first));
    }
  });
}

// Per-group class sums (groups x [I, P, T], groups = C, or N*C with per_sample)
// and the element term's [E, valid pixels], each combined in a fixed order, in double.
struct MulticlassSums {
  std::vector<double> classes;
  double elem_sum = 0, valid_pixels = 0;
};

// lp: LossParams::per_element.
MulticlassSums multiclass_group_sums(const Tensor& input_, const Tensor& target_, bool per_sample, const LossParams& lp,
                                     std::optional<int64_t> ignore_index, bool check_target) {
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor &input = operands.input, &target = operands.target;
  const ClassMapChunks shape(input);
  const int64_t C = shape.classes, jobs = shape.jobs;
  // Per job: C x (I, P, T), then (E, valid pixels).
  std::vector<double> class_partials(lp.region ? jobs * C * 3 : 0), elem_partials(jobs * 2);
  const MulticlassInput mode = multiclass_input(lp);

  dispatch_multiclass_data(input, target, "multiclass_stats_cpu", [&](const auto* x, const auto* y) {
    using input_t = pointee_t<decltype(x)>;
    using target_t = pointee_t<decltype(y)>;
    using acc_t = at::opmath_type<input_t>;
    FirstBadTargets<int64_t> bad(check_target, jobs);  // jobs in memory order of the (contiguous) target
    for_each_chunk<acc_t>(shape, [&](Chunk<acc_t>& chunk, int64_t sample, int64_t index, int64_t first, int64_t n) {
      const target_t* labels = y + sample * shape.spatial + first;
      chunk.stage(x + operands.strides.at(sample, first), labels, operands.strides, n, ignore_index);
      const int64_t job = sample * shape.chunks_per_sample + index;
      with_variant(mode, lp.region && lp.squared_pred, [&](auto input_tag, auto squared_tag) {
        stats_chunk<decltype(input_tag)::value, decltype(squared_tag)::value>(
            chunk, lp.region, lp.elem, static_cast<acc_t>(lp.focal_alpha), static_cast<acc_t>(lp.focal_gamma),
            lp.region ? class_partials.data() + job * C * 3 : nullptr, elem_partials.data() + job * 2);
      });
      if (bad.checking()) scan_classes(bad, job, labels, n, C, ignore_index);
    });
    check_classes(bad, C, ignore_index);
  });

  MulticlassSums sums;
  const int64_t groups = per_sample ? shape.batch * C : C;
  const int64_t parts_per_group = per_sample ? shape.chunks_per_sample : jobs;
  sums.classes.assign(groups * 3, 0.0);
  if (lp.region) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c = g % C, first_job = per_sample ? (g / C) * shape.chunks_per_sample : 0;
      for (int64_t q = 0; q < parts_per_group; ++q) {
        for (int k = 0; k < 3; ++k) sums.classes[3 * g + k] += class_partials[((first_job + q) * C + c) * 3 + k];
      }
    }
  }
  for (int64_t job = 0; job < jobs; ++job) {
    sums.elem_sum += elem_partials[job * 2];
    sums.valid_pixels += elem_partials[job * 2 + 1];
  }
  return sums;
}

// The formula from the sums, in double (the rules: loss_math.h's multiclass_*).
std::tuple<Tensor, Tensor> finalize(const double* class_sums, int64_t groups, double elem_sum, double valid_pixels,
                                    const std::optional<Tensor>& weight, const MulticlassRules& rules,
                                    const LossParams& lp, Reduction reduction, c10::IntArrayRef loss_shape,
                                    const at::TensorOptions& options) {
  int64_t counted = 0;
  for (int64_t g = 0; g < groups; ++g) counted += rules.counts(g, class_sums[3 * g + 2]) ? 1 : 0;
  const LossScales<double> scales = multiclass_scales<double>(double(counted), valid_pixels, lp, reduction);
  Tensor weight_d;
  if (weight.has_value()) weight_d = weight->to(at::kDouble).contiguous();
  Tensor loss = at::empty(reduction == Reduction::None ? loss_shape : c10::IntArrayRef{}, options);
  Tensor coef = at::empty({groups, 3}, options);
  AT_DISPATCH_FLOATING_TYPES(options.dtype().toScalarType(), "multiclass_finalize_cpu", [&] {
    scalar_t* loss_out = loss.mutable_data_ptr<scalar_t>();
    scalar_t* coef_out = coef.mutable_data_ptr<scalar_t>();
    double total = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const double group_weight = weight_d.defined() ? weight_d.const_data_ptr<double>()[g % rules.classes] : 1.0;
      const GroupResult<double> r = multiclass_group(class_sums + 3 * g, g, group_weight, scales, rules, lp);
      if (reduction == Reduction::None) loss_out[g] = static_cast<scalar_t>(r.loss);
      total += r.loss;
      coef_out[3 * g + 0] = static_cast<scalar_t>(r.coef_i);
      coef_out[3 * g + 1] = static_cast<scalar_t>(r.coef_p);
      coef_out[3 * g + 2] = static_cast<scalar_t>(r.coef_e);
    }
    if (reduction != Reduction::None) loss_out[0] = static_cast<scalar_t>(multiclass_total(total, elem_sum, scales));
  });
  return {loss, coef};
}

std::vector<int64_t> loss_shape_of(const Tensor& input, bool per_sample) {
  if (per_sample) return {input.size(0), input.size(1)};
  return {input.size(1)};
}

std::tuple<Tensor, Tensor> multiclass_loss_cpu(const Tensor& input, const Tensor& target,
                                               const std::optional<Tensor>& weight, bool per_sample, bool region,
                                               double tv_alpha, double tv_beta, double smooth_nr, double smooth_dr,
                                               double region_gamma, double region_weight, bool log_loss,
                                               bool squared_pred, bool elem, double focal_alpha, double focal_gamma,
                                               double elem_weight, bool elem_mean, bool from_logits, bool clamped_log,
                                               std::optional<int64_t> ignore_index, bool include_background,
                                               bool exclude_empty, c10::string_view reduction, bool check_target) {
  const LossParams lp = LossParams::from_op(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma,
                                            region_weight, log_loss, squared_pred, elem, focal_alpha, focal_gamma,
                                            elem_weight, elem_mean, from_logits, clamped_log);
  const MulticlassSums sums = multiclass_group_sums(input, target, per_sample, lp, ignore_index, check_target);
  return finalize(sums.classes.data(), static_cast<int64_t>(sums.classes.size() / 3), sums.elem_sum, sums.valid_pixels,
                  weight, MulticlassRules{input.size(1), include_background, exclude_empty}, lp,
                  parse_reduction(reduction), loss_shape_of(input, per_sample), accumulation_options(input));
}

// The two halves on their own, for statistics summed across processes (ops/synced.py).
std::tuple<Tensor, Tensor> multiclass_stats_cpu(const Tensor& input, const Tensor& target, bool per_sample, bool region,
                                                bool squared_pred, bool elem, double focal_alpha, double focal_gamma,
                                                bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index,
                                                bool check_target) {
  MulticlassSums sums = multiclass_group_sums(
      input, target, per_sample,
      LossParams::per_element(region, squared_pred, elem, focal_alpha, focal_gamma, from_logits, clamped_log),
      ignore_index, check_target);
  const at::TensorOptions options = accumulation_options(input);
  const int64_t groups = static_cast<int64_t>(sums.classes.size() / 3);
  Tensor class_sums = at::from_blob(sums.classes.data(), {groups, 3}, at::TensorOptions().dtype(at::kDouble))
                          .to(options, /*non_blocking=*/false, /*copy=*/true);
  double elem_values[2] = {sums.elem_sum, sums.valid_pixels};
  Tensor elem_sums = at::from_blob(elem_values, {2}, at::TensorOptions().dtype(at::kDouble))
                         .to(options, /*non_blocking=*/false, /*copy=*/true);
  return {class_sums, elem_sums};
}

std::tuple<Tensor, Tensor> multiclass_finalize_cpu(const Tensor& class_sums, const Tensor& elem_sums,
                                                   const std::optional<Tensor>& weight, int64_t num_classes,
                                                   bool per_sample, bool region, double tv_alpha, double tv_beta,
                                                   double smooth_nr, double smooth_dr, double region_gamma,
                                                   double region_weight, bool log_loss, bool elem, double elem_weight,
                                                   bool elem_mean, bool include_background, bool exclude_empty,
                                                   c10::string_view reduction, c10::IntArrayRef loss_shape) {
  const Tensor classes_d = class_sums.to(at::kDouble).contiguous();
  const Tensor elem_d = elem_sums.to(at::kDouble).contiguous();
  const LossParams lp = LossParams::for_finalize(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma,
                                                 region_weight, log_loss, elem, elem_weight, elem_mean);
  return finalize(classes_d.const_data_ptr<double>(), class_sums.size(0), elem_d.const_data_ptr<double>()[0],
                  elem_d.const_data_ptr<double>()[1], weight,
                  MulticlassRules{num_classes, include_background, exclude_empty}, lp, parse_reduction(reduction),
                  loss_shape, class_sums.options());
}

// grad_loss per group ('none'), or a scalar; grad_map: the focal map's upstream (N, S).
template <bool MAP>
Tensor multiclass_backward_cpu(const Tensor& upstream_, const Tensor& input_, const Tensor& target_,
                               const Tensor* coef_, bool per_sample, const LossParams& lp,
                               std::optional<int64_t> ignore_index) {
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor &input = operands.input, &target = operands.target;
  const ClassMapChunks shape(input);
  const int64_t C = shape.classes;
  const MulticlassInput mode = multiclass_input(lp);
  Tensor grad = at::empty_like(input, operands.format);  // the input's strides: written at the offsets read
  const at::ScalarType acc_dtype = accumulation_type(input);
  // The focal map's upstream stays in the input's dtype (a full-size map); the per-group one is tiny.
  const Tensor upstream = upstream_.to(MAP ? input.scalar_type() : at::kDouble).contiguous();
  Tensor coef_i, coef_p;  // per group, times the upstream gradient: g_c = c_I [c = y] + c_P
  double elem_scale = 0;  // c_E: the element term scales the scalar output only
  if (!MAP) {
    const Tensor coef = coef_->to(at::kDouble).contiguous();
    const Tensor scaled = coef.mul(upstream.reshape({-1, 1}));
    coef_i = scaled.select(1, 0).to(acc_dtype).contiguous();
    coef_p = scaled.select(1, 1).to(acc_dtype).contiguous();
    elem_scale = coef.const_data_ptr<double>()[2] * upstream.const_data_ptr<double>()[0];  // CPU tensors: no sync
  }
  dispatch_multiclass_data(input, target, "multiclass_backward_cpu", [&](const auto* x, const auto* y) {
    using input_t = pointee_t<decltype(x)>;
    using acc_t = at::opmath_type<input_t>;
    input_t* out = grad.mutable_data_ptr<input_t>();
    const bool with_region = lp.region && !MAP;
    const input_t* up = MAP ? upstream.const_data_ptr<input_t>() : nullptr;
    for_each_chunk<acc_t>(shape, [&](Chunk<acc_t>& chunk, int64_t sample, int64_t, int64_t first, int64_t n) {
      const int64_t base = operands.strides.at(sample, first);
      chunk.stage(x + base, y + sample * shape.spatial + first, operands.strides, n, ignore_index);
      const int64_t group = per_sample ? sample * C : 0;
      alignas(64) acc_t upstream_chunk[kPixels];  // the focal map's upstream, padding 0
      if (MAP) {
        for (int64_t i = 0; i < chunk.m; ++i) {
          upstream_chunk[i] = i < n ? static_cast<acc_t>(up[sample * shape.spatial + first + i]) : acc_t(0);
        }
      }
      with_variant(mode, with_region && lp.squared_pred, [&](auto input_tag, auto squared_tag) {
        backward_chunk<decltype(input_tag)::value, decltype(squared_tag)::value>(
            chunk, with_region ? coef_i.const_data_ptr<acc_t>() + group : nullptr,
            with_region ? coef_p.const_data_ptr<acc_t>() + group : nullptr, lp.elem || MAP,
            static_cast<acc_t>(lp.focal_alpha), static_cast<acc_t>(lp.focal_gamma), static_cast<acc_t>(elem_scale),
            MAP ? upstream_chunk : nullptr);
      });
      chunk.unstage(out + base, operands.strides);
    });
  });
  return grad;
}

Tensor multiclass_loss_backward_cpu(const Tensor& grad_loss, const Tensor& input, const Tensor& target,
                                    const Tensor& coef, bool per_sample, bool region, bool squared_pred, bool elem,
                                    double focal_alpha, double focal_gamma, bool from_logits, bool clamped_log,
                                    std::optional<int64_t> ignore_index) {
  return multiclass_backward_cpu<false>(
      grad_loss, input, target, &coef, per_sample,
      LossParams::per_element(region, squared_pred, elem, focal_alpha, focal_gamma, from_logits, clamped_log),
      ignore_index);
}

Tensor multiclass_focal_map_backward_cpu(const Tensor& grad_map, const Tensor& input, const Tensor& target,
                                         double alpha, double gamma, bool from_logits, bool clamped_log,
                                         std::optional<int64_t> ignore_index) {
  return multiclass_backward_cpu<true>(grad_map, input, target, nullptr, false,
                                       LossParams::focal_map(alpha, gamma, from_logits, clamped_log), ignore_index);
}

Tensor multiclass_focal_map_cpu(const Tensor& input_, const Tensor& target_, double alpha, double gamma,
                                bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index,
                                bool check_target) {
  const MulticlassInput mode = multiclass_input(LossParams::focal_map(alpha, gamma, from_logits, clamped_log));
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor &input = operands.input, &target = operands.target;
  const ClassMapChunks shape(input);
  Tensor out = at::empty(target.sizes(), input.options());
  dispatch_multiclass_data(input, target, "multiclass_focal_map_cpu", [&](const auto* x, const auto* y) {
    using input_t = pointee_t<decltype(x)>;
    using target_t = pointee_t<decltype(y)>;
    using acc_t = at::opmath_type<input_t>;
    input_t* o = out.mutable_data_ptr<input_t>();
    FirstBadTargets<int64_t> bad(check_target, shape.jobs);
    for_each_chunk<acc_t>(shape, [&](Chunk<acc_t>& chunk, int64_t sample, int64_t index, int64_t first, int64_t n) {
      const target_t* labels = y + sample * shape.spatial + first;
      chunk.stage(x + operands.strides.at(sample, first), labels, operands.strides, n, ignore_index);
      with_multiclass_input(mode, [&](auto input_tag) {
        focal_map_chunk<decltype(input_tag)::value>(chunk, static_cast<acc_t>(alpha), static_cast<acc_t>(gamma));
      });
      for (int64_t i = 0; i < n; ++i) o[sample * shape.spatial + first + i] = static_cast<input_t>(chunk.loss[i]);
      if (bad.checking()) {
        scan_classes(bad, sample * shape.chunks_per_sample + index, labels, n, shape.classes, ignore_index);
      }
    });
    check_classes(bad, shape.classes, ignore_index);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CPU, m) {
  m.impl("multiclass_loss", &multiclass_loss_cpu);
  m.impl("multiclass_loss_backward", &multiclass_loss_backward_cpu);
  m.impl("multiclass_focal_map", &multiclass_focal_map_cpu);
  m.impl("multiclass_focal_map_backward", &multiclass_focal_map_backward_cpu);
  m.impl("multiclass_stats", &multiclass_stats_cpu);
  m.impl("multiclass_finalize", &multiclass_finalize_cpu);
}

}  // namespace fusedloss
