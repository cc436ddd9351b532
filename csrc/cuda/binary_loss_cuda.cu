// CUDA kernels of the binary ops (the same arithmetic as the CPU
// kernels, from ../loss_math.h):
//   stats_kernel     one block per (row, chunk): one read of input and target,
//                    block-reduced partial sums [I, P, T, E, count] (warp shuffles,
//                    then shared memory: a fixed tree, no atomics);
//   (torch sums each group's block partials: a parallel fixed-order reduction)
//   finalize_kernel  one block: the formula per group (a thread each), then
//                    thread 0 reduces the groups in order;
//   backward_kernel  one block per (row, chunk): re-reads, recomputes p,
//                    writes dL/dx;
//   focal_map_kernel the per-element focal loss (reduction='none') and its backward.
// The input mode (logits / torch.sigmoid then clamped logs / probabilities) and
// whether there is an ignore_index (IGNORE: elements whose target equals it count
// nowhere, gradient and focal map 0) are template arguments of the per-element
// kernels, and so is min_intersection (MIN) of the statistics and backward kernels,
// and whether the element term has a focal form (focal_form 1 or 2: FORMS, the form a
// uniform branch; FORM of the focal map kernel); the other options are uniform branches.
// 64-bit offsets, the current stream and the input's device, no host sync.
// With check_target, the forward kernels (stats, focal map) also flag targets
// outside [0, 1], one flag per block, for a device-side assert (target_check_cuda.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <type_traits>

#include "../dispatch.h"
#include "../layout.h"
#include "../loss_math.h"
#include "grid.h"
#include "target_check_cuda.h"

namespace fusedloss {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // loads in flight per thread per step
constexpr int64_t kStep = int64_t(kThreads) * kUnroll;
constexpr int kSums = 5;  // per group: I, P, T, E, elements counted

// Reads the target in its own dtype (a uniform branch; no converted copy and
// six times fewer kernel instantiations than a template parameter).
enum class TargetKind : int { Float, Double, Half, BFloat16, Byte };

struct TargetReader {
  const void* data;
  TargetKind kind;
  template <typename acc_t>
  __device__ __forceinline__ acc_t operator()(int64_t i) const {
    switch (kind) {
      case TargetKind::Float: return static_cast<acc_t>(static_cast<const float*>(data)[i]);
      case TargetKind::Double: return static_cast<acc_t>(static_cast<const double*>(data)[i]);
      case TargetKind::Half: return static_cast<acc_t>(static_cast<const at::Half*>(data)[i]);
      case TargetKind::BFloat16: return static_cast<acc_t>(static_cast<const at::BFloat16*>(data)[i]);
      default: return static_cast<acc_t>(static_cast<const uint8_t*>(data)[i]);  // uint8 and bool
    }
  }
};

TargetReader target_reader(const Tensor& target) {
  switch (target.scalar_type()) {
    case at::kFloat: return {target.const_data_ptr(), TargetKind::Float};
    case at::kDouble: return {target.const_data_ptr(), TargetKind::Double};
    case at::kHalf: return {target.const_data_ptr(), TargetKind::Half};
    case at::kBFloat16: return {target.const_data_ptr(), TargetKind::BFloat16};
    case at::kByte:
    case at::kBool: return {target.const_data_ptr(), TargetKind::Byte};
    default:
      TORCH_CHECK(false, "fusedloss: target must be float, double, half, bfloat16, bool or uint8, got ",
                  target.scalar_type());
  }
}

// The groups' rows cut into chunks of plan.steps * kStep elements (grid.h).
LaunchPlan launch_plan(const GroupLayout& layout, const Tensor& input) {
  return LaunchPlan(layout.rows, (layout.row_len + kStep - 1) / kStep, input.device(), "row");
}

template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value, acc_t* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared is reused by consecutive calls
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  acc_t total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  }
  return total;  // valid in thread 0
}

