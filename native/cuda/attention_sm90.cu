// The Hopper prefill attention kernel (issue 13): see attention_sm90.h for the contract.
//
// Design (sm_90a only; build with -gencode=arch=compute_90a,code=sm_90a; other targets trap):
//   - one CTA per (query head, 128-row query tile); 384 threads = 3 warpgroups. Warpgroup 0 is the
//     producer: one thread issues the TMA loads (Q once, then K and V blocks of 128 keys through a
//     STAGES-deep ring), its registers lowered to 40 with setmaxnreg. Warpgroups 1 and 2 are the
//     consumers (raised to 232), each owning 64 query rows.
//   - shared memory holds every tile as 64-column chunks, [rows][64 bf16 = 128 bytes] with the 128-byte
//     swizzle that TMA writes and wgmma reads: Q (hd/64 chunks of 128 rows), and per stage K (hd/64
//     chunks of 128 keys) and V (hdv/64 chunks of 128 keys). A 2-D tensor map over [T, heads * hd]
//     with a box of {64 columns, rows} fetches head h's chunk c at column h * hd + 64 c.
//   - S = Q K^T: wgmma m64n128k16, both operands from shared memory and K-major (the rows of q and k
//     are their head dims). O += P V: wgmma m64n{hdv}k16 with P in registers (the S accumulator
//     fragments, exponentiated and packed to bf16, are exactly the A-operand fragments) and V as an
//     N-major B operand (V rows are [keys][hdv], hdv contiguous; the transpose bit of the instruction).
//   - barriers: a "full" mbarrier for K and another for V per stage (TMA completes bytes on them; the
//     S GEMM needs only K) and an "empty" mbarrier per stage that the 8 consumer warps arrive on when
//     their P V GEMM has read the stage.
//   - online softmax in fp32 registers: a running row max (already scaled by scale * log2 e, so one
//     FFMA and one EX2 per score), a running row sum per thread reduced across the 4 threads of a row
//     only at the end, the accumulator rescaled when the max grows.
//   - causal: a tile's keys run from its sequence's first token to its last row; tiles and key blocks
//     are both 128 wide, so only the last block (the diagonal) needs the mask (key > row, or past the
//     sequence end). Rows past the sequence end are computed on whatever TMA brought (the next
//     sequence, or zeros past T) and never stored.
//   - overlap within a warpgroup: block j's S GEMM and block j-1's P V GEMM are issued together, and
//     block j's softmax runs while P V still executes; the accumulator is rescaled after it completes.
//     AttentionSm90Args::mode picks other schedules for measurement (the kernel's MODE, below; mode 3
//     is MODE 2 with 3 stages, mode 4 MODE 0 with 3 stages, modes 5-7 MODE 0-2 with 2 stages and SPLIT): scripts/kernels/attention_sm90.sh times them all, to keep the best.
#include "attention_sm90.h"
#include "sm90.cuh"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>


// In the passes for other targets the kernel body is compiled out, leaving helpers unreferenced.
#pragma nv_diag_suppress 177

