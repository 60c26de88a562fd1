// Row-wise and element-wise ops: embedding, gather_rows, rmsnorm, layernorm, swiglu, add, sigmoid_gate_add,
// clamp, copy, fill_random. All are memory-bound; each reads its inputs once and writes its output once
// (layernorm reads its row twice more, from L1/L2).
// Where an output may alias an input (rmsnorm, layernorm, add, clamp), every thread reads an element before it
// writes that same element and no thread touches another's, so aliasing is safe.
#include <cstdint>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

constexpr int kThreads = 256;

// ---------------------------------------------------------------- gather (embedding, gather_rows)

// out[r] = src[idx[r]] over rows of H elements. Same-dtype rows are copied as raw bytes, 16 at a
// time when both rows are 16-byte aligned; otherwise element by element with conversion.
__global__ void gatherRowsKernel(FloatDst out, FloatSrc src, const int32_t* __restrict__ idx, int64_t rows,
                                 int64_t limit, int64_t H, int esize, DeviceErrorSlot* err, int check) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = idx[r];
    if (i < 0 || i >= limit) {
      if (threadIdx.x == 0) reportIndexError(err, IndexCheck(check), r, i, limit);
      continue;
    }
    if (out.dtype == src.dtype) {
      const int64_t bytes = H * esize;
      const char* from = static_cast<const char*>(src.p) + i * bytes;
      char* to = static_cast<char*>(out.p) + r * bytes;
      if (((reinterpret_cast<uintptr_t>(from) | reinterpret_cast<uintptr_t>(to) | uintptr_t(bytes)) & 15) == 0) {
        const uint4* f4 = reinterpret_cast<const uint4*>(from);
        uint4* t4 = reinterpret_cast<uint4*>(to);
        for (int64_t v = threadIdx.x; v < bytes / 16; v += blockDim.x) t4[v] = f4[v];
        continue;
      }
    }
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) out.store(r * H + h, src[i * H + h]);
  }
}

void launchGather(OpContext& c, const TensorRef& out, const TensorRef& src, const TensorRef& idx, IndexCheck check) {
  const int64_t rows = out.dim(0), H = src.dim(1), limit = src.dim(0);
  if (rows == 0 || H == 0) return;
  const unsigned blocks = unsigned(rows < 65535LL * 8 ? rows : 65535LL * 8);
  gatherRowsKernel<<<blocks, 128, 0, c.cuda>>>(floatDst(out), floatSrc(src), idx.as<const int32_t>(), rows, limit, H,
                                               int(dtypeSize(src.dtype)), c.stream.errorSlot(), int(check));
  checkLaunch("gather rows");
}

// ---------------------------------------------------------------- rmsnorm

// One warp per row (rows of up to a few thousand elements: per-head q/k norms, hidden states).
__global__ void rmsnormWarpKernel(FloatDst out, FloatSrc x, FloatSrc w, int64_t rows, int64_t H, float eps) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t base = row * H;
  float ss = 0.0f;
  for (int64_t h = lane; h < H; h += 32) {
    const float v = x[base + h];
    ss += v * v;
  }
  ss = warpSum(ss);
  const float inv = 1.0f / sqrtf(ss / float(H) + eps);
  for (int64_t h = lane; h < H; h += 32) out.store(base + h, x[base + h] * inv * w[h]);
}

// Block-wide sum into every thread (partial[] holds one value per warp; blockDim.x a multiple of 32).
__device__ float blockSum(float v, float* partial) {
  v = warpSum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    t = warpSum(t);
    if (threadIdx.x == 0) partial[0] = t;
  }
  __syncthreads();
  const float total = partial[0];
  __syncthreads();  // partial[] is reused by the next call
  return total;
}

// One block per row, for wide rows.
__global__ void rmsnormBlockKernel(FloatDst out, FloatSrc x, FloatSrc w, int64_t rows, int64_t H, float eps) {
  __shared__ float partial[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * H;
    float ss = 0.0f;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
      const float v = x[base + h];
      ss += v * v;
    }
    const float inv = 1.0f / sqrtf(blockSum(ss, partial) / float(H) + eps);
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) out.store(base + h, x[base + h] * inv * w[h]);
  }
}