// IGNORE: whether the element counts (its target is not ignore_index); an ignored one
// then reads as x = t = 0, so whatever its input holds (NaN, inf) reaches no sum or
// gradient, and its terms are masked. Without IGNORE, true (as cpu/binary_loss_cpu.cpp).
template <bool IGNORE, typename acc_t>
__device__ __forceinline__ bool counted(acc_t& x, acc_t& t, acc_t ignore) {
  if constexpr (IGNORE) {
    const bool keep = !ignored_probability(t, ignore);
    x = keep ? x : acc_t(0);
    t = keep ? t : acc_t(0);
    return keep;
  } else {
    return true;
  }
}

// The element term: with FORMS (logits, gamma != 0, focal_form 1 or 2: with_focal_forms) the
// form `form` (smp's or MONAI's), else Lin et al.'s (today's code).
template <BinaryInput INPUT, bool FORMS, typename acc_t>
__device__ __forceinline__ FocalTerms<acc_t> element_terms(acc_t x, acc_t t, const BinaryProbability<acc_t>& s,
                                                           acc_t alpha, acc_t gamma, int form) {
  if constexpr (FORMS && INPUT == kLogitBce) {
    if (form == kFocalSmp) return binary_element_terms<StdMath, INPUT, true, kFocalSmp>(x, t, s, alpha, gamma);
    return binary_element_terms<StdMath, INPUT, true, kFocalMonai>(x, t, s, alpha, gamma);
  } else {
    return binary_element_terms<StdMath, INPUT, true>(x, t, s, alpha, gamma);
  }
}

// INPUT: how the input becomes p and which BCE the element term is (loss_math.h). MIN:
// min_intersection, I = sum(min(p, t)); FORMS: a focal form (kernels of their own: the
// default one is unchanged).
template <typename input_t, typename acc_t, BinaryInput INPUT, bool IGNORE, bool MIN, bool FORMS>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const input_t* __restrict__ x, TargetReader t, acc_t* __restrict__ partials, int64_t row_len,
                 int64_t chunks_per_row, int64_t num_groups, int64_t members, int64_t steps, LossParams lp,
                 acc_t ignore, int32_t* __restrict__ valid_flags) {
  __shared__ acc_t shared[kThreads / 32];
  const int64_t block = blockIdx.x;
  const int64_t row = block / chunks_per_row, chunk = block % chunks_per_row;
  const int64_t row_start = row * row_len;
  const int64_t chunk_start = chunk * steps * kStep;
  const acc_t alpha = lp.focal_alpha, gamma = lp.focal_gamma;
  const bool squared = lp.squared_pred;
  const bool check = valid_flags != nullptr;
  bool bad = false;
  acc_t sum_i = 0, sum_p = 0, sum_t = 0, sum_e = 0, count = 0;
  for (int64_t step = 0; step < steps; ++step) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t offset = chunk_start + step * kStep + int64_t(u) * kThreads + threadIdx.x;
      if (offset < row_len) {
        acc_t xv = static_cast<acc_t>(x[row_start + offset]);
        acc_t tv = t.template operator()<acc_t>(row_start + offset);
        if (check) bad |= IGNORE ? bad_probability(tv, ignore) : bad_probability(tv);
        const bool keep = counted<IGNORE>(xv, tv, ignore);
        if (IGNORE) count += keep ? acc_t(1) : acc_t(0);
        const auto s = binary_probability<StdMath, INPUT>(xv);
        if (lp.region) {
          sum_i += intersection_share<MIN>(s.p, tv);  // tv = 0 where ignored (x = 0: p >= 0)
          const acc_t share_p = squared ? region_share<true>(s.p) : s.p;
          sum_p += keep ? share_p : acc_t(0);
          sum_t += squared ? region_share<true>(tv) : tv;
        }
        if (lp.elem) {
          const acc_t loss = element_terms<INPUT, FORMS>(xv, tv, s, alpha, gamma, lp.focal_form).loss;
          sum_e += keep ? loss : acc_t(0);
        }
      }
    }
  }
  const int64_t group = row % num_groups, member = row / num_groups;
  acc_t* slot = partials + ((group * members + member) * chunks_per_row + chunk) * kSums;
  const acc_t totals[4] = {block_sum(sum_i, shared), block_sum(sum_p, shared), block_sum(sum_t, shared),
                           block_sum(sum_e, shared)};
  // Without IGNORE every element of the chunk counts: no per-element work.
  const int64_t chunk_len = row_len - chunk_start < steps * kStep ? row_len - chunk_start : steps * kStep;
  const acc_t counted_total = IGNORE ? block_sum(count, shared) : static_cast<acc_t>(chunk_len);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 4; ++k) slot[k] = totals[k];
    slot[4] = counted_total;
  }
  if (check) write_block_flag(valid_flags, bad);
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    finalize_kernel(const acc_t* __restrict__ sums, const acc_t* __restrict__ weight,
                    acc_t* group_losses,  // is `loss` for 'none'
                    acc_t* loss, acc_t* __restrict__ coef, int64_t num_groups, int64_t num_channels, LossParams lp,
                    Reduction reduction) {
  for (int64_t g = threadIdx.x; g < num_groups; g += kThreads) {
    const acc_t* s = sums + kSums * g;  // I, P, T, E, count
    const LossScales<acc_t> scales = binary_scales<acc_t>(num_groups, s[4], lp, reduction);
    const acc_t group_weight = weight != nullptr ? weight[g % num_channels] : acc_t(1);
    const auto r = finalize_group<acc_t>(s[0], s[1], s[2], s[3], group_weight, scales.out_scale, scales.elem_scale, lp);
    group_losses[g] = r.loss;
    coef[3 * g + 0] = r.coef_i;
    coef[3 * g + 1] = r.coef_p;
    coef[3 * g + 2] = r.coef_e;
  }
  if (reduction == Reduction::None) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = 0;
    for (int64_t g = 0; g < num_groups; ++g) total += group_losses[g];
    loss[0] = total * binary_scales<acc_t>(num_groups, acc_t(1), lp, reduction).out_scale;
  }
}

