// CUDA kernels of the Lovász primitives (the same arithmetic as
// cpu/lovasz_cpu.cpp, from ../lovasz_math.h; shapes and checks: ../lovasz_layout.h):
//   totals_kernel  one block per (row, chunk of kChunk sorted positions): the
//                  chunk's gathered truth summed in double (a fixed block tree);
//   prefix_kernel  a thread per row: the chunk totals' inclusive prefix, in order
//                  (every chunk's carry, and T);
//   scan_kernel    one block per (row, chunk): steps of kStep positions, each
//                  thread kItems consecutive ones, a cub::BlockScan of the
//                  threads' counts from the chunk's carry; the forward writes a
//                  partial loss per (row, chunk) (summed by torch in a fixed
//                  order), the backward scatters grad_loss[r] * g to the original
//                  positions (each written once: no atomics);
//   errors / chain kernels  one thread per element (binary) or per pixel
//                  (multiclass: loops over the classes, softmax in acc with the
//                  max subtracted).
// 64-bit offsets, the current stream and the input's device, no host sync. With
// check_target, the errors kernels flag bad targets, one flag per block, for a
// device-side assert (target_check_cuda.h).
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../lovasz_layout.h"
#include "../lovasz_math.h"
#include "class_map_reader.h"
#include "grid.h"
#include "target_check_cuda.h"

namespace fusedloss {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
constexpr int kItems = 4;                              // consecutive sorted positions per thread per step
constexpr int64_t kStep = int64_t(kThreads) * kItems;  // positions per block step
constexpr int64_t kStepsPerChunk = 4;
constexpr int64_t kChunk = kStep * kStepsPerChunk;  // sorted positions per (row, chunk) block: fixed

// Values of a floating, bool or uint8 tensor, converted on read (a uniform branch):
// truth (any floating dtype), binary targets and dense multiclass targets.
enum class ValueKind : int { Float, Double, Half, BFloat16, Bool, Byte };

struct ValueReader {
  const void* data;
  ValueKind kind;
  template <typename acc_t>
  __device__ __forceinline__ acc_t read(int64_t i) const {
    switch (kind) {
      case ValueKind::Float: return static_cast<acc_t>(static_cast<const float*>(data)[i]);
      case ValueKind::Double: return static_cast<acc_t>(static_cast<const double*>(data)[i]);
      case ValueKind::Half: return static_cast<acc_t>(static_cast<float>(static_cast<const at::Half*>(data)[i]));
      case ValueKind::BFloat16:
        return static_cast<acc_t>(static_cast<float>(static_cast<const at::BFloat16*>(data)[i]));
      case ValueKind::Bool: return static_cast<const bool*>(data)[i] ? acc_t(1) : acc_t(0);
      default: return static_cast<acc_t>(static_cast<const uint8_t*>(data)[i]);
    }
  }
};

ValueKind value_kind(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ValueKind::Float;
    case at::kDouble: return ValueKind::Double;
    case at::kHalf: return ValueKind::Half;
    case at::kBFloat16: return ValueKind::BFloat16;
    case at::kBool: return ValueKind::Bool;
    default: return ValueKind::Byte;
  }
}

// A binary or dense target (dispatch_probability_target's dtypes).
ValueReader target_reader(const Tensor& target) {
  dispatch_probability_target(target, [](auto) {});  // the dtype check
  return {target.const_data_ptr(), value_kind(target.scalar_type())};
}

// truth: a floating tensor.
ValueReader truth_reader(const Tensor& truth, const char* name) {
  dispatch_input(truth, name, [](auto) {});  // the dtype check
  return {truth.const_data_ptr(), value_kind(truth.scalar_type())};
}

// Calls fn(order_t{}) for order's dtype (int32 or int64: sorted_rows checks it).
template <typename Fn>
void dispatch_order(const Tensor& order, Fn&& fn) {
  if (order.scalar_type() == at::kInt) {
    fn(int32_t{});
  } else {
    fn(int64_t{});
  }
}

// ---- the scan over sorted rows ----

// t_i = truth[row, order[row, pos]] (an order value outside the row: a device assert).
template <typename order_t>
__device__ __forceinline__ double sorted_truth(ValueReader truth, const order_t* order, int64_t row_start, int64_t pos,
                                               int64_t len, int64_t* index) {
  const int64_t k = static_cast<int64_t>(order[row_start + pos]);
  const bool inside = static_cast<uint64_t>(k) < static_cast<uint64_t>(len);
  CUDA_KERNEL_ASSERT(inside && "fusedloss: order holds an index outside its row");
  *index = inside ? k : 0;
  return inside ? truth.read<double>(row_start + k) : 0.0;
}

