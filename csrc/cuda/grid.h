// CUDA launch plans, and the limits they must respect.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

#include "../launch_plan.h"

namespace fusedloss {

inline int sm_count(c10::Device device) { return at::cuda::getDeviceProperties(device.index())->multiProcessorCount; }

// Every kernel gives a row (sample) a block at least: refuse more blocks than a
// grid's x dimension holds (<<<>>> would truncate the count to 32 bits and run a
// fraction of them).
inline void check_grid(int64_t blocks, int64_t rows, const char* what) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "fusedloss: the CUDA kernels need a block per ", what,
              " at least: ", rows, " ", what, "s need ", blocks, " blocks, more than a CUDA grid holds (2^31 - 1); ",
              "use backend='reference', or fewer, longer ", what, "s");
}

// RowChunks (../launch_plan.h) for this device, its grid checked. `what` names a row in the
// error (check_grid).
struct LaunchPlan : RowChunks {
  LaunchPlan(int64_t rows, int64_t steps_per_row, c10::Device device, const char* what)
      : RowChunks(rows, steps_per_row, sm_count(device)) {
    check_grid(blocks, rows, what);
  }
};

}  // namespace fusedloss
