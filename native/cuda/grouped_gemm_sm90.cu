// A Hopper grouped GEMM for the experts (issue 12): see grouped_gemm_sm90.h for the contract.
//
// Design (sm_90a only; build with -gencode=arch=compute_90a,code=sm_90a; other targets trap):
//   - tile BM x BN x BK = 128 x {128, 256} x 64, bf16 operands in shared memory with the 128-byte swizzle
//     that TMA writes and wgmma reads; both operands K-major (a[R,K] rows, w[e][N,K] rows), so the
//     wgmma is the plain "TN" form: no transpose.
//   - 384 threads = 3 warpgroups. Warpgroup 0 is the producer (one thread of warp 0 issues the TMA
//     copies; registers lowered to 40 with setmaxnreg); warpgroups 1 and 2 are consumers (raised to
//     232), each owning 64 rows of the tile (wgmma m64nBNk16, fp32 accumulators in registers).
//   - STAGES-deep ring of (A, B) stages; a "full" mbarrier per stage (TMA completes its bytes on it)
//     and an "empty" mbarrier per stage (one arrival per consumer warp once its wgmmas have read it).
//     Consumers keep one wgmma group in flight (wait_group 1) and free the previous stage.
//   - persistent grid (one CTA per SM): each CTA reads offsets[S+1] from device memory, builds the
//     per-segment tile prefix in shared memory with a block scan, and walks tiles t = blockIdx.x,
//     + gridDim.x, ...; a tile maps to (segment, n-tile, m-tile) by binary search; within a segment
//     the m-tiles go in bands of 8 (n-tile by n-tile, m-tile fastest) so that the CTAs running together
//     share a few weight tiles and a band of rows through L2.
//   - A's tensor map spans all R rows: a tile whose 128 rows run past its segment loads the next
//     segment's rows (or TMA's zero fill past R) and the epilogue masks them out; w's tensor map is
//     3-D [E, N, K], so an n-tile past N is zero-filled within its expert.
//   - config 5 (auto from 192 rows per expert since session 8; session 4's design): config 3's tile with
//     4 stages, which fit because its epilogue stages one 64x64 box at a time through two 8 KB slots per
//     warpgroup (32 KB instead of 64 KB): the producer runs two stages ahead instead of one. Each box
//     commits one TMA-store group, so waiting until at most one group is pending frees the slot about to
//     be written.
//   - epilogue, configs 3 and 4 (4: auto below 192 rows per expert; 3: where config 5's tables do not
//     fit): each consumer warpgroup writes its 64 x BN bf16 tile into its own staging buffer (64x64
//     boxes, 128-byte swizzle: conflict-free), then one thread issues TMA stores (bulk groups) that run
//     on while the warpgroup starts the next tile's mainloop;
//     the buffer is reused after cp.async.bulk.wait_group.read. A warpgroup whose 64 rows run past the
//     segment end stores from the buffer with masked 16-byte stores instead (a TMA box cannot be
//     clipped to a segment). Configs 1 and 2 store straight from the accumulator fragments (4-byte
//     stores, rows masked), which leaves the tensor cores idle for longer between tiles.
//   - fused SwiGLU (args.swiglu, the SWIGLU template flag; the plain GEMM's instantiations are unchanged):
//     w is gate/up [E, 2I, K] and out is [R, I]. A tile keeps its BN accumulator columns but they cover
//     TN = BN/2 outputs c0 = nt*TN ...: the producer loads B as two boxes of TN rows, gate rows
//     [c0, c0+TN) and up rows [I+c0, I+c0+TN), the second TN*128 bytes behind the first (8 KB or 16 KB,
//     whole 1024-byte swizzle atoms, so the stage is the same BN-row operand to the unchanged wgmma
//     descriptors, and the expect-tx count is still the stage's bytes). So accumulator group j < TN/8
//     holds gate columns and group j + TN/8 the matching up columns in the same thread's registers: the
//     epilogue combines them (swigluOf, bit for bit the unfused GEMM + swiglu kernel) and stores TN
//     columns through either epilogue. Gate boxes running past I read up rows and up boxes past 2I are
//     zero-filled by TMA; both only feed masked columns (past I). Why this split: gate and up of an
//     output meet in one thread (no exchange through shared memory or between CTAs), and the tiles and
//     mainloop are the plain GEMM's (ceil(I/TN) n-tiles); what is saved is gateUp's store and the swiglu
//     kernel's round trip through HBM, for an exp and a division per output in the epilogue (the fast ones:
//     dtype.cuh's swigluValue).
#include "grouped_gemm_sm90.h"
#include "sm90.cuh"
#include "dtype.cuh"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>


