// Row-wise and element-wise ops: embedding, gather_rows, rmsnorm, layernorm, swiglu, add, sigmoid_gate_add,
// clamp, copy, fill_random. Each works on fp32 copies of a row (or a fixed-size chunk) and rounds on store,
// which also makes the ops that allow out to alias an input safe: a chunk is read before it is written.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dtype.h"
#include "kernels.h"
#include "random.h"

namespace eps::cpu {
namespace {

// Elements per chunk of the flat element-wise loops: small enough for L1, big enough to amortise.
constexpr int64_t kChunk = 4096;

// out[r] = src[idx[r]] for float rows of width H, converting dtype; idx checked against `limit`.
// (The backend prefixes a kernel's error with the op's name.)
void gatherFloatRows(const char* indexName, const TensorRef& out, const TensorRef& src,
                     const int32_t* idx, int64_t rows, int64_t limit, int64_t H) {
  parallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(out.dtype == src.dtype ? 0 : H);
    const size_t size = dtypeSize(src.dtype);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = idx[r];
      if (i < 0 || i >= limit) {
        throw std::out_of_range(std::string(indexName) + "[" + std::to_string(r) + "] = " +
                                std::to_string(i) + " is outside [0, " + std::to_string(limit) + ")");
      }
      if (out.dtype == src.dtype) {
        std::memcpy(static_cast<char*>(out.data) + r * H * size, static_cast<const char*>(src.data) + i * H * size,
                    H * size);
      } else {
        loadFloats(src, i * H, H, buf.data());
        storeFloats(out, r * H, H, buf.data());
      }
    }
  });
}

// Sum of squares with eight partial sums, so the loop vectorises without reassociation flags.
inline float sumOfSquares(const float* x, int64_t n) {
  float part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) part[u] += x[i + u] * x[i + u];
  float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

// tensors: out[T,H], table[V,H], ids[T] i32. ints (host ids) were range-checked by checkOp when
// given; the ids tensor is checked here too, since reading outside the table is never acceptable.
void embeddingKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& table = args.tensors[1];
  gatherFloatRows("ids", out, table, args.tensors[2].as<const int32_t>(), out.dim(0), table.dim(0),
                  table.dim(1));
}

// tensors: out[R,H], x[T,H], idx[R] i32.
void gatherRowsKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  gatherFloatRows("idx", out, x, args.tensors[2].as<const int32_t>(), out.dim(0), x.dim(0), x.dim(1));
}

// The row loop both norms share: tensors out[..,H], x[..,H], w[H]; params: eps; out may alias x. Each
// row is loaded to fp32, `normalize` makes it zero-mean (LayerNorm) or not (RMSNorm) and returns the
// sum of squares it divides by, and the row is scaled by 1/sqrt(that/H + eps) and the weight.
template <typename Normalize>
void normRows(const OpArgs& args, Normalize normalize) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const float eps = float(args.params[0]);
  const int64_t H = w.numel();
  const int64_t rows = H == 0 ? 0 : x.numel() / H;
  std::vector<float> weight(H);
  loadFloats(w, 0, H, weight.data());
  parallelFor(rows, std::max<int64_t>(1, kChunk / std::max<int64_t>(H, 1)), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(H);
    for (int64_t r = r0; r < r1; ++r) {
      loadFloats(x, r * H, H, row.data());
      const float inv = 1.0f / std::sqrt(normalize(row.data(), H) / float(H) + eps);
      for (int64_t h = 0; h < H; ++h) row[h] = row[h] * inv * weight[h];
      storeFloats(out, r * H, H, row.data());
    }
  });
}

// With the optional residual, x += residual first (the add kernel itself), then the norm reads the sum.
void rmsnormKernel(const OpArgs& args) {
  if (args.tensors.size() > 3 && args.tensors[3].present()) runCpuKernel("add", {args.tensors[1], args.tensors[1], args.tensors[3]});
  normRows(args, [](float* row, int64_t H) { return sumOfSquares(row, H); });
}

// Mean, then the biased variance of the centred row (two passes, as torch's LayerNorm), in fp32.
void layernormKernel(const OpArgs& args) {
  normRows(args, [](float* row, int64_t H) {
    float part[8] = {};
    int64_t h = 0;
    for (; h + 8 <= H; h += 8)
      for (int u = 0; u < 8; ++u) part[u] += row[h + u];
    float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; h < H; ++h) sum += row[h];
    const float mean = sum / float(H);
    for (int64_t i = 0; i < H; ++i) row[i] -= mean;
    return sumOfSquares(row, H);
  });
}

// The loop of the element-wise kernels: `out`'s elements in chunks of kChunk, over the threads; `fill`
// writes the fp32 values of elements [begin, begin + len) into buf, which is then stored into out.
template <typename Fill>
void inChunks(const TensorRef& out, Fill fill) {
  const int64_t n = out.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallelFor(chunks, 4, [&](int64_t c0, int64_t c1) {
    std::vector<float> buf(kChunk);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk, len = std::min(kChunk, n - begin);
      fill(begin, len, buf.data());
      storeFloats(out, begin, len, buf.data());
    }
  });
}