template <typename order_t>
__global__ void __launch_bounds__(kThreads) totals_kernel(ValueReader truth, const order_t* __restrict__ order,
                                                          double* __restrict__ totals, int64_t len, int64_t chunks) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const int64_t block = blockIdx.x;
  const int64_t row = block / chunks, chunk = block % chunks;
  const int64_t row_start = row * len;
  double sum = 0;
  for (int64_t step = 0; step < kStepsPerChunk; ++step) {
    const int64_t base = chunk * kChunk + step * kStep + int64_t(threadIdx.x) * kItems;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      int64_t index;
      if (base + k < len) sum += sorted_truth(truth, order, row_start, base + k, len, &index);
    }
  }
  const double total = Reduce(storage).Sum(sum);
  if (threadIdx.x == 0) totals[block] = total;
}

// inclusive: per (row, chunk) the count through the chunk (row-major, `chunks` per row).
// Forward (BACKWARD false): partials[block] = sum relu(e_i) g_i over the chunk. Backward:
// grad[row, order[i]] = grad_loss[row] * g_i.
template <typename errors_t, typename order_t, typename grad_t, bool BACKWARD>
__global__ void __launch_bounds__(kThreads)
    scan_kernel(const errors_t* __restrict__ errors, ValueReader truth, const order_t* __restrict__ order,
                const double* __restrict__ inclusive, int64_t len, int64_t chunks, double* __restrict__ partials,
                const double* __restrict__ grad_loss, grad_t* __restrict__ grad) {
  using Scan = cub::BlockScan<double, kThreads>;
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } storage;
  const int64_t block = blockIdx.x;
  const int64_t row = block / chunks, chunk = block % chunks;
  const int64_t row_start = row * len;
  const double* row_counts = inclusive + row * chunks;
  const double total = row_counts[chunks - 1];
  double carry = chunk == 0 ? 0.0 : row_counts[chunk - 1];
  const double scale = BACKWARD ? grad_loss[row] : 0.0;
  double loss = 0;
  for (int64_t step = 0; step < kStepsPerChunk; ++step) {
    const int64_t base = chunk * kChunk + step * kStep + int64_t(threadIdx.x) * kItems;
    double t[kItems];
    int64_t index[kItems];
    double count = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      t[k] = base + k < len ? sorted_truth(truth, order, row_start, base + k, len, &index[k]) : 0.0;
      count += t[k];
    }
    double before, aggregate;
    Scan(storage.scan).ExclusiveSum(count, before, aggregate);
    __syncthreads();  // the storage is reused by the next step
    double c = carry + before;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t pos = base + k;
      if (pos < len) {
        const double g = lovasz_step(total - c, total + static_cast<double>(pos) - c, t[k]);
        if constexpr (BACKWARD) {
          grad[row_start + index[k]] = static_cast<grad_t>(scale * g);
        } else {
          loss += relu_keep_nan(static_cast<double>(errors[row_start + pos])) * g;
        }
      }
      c += t[k];
    }
    carry += aggregate;
  }
  if constexpr (!BACKWARD) {
    const double sum = Reduce(storage.reduce).Sum(loss);
    if (threadIdx.x == 0) partials[block] = sum;
  }
}

// counts (rows, chunks): each row's chunk totals to their inclusive prefix, in place, a
// thread per row summing in order (a few thousand chunks at most per 2^24 positions; torch's
// cumsum on CUDA may combine a float scan's tiles in a varying order).
__global__ void __launch_bounds__(kThreads) prefix_kernel(double* __restrict__ counts, int64_t rows, int64_t chunks) {
  const int64_t row = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (row >= rows) return;
  double* row_counts = counts + row * chunks;
  double c = 0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    c += row_counts[chunk];
    row_counts[chunk] = c;
  }
}

