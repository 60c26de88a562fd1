// attention: causal softmax attention within packed sequences, grouped KV heads.
//
// Fast path (q, k, v, out all bf16; head dim 64 or 128): a fused tiled kernel in the manner of
// FlashAttention-2. A block of 4 warps owns 64 query rows of one head (16 rows per warp) and walks
// the key/value tiles of its sequence, 64 keys at a time, up to the diagonal. Scores S = Q K^T and
// the product P V run on the tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate); the
// softmax is online, in fp32 registers (running row max and row sum, rescaling the accumulator
// when the max grows), so no S x S matrix ever reaches memory and 8K-token sequences cost only
// their FLOPs. K and V tiles are double-buffered in shared memory through cp.async, so the next
// tile loads while this one computes. Rows are padded by 16 bytes in shared memory, which makes
// the ldmatrix reads conflict-free.
//
// The host cuts each sequence into 64-row query tiles (cuSeqlens arrives as host ints), longest
// rows first, and uploads that list; grid = tiles x query heads.
//
// Fallback (any other dtype mix or head dim up to 256): one warp per (query, head), lanes split
// the head dim, online softmax in fp32. Slow but exact to fp32 rounding; it serves test shapes and
// models with unusual heads.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kBlockRows = 64;  // query rows per block, and keys per tile
constexpr int kThreads = 128;   // 4 warps x 16 query rows

// ---------------------------------------------------------------- PTX helpers

__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: fill the 16 bytes with zeros, read nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes));
}

__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                                const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// d += a (16x16, row-major fragment) * b (16x8, column-major fragment), fp32 accumulators.
__device__ __forceinline__ void mmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// ---------------------------------------------------------------- fused kernel

struct QueryTile {
  int seqStart;  // first token of the sequence
  int seqLen;
  int q0;        // first query row of the tile, relative to seqStart
  int pad;
};

template <int HD>
struct FlashShape {
  static constexpr int kStride = HD + 8;  // elements per shared-memory row
  static constexpr int kTile = kBlockRows * kStride;
  static constexpr size_t kSmemBytes = size_t(5) * kTile * sizeof(bf16);  // Q, K x2, V x2
};

// Copies `rows` valid rows (of 64) of one head into shared memory; rows past them become zeros.
// `src` points at the head's first element of token 0; consecutive tokens are `stride` apart.
template <int HD>
__device__ __forceinline__ void loadTile(bf16* dst, const bf16* src, int64_t stride, int token0, int rows) {
  constexpr int kChunksPerRow = HD / 8;  // 16-byte chunks
  constexpr int kChunks = kBlockRows * kChunksPerRow;
#pragma unroll
  for (int i = threadIdx.x; i < kChunks; i += kThreads) {
    const int r = i / kChunksPerRow, cc = i % kChunksPerRow;
    const bool valid = r < rows;
    const bf16* g = valid ? src + int64_t(token0 + r) * stride + cc * 8 : src;
    cpAsync16(dst + r * FlashShape<HD>::kStride + cc * 8, g, valid);
  }
}

