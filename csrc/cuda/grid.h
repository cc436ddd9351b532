// CUDA launch limits the kernels' plans must respect.
#pragma once

#include <c10/util/Exception.h>

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

}  // namespace fusedloss
