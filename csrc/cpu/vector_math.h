// Float exp / log / log1p / pow the compiler can vectorise: branch-free
// arithmetic and bit operations, no library calls (std::exp stays scalar
// without -ffast-math, which we do not want: it drops the inf/NaN rules the
// tails rely on). About 1 ulp, like the C library, over the ranges used here;
// subnormal results are kept (gradual underflow).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstring>
#include <limits>

namespace fusedloss {

struct VectorMath {
  C10_ALWAYS_INLINE static float from_bits(int32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }

  C10_ALWAYS_INLINE static int32_t to_bits(float value) {
    int32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
  }

  // 2^k for k in [-126, 127].
  C10_ALWAYS_INLINE static float pow2(int32_t k) { return from_bits((k + 127) << 23); }

  // exp(x): 2^k * exp(r), r = x - k*ln2 (Cody-Waite), Cephes polynomial; +inf past
  // log(FLT_MAX) ~ 88.72 (k = 128 there: the two factors below overflow only in the
  // product, as the true value does). NaN gives NaN (a NaN logit must show in the loss).
  C10_ALWAYS_INLINE static float exp(float x_in) {
    // Clamped to [-104, 89] by a max and a min; the max (x > lo ? x : lo) also turns NaN into
    // -104, so no NaN reaches the integer conversion below.
    float x = x_in > -104.0f ? x_in : -104.0f;
    x = x < 89.0f ? x : 89.0f;
    constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float k = (x * 1.44269504088896341f + round_magic) - round_magic;
    const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    float poly = 1.9875691500e-4f;
    poly = poly * r + 1.3981999507e-3f;
    poly = poly * r + 8.3334519073e-3f;
    poly = poly * r + 4.1665795894e-2f;
    poly = poly * r + 1.6666665459e-1f;
    poly = poly * r + 5.0000001201e-1f;
    const float exp_r = poly * r * r + r + 1.0f;
    // Two factors, so 2^k below 2^-126 underflows gradually instead of wrapping.
    const int32_t ki = static_cast<int32_t>(k);
    const int32_t half = ki >> 1;  // floor(ki / 2): an arithmetic shift (C++20)
    const float result = exp_r * pow2(half) * pow2(ki - half);
    return x_in != x_in ? x_in : result;
  }

  // log(x) for x > 0 (subnormals included): e*ln2 + 2*atanh((m-1)/(m+1)); NaN and
  // +inf are returned as they are (their bits would decode as a finite number).
  C10_ALWAYS_INLINE static float log(float x) {
    const bool special = !(x < std::numeric_limits<float>::infinity());  // NaN or +inf
    const bool subnormal = x < 1.17549435e-38f;
    const float scaled = subnormal ? x * 8388608.0f : x;  // * 2^23
    const int32_t bits = to_bits(scaled);
    int32_t exponent = ((bits >> 23) & 0xff) - 127 - (subnormal ? 23 : 0);
    float m = from_bits((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
    const bool upper = m > 1.41421356f;
    m = upper ? m * 0.5f : m;  // [sqrt(1/2), sqrt(2))
    exponent += upper ? 1 : 0;
    const float s = (m - 1.0f) / (m + 1.0f);
    const float s2 = s * s;
    float series = 1.0f / 9.0f;
    series = series * s2 + 1.0f / 7.0f;
    series = series * s2 + 1.0f / 5.0f;
    series = series * s2 + 1.0f / 3.0f;
    const float log_m = 2.0f * s + 2.0f * s * s2 * series;
    const float e = static_cast<float>(exponent);
    const float result = e * 0.693359375f + (log_m + e * -2.12194440e-4f);
    return special ? x : result;
  }

  // log(1 + z), z >= -1, accurate for tiny z (Goldberg: log(w) * z / (w - 1)); log1p(-1)
  // is log(0), about -104 here, which every caller clamps at -100.
  C10_ALWAYS_INLINE static float log1p(float z) {
    const float w = 1.0f + z;
    const bool exact = w == 1.0f;
    return exact ? z : log(w) * (z / (exact ? 1.0f : w - 1.0f));
  }

  // log(1 + z) for z in [0, 1] (the logit BCE's z = exp(-|x|)): 2 atanh(s), s = z / (2 + z) in
  // [0, 1/3], its odd series to s^13 (truncation ~1e-8 relative), so no log and one division.
  // Written v * series(v^2 / 4), v = 2s = 2z / (2 + z): a tiny z (subnormals too) gives z itself.
  C10_ALWAYS_INLINE static float log1p_unit(float z) {
    const float v = (z + z) / (2.0f + z);
    const float s2 = 0.25f * (v * v);
    float series = 1.0f / 13.0f;
    series = series * s2 + 1.0f / 11.0f;
    series = series * s2 + 1.0f / 9.0f;
    series = series * s2 + 1.0f / 7.0f;
    series = series * s2 + 1.0f / 5.0f;
    series = series * s2 + 1.0f / 3.0f;
    return v + v * (s2 * series);
  }

  // x^y for x > 0 and y >= 0 with x^y <= 1 or small: exp(y * log(x)).
  C10_ALWAYS_INLINE static float pow(float x, float y) { return exp(y * log(x)); }
};

// VectorMath for loops whose focal gamma is 2 (the default), passed as the constant 2: the
// power a square, no log and exp.
struct SquareMath : VectorMath {
  C10_ALWAYS_INLINE static float pow(float x, float /*two*/) { return x * x; }
};

}  // namespace fusedloss