template <int HD>
__global__ void __launch_bounds__(kThreads, 2)
    flashAttentionKernel(bf16* __restrict__ out, const bf16* __restrict__ q, const bf16* __restrict__ k,
                         const bf16* __restrict__ v, const QueryTile* __restrict__ tiles, int nq, int nkv,
                         float scaleLog2) {
  constexpr int S = FlashShape<HD>::kStride;
  constexpr int kTile = FlashShape<HD>::kTile;
  constexpr int kSteps = HD / 16;  // k-steps of Q K^T
  constexpr int kDimBlocks = HD / 8;
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16* sQ = reinterpret_cast<bf16*>(smemRaw);
  bf16* sK = sQ + kTile;
  bf16* sV = sK + 2 * kTile;

  const QueryTile tile = tiles[blockIdx.x];
  const int head = blockIdx.y;
  const int kvHead = head / (nq / nkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t qStride = int64_t(nq) * HD, kvStride = int64_t(nkv) * HD;
  const bf16* qHead = q + int64_t(head) * HD;
  const bf16* kHead = k + int64_t(kvHead) * HD;
  const bf16* vHead = v + int64_t(kvHead) * HD;

  const int seqStart = tile.seqStart, seqLen = tile.seqLen, q0 = tile.q0;
  const int qRows = min(kBlockRows, seqLen - q0);
  const int kvEnd = min(q0 + kBlockRows, seqLen);  // keys [0, kvEnd) are visible to some row
  const int nTiles = (kvEnd + kBlockRows - 1) / kBlockRows;

  loadTile<HD>(sQ, qHead, qStride, seqStart + q0, qRows);
  loadTile<HD>(sK, kHead, kvStride, seqStart, min(kBlockRows, seqLen));
  loadTile<HD>(sV, vHead, kvStride, seqStart, min(kBlockRows, seqLen));
  cpAsyncCommit();

  uint32_t qFrag[kSteps][4];
  float acc[kDimBlocks][4];
#pragma unroll
  for (int d = 0; d < kDimBlocks; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
  // Per thread: rows r0 = lane/4 and r1 = r0 + 8 of the warp's 16. Max in log2 units (scaled).
  float rowMax[2] = {-INFINITY, -INFINITY};
  float rowSum[2] = {0.0f, 0.0f};  // this thread's partial sums; the quad adds them at the end
  const int row0 = q0 + warp * 16 + lane / 4;  // sequence-relative
  const int row1 = row0 + 8;

  for (int j = 0; j < nTiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < nTiles) {
      const int kvNext = (j + 1) * kBlockRows;
      loadTile<HD>(sK + (stage ^ 1) * kTile, kHead, kvStride, seqStart + kvNext, min(kBlockRows, seqLen - kvNext));
      loadTile<HD>(sV + (stage ^ 1) * kTile, vHead, kvStride, seqStart + kvNext, min(kBlockRows, seqLen - kvNext));
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        const bf16* p = sQ + (warp * 16 + (lane % 16)) * S + kk * 16 + (lane / 16) * 8;
        ldmatrixX4(qFrag[kk][0], qFrag[kk][1], qFrag[kk][2], qFrag[kk][3], p);
      }
    }
    const bf16* curK = sK + stage * kTile;
    const bf16* curV = sV + stage * kTile;

    // S = Q K^T for 64 keys: 8 blocks of 8 keys.
    float s[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kSteps; kk += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrixX4(b0, b1, b2, b3, curK + (nb * 8 + (lane & 7)) * S + kk * 16 + (lane >> 3) * 8);
        mmaBf16(s[nb], qFrag[kk], b0, b1);
        mmaBf16(s[nb], qFrag[kk + 1], b2, b3);
      }
    }

    // Causal and end-of-sequence mask: only the diagonal tile (the last) needs it.
    const int kv0 = j * kBlockRows;
    if (kv0 + kBlockRows - 1 > q0 || kv0 + kBlockRows > seqLen) {
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kv0 + nb * 8 + (lane % 4) * 2 + (e & 1);
          const int row = e < 2 ? row0 : row1;
          if (key > row || key >= seqLen) s[nb][e] = -INFINITY;
        }
      }
    }

    // Online softmax: new row max (over the quad that shares a row), rescale, exponentiate.
    float tileMax[2] = {rowMax[0], rowMax[1]};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      tileMax[0] = fmaxf(tileMax[0], fmaxf(s[nb][0], s[nb][1]) * scaleLog2);
      tileMax[1] = fmaxf(tileMax[1], fmaxf(s[nb][2], s[nb][3]) * scaleLog2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffu, tileMax[r], 1));
      tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffu, tileMax[r], 2));
    }
    float base[2], corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      base[r] = tileMax[r] == -INFINITY ? 0.0f : tileMax[r];  // a row with nothing visible yet
      corr[r] = exp2f(rowMax[r] - base[r]);
      rowMax[r] = tileMax[r];
      rowSum[r] *= corr[r];
    }
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        s[nb][e] = exp2f(fmaf(s[nb][e], scaleLog2, -base[r]));
        rowSum[r] += s[nb][e];
      }
    }
#pragma unroll
    for (int d = 0; d < kDimBlocks; ++d) {
      acc[d][0] *= corr[0];
      acc[d][1] *= corr[0];
      acc[d][2] *= corr[1];
      acc[d][3] *= corr[1];
    }

    // acc += P V: P's accumulator fragments are exactly the A fragments of the next product.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      a[0] = packBf16(s[2 * kk][0], s[2 * kk][1]);
      a[1] = packBf16(s[2 * kk][2], s[2 * kk][3]);
      a[2] = packBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = packBf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int d = 0; d < kDimBlocks; d += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrixX4Trans(b0, b1, b2, b3,
                        curV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + d * 8 + (lane >> 4) * 8);
        mmaBf16(acc[d], a, b0, b1);
        mmaBf16(acc[d + 1], a, b2, b3);
      }
    }
    __syncthreads();  // the next iteration loads into the buffers just read
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rowSum[r] += __shfl_xor_sync(0xffffffffu, rowSum[r], 1);
    rowSum[r] += __shfl_xor_sync(0xffffffffu, rowSum[r], 2);
  }
  const float inv0 = rowSum[0] > 0.0f ? 1.0f / rowSum[0] : 0.0f;
  const float inv1 = rowSum[1] > 0.0f ? 1.0f / rowSum[1] : 0.0f;
  const int col = (lane % 4) * 2;
  if (row0 < seqLen) {
    bf16* o = out + (int64_t(seqStart + row0) * nq + head) * HD + col;
#pragma unroll
    for (int d = 0; d < kDimBlocks; ++d)
      *reinterpret_cast<__nv_bfloat162*>(o + d * 8) = __floats2bfloat162_rn(acc[d][0] * inv0, acc[d][1] * inv0);
  }
  if (row1 < seqLen) {
    bf16* o = out + (int64_t(seqStart + row1) * nq + head) * HD + col;
#pragma unroll
    for (int d = 0; d < kDimBlocks; ++d)
      *reinterpret_cast<__nv_bfloat162*>(o + d * 8) = __floats2bfloat162_rn(acc[d][2] * inv1, acc[d][3] * inv1);
  }
}

