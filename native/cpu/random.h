// The counter-based random numbers of `fill_random`, specified bit for bit so that the CUDA kernel
// (and a test in any language) reproduces them exactly.
//
//   mix64(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//              z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//              return z ^ (z >> 31)                          (the splitmix64 finaliser; all mod 2^64)
//   hash(seed, i) = mix64(mix64(seed) + (i + 1) * 0x9E3779B97F4A7C15)
//                 = output i of a splitmix64 generator whose state starts at mix64(seed)
//   u(seed, i)    = float(hash >> 40) * 2^-23 - 1           (24 random bits: uniform in [-1, 1),
//                                                            exact in fp32)
//   out[i]        = round_to_storage(fp32(fp32(std) * fp32(sqrt(3))) * u(seed, i))
//
// The scale is one fp32 product computed once, and each value is one more fp32 product, so no
// fused multiply-add or reassociation can change a bit. The seed is an integer in [0, 2^53] (it
// arrives as a double param).
#pragma once

#include <cstdint>

namespace eps::cpu {

constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ull;
constexpr float kSqrt3 = 1.7320508075688772f;

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// `seedState` is mix64(seed), computed once per call.
inline uint64_t counterHash(uint64_t seedState, uint64_t index) {
  return mix64(seedState + (index + 1) * kSplitMixGamma);
}

inline float uniformMinus1To1(uint64_t hash) {
  return float(uint32_t(hash >> 40)) * (1.0f / 8388608.0f) - 1.0f;
}

}  // namespace eps::cpu