template <typename input_t, typename acc_t, BinaryInput INPUT, bool IGNORE, bool MIN, bool FORMS>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const input_t* __restrict__ x, TargetReader t, const acc_t* __restrict__ coef,
                    const acc_t* __restrict__ grad_loss, int64_t grad_loss_group_stride, input_t* __restrict__ grad,
                    int64_t row_len, int64_t chunks_per_row, int64_t num_groups, int64_t steps, LossParams lp,
                    acc_t ignore) {
  const int64_t block = blockIdx.x;
  const int64_t row = block / chunks_per_row, chunk = block % chunks_per_row;
  const int64_t group = row % num_groups;
  const acc_t upstream = grad_loss[group * grad_loss_group_stride];
  const acc_t ci = coef[3 * group] * upstream, cp = coef[3 * group + 1] * upstream;
  const acc_t ce = coef[3 * group + 2] * upstream;
  const acc_t alpha = lp.focal_alpha, gamma = lp.focal_gamma;
  const bool squared = lp.squared_pred;
  const int64_t row_start = row * row_len;
  const int64_t chunk_start = chunk * steps * kStep;
  for (int64_t step = 0; step < steps; ++step) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t offset = chunk_start + step * kStep + int64_t(u) * kThreads + threadIdx.x;
      if (offset < row_len) {
        const int64_t i = row_start + offset;
        acc_t xv = static_cast<acc_t>(x[i]);
        acc_t tv = t.template operator()<acc_t>(i);
        const bool keep = counted<IGNORE>(xv, tv, ignore);
        const auto s = binary_probability<StdMath, INPUT>(xv);
        acc_t g = 0;
        if (lp.region) {
          g += (squared ? region_dp<true, MIN>(ci, cp, tv, s.p) : region_dp<false, MIN>(ci, cp, tv, s.p)) * s.dp_dx;
        }
        if (lp.elem) g += ce * element_terms<INPUT, FORMS>(xv, tv, s, alpha, gamma, lp.focal_form).dloss;
        grad[i] = static_cast<input_t>(keep ? g : acc_t(0));
      }
    }
  }
}

