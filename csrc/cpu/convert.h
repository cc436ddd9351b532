// Element conversions into and out of the kernels' float staging buffers,
// compiled per instruction set like the math (target_clones): built for the
// baseline alone, a bf16 / fp16 conversion loop cost more than the whole fp32
// backward. Other type pairs (double staging, the rarer target dtypes) use the
// plain loop.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

// FUSEDLOSS_NO_CLONES (FUSEDLOSS_CPU_CLONES=0 at build time): the baseline alone, a quicker build.
// x86-64-v3 (AVX2 with FMA: GCC's "avx2" alone has no FMA, the avx512f clone has it; GCC 12 on)
// fuses the polynomials' multiply-adds, about half their instructions.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FUSEDLOSS_NO_CLONES)
#if __GNUC__ >= 12
#define FUSEDLOSS_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define FUSEDLOSS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define FUSEDLOSS_CLONES
#endif

namespace fusedloss {
namespace {

// dst[i] = src[i] for i < n, in the destination's type (round to nearest even).
template <typename From, typename To>
void convert(const From* src, To* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}

// The hot pairs, as overloads (preferred to the template for these exact types).
#define FUSEDLOSS_CLONED_CONVERT(From, To)                                              \
  FUSEDLOSS_CLONES [[maybe_unused]] void convert(const From* src, To* dst, int64_t n) { \
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);                   \
  }
FUSEDLOSS_CLONED_CONVERT(c10::BFloat16, float)
FUSEDLOSS_CLONED_CONVERT(c10::Half, float)
FUSEDLOSS_CLONED_CONVERT(uint8_t, float)
FUSEDLOSS_CLONED_CONVERT(bool, float)
FUSEDLOSS_CLONED_CONVERT(float, c10::BFloat16)
FUSEDLOSS_CLONED_CONVERT(float, c10::Half)
#undef FUSEDLOSS_CLONED_CONVERT

}  // namespace
}  // namespace fusedloss
