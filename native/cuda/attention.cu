// attention: causal softmax attention within packed sequences, grouped KV heads.
//
// Hopper path (compute capability 9.0, the sm_90a build, the fast path's dtypes and head dims):
// attention_sm90.cu, FlashAttention-3's design (TMA, wgmma, producer/consumer warpgroups), fed the
// same tile list. EPS_ATTENTION_KERNEL=sm90 in the environment asks for it, =sm80 keeps the kernels
// below (before/after measurements, and the tests of both paths); unset, kSm90ByDefault decides.
//
// Fast path, the sm_80 one (q, k, v, out all bf16; (query/key head dim, value head dim) one of (64, 64),
// (128, 128) and (192, 128), the last DeepSeek-V2/V3's MLA): a fused tiled kernel in the manner of
// FlashAttention-2, templated on both head dims. A block of 4 warps owns 128 query rows of one head
// (32 rows per warp, two m16 tiles) and walks the key/value tiles of its sequence, 64 keys at a time
// (32 for MLA, below), up to the diagonal.
// Scores S = Q K^T and the product P V run on the tensor cores (mma.sync m16n8k16, bf16 in, fp32
// accumulate); the softmax is online, in fp32 registers (running row max and row sum, rescaling the
// accumulator when the max grows), so no S x S matrix ever reaches memory and 8K-token sequences
// cost only their FLOPs. K and V tiles are double-buffered in shared memory through cp.async, so
// the next tile loads while this one computes; rows are padded by 16 bytes there, which makes the
// ldmatrix reads conflict-free.
//
// Why 32 rows per warp: every warp reads whole K and V tiles from shared memory (128 bytes per
// clock per SM), and with 16 rows per warp that traffic, not the tensor cores, bounds the kernel;
// 32 rows feed each fragment read to two MMAs (H200, causal 32q/8kv hd128: 245 against 211
// TFLOP/s at 8K tokens, 203 against 187 at 4K). Two accumulators leave no registers for Q, which
// is re-read from shared memory per k-step, nor for 64 keys of scores, so a tile's keys go in two
// steps of 32. Warps skip key steps that lie wholly above their rows.
//
// Shared memory, and why MLA takes 32-key tiles: Q (128 rows) and two stages each of K and V, rows
// padded to head dim + 8 elements; K rows are HDQK wide, V rows HDV wide. Two blocks per SM (8 warps,
// so one warp's softmax overlaps another's MMAs) need at most 228 KB / 2 - 1 KB reserved = 113 KB
// per block. With 64-key tiles that holds for 64/64 (54 KB) and 128/128 (102 KB) but not for
// 192/128 (134 KB: Q alone is 50 KB), so that shape takes 32-key tiles (92 KB), one step of 32 per
// tile, a barrier per 32 keys instead of per 64; FlashShape picks the tile by that rule. Registers
// stay near 128/128's: the accumulators are HDV wide and Q is re-read per k-step, so a wider HDQK
// costs only k-steps (ptxas, sm_90, nvcc 13.0: 64/64 196, 128/128 242, 192/128 251 registers, no
// spills; 255 is the cap for two 128-thread blocks per SM).
//
// The host cuts each sequence into 128-row query tiles (cuSeqlens arrives as host ints), longest
// rows first, and uploads that list; grid = tiles x query heads.
//
// Fallback (any other dtype mix or head dims, up to 256 each, hd and hdv independent): one warp per
// (query, head), lanes split the head dim, online softmax in fp32. Slow but exact to fp32 rounding;
// it serves test shapes and models with unusual heads.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "attention_sm90.h"
#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kBlockRows = 128;  // query rows per block
constexpr int kThreads = 128;    // 4 warps x 32 query rows

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

// ---------------------------------------------------------------- fused kernel

// One 128-row query tile of a sequence: the Hopper kernel's tile, so that both kernels take one list.
using QueryTile = AttentionTile;
static_assert(kAttentionTileRows == kBlockRows, "one tile list for both kernels");

