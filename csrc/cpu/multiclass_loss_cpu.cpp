// CPU kernels of the multiclass ops (softmax over the classes, or probabilities
// as they are with from_logits=False). Input (N, C, S) logits, read
// through (sample, class, pixel) strides (../layout.h: contiguous and
// channels_last in place), target (N, S) class indices, or a dense target (the
// input's shape, at its offsets: per-class values). Work is cut into fixed
// chunks of kPixels pixels of one sample, so the result does not depend on the
// thread count. A chunk's logits are staged as a [C][kPixels] block in the
// accumulation type, so every class loop runs over contiguous pixels whatever
// the layout; the chunk's probabilities live in a second such block: no full
// softmax tensor exists (the per-class element forms, class weights with label
// smoothing or a dense target, stage t_c as a third block). The float loops are compiled for
// AVX-512, AVX2 and the baseline and picked at load time (target_clones), with
// vector_math.h's exp / log / pow; their sums use kLanes independent
// accumulators (a fixed order: no reassociation needed to vectorise). Chunk
// partials are combined in a fixed order in double. With check_target, the
// forward passes also scan each chunk's class indices, or a dense target's
// values (target_check_cpu.h).
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
#include "recycled_output.h"
#include "scaled_coefficients.h"
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
  std::vector<acc_t> t, h;  // [C][kPixels], per-class element terms only: the targets t_c, the gradient factors
  alignas(64) acc_t top[kPixels], total[kPixels];
  alignas(64) acc_t weight[kPixels];                 // 1 / total for counted pixels, else 0: p = e * weight
  alignas(64) acc_t loss[kPixels], factor[kPixels];  // the focal loss and its gradient factor A
  alignas(64) int32_t label[kPixels];                // -1: ignored, out of [0, C), or padding (dense: 0 or -1)
  int64_t classes = 0, n = 0, m = 0;                 // m: n rounded up to kLanes

  Chunk(int64_t classes_, MulticlassElem kind)
      : x(classes_ * kPixels),
        e(classes_ * kPixels),
        t(is_per_class(kind) ? classes_ * kPixels : 0),
        h(is_per_class(kind) ? classes_ * kPixels : 0),
        classes(classes_) {}

  // logits: class 0 of the chunk's first pixel; labels: that pixel's.
  template <typename input_t, typename target_t>
  void stage(const input_t* logits, const target_t* labels, const ClassStrides& strides, int64_t pixels,
             std::optional<int64_t> ignore_index) {
    n = pixels;
    m = (n + kLanes - 1) / kLanes * kLanes;
    const bool has_ignore = ignore_index.has_value();
    const int64_t ignore = ignore_index.value_or(0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = static_cast<int64_t>(labels[i]);
      label[i] = counted_class(y, classes, has_ignore, ignore) ? static_cast<int32_t>(y) : -1;
    }
    for (int64_t i = n; i < m; ++i) label[i] = -1;
    stage_rows(logits, x.data(), strides, /*masked=*/true);
    for (int64_t c = 0; c < static_cast<int64_t>(t.size()) / kPixels; ++c) {  // per-class terms: one-hot t
      acc_t* row = t.data() + c * kPixels;
      for (int64_t i = 0; i < m; ++i) row[i] = label[i] == c ? acc_t(1) : acc_t(0);
    }
  }

  // A dense target (the input's shape, at the logits' offsets): every pixel counts.
  template <typename input_t, typename target_t>
  void stage_dense(const input_t* logits, const target_t* targets, const ClassStrides& strides, int64_t pixels) {
    n = pixels;
    m = (n + kLanes - 1) / kLanes * kLanes;
    for (int64_t i = 0; i < n; ++i) label[i] = 0;
    for (int64_t i = n; i < m; ++i) label[i] = -1;
    stage_rows(logits, x.data(), strides, /*masked=*/false);
    stage_rows(targets, t.data(), strides, /*masked=*/false);
  }

  // Class c's values of the chunk into rows[c * kPixels ...], padding 0; masked: ignored
  // pixels count nowhere, whatever their logits (NaN included): staged as padding.
  template <typename source_t>
  void stage_rows(const source_t* values, acc_t* rows, const ClassStrides& strides, bool masked) {
    const int64_t class_stride = strides.cls, pixel_stride = strides.pixel;
    for (int64_t c = 0; c < classes; ++c) {
      acc_t* row = rows + c * kPixels;
      const source_t* source = values + c * class_stride;
      if (pixel_stride == 1) {
        convert(source, row, n);
      } else {
        for (int64_t i = 0; i < n; ++i) row[i] = static_cast<acc_t>(source[i * pixel_stride]);
      }
      if (masked) {
        for (int64_t i = 0; i < n; ++i) row[i] = label[i] >= 0 ? row[i] : acc_t(0);
      }
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

// The element term's parameters as a chunk reads them.
template <typename acc_t>
struct ElemArgs {
  bool region, elem, weighted_mean;  // weighted_mean: class maps only
  bool squared;                      // squared_pred, at run time in the per-class forms
  acc_t alpha, gamma;
  acc_t keep, spread;   // label smoothing: t' = t keep + spread (1 - eps, eps / C)
  const acc_t* scales;  // a_c per class: class_weight, or alpha_scale(alpha)
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
// -a (1 - p_y)^gamma log p_y and A (dloss/dx_c = A (p_c - [c = y])); probabilities,
// the clamped-log loss and dloss/dp_y; a = alpha_scale(alpha), or class_weight[y]
// (WEIGHTED). The target class's logit and exp are gathered first, so the arithmetic
// loop has no indirect access.
template <typename Math, MulticlassInput INPUT, bool WEIGHTED, typename acc_t>
C10_ALWAYS_INLINE void focal_block(Chunk<acc_t>& chunk, const ElemArgs<acc_t>& args) {
  alignas(64) acc_t x_y[kPixels], e_y[kPixels], a_y[WEIGHTED ? kPixels : 1];
  for (int64_t i = 0; i < chunk.m; ++i) {
    const int64_t y = chunk.label[i] >= 0 ? chunk.label[i] : 0;
    x_y[i] = chunk.x[y * kPixels + i];
    e_y[i] = chunk.e[y * kPixels + i];
    if constexpr (WEIGHTED) a_y[i] = args.scales[y];
  }
  const acc_t alpha = args.alpha, gamma = args.gamma;
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
      if constexpr (WEIGHTED) {
        terms = multiclass_focal_terms_scaled<Math>(log_p_y, rest, a_y[i], gamma);
      } else {
        terms = multiclass_focal_terms<Math>(log_p_y, rest, alpha, gamma);
      }
    } else {
      if constexpr (WEIGHTED) {
        terms = multiclass_clamped_focal_terms_scaled<Math>(x_y[i], a_y[i], gamma);
      } else {
        terms = multiclass_clamped_focal_terms<Math>(x_y[i], alpha, gamma);
      }
    }
    loss[i] = label[i] >= 0 ? terms.loss : acc_t(0);
    factor[i] = label[i] >= 0 ? terms.dloss : acc_t(0);
  }
}

// Per-class element terms (label smoothing, dense targets): per counted pixel the loss
// sum_c w_c (1 - p_c)^gamma (-lp_c), w_c = a_c t'_c; with GRAD, each class's factor into
// chunk.h: softmax, h_c = -w_c Afocal(p_c) (dE/dx_j = h_j - p_j sum_c h_c); probabilities,
// dE/dp_c. 0 on pixels not counted.
template <typename Math, MulticlassInput INPUT, MulticlassElem KIND, bool GRAD, typename acc_t>
C10_ALWAYS_INLINE void per_class_block(Chunk<acc_t>& chunk, const ElemArgs<acc_t>& args) {
  constexpr bool kModulated = KIND == kPerClassFocal;
  const int64_t m = chunk.m;
  const acc_t gamma = args.gamma, keep = args.keep, spread = args.spread;
  alignas(64) acc_t log_total[kPixels];
  const acc_t* __restrict__ top = chunk.top;
  const acc_t* __restrict__ total = chunk.total;
  const int32_t* __restrict__ label = chunk.label;
  acc_t* __restrict__ loss = chunk.loss;
  if constexpr (INPUT == kSoftmax) {
    for (int64_t i = 0; i < m; ++i) log_total[i] = Math::log(total[i]);
  }
  for (int64_t i = 0; i < m; ++i) loss[i] = 0;
  for (int64_t c = 0; c < chunk.classes; ++c) {
    const acc_t* __restrict__ x = chunk.x.data() + c * kPixels;
    const acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
    const acc_t* __restrict__ t = chunk.t.data() + c * kPixels;
    acc_t* __restrict__ h = GRAD ? chunk.h.data() + c * kPixels : nullptr;
    const acc_t a_c = args.scales[c];
    for (int64_t i = 0; i < m; ++i) {
      const acc_t w = class_target_weight(a_c, t[i], keep, spread);
      FocalTerms<acc_t> terms;
      if constexpr (INPUT == kSoftmax) {
        const acc_t log_p = (x[i] - top[i]) - log_total[i];
        const acc_t rest = kModulated ? (total[i] - e[i]) / total[i] : acc_t(0);  // 1 - p_c
        terms = softmax_class_terms<Math, kModulated>(log_p, rest, w, gamma);
      } else {
        terms = probability_class_terms<Math, kModulated>(x[i], w, gamma);
      }
      loss[i] += label[i] >= 0 ? terms.loss : acc_t(0);
      if constexpr (GRAD) h[i] = label[i] >= 0 ? terms.dloss : acc_t(0);
    }
  }
}

// The chunk's element losses into chunk.loss (and chunk.factor / chunk.h with GRAD).
template <typename Math, MulticlassInput INPUT, MulticlassElem KIND, bool GRAD, typename acc_t>
C10_ALWAYS_INLINE void elem_block(Chunk<acc_t>& chunk, const ElemArgs<acc_t>& args) {
  if constexpr (is_per_class(KIND)) {
    per_class_block<Math, INPUT, KIND, GRAD>(chunk, args);
  } else {
    focal_block<Math, INPUT, KIND == kLabelWeighted>(chunk, args);
  }
}

// The per-class forms' gradient (backward_block's), with t_c staged, H = sum_k h_k:
//   softmax:       dL/dx_c = p_c (g_c - sum_k p_k g_k) + F (h_c - p_c H);
//   probabilities: dL/dx_c = g_c + F h_c on counted pixels, 0 elsewhere.
template <typename Math, MulticlassInput INPUT, MulticlassElem KIND, typename acc_t>
C10_ALWAYS_INLINE void per_class_backward_block(Chunk<acc_t>& chunk, const acc_t* ci, const acc_t* cp,
                                                const ElemArgs<acc_t>& args, acc_t elem_scale, const acc_t* upstream) {
  probabilities_block<Math, INPUT>(chunk);
  const int64_t m = chunk.m;
  const bool squared = args.squared;
  alignas(64) acc_t h_sum[kPixels];  // F sum_k h_k
  if (args.elem) {
    per_class_block<Math, INPUT, KIND, true>(chunk, args);
    for (int64_t i = 0; i < m; ++i) {
      chunk.factor[i] = upstream != nullptr ? upstream[i] : elem_scale;
      h_sum[i] = 0;
    }
    for (int64_t c = 0; c < chunk.classes; ++c) {
      acc_t* __restrict__ h = chunk.h.data() + c * kPixels;
      for (int64_t i = 0; i < m; ++i) {
        h[i] *= chunk.factor[i];
        h_sum[i] += h[i];
      }
    }
  } else {
    std::fill(chunk.h.begin(), chunk.h.end(), acc_t(0));  // so the gradient loops need no branch
    for (int64_t i = 0; i < m; ++i) h_sum[i] = 0;
  }
  const acc_t* __restrict__ weight = chunk.weight;
  const int32_t* __restrict__ label = chunk.label;
  alignas(64) acc_t dot[kPixels];  // sum_k p_k g_k
  for (int64_t i = 0; i < m; ++i) dot[i] = 0;
  if (INPUT == kSoftmax && ci != nullptr) {
    for (int64_t c = 0; c < chunk.classes; ++c) {
      const acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
      const acc_t* __restrict__ t = chunk.t.data() + c * kPixels;
      for (int64_t i = 0; i < m; ++i) {
        const acc_t p = e[i] * weight[i];
        dot[i] += p * (ci[c] * t[i] + cp[c] * (squared ? acc_t(2) * p : acc_t(1)));
      }
    }
  }
  for (int64_t c = 0; c < chunk.classes; ++c) {
    const acc_t* __restrict__ e = chunk.e.data() + c * kPixels;
    const acc_t* __restrict__ t = chunk.t.data() + c * kPixels;
    const acc_t* __restrict__ h = chunk.h.data() + c * kPixels;
    acc_t* __restrict__ grad = chunk.x.data() + c * kPixels;
    const acc_t coef_i = ci != nullptr ? ci[c] : acc_t(0), coef_p = ci != nullptr ? cp[c] : acc_t(0);
    for (int64_t i = 0; i < m; ++i) {
      const acc_t p = e[i] * weight[i];
      const acc_t g = coef_i * t[i] + coef_p * (squared ? acc_t(2) * p : acc_t(1));  // region_dp
      if constexpr (INPUT == kSoftmax) {
        grad[i] = p * (g - dot[i]) + (h[i] - p * h_sum[i]);
      } else {
        grad[i] = label[i] >= 0 ? g + h[i] : acc_t(0);
      }
    }
  }
}

// The chunk's I, P, T per class (class_sums[3c..3c+2]) and [E, the mean's denominator]:
// counted pixels, or with weighted_mean (class maps) the sum of their a_y. SQUARED: the
// labelled-class forms'; the per-class forms take squared_pred at run time (args.squared).
template <typename Math, MulticlassInput INPUT, bool SQUARED, MulticlassElem KIND, typename acc_t>
C10_ALWAYS_INLINE void stats_block(Chunk<acc_t>& chunk, const ElemArgs<acc_t>& args, double* class_sums,
                                   double* elem_sums) {
  constexpr bool kPerClass = is_per_class(KIND);
  probabilities_block<Math, INPUT>(chunk);
  if (args.region) {
    [[maybe_unused]] const bool squared = args.squared;  // the per-class forms
    for (int64_t c = 0; c < chunk.classes; ++c) {
      const acc_t* e = chunk.e.data() + c * kPixels;
      const acc_t* t = kPerClass ? chunk.t.data() + c * kPixels : nullptr;
      const int32_t cls = static_cast<int32_t>(c);
      acc_t sum_i[kLanes] = {}, sum_p[kLanes] = {}, sum_t[kLanes] = {};
      for (int64_t start = 0; start < chunk.m; start += kLanes) {
        for (int64_t j = 0; j < kLanes; ++j) {
          const int64_t i = start + j;
          const acc_t p = e[i] * chunk.weight[i];
          if constexpr (kPerClass) {
            sum_i[j] += p * t[i];  // padding and ignored pixels: t = 0
            sum_p[j] += squared ? p * p : p;
            sum_t[j] += squared ? t[i] * t[i] : t[i];
          } else {
            const acc_t hit = chunk.label[i] == cls ? acc_t(1) : acc_t(0);
            sum_i[j] += p * hit;
            sum_p[j] += region_share<SQUARED>(p);
            sum_t[j] += hit;  // a one-hot t: t^2 = t
          }
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
  if (args.elem) {
    elem_block<Math, INPUT, KIND, false>(chunk, args);
    acc_t sum_e[kLanes] = {}, count[kLanes] = {};
    if (args.weighted_mean) {
      for (int64_t start = 0; start < chunk.m; start += kLanes) {
        for (int64_t j = 0; j < kLanes; ++j) {
          const int32_t y = chunk.label[start + j];
          sum_e[j] += chunk.loss[start + j];
          count[j] += y >= 0 ? args.scales[y] : acc_t(0);
        }
      }
    } else {
      for (int64_t start = 0; start < chunk.m; start += kLanes) {
        for (int64_t j = 0; j < kLanes; ++j) {
          sum_e[j] += chunk.loss[start + j];
          count[j] += chunk.label[start + j] >= 0 ? acc_t(1) : acc_t(0);
        }
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

// The gradient into chunk.x, g_c = ci[c] t_c + cp[c] dP/dp_c the region term's dL/dp_c
// (t_c = [c = y] for a class map), F = elem_scale (the element term), or upstream[i] for
// the focal map (upstream non-null):
//   softmax:       dL/dx_c = p_c (g_c - sum_k p_k g_k) + F A (p_c - [c = y]),
//                  per-class element terms: ... + F (h_c - p_c sum_k h_k);
//   probabilities: dL/dx_c = g_c + F [c = y] dE/dp_y (per class: + F dE/dp_c) on counted
//                  pixels, 0 elsewhere.
template <typename Math, MulticlassInput INPUT, bool SQUARED, MulticlassElem KIND, typename acc_t>
C10_ALWAYS_INLINE void backward_block(Chunk<acc_t>& chunk, const acc_t* ci, const acc_t* cp,
                                      const ElemArgs<acc_t>& args, acc_t elem_scale, const acc_t* upstream) {
  if constexpr (is_per_class(KIND)) {
    per_class_backward_block<Math, INPUT, KIND>(chunk, ci, cp, args, elem_scale, upstream);
    return;
  }
  probabilities_block<Math, INPUT>(chunk);
  if (args.elem) {
    elem_block<Math, INPUT, KIND, true>(chunk, args);
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

// Entry points per variant (input mode, squared_pred, element form) and accumulation
// type: float through target_clones (one set per variant), double as is.
template <MulticlassInput INPUT, bool SQUARED, MulticlassElem KIND>
FUSEDLOSS_CLONES void stats_chunk(Chunk<float>& chunk, const ElemArgs<float>& args, double* class_sums,
                                  double* elem_sums) {
  stats_block<VectorMath, INPUT, SQUARED, KIND>(chunk, args, class_sums, elem_sums);
}
template <MulticlassInput INPUT, bool SQUARED, MulticlassElem KIND>
void stats_chunk(Chunk<double>& chunk, const ElemArgs<double>& args, double* class_sums, double* elem_sums) {
  stats_block<StdMath, INPUT, SQUARED, KIND>(chunk, args, class_sums, elem_sums);
}

template <MulticlassInput INPUT, bool SQUARED, MulticlassElem KIND>
FUSEDLOSS_CLONES void backward_chunk(Chunk<float>& chunk, const float* ci, const float* cp, const ElemArgs<float>& args,
                                     float elem_scale, const float* upstream) {
  backward_block<VectorMath, INPUT, SQUARED, KIND>(chunk, ci, cp, args, elem_scale, upstream);
}
template <MulticlassInput INPUT, bool SQUARED, MulticlassElem KIND>
void backward_chunk(Chunk<double>& chunk, const double* ci, const double* cp, const ElemArgs<double>& args,
                    double elem_scale, const double* upstream) {
  backward_block<StdMath, INPUT, SQUARED, KIND>(chunk, ci, cp, args, elem_scale, upstream);
}

template <MulticlassInput INPUT, MulticlassElem KIND>
FUSEDLOSS_CLONES void focal_map_chunk(Chunk<float>& chunk, const ElemArgs<float>& args) {
  probabilities_block<VectorMath, INPUT>(chunk);
  elem_block<VectorMath, INPUT, KIND, false>(chunk, args);
}
template <MulticlassInput INPUT, MulticlassElem KIND>
void focal_map_chunk(Chunk<double>& chunk, const ElemArgs<double>& args) {
  probabilities_block<StdMath, INPUT>(chunk);
  elem_block<StdMath, INPUT, KIND, false>(chunk, args);
}

// Runtime input mode, squared_pred and element form to the variant instantiated for them:
// fn(std::integral_constant<MulticlassInput, INPUT>, std::bool_constant<SQUARED>,
//    std::integral_constant<MulticlassElem, KIND>).
template <typename Fn>
void with_variant(MulticlassInput input, bool squared, MulticlassElem kind, Fn&& fn) {
  with_multiclass_input(input, [&](auto input_tag) {
    with_multiclass_elem(kind, [&](auto kind_tag) {
      // The per-class forms take squared_pred at run time: fewer instantiations.
      if constexpr (!is_per_class(decltype(kind_tag)::value)) {
        squared ? fn(input_tag, std::true_type{}, kind_tag) : fn(input_tag, std::false_type{}, kind_tag);
      } else {
        fn(input_tag, std::false_type{}, kind_tag);
      }
    });
  });
}

// Runs fn(chunk buffers, sample, chunk index in the sample, first_pixel, pixels) for
// every chunk, in parallel; each task allocates its buffers once.
template <typename acc_t, typename Fn>
void for_each_chunk(const ClassMapChunks& shape, MulticlassElem kind, Fn&& fn) {
  at::parallel_for(0, shape.jobs, kChunksPerTask, [&](int64_t begin, int64_t end) {
    Chunk<acc_t> buffers(shape.classes, kind);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t sample = job / shape.chunks_per_sample, index = job % shape.chunks_per_sample;
      const int64_t first = index * kPixels;
      fn(buffers, sample, index, first, std::min(kPixels, shape.spatial - first));
    }
  });
}

// The operands' data: fn(x, y, dense) with y a class map's indices (dense: false_type) or
// a dense target's values (true_type), each pointer to its C++ type.
template <typename Fn>
void dispatch_operands(const MulticlassOperands& operands, const char* name, Fn&& fn) {
  if (operands.dense_target) {
    dispatch_binary_data(operands.input, operands.target, name,
                         [&](const auto* x, const auto* y) { fn(x, y, std::true_type{}); });
  } else {
    dispatch_multiclass_data(operands.input, operands.target, name,
                             [&](const auto* x, const auto* y) { fn(x, y, std::false_type{}); });
  }
}

// Stages chunk (sample, first pixel, n pixels) of the operands.
template <bool DENSE, typename acc_t, typename input_t, typename target_t>
void stage_chunk(Chunk<acc_t>& chunk, const MulticlassOperands& operands, const ClassMapChunks& shape, const input_t* x,
                 const target_t* y, int64_t sample, int64_t first, int64_t n, std::optional<int64_t> ignore_index) {
  const int64_t base = operands.strides.at(sample, first);
  if constexpr (DENSE) {
    chunk.stage_dense(x + base, y + base, operands.strides, n);  // the target at the input's offsets
  } else {
    chunk.stage(x + base, y + sample * shape.spatial + first, operands.strides, n, ignore_index);
  }
}

// The element term's per-chunk arguments; scales (a_c) owned by the caller.
template <typename acc_t>
struct ElemSetup {
  std::vector<acc_t> scales;
  ElemArgs<acc_t> args;

  ElemSetup(const LossParams& lp, const std::optional<Tensor>& class_weight, int64_t classes, bool dense_target)
      : scales(classes, alpha_scale(static_cast<acc_t>(lp.focal_alpha))) {
    if (class_weight.has_value()) {
      TORCH_CHECK(class_weight->numel() == classes, "fusedloss: class_weight must hold one value per class (", classes,
                  "), got ", class_weight->sizes());
      const Tensor w = class_weight->to(at::kCPU, at::kDouble).contiguous();
      for (int64_t c = 0; c < classes; ++c) scales[c] = static_cast<acc_t>(w.const_data_ptr<double>()[c]);
    }
    const double eps = lp.label_smoothing;
    args = {lp.region,
            lp.elem,
            lp.weighted_mean && !dense_target,  // a dense target's mean is over its pixels
            lp.region && lp.squared_pred,
            static_cast<acc_t>(lp.focal_alpha),
            static_cast<acc_t>(lp.focal_gamma),
            static_cast<acc_t>(1 - eps),
            static_cast<acc_t>(eps / double(classes)),
            scales.data()};
  }
  ElemSetup(const ElemSetup&) = delete;  // args points into scales
};

// Per-group class sums (groups x [I, P, T], groups = C, or N*C with per_sample)
// and the element term's [E, its mean's denominator], each combined in a fixed order, in double.
struct MulticlassSums {
  std::vector<double> classes;
  double elem_sum = 0, valid_pixels = 0;
};

// lp: LossParams::per_element, with label_smoothing and weighted_mean.
MulticlassSums multiclass_group_sums(const Tensor& input_, const Tensor& target_,
                                     const std::optional<Tensor>& class_weight, bool per_sample, const LossParams& lp,
                                     std::optional<int64_t> ignore_index, bool check_target) {
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor& input = operands.input;
  const ClassMapChunks shape(input);
  const int64_t C = shape.classes, jobs = shape.jobs;
  // Per job: C x (I, P, T), then (E, valid pixels).
  std::vector<double> class_partials(lp.region ? jobs * C * 3 : 0), elem_partials(jobs * 2);
  const MulticlassInput mode = multiclass_input(lp);
  const MulticlassElem kind = multiclass_elem(lp, operands.dense_target, class_weight.has_value());

  dispatch_operands(operands, "multiclass_stats_cpu", [&](const auto* x, const auto* y, auto dense_tag) {
    using input_t = pointee_t<decltype(x)>;
    using acc_t = at::opmath_type<input_t>;
    constexpr bool kDenseTarget = decltype(dense_tag)::value;
    const ElemSetup<acc_t> setup(lp, class_weight, C, operands.dense_target);
    // Jobs in memory order of the (contiguous) class map; a dense target's values by chunk.
    FirstBadTargets<int64_t> bad(check_target && !kDenseTarget, jobs);
    FirstBadTargets<acc_t> bad_values(check_target && kDenseTarget, jobs);
    for_each_chunk<acc_t>(
        shape, kind, [&](Chunk<acc_t>& chunk, int64_t sample, int64_t index, int64_t first, int64_t n) {
          stage_chunk<kDenseTarget>(chunk, operands, shape, x, y, sample, first, n, ignore_index);
          const int64_t job = sample * shape.chunks_per_sample + index;
          with_variant(mode, lp.region && lp.squared_pred, kind, [&](auto input_tag, auto squared_tag, auto kind_tag) {
            stats_chunk<decltype(input_tag)::value, decltype(squared_tag)::value, decltype(kind_tag)::value>(
                chunk, setup.args, lp.region ? class_partials.data() + job * C * 3 : nullptr,
                elem_partials.data() + job * 2);
          });
          if constexpr (kDenseTarget) {
            if (bad_values.checking()) scan_dense(bad_values, job, chunk.t.data(), chunk.classes, kPixels, chunk.n);
          } else {
            if (bad.checking()) scan_classes(bad, job, y + sample * shape.spatial + first, n, C, ignore_index);
          }
        });
    check_classes(bad, C, ignore_index);
    check_probabilities(bad_values);
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

std::tuple<Tensor, Tensor> multiclass_loss_cpu(
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
  const MulticlassSums sums =
      multiclass_group_sums(input, target, class_weight, per_sample, lp, ignore_index, check_target);
  return finalize(sums.classes.data(), static_cast<int64_t>(sums.classes.size() / 3), sums.elem_sum, sums.valid_pixels,
                  weight, MulticlassRules{input.size(1), include_background, exclude_empty}, lp,
                  parse_reduction(reduction), loss_shape_of(input, per_sample), accumulation_options(input));
}

// The two halves on their own, for statistics summed across processes (ops/synced.py).
std::tuple<Tensor, Tensor> multiclass_stats_cpu(const Tensor& input, const Tensor& target,
                                                const std::optional<Tensor>& class_weight, bool per_sample, bool region,
                                                bool squared_pred, bool elem, double focal_alpha, double focal_gamma,
                                                double label_smoothing, bool weighted_mean, bool from_logits,
                                                bool clamped_log, std::optional<int64_t> ignore_index,
                                                bool check_target) {
  LossParams lp =
      LossParams::per_element(region, squared_pred, false, elem, focal_alpha, focal_gamma, from_logits, clamped_log);
  lp.label_smoothing = label_smoothing;
  lp.weighted_mean = weighted_mean;
  MulticlassSums sums = multiclass_group_sums(input, target, class_weight, per_sample, lp, ignore_index, check_target);
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
                               const Tensor* coef_, const std::optional<Tensor>& class_weight, bool per_sample,
                               const LossParams& lp, std::optional<int64_t> ignore_index) {
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const Tensor& input = operands.input;
  const ClassMapChunks shape(input);
  const int64_t C = shape.classes;
  const MulticlassInput mode = multiclass_input(lp);
  const MulticlassElem kind = multiclass_elem(lp, operands.dense_target, class_weight.has_value());
  Tensor grad = recycled_output(input, operands.format);  // the input's strides: written at the offsets read
  // The focal map's upstream stays in the input's dtype (a full-size map). The per-group one
  // scales the coefficients: g_c = c_I t_c + c_P per group; c_E (group 0's, scaled by the first
  // upstream value) scales the element term, whose output is a scalar.
  const Tensor upstream = MAP ? upstream_.to(input.scalar_type()).contiguous() : Tensor();
  const std::vector<double> scaled = MAP ? std::vector<double>() : scaled_coefficients(*coef_, upstream_);
  const double elem_scale = MAP ? 0.0 : scaled[2];
  dispatch_operands(operands, "multiclass_backward_cpu", [&](const auto* x, const auto* y, auto dense_tag) {
    using input_t = pointee_t<decltype(x)>;
    using acc_t = at::opmath_type<input_t>;
    const ElemSetup<acc_t> setup(lp, class_weight, C, operands.dense_target);
    input_t* out = grad.mutable_data_ptr<input_t>();
    const bool with_region = lp.region && !MAP;
    std::vector<acc_t> coef_i(scaled.size() / 3), coef_p(scaled.size() / 3);
    for (size_t g = 0; g < coef_i.size(); ++g) {
      coef_i[g] = static_cast<acc_t>(scaled[3 * g]);
      coef_p[g] = static_cast<acc_t>(scaled[3 * g + 1]);
    }
    const input_t* up = MAP ? upstream.const_data_ptr<input_t>() : nullptr;
    for_each_chunk<acc_t>(shape, kind, [&](Chunk<acc_t>& chunk, int64_t sample, int64_t, int64_t first, int64_t n) {
      stage_chunk<decltype(dense_tag)::value>(chunk, operands, shape, x, y, sample, first, n, ignore_index);
      const int64_t group = per_sample ? sample * C : 0;
      alignas(64) acc_t upstream_chunk[kPixels];  // the focal map's upstream, padding 0
      if (MAP) {
        for (int64_t i = 0; i < chunk.m; ++i) {
          upstream_chunk[i] = i < n ? static_cast<acc_t>(up[sample * shape.spatial + first + i]) : acc_t(0);
        }
      }
      with_variant(mode, with_region && lp.squared_pred, kind, [&](auto input_tag, auto squared_tag, auto kind_tag) {
        backward_chunk<decltype(input_tag)::value, decltype(squared_tag)::value, decltype(kind_tag)::value>(
            chunk, with_region ? coef_i.data() + group : nullptr, with_region ? coef_p.data() + group : nullptr,
            setup.args, static_cast<acc_t>(elem_scale), MAP ? upstream_chunk : nullptr);
      });
      chunk.unstage(out + operands.strides.at(sample, first), operands.strides);
    });
  });
  return grad;
}

Tensor multiclass_loss_backward_cpu(const Tensor& grad_loss, const Tensor& input, const Tensor& target,
                                    const Tensor& coef, const std::optional<Tensor>& class_weight, bool per_sample,
                                    bool region, bool squared_pred, bool elem, double focal_alpha, double focal_gamma,
                                    double label_smoothing, bool from_logits, bool clamped_log,
                                    std::optional<int64_t> ignore_index) {
  LossParams lp =
      LossParams::per_element(region, squared_pred, false, elem, focal_alpha, focal_gamma, from_logits, clamped_log);
  lp.label_smoothing = label_smoothing;
  return multiclass_backward_cpu<false>(grad_loss, input, target, &coef, class_weight, per_sample, lp, ignore_index);
}

Tensor multiclass_focal_map_backward_cpu(const Tensor& grad_map, const Tensor& input, const Tensor& target,
                                         const std::optional<Tensor>& class_weight, double alpha, double gamma,
                                         bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index) {
  return multiclass_backward_cpu<true>(grad_map, input, target, nullptr, class_weight, false,
                                       LossParams::focal_map(alpha, gamma, from_logits, clamped_log), ignore_index);
}

Tensor multiclass_focal_map_cpu(const Tensor& input_, const Tensor& target_, const std::optional<Tensor>& class_weight,
                                double alpha, double gamma, bool from_logits, bool clamped_log,
                                std::optional<int64_t> ignore_index, bool check_target) {
  const LossParams lp = LossParams::focal_map(alpha, gamma, from_logits, clamped_log);
  const MulticlassInput mode = multiclass_input(lp);
  const MulticlassOperands operands = multiclass_operands(input_, target_);
  const MulticlassElem kind = multiclass_elem(lp, operands.dense_target, class_weight.has_value());
  const Tensor& input = operands.input;
  const ClassMapChunks shape(input);
  Tensor out = at::empty(pixel_shape(input), input.options());
  dispatch_operands(operands, "multiclass_focal_map_cpu", [&](const auto* x, const auto* y, auto dense_tag) {
    using input_t = pointee_t<decltype(x)>;
    using acc_t = at::opmath_type<input_t>;
    constexpr bool kDenseTarget = decltype(dense_tag)::value;
    const ElemSetup<acc_t> setup(lp, class_weight, shape.classes, operands.dense_target);
    input_t* o = out.mutable_data_ptr<input_t>();
    FirstBadTargets<int64_t> bad(check_target && !kDenseTarget, shape.jobs);
    FirstBadTargets<acc_t> bad_values(check_target && kDenseTarget, shape.jobs);
    for_each_chunk<acc_t>(
        shape, kind, [&](Chunk<acc_t>& chunk, int64_t sample, int64_t index, int64_t first, int64_t n) {
          stage_chunk<kDenseTarget>(chunk, operands, shape, x, y, sample, first, n, ignore_index);
          with_multiclass_input(mode, [&](auto input_tag) {
            with_multiclass_elem(kind, [&](auto kind_tag) {
              focal_map_chunk<decltype(input_tag)::value, decltype(kind_tag)::value>(chunk, setup.args);
            });
          });
          for (int64_t i = 0; i < n; ++i) o[sample * shape.spatial + first + i] = static_cast<input_t>(chunk.loss[i]);
          const int64_t job = sample * shape.chunks_per_sample + index;
          if constexpr (kDenseTarget) {
            if (bad_values.checking()) scan_dense(bad_values, job, chunk.t.data(), chunk.classes, kPixels, chunk.n);
          } else {
            if (bad.checking())
              scan_classes(bad, job, y + sample * shape.spatial + first, n, shape.classes, ignore_index);
          }
        });
    check_classes(bad, shape.classes, ignore_index);
    check_probabilities(bad_values);
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
