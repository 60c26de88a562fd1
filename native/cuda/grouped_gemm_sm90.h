// A Hopper (sm_90a) grouped GEMM for the expert FFN: out[r] = a[r] @ w[s % E]^T for the rows r of
// segment s, the rows of a coming in S contiguous segments (expert_matmul's layout, native/ops.md).
//
// wgmma fed by TMA through a multi-stage shared-memory pipeline (mbarriers), one producer warp and two
// consumer warpgroups, a persistent grid that walks the (segment, n-tile, m-tile) work list it derives
// ON THE DEVICE from the per-segment row offsets: the host never needs the counts.
//
// bf16 in, fp32 accumulation, bf16 out. Any rows per segment, 0 included. Rows of `out` outside every
// segment (past offsets[S]) are not written.
//
// With `swiglu` the expert FFN's activation is fused in: w is the gate/up weight [E, N, K], N = 2I (rows
// [0, I) of each expert the gate projection, [I, 2I) the up projection), and out[r, c] for c < I is
// swiglu(gate, up) = g / (1 + exp(-g)) * u with g, u the bf16-rounded products of rows c and I + c: bit
// for bit this GEMM into gateUp [R, 2I] (same config; auto picks the same for both) followed by the
// engine's swiglu kernel.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace eps::cuda {

struct GroupedGemmSm90Args {
  const void* a;           // [R, K] bf16, row-major, 16-byte aligned
  const void* w;           // [E, N, K] bf16, row-major (each expert's weight K-major), 16-byte aligned
  void* out;               // [R, N] bf16, row-major ([R, N/2] with swiglu)
  const int32_t* offsets;  // DEVICE memory, [S+1]: segment s is rows [offsets[s], offsets[s+1]) and uses
                           // expert s % E; non-decreasing, offsets[0] >= 0 (values are clamped to [0, R])
  int64_t R;               // rows allocated in a and out (a bound, not the row count: that is on the device)
  int S;                   // segments (a multiple of E in expert_matmul; any S >= 1 here)
  int E, N, K;
  int config;              // 0 auto (R/E < 192 rows per expert: 4, else 5); 1: 128x128 tile, 6 stages; 2: 128x256 tile, 4 stages (both store
                           // from registers); 3: 128x256, 3 stages, 4: 128x128, 5 stages (both through
                           // shared memory and TMA stores, overlapping the next tile's mainloop); 5: 128x256,
                           // 4 stages, the TMA stores through two 64x64 slots per warpgroup (with more than
                           // ~160 segments its tables do not fit: 3 runs instead)
  int bandM;               // tile order: m-tiles of a segment in bands of bandM (0: default 8)
  bool swiglu;             // out = swiglu(gate, up) of w's two halves (above); needs N % 16 == 0
};

// Whether the kernel runs on `device`: compute capability 9.0 (H100/H200), the driver's tensor-map
// entry point found, and this build holding its sm_90a code (EPS_GROUPED_GEMM_SM90A, cmake/cuda.cmake).
bool groupedGemmSm90Supported(int device);

// Shapes it takes: K % 8 == 0 and N % 8 == 0 (16-byte rows for TMA and the stores; with swiglu
// N % 16 == 0, i.e. I % 8 == 0, for out's rows), K > 0, E >= 1, S >= 1, S small enough that its
// tables fit shared memory (a few thousand). Returns cudaErrorInvalidValue otherwise (the caller falls
// back to another kernel) and the launch's error else.
bool groupedGemmSm90Takes(const GroupedGemmSm90Args& args);
cudaError_t groupedGemmSm90(const GroupedGemmSm90Args& args, cudaStream_t stream);

// For counts in device memory: offsets[0] = 0, offsets[s + 1] = offsets[s] + max(counts[s], 0) for s < S,
// enqueued on `stream` (one thread: S is experts x ranks, small).
cudaError_t groupedGemmSm90Offsets(const int32_t* counts, int S, int32_t* offsets, cudaStream_t stream);

}  // namespace eps::cuda
