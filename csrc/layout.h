// How the kernels read input and target, so that channels_last tensors need no
// copy. The rules are fusedloss/_spec.py's (reads_in_place, class_strides),
// which the ops' fake kernels follow too.
//   binary:     in memory order when both are dense with the same strides and the
//               groups stay contiguous blocks, else as contiguous copies;
//   multiclass: logit (n, c, pixel p) at n * sample + c * cls + p * pixel when
//               the input is dense and its spatial dims one run of equal steps
//               (contiguous, channels_last, channels_last_3d), else a
//               contiguous copy; a class map target contiguous, a dense target
//               (the input's shape) read at the input's offsets when it has the
//               input's strides, else both as contiguous copies.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace fusedloss {

// Non-overlapping and dense: a permutation of a contiguous layout.
inline bool dense(const at::Tensor& t) {
  std::vector<int64_t> dims(t.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::stable_sort(dims.begin(), dims.end(), [&](int64_t a, int64_t b) { return t.stride(a) < t.stride(b); });
  int64_t expected = 1;
  for (int64_t d : dims) {
    if (t.size(d) == 1) continue;
    if (t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return true;
}

inline bool reads_in_place(const at::Tensor& input, const at::Tensor& target, bool per_sample, bool per_channel) {
  for (int64_t d = 0; d < input.dim(); ++d) {  // size-1 dims: any stride (an unsqueezed (N, H, W) target)
    if (input.size(d) > 1 && input.stride(d) != target.stride(d)) return false;
  }
  if (!dense(input)) return false;
  if (per_channel) return input.is_contiguous();
  if (per_sample && input.dim() > 0 && input.size(0) > 1) return input.stride(0) * input.size(0) == input.numel();
  return true;
}

struct BinaryOperands {
  at::Tensor input, target;
  at::MemoryFormat format;  // of the outputs: the input's own when read in place
};

inline BinaryOperands binary_operands(const at::Tensor& input, const at::Tensor& target, bool per_sample,
                                      bool per_channel) {
  if (reads_in_place(input, target, per_sample, per_channel)) return {input, target, at::MemoryFormat::Preserve};
  return {input.contiguous(), target.contiguous(), at::MemoryFormat::Contiguous};
}

// A multiclass input (N, C, spatial dims...): `batch` samples of `classes`
// logits per pixel over `spatial` pixels.
struct ClassMapShape {
  int64_t batch, classes, spatial;
  explicit ClassMapShape(const at::Tensor& input)
      : batch(input.size(0)), classes(input.size(1)), spatial(input.numel() / (input.size(0) * input.size(1))) {}
};

// Where logit (n, c, pixel p) lies: n * sample + c * cls + p * pixel.
struct ClassStrides {
  int64_t sample, cls, pixel;
  // Offset of class 0's logit of pixel p of sample n.
  C10_HOST_DEVICE int64_t at(int64_t n, int64_t p) const { return n * sample + p * pixel; }
};

struct MulticlassOperands {
  at::Tensor input, target;
  ClassStrides strides;
  at::MemoryFormat format;  // of the gradient: the input's own when read in place
  bool dense_target;        // (N, C, spatial...) per-class values, at the input's offsets; else (N, S) class indices
};

// Whether the input is dense with its spatial dims one run of equal steps; if so,
// that step in *pixel_stride.
inline bool class_strides(const at::Tensor& input, int64_t* pixel_stride) {
  if (!dense(input)) return false;
  int64_t pixel = 0, expected = 0;
  for (int64_t d = input.dim() - 1; d >= 2; --d) {
    if (input.size(d) == 1) continue;
    if (pixel == 0) {
      pixel = input.stride(d);
    } else if (input.stride(d) != expected) {
      return false;
    }
    expected = input.stride(d) * input.size(d);
  }
  *pixel_stride = pixel == 0 ? 1 : pixel;
  return true;
}

inline MulticlassOperands multiclass_operands(const at::Tensor& input_, const at::Tensor& target) {
  // The Python API says so first; called directly, an empty batch would divide by zero.
  TORCH_CHECK(input_.numel() > 0, "fusedloss: input must not be empty, got sizes ", input_.sizes());
  const bool dense_target = target.dim() == input_.dim();  // _spec.is_dense_target
  bool same_strides = true;                                // size-1 dims: any stride
  if (dense_target) {
    TORCH_CHECK(target.sizes() == input_.sizes(), "fusedloss: a per-class target must have the input's shape ",
                input_.sizes(), ", got ", target.sizes());
    for (int64_t d = 0; d < input_.dim(); ++d) {
      if (input_.size(d) > 1 && input_.stride(d) != target.stride(d)) same_strides = false;
    }
  }
  int64_t pixel = 1;
  if (same_strides && class_strides(input_, &pixel)) {
    return {input_,
            dense_target ? target : target.contiguous(),
            {input_.stride(0), input_.stride(1), pixel},
            at::MemoryFormat::Preserve,
            dense_target};
  }
  const at::Tensor input = input_.contiguous();  // (N, C, S) in order: pixel stride 1
  return {
      input, target.contiguous(), {input.stride(0), input.stride(1), 1}, at::MemoryFormat::Contiguous, dense_target};
}

// The per-pixel shape (N, spatial...) of a multiclass input: the focal map's.
inline std::vector<int64_t> pixel_shape(const at::Tensor& input) {
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.erase(shape.begin() + 1);
  return shape;
}

}  // namespace fusedloss
