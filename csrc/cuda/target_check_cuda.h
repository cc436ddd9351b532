// check_target on the GPU, folded into the forward kernels: each block writes
// one flag (1: all the targets it read are valid, 0: not), and the host queues
// a device-side assert on their minimum (as F.cross_entropy does): no host
// sync, CUDA-graph safe. Without check_target there is no buffer and no assert.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/empty.h>

#include <cstdint>

#include "../target_check.h"

namespace fusedloss {
namespace {

constexpr const char* kBadProbabilityMessage =
    "fusedloss: target holds a value outside [0, 1] (binary and multi-label targets are probabilities); "
    "set FUSEDLOSS_CHECK_TARGETS=0 to skip this check";
constexpr const char* kBadClassMessage =
    "fusedloss: target holds a class index outside [0, C) that is not ignore_index; "
    "set FUSEDLOSS_CHECK_TARGETS=0 to skip this check";

// One int32 flag per block, or none (check = false: the kernels get nullptr).
class TargetFlags {
 public:
  TargetFlags(bool check, int64_t blocks, const at::Tensor& like) {
    if (check) flags_ = at::empty({blocks}, like.options().dtype(at::kInt));
  }

  int32_t* data() { return flags_.defined() ? flags_.mutable_data_ptr<int32_t>() : nullptr; }

  // Queued after the kernel that wrote the flags (same stream).
  void assert_valid(const char* message) const {
    if (flags_.defined()) at::_assert_async(flags_.amin(), message);
  }

 private:
  at::Tensor flags_;
};

// flags[blockIdx.x] = whether no thread of the block saw a bad target. Every thread
// of the block must call it (flags is the same for all of them: the branch is uniform).
__device__ __forceinline__ void write_block_flag(int32_t* flags, bool bad) {
  const int all_valid = __syncthreads_and(!bad);
  if (threadIdx.x == 0) flags[blockIdx.x] = all_valid ? 1 : 0;
}

}  // namespace
}  // namespace fusedloss