namespace eps::cuda {

namespace {

using namespace sm90;

using bf16 = __nv_bfloat16;

constexpr int kRows = kAttentionTileRows;  // query rows per CTA: 2 consumer warpgroups x 64
constexpr int kKeys = 128;                 // keys per block
constexpr int kThreads = 384;
constexpr int kConsumerWarps = 8;
constexpr int kChunkBytes = 128 * 128;     // one 64-column chunk of 128 rows (Q) or 128 keys (K, V)
static_assert(kRows == 128 && kKeys == 128, "chunks hold 128 rows");

template <int HDQK, int HDV, int STAGES, bool SPLIT>
struct Layout {
  static constexpr int kQBytes = HDQK / 64 * kChunkBytes;
  static constexpr int kKBytes = HDQK / 64 * kChunkBytes;  // per stage
  static constexpr int kVBytes = HDV / 64 * kChunkBytes;   // per stage
  static constexpr int kK = kQBytes;
  static constexpr int kV = kK + STAGES * kKBytes;
  // q, fullK[STAGES], fullV[STAGES], empty[STAGES] (V's with SPLIT), then with SPLIT emptyK[STAGES]
  static constexpr int kBar = kV + STAGES * kVBytes;
  static constexpr size_t kSmem = 1024 + size_t(kBar) + 8 * (1 + (SPLIT ? 4 : 3) * STAGES);  // + 1024: alignment slack
};

// ---- PTX wrappers (the shared ones: sm90.cuh) -------------------------------------------------

// Q and K are K-major operands (sm90::descKMajor). V as B of P V is N-major: the reduction dim, keys,
// runs down the 128-byte rows and N = hdv along them, in the same 128-byte swizzle; 8-key groups are
// 1024 bytes apart (the stride byte offset, bits 32-45) and the leading byte offset (bits 16-29) steps
// from one 64-column chunk of hdv to the next (CUTLASS's canonical MN-major SW128 layout).
__device__ __forceinline__ uint64_t descNMajor(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(kChunkBytes >> 4) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

// ---- wgmma, bf16 x bf16 -> fp32 (generated): RS (A in registers) with B N-major (imm-trans-b = 1);
// the SS form for S = Q K^T is sm90.cuh's ----

__device__ __forceinline__ void wgmmaRS_m64n128k16(float* d, const uint32_t* a, uint64_t descB) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, 1, 1, 1, 1;\n"
      : EPS_SM90_ACC64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB));
}

__device__ __forceinline__ void wgmmaRS_m64n64k16(float* d, const uint32_t* a, uint64_t descB) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"
      : EPS_SM90_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB));
}

template <int HDV>
__device__ __forceinline__ void wgmmaPV(float* o, const uint32_t* p, uint64_t descV) {
  if constexpr (HDV == 128) wgmmaRS_m64n128k16(o, p, descV);
  else wgmmaRS_m64n64k16(o, p, descV);
}

// ---- the kernel -------------------------------------------------------------------------------