// FORM: the focal form (FocalForm; != kFocalLin with logits and gamma != 0 only).
template <typename input_t, typename acc_t, BinaryInput INPUT, bool IGNORE, bool BACKWARD, int FORM>
__global__ void __launch_bounds__(kThreads)
    focal_map_kernel(const input_t* __restrict__ x, TargetReader t, const input_t* __restrict__ upstream,
                     input_t* __restrict__ out, int64_t numel, acc_t alpha, acc_t gamma, acc_t ignore,
                     int32_t* __restrict__ valid_flags) {
  const bool check = !BACKWARD && valid_flags != nullptr;  // the forward checks the target, not the backward
  bool bad = false;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < numel; i += stride) {
    acc_t xv = static_cast<acc_t>(x[i]);
    acc_t tv = t.template operator()<acc_t>(i);
    if (check) bad |= IGNORE ? bad_probability(tv, ignore) : bad_probability(tv);
    const bool keep = counted<IGNORE>(xv, tv, ignore);
    const auto terms =
        binary_element_terms<StdMath, INPUT, true, FORM>(xv, tv, binary_probability<StdMath, INPUT>(xv), alpha, gamma);
    // A NaN upstream at an ignored element gives 0 too.
    const acc_t value = BACKWARD ? static_cast<acc_t>(upstream[i]) * terms.dloss : terms.loss;
    out[i] = static_cast<input_t>(keep ? value : acc_t(0));
  }
  if (check) write_block_flag(valid_flags, bad);
}

// ignore_index as the kernels take it: in acc_t (read with IGNORE only).
template <typename acc_t>
acc_t ignore_value(const std::optional<int64_t>& ignore_index) {
  return ignore_index.has_value() ? static_cast<acc_t>(*ignore_index) : acc_t(0);
}

// Calls fn(std::integral_constant<bool, IGNORE>{}) for whether there is an ignore_index.
template <typename Fn>
void with_ignore(const std::optional<int64_t>& ignore_index, Fn&& fn) {
  if (ignore_index.has_value()) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

// Calls fn(std::integral_constant<bool, MIN>{}) for whether the region term's I is sum(min(p, t)).
template <typename Fn>
void with_min_intersection(const LossParams& lp, Fn&& fn) {
  if (lp.region && lp.min_intersection) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

// Calls fn(std::integral_constant<bool, FORMS>{}) for whether the element term has a focal form
// (focal_form 1 or 2 with gamma != 0; LossParams allows them with logits only, INPUT kLogitBce).
template <BinaryInput INPUT, typename Fn>
void with_focal_forms(const LossParams& lp, Fn&& fn) {
  if constexpr (INPUT == kLogitBce) {
    if (lp.elem && lp.focal_gamma != 0 && lp.focal_form != kFocalLin) {
      fn(std::true_type{});
      return;
    }
  }
  fn(std::false_type{});
}

// The forward in two halves, also used on their own for statistics summed across
// processes (ops/synced.py): the stats kernel, then each group's block partials
// summed by torch (a fixed-order, parallel reduction: no atomics, and no single
// thread walking a thousand partials); then the finalize kernel on those sums.
// lp: LossParams::per_element.
Tensor stats(const Tensor& input_, const Tensor& target_, bool per_sample, bool per_channel, const LossParams& lp,
             const std::optional<int64_t>& ignore_index, bool check_target) {
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const BinaryOperands operands = binary_operands(input_, target_, per_sample, per_channel);
  const Tensor &input = operands.input, &target = operands.target;
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const LaunchPlan plan = launch_plan(layout, input);
  const int64_t members = layout.rows / layout.num_groups;
  Tensor partials = at::empty({plan.blocks, kSums}, accumulation_options(input));
  // A bool target cannot leave [0, 1].
  TargetFlags flags(check_target && target.scalar_type() != at::kBool, plan.blocks, input);
  dispatch_input(input, "binary_stats_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    with_binary_input(binary_input(lp), [&](auto mode) {
      with_ignore(ignore_index, [&](auto ignored) {
        with_min_intersection(lp, [&](auto min_i) {
          with_focal_forms<decltype(mode)::value>(lp, [&](auto forms) {
            stats_kernel<input_t, acc_t, decltype(mode)::value, decltype(ignored)::value, decltype(min_i)::value,
                         decltype(forms)::value><<<plan.blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                input.const_data_ptr<input_t>(), target_reader(target), partials.mutable_data_ptr<acc_t>(),
                layout.row_len, plan.chunks_per_row, layout.num_groups, members, plan.steps, lp,
                ignore_value<acc_t>(ignore_index), flags.data());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });
      });
    });
  });
  flags.assert_valid(kBadProbabilityMessage);
  return partials.view({layout.num_groups, members * plan.chunks_per_row, kSums}).sum(1);
}

