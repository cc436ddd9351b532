// The CUDA kernels' launch plans as plain arithmetic on the shape, the dtypes' sizes and
// the GPU's SM count: no CUDA headers, so the CPU build compiles them too and the tests
// read the plans a GPU would get (fusedloss._C.cuda_multiclass_plan,
// tests/test_cuda_launch_plans.py). cuda/grid.h adds the device's SM count and the grid check.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace fusedloss {

// How `rows` rows of `steps_per_row` steps each (a step: one pass of a block's threads)
// are cut into chunks of `steps` steps, one block per chunk: about 8 blocks per SM, a chunk
// holding min_steps to max_steps steps where the row has them (max_steps wins). It depends
// only on the shape and the device, so the reduction order is fixed.
struct RowChunks {
  int64_t steps, chunks_per_row, blocks;

  RowChunks(int64_t rows, int64_t steps_per_row, int sms, int64_t min_steps = 1,
            int64_t max_steps = std::numeric_limits<int64_t>::max()) {
    const int64_t target_blocks = int64_t(sms) * 8;
    const int64_t even_share = (rows * steps_per_row + target_blocks - 1) / target_blocks;
    steps = std::max<int64_t>(1, std::min({steps_per_row, std::max(even_share, min_steps), max_steps}));
    chunks_per_row = (steps_per_row + steps - 1) / steps;
    blocks = rows * chunks_per_row;
  }
};

// The multiclass kernels' blocks (cuda/multiclass_loss_cuda.cu): kThreads threads, `slices`
// of them sharing a pixel's classes, so `lanes` = kThreads / slices pixels a step; the stats
// kernel sums kChunk classes at once in registers and keeps up to kTilePixels pixels'
// statistics in shared memory.
namespace multiclass_cuda {

constexpr int kThreads = 256;
constexpr int kMaxSlices = 8;  // lanes >= 32: a warp never spans two slices
constexpr int kChunk = 8;
constexpr int kTilePixels = 2048;

struct Plan {
  int slices, lanes;
  RowChunks chunks;  // a row is a sample
};

// Slices double while the pixels make fewer threads than half of what the GPU holds (1024
// an SM) and each slice keeps a chunk of classes at least: mc150 (2 x 16384 pixels) gets 8, mc19
// and 3-D volumes 1. For the stats kernel (`stats`), blocks of enough pixels that its
// (3, C) partials (acc_size bytes each) stay within 5% of the input's bytes (input_size
// each): chunks_per_row * 3 C acc <= S C in / 20, a sample getting one block at least (rows
// under 60 acc / in pixels exceed it); and at most its tile, kTilePixels pixels, a block.
inline Plan plan(int64_t batch, int64_t classes, int64_t spatial, int64_t input_size, int64_t acc_size, int sms,
                 bool stats, int max_slices) {
  int slices = 1;
  while (slices < max_slices && batch * spatial * slices < int64_t(sms) * 1024 &&
         int64_t(slices) * 2 * kChunk <= classes) {
    slices *= 2;
  }
  const int lanes = kThreads / slices;
  const int64_t steps_per_row = (spatial + lanes - 1) / lanes;
  if (!stats) return {slices, lanes, RowChunks(batch, steps_per_row, sms)};
  const int64_t max_chunks = std::max<int64_t>(1, spatial * input_size / (60 * acc_size));
  const int64_t min_steps = (steps_per_row + max_chunks - 1) / max_chunks;
  return {slices, lanes, RowChunks(batch, steps_per_row, sms, min_steps, kTilePixels / lanes)};
}

}  // namespace multiclass_cuda
}  // namespace fusedloss
