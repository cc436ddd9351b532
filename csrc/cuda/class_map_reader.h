// A class map of any integer dtype read as int64 in a kernel, branching on the element size
// (one kernel instantiation for uint8, int16, int32 and int64 maps).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "../dispatch.h"

namespace fusedloss {
namespace {

struct ClassMapReader {
  const void* data;
  int bytes;  // 1 (uint8), 2, 4 or 8
  __device__ __forceinline__ int64_t operator()(int64_t i) const {
    switch (bytes) {
      case 1: return static_cast<const uint8_t*>(data)[i];
      case 2: return static_cast<const int16_t*>(data)[i];
      case 4: return static_cast<const int32_t*>(data)[i];
      default: return static_cast<const int64_t*>(data)[i];
    }
  }
};

ClassMapReader class_map_reader(const at::Tensor& target) {
  dispatch_class_map(target, [](auto) {});  // the dtype check only: the reader branches on the size
  return {target.const_data_ptr(), static_cast<int>(target.element_size())};
}

}  // namespace
}  // namespace fusedloss