// MODE 1: S GEMM, softmax, P V GEMM in sequence; 0: block j's S GEMM issued with block j-1's P V GEMM
// (softmax overlaps P V); 2: as 0, and the two consumer warpgroups take turns issuing their GEMMs
// (named barriers), so that one's softmax runs under the other's GEMMs.
// SPLIT: a stage's K is released once the S GEMM that read it completes and its V once P V completes (two
// empty barriers), so the producer refills K a block earlier; without it one barrier frees both after P V.
template <int HDQK, int HDV, int STAGES, int MODE, bool SPLIT>
__global__ void __launch_bounds__(kThreads, 1)
    attentionSm90Kernel(const __grid_constant__ CUtensorMap tmQ, const __grid_constant__ CUtensorMap tmK,
                        const __grid_constant__ CUtensorMap tmKShared, const __grid_constant__ CUtensorMap tmV,
                        bf16* __restrict__ out, const AttentionTile* __restrict__ tiles, int nTiles, int nq, int nkv,
                        float scaleLog2, int headGroup, int sharedChunks) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = Layout<HDQK, HDV, STAGES, SPLIT>;
  extern __shared__ uint8_t smemRaw[];
  const uint32_t base = (smemAddr(smemRaw) + 1023u) & ~1023u;
  const uint32_t sQ = base, sK = base + L::kK, sV = base + L::kV;
  const uint32_t qBar = base + L::kBar;
  const uint32_t fullK = qBar + 8, fullV = fullK + 8 * STAGES, emptyBar = fullV + 8 * STAGES;
  const uint32_t emptyK = SPLIT ? emptyBar + 8 * STAGES : emptyBar;

  // The 1-D grid in groups of headGroup heads: within a group heads vary fastest, then tiles (so the CTAs
  // resident together read the K/V of at most headGroup heads); the last group may hold fewer heads.
  const int group = blockIdx.x / (headGroup * nTiles);
  const int inGroup = blockIdx.x - group * headGroup * nTiles;
  const int groupHeads = min(headGroup, nq - group * headGroup);
  const AttentionTile tile = tiles[inGroup / groupHeads];
  const int head = group * headGroup + inGroup % groupHeads;
  const int kvHead = head / (nq / nkv);
  const int nBlocks = (min(tile.q0 + kRows, tile.seqLen) + kKeys - 1) / kKeys;  // the last one is the diagonal
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  if (tid == 0) {
    prefetchTensorMap(&tmQ);
    prefetchTensorMap(&tmK);
    if (sharedChunks) prefetchTensorMap(&tmKShared);
    prefetchTensorMap(&tmV);
    mbarInit(qBar, 1);
    for (int i = 0; i < STAGES; ++i) {
      mbarInit(fullK + 8 * i, 1);
      mbarInit(fullV + 8 * i, 1);
      mbarInit(emptyBar + 8 * i, kConsumerWarps);
      if (SPLIT) mbarInit(emptyK + 8 * i, kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp < 4) {
    // ---- producer ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp == 0 && lane == 0) {
      const int token0 = tile.seqStart;
      mbarExpectTx(qBar, L::kQBytes);
#pragma unroll
      for (int c = 0; c < HDQK / 64; ++c) tmaLoad2d(sQ + c * kChunkBytes, &tmQ, qBar, head * HDQK + 64 * c, token0 + tile.q0);
      for (int j = 0; j < nBlocks; ++j) {
        const int st = j % STAGES;
        mbarWait(emptyK + 8 * st, ((j / STAGES) & 1) ^ 1);
        mbarExpectTx(fullK + 8 * st, L::kKBytes);
        // A key's first sharedChunks 64-dim chunks come from kShared (one for every head), the rest from its head's k.
#pragma unroll
        for (int c = 0; c < HDQK / 64; ++c) {
          const uint32_t dst = sK + st * L::kKBytes + c * kChunkBytes;
          if (c < sharedChunks) tmaLoad2d(dst, &tmKShared, fullK + 8 * st, 64 * c, token0 + j * kKeys);
          else tmaLoad2d(dst, &tmK, fullK + 8 * st, kvHead * (HDQK - 64 * sharedChunks) + 64 * (c - sharedChunks), token0 + j * kKeys);
        }
        if (SPLIT) mbarWait(emptyBar + 8 * st, ((j / STAGES) & 1) ^ 1);
        mbarExpectTx(fullV + 8 * st, L::kVBytes);
#pragma unroll
        for (int c = 0; c < HDV / 64; ++c)
          tmaLoad2d(sV + st * L::kVBytes + c * kChunkBytes, &tmV, fullV + 8 * st, kvHead * HDV + 64 * c, token0 + j * kKeys);
      }
    }
  } else {
    // ---- consumers: warpgroup 1 rows 0..63 of the tile, warpgroup 2 rows 64..127 ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    const int cw = warp / 4 - 1;
    const int g = lane / 4, t4 = lane % 4;
    const int seqLen = tile.seqLen;
    const int row0 = tile.q0 + cw * 64 + (warp % 4) * 16 + g;  // this thread's rows: row0, row0 + 8
    const uint32_t qA = sQ + cw * 64 * 128;                    // this warpgroup's 64 rows in each chunk

    float o[HDV / 2];
#pragma unroll
    for (int i = 0; i < HDV / 2; ++i) o[i] = 0.0f;
    float s[kKeys / 2];
    uint32_t p[kKeys / 16][4];
    float mS[2] = {-INFINITY, -INFINITY};  // running row max, times scale * log2 e
    float l[2] = {0.0f, 0.0f};             // this thread's part of the running row sum
    float corr[2];

    auto issueS = [&](int st) {
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < HDQK / 16; ++kk) {
        const uint32_t off = (kk / 4) * kChunkBytes + (kk % 4) * 32;
        wgmmaSS_m64n128k16(s, descKMajor(qA + off), descKMajor(sK + st * L::kKBytes + off), kk > 0);
      }
      wgmmaCommit();
    };
    auto issuePV = [&](int st) {
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) wgmmaPV<HDV>(o, p[kk], descNMajor(sV + st * L::kVBytes + kk * 16 * 128));
      wgmmaCommit();
    };
    auto fenceS = [&] {
#pragma unroll
      for (int i = 0; i < kKeys / 2; ++i) fenceReg(s[i]);
    };
    auto fenceOP = [&] {
#pragma unroll
      for (int i = 0; i < HDV / 2; ++i) fenceReg(o[i]);
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) fenceReg(p[kk][r]);
    };
    // Accumulator fragment i of S (and O): row row0 + 8 * ((i / 2) % 2), column 8 * (i / 4) + 2 * t4 + i % 2.
    auto softmax = [&](int j) {
      if (j == nBlocks - 1) {
        const int key0 = j * kKeys;
#pragma unroll
        for (int i = 0; i < kKeys / 2; ++i) {
          const int key = key0 + 8 * (i / 4) + 2 * t4 + (i % 2);
          const int row = row0 + 8 * ((i / 2) % 2);
          if (key > row || key >= seqLen) s[i] = -INFINITY;
        }
      }
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int i = 0; i < kKeys / 2; i += 4) {
        mx[0] = fmaxf(mx[0], fmaxf(s[i], s[i + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[i + 2], s[i + 3]));
      }
      float mNew[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        // Finite: every row's first key (the sequence's first token) is in block 0 and unmasked.
        mNew[h] = fmaxf(mS[h], mx[h] * scaleLog2);
        corr[h] = exp2f(mS[h] - mNew[h]);
        mS[h] = mNew[h];
      }
      float sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < kKeys / 2; ++i) {
        const int h = (i / 2) % 2;
        s[i] = exp2f(fmaf(s[i], scaleLog2, -mNew[h]));
        sum[h] += s[i];
      }
      l[0] = l[0] * corr[0] + sum[0];
      l[1] = l[1] * corr[1] + sum[1];
    };
    auto rescaleO = [&] {
#pragma unroll
      for (int i = 0; i < HDV / 2; ++i) o[i] *= corr[(i / 2) % 2];
    };
    auto convertP = [&] {
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) p[kk][r] = packBf16(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
    };
    // Ping-pong (MODE 2): warpgroup cw issues its GEMMs after syncing on barrier 1 + cw, which the
    // other warpgroup arrives on once it has issued its own; warpgroup 1 opens the first turn.
    auto myTurn = [&] {
      if constexpr (MODE == 2) namedBarrierSync(1 + cw, 256);
    };
    auto yieldTurn = [&] {
      if constexpr (MODE == 2) namedBarrierArrive(2 - cw, 256);
    };
    if constexpr (MODE == 2) {
      if (cw == 1) namedBarrierArrive(1, 256);
    }

    mbarWait(qBar, 0);
    if constexpr (MODE == 1) {
      for (int j = 0; j < nBlocks; ++j) {
        const int st = j % STAGES;
        const uint32_t ph = (j / STAGES) & 1;
        mbarWait(fullK + 8 * st, ph);
        issueS(st);
        wgmmaWait<0>();
        fenceS();
        if (SPLIT && lane == 0) mbarArrive(emptyK + 8 * st);
        softmax(j);
        rescaleO();
        convertP();
        mbarWait(fullV + 8 * st, ph);
        issuePV(st);
        wgmmaWait<0>();
        fenceOP();
        if (lane == 0) mbarArrive(emptyBar + 8 * st);
      }
    } else {
      mbarWait(fullK, 0);
      myTurn();
      issueS(0);
      yieldTurn();
      wgmmaWait<0>();
      fenceS();
      if (SPLIT && lane == 0) mbarArrive(emptyK);
      softmax(0);
      convertP();
      for (int j = 1; j < nBlocks; ++j) {
        const int st = j % STAGES, pst = (j - 1) % STAGES;
        mbarWait(fullK + 8 * st, (j / STAGES) & 1);
        myTurn();
        issueS(st);
        mbarWait(fullV + 8 * pst, ((j - 1) / STAGES) & 1);
        issuePV(pst);
        yieldTurn();
        wgmmaWait<1>();
        fenceS();
        if (SPLIT && lane == 0) mbarArrive(emptyK + 8 * st);
        softmax(j);
        wgmmaWait<0>();
        fenceOP();
        if (lane == 0) mbarArrive(emptyBar + 8 * pst);
        rescaleO();
        convertP();
      }
      const int last = nBlocks - 1;
      mbarWait(fullV + 8 * (last % STAGES), (last / STAGES) & 1);
      myTurn();
      issuePV(last % STAGES);
      yieldTurn();
      wgmmaWait<0>();
      fenceOP();
      // Warpgroup 1 arrived on barrier 1 once more than warpgroup 0 synced on it: leave it balanced.
      if constexpr (MODE == 2) {
        if (cw == 0) namedBarrierSync(1, 256);
      }
    }

    // Epilogue: O / row sum, rows past the sequence end skipped.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = 1.0f / sum;
      const int row = row0 + 8 * h;
      if (row < seqLen) {
        bf16* dst = out + (int64_t(tile.seqStart + row) * nq + head) * HDV + 2 * t4;
#pragma unroll
        for (int j = 0; j < HDV / 8; ++j)
          *reinterpret_cast<__nv_bfloat162*>(dst + 8 * j) = __floats2bfloat162_rn(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
      }
    }
  }
