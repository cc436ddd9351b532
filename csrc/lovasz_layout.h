// The Lovász primitives' shapes (host side), shared by the CPU and CUDA kernels:
// the rows of the scan ops (R..., L), and the (G, L) / (G, C, L) rows of the errors
// and chain ops, with the argument checks that name the argument at fault.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

#include "dispatch.h"  // accumulation_type

namespace fusedloss {

// sorted_errors / truth / order (R..., L): R rows of L sorted positions (R = 0 when L = 0).
struct SortedRows {
  int64_t rows, len;
};

// `first` (named first_name) and, of its shape, truth and order (int32 or int64).
inline SortedRows sorted_rows(const at::Tensor& first, const at::Tensor& truth, const at::Tensor& order,
                              const char* first_name) {
  TORCH_CHECK(first.dim() >= 1, "fusedloss: ", first_name, " must have a row dim (R..., L), got sizes ", first.sizes());
  TORCH_CHECK(truth.sizes() == first.sizes(), "fusedloss: truth must have ", first_name, "'s shape ", first.sizes(),
              ", got ", truth.sizes());
  TORCH_CHECK(order.sizes() == first.sizes(), "fusedloss: order must have ", first_name, "'s shape ", first.sizes(),
              ", got ", order.sizes());
  TORCH_CHECK(order.scalar_type() == at::kInt || order.scalar_type() == at::kLong,
              "fusedloss: order must be int32 or int64, got ", order.scalar_type());
  TORCH_CHECK(truth.device() == first.device() && order.device() == first.device(), "fusedloss: ", first_name,
              ", truth and order must be on one device, got ", first.device(), ", ", truth.device(), " and ",
              order.device());
  const int64_t len = first.size(-1);
  return {len > 0 ? first.numel() / len : 0, len};
}

// The row shape R... of a (R..., L) tensor: the outputs of lovasz_rows, grad_loss of its backward.
inline std::vector<int64_t> row_dims(const at::Tensor& tensor) {
  return std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end() - 1);
}

inline void check_grad_loss(const at::Tensor& grad_loss, const at::Tensor& truth) {
  const std::vector<int64_t> dims = row_dims(truth);
  TORCH_CHECK(grad_loss.sizes() == c10::IntArrayRef(dims), "fusedloss: grad_loss must have truth's row shape ",
              c10::IntArrayRef(dims), ", got ", grad_loss.sizes());
}

// Rows of the binary ops: G = N (per_sample) or 1 rows of L = numel / G elements, in memory order.
struct BinaryRows {
  int64_t groups, len;
};

inline BinaryRows binary_rows(const at::Tensor& input, const at::Tensor& target, bool per_sample) {
  TORCH_CHECK(input.dim() >= 1 && input.numel() > 0, "fusedloss: input must not be empty, got sizes ", input.sizes());
  TORCH_CHECK(target.numel() == input.numel(), "fusedloss: target must have the input's shape ", input.sizes(),
              ", got ", target.sizes());
  const int64_t groups = per_sample ? input.size(0) : 1;
  return {groups, input.numel() / groups};
}

// A multiclass input (N, C, spatial...), read contiguously; its target a class map (N, spatial...)
// or dense (the input's shape). G = N (per_sample) or 1 rows of L = N S / G pixels per class.
struct MulticlassRows {
  int64_t batch, classes, spatial, groups, len;
  bool dense;
  // Offset of sample n's pixel 0, class c, in the (G, C, L) outputs (pixel j = n_local S + s).
  C10_HOST_DEVICE int64_t row_offset(int64_t n, int64_t c) const {
    return groups == 1 ? c * len + n * spatial : (n * classes + c) * len;
  }
};

inline MulticlassRows multiclass_rows(const at::Tensor& input, const at::Tensor& target, bool per_sample) {
  TORCH_CHECK(input.dim() >= 2 && input.numel() > 0,
              "fusedloss: input must be (N, C, spatial...) and not empty, got sizes ", input.sizes());
  const bool dense = target.dim() == input.dim();
  if (dense) {
    TORCH_CHECK(target.sizes() == input.sizes(), "fusedloss: a per-class target must have the input's shape ",
                input.sizes(), ", got ", target.sizes());
  } else {
    std::vector<int64_t> expected(input.sizes().begin(), input.sizes().end());
    expected.erase(expected.begin() + 1);
    TORCH_CHECK(target.sizes() == c10::IntArrayRef(expected), "fusedloss: a class-map target must have sizes ",
                c10::IntArrayRef(expected), " (the input's without the class dim), got ", target.sizes());
  }
  const int64_t batch = input.size(0), classes = input.size(1), spatial = input.numel() / (batch * classes);
  const int64_t groups = per_sample ? batch : 1;
  return {batch, classes, spatial, groups, batch * spatial / groups, dense};
}

// grad_errors as the chain ops read it: `shape`, contiguous, in the input's accumulation dtype.
inline at::Tensor grad_errors_of(const at::Tensor& grad_errors, c10::IntArrayRef shape, const at::Tensor& input) {
  TORCH_CHECK(grad_errors.sizes() == shape, "fusedloss: grad_errors must have sizes ", shape, ", got ",
              grad_errors.sizes());
  return grad_errors.to(accumulation_type(input)).contiguous();
}

}  // namespace fusedloss
