// check_target on the CPU, folded into the forward chunk loops: each chunk's
// targets are scanned where they are staged (a reduction that vectorises; the
// offender is searched for only when it fires) and the chunk's first offender
// recorded; after the parallel loop the chunks are read in order, so
// the ValueError names the first offender in memory order, whatever the
// thread count.
#pragma once

#include <c10/util/Exception.h>

#include <charconv>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../target_check.h"
#include "convert.h"

namespace fusedloss {
namespace {

// The index of the first v[i] with bad(v[i]), or -1: the search, for a chunk known to hold one.
template <typename T, typename Bad>
C10_ALWAYS_INLINE int64_t find_bad(const T* v, int64_t n, Bad bad) {
  for (int64_t i = 0; i < n; ++i) {
    if (bad(v[i])) return i;
  }
  return -1;
}

// The same, for any chunk: an OR-reduction first (an integer OR: a bool `||` would stop
// at the first hit, and not vectorise), the search only when it fires.
template <typename T, typename Bad>
C10_ALWAYS_INLINE int64_t first_bad(const T* v, int64_t n, Bad bad) {
  unsigned any = 0;
  for (int64_t i = 0; i < n; ++i) any |= bad(v[i]) ? 1u : 0u;
  return any != 0 ? find_bad(v, n, bad) : -1;
}

// Whether a float in t[0, n) lies outside [0, 1], as one unsigned max of bit patterns:
// those of t + 0 (which makes -0 +0; so no -ffast-math) are <= 1.0f's exactly for t in
// [0, 1], while negatives (sign bit), values above 1, inf and NaN all lie above. Half the
// cost of two compares per element; independent maxima keep the loop throughput-bound.
// IGNORE: values equal to `ignore` (an integer: t + 0 is t) read as 0, never bad.
template <bool IGNORE = false>
C10_ALWAYS_INLINE bool any_bad_probability(const float* t, int64_t n, float ignore = 0) {
  constexpr int kWidth = 64;
  constexpr uint32_t kOne = 0x3f800000u;  // 1.0f
  auto bits = [ignore](float v) {
    uint32_t b;
    std::memcpy(&b, &v, sizeof b);
    return IGNORE && v == ignore ? 0u : b;
  };
  uint32_t top[kWidth] = {};
  const int64_t whole = n - n % kWidth;
  for (int64_t base = 0; base < whole; base += kWidth) {
    for (int lane = 0; lane < kWidth; ++lane) {
      const uint32_t b = bits(t[base + lane] + 0.0f);
      top[lane] = b > top[lane] ? b : top[lane];
    }
  }
  uint32_t most = 0;
  for (int64_t i = whole; i < n; ++i) {
    const uint32_t b = bits(t[i] + 0.0f);
    most = b > most ? b : most;
  }
  for (int lane = 0; lane < kWidth; ++lane) most = top[lane] > most ? top[lane] : most;
  return most > kOne;
}

// The first staged target outside [0, 1] in a chunk, or -1.
C10_ALWAYS_INLINE int64_t first_bad_probability(const float* t, int64_t n) {
  return any_bad_probability(t, n) ? find_bad(t, n, [](float v) { return bad_probability(v); }) : -1;
}
C10_ALWAYS_INLINE int64_t first_bad_probability(const double* t, int64_t n) {
  return first_bad(t, n, [](double v) { return bad_probability(v); });  // fp64: no need to be as quick
}
// The same with an ignore_index: ignored targets are exempt.
C10_ALWAYS_INLINE int64_t first_bad_probability(const float* t, int64_t n, float ignore) {
  return any_bad_probability<true>(t, n, ignore)
             ? find_bad(t, n, [ignore](float v) { return bad_probability(v, ignore); })
             : -1;
}
C10_ALWAYS_INLINE int64_t first_bad_probability(const double* t, int64_t n, double ignore) {
  return first_bad(t, n, [ignore](double v) { return bad_probability(v, ignore); });
}

// Per chunk, the value of its first offender if it has one; empty when not checking.
template <typename V>
class FirstBadTargets {
 public:
  FirstBadTargets(bool check, int64_t chunks) : found_(check ? chunks : 0, 0), value_(check ? chunks : 0) {}

  bool checking() const { return !found_.empty(); }

  // v[i], i from first_bad (-1: nothing to record). Each chunk writes its own slot only.
  template <typename T>
  void record(int64_t chunk, const T* v, int64_t i) {
    if (i < 0) return;
    found_[chunk] = 1;
    value_[chunk] = static_cast<V>(v[i]);
  }

  // The first chunk's offender, or nullptr.
  const V* first() const {
    for (size_t chunk = 0; chunk < found_.size(); ++chunk) {
      if (found_[chunk]) return &value_[chunk];
    }
    return nullptr;
  }