// Shared-memory rows are padded by 8 elements (16 bytes): a row stride of 16 mod 128 bytes puts the
// 8 rows of each ldmatrix 8x8 read in 8 distinct bank groups.
__host__ __device__ constexpr int paddedStride(int hd) { return hd + 8; }

// Dynamic shared memory of one block: Q (kBlockRows rows), K x2 and V x2 (`keys` rows each).
constexpr size_t flashSmemBytes(int hdqk, int hdv, int keys) {
  return size_t(kBlockRows * paddedStride(hdqk) + 2 * keys * paddedStride(hdqk) + 2 * keys * paddedStride(hdv)) *
         sizeof(bf16);
}

// sm_90: 228 KB of shared memory per SM, 1 KB of it reserved per resident block; two blocks per SM
// leave each this much dynamic shared memory. (sm_80, 164 KB per SM, fits one block of any of the
// shapes here, as before: at most 163 KB per block.)
constexpr size_t kTwoBlockSmem = 228 * 1024 / 2 - 1024;  // 115712 bytes

template <int HDQK, int HDV>
struct FlashShape {
  static_assert(HDQK % 16 == 0 && HDV % 16 == 0, "head dims: multiples of 16 (k-steps, pairs of 8-dim blocks)");
  static constexpr int kQkStride = paddedStride(HDQK);  // Q and K rows
  static constexpr int kVStride = paddedStride(HDV);    // V rows
  // 64 keys per tile where two blocks per SM still fit, else 32 (one step of 32 keys per tile).
  static constexpr int kKeyTile = flashSmemBytes(HDQK, HDV, 64) <= kTwoBlockSmem ? 64 : 32;
  static constexpr int kQTile = kBlockRows * kQkStride;
  static constexpr int kKTile = kKeyTile * kQkStride;
  static constexpr int kVTile = kKeyTile * kVStride;
  static constexpr size_t kSmemBytes = size_t(kQTile + 2 * kKTile + 2 * kVTile) * sizeof(bf16);  // Q, K x2, V x2
  static_assert(kSmemBytes == flashSmemBytes(HDQK, HDV, kKeyTile), "layout");
  static_assert(kSmemBytes <= kTwoBlockSmem, "two blocks per SM");
};

// Copies `rows` valid rows (of TILE_ROWS) of one head, HD elements each, into shared memory, rows
// paddedStride(HD) elements apart; rows past `rows` become zeros. `src` points at the head's first
// element of token 0; consecutive tokens are `stride` apart.
template <int HD, int TILE_ROWS>
__device__ __forceinline__ void loadTile(bf16* dst, const bf16* src, int64_t stride, int token0, int rows) {
  constexpr int kChunksPerRow = HD / 8;  // 16-byte chunks
  constexpr int kChunks = TILE_ROWS * kChunksPerRow;
#pragma unroll
  for (int i = threadIdx.x; i < kChunks; i += kThreads) {
    const int r = i / kChunksPerRow, cc = i % kChunksPerRow;
    const bool valid = r < rows;
    const bf16* g = valid ? src + int64_t(token0 + r) * stride + cc * 8 : src;
    cpAsync16(dst + r * paddedStride(HD) + cc * 8, g, valid);
  }
}