std::tuple<Tensor, Tensor> finalize(const Tensor& sums_, const std::optional<Tensor>& weight, int64_t num_channels,
                                    const LossParams& lp, Reduction reduction, c10::IntArrayRef loss_shape) {
  const c10::cuda::CUDAGuard device_guard(sums_.device());
  TORCH_CHECK(sums_.dim() == 2 && sums_.size(1) == kSums, "fusedloss: sums must be (groups, 5), got ", sums_.sizes());
  const at::ScalarType acc_dtype = accumulation_type(sums_);
  const Tensor sums = sums_.to(acc_dtype).contiguous();
  const int64_t num_groups = sums.size(0);
  Tensor group_losses = at::empty({num_groups}, sums.options());
  Tensor loss = reduction == Reduction::None ? group_losses.view(loss_shape) : at::empty({}, sums.options());
  Tensor coef = at::empty({num_groups, 3}, sums.options());
  Tensor weight_acc;
  if (weight.has_value()) weight_acc = weight->to(sums.options()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "binary_finalize_cuda", [&] {
    finalize_kernel<scalar_t><<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        sums.const_data_ptr<scalar_t>(), weight_acc.defined() ? weight_acc.const_data_ptr<scalar_t>() : nullptr,
        group_losses.mutable_data_ptr<scalar_t>(), loss.mutable_data_ptr<scalar_t>(), coef.mutable_data_ptr<scalar_t>(),
        num_groups, num_channels, lp, reduction);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, coef};
}

Tensor binary_stats_cuda(const Tensor& input, const Tensor& target, bool per_sample, bool per_channel, bool region,
                         bool squared_pred, bool min_intersection, bool elem, double focal_alpha, double focal_gamma,
                         int64_t focal_form, bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index,
                         bool check_target) {
  return stats(input, target, per_sample, per_channel,
               LossParams::per_element(region, squared_pred, min_intersection, elem, focal_alpha, focal_gamma,
                                       from_logits, clamped_log, focal_form),
               ignore_index, check_target);
}

std::tuple<Tensor, Tensor> binary_finalize_cuda(const Tensor& sums, const std::optional<Tensor>& weight,
                                                int64_t num_channels, bool region, double tv_alpha, double tv_beta,
                                                double smooth_nr, double smooth_dr, double region_gamma,
                                                double region_weight, bool log_loss, bool elem, double elem_weight,
                                                bool elem_mean, c10::string_view reduction,
                                                c10::IntArrayRef loss_shape) {
  return finalize(sums, weight, num_channels,
                  LossParams::for_finalize(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight,
                                           log_loss, elem, elem_weight, elem_mean),
                  parse_reduction(reduction), loss_shape);
}