// Per (row, chunk) the truth counted through the chunk: (rows, chunks) doubles.
Tensor chunk_counts(const Tensor& truth, const Tensor& order, int64_t rows, int64_t len, int64_t chunks,
                    const char* name) {
  const int64_t blocks = rows * chunks;
  check_grid(blocks, rows, "row");
  Tensor totals = at::empty({rows, chunks}, truth.options().dtype(at::kDouble));
  const ValueReader reader = truth_reader(truth, name);
  dispatch_order(order, [&](auto order_tag) {
    using order_t = decltype(order_tag);
    totals_kernel<order_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        reader, order.const_data_ptr<order_t>(), totals.mutable_data_ptr<double>(), len, chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  prefix_kernel<<<(rows + kThreads - 1) / kThreads, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      totals.mutable_data_ptr<double>(), rows, chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return totals;
}

std::tuple<Tensor, Tensor> lovasz_rows_cuda(const Tensor& sorted_errors_, const Tensor& truth_, const Tensor& order_) {
  const SortedRows shape = sorted_rows(sorted_errors_, truth_, order_, "sorted_errors");
  const c10::cuda::CUDAGuard device_guard(sorted_errors_.device());
  const Tensor sorted_errors = sorted_errors_.contiguous(), truth = truth_.contiguous(), order = order_.contiguous();
  const std::vector<int64_t> dims = row_dims(sorted_errors);
  dispatch_input(sorted_errors, "lovasz_rows_cuda", [](auto) {});  // the dtype check
  if (shape.rows == 0) {                                           // no rows, or rows of length 0: loss and positives 0
    return {at::zeros(dims, sorted_errors.options()), at::zeros(dims, sorted_errors.options())};
  }
  const int64_t chunks = (shape.len + kChunk - 1) / kChunk;
  const Tensor counts = chunk_counts(truth, order, shape.rows, shape.len, chunks, "lovasz_rows_cuda (truth)");
  Tensor partials = at::empty({shape.rows, chunks}, counts.options());
  const ValueReader reader = truth_reader(truth, "lovasz_rows_cuda (truth)");
  dispatch_input(sorted_errors, "lovasz_rows_cuda", [&](auto errors_tag) {
    using errors_t = decltype(errors_tag);
    dispatch_order(order, [&](auto order_tag) {
      using order_t = decltype(order_tag);
      scan_kernel<errors_t, order_t, double, false>
          <<<shape.rows * chunks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              sorted_errors.const_data_ptr<errors_t>(), reader, order.const_data_ptr<order_t>(),
              counts.const_data_ptr<double>(), shape.len, chunks, partials.mutable_data_ptr<double>(), nullptr,
              nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  const Tensor loss = partials.sum(1).to(sorted_errors.scalar_type()).view(dims);
  const Tensor positives = counts.select(1, chunks - 1).to(sorted_errors.scalar_type()).view(dims);
  return {loss, positives};
}

Tensor lovasz_rows_backward_cuda(const Tensor& grad_loss_, const Tensor& truth_, const Tensor& order_) {
  const SortedRows shape = sorted_rows(truth_, truth_, order_, "truth");
  check_grad_loss(grad_loss_, truth_);
  const c10::cuda::CUDAGuard device_guard(truth_.device());
  const Tensor truth = truth_.contiguous(), order = order_.contiguous();
  Tensor grad = at::empty(truth.sizes(), truth.options());
  const ValueReader reader = truth_reader(truth, "lovasz_rows_backward_cuda (truth)");
  if (shape.rows == 0) return grad;
  const Tensor grad_loss = grad_loss_.to(truth.options().dtype(at::kDouble)).contiguous();
  const int64_t chunks = (shape.len + kChunk - 1) / kChunk;
  const Tensor counts = chunk_counts(truth, order, shape.rows, shape.len, chunks, "lovasz_rows_backward_cuda (truth)");
  dispatch_input(truth, "lovasz_rows_backward_cuda", [&](auto truth_tag) {
    using grad_t = decltype(truth_tag);
    dispatch_order(order, [&](auto order_tag) {
      using order_t = decltype(order_tag);
      scan_kernel<grad_t, order_t, grad_t, true>
          <<<shape.rows * chunks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              nullptr, reader, order.const_data_ptr<order_t>(), counts.const_data_ptr<double>(), shape.len, chunks,
              nullptr, grad_loss.const_data_ptr<double>(), grad.mutable_data_ptr<grad_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return grad;
}

// ---- binary errors and chain: a thread per element ----

// A thread per element or pixel: ceil(count / kThreads) blocks, what a grid holds.
int64_t element_blocks(int64_t count, const char* what) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "fusedloss: ", count, " ", what,
              "s need more CUDA blocks than a grid holds (2^31 - 1); use backend='reference'");
  return blocks;
}

template <typename input_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    binary_errors_kernel(const input_t* __restrict__ x, ValueReader t, acc_t* __restrict__ errors,
                         acc_t* __restrict__ truth, int64_t numel, bool has_ignore, acc_t ignore,
                         int32_t* __restrict__ valid_flags) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  bool bad = false;
  if (i < numel) {
    const acc_t xv = static_cast<acc_t>(x[i]);
    const acc_t tv = t.read<acc_t>(i);
    if (valid_flags != nullptr) bad = has_ignore ? bad_probability(tv, ignore) : bad_probability(tv);
    const bool keep = !(has_ignore && ignored_probability(tv, ignore));
    errors[i] = keep ? binary_lovasz_error(xv, tv) : -std::numeric_limits<acc_t>::infinity();
    truth[i] = keep ? tv : acc_t(0);
  }
  if (valid_flags != nullptr) write_block_flag(valid_flags, bad);
}

template <typename input_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    binary_chain_kernel(const acc_t* __restrict__ grad_errors, const input_t* __restrict__ x, ValueReader t,
                        input_t* __restrict__ grad, int64_t numel, bool has_ignore, acc_t ignore) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= numel) return;
  const acc_t xv = static_cast<acc_t>(x[i]);
  const acc_t tv = t.read<acc_t>(i);
  const bool keep = !(has_ignore && ignored_probability(tv, ignore));
  const acc_t g = binary_lovasz_grad(grad_errors[i], binary_lovasz_error(xv, tv), tv);
  grad[i] = static_cast<input_t>(keep ? g : acc_t(0));
}

template <typename acc_t>
acc_t ignore_value(const std::optional<int64_t>& ignore_index) {
  return ignore_index.has_value() ? static_cast<acc_t>(*ignore_index) : acc_t(0);
}

std::tuple<Tensor, Tensor> binary_lovasz_errors_cuda(const Tensor& input_, const Tensor& target_, bool per_sample,
                                                     std::optional<int64_t> ignore_index, bool check_target) {
  const BinaryRows shape = binary_rows(input_, target_, per_sample);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  Tensor errors = at::empty({shape.groups, shape.len}, accumulation_options(input));
  Tensor truth = at::empty({shape.groups, shape.len}, accumulation_options(input));
  const int64_t numel = input.numel(), blocks = element_blocks(numel, "element");
  const ValueReader t = target_reader(target);
  TargetFlags flags(check_target && target.scalar_type() != at::kBool, blocks, input);  // bool: always valid
  dispatch_input(input, "binary_lovasz_errors_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    binary_errors_kernel<input_t, acc_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        input.const_data_ptr<input_t>(), t, errors.mutable_data_ptr<acc_t>(), truth.mutable_data_ptr<acc_t>(), numel,
        ignore_index.has_value(), ignore_value<acc_t>(ignore_index), flags.data());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  flags.assert_valid(kBadProbabilityMessage);
  return {errors, truth};
}

Tensor binary_lovasz_chain_cuda(const Tensor& grad_errors_, const Tensor& input_, const Tensor& target_,
                                bool per_sample, std::optional<int64_t> ignore_index) {
  const BinaryRows shape = binary_rows(input_, target_, per_sample);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const Tensor grad_errors = grad_errors_of(grad_errors_, {shape.groups, shape.len}, input);
  Tensor grad = at::empty(input.sizes(), input.options());
  const int64_t numel = input.numel(), blocks = element_blocks(numel, "element");
  const ValueReader t = target_reader(target);
  dispatch_input(input, "binary_lovasz_chain_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    binary_chain_kernel<input_t, acc_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad_errors.const_data_ptr<acc_t>(), input.const_data_ptr<input_t>(), t, grad.mutable_data_ptr<input_t>(),
        numel, ignore_index.has_value(), ignore_value<acc_t>(ignore_index));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

// ---- multiclass errors and chain: a thread per pixel, looping over the classes ----

// A pixel's softmax normaliser: the max logit and 1 / sum_c exp(x_c - max) (FROM_LOGITS), and
// its probabilities p_c (softmax in acc_t, or x_c as it is).
template <typename input_t, typename acc_t>
struct PixelProbabilities {
  const input_t* x;  // class 0's value; class c at x[c * spatial]
  int64_t spatial;
  bool from_logits;
  acc_t top = 0, inverse = 1;

  __device__ PixelProbabilities(const input_t* x_, int64_t classes, int64_t spatial_, bool from_logits_)
      : x(x_), spatial(spatial_), from_logits(from_logits_) {
    if (!from_logits) return;
    top = -std::numeric_limits<acc_t>::infinity();
    for (int64_t c = 0; c < classes; ++c) {
      const acc_t v = static_cast<acc_t>(x[c * spatial]);
      top = v > top ? v : top;  // NaN: in the exp below
    }
    acc_t total = 0;
    for (int64_t c = 0; c < classes; ++c) total += StdMath::exp(static_cast<acc_t>(x[c * spatial]) - top);
    inverse = acc_t(1) / total;
  }

  __device__ __forceinline__ acc_t operator()(int64_t c) const {
    const acc_t v = static_cast<acc_t>(x[c * spatial]);
    return from_logits ? StdMath::exp(v - top) * inverse : v;
  }
};

// The pixel's label and t_c: a class map's one-hot, or a dense target's value.
template <bool DENSE>
struct PixelTarget {
  ClassMapReader labels;
  ValueReader values;
  MulticlassRows shape;
  bool has_ignore;
  int64_t ignore_index;

  // The label (dense: 0); *counted: not ignore_index (an unchecked label outside [0, C) counts,
  // its t_c 0 for every class, as the spec's (label == c)); *bad: check_target's verdict.
  __device__ __forceinline__ int64_t label(int64_t pixel, bool* counted, bool* bad) const {
    if constexpr (DENSE) {
      *counted = true;
      return 0;
    } else {
      const int64_t y = labels(pixel);
      *bad = bad_class<int64_t>(y, shape.classes, has_ignore, ignore_index);
      *counted = !(has_ignore && y == ignore_index);
      return y;
    }
  }

  template <typename acc_t>
  __device__ __forceinline__ acc_t at(int64_t label, int64_t offset, int64_t c) const {
    if constexpr (DENSE) {
      return values.read<acc_t>(offset + c * shape.spatial);
    } else {
      return label == c ? acc_t(1) : acc_t(0);
    }
  }
};

template <typename input_t, typename acc_t, bool DENSE>
__global__ void __launch_bounds__(kThreads)
    multiclass_errors_kernel(const input_t* __restrict__ x, PixelTarget<DENSE> target, acc_t* __restrict__ errors,
                             acc_t* __restrict__ truth, bool from_logits, int32_t* __restrict__ valid_flags) {
  const MulticlassRows& shape = target.shape;
  const int64_t pixel = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  bool bad = false;
  if (pixel < shape.batch * shape.spatial) {
    const int64_t n = pixel / shape.spatial, s = pixel % shape.spatial;
    const int64_t offset = n * shape.classes * shape.spatial + s;  // class 0 of the pixel, input (and dense target)
    bool keep = true, bad_label = false;
    const int64_t label = target.label(pixel, &keep, &bad_label);
    const PixelProbabilities<input_t, acc_t> p(x + offset, shape.classes, shape.spatial, from_logits);
    for (int64_t c = 0; c < shape.classes; ++c) {
      const acc_t tc = target.template at<acc_t>(label, offset, c);
      if (DENSE && valid_flags != nullptr) bad |= bad_probability(tc);
      const int64_t out = shape.row_offset(n, c) + s;
      errors[out] = keep ? multiclass_lovasz_error(p(c), tc) : -std::numeric_limits<acc_t>::infinity();
      truth[out] = keep ? tc : acc_t(0);
    }
    bad |= bad_label;
  }
  if (valid_flags != nullptr) write_block_flag(valid_flags, bad);
}

template <typename input_t, typename acc_t, bool DENSE>
__global__ void __launch_bounds__(kThreads)
    multiclass_chain_kernel(const acc_t* __restrict__ grad_errors, const input_t* __restrict__ x,
                            PixelTarget<DENSE> target, input_t* __restrict__ grad, bool from_logits) {
  const MulticlassRows& shape = target.shape;
  const int64_t pixel = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (pixel >= shape.batch * shape.spatial) return;
  const int64_t n = pixel / shape.spatial, s = pixel % shape.spatial;
  const int64_t offset = n * shape.classes * shape.spatial + s;
  bool keep = true, bad_label = false;
  const int64_t label = target.label(pixel, &keep, &bad_label);
  if (!keep) {  // ignored: 0 for every class
    for (int64_t c = 0; c < shape.classes; ++c) grad[offset + c * shape.spatial] = static_cast<input_t>(0);
    return;
  }
  const PixelProbabilities<input_t, acc_t> p(x + offset, shape.classes, shape.spatial, from_logits);
  auto dp = [&](int64_t c, acc_t pc) {
    return multiclass_lovasz_dp(grad_errors[shape.row_offset(n, c) + s], pc,
                                target.template at<acc_t>(label, offset, c));
  };
  acc_t dot = 0;  // sum_k p_k dp_k (softmax only)
  if (from_logits) {
    for (int64_t c = 0; c < shape.classes; ++c) {
      const acc_t pc = p(c);
      dot += pc * dp(c, pc);
    }
  }
  for (int64_t c = 0; c < shape.classes; ++c) {
    const acc_t pc = p(c);
    const acc_t dpc = dp(c, pc);
    grad[offset + c * shape.spatial] = static_cast<input_t>(from_logits ? pc * (dpc - dot) : dpc);
  }
}

// Calls fn(PixelTarget<DENSE>) for the target: a class map or a dense one.
template <typename Fn>
void with_pixel_target(const Tensor& target, const MulticlassRows& shape, const std::optional<int64_t>& ignore_index,
                       Fn&& fn) {
  if (shape.dense) {
    fn(PixelTarget<true>{{nullptr, 8}, target_reader(target), shape, false, 0});
  } else {
    fn(PixelTarget<false>{class_map_reader(target),
                          {nullptr, ValueKind::Float},
                          shape,
                          ignore_index.has_value(),
                          ignore_index.value_or(0)});
  }
}

std::tuple<Tensor, Tensor> multiclass_lovasz_errors_cuda(const Tensor& input_, const Tensor& target_, bool per_sample,
                                                         bool from_logits, std::optional<int64_t> ignore_index,
                                                         bool check_target) {
  const MulticlassRows shape = multiclass_rows(input_, target_, per_sample);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  Tensor errors = at::empty({shape.groups, shape.classes, shape.len}, accumulation_options(input));
  Tensor truth = at::empty({shape.groups, shape.classes, shape.len}, accumulation_options(input));
  const int64_t blocks = element_blocks(shape.batch * shape.spatial, "pixel");
  TargetFlags flags(check_target && target.scalar_type() != at::kBool, blocks, input);  // bool: always valid
  dispatch_input(input, "multiclass_lovasz_errors_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    with_pixel_target(target, shape, ignore_index, [&](auto pixel_target) {
      multiclass_errors_kernel<input_t, acc_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          input.const_data_ptr<input_t>(), pixel_target, errors.mutable_data_ptr<acc_t>(),
          truth.mutable_data_ptr<acc_t>(), from_logits, flags.data());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  flags.assert_valid(shape.dense ? kBadProbabilityMessage : kBadClassMessage);
  return {errors, truth};
}

Tensor multiclass_lovasz_chain_cuda(const Tensor& grad_errors_, const Tensor& input_, const Tensor& target_,
                                    bool per_sample, bool from_logits, std::optional<int64_t> ignore_index) {
  const MulticlassRows shape = multiclass_rows(input_, target_, per_sample);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const Tensor grad_errors = grad_errors_of(grad_errors_, {shape.groups, shape.classes, shape.len}, input);
  Tensor grad = at::empty(input.sizes(), input.options());
  const int64_t blocks = element_blocks(shape.batch * shape.spatial, "pixel");
  dispatch_input(input, "multiclass_lovasz_chain_cuda", [&](auto input_tag) {
    using input_t = decltype(input_tag);
    using acc_t = at::opmath_type<input_t>;
    with_pixel_target(target, shape, ignore_index, [&](auto pixel_target) {
      multiclass_chain_kernel<input_t, acc_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          grad_errors.const_data_ptr<acc_t>(), input.const_data_ptr<input_t>(), pixel_target,
          grad.mutable_data_ptr<input_t>(), from_logits);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CUDA, m) {
  m.impl("binary_lovasz_errors", &binary_lovasz_errors_cuda);
  m.impl("multiclass_lovasz_errors", &multiclass_lovasz_errors_cuda);
  m.impl("lovasz_rows", &lovasz_rows_cuda);
  m.impl("lovasz_rows_backward", &lovasz_rows_backward_cuda);
  m.impl("binary_lovasz_chain", &binary_lovasz_chain_cuda);
  m.impl("multiclass_lovasz_chain", &multiclass_lovasz_chain_cuda);
}

}  // namespace fusedloss