// In the passes for other targets the kernel body is compiled out, leaving helpers unreferenced.
#pragma nv_diag_suppress 177

namespace eps::cuda {

namespace {

using namespace sm90;

constexpr int BM = 128;
constexpr int BK = 64;  // 64 bf16 = 128 bytes: one swizzle row
constexpr int kThreads = 384;
constexpr int kConsumerWarps = 8;

// Epilogues: from the accumulator fragments straight to global memory (kEpiReg); through a staging tile of
// the warpgroup's whole 64 x BN output (kEpiFull); or through two 64x64 box slots per warpgroup that the
// boxes take in turn (kEpiSlots: 32 KB of staging instead of 64 KB at BN = 256, room for a 4th stage).
enum Epi { kEpiReg = 0, kEpiFull = 1, kEpiSlots = 2 };

template <int BN, int STAGES, int EPI>
struct Cfg {
  static constexpr int kABytes = BM * BK * 2;
  static constexpr int kBBytes = BN * BK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kPipeBytes = STAGES * kStageBytes;
  // Staging per consumer warpgroup, in 64x64 boxes of 8 KB, each in the 128-byte swizzle (conflict-free
  // fragment writes, and what the TMA store reads): BN/64 boxes (the fused SwiGLU's BN/2 output columns
  // use the first half), or 2 slots.
  static constexpr int kBoxesPerWg = EPI == kEpiFull ? BN / 64 : (EPI == kEpiSlots ? 2 : 0);
  static constexpr int kCBytes = 2 * kBoxesPerWg * 8192;
  static constexpr int kBarOffset = kPipeBytes + kCBytes;
  static size_t smemBytes(int S) { return 1024 + size_t(kBarOffset) + 2 * STAGES * 8 + 3 * 4 * size_t(S + 1) + 16; }
};

// ---- PTX wrappers (the shared ones: sm90.cuh) -------------------------------------------------

__device__ __forceinline__ void tmaLoad3d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

__device__ __forceinline__ void tmaStore2d(const CUtensorMap* map, uint32_t src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(src), "r"(c0), "r"(c1)
               : "memory");
}
__device__ __forceinline__ void bulkCommit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
__device__ __forceinline__ void bulkWaitRead0() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
__device__ __forceinline__ void bulkWaitRead1() { asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory"); }
__device__ __forceinline__ void bulkWait0() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
__device__ __forceinline__ void fenceProxyAsyncSmem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void stShared32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint4 ldShared128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr) : "memory");
  return v;
}
// ---- wgmma m64nNk16, bf16 x bf16 -> fp32, both operands from shared memory, K-major (generated; N = 128
// is sm90.cuh's) ----

__device__ __forceinline__ void wgmma_m64n256k16(float* d, uint64_t descA, uint64_t descB, int scaleD) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
      "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
      "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : EPS_SM90_ACC128(d)
      : "l"(descA), "l"(descB), "r"(scaleD));
}

template <int BN>
__device__ __forceinline__ void wgmmaTile(float* d, uint64_t descA, uint64_t descB, int scaleD) {
  if constexpr (BN == 128) wgmmaSS_m64n128k16(d, descA, descB, scaleD);
  else wgmma_m64n256k16(d, descA, descB, scaleD);
}

// One SwiGLU output from its gate and up accumulators, bit for bit what the unfused path computes: the GEMM
// rounds both to bf16 (gateUp [R, 2I]), then the swiglu op's vector kernel applies swigluValue (dtype.cuh) to
// them; the caller rounds the result to bf16 (nearest) on store as that kernel does.
__device__ __forceinline__ float swigluOf(float gateAcc, float upAcc) {
  return swigluValue(__bfloat162float(__float2bfloat16_rn(gateAcc)), __bfloat162float(__float2bfloat16_rn(upAcc)));
}

// ---- the kernel -------------------------------------------------------------------------------

