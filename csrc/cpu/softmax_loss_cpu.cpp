// CPU kernels of the softmax (multi-class) ops. Input (N, C, S) logits, read
// through (sample, class, pixel) strides (../layout.h: contiguous and
// channels_last in place), target (N, S) class indices. Work is cut into fixed chunks of kPixels
// pixels of one sample (the result does not depend on the thread count); a
// chunk's softmax lives in a [C, kPixels] buffer, so no one-hot target and no
// full softmax tensor exist. Loops run class-major over contiguous pixels.
// Partials are combined in a fixed order in double.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../layout.h"
#include "../sigmoid_math.h"

namespace fusedloss {
namespace {

using at::Tensor;

constexpr int64_t kPixels = 256;  // pixels per chunk
constexpr int64_t kChunksPerTask = 8;

struct SoftmaxShape {
  int64_t batch, classes, spatial, chunks_per_sample;
  explicit SoftmaxShape(const Tensor& input)
      : batch(input.size(0)), classes(input.size(1)), spatial(input.numel() / (input.size(0) * input.size(1))),
        chunks_per_sample((spatial + kPixels - 1) / kPixels) {}
};

// One chunk's softmax: e[c * kPixels + i] = exp(x_c - max), total[i] = sum_c e, labels and validity.
template <typename acc_t>
struct ChunkSoftmax {
  std::vector<acc_t> e;
  acc_t top[kPixels], total[kPixels];
  int64_t label[kPixels];
  bool valid[kPixels];

  explicit ChunkSoftmax(int64_t classes) : e(classes * kPixels) {}

  template <typename input_t, typename target_t>
  void compute(const input_t* x, const target_t* y, int64_t classes, int64_t cls, int64_t pix, int64_t n,
               std::optional<int64_t> ignore_index) {
    for (int64_t i = 0; i < n; ++i) {
      label[i] = static_cast<int64_t>(y[i]);
      valid[i] = label[i] >= 0 && label[i] < classes && !(ignore_index.has_value() && label[i] == *ignore_index);
      top[i] = -std::numeric_limits<acc_t>::infinity();
      total[i] = 0;
    }
    for (int64_t c = 0; c < classes; ++c) {
      for (int64_t i = 0; i < n; ++i) top[i] = std::max(top[i], static_cast<acc_t>(x[c * cls + i * pix]));
    }
    for (int64_t c = 0; c < classes; ++c) {
      acc_t* row = e.data() + c * kPixels;
      for (int64_t i = 0; i < n; ++i) {
        row[i] = std::exp(static_cast<acc_t>(x[c * cls + i * pix]) - top[i]);
        total[i] += row[i];
      }
    }
  }

  // log p_y and 1 - p_y (the other classes' share) of a valid pixel.
  template <typename input_t>
  std::pair<acc_t, acc_t> target_terms(const input_t* x, int64_t cls, int64_t pix, int64_t i) const {
    const acc_t x_y = static_cast<acc_t>(x[label[i] * cls + i * pix]);
    const acc_t log_p_y = (x_y - top[i]) - std::log(total[i]);
    const acc_t rest = (total[i] - e[label[i] * kPixels + i]) / total[i];
    return {log_p_y, rest};
  }
};

template <typename Fn>
void dispatch_class_map(const Tensor& target, Fn&& fn) {
  switch (target.scalar_type()) {
    case at::kByte: return fn(uint8_t{});
    case at::kShort: return fn(int16_t{});
    case at::kInt: return fn(int32_t{});
    case at::kLong: return fn(int64_t{});
    default: TORCH_CHECK(false, "fusedloss: multi-class target must be uint8, int16, int32 or int64, got ",
                         target.scalar_type());
  }
}

// Runs fn(sample, chunk, first_pixel, pixels) for every chunk, in parallel.
template <typename Fn>
void for_each_chunk(const SoftmaxShape& shape, Fn&& fn) {
  at::parallel_for(0, shape.batch * shape.chunks_per_sample, kChunksPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t sample = job / shape.chunks_per_sample, chunk = job % shape.chunks_per_sample;
      const int64_t first = chunk * kPixels;
      fn(sample, chunk, first, std::min(kPixels, shape.spatial - first));
    }
  });
}

