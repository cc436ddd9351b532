// CPU kernels of the sigmoid-family ops: one pass over input and target per
// direction, at::parallel_for over fixed chunks (so the reduction order, and
// the result, does not depend on the thread count), fp32 lane accumulators the
// compiler can vectorise, chunk partials combined in a fixed order in double.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <array>

#include "../sigmoid_math.h"

namespace fusedloss {
namespace {

constexpr int64_t kChunk = 4096;  // elements per partial sum
constexpr int kLanes = 16;        // independent accumulators within a chunk

using at::Tensor;

template <typename acc_t>
using Stats = std::array<acc_t, 4>;  // I, P, T, E

// Sum I, P, T, E over n elements.
template <bool REGION, bool ELEM, typename acc_t, typename input_t, typename target_t>
Stats<double> chunk_stats(const input_t* x, const target_t* t, int64_t n, acc_t alpha, acc_t gamma) {
  acc_t sum_i[kLanes] = {}, sum_p[kLanes] = {}, sum_t[kLanes] = {}, sum_e[kLanes] = {};
  auto accumulate = [&](int lane, acc_t xv, acc_t tv) {
    const auto s = sigmoid_parts(xv);
    if (REGION) {
      sum_i[lane] += s.p * tv;
      sum_p[lane] += s.p;
      sum_t[lane] += tv;
    }
    if (ELEM) sum_e[lane] += focal_terms(xv, tv, s, alpha, gamma).loss;
  };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int lane = 0; lane < kLanes; ++lane) {
      accumulate(lane, static_cast<acc_t>(x[i + lane]), static_cast<acc_t>(t[i + lane]));
    }
  }
  for (; i < n; ++i) accumulate(0, static_cast<acc_t>(x[i]), static_cast<acc_t>(t[i]));
  Stats<double> out{};
  for (int lane = 0; lane < kLanes; ++lane) {
    out[0] += sum_i[lane];
    out[1] += sum_p[lane];
    out[2] += sum_t[lane];
    out[3] += sum_e[lane];
  }
  return out;
}

// Calls fn with the C++ type of the target's dtype.
template <typename Fn>
void dispatch_target(const Tensor& target, Fn&& fn) {
  switch (target.scalar_type()) {
    case at::kFloat: return fn(float{});
    case at::kDouble: return fn(double{});
    case at::kHalf: return fn(at::Half{});
    case at::kBFloat16: return fn(at::BFloat16{});
    case at::kBool: return fn(bool{});
    case at::kByte: return fn(uint8_t{});
    default: TORCH_CHECK(false, "fusedloss: target must be float, double, half, bfloat16, bool or uint8, got ",
                         target.scalar_type());
  }
}

template <typename Fn>
void dispatch_terms(bool region, bool elem, Fn&& fn) {
  if (region && elem) return fn(std::true_type{}, std::true_type{});
  if (region) return fn(std::true_type{}, std::false_type{});
  return fn(std::false_type{}, std::true_type{});
}