// HDQK: the head dim of q and k (the score k-steps); HDV: that of v and out (the accumulators).
template <int HDQK, int HDV>
__global__ void __launch_bounds__(kThreads, 2)
    flashAttentionKernel(bf16* __restrict__ out, const bf16* __restrict__ q, const bf16* __restrict__ k,
                           const bf16* __restrict__ v, const QueryTile* __restrict__ tiles, int nq, int nkv,
                           float scaleLog2) {
  using Shape = FlashShape<HDQK, HDV>;
  constexpr int S = Shape::kQkStride;   // Q, K
  constexpr int SV = Shape::kVStride;   // V
  constexpr int kKeyTile = Shape::kKeyTile;
  constexpr int kKTile = Shape::kKTile, kVTile = Shape::kVTile;
  constexpr int kSteps = HDQK / 16;
  constexpr int kDimBlocks = HDV / 8;
  static_assert(kKeyTile % 32 == 0, "keys go in steps of 32");
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16* sQ = reinterpret_cast<bf16*>(smemRaw);
  bf16* sK = sQ + Shape::kQTile;
  bf16* sV = sK + 2 * kKTile;

  const QueryTile tile = tiles[blockIdx.x];
  const int head = blockIdx.y;
  const int kvHead = head / (nq / nkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t qStride = int64_t(nq) * HDQK, keyStride = int64_t(nkv) * HDQK, valStride = int64_t(nkv) * HDV;
  const bf16* qHead = q + int64_t(head) * HDQK;
  const bf16* kHead = k + int64_t(kvHead) * HDQK;
  const bf16* vHead = v + int64_t(kvHead) * HDV;

  const int seqStart = tile.seqStart, seqLen = tile.seqLen, q0 = tile.q0;
  const int qRows = min(kBlockRows, seqLen - q0);
  const int kvEnd = min(q0 + kBlockRows, seqLen);
  const int nTiles = (kvEnd + kKeyTile - 1) / kKeyTile;
  const int warpRow0 = q0 + warp * 32;  // sequence-relative first row of this warp

  loadTile<HDQK, kBlockRows>(sQ, qHead, qStride, seqStart + q0, qRows);
  loadTile<HDQK, kKeyTile>(sK, kHead, keyStride, seqStart, min(kKeyTile, seqLen));
  loadTile<HDV, kKeyTile>(sV, vHead, valStride, seqStart, min(kKeyTile, seqLen));
  cpAsyncCommit();

  float acc[2][kDimBlocks][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int d = 0; d < kDimBlocks; ++d) acc[mt][d][0] = acc[mt][d][1] = acc[mt][d][2] = acc[mt][d][3] = 0.0f;
  // Rows of this thread: r = 2 * mt + h is row warpRow0 + 16 * mt + lane / 4 + 8 * h.
  float rowMax[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  float rowSum[4] = {0.0f, 0.0f, 0.0f, 0.0f};

  for (int j = 0; j < nTiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < nTiles) {
      const int kvNext = (j + 1) * kKeyTile;
      loadTile<HDQK, kKeyTile>(sK + (stage ^ 1) * kKTile, kHead, keyStride, seqStart + kvNext,
                               min(kKeyTile, seqLen - kvNext));
      loadTile<HDV, kKeyTile>(sV + (stage ^ 1) * kVTile, vHead, valStride, seqStart + kvNext,
                              min(kKeyTile, seqLen - kvNext));
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();

    const int kv0 = j * kKeyTile;
    const bf16* curK = sK + stage * kKTile;
    const bf16* curV = sV + stage * kVTile;
    // The tile's keys in steps of 32 (two for 64-key tiles, one for 32): scores for 32 rows x 32
    // keys fit beside two accumulators in registers (64 keys would spill). Warp-uniform skips: keys
    // above all of this warp's rows, and warps with no rows at all.
#pragma unroll 1
    for (int half = 0; half < kKeyTile / 32; ++half) {
      const int key0 = kv0 + half * 32;
      if (key0 > warpRow0 + 31 || warpRow0 >= seqLen) continue;
      const bf16* halfK = curK + half * 32 * S;
      const bf16* halfV = curV + half * 32 * SV;

      float s[2][4][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nb = 0; nb < 4; ++nb) s[mt][nb][0] = s[mt][nb][1] = s[mt][nb][2] = s[mt][nb][3] = 0.0f;
      // One k-step at a time keeps the Q fragments to 8 registers; each ldmatrix.x4 of K brings the
      // fragments of two 8-key blocks.
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        uint32_t qa[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const bf16* p = sQ + (warp * 32 + mt * 16 + (lane % 16)) * S + kk * 16 + (lane / 16) * 8;
          ldmatrixX4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], p);
        }
#pragma unroll
        for (int nb = 0; nb < 4; nb += 2) {
          uint32_t b0, b1, b2, b3;
          ldmatrixX4(b0, b1, b2, b3, halfK + ((nb + (lane >> 4)) * 8 + (lane & 7)) * S + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mmaBf16(s[mt][nb], qa[mt], b0, b1);
            mmaBf16(s[mt][nb + 1], qa[mt], b2, b3);
          }
        }
      }

      if (key0 + 31 > warpRow0 || key0 + 32 > seqLen) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nb = 0; nb < 4; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = key0 + nb * 8 + (lane % 4) * 2 + (e & 1);
              const int row = warpRow0 + mt * 16 + lane / 4 + (e >> 1) * 8;
              if (key > row || key >= seqLen) s[mt][nb][e] = -INFINITY;
            }
      }

      float tileMax[4] = {rowMax[0], rowMax[1], rowMax[2], rowMax[3]};
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nb = 0; nb < 4; ++nb) {
          tileMax[2 * mt] = fmaxf(tileMax[2 * mt], fmaxf(s[mt][nb][0], s[mt][nb][1]) * scaleLog2);
          tileMax[2 * mt + 1] = fmaxf(tileMax[2 * mt + 1], fmaxf(s[mt][nb][2], s[mt][nb][3]) * scaleLog2);
        }
      float base[4], corr[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffu, tileMax[r], 1));
        tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffu, tileMax[r], 2));
        base[r] = tileMax[r] == -INFINITY ? 0.0f : tileMax[r];
        corr[r] = exp2f(rowMax[r] - base[r]);
        rowMax[r] = tileMax[r];
        rowSum[r] *= corr[r];
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nb = 0; nb < 4; ++nb)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = 2 * mt + (e >> 1);
            s[mt][nb][e] = exp2f(fmaf(s[mt][nb][e], scaleLog2, -base[r]));
            rowSum[r] += s[mt][nb][e];
          }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int d = 0; d < kDimBlocks; ++d) {
          acc[mt][d][0] *= corr[2 * mt];
          acc[mt][d][1] *= corr[2 * mt];
          acc[mt][d][2] *= corr[2 * mt + 1];
          acc[mt][d][3] *= corr[2 * mt + 1];
        }