template <int BN, int STAGES, int EPI, bool SWIGLU>
__global__ void __launch_bounds__(kThreads, 1)
    groupedGemmSm90Kernel(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB,
                          const __grid_constant__ CUtensorMap tmC, __nv_bfloat16* __restrict__ out,
                          const int32_t* __restrict__ offsets, int S, int E, int N, int K, int R, int band) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Cfg<BN, STAGES, EPI>;
  constexpr bool TMA_STORE = EPI != kEpiReg;
  extern __shared__ uint8_t smemRaw[];
  __shared__ int warpSums[kThreads / 32];
  __shared__ int totalTilesS;

  const uint32_t rawAddr = smemAddr(smemRaw);
  const uint32_t base = (rawAddr + 1023u) & ~1023u;
  uint8_t* basePtr = smemRaw + (base - rawAddr);
  const uint32_t sA = base;
  const uint32_t sB = base + STAGES * C::kABytes;
  const uint32_t sC = base + C::kPipeBytes;
  const uint32_t fullBar = base + C::kBarOffset;
  const uint32_t emptyBar = fullBar + STAGES * 8;
  int* tileStart = reinterpret_cast<int*>(basePtr + C::kBarOffset + 2 * STAGES * 8);
  int* rowStart = tileStart + (S + 1);
  int* rowEnd = rowStart + (S + 1);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // Output columns per tile and in all: with SWIGLU a tile's BN accumulator columns are TN gate columns
  // then the TN up columns of the same outputs, and out is [R, N/2].
  constexpr int TN = SWIGLU ? BN / 2 : BN;
  const int outN = SWIGLU ? N / 2 : N;
  const int nTilesN = (outN + TN - 1) / TN;
  const int nK = (K + BK - 1) / BK;

  if (tid == 0) {
    prefetchTensorMap(&tmA);
    prefetchTensorMap(&tmB);
    if (TMA_STORE) prefetchTensorMap(&tmC);
    for (int i = 0; i < STAGES; ++i) {
      mbarInit(fullBar + 8 * i, 1);
      mbarInit(emptyBar + 8 * i, kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }

  // Per-segment tile prefix: thread tid owns segments [s0, s1); a block-wide exclusive scan.
  auto clampRow = [R](int v) { return v < 0 ? 0 : (v > R ? R : v); };
  const int chunk = (S + kThreads - 1) / kThreads;
  const int s0 = min(S, tid * chunk), s1 = min(S, s0 + chunk);
  int local = 0;
  for (int s = s0; s < s1; ++s) {
    const int r0 = clampRow(offsets[s]), r1 = max(r0, clampRow(offsets[s + 1]));
    local += ((r1 - r0 + BM - 1) / BM) * nTilesN;
  }
  int incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warpSums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int v = lane < kThreads / 32 ? warpSums[lane] : 0;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    if (lane < kThreads / 32) warpSums[lane] = x - v;
    if (lane == 31) totalTilesS = x;
  }
  __syncthreads();
  {
    int run = warpSums[warp] + incl - local;
    for (int s = s0; s < s1; ++s) {
      const int r0 = clampRow(offsets[s]), r1 = max(r0, clampRow(offsets[s + 1]));
      tileStart[s] = run;
      rowStart[s] = r0;
      rowEnd[s] = r1;
      run += ((r1 - r0 + BM - 1) / BM) * nTilesN;
    }
    if (tid == 0) tileStart[S] = totalTilesS;
  }
  __syncthreads();
  const int totalTiles = totalTilesS;

  // Tile t -> (segment s, m-tile, n-tile): s is the last segment whose first tile is <= t (it has tiles).
  // Within a segment the m-tiles go in bands of `band`; a band's tiles run n-tile by n-tile with the
  // m-tile fastest, so the CTAs running together share a few weight tiles and a band of rows in L2.
  auto decode = [&](int t, int& s, int& mt, int& nt) {
    int lo = 0, hi = S - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (tileStart[mid] <= t) lo = mid;
      else hi = mid - 1;
    }
    s = lo;
    const int mTiles = (rowEnd[s] - rowStart[s] + BM - 1) / BM;
    const int localT = t - tileStart[s];
    const int g = min(band, mTiles);
    const int b = localT / (g * nTilesN);
    const int rem = localT - b * g * nTilesN;
    const int gb = min(g, mTiles - b * g);
    nt = rem / gb;
    mt = b * g + (rem - nt * gb);
  };

  const int wg = warp / 4;
  if (wg == 0) {
    // ---- producer ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp == 0 && lane == 0) {
      int it = 0;
      for (int t = blockIdx.x; t < totalTiles; t += gridDim.x) {
        int s, mt, nt;
        decode(t, s, mt, nt);
        const int row = rowStart[s] + mt * BM, col = nt * TN, e = s % E;
        for (int kb = 0; kb < nK; ++kb, ++it) {
          const int stage = it % STAGES;
          const uint32_t phase = (it / STAGES) & 1;
          mbarWait(emptyBar + 8 * stage, phase ^ 1);
          mbarExpectTx(fullBar + 8 * stage, C::kStageBytes);
          tmaLoad2d(sA + stage * C::kABytes, &tmA, fullBar + 8 * stage, kb * BK, row);
          tmaLoad3d(sB + stage * C::kBBytes, &tmB, fullBar + 8 * stage, kb * BK, col, e);
          // The up rows of the same outputs right behind the gate rows: TN rows of 128 bytes, a whole
          // number of 1024-byte swizzle atoms, so the stage reads as one BN-row operand.
          if constexpr (SWIGLU)
            tmaLoad3d(sB + stage * C::kBBytes + TN * BK * 2, &tmB, fullBar + 8 * stage, kb * BK, outN + col, e);
        }
      }
    }
  } else {
    // ---- consumers: warpgroup 1 rows 0..63 of the tile, warpgroup 2 rows 64..127 ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    const int cw = wg - 1;
    const int wIn = warp % 4;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
    int it = 0;
    for (int t = blockIdx.x; t < totalTiles; t += gridDim.x) {
      int s, mt, nt;
      decode(t, s, mt, nt);
      for (int kb = 0; kb < nK; ++kb, ++it) {
        const int stage = it % STAGES;
        const uint32_t phase = (it / STAGES) & 1;
        mbarWait(fullBar + 8 * stage, phase);
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fenceReg(acc[i]);
        wgmmaFence();
        const uint32_t a0 = sA + stage * C::kABytes + cw * 64 * BK * 2;
        const uint32_t b0 = sB + stage * C::kBBytes;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk)
          wgmmaTile<BN>(acc, descKMajor(a0 + kk * 32), descKMajor(b0 + kk * 32), (kb | kk) != 0);
        wgmmaCommit();
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fenceReg(acc[i]);
        if (kb > 0) {
          wgmmaWait<1>();
          if (lane == 0) mbarArrive(emptyBar + 8 * ((it - 1) % STAGES));
        }
      }
      wgmmaWait<0>();
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) fenceReg(acc[i]);
      if (lane == 0) mbarArrive(emptyBar + 8 * ((it - 1) % STAGES));

      const int rEnd = rowEnd[s];
      const int tileRow = rowStart[s] + mt * BM + cw * 64;  // this warpgroup's first row
      // Fragment (j, h) of thread `lane` in warp wIn: row wIn*16 + lane/4 + 8h, accumulator columns
      // 8j + 2*(lane%4) + {0,1} in acc[4j + 2h + {0,1}]. Output group j < TN/8: those columns, or with
      // SWIGLU their gate (group j) and up (group j + TN/8, the same thread's registers) combined.
      auto outPair = [&](int j, int h) {
        const int g = 4 * j + 2 * h;
        if constexpr (SWIGLU)
          return make_float2(swigluOf(acc[g], acc[g + TN / 2]), swigluOf(acc[g + 1], acc[g + 1 + TN / 2]));
        else
          return make_float2(acc[g], acc[g + 1]);
      };
      if constexpr (!TMA_STORE) {
        // Epilogue from the fragments: 4-byte stores, rows and columns masked.
        const int rowA = tileRow + wIn * 16 + lane / 4;
        const int rowB = rowA + 8;
        const int colBase = nt * TN + 2 * (lane % 4);
        __nv_bfloat16* outA = out + size_t(rowA) * outN;
        __nv_bfloat16* outB = out + size_t(rowB) * outN;
#pragma unroll
        for (int j = 0; j < TN / 8; ++j) {
          const int col = colBase + 8 * j;
          if (col < outN) {
            if (rowA < rEnd) *reinterpret_cast<__nv_bfloat162*>(outA + col) = __float22bfloat162_rn(outPair(j, 0));
            if (rowB < rEnd) *reinterpret_cast<__nv_bfloat162*>(outB + col) = __float22bfloat162_rn(outPair(j, 1));
          }
        }
      } else if constexpr (EPI == kEpiSlots) {
        // Epilogue through two box slots, one 64x64 box (128-byte swizzle) at a time: the box's fragments
        // go to slot bx & 1, then one TMA store (it runs on while the warpgroup fills the other slot and
        // starts the next tile's mainloop) when all 64 rows lie in the segment, else masked 16-byte stores.
        static_assert((TN / 64) % 2 == 0, "a tile's boxes alternate between the slots: an even count");
        const int tIn = tid % 128;
        const uint32_t myC = sC + cw * (2 * 8192);
        const bool fullRows = tileRow + 64 <= rEnd;
        const int rA = wIn * 16 + lane / 4;
#pragma unroll
        for (int bx = 0; bx < TN / 64; ++bx) {
          const uint32_t box = myC + (bx & 1) * 8192;
          // Each box commits one store group, empty or not, so the newest group is always the other
          // slot's: once at most one is pending, this slot's last store has read it.
          if (tIn == 0) bulkWaitRead1();
          namedBarrierSync(1 + cw, 128);
#pragma unroll
          for (int ch = 0; ch < 8; ++ch) {
            const float2 v0 = outPair(bx * 8 + ch, 0), v1 = outPair(bx * 8 + ch, 1);
            stShared32(box + rA * 128 + ((ch ^ (rA & 7)) << 4) + (lane % 4) * 4, packBf16(v0.x, v0.y));
            stShared32(box + (rA + 8) * 128 + ((ch ^ ((rA + 8) & 7)) << 4) + (lane % 4) * 4, packBf16(v1.x, v1.y));
          }
          fenceProxyAsyncSmem();
          namedBarrierSync(1 + cw, 128);
          const int col0 = nt * TN + bx * 64;
          if (tIn == 0) {
            if (fullRows && col0 < outN) tmaStore2d(&tmC, box, col0, tileRow);
            bulkCommit();
          }
          if (!fullRows) {
#pragma unroll
            for (int i = 0; i < (64 * 8) / 128; ++i) {
              const int idx = i * 128 + tIn;
              const int r = idx / 8, cc = idx % 8;
              const int row = tileRow + r, col = col0 + cc * 8;
              if (row < rEnd && col < outN)
                *reinterpret_cast<uint4*>(out + size_t(row) * outN + col) =
                    ldShared128(box + r * 128 + ((cc ^ (r & 7)) << 4));
            }
          }
        }
      } else {
        // Epilogue through shared memory: the warpgroup's 64 x TN output tile goes to its staging buffer
        // (TN/64 boxes of 64x64, 128-byte swizzle), then one TMA store per box when all 64 rows lie in
        // the segment (it runs on while the next tile's mainloop starts), else masked 16-byte stores.
        const int tIn = tid % 128;
        const uint32_t myC = sC + cw * (C::kBoxesPerWg * 8192);
        if (tIn == 0) bulkWaitRead0();  // the previous tile's TMA store has read the buffer
        namedBarrierSync(1 + cw, 128);
        const int rA = wIn * 16 + lane / 4;
#pragma unroll
        for (int j = 0; j < TN / 8; ++j) {
          const uint32_t box = myC + (j / 8) * 8192;
          const int ch = j % 8;
          const float2 v0 = outPair(j, 0), v1 = outPair(j, 1);
          stShared32(box + rA * 128 + ((ch ^ (rA & 7)) << 4) + (lane % 4) * 4, packBf16(v0.x, v0.y));
          stShared32(box + (rA + 8) * 128 + ((ch ^ ((rA + 8) & 7)) << 4) + (lane % 4) * 4, packBf16(v1.x, v1.y));
        }
        fenceProxyAsyncSmem();
        namedBarrierSync(1 + cw, 128);
        if (tileRow + 64 <= rEnd) {
          if (tIn == 0) {
#pragma unroll
            for (int bx = 0; bx < TN / 64; ++bx)
              if (nt * TN + bx * 64 < outN) tmaStore2d(&tmC, myC + bx * 8192, nt * TN + bx * 64, tileRow);
            bulkCommit();
          }
        } else {
#pragma unroll 4
          for (int i = 0; i < (64 * TN / 8) / 128; ++i) {
            const int idx = i * 128 + tIn;
            const int r = idx / (TN / 8), cc = idx % (TN / 8);
            const int row = tileRow + r, col = nt * TN + cc * 8;
            if (row < rEnd && col < outN) {
              const uint4 v = ldShared128(myC + (cc / 8) * 8192 + r * 128 + (((cc % 8) ^ (r & 7)) << 4));
              *reinterpret_cast<uint4*>(out + size_t(row) * outN + col) = v;
            }
          }
        }
      }
    }
    if (TMA_STORE && tid % 128 == 0) bulkWait0();
  }
