// How the sigmoid kernels read input and target: in memory order when both are
// dense with the same strides and the groups stay contiguous blocks (so a
// channels_last tensor needs no copy), else as contiguous copies. The rule is
// fusedloss/_spec.py's reads_in_place, which the ops' fake kernels follow too.
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

struct SigmoidOperands {
  at::Tensor input, target;
  at::MemoryFormat format;  // of the outputs: the input's own when read in place
};

inline SigmoidOperands sigmoid_operands(const at::Tensor& input, const at::Tensor& target, bool per_sample,
                                        bool per_channel) {
  if (reads_in_place(input, target, per_sample, per_channel)) return {input, target, at::MemoryFormat::Preserve};
  return {input.contiguous(), target.contiguous(), at::MemoryFormat::Contiguous};
}

}  // namespace fusedloss