// With a residual (RES), x's 8 elements first become x + residual, rounded and stored back into x as the
// add kernel (addBf16Kernel) does, and the norm reads the rounded sum: add then rmsnorm in one pass.
template <bool RES>
__device__ __forceinline__ void loadRow8(__nv_bfloat16* x, const __nv_bfloat16* res, int64_t at, float (&v)[8]) {
  loadBf16x8(x + at, v);
  if constexpr (RES) {
    float r[8];
    loadBf16x8(res + at, r);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] += r[e];
    storeBf16x8(x + at, v);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __bfloat162float(__float2bfloat16_rn(v[e]));
  }
}

// bf16 rows whose length is a multiple of 8, 16-byte aligned: 16-byte loads and stores, and each
// thread keeps its part of the row in registers between the sum of squares and the scaling.
template <int VECS, bool RES>  // 8-element vectors per lane: rows of up to 256 * VECS elements
__global__ void rmsnormWarpBf16Kernel(__nv_bfloat16* out, __nv_bfloat16* x, const __nv_bfloat16* res, FloatSrc w,
                                      int64_t rows, int64_t H, float eps) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t nv = H / 8;
  float v[VECS][8];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < VECS; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < nv) {
      loadRow8<RES>(x, res, row * H + c * 8, v[i]);
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += v[i][e] * v[i][e];
    }
  }
  ss = warpSum(ss);
  const float inv = 1.0f / sqrtf(ss / float(H) + eps);
#pragma unroll
  for (int i = 0; i < VECS; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < nv) {
      float o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = v[i][e] * inv * w[c * 8 + e];
      storeBf16x8(out + row * H + c * 8, o);
    }
  }
}

template <int VECS, bool RES>  // 8-element vectors per thread of a 256-thread block: rows up to 2048 * VECS
__global__ void rmsnormBlockBf16Kernel(__nv_bfloat16* out, __nv_bfloat16* x, const __nv_bfloat16* res, FloatSrc w,
                                       int64_t rows, int64_t H, float eps) {
  __shared__ float partial[32];
  const int64_t nv = H / 8;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    float v[VECS][8];
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < VECS; ++i) {
      const int64_t c = threadIdx.x + int64_t(blockDim.x) * i;
      if (c < nv) {
        loadRow8<RES>(x, res, row * H + c * 8, v[i]);
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += v[i][e] * v[i][e];
      }
    }
    const float inv = 1.0f / sqrtf(blockSum(ss, partial) / float(H) + eps);
#pragma unroll
    for (int i = 0; i < VECS; ++i) {
      const int64_t c = threadIdx.x + int64_t(blockDim.x) * i;
      if (c < nv) {
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = v[i][e] * inv * w[c * 8 + e];
        storeBf16x8(out + row * H + c * 8, o);
      }
    }
  }
}

// ---------------------------------------------------------------- layernorm (no bias)

// One block per row: the mean, then the biased variance of the centred row (two passes, as torch).
__global__ void layernormKernel(FloatDst out, FloatSrc x, FloatSrc w, int64_t rows, int64_t H, float eps) {
  __shared__ float partial[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * H;
    float s = 0.0f;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) s += x[base + h];
    const float mean = blockSum(s, partial) / float(H);
    float ss = 0.0f;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
      const float d = x[base + h] - mean;
      ss += d * d;
    }
    const float inv = 1.0f / sqrtf(blockSum(ss, partial) / float(H) + eps);
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) out.store(base + h, (x[base + h] - mean) * inv * w[h]);
  }
}

// ---------------------------------------------------------------- element-wise

__global__ void clampKernel(FloatDst out, FloatSrc x, int64_t n, float lo, float hi) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
  {
    const float v = x[i];
    out.store(i, v != v ? v : fminf(fmaxf(v, lo), hi));  // fmaxf would turn NaN into lo
  }
}