#elif defined(__CUDA_ARCH__)
  // Built without the sm_90a target (a plain sm_90 or sm_80 pass): no wgmma here. Fail loudly rather
  // than leave the output unwritten.
  __trap();
#endif
}

// ---- host side --------------------------------------------------------------------------------

// A 2-D map over [T rows, width bf16 columns] (row-major), boxes of {64 columns, boxRows rows}, the
// 128-byte swizzle; reads past T are zero-filled.
bool encodeRows(CUtensorMap* map, const void* ptr, int64_t T, int64_t width, int boxRows) {
  auto fn = encodeTiled();
  if (!fn) return false;
  const cuuint64_t dims[2] = {cuuint64_t(width), cuuint64_t(T)};
  const cuuint64_t strides[1] = {cuuint64_t(width) * 2};
  const cuuint32_t box[2] = {64, cuuint32_t(boxRows)};
  const cuuint32_t elemStrides[2] = {1, 1};
  return fn(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(ptr), dims, strides, box, elemStrides,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int HDQK, int HDV, int STAGES, int MODE, bool SPLIT>
cudaError_t launch(const AttentionSm90Args& a, cudaStream_t stream) {
  using L = Layout<HDQK, HDV, STAGES, SPLIT>;
  CUtensorMap mapQ, mapK, mapKShared, mapV;
  const int shared = a.kShared ? a.sharedDim : 0;
  if (!encodeRows(&mapQ, a.q, a.T, int64_t(a.nq) * HDQK, kRows) ||
      !encodeRows(&mapK, a.k, a.T, int64_t(a.nkv) * (HDQK - shared), kKeys) ||
      !encodeRows(&mapKShared, shared ? a.kShared : a.k, a.T, shared ? shared : int64_t(a.nkv) * HDQK, kKeys) ||
      !encodeRows(&mapV, a.v, a.T, int64_t(a.nkv) * HDV, kKeys))
    return cudaErrorInvalidValue;
  auto kernel = attentionSm90Kernel<HDQK, HDV, STAGES, MODE, SPLIT>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(L::kSmem));
  if (err != cudaSuccess) return err;
  constexpr float kLog2e = 1.4426950408889634f;
  const unsigned grid = unsigned(int64_t(a.nTiles) * a.nq);
  kernel<<<grid, kThreads, L::kSmem, stream>>>(mapQ, mapK, mapKShared, mapV, static_cast<bf16*>(a.out), a.tiles, a.nTiles,
                                               a.nq, a.nkv, a.scale * kLog2e, attentionSm90HeadGroup(a), shared / 64);
  return cudaGetLastError();
}

template <int MODE, int STAGES, bool SPLIT = false>
cudaError_t launchDims(const AttentionSm90Args& a, cudaStream_t stream) {
  if (a.hd == 128) return launch<128, 128, STAGES, MODE, SPLIT>(a, stream);
  if (a.hd == 192) return launch<192, 128, 2, MODE, SPLIT>(a, stream);  // 3 stages: 288 KB of shared memory
  return launch<64, 64, STAGES, MODE, SPLIT>(a, stream);
}

}  // namespace