// Per-group class sums (groups x [I, P, T], groups = C, or N*C with per_sample)
// and the element term's [E, valid pixels], each combined in a fixed order, in double.
struct SoftmaxSums {
  std::vector<double> classes;
  double elem_sum = 0, valid_pixels = 0;
};

SoftmaxSums softmax_group_sums(const Tensor& input_, const Tensor& target_, bool per_sample, bool region, bool elem,
                               double focal_alpha, double focal_gamma, std::optional<int64_t> ignore_index) {
  const SoftmaxOperands ops = softmax_operands(input_, target_);
  const Tensor &input = ops.input, &target = ops.target;
  const SoftmaxShape shape(input);
  const int64_t C = shape.classes, jobs = shape.batch * shape.chunks_per_sample;
  // Per job: C x (I, P, T), then (E, valid pixels).
  std::vector<double> class_partials(region ? jobs * C * 3 : 0), elem_partials(jobs * 2);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "softmax_stats_cpu", [&] {
    using input_t = scalar_t;
    using acc_t = at::opmath_type<input_t>;
    dispatch_class_map(target, [&](auto target_tag) {
      using target_t = decltype(target_tag);
      const input_t* x = input.const_data_ptr<input_t>();
      const target_t* y = target.const_data_ptr<target_t>();
      for_each_chunk(shape, [&](int64_t sample, int64_t chunk, int64_t first, int64_t n) {
        const input_t* xs = x + sample * ops.sample + first * ops.pixel;
        ChunkSoftmax<acc_t> sm(C);
        sm.compute(xs, y + sample * shape.spatial + first, C, ops.cls, ops.pixel, n, ignore_index);
        const int64_t job = sample * shape.chunks_per_sample + chunk;
        if (region) {
          for (int64_t c = 0; c < C; ++c) {
            const acc_t* row = sm.e.data() + c * kPixels;
            acc_t sum_i = 0, sum_p = 0, sum_t = 0;
            for (int64_t i = 0; i < n; ++i) {
              const acc_t p = sm.valid[i] ? row[i] / sm.total[i] : acc_t(0);
              const bool hit = sm.valid[i] && sm.label[i] == c;
              sum_i += hit ? p : acc_t(0);
              sum_p += p;
              sum_t += hit ? acc_t(1) : acc_t(0);
            }
            double* slot = class_partials.data() + (job * C + c) * 3;
            slot[0] = sum_i;
            slot[1] = sum_p;
            slot[2] = sum_t;
          }
        }
        acc_t sum_e = 0, count = 0;
        if (elem) {
          for (int64_t i = 0; i < n; ++i) {
            if (!sm.valid[i]) continue;
            const auto [log_p_y, rest] = sm.target_terms(xs, ops.cls, ops.pixel, i);
            sum_e += softmax_focal_terms<StdMath>(log_p_y, rest, acc_t(focal_alpha), acc_t(focal_gamma)).loss;
            count += 1;
          }
        }
        elem_partials[job * 2] = sum_e;
        elem_partials[job * 2 + 1] = count;
      });
    });
  });

  SoftmaxSums sums;
  const int64_t groups = per_sample ? shape.batch * C : C;
  const int64_t parts_per_group = per_sample ? shape.chunks_per_sample : jobs;
  sums.classes.assign(groups * 3, 0.0);
  if (region) {
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

// The formula from the sums, in double: weights, background / empty-class exclusion,
// reduction, and the backward coefficients.
std::tuple<Tensor, Tensor> softmax_finalize(const double* class_sums, int64_t groups, int64_t C, double elem_sum,
                                            double valid_pixels, const std::optional<Tensor>& weight,
                                            const SigmoidLossParams& lp, bool include_background,
                                            bool exclude_empty, Reduction reduction, c10::IntArrayRef loss_shape,
                                            const at::TensorOptions& options) {
  const double elem_scale = lp.elem_mean ? lp.elem_weight / std::max(valid_pixels, 1.0) : lp.elem_weight;
  std::vector<char> keep(groups);
  int64_t counted = 0;
  for (int64_t g = 0; g < groups; ++g) {
    keep[g] = (include_background || g % C != 0) && (!exclude_empty || class_sums[3 * g + 2] > 0);
    counted += keep[g];
  }
  const double out_scale = reduction == Reduction::Mean ? 1.0 / std::max<int64_t>(counted, 1) : 1.0;
  Tensor weight_d;
  if (weight.has_value()) weight_d = weight->to(at::kDouble).contiguous();
  SigmoidLossParams region_only = lp;
  region_only.elem = false;
  Tensor loss = at::empty(reduction == Reduction::None ? loss_shape : c10::IntArrayRef{}, options);
  Tensor coef = at::empty({groups, 3}, options);
  AT_DISPATCH_FLOATING_TYPES(options.dtype().toScalarType(), "softmax_finalize_cpu", [&] {
    scalar_t* loss_out = loss.mutable_data_ptr<scalar_t>();
    scalar_t* coef_out = coef.mutable_data_ptr<scalar_t>();
    double total = 0;
    for (int64_t g = 0; g < groups; ++g) {
      const double* s = class_sums + 3 * g;
      const double w = weight_d.defined() ? weight_d.const_data_ptr<double>()[g % C] : 1.0;
      GroupResult<double> r{0, 0, 0, 0};
      if (lp.region && keep[g]) r = finalize_group<double>(s[0], s[1], s[2], 0.0, w, out_scale, 0.0, region_only);
      if (reduction == Reduction::None) loss_out[g] = static_cast<scalar_t>(r.loss);
      total += r.loss;
      coef_out[3 * g + 0] = static_cast<scalar_t>(r.coef_i);
      coef_out[3 * g + 1] = static_cast<scalar_t>(r.coef_p);
      coef_out[3 * g + 2] = static_cast<scalar_t>(elem_scale);
    }
    if (reduction != Reduction::None) loss_out[0] = static_cast<scalar_t>(total * out_scale + elem_scale * elem_sum);
  });
  return {loss, coef};
}

std::vector<int64_t> loss_shape_of(const Tensor& input, bool per_sample) {
  if (per_sample) return {input.size(0), input.size(1)};
  return {input.size(1)};
}

std::tuple<Tensor, Tensor> softmax_loss_cpu(const Tensor& input, const Tensor& target,
                                            const std::optional<Tensor>& weight, bool per_sample, bool region,
                                            double tv_alpha, double tv_beta, double smooth, double region_gamma,
                                            double region_weight, bool elem, double focal_alpha, double focal_gamma,
                                            double elem_weight, bool elem_mean, std::optional<int64_t> ignore_index,
                                            bool include_background, bool exclude_empty,
                                            c10::string_view reduction) {
  const SoftmaxSums sums =
      softmax_group_sums(input, target, per_sample, region, elem, focal_alpha, focal_gamma, ignore_index);
  const SigmoidLossParams lp{region, tv_alpha, tv_beta, smooth, region_gamma, region_weight,
                             elem, focal_alpha, focal_gamma, elem_weight, elem_mean};
  const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return softmax_finalize(sums.classes.data(), static_cast<int64_t>(sums.classes.size() / 3), input.size(1),
                          sums.elem_sum, sums.valid_pixels, weight, lp, include_background, exclude_empty,
                          parse_reduction(reduction), loss_shape_of(input, per_sample), input.options().dtype(acc));
}

// The two halves on their own, for statistics summed across processes (ops/synced.py).
std::tuple<Tensor, Tensor> softmax_stats_cpu(const Tensor& input, const Tensor& target, bool per_sample, bool region,
                                             bool elem, double focal_alpha, double focal_gamma,
                                             std::optional<int64_t> ignore_index) {
  SoftmaxSums sums = softmax_group_sums(input, target, per_sample, region, elem, focal_alpha, focal_gamma,
                                        ignore_index);
  const auto options = input.options().dtype(input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const int64_t groups = static_cast<int64_t>(sums.classes.size() / 3);
  Tensor class_sums = at::from_blob(sums.classes.data(), {groups, 3}, at::TensorOptions().dtype(at::kDouble))
                          .to(options, /*non_blocking=*/false, /*copy=*/true);
  double elem_values[2] = {sums.elem_sum, sums.valid_pixels};
  Tensor elem_sums = at::from_blob(elem_values, {2}, at::TensorOptions().dtype(at::kDouble))
                         .to(options, /*non_blocking=*/false, /*copy=*/true);
  return {class_sums, elem_sums};
}

std::tuple<Tensor, Tensor> softmax_finalize_cpu(const Tensor& class_sums, const Tensor& elem_sums,
                                                const std::optional<Tensor>& weight, int64_t num_classes,
                                                bool per_sample, bool region, double tv_alpha, double tv_beta,
                                                double smooth, double region_gamma, double region_weight, bool elem,
                                                double elem_weight, bool elem_mean, bool include_background,
                                                bool exclude_empty, c10::string_view reduction,
                                                c10::IntArrayRef loss_shape) {
  const Tensor classes_d = class_sums.to(at::kDouble).contiguous();
  const Tensor elem_d = elem_sums.to(at::kDouble).contiguous();
  const SigmoidLossParams lp{region, tv_alpha, tv_beta, smooth, region_gamma, region_weight,
                             elem, 0.0, 0.0, elem_weight, elem_mean};
  return softmax_finalize(classes_d.const_data_ptr<double>(), class_sums.size(0), num_classes,
                          elem_d.const_data_ptr<double>()[0], elem_d.const_data_ptr<double>()[1], weight, lp,
                          include_background, exclude_empty, parse_reduction(reduction), loss_shape,
                          class_sums.options());
}

// grad_loss per group ('none'), or a scalar; grad_map: the focal map's upstream (N, S).
template <bool MAP>
Tensor softmax_backward_cpu(const Tensor& upstream_, const Tensor& input_, const Tensor& target_, const Tensor* coef_,
                            bool per_sample, bool region, bool elem, double focal_alpha, double focal_gamma,
                            std::optional<int64_t> ignore_index) {
  const SoftmaxOperands ops = softmax_operands(input_, target_);
  const Tensor &input = ops.input, &target = ops.target;
  const SoftmaxShape shape(input);
  const int64_t C = shape.classes;
  Tensor grad = at::empty_like(input, ops.format);  // the input's strides: written at the offsets read
  // The focal map's upstream stays in the input's dtype (a full-size map); the per-group one is tiny.
  const Tensor upstream = upstream_.to(MAP ? input.scalar_type() : at::kDouble).contiguous();
  Tensor scaled;  // per-group (c_I, c_P) times the upstream gradient
  double elem_coef = 0;  // c_E: the element term scales the scalar output only
  if (!MAP) {
    const Tensor coef = coef_->to(at::kDouble).contiguous();
    scaled = coef.mul(upstream.reshape({-1, 1})).contiguous();
    elem_coef = coef.const_data_ptr<double>()[2] * upstream.const_data_ptr<double>()[0];  // CPU tensors: no sync
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "softmax_backward_cpu", [&] {
    using input_t = scalar_t;
    using acc_t = at::opmath_type<input_t>;
    dispatch_class_map(target, [&](auto target_tag) {
      using target_t = decltype(target_tag);
      const input_t* x = input.const_data_ptr<input_t>();
      const target_t* y = target.const_data_ptr<target_t>();
      input_t* out = grad.mutable_data_ptr<input_t>();
      const double* c = MAP ? nullptr : scaled.const_data_ptr<double>();
      const input_t* up = MAP ? upstream.const_data_ptr<input_t>() : nullptr;
      for_each_chunk(shape, [&](int64_t sample, int64_t, int64_t first, int64_t n) {
        const int64_t base = sample * ops.sample + first * ops.pixel;
        ChunkSoftmax<acc_t> sm(C);
        sm.compute(x + base, y + sample * shape.spatial + first, C, ops.cls, ops.pixel, n, ignore_index);
        const double* gc = MAP ? nullptr : c + (per_sample ? sample * C : 0) * 3;
        acc_t dot[kPixels] = {}, factor[kPixels] = {};
        if (region && !MAP) {  // dot_i = sum_k p_k g_k, class-major over contiguous pixels
          for (int64_t k = 0; k < C; ++k) {
            const acc_t* row = sm.e.data() + k * kPixels;
            for (int64_t i = 0; i < n; ++i) {
              const acc_t g = (sm.label[i] == k ? acc_t(gc[3 * k]) : acc_t(0)) + acc_t(gc[3 * k + 1]);
              dot[i] += sm.valid[i] ? row[i] / sm.total[i] * g : acc_t(0);
            }
          }
        }
        for (int64_t i = 0; i < n; ++i) {
          if (!sm.valid[i]) continue;
          if (elem || MAP) {
            const auto [log_p_y, rest] = sm.target_terms(x + base, ops.cls, ops.pixel, i);
            const acc_t a = softmax_focal_terms<StdMath>(log_p_y, rest, acc_t(focal_alpha), acc_t(focal_gamma)).dloss;
            factor[i] = a * (MAP ? acc_t(up[sample * shape.spatial + first + i]) : acc_t(elem_coef));
          }
        }
        for (int64_t k = 0; k < C; ++k) {
          for (int64_t i = 0; i < n; ++i) {
            acc_t g = 0;
            if (sm.valid[i]) {
              const acc_t p = sm.e[k * kPixels + i] / sm.total[i];
              const bool hit = sm.label[i] == k;
              if (region && !MAP) g += p * ((hit ? acc_t(gc[3 * k]) : acc_t(0)) + acc_t(gc[3 * k + 1]) - dot[i]);
              if (elem || MAP) g += factor[i] * (p - (hit ? acc_t(1) : acc_t(0)));
            }
            out[base + k * ops.cls + i * ops.pixel] = static_cast<input_t>(g);
          }
        }
      });
    });
  });
  return grad;
}

Tensor softmax_loss_backward_cpu(const Tensor& grad_loss, const Tensor& input, const Tensor& target,
                                 const Tensor& coef, bool per_sample, bool region, bool elem, double focal_alpha,
                                 double focal_gamma, std::optional<int64_t> ignore_index) {
  return softmax_backward_cpu<false>(grad_loss, input, target, &coef, per_sample, region, elem, focal_alpha,
                                     focal_gamma, ignore_index);
}

Tensor softmax_focal_map_backward_cpu(const Tensor& grad_map, const Tensor& input, const Tensor& target,
                                      double alpha, double gamma, std::optional<int64_t> ignore_index) {
  return softmax_backward_cpu<true>(grad_map, input, target, nullptr, false, false, true, alpha, gamma,
                                    ignore_index);
}

Tensor softmax_focal_map_cpu(const Tensor& input_, const Tensor& target_, double alpha, double gamma,
                             std::optional<int64_t> ignore_index) {
  const SoftmaxOperands ops = softmax_operands(input_, target_);
  const Tensor &input = ops.input, &target = ops.target;
  const SoftmaxShape shape(input);
  const int64_t C = shape.classes;
  Tensor out = at::empty(target.sizes(), input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "softmax_focal_map_cpu", [&] {
    using input_t = scalar_t;
    using acc_t = at::opmath_type<input_t>;
    dispatch_class_map(target, [&](auto target_tag) {
      using target_t = decltype(target_tag);
      const input_t* x = input.const_data_ptr<input_t>();
      const target_t* y = target.const_data_ptr<target_t>();
      input_t* o = out.mutable_data_ptr<input_t>();
      for_each_chunk(shape, [&](int64_t sample, int64_t, int64_t first, int64_t n) {
        const int64_t base = sample * ops.sample + first * ops.pixel;
        ChunkSoftmax<acc_t> sm(C);
        sm.compute(x + base, y + sample * shape.spatial + first, C, ops.cls, ops.pixel, n, ignore_index);
        for (int64_t i = 0; i < n; ++i) {
          acc_t loss = 0;
          if (sm.valid[i]) {
            const auto [log_p_y, rest] = sm.target_terms(x + base, ops.cls, ops.pixel, i);
            loss = softmax_focal_terms<StdMath>(log_p_y, rest, acc_t(alpha), acc_t(gamma)).loss;
          }
          o[sample * shape.spatial + first + i] = static_cast<input_t>(loss);
        }
      });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CPU, m) {
  m.impl("softmax_loss", &softmax_loss_cpu);
  m.impl("softmax_loss_backward", &softmax_loss_backward_cpu);
  m.impl("softmax_focal_map", &softmax_focal_map_cpu);
  m.impl("softmax_focal_map_backward", &softmax_focal_map_backward_cpu);
  m.impl("softmax_stats", &softmax_stats_cpu);
  m.impl("softmax_finalize", &softmax_finalize_cpu);
}

}  // namespace fusedloss