 private:
  std::vector<char> found_;  // not vector<bool>: chunks write their slots concurrently
  std::vector<V> value_;
};

// The shortest text that reads back as the same value: 1.1f as "1.1", and 1 + 2^-23 not as "1".
template <typename acc_t>
std::string shortest_text(acc_t value) {
  if (value != value) return "nan";  // whatever its sign bit (0/0 gives -nan on x86)
  char text[64];
  const auto end = std::to_chars(text, text + sizeof text, value).ptr;
  return std::string(text, end);
}

// A binary chunk's check (binary and Lovász ops): the first staged target outside [0, 1]
// (ignored ones exempt), or -1; the fp32 scans compiled per instruction set.
FUSEDLOSS_CLONES int64_t first_bad_f32(const float* t, int64_t n) { return first_bad_probability(t, n); }
FUSEDLOSS_CLONES int64_t first_bad_ignoring_f32(const float* t, int64_t n, float ignore) {
  return first_bad_probability(t, n, ignore);
}

template <typename acc_t>
int64_t first_bad_target(const acc_t* t, int64_t n, const std::optional<int64_t>& ignore_index) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return ignore_index.has_value() ? first_bad_ignoring_f32(t, n, static_cast<float>(*ignore_index))
                                    : first_bad_f32(t, n);
  } else {
    return ignore_index.has_value() ? first_bad_probability(t, n, static_cast<double>(*ignore_index))
                                    : first_bad_probability(t, n);
  }
}

// A multi-class chunk's check (multiclass and Lovász ops): the first class index outside [0, C) that is not
// ignore_index, or -1; per instruction set (the baseline has no 64-bit integer compare to vectorise with). Narrower
// maps compare in int32 (C fits: labels are staged as int32), not widened to int64. maybe_unused: the binary
// ops' file includes this header too.
#define FUSEDLOSS_FIRST_BAD_CLASS(T, I)                                                                             \
  [[maybe_unused]] FUSEDLOSS_CLONES int64_t first_bad_class(const T* labels, int64_t n, I classes, bool has_ignore, \
                                                            I ignore_index) {                                       \
    return first_bad(labels, n, [=](T y) { return bad_class<I>(y, classes, has_ignore, ignore_index); });           \
  }
FUSEDLOSS_FIRST_BAD_CLASS(uint8_t, int32_t)
FUSEDLOSS_FIRST_BAD_CLASS(int16_t, int32_t)
FUSEDLOSS_FIRST_BAD_CLASS(int32_t, int32_t)
FUSEDLOSS_FIRST_BAD_CLASS(int64_t, int64_t)
#undef FUSEDLOSS_FIRST_BAD_CLASS

// Records the chunk's first bad class index, if any.
template <typename target_t>
void scan_classes(FirstBadTargets<int64_t>& bad, int64_t job, const target_t* labels, int64_t n, int64_t classes,
                  std::optional<int64_t> ignore_index) {
  using index_t = std::conditional_t<sizeof(target_t) < sizeof(int64_t), int32_t, int64_t>;
  // An ignore_index that index_t cannot hold equals no label.
  const bool has_ignore = ignore_index.has_value() && *ignore_index >= std::numeric_limits<index_t>::min() &&
                          *ignore_index <= std::numeric_limits<index_t>::max();
  bad.record(job, labels,
             first_bad_class(labels, n, static_cast<index_t>(classes), has_ignore,
                             has_ignore ? static_cast<index_t>(*ignore_index) : index_t(0)));
}

// A dense multi-class target's staged values outside [0, 1] (or NaN): records the chunk's
// first, class row by class row (`classes` rows of n values, `stride` apart).
template <typename acc_t>
void scan_dense(FirstBadTargets<acc_t>& bad, int64_t job, const acc_t* rows, int64_t classes, int64_t stride,
                int64_t n) {
  for (int64_t c = 0; c < classes; ++c) {
    const acc_t* row = rows + c * stride;
    const int64_t i = first_bad_target(row, n, std::nullopt);
    if (i >= 0) return bad.record(job, row, i);
  }
}

template <typename acc_t>
void check_probabilities(const FirstBadTargets<acc_t>& bad) {
  if (const acc_t* value = bad.first()) {
    TORCH_CHECK_VALUE(false, "target holds ", shortest_text(*value),
                      ", outside [0, 1]: binary and multi-label targets are probabilities "
                      "(a 0/255 mask needs target / 255 or target > 0)");
  }
}

inline void check_classes(const FirstBadTargets<int64_t>& bad, int64_t classes, std::optional<int64_t> ignore_index) {
  if (const int64_t* value = bad.first()) {
    TORCH_CHECK_VALUE(false, "target holds class index ", *value, ", outside [0, ", classes,
                      ") and not ignore_index=", ignore_index.has_value() ? std::to_string(*ignore_index) : "None");
  }
}

}  // namespace
}  // namespace fusedloss
