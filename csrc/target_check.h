// Which target values are valid, written once for the CPU and CUDA kernels
// (host and device). The forward kernels check them as they read the target
// (the ops' check_target): cpu/target_check_cpu.h names the first offender,
// cuda/target_check_cuda.h raises a device-side assert.
#pragma once

#include <cstdint>
#include <type_traits>

#include "loss_math.h"  // FUSEDLOSS_INLINE

namespace fusedloss {

// Binary and multi-label targets are probabilities: 0 <= t <= 1 (written so that NaN fails).
template <typename T>
FUSEDLOSS_INLINE bool bad_probability(T t) {
  return !(t >= T(0) && t <= T(1));
}

// Binary ignore_index: an element whose target equals it (compared in the accumulation
// dtype) counts nowhere, and its target is never bad.
template <typename T>
FUSEDLOSS_INLINE bool ignored_probability(T t, T ignore_value) {
  return t == ignore_value;
}
template <typename T>
FUSEDLOSS_INLINE bool bad_probability(T t, T ignore_value) {
  return bad_probability(t) && !ignored_probability(t, ignore_value);
}

// Multiclass: a pixel counts when its class index is in [0, C) and not ignore_index.
FUSEDLOSS_INLINE bool counted_class(int64_t y, int64_t classes, bool has_ignore, int64_t ignore_index) {
  return y >= 0 && y < classes && !(has_ignore && y == ignore_index);
}

// An index outside [0, C) that is not ignore_index: an error when checked, else
// treated as ignored (it never indexes memory). One unsigned compare covers y < 0 and
// y >= C; I: int64_t, or int32_t where the class map's type and C fit (quicker on the CPU).
template <typename I>
FUSEDLOSS_INLINE bool bad_class(I y, I classes, bool has_ignore, I ignore_index) {
  using U = std::make_unsigned_t<I>;
  return static_cast<U>(y) >= static_cast<U>(classes) && !(has_ignore && y == ignore_index);
}

}  // namespace fusedloss