#elif defined(__CUDA_ARCH__)
  // Built without the sm_90a target (e.g. a plain sm_90 or sm_80 pass of a multi-architecture build):
  // no wgmma here. Fail loudly rather than leave the output unwritten.
  __trap();
#endif
}

// ---- host side --------------------------------------------------------------------------------

bool encode(CUtensorMap* map, const void* ptr, cuuint32_t rank, const cuuint64_t* dims, const cuuint64_t* strides,
            const cuuint32_t* box) {
  auto fn = encodeTiled();
  if (!fn) return false;
  const cuuint32_t elemStrides[3] = {1, 1, 1};
  return fn(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, const_cast<void*>(ptr), dims, strides, box, elemStrides,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

struct DeviceInfo {
  int sms = 0;
  int maxSmem = 0;
  int major = 0, minor = 0;
};

DeviceInfo deviceInfo(int device) {
  static std::mutex mu;
  static DeviceInfo cache[64];
  static bool have[64] = {};
  std::lock_guard<std::mutex> lock(mu);
  if (device < 0 || device >= 64) return {};
  if (!have[device]) {
    DeviceInfo d;
    cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device);
    cudaDeviceGetAttribute(&d.maxSmem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, device);
    cache[device] = d;
    have[device] = true;
  }
  return cache[device];
}

// Bands of m-tiles (decode()): 0 picks the default.
constexpr int kDefaultBand = 8;

template <int BN, int STAGES, int EPI, bool SWIGLU>
cudaError_t launch(const GroupedGemmSm90Args& p, cudaStream_t stream) {
  using C = Cfg<BN, STAGES, EPI>;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const DeviceInfo info = deviceInfo(device);
  const size_t smem = C::smemBytes(p.S);
  if (info.sms <= 0 || smem > size_t(info.maxSmem)) return cudaErrorInvalidValue;

  // With SWIGLU each stage's B is two boxes of BN/2 rows (gate, up) and out has N/2 columns.
  const int outN = SWIGLU ? p.N / 2 : p.N;
  CUtensorMap mapA, mapB, mapC;
  const cuuint64_t dimsA[2] = {cuuint64_t(p.K), cuuint64_t(p.R)};
  const cuuint64_t stridesA[1] = {cuuint64_t(p.K) * 2};
  const cuuint32_t boxA[2] = {BK, BM};
  const cuuint64_t dimsB[3] = {cuuint64_t(p.K), cuuint64_t(p.N), cuuint64_t(p.E)};
  const cuuint64_t stridesB[2] = {cuuint64_t(p.K) * 2, cuuint64_t(p.K) * cuuint64_t(p.N) * 2};
  const cuuint32_t boxB[3] = {BK, SWIGLU ? BN / 2 : BN, 1};
  const cuuint64_t dimsC[2] = {cuuint64_t(outN), cuuint64_t(p.R)};
  const cuuint64_t stridesC[1] = {cuuint64_t(outN) * 2};
  const cuuint32_t boxC[2] = {64, 64};
  if (!encode(&mapA, p.a, 2, dimsA, stridesA, boxA) || !encode(&mapB, p.w, 3, dimsB, stridesB, boxB) ||
      !encode(&mapC, p.out, 2, dimsC, stridesC, boxC))
    return cudaErrorInvalidValue;

  auto kernel = groupedGemmSm90Kernel<BN, STAGES, EPI, SWIGLU>;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const int band = p.bandM > 0 ? p.bandM : kDefaultBand;
  kernel<<<info.sms, kThreads, smem, stream>>>(mapA, mapB, mapC, static_cast<__nv_bfloat16*>(p.out), p.offsets, p.S,
                                              p.E, p.N, p.K, int(p.R), band);
  return cudaGetLastError();
}

template <bool SWIGLU>
cudaError_t launchConfigOf(int config, const GroupedGemmSm90Args& p, cudaStream_t stream) {
  switch (config) {
    case 1: return launch<128, 6, kEpiReg, SWIGLU>(p, stream);
    case 2: return launch<256, 4, kEpiReg, SWIGLU>(p, stream);
    case 3: return launch<256, 3, kEpiFull, SWIGLU>(p, stream);
    case 4: return launch<128, 5, kEpiFull, SWIGLU>(p, stream);
    case 5: return launch<256, 4, kEpiSlots, SWIGLU>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launchConfig(int config, const GroupedGemmSm90Args& p, cudaStream_t stream) {
  return p.swiglu ? launchConfigOf<true>(config, p, stream) : launchConfigOf<false>(config, p, stream);
}

// Auto: the rows per expert on average are R / E (R is the allocation, known on the host without a
// sync; expert_matmul allocates exactly the routed rows). Measured on H100 (docs/bench/
// 2026-12-07-grouped-gemm-sm90.md): the 128x128 TMA-store tile wins below ~192 rows per expert (less
// padding in the last m-tile, more tiles to spread), the 128x256 tile from 256 up; there the 4-stage
// config 5 against the 3-stage config 3, timed in one process beside torch._grouped_mm in alternation
// (session 8, docs/bench/2026-12-07-s8-h100-call5-6.txt): >= torch at 34 of 36 points from 128 rows up
// against 30 of 36. With too many segments for its tables config 5 falls back to 3 (groupedGemmSm90).
int pickConfig(const GroupedGemmSm90Args& p) {
  if (p.config >= 1 && p.config <= 5) return p.config;
  return p.R < int64_t(192) * p.E ? 4 : 5;
}

}  // namespace

// Whether this build holds the kernel's sm_90a machine code. cmake/cuda.cmake compiles this file on its
// own with the sm_90a target wherever the architectures name 90, and passes 0 here where they do not
// (the kernel's body is compiled out then: it would trap). Standalone builds (scripts/kernels/
// grouped_gemm_sm90.sh) pass -gencode=arch=compute_90a,code=sm_90a themselves.
#ifndef EPS_GROUPED_GEMM_SM90A
#define EPS_GROUPED_GEMM_SM90A 1
#endif

bool groupedGemmSm90Supported(int device) {
  if (!EPS_GROUPED_GEMM_SM90A) return false;
  const DeviceInfo d = deviceInfo(device);
  return d.major == 9 && d.minor == 0 && encodeTiled() != nullptr;
}

bool groupedGemmSm90Takes(const GroupedGemmSm90Args& p) {
  auto aligned = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15) == 0; };
  return p.K > 0 && p.K % 8 == 0 && p.N > 0 && p.N % (p.swiglu ? 16 : 8) == 0 && p.E >= 1 && p.S >= 1 && p.R >= 1 &&
         p.R <= (int64_t(1) << 31) - 1 - BM && p.offsets && aligned(p.a) && aligned(p.w) && aligned(p.out) &&
         Cfg<128, 6, kEpiReg>::smemBytes(p.S) <= 227 * 1024;
}