// label_smoothing and weighted_mean are multiclass options: taken (the loss ops take the
// whole LossSpec) and ignored.
std::tuple<Tensor, Tensor> binary_loss_cuda(const Tensor& input, const Tensor& target,
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
  const Tensor sums = stats(input, target, per_sample, per_channel, lp, ignore_index, check_target);
  return finalize(sums, weight, layout.num_channels, lp, parse_reduction(reduction), layout.shape);
}

Tensor binary_loss_backward_cuda(const Tensor& grad_loss_, const Tensor& input_, const Tensor& target_,
                                 const Tensor& coef_, bool per_sample, bool per_channel, bool region, bool squared_pred,
                                 bool min_intersection, bool elem, double focal_alpha, double focal_gamma,
                                 int64_t focal_form, bool from_logits, bool clamped_log,
                                 std::optional<int64_t> ignore_index) {
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const BinaryOperands operands = binary_operands(input_, target_, per_sample, per_channel);
  const Tensor &input = operands.input, &target = operands.target;
  const GroupLayout layout = group_layout(input.sizes(), per_sample, per_channel);
  const at::ScalarType acc_dtype = accumulation_type(input);
  const Tensor coef = coef_.to(acc_dtype).contiguous();  // (groups, 3), read by index
  TORCH_CHECK(coef.numel() == layout.num_groups * 3, "fusedloss: coef must be (groups, 3), got ", coef_.sizes());
  const Tensor grad_loss = grad_loss_.to(acc_dtype).contiguous();
  const LaunchPlan plan = launch_plan(layout, input);
  const LossParams lp = LossParams::per_element(region, squared_pred, min_intersection, elem, focal_alpha, focal_gamma,
                                                from_logits, clamped_log, focal_form);
  Tensor grad = at::empty_like(input, operands.format);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_input(input, "binary_loss_backward_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    with_binary_input(binary_input(lp), [&](auto mode) {
      with_ignore(ignore_index, [&](auto ignored) {
        with_min_intersection(lp, [&](auto min_i) {
          with_focal_forms<decltype(mode)::value>(lp, [&](auto forms) {
            backward_kernel<input_t, acc_t, decltype(mode)::value, decltype(ignored)::value, decltype(min_i)::value,
                            decltype(forms)::value><<<plan.blocks, kThreads, 0, stream>>>(
                input.const_data_ptr<input_t>(), target_reader(target), coef.const_data_ptr<acc_t>(),
                grad_loss.const_data_ptr<acc_t>(), grad_loss.dim() > 0 ? 1 : 0, grad.mutable_data_ptr<input_t>(),
                layout.row_len, plan.chunks_per_row, layout.num_groups, plan.steps, lp,
                ignore_value<acc_t>(ignore_index));
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });
      });
    });
  });
  return grad;
}