// Vector forms (all bf16, widths a multiple of 8, 16-byte aligned): eight elements per thread.
__global__ void swigluBf16Kernel(__nv_bfloat16* out, const __nv_bfloat16* gateUp, int64_t T, int64_t I) {
  const int64_t nv = I / 8, n = T * nv;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / nv, c = e - t * nv;
    float g[8], u[8], o[8];
    loadBf16x8(gateUp + t * 2 * I + c * 8, g);
    loadBf16x8(gateUp + t * 2 * I + I + c * 8, u);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = swigluValue(g[i], u[i]);
    storeBf16x8(out + t * I + c * 8, o);
  }
}

__global__ void addBf16Kernel(__nv_bfloat16* out, const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t n8) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    float x[8], y[8];
    loadBf16x8(a + i * 8, x);
    loadBf16x8(b + i * 8, y);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] += y[e];
    storeBf16x8(out + i * 8, x);
  }
}

__global__ void swigluKernel(FloatDst out, FloatSrc gateUp, int64_t T, int64_t I) {
  const int64_t n = T * I;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / I, i = e - t * I;
    const float g = gateUp[t * 2 * I + i];
    const float u = gateUp[t * 2 * I + I + i];
    out.store(e, g / (1.0f + expf(-g)) * u);
  }
}

__global__ void addKernel(FloatDst out, FloatSrc a, FloatSrc b, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out.store(i, a[i] + b[i]);
}

__global__ void sigmoidGateAddKernel(FloatDst out, FloatSrc y, FloatSrc gate, int64_t T, int64_t H) {
  const int64_t n = T * H;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float s = 1.0f / (1.0f + expf(-gate[i / H]));
    out.store(i, out.load(i) + s * y[i]);
  }
}

__global__ void convertKernel(FloatDst dst, FloatSrc src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst.store(i, src[i]);
}

__global__ void broadcastRowsKernel(FloatDst out, FloatSrc row, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out.store(i, row[i % cols]);
}

// ---------------------------------------------------------------- fill_random (cpu/random.h, bit for bit)

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void fillRandomKernel(FloatDst out, int64_t n, uint64_t seedState, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t hash = mix64(seedState + (uint64_t(i) + 1) * 0x9E3779B97F4A7C15ull);
    // Explicit round-to-nearest intrinsics: no fused multiply-add may change a bit (random.h).
    const float u = __fsub_rn(__fmul_rn(__uint2float_rn(uint32_t(hash >> 40)), 1.0f / 8388608.0f), 1.0f);
    out.store(i, __fmul_rn(scale, u));
  }
}