#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        uint32_t a[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          a[mt][0] = packBf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = packBf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = packBf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = packBf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int d = 0; d < kDimBlocks; d += 2) {
          uint32_t b0, b1, b2, b3;
          ldmatrixX4Trans(b0, b1, b2, b3,
                          halfV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SV + d * 8 + (lane >> 4) * 8);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mmaBf16(acc[mt][d], a[mt], b0, b1);
            mmaBf16(acc[mt][d + 1], a[mt], b2, b3);
          }
        }
      }
    }
    __syncthreads();  // the next iteration loads into the buffers just read
  }

#pragma unroll
  for (int r = 0; r < 4; ++r) {
    rowSum[r] += __shfl_xor_sync(0xffffffffu, rowSum[r], 1);
    rowSum[r] += __shfl_xor_sync(0xffffffffu, rowSum[r], 2);
  }
  const int col = (lane % 4) * 2;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = warpRow0 + mt * 16 + lane / 4 + 8 * h;
      if (row >= seqLen) continue;
      const float inv = rowSum[2 * mt + h] > 0.0f ? 1.0f / rowSum[2 * mt + h] : 0.0f;
      bf16* o = out + (int64_t(seqStart + row) * nq + head) * HDV + col;
#pragma unroll
      for (int d = 0; d < kDimBlocks; ++d)
        *reinterpret_cast<__nv_bfloat162*>(o + d * 8) =
            __floats2bfloat162_rn(acc[mt][d][2 * h] * inv, acc[mt][d][2 * h + 1] * inv);
    }
}

// ---------------------------------------------------------------- fallback kernel

constexpr int kMaxPerLane = 8;  // head dims up to 256

__global__ void attentionGenericKernel(FloatDst out, FloatSrc q, FloatSrc k, FloatSrc v,
                                       const int32_t* __restrict__ cuSeqlens, int B, int64_t T, int nq, int nkv,
                                       int hd, int hdv, float scale) {
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
      acc[i] = acc[i] * corr + (d < hdv ? p * v[(j * nkv + kvHead) * hdv + d] : 0.0f);
    }
    m = mNew;
  }
  const float inv = 1.0f / l;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hdv) out.store((t * nq + head) * hdv + d, acc[i] * inv);
  }
}