// ---------------------------------------------------------------- fallback kernel

constexpr int kMaxPerLane = 8;  // head dims up to 256

__global__ void attentionGenericKernel(FloatDst out, FloatSrc q, FloatSrc k, FloatSrc v,
                                       const int32_t* __restrict__ cuSeqlens, int B, int64_t T, int nq, int nkv,
                                       int hd, float scale) {
  const int64_t warpId = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warpId >= T * nq) return;
  const int64_t t = warpId / nq;
  const int head = int(warpId % nq);
  const int kvHead = head / (nq / nkv);
  // The sequence of token t: the last b with cuSeqlens[b] <= t.
  int lo = 0, hi = B;  // cuSeqlens[lo] <= t < cuSeqlens[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (cuSeqlens[mid] <= t) lo = mid;
    else hi = mid;
  }
  const int64_t seqStart = cuSeqlens[lo];

  float qv[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < hd ? q[(t * nq + head) * hd + d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = seqStart; j <= t; ++j) {
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) dot += qv[i] * k[(j * nkv + kvHead) * hd + d];
    }
    const float s = warpSum(dot) * scale;
    const float mNew = fmaxf(m, s);
    const float corr = expf(m - mNew);
    const float p = expf(s - mNew);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < hd ? p * v[(j * nkv + kvHead) * hd + d] : 0.0f);
    }
    m = mNew;
  }
  const float inv = 1.0f / l;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) out.store((t * nq + head) * hd + d, acc[i] * inv);
  }
}

template <int HD>
void launchFlash(OpContext& c, const OpArgs& args, const std::vector<QueryTile>& tiles, int nq, int nkv, float scale) {
  const auto* tileTable = static_cast<const QueryTile*>(c.uploadTable(tiles.data(), tiles.size() * sizeof(QueryTile)));
  const size_t smem = FlashShape<HD>::kSmemBytes;
  checkCuda(cudaFuncSetAttribute(flashAttentionKernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "cudaFuncSetAttribute(attention)");
  const dim3 grid(unsigned(tiles.size()), unsigned(nq));
  constexpr float kLog2e = 1.4426950408889634f;
  flashAttentionKernel<HD><<<grid, kThreads, smem, c.cuda>>>(
      args.tensors[0].as<bf16>(), args.tensors[1].as<const bf16>(), args.tensors[2].as<const bf16>(),
      args.tensors[3].as<const bf16>(), tileTable, nq, nkv, scale * kLog2e);
  checkLaunch("attention");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

// tensors: out[T,nq,hd], q[T,nq,hd], k[T,nkv,hd], v[T,nkv,hd], cuSeqlens[B+1] i32; params: scale;
// ints: cuSeqlens (host copy)
void attentionOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& q = args.tensors[1];
  const TensorRef& k = args.tensors[2];
  const TensorRef& v = args.tensors[3];
  const int64_t T = q.dim(0);
  const int nq = int(q.dim(1)), hd = int(q.dim(2)), nkv = int(k.dim(1));
  const float scale = float(args.params[0]);
  if (T == 0 || nq == 0 || hd == 0) return;
  if (T > INT32_MAX / 2) throw std::invalid_argument("attention: more than 2^30 tokens");

  const bool allBf16 = out.dtype == DType::BF16 && q.dtype == DType::BF16 && k.dtype == DType::BF16 &&
                       v.dtype == DType::BF16;
  const bool aligned = aligned16(out.data) && aligned16(q.data) && aligned16(k.data) && aligned16(v.data);
  if (allBf16 && aligned && (hd == 64 || hd == 128)) {
    std::vector<QueryTile> tiles;
    for (size_t b = 0; b + 1 < args.ints.size(); ++b) {
      const int start = int(args.ints[b]), len = int(args.ints[b + 1] - args.ints[b]);
      for (int q0 = 0; q0 < len; q0 += kBlockRows) tiles.push_back({start, len, q0, 0});
    }
    if (tiles.empty()) return;
    // Longest rows (most key tiles) first, so the short ones fill the tail of the grid.
    std::stable_sort(tiles.begin(), tiles.end(), [](const QueryTile& a, const QueryTile& b) { return a.q0 > b.q0; });
    if (hd == 128) launchFlash<128>(c, args, tiles, nq, nkv, scale);
    else launchFlash<64>(c, args, tiles, nq, nkv, scale);
    return;
  }

  if (hd > 32 * kMaxPerLane)
    throw std::invalid_argument("attention: the CUDA kernel takes head dims up to 256 (bf16 64/128 on the fast path); got " +
                                std::to_string(hd));
  const int B = int(args.ints.size()) - 1;
  const int64_t warps = T * nq;
  const int threads = 128;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  attentionGenericKernel<<<unsigned(blocks), threads, 0, c.cuda>>>(floatDst(out), floatSrc(q), floatSrc(k), floatSrc(v),
                                                                   args.tensors[4].as<const int32_t>(), B, T, nq, nkv, hd,
                                                                   scale);
  checkLaunch("attention (generic)");
}

}  // namespace eps::cuda