// Whether this build holds the kernel's sm_90a machine code: cmake/cuda.cmake compiles this file with
// the sm_90a target where the architectures name 90 and passes 0 here where they do not.
// Standalone builds (scripts/kernels/attention_sm90.sh) pass -gencode=arch=compute_90a,code=sm_90a.
#ifndef EPS_ATTENTION_SM90A
#define EPS_ATTENTION_SM90A 1
#endif

bool attentionSm90Supported(int device) {
  if (!EPS_ATTENTION_SM90A) return false;
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    return false;
  return major == 9 && minor == 0 && encodeTiled() != nullptr;
}

bool attentionSm90Takes(const AttentionSm90Args& a) {
  auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  const bool dims = (a.hd == 64 && a.hdv == 64) || (a.hd == 128 && a.hdv == 128) || (a.hd == 192 && a.hdv == 128);
  return dims && a.nq > 0 && a.nkv > 0 && a.nq % a.nkv == 0 && a.T > 0 && a.T < (int64_t(1) << 31) - kKeys &&
         a.nTiles > 0 && int64_t(a.nTiles) * a.nq < (int64_t(1) << 31) && a.headGroup >= 0 && a.tiles && aligned(a.out) &&
         aligned(a.q) && aligned(a.k) && aligned(a.v) &&
         (a.sharedDim == 0 || (a.kShared && aligned(a.kShared) && a.sharedDim % 64 == 0 && a.sharedDim < a.hd));
}