namespace {
__global__ void countsToOffsetsKernel(const int32_t* __restrict__ counts, int S, int32_t* __restrict__ offsets) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int32_t row = 0;
  offsets[0] = 0;
  for (int s = 0; s < S; ++s) offsets[s + 1] = row += max(counts[s], 0);
}
}  // namespace

cudaError_t groupedGemmSm90Offsets(const int32_t* counts, int S, int32_t* offsets, cudaStream_t stream) {
  if (S < 1 || !counts || !offsets) return cudaErrorInvalidValue;
  countsToOffsetsKernel<<<1, 32, 0, stream>>>(counts, S, offsets);
  return cudaGetLastError();
}

cudaError_t groupedGemmSm90(const GroupedGemmSm90Args& p, cudaStream_t stream) {
  if (!groupedGemmSm90Takes(p)) return cudaErrorInvalidValue;
  // A staging-buffer config needs more shared memory: with many segments it falls back to less staging (5 -> 3),
  // then to direct stores (3 -> 2, 4 -> 1); 0: no fallback.
  auto fallbackOf = [](int config) { return config == 5 ? 3 : config == 3 ? 2 : config == 4 ? 1 : 0; };
  int config = pickConfig(p);
  cudaError_t err = launchConfig(config, p, stream);
  while (err == cudaErrorInvalidValue && (config = fallbackOf(config)) != 0) err = launchConfig(config, p, stream);
  return err;
}

}  // namespace eps::cuda
