// A Hopper (sm_90a) prefill attention kernel in the FlashAttention-3 design (issue 13): causal softmax
// attention within packed sequences, grouped KV heads, bf16 in and out (the `attention` op's contract,
// native/ops.md). TMA loads by a producer warp through a shared-memory ring, two consumer warpgroups on
// wgmma (S = Q K^T from shared memory, O += P V with P in registers), online softmax in fp32.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace eps::cuda {

// One 128-row query tile of one sequence (the host cuts the sequences; the same list feeds the sm_80
// flash kernel of attention.cu, whose tiles are 128 rows too).
struct AttentionTile {
  int seqStart;  // first token of the sequence
  int seqLen;
  int q0;        // first query row of the tile, relative to seqStart
  int pad;
};
constexpr int kAttentionTileRows = 128;

struct AttentionSm90Args {
  void* out;                    // [T, nq, hdv] bf16
  const void* q;                // [T, nq, hd] bf16
  const void* k;                // [T, nkv, hd] bf16
  const void* v;                // [T, nkv, hdv] bf16
  const AttentionTile* tiles;   // DEVICE memory, nTiles entries (any order; longest rows first runs best)
  int nTiles;
  int64_t T;
  int nq, nkv, hd, hdv;
  float scale;                  // softmax scale (1/sqrt(hd) usually)
  int mode;                     // the schedule: -1 the measured best per head dim (the default); for measurement
                                // 0 intra-warpgroup overlap, 1 none, 2 overlap + ping-pong, 3 as 2 with 3 stages,
                                // 4 as 0 with 3 stages (3 stages for hd 64, 128; 192 keeps 2), 5-7 as 0-2 with
                                // K and V released apart (attention_sm90.cu's SPLIT)
  int headGroup;                // the grid's order: heads vary fastest within groups of headGroup heads, then
                                // tiles, then groups (nq: heads fastest; 1: a head's tiles together). 0: the
                                // default, attentionSm90HeadGroup's; others for measurement
  const void* kShared;          // [T, sharedDim] bf16 or null: the first sharedDim dims of every head's key (MLA's
  int sharedDim;                // rope key), k then [T, nkv, hd - sharedDim]; a multiple of 64 below hd (0: none)
};

// The head group a launch of `args` uses (args.headGroup, or the default when 0), in 1..nq.
int attentionSm90HeadGroup(const AttentionSm90Args& args);

// Whether the kernel runs on `device`: compute capability 9.0, the driver's tensor-map entry point
// found, and this build holding the sm_90a code (EPS_ATTENTION_SM90A, cmake/cuda.cmake).
bool attentionSm90Supported(int device);

// Shapes it takes: (hd, hdv) in {(64, 64), (128, 128), (192, 128)}, nq % nkv == 0, 16-byte aligned
// tensors, T < 2^31, nTiles * nq < 2^31, sharedDim a multiple of 64 below hd with kShared given (or 0).
bool attentionSm90Takes(const AttentionSm90Args& args);

// cudaErrorInvalidValue when it does not take the shape (the caller falls back), else the launch's error.
cudaError_t attentionSm90(const AttentionSm90Args& args, cudaStream_t stream);

}  // namespace eps::cuda