int attentionSm90HeadGroup(const AttentionSm90Args& a) {
  if (a.headGroup > 0) return a.headGroup < a.nq ? a.headGroup : a.nq;
  // The default: at most 16 KV heads per group. With few KV heads (GQA 32/8, MLA at 16 heads) that is every
  // head, the order measured best there; with many (MLA's 128) heads-fastest puts a different head's K/V in
  // every resident CTA, far past the L2, and a head's tiles reuse nothing (0.6x cuDNN on an H100, session 5).
  const int kvGroup = 16 * (a.nq / a.nkv);
  return kvGroup < a.nq ? kvGroup : a.nq;
}

cudaError_t attentionSm90(const AttentionSm90Args& a, cudaStream_t stream) {
  if (!attentionSm90Takes(a)) return cudaErrorInvalidValue;
  switch (a.mode) {
    case 0: return launchDims<0, 2>(a, stream);
    case 1: return launchDims<1, 2>(a, stream);
    case 2: return launchDims<2, 2>(a, stream);
    case 3: return launchDims<2, 3>(a, stream);
    case 4: return launchDims<0, 3>(a, stream);
    case 5: return launchDims<0, 2, true>(a, stream);
    case 6: return launchDims<1, 2, true>(a, stream);
    case 7: return launchDims<2, 2, true>(a, stream);
    // The default, the fastest schedule per head dim on an H100: 64/64 and 128/128 ping-pong with 3 stages (mode 3,
    // docs/bench/2026-12-07-s5-h100-attention-sm90.txt); 192/128, whose 2 stages leave no room for a third,
    // ping-pong with K and V released apart (mode 7: K's stage frees after S, so the next S GEMM can overlap
    // this block's P V): timed in one process beside cuDNN in alternation it led serial (mode 1, the default
    // before) on every 192/128 case, 16 and 128 heads, 4K-16K, by 1-8% (docs/bench/2026-12-07-s8-h100-call5-6.txt).
    default: return a.hd == 192 ? launchDims<2, 2, true>(a, stream) : launchDims<2, 3>(a, stream);
  }
}

}  // namespace eps::cuda