std::tuple<Tensor, Tensor> sigmoid_loss_cpu(const Tensor& input_, const Tensor& target_,
                                            const std::optional<Tensor>& weight, bool per_sample, bool per_channel,
                                            bool region, double tv_alpha, double tv_beta, double smooth,
                                            double region_gamma, double region_weight, bool elem, double focal_alpha,
                                            double focal_gamma, double elem_weight, bool elem_mean,
                                            c10::string_view reduction_name) {
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const SigmoidLossParams lp{region, tv_alpha, tv_beta, smooth, region_gamma, region_weight,
                             elem, focal_alpha, focal_gamma, elem_weight, elem_mean};
  const Reduction reduction = parse_reduction(reduction_name);
  const int64_t chunks_per_row = (layout.row_len + kChunk - 1) / kChunk;
  const int64_t members = layout.rows / layout.num_groups;
  std::vector<Stats<double>> partials(layout.rows * chunks_per_row);

  const auto acc_dtype = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor loss = at::empty(reduction == Reduction::None ? c10::IntArrayRef(layout.shape) : c10::IntArrayRef{},
                          input.options().dtype(acc_dtype));
  Tensor coef = at::empty({layout.num_groups, 3}, input.options().dtype(acc_dtype));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sigmoid_loss_cpu", [&] {
    using input_t = scalar_t;
    using acc_t = at::opmath_type<input_t>;
    dispatch_target(target, [&](auto target_tag) {
      using target_t = decltype(target_tag);
      dispatch_terms(region, elem, [&](auto region_tag, auto elem_tag) {
        const input_t* x = input.data_ptr<input_t>();
        const target_t* t = target.data_ptr<target_t>();
        at::parallel_for(0, layout.rows * chunks_per_row, 1, [&](int64_t begin, int64_t end) {
          for (int64_t job = begin; job < end; ++job) {
            const int64_t row = job / chunks_per_row, chunk = job % chunks_per_row;
            const int64_t start = row * layout.row_len + chunk * kChunk;
            const int64_t n = std::min(kChunk, layout.row_len - chunk * kChunk);
            const int64_t group = row % layout.num_groups, member = row / layout.num_groups;
            partials[(group * members + member) * chunks_per_row + chunk] =
                chunk_stats<decltype(region_tag)::value, decltype(elem_tag)::value, acc_t>(
                    x + start, t + start, n, static_cast<acc_t>(focal_alpha), static_cast<acc_t>(focal_gamma));
          }
        });
      });
    });
  });

  // Combine each group's partials in a fixed order, then the formula, in double.
  const double out_scale = reduction == Reduction::Mean ? 1.0 / layout.num_groups : 1.0;
  const double elem_scale = elem_mean ? elem_weight / double(members * layout.row_len) : elem_weight;
  Tensor weight_d;
  if (weight.has_value()) weight_d = weight->to(at::kDouble).contiguous();
  const int64_t parts_per_group = members * chunks_per_row;
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "sigmoid_loss_cpu_finalize", [&] {
    scalar_t* loss_out = loss.data_ptr<scalar_t>();
    scalar_t* coef_out = coef.data_ptr<scalar_t>();
    for (int64_t g = 0; g < layout.num_groups; ++g) {
      Stats<double> sums{};
      for (int64_t q = 0; q < parts_per_group; ++q) {
        for (int k = 0; k < 4; ++k) sums[k] += partials[g * parts_per_group + q][k];
      }
      const double group_weight = weight_d.defined() ? weight_d.data_ptr<double>()[g % layout.num_channels] : 1.0;
      const auto result = finalize_group<double>(sums[0], sums[1], sums[2], sums[3], group_weight, out_scale,
                                                 elem_scale, lp);
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

Tensor sigmoid_loss_backward_cpu(const Tensor& grad_loss, const Tensor& input_, const Tensor& target_,
                                 const Tensor& coef, bool per_sample, bool per_channel, bool region, bool elem,
                                 double focal_alpha, double focal_gamma) {
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const int64_t chunks_per_row = (layout.row_len + kChunk - 1) / kChunk;
  Tensor grad = at::empty_like(input, at::MemoryFormat::Contiguous);
  // Per-group coefficients times the upstream gradient (scalar or one per group).
  const Tensor scaled = coef.to(at::kDouble).mul(grad_loss.to(at::kDouble).reshape({-1, 1})).contiguous();
  const double* c = scaled.data_ptr<double>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sigmoid_loss_backward_cpu", [&] {
    using input_t = scalar_t;
    using acc_t = at::opmath_type<input_t>;
    dispatch_target(target, [&](auto target_tag) {
      using target_t = decltype(target_tag);
      const input_t* x = input.data_ptr<input_t>();
      const target_t* t = target.data_ptr<target_t>();
      input_t* out = grad.data_ptr<input_t>();
      const acc_t alpha = focal_alpha, gamma = focal_gamma;
      at::parallel_for(0, layout.rows * chunks_per_row, 1, [&](int64_t begin, int64_t end) {
        for (int64_t job = begin; job < end; ++job) {
          const int64_t row = job / chunks_per_row, chunk = job % chunks_per_row;
          const int64_t start = row * layout.row_len + chunk * kChunk;
          const int64_t n = std::min(kChunk, layout.row_len - chunk * kChunk);
          const double* gc = c + 3 * (row % layout.num_groups);
          const acc_t ci = gc[0], cp = gc[1], ce = gc[2];
          for (int64_t i = start; i < start + n; ++i) {
            const acc_t xv = static_cast<acc_t>(x[i]), tv = static_cast<acc_t>(t[i]);
            const auto s = sigmoid_parts(xv);
            acc_t g = 0;
            if (region) g += (ci * tv + cp) * (s.p * s.q);
            if (elem) g += ce * focal_terms(xv, tv, s, alpha, gamma).dloss;
            out[i] = static_cast<input_t>(g);
          }
        }
      });
    });
  });
  return grad;
}

// The per-element focal loss (reduction='none'), and its backward.
template <bool BACKWARD>
Tensor focal_map_cpu(const Tensor* grad_map_, const Tensor& input_, const Tensor& target_, double focal_alpha,
                     double focal_gamma) {
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const Tensor grad_map = BACKWARD ? grad_map_->contiguous() : Tensor();
  Tensor out = at::empty_like(input, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sigmoid_focal_map_cpu", [&] {
    using input_t = scalar_t;
    using acc_t = at::opmath_type<input_t>;
    dispatch_target(target, [&](auto target_tag) {
      using target_t = decltype(target_tag);
      const input_t* x = input.data_ptr<input_t>();
      const target_t* t = target.data_ptr<target_t>();
      const input_t* upstream = BACKWARD ? grad_map.data_ptr<input_t>() : nullptr;
      input_t* o = out.data_ptr<input_t>();
      const acc_t alpha = focal_alpha, gamma = focal_gamma;
      at::parallel_for(0, input.numel(), kChunk, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const acc_t xv = static_cast<acc_t>(x[i]), tv = static_cast<acc_t>(t[i]);
          const auto terms = focal_terms(xv, tv, sigmoid_parts(xv), alpha, gamma);
          o[i] = static_cast<input_t>(BACKWARD ? static_cast<acc_t>(upstream[i]) * terms.dloss : terms.loss);
        }
      });
    });
  });
  return out;
}

Tensor sigmoid_focal_map_cpu(const Tensor& input, const Tensor& target, double alpha, double gamma) {
  return focal_map_cpu<false>(nullptr, input, target, alpha, gamma);
}

Tensor sigmoid_focal_map_backward_cpu(const Tensor& grad_map, const Tensor& input, const Tensor& target,
                                      double alpha, double gamma) {
  return focal_map_cpu<true>(&grad_map, input, target, alpha, gamma);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CPU, m) {
  m.impl("sigmoid_loss", &sigmoid_loss_cpu);
  m.impl("sigmoid_loss_backward", &sigmoid_loss_backward_cpu);
  m.impl("sigmoid_focal_map", &sigmoid_focal_map_cpu);
  m.impl("sigmoid_focal_map_backward", &sigmoid_focal_map_backward_cpu);
}

}  // namespace fusedloss