uint64_t mix64Host(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

void convertFloats(cudaStream_t s, void* dst, DType dstType, const void* src, DType srcType, int64_t n) {
  if (n == 0) return;
  if (dstType == srcType) {
    checkCuda(cudaMemcpyAsync(dst, src, size_t(n) * dtypeSize(srcType), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync(copy)");
    return;
  }
  convertKernel<<<gridFor(n, kThreads), kThreads, 0, s>>>(FloatDst{dst, int(dstType)}, FloatSrc{src, int(srcType)}, n);
  checkLaunch("convert");
}

void broadcastRows(cudaStream_t s, void* out, DType outType, const void* row, DType rowType, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  broadcastRowsKernel<<<gridFor(rows * cols, kThreads), kThreads, 0, s>>>(FloatDst{out, int(outType)},
                                                                         FloatSrc{row, int(rowType)}, rows, cols);
  checkLaunch("broadcast rows");
}

// tensors: out[T,H], table[V,H], ids[T] i32
void embeddingOp(OpContext& c, const OpArgs& args) {
  launchGather(c, args.tensors[0], args.tensors[1], args.tensors[2], IndexCheck::EmbeddingIds);
}

// tensors: out[R,H], x[T,H], idx[R] i32
void gatherRowsOp(OpContext& c, const OpArgs& args) {
  launchGather(c, args.tensors[0], args.tensors[1], args.tensors[2], IndexCheck::GatherIdx);
}

// tensors: out[..,H], x[..,H], w[H], residual[..,H] (optional: x += residual first, in place); params: eps
void rmsnormOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const TensorRef* res = args.tensors.size() > 3 && args.tensors[3].present() ? &args.tensors[3] : nullptr;
  const int64_t H = w.numel();
  if (H == 0) return;
  const int64_t rows = x.numel() / H;
  if (rows == 0) return;
  const float eps = float(args.params[0]);
  const bool vector = x.dtype == DType::BF16 && out.dtype == DType::BF16 && H % 8 == 0 && aligned16({x.data, out.data}) &&
                      (!res || (res->dtype == DType::BF16 && aligned16({res->data})));
  // The vector kernels take the residual in their pass (rows up to 8192); the others get the add op first, the same
  // result in two passes.
  const bool fused = vector && H <= 8192;
  if (res && !fused) runCudaOp(c, "add", {x, x, *res});
  auto* xw = x.as<__nv_bfloat16>();
  const auto* rp = res && fused ? res->as<const __nv_bfloat16>() : nullptr;
  if (fused && H <= 2048) {
    const int warpsPerBlock = 8;
    const int64_t blocks = (rows + warpsPerBlock - 1) / warpsPerBlock;
    auto kernel = rp ? rmsnormWarpBf16Kernel<8, true> : rmsnormWarpBf16Kernel<8, false>;
    kernel<<<unsigned(blocks), warpsPerBlock * 32, 0, c.cuda>>>(out.as<__nv_bfloat16>(), xw, rp, floatSrc(w), rows, H, eps);
  } else if (fused) {
    const unsigned blocks = unsigned(rows < 65535LL * 16 ? rows : 65535LL * 16);
    auto kernel = rp ? rmsnormBlockBf16Kernel<4, true> : rmsnormBlockBf16Kernel<4, false>;
    kernel<<<blocks, 256, 0, c.cuda>>>(out.as<__nv_bfloat16>(), xw, rp, floatSrc(w), rows, H, eps);
  } else if (H <= 2048) {
    const int warpsPerBlock = 8;
    const int64_t blocks = (rows + warpsPerBlock - 1) / warpsPerBlock;
    rmsnormWarpKernel<<<unsigned(blocks), warpsPerBlock * 32, 0, c.cuda>>>(floatDst(out), floatSrc(x), floatSrc(w), rows, H, eps);
  } else {
    const unsigned blocks = unsigned(rows < 65535LL * 16 ? rows : 65535LL * 16);
    rmsnormBlockKernel<<<blocks, 512, 0, c.cuda>>>(floatDst(out), floatSrc(x), floatSrc(w), rows, H, eps);
  }
  checkLaunch("rmsnorm");
}

// tensors: out[..,H], x[..,H], w[H]; params: eps. Every element of a row is read by the thread that
// writes it, after the block's two sums, so out may alias x.
void layernormOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const int64_t H = w.numel();
  if (H == 0) return;
  const int64_t rows = x.numel() / H;
  if (rows == 0) return;
  const unsigned blocks = unsigned(rows < 65535LL * 16 ? rows : 65535LL * 16);
  const int threads = H <= 256 ? 128 : 512;
  layernormKernel<<<blocks, threads, 0, c.cuda>>>(floatDst(out), floatSrc(x), floatSrc(w), rows, H, float(args.params[0]));
  checkLaunch("layernorm");
}

// tensors: out, x (same numel); params: lo, hi
void clampOp(OpContext& c, const OpArgs& args) {
  const int64_t n = args.tensors[0].numel();
  if (n == 0) return;
  clampKernel<<<gridFor(n, kThreads), kThreads, 0, c.cuda>>>(floatDst(args.tensors[0]), floatSrc(args.tensors[1]), n,
                                                            float(args.params[0]), float(args.params[1]));
  checkLaunch("clamp");
}

// tensors: out[T,I], gateUp[T,2I]
void swigluOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const int64_t T = out.dim(0), I = out.dim(1);
  if (T * I == 0) return;
  const TensorRef& gateUp = args.tensors[1];
  if (out.dtype == DType::BF16 && gateUp.dtype == DType::BF16 && I % 8 == 0 && aligned16({out.data, gateUp.data})) {
    swigluBf16Kernel<<<gridFor(T * I / 8, kThreads), kThreads, 0, c.cuda>>>(out.as<__nv_bfloat16>(),
                                                                           gateUp.as<const __nv_bfloat16>(), T, I);
    checkLaunch("swiglu");
    return;
  }
  swigluKernel<<<gridFor(T * I, kThreads), kThreads, 0, c.cuda>>>(floatDst(out), floatSrc(args.tensors[1]), T, I);
  checkLaunch("swiglu");
}

