// Float storage types of the CPU kernels and their conversions to and from fp32.
//
// Kernels compute in fp32 whatever the storage: they load a row (or a tile) to fp32 once, compute,
// and round on store. bf16 and f16 are wrapped in distinct structs so that overloads and templates
// can tell them apart from each other and from a plain uint16_t.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "../backend.h"

namespace eps::cpu {

struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

inline float floatFromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t bitsOfFloat(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// bf16 is the top half of an fp32, so widening is a shift.
inline float bf16ToFloat(uint16_t h) { return floatFromBits(uint32_t(h) << 16); }

// Round to nearest, ties to even (as torch and CUDA's __float2bfloat16 do); NaN stays a quiet NaN
// (adding the rounding bias to a NaN could carry it into infinity).
inline uint16_t floatToBf16(float f) {
  uint32_t u = bitsOfFloat(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// IEEE binary16 to fp32: exact for every value, subnormals included.
inline float f16ToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32.
    const float mag = float(mant) * 5.9604644775390625e-8f;
    return floatFromBits(bitsOfFloat(mag) | sign);
  }
  if (exp == 31) return floatFromBits(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return floatFromBits(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

// fp32 to IEEE binary16, round to nearest even, overflow to infinity, subnormals rounded correctly.
inline uint16_t floatToF16(float f) {
  uint32_t u = bitsOfFloat(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u);
  // 65520 is halfway between the largest half (65504) and 2^16; ties go to the even side: infinity.
  if (u >= 0x477ff000u) return sign | 0x7c00u;
  if (u < 0x38800000u) {
    // Below the smallest normal half (2^-14): the result is a multiple of 2^-24. Adding 0.5f (whose
    // ulp is 2^-24) lets the FPU's own round-to-nearest-even pick it; the low bits are the answer.
    const float shifted = floatFromBits(u) + 0.5f;
    return sign | uint16_t(bitsOfFloat(shifted) - 0x3f000000u);
  }
  // Normal: rebias the exponent, then round the 13 dropped mantissa bits to nearest even.
  const uint32_t mantOdd = (u >> 13) & 1u;
  u += (uint32_t(15 - 127) << 23) + 0xfffu + mantOdd;
  return sign | uint16_t(u >> 13);
}

// Overloads the templated kernels use: toFloat(storage) and fromFloat<Storage>(value).
inline float toFloat(float v) { return v; }
inline float toFloat(bf16_t v) { return bf16ToFloat(v.bits); }
inline float toFloat(f16_t v) { return f16ToFloat(v.bits); }

template <class S>
S fromFloat(float v);
template <>
inline float fromFloat<float>(float v) { return v; }
template <>
inline bf16_t fromFloat<bf16_t>(float v) { return bf16_t{floatToBf16(v)}; }
template <>
inline f16_t fromFloat<f16_t>(float v) { return f16_t{floatToF16(v)}; }

// Calls fn with a value of the storage type of `t` (float, bf16_t or f16_t), so a generic lambda can
// instantiate its loop once per storage type:
//   withFloatType(x.dtype, [&](auto tag) { using S = decltype(tag); const S* p = x.as<S>(); ... });
template <class Fn>
decltype(auto) withFloatType(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::BF16: return fn(bf16_t{});
    case DType::F16: return fn(f16_t{});
    default: throw std::invalid_argument(std::string("expected a float dtype, got ") + dtypeName(t));
  }
}

template <class S>
inline void convertToFloat(const S* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = toFloat(src[i]);
}
template <class S>
inline void convertFromFloat(const float* src, S* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fromFloat<S>(src[i]);
}

// n elements of a float tensor starting at element `offset`, widened to fp32 into dst.
inline void loadFloats(const TensorRef& t, int64_t offset, int64_t n, float* dst) {
  withFloatType(t.dtype, [&](auto tag) {
    using S = decltype(tag);
    convertToFloat(t.as<const S>() + offset, dst, n);
  });
}

// n fp32 values rounded into a float tensor starting at element `offset`.
inline void storeFloats(const TensorRef& t, int64_t offset, int64_t n, const float* src) {
  withFloatType(t.dtype, [&](auto tag) {
    using S = decltype(tag);
    convertFromFloat(src, t.as<S>() + offset, n);
  });
}

}  // namespace eps::cpu