// Whether the Hopper kernel runs where the device and build have it: EPS_ATTENTION_KERNEL=sm80 keeps
// the sm_80 kernels, =sm90 asks for the Hopper one, unset takes kSm90ByDefault. Read at every call, so
// that a test can run both paths in one process.
// On: the kernel passed scripts/kernels/attention_sm90.sh on an H100 (every schedule, lengths 1..8K packed,
// every head-dim pair, against an fp32 reference) and ran Qwen3-30B-A3B-shaped prefills 7-31% faster
// (docs/bench/2026-12-07-s5-h100-attention-sm90.txt).
constexpr bool kSm90ByDefault = true;
bool useSm90(OpContext& c) {
  const char* forced = std::getenv("EPS_ATTENTION_KERNEL");
  bool wanted = kSm90ByDefault;
  if (forced && std::strcmp(forced, "sm80") == 0) wanted = false;
  if (forced && std::strcmp(forced, "sm90") == 0) wanted = true;
  return wanted && attentionSm90Supported(c.ctx.device);
}

// The Hopper kernel's schedule (AttentionSm90Args::mode): EPS_ATTENTION_SM90_MODE (0-7) picks one for
// measurement (scripts/kernels/attention_sm90.sh times them all); unset, the kernel's default (-1).
int sm90Mode() {
  const char* mode = std::getenv("EPS_ATTENTION_SM90_MODE");
  return mode ? std::atoi(mode) : -1;
}

// EPS_ATTENTION_SM90_GRID picks the grid order (AttentionSm90Args::headGroup), for measurement: "heads" (heads
// vary fastest), "tile" (a head's tiles together) or a head count per group; unset, the kernel's default (0).
int sm90HeadGroup() {
  const char* grid = std::getenv("EPS_ATTENTION_SM90_GRID");
  if (!grid) return 0;
  if (std::strcmp(grid, "heads") == 0) return INT32_MAX;
  if (std::strcmp(grid, "tile") == 0) return 1;
  return std::max(0, std::atoi(grid));
}

template <int HDQK, int HDV>
void launchFlash(OpContext& c, const OpArgs& args, const std::vector<QueryTile>& tiles, int nq, int nkv, float scale) {
  const auto* tileTable = static_cast<const QueryTile*>(c.uploadTable(tiles.data(), tiles.size() * sizeof(QueryTile)));
  const dim3 grid(unsigned(tiles.size()), unsigned(nq));
  constexpr float kLog2e = 1.4426950408889634f;
  const size_t smem = FlashShape<HDQK, HDV>::kSmemBytes;
  checkCuda(cudaFuncSetAttribute(flashAttentionKernel<HDQK, HDV>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "cudaFuncSetAttribute(attention)");
  flashAttentionKernel<HDQK, HDV><<<grid, kThreads, smem, c.cuda>>>(
      args.tensors[0].as<bf16>(), args.tensors[1].as<const bf16>(), args.tensors[2].as<const bf16>(),
      args.tensors[3].as<const bf16>(), tileTable, nq, nkv, scale * kLog2e);
  checkLaunch("attention");
}

}  // namespace