// tensors: out, a, b (same numel)
void addOp(OpContext& c, const OpArgs& args) {
  const int64_t n = args.tensors[0].numel();
  if (n == 0) return;
  const TensorRef &out = args.tensors[0], &a = args.tensors[1], &b = args.tensors[2];
  if (out.dtype == DType::BF16 && a.dtype == DType::BF16 && b.dtype == DType::BF16 && n % 8 == 0 &&
      aligned16({out.data, a.data, b.data})) {
    addBf16Kernel<<<gridFor(n / 8, kThreads), kThreads, 0, c.cuda>>>(out.as<__nv_bfloat16>(), a.as<const __nv_bfloat16>(),
                                                                    b.as<const __nv_bfloat16>(), n / 8);
    checkLaunch("add");
    return;
  }
  addKernel<<<gridFor(n, kThreads), kThreads, 0, c.cuda>>>(floatDst(args.tensors[0]), floatSrc(args.tensors[1]),
                                                          floatSrc(args.tensors[2]), n);
  checkLaunch("add");
}

// tensors: out[T,H], y[T,H], gate[T,1]
void sigmoidGateAddOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const int64_t T = out.dim(0), H = out.dim(1);
  if (T * H == 0) return;
  sigmoidGateAddKernel<<<gridFor(T * H, kThreads), kThreads, 0, c.cuda>>>(floatDst(out), floatSrc(args.tensors[1]),
                                                                         floatSrc(args.tensors[2]), T, H);
  checkLaunch("sigmoid_gate_add");
}

// tensors: dst, src (same numel)
void copyOp(OpContext& c, const OpArgs& args) {
  const TensorRef& dst = args.tensors[0];
  const TensorRef& src = args.tensors[1];
  convertFloats(c.cuda, dst.data, dst.dtype, src.data, src.dtype, src.numel());
}

// tensors: out (float); params: seed, std
void fillRandomOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const int64_t n = out.numel();
  if (n == 0) return;
  const uint64_t seedState = mix64Host(uint64_t(args.params[0]));
  const float scale = float(args.params[1]) * 1.7320508075688772f;  // fp32(std) * fp32(sqrt 3), as random.h
  fillRandomKernel<<<gridFor(n, kThreads), kThreads, 0, c.cuda>>>(floatDst(out), n, seedState, scale);
  checkLaunch("fill_random");
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("embedding", embeddingOp);
EPS_CUDA_OP("gather_rows", gatherRowsOp);
EPS_CUDA_OP("rmsnorm", rmsnormOp);
EPS_CUDA_OP("layernorm", layernormOp);
EPS_CUDA_OP("clamp", clampOp);
EPS_CUDA_OP("swiglu", swigluOp);
EPS_CUDA_OP("add", addOp);
EPS_CUDA_OP("sigmoid_gate_add", sigmoidGateAddOp);
EPS_CUDA_OP("copy", copyOp);
EPS_CUDA_OP("fill_random", fillRandomOp);

}  // namespace eps::cuda