// The focal map kernel for lp's focal form: FORM != kFocalLin with logits and gamma != 0 only.
template <typename input_t, typename acc_t, BinaryInput INPUT, bool IGNORE, bool BACKWARD>
void launch_focal_map(const LossParams& lp, int64_t blocks, cudaStream_t stream, const input_t* x, TargetReader t,
                      const input_t* upstream, input_t* out, int64_t numel, acc_t ignore, int32_t* valid_flags) {
  const acc_t alpha = static_cast<acc_t>(lp.focal_alpha), gamma = static_cast<acc_t>(lp.focal_gamma);
  if constexpr (INPUT == kLogitBce) {
    if (lp.focal_gamma != 0 && lp.focal_form == kFocalSmp) {
      focal_map_kernel<input_t, acc_t, INPUT, IGNORE, BACKWARD, kFocalSmp>
          <<<blocks, kThreads, 0, stream>>>(x, t, upstream, out, numel, alpha, gamma, ignore, valid_flags);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    if (lp.focal_gamma != 0 && lp.focal_form == kFocalMonai) {
      focal_map_kernel<input_t, acc_t, INPUT, IGNORE, BACKWARD, kFocalMonai>
          <<<blocks, kThreads, 0, stream>>>(x, t, upstream, out, numel, alpha, gamma, ignore, valid_flags);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  focal_map_kernel<input_t, acc_t, INPUT, IGNORE, BACKWARD, kFocalLin>
      <<<blocks, kThreads, 0, stream>>>(x, t, upstream, out, numel, alpha, gamma, ignore, valid_flags);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool BACKWARD>
Tensor focal_map_cuda(const Tensor* grad_map_, const Tensor& input_, const Tensor& target_, const LossParams& lp,
                      const std::optional<int64_t>& ignore_index, bool check_target) {
  TORCH_CHECK(input_.numel() > 0, "fusedloss: input must not be empty, got sizes ", input_.sizes());  // as the CPU's
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const BinaryOperands operands = binary_operands(input_, target_, false, false);
  const Tensor &input = operands.input, &target = operands.target;
  Tensor out = at::empty_like(input, operands.format);
  // The upstream map is read in the input's memory order.
  Tensor upstream;
  if (BACKWARD) {
    const bool as_is = grad_map_->strides() == out.strides() && grad_map_->scalar_type() == out.scalar_type();
    upstream = as_is ? *grad_map_ : at::empty_like(out).copy_(*grad_map_);
  }
  const int64_t numel = input.numel();
  const int sms = at::cuda::getDeviceProperties(input.device().index())->multiProcessorCount;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((numel + kThreads - 1) / kThreads, int64_t(sms) * 16));
  const auto stream = at::cuda::getCurrentCUDAStream();
  TargetFlags flags(!BACKWARD && check_target && target.scalar_type() != at::kBool, blocks, input);
  dispatch_input(input, "binary_focal_map_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    with_binary_input(binary_input(lp), [&](auto mode) {
      with_ignore(ignore_index, [&](auto ignored) {
        launch_focal_map<input_t, acc_t, decltype(mode)::value, decltype(ignored)::value, BACKWARD>(
            lp, blocks, stream, input.const_data_ptr<input_t>(), target_reader(target),
            BACKWARD ? upstream.const_data_ptr<input_t>() : nullptr, out.mutable_data_ptr<input_t>(), numel,
            ignore_value<acc_t>(ignore_index), flags.data());
      });
    });
  });
  flags.assert_valid(kBadProbabilityMessage);
  return out;
}

Tensor binary_focal_map_cuda(const Tensor& input, const Tensor& target, double alpha, double gamma, int64_t focal_form,
                             bool from_logits, bool clamped_log, std::optional<int64_t> ignore_index,
                             bool check_target) {
  return focal_map_cuda<false>(nullptr, input, target,
                               LossParams::focal_map(alpha, gamma, from_logits, clamped_log, focal_form), ignore_index,
                               check_target);
}

Tensor binary_focal_map_backward_cuda(const Tensor& grad_map, const Tensor& input, const Tensor& target, double alpha,
                                      double gamma, int64_t focal_form, bool from_logits, bool clamped_log,
                                      std::optional<int64_t> ignore_index) {
  return focal_map_cuda<true>(&grad_map, input, target,
                              LossParams::focal_map(alpha, gamma, from_logits, clamped_log, focal_form), ignore_index,
                              false);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CUDA, m) {
  m.impl("binary_loss", &binary_loss_cuda);
  m.impl("binary_loss_backward", &binary_loss_backward_cuda);
  m.impl("binary_focal_map", &binary_focal_map_cuda);
  m.impl("binary_focal_map_backward", &binary_focal_map_backward_cuda);
  m.impl("binary_stats", &binary_stats_cuda);
  m.impl("binary_finalize", &binary_finalize_cuda);
}

}  // namespace fusedloss