// tensors: out, x (same numel); params: lo, hi. out = min(max(x, lo), hi); out may alias x.
void clampKernel(const OpArgs& args) {
  const TensorRef& x = args.tensors[1];
  const float lo = float(args.params[0]), hi = float(args.params[1]);
  inChunks(args.tensors[0], [&](int64_t begin, int64_t len, float* buf) {
    loadFloats(x, begin, len, buf);
    for (int64_t i = 0; i < len; ++i) buf[i] = std::min(std::max(buf[i], lo), hi);
  });
}

// tensors: out[T,I], gateUp[T,2I]. out = silu(gate) * up.
void swigluKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& gateUp = args.tensors[1];
  const int64_t T = out.dim(0), I = out.dim(1);
  parallelFor(T, std::max<int64_t>(1, kChunk / std::max<int64_t>(I, 1)), [&](int64_t t0, int64_t t1) {
    std::vector<float> in(2 * I), res(I);
    for (int64_t t = t0; t < t1; ++t) {
      loadFloats(gateUp, t * 2 * I, 2 * I, in.data());
      for (int64_t i = 0; i < I; ++i) {
        const float g = in[i];
        res[i] = g / (1.0f + std::exp(-g)) * in[I + i];
      }
      storeFloats(out, t * I, I, res.data());
    }
  });
}

// tensors: out, a, b (same numel). out may alias a or b.
void addKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& a = args.tensors[1];
  const TensorRef& b = args.tensors[2];
  const int64_t n = out.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallelFor(chunks, 4, [&](int64_t c0, int64_t c1) {
    std::vector<float> x(kChunk), y(kChunk);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk, len = std::min(kChunk, n - begin);
      loadFloats(a, begin, len, x.data());
      loadFloats(b, begin, len, y.data());
      for (int64_t i = 0; i < len; ++i) x[i] += y[i];
      storeFloats(out, begin, len, x.data());
    }
  });
}

// tensors: out[T,H], y[T,H], gate[T,1]. out += sigmoid(gate[t]) * y[t].
void sigmoidGateAddKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& y = args.tensors[1];
  const TensorRef& gate = args.tensors[2];
  const int64_t T = out.dim(0), H = out.dim(1);
  parallelFor(T, std::max<int64_t>(1, kChunk / std::max<int64_t>(H, 1)), [&](int64_t t0, int64_t t1) {
    std::vector<float> acc(H), row(H), g(t1 - t0);
    loadFloats(gate, t0, t1 - t0, g.data());
    for (int64_t t = t0; t < t1; ++t) {
      const float s = sigmoid(g[t - t0]);
      loadFloats(out, t * H, H, acc.data());
      loadFloats(y, t * H, H, row.data());
      for (int64_t h = 0; h < H; ++h) acc[h] += s * row[h];
      storeFloats(out, t * H, H, acc.data());
    }
  });
}

// tensors: dst, src (same numel; float to float or i32 to i32).
void copyKernel(const OpArgs& args) {
  const TensorRef& dst = args.tensors[0];
  const TensorRef& src = args.tensors[1];
  const int64_t n = src.numel();
  if (dst.dtype == src.dtype) {
    if (n > 0) std::memcpy(dst.data, src.data, size_t(n) * dtypeSize(src.dtype));
    return;
  }
  inChunks(dst, [&](int64_t begin, int64_t len, float* buf) { loadFloats(src, begin, len, buf); });
}

// tensors: out (float); params: seed, std. See random.h for the exact recipe.
void fillRandomKernel(const OpArgs& args) {
  const uint64_t seedState = mix64(uint64_t(args.params[0]));
  const float scale = float(args.params[1]) * kSqrt3;
  inChunks(args.tensors[0], [&](int64_t begin, int64_t len, float* buf) {
    for (int64_t i = 0; i < len; ++i) buf[i] = scale * uniformMinus1To1(counterHash(seedState, uint64_t(begin + i)));
  });
}

// The ops this file implements (contracts: native/ops.md).
EPS_CPU_KERNEL("embedding", embeddingKernel);
EPS_CPU_KERNEL("gather_rows", gatherRowsKernel);
EPS_CPU_KERNEL("rmsnorm", rmsnormKernel);
EPS_CPU_KERNEL("layernorm", layernormKernel);
EPS_CPU_KERNEL("clamp", clampKernel);
EPS_CPU_KERNEL("swiglu", swigluKernel);
EPS_CPU_KERNEL("add", addKernel);
EPS_CPU_KERNEL("sigmoid_gate_add", sigmoidGateAddKernel);
EPS_CPU_KERNEL("copy", copyKernel);
EPS_CPU_KERNEL("fill_random", fillRandomKernel);

}  // namespace eps::cpu