// tensors: out[T,nq,hdv], q[T,nq,hd], k[T,nkv,hd - r], v[T,nkv,hdv], cuSeqlens[B+1] i32, kShared[T,r] (optional);
// params: scale; ints: cuSeqlens (host copy)
void attentionOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& q = args.tensors[1];
  const TensorRef& k = args.tensors[2];
  const TensorRef& v = args.tensors[3];
  const int64_t T = q.dim(0);
  const int nq = int(q.dim(1)), hd = int(q.dim(2)), nkv = int(k.dim(1)), hdv = int(v.dim(2));
  const float scale = float(args.params[0]);
  if (T == 0 || nq == 0 || hd == 0) return;
  if (T > INT32_MAX / 2) throw std::invalid_argument("attention: more than 2^30 tokens");
  const TensorRef* kShared = args.tensors.size() > 5 && args.tensors[5].present() ? &args.tensors[5] : nullptr;
  const int r = kShared ? int(kShared->dim(1)) : 0;

  const bool allBf16 = out.dtype == DType::BF16 && q.dtype == DType::BF16 && k.dtype == DType::BF16 &&
                       v.dtype == DType::BF16 && (!kShared || kShared->dtype == DType::BF16);
  const bool aligned = aligned16({out.data, q.data, k.data, v.data, kShared ? kShared->data : nullptr});
  // The flash kernel's (hd, hdv) pairs: 64/64, 128/128, and 192/128 (DeepSeek-V2/V3 MLA).
  const bool flashDims = (hd == 64 && hdv == 64) || (hd == 128 && hdv == 128) || (hd == 192 && hdv == 128);
  const bool flash = allBf16 && aligned && flashDims;
  std::vector<QueryTile> tiles;
  if (flash) {
    for (size_t b = 0; b + 1 < args.ints.size(); ++b) {
      const int start = int(args.ints[b]), len = int(args.ints[b + 1] - args.ints[b]);
      for (int q0 = 0; q0 < len; q0 += kBlockRows) tiles.push_back({start, len, q0, 0});
    }
    if (tiles.empty()) return;
    // Longest rows (most key tiles) first, so the short ones fill the tail of the grid.
    std::stable_sort(tiles.begin(), tiles.end(), [](const QueryTile& a, const QueryTile& b) { return a.q0 > b.q0; });
    // (tiles: the host list while the shape is checked, then its device copy)
    AttentionSm90Args sm90{out.data, q.data, k.data, v.data, tiles.data(), int(tiles.size()), T, nq, nkv, hd, hdv, scale,
                           sm90Mode(), sm90HeadGroup(), kShared ? kShared->data : nullptr, r};
    if (useSm90(c) && attentionSm90Takes(sm90)) {
      sm90.tiles = static_cast<const AttentionTile*>(c.uploadTable(tiles.data(), tiles.size() * sizeof(QueryTile)));
      checkCuda(attentionSm90(sm90, c.cuda), "attention (sm90)");
      return;
    }
  }
  if (kShared) {
    // The kernels below read whole keys: each head's is assembled once (kShared's r dims, then k's) in scratch.
    TensorRef full = k;
    full.data = c.scratch(size_t(T) * nkv * hd * dtypeSize(k.dtype));
    full.shape = {T * nkv, hd};
    runCudaOp(c, "copy_cols", {full, *kShared}, {}, {0, 0, r, nkv});
    runCudaOp(c, "copy_cols", {full, withShape(k, {T * nkv, hd - r})}, {}, {r, 0, hd - r, 1});
    OpArgs whole = args;
    whole.tensors.resize(5);
    whole.tensors[2] = withShape(full, {T, nkv, hd});
    attentionOp(c, whole);
    return;
  }
  if (flash) {
    if (hd == 128) launchFlash<128, 128>(c, args, tiles, nq, nkv, scale);
    else if (hd == 192) launchFlash<192, 128>(c, args, tiles, nq, nkv, scale);
    else launchFlash<64, 64>(c, args, tiles, nq, nkv, scale);
    return;
  }

  if (hd > 32 * kMaxPerLane || hdv > 32 * kMaxPerLane)
    throw std::invalid_argument("attention: the CUDA kernel takes head dims up to 256 (bf16 64/64, 128/128, 192/128 on the fast path); got " +
                                std::to_string(hd) + " (q, k), " + std::to_string(hdv) + " (v)");
  const int B = int(args.ints.size()) - 1;
  const int64_t warps = T * nq;
  const int threads = 128;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  attentionGenericKernel<<<unsigned(blocks), threads, 0, c.cuda>>>(floatDst(out), floatSrc(q), floatSrc(k), floatSrc(v),
                                                                   args.tensors[4].as<const int32_t>(), B, T, nq, nkv, hd,
                                                                   hdv, scale);
  checkLaunch("attention (generic)");
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("attention", attentionOp);

}  // namespace eps::cuda
