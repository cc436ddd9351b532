// CUDA launch plans, and the limits they must respect.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace fusedloss {

// Every kernel gives a row (sample) a block at least: refuse more blocks than a
// grid's x dimension holds (<<<>>> would truncate the count to 32 bits and run a
// fraction of them).
inline void check_grid(int64_t blocks, int64_t rows, const char* what) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "fusedloss: the CUDA kernels need a block per ", what,
              " at least: ", rows, " ", what, "s need ", blocks, " blocks, more than a CUDA grid holds (2^31 - 1); ",
              "use backend='reference', or fewer, longer ", what, "s");
}

// How `rows` rows of `steps_per_row` steps each (a step: one pass of a block's
// threads) are cut into chunks of `steps` steps, one block per chunk: about 8
// blocks per SM. It depends only on the shape and the device, so the reduction
// order is fixed. `what` names a row in the error (check_grid).
struct LaunchPlan {
  int64_t steps, chunks_per_row, blocks;

  LaunchPlan(int64_t rows, int64_t steps_per_row, c10::Device device, const char* what) {
    const int sms = at::cuda::getDeviceProperties(device.index())->multiProcessorCount;
    const int64_t target_blocks = int64_t(sms) * 8;
    const int64_t even_share = (rows * steps_per_row + target_blocks - 1) / target_blocks;
    steps = std::max<int64_t>(1, std::min(steps_per_row, even_share));
    chunks_per_row = (steps_per_row + steps - 1) / steps;
    blocks = rows * chunks_per_row;
    check_grid(blocks, rows, what);
  }
};

}  // namespace fusedloss
