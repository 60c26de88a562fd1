// The MoE routing ops on the device: router (softmax or sigmoid, greedy or group-limited top-k, renormalise,
// scale in one kernel), copy_cols (a block of columns, rows repeated: MLA's key assembly),
// moe_permute (a stable counting sort of (token, slot) pairs by expert), moe_unpermute (the
// weighted combine back per token) and moe_rank_dispatch (one row per (token, destination rank)).
#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

// ---------------------------------------------------------------- router

// One warp per token; its E scores and E choice scores (score + bias) live in shared memory, then the
// group scores. Top-k is k rounds of a warp-wide argmax, ties going to the lower index (as the CPU's
// partial_sort comparator), each round removing its winner; the group methods first keep topkGroup
// groups the same way and mask the others' experts to -inf. Scores are computed as the CPU does:
// softmax as exp(x - max) divided by the sum, sigmoid as 1 / (1 + exp(-x)); the selected (unbiased)
// scores are divided by their sum (renormalize) and multiplied by scale.
struct RouterArgs {
  int64_t T;
  int E, k, groups, keepGroups, method;  // method: 0 greedy, 1 group_limited_greedy, 2 noaux_tc
  bool renormalize, sigmoid;
  float scale;
};

// The warp's argmax of v[0..n) (ties: lower index; NaN and -inf never win); INT_MAX when none is finite-or-larger.
__device__ __forceinline__ void warpArgmax(const float* v, int n, int lane, float& best, int& bestIdx) {
  best = -INFINITY;
  bestIdx = INT_MAX;
  for (int e = lane; e < n; e += 32) {
    const float x = v[e];
    if (x > best || (x == best && x != -INFINITY && e < bestIdx)) {
      best = x;
      bestIdx = e;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bestIdx, o);
    if (ov > best || (ov == best && oi < bestIdx)) {
      best = ov;
      bestIdx = oi;
    }
  }
}

__global__ void routerKernel(int32_t* __restrict__ topkIdx, float* __restrict__ topkW, FloatSrc logits,
                             const float* __restrict__ bias, const int32_t* __restrict__ groupTable, RouterArgs a) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;
  if (t >= a.T) return;
  const int E = a.E, G = a.groups;
  float* p = smem + int64_t(warp) * (2 * E + 2 * G);
  float* c = p + E;
  float* gs = c + E;
  float* kept = gs + G;

  if (a.sigmoid) {
    for (int e = lane; e < E; e += 32) {
      const float v = logits[t * E + e];
      p[e] = isnan(v) ? -INFINITY : 1.0f / (1.0f + expf(-v));
    }
  } else {
    float maxLogit = -INFINITY;
    for (int e = lane; e < E; e += 32) {
      const float v = logits[t * E + e];
      p[e] = v;
      maxLogit = fmaxf(maxLogit, v);
    }
    maxLogit = warpMax(maxLogit);
    float sum = 0.0f;
    for (int e = lane; e < E; e += 32) {
      const float x = expf(p[e] - maxLogit);
      p[e] = x;
      if (!isnan(x)) sum += x;
    }
    sum = warpSum(sum);
    for (int e = lane; e < E; e += 32) p[e] = isnan(p[e]) ? -INFINITY : p[e] / sum;
  }
  for (int e = lane; e < E; e += 32) c[e] = bias ? p[e] + bias[e] : p[e];
  __syncwarp();

  if (a.method != 0) {
    // groupTable: groupOf[E], then the members of group g at [g*E/G, (g+1)*E/G).
    const int per = E / G;
    const int32_t* members = groupTable + E;
    for (int g = lane; g < G; g += 32) {
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int i = 0; i < per; ++i) {
        const float v = c[members[g * per + i]];
        if (v > b1) {
          b2 = b1;
          b1 = v;
        } else if (v > b2) {
          b2 = v;
        }
      }
      gs[g] = a.method == 1 ? b1 : b1 + b2;
      kept[g] = 0.0f;
    }
    __syncwarp();
    for (int j = 0; j < a.keepGroups; ++j) {
      float best;
      int bestIdx;
      warpArgmax(gs, G, lane, best, bestIdx);
      if (bestIdx == INT_MAX) {  // every group score -inf or NaN: the lowest not yet kept
        for (int g = 0; g < G; ++g)
          if (kept[g] == 0.0f) {
            bestIdx = g;
            break;
          }
      }
      __syncwarp();
      if (lane == 0) {
        kept[bestIdx] = 1.0f;
        gs[bestIdx] = -INFINITY;
      }
      __syncwarp();
    }
    for (int e = lane; e < E; e += 32)
      if (kept[groupTable[e]] == 0.0f) c[e] = -INFINITY;
    __syncwarp();
  }

  float picked = 0.0f;
  for (int j = 0; j < a.k; ++j) {
    float best;
    int bestIdx;
    warpArgmax(c, E, lane, best, bestIdx);
    // Every lane now holds the same winner. NaN or masked scores never win a comparison; fall back to
    // the lowest index not yet taken so the output is still k distinct experts.
    if (bestIdx == INT_MAX) {
      for (int e = 0; e < E; ++e)
        if (p[e] != -2.0f) {
          bestIdx = e;
          break;
        }
    }
    const float w = p[bestIdx];
    __syncwarp();
    if (lane == 0) {
      topkIdx[t * a.k + j] = bestIdx;
      topkW[t * a.k + j] = w;
      c[bestIdx] = -INFINITY;  // taken
      p[bestIdx] = -2.0f;      // taken (scores are >= 0 or -inf)
    }
    picked += w;
    __syncwarp();
  }
  const float divisor = a.renormalize ? (a.sigmoid ? picked + 1e-20f : picked) : 1.0f;
  for (int j = lane; j < a.k; j += 32) topkW[t * a.k + j] = topkW[t * a.k + j] / divisor * a.scale;
}

// One thread per element of the copied block: out[r, dstCol + c] = x[r / rep, srcCol + c].
__global__ void copyColsKernel(FloatDst out, FloatSrc x, int64_t R, int64_t No, int64_t Nx, int64_t dstCol, int64_t srcCol,
                               int64_t width, int64_t rep) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R * width) return;
  const int64_t r = i / width, col = i % width;
  out.store(r * No + dstCol + col, x[(r / rep) * Nx + srcCol + col]);
}

// The same copy in 16-byte chunks, where out and x share a dtype and every column offset, width and row length
// is a whole number of chunks (MLA's key assembly in bf16: 64 rope and 128 nope columns of 192): one thread per
// chunk, out[r, dstC + c] = x[r / rep, srcC + c] in chunks. The element-wise kernel moved 2 bytes a thread.
__global__ void copyColsChunkKernel(uint4* __restrict__ out, const uint4* __restrict__ x, int64_t R, int64_t noC, int64_t nxC,
                                    int64_t dstC, int64_t srcC, int64_t widthC, int64_t rep) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= R * widthC) return;
  const int64_t r = i / widthC, c = i - r * widthC;
  out[r * noC + dstC + c] = x[(r / rep) * nxC + srcC + c];
}

// ---------------------------------------------------------------- moe_permute

// The T*k pairs are cut into chunks of kChunk, in order. Pass 1 counts each chunk's pairs per
// expert; pass 2 (one block) turns the counts into each chunk's first row per expert and writes
// counts[]; pass 3 (a warp per chunk) walks its chunk in order, 32 pairs at a time, ranking equal
// experts among the lanes with __match_any_sync, so rows keep the (token, slot) order: stable.
constexpr int kChunk = 1024;

__global__ void permuteCountKernel(const int32_t* __restrict__ topkIdx, int64_t pairs, int E, int32_t* chunkCounts) {
  extern __shared__ int32_t hist[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const int64_t begin = int64_t(blockIdx.x) * kChunk;
  const int64_t end = begin + kChunk < pairs ? begin + kChunk : pairs;
  for (int64_t p = begin + threadIdx.x; p < end; p += blockDim.x) {
    const int32_t e = topkIdx[p];
    if (e >= 0 && e < E) atomicAdd(&hist[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) chunkCounts[int64_t(blockIdx.x) * E + e] = hist[e];
}

__global__ void permuteScanKernel(int32_t* chunkCounts, int64_t chunks, int E, int32_t* counts) {
  extern __shared__ int32_t totals[];  // [E]
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += chunkCounts[c * E + e];
    totals[e] = sum;
    counts[e] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t offset = 0;
    for (int e = 0; e < E; ++e) {
      const int32_t n = totals[e];
      totals[e] = offset;
      offset += n;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t row = totals[e];
    for (int64_t c = 0; c < chunks; ++c) {
      const int32_t n = chunkCounts[c * E + e];
      chunkCounts[c * E + e] = row;
      row += n;
    }
  }
}

__global__ void permuteMapKernel(const int32_t* __restrict__ topkIdx, int64_t pairs, int E,
                                 const int32_t* __restrict__ chunkStarts, int32_t* __restrict__ rowMap) {
  extern __shared__ int32_t cursor[];  // [E]: next free row per expert
  const int lane = threadIdx.x;
  for (int e = lane; e < E; e += 32) cursor[e] = chunkStarts[int64_t(blockIdx.x) * E + e];
  __syncwarp();
  const int64_t begin = int64_t(blockIdx.x) * kChunk;
  const int64_t end = begin + kChunk < pairs ? begin + kChunk : pairs;
  for (int64_t base = begin; base < end; base += 32) {
    const int64_t p = base + lane;
    int32_t e = p < end ? topkIdx[p] : -1;
    const bool valid = e >= 0 && e < E;
    if (!valid) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    int32_t row = -1;
    if (valid) row = cursor[e] + rank;
    __syncwarp();
    if (valid && rank == 0) cursor[e] += __popc(peers);
    __syncwarp();
    if (p < end) rowMap[p] = row;
  }
}

// out[rowMap[p]] = x[p / k] for every routed pair.
__global__ void permuteCopyKernel(FloatDst out, FloatSrc x, const int32_t* __restrict__ rowMap, int64_t pairs, int k,
                                  int64_t H, int esize) {
  for (int64_t p = blockIdx.x; p < pairs; p += gridDim.x) {
    const int32_t row = rowMap[p];
    if (row < 0) continue;
    const int64_t t = p / k;
    if (out.dtype == x.dtype) {
      const int64_t bytes = H * esize;
      const char* from = static_cast<const char*>(x.p) + t * bytes;
      char* to = static_cast<char*>(out.p) + int64_t(row) * bytes;
      if (((reinterpret_cast<uintptr_t>(from) | reinterpret_cast<uintptr_t>(to) | uintptr_t(bytes)) & 15) == 0) {
        const uint4* f4 = reinterpret_cast<const uint4*>(from);
        uint4* t4 = reinterpret_cast<uint4*>(to);
        for (int64_t v = threadIdx.x; v < bytes / 16; v += blockDim.x) t4[v] = f4[v];
        continue;
      }
    }
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) out.store(int64_t(row) * H + h, x[t * H + h]);
  }
}

// ---------------------------------------------------------------- moe_count

// counts[m, e] over the pairs of micro-chunk m = blockIdx.y; blocks along x split a chunk's pairs
// into slices, each histogrammed in shared memory and added to counts (zeroed before).
constexpr int kCountSlice = 4096;

__global__ void countKernel(int32_t* __restrict__ counts, const int32_t* __restrict__ topkIdx,
                            const int32_t* __restrict__ bounds, int k, int E) {
  extern __shared__ int32_t hist[];
  const int m = blockIdx.y;
  const int64_t chunkBegin = int64_t(bounds[m]) * k, chunkEnd = int64_t(bounds[m + 1]) * k;
  const int64_t begin = chunkBegin + int64_t(blockIdx.x) * kCountSlice;
  if (begin >= chunkEnd) return;
  const int64_t end = begin + kCountSlice < chunkEnd ? begin + kCountSlice : chunkEnd;
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  for (int64_t p = begin + threadIdx.x; p < end; p += blockDim.x) {
    const int32_t e = topkIdx[p];
    if (e >= 0 && e < E) atomicAdd(&hist[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    if (hist[e] != 0) atomicAdd(&counts[int64_t(m) * E + e], hist[e]);
}

// ---------------------------------------------------------------- moe_unpermute

// out[t] (+)= sum over slots j (in order) of topkW[t,j] * y[rowMap[t,j]], in fp32.
__global__ void unpermuteKernel(FloatDst out, FloatSrc y, const int32_t* __restrict__ rowMap,
                                const float* __restrict__ topkW, int64_t T, int64_t H, int64_t R, int k,
                                bool accumulate, DeviceErrorSlot* err) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    for (int64_t h = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; h < H; h += int64_t(gridDim.x) * blockDim.x) {
      float acc = 0.0f;
      for (int j = 0; j < k; ++j) {
        const int32_t r = rowMap[t * k + j];
        if (r < 0) continue;
        if (r >= R) {
          if (h == 0) reportIndexError(err, IndexCheck::UnpermuteRow, t * k + j, r, R);
          continue;
        }
        acc += topkW[t * k + j] * y[int64_t(r) * H + h];
      }
      if (accumulate) acc += out.load(t * H + h);
      out.store(t * H + h, acc);
    }
  }
}

// bf16 y and out, H a multiple of 8, 16-byte aligned: one thread per 8 columns of a token.
__global__ void unpermuteBf16Kernel(__nv_bfloat16* out, const __nv_bfloat16* y, const int32_t* __restrict__ rowMap,
                                    const float* __restrict__ topkW, int64_t T, int64_t H, int64_t R, int k,
                                    bool accumulate, DeviceErrorSlot* err) {
  const int64_t nv = H / 8;
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < nv; c += int64_t(gridDim.x) * blockDim.x) {
      float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      for (int j = 0; j < k; ++j) {
        const int32_t r = rowMap[t * k + j];
        if (r < 0) continue;
        if (r >= R) {
          if (c == 0) reportIndexError(err, IndexCheck::UnpermuteRow, t * k + j, r, R);
          continue;
        }
        const float w = topkW[t * k + j];
        float v[8];
        loadBf16x8(y + int64_t(r) * H + c * 8, v);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] += w * v[e];
      }
      if (accumulate) {
        float prior[8];
        loadBf16x8(out + t * H + c * 8, prior);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] += prior[e];
      }
      storeBf16x8(out + t * H + c * 8, acc);
    }
  }
}

// ---------------------------------------------------------------- moe_rank_count

constexpr int kRankCountSlice = 4096;  // tokens per block
constexpr int kRankCountMaxRanks = 4096;  // (2W + 1) ints of shared memory

// The rank holding expert e (offs[p] <= e < offs[p+1]), or -1 outside [0, offs[W]).
__device__ int rankOfExpert(int32_t e, const int32_t* offs, int W) {
  if (e < 0 || e >= offs[W]) return -1;
  int lo = 0, hi = W;  // offs[lo] <= e < offs[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (offs[mid] <= e) lo = mid;
    else hi = mid;
  }
  return lo;
}

// Grid (slices, M): a block counts the distinct ranks of each token of one slice of micro-chunk m in a
// shared histogram (a slot counts only if no earlier slot of the token is on the same rank).
__global__ void rankCountKernel(int32_t* __restrict__ counts, const int32_t* __restrict__ topkIdx,
                                const int32_t* __restrict__ offsets, const int32_t* __restrict__ bounds, int k, int W) {
  extern __shared__ int32_t shared[];
  int32_t* hist = shared;      // [W]
  int32_t* offs = shared + W;  // [W+1]
  const int m = blockIdx.y;
  const int64_t begin = int64_t(bounds[m]) + int64_t(blockIdx.x) * kRankCountSlice, chunkEnd = bounds[m + 1];
  if (begin >= chunkEnd) return;
  const int64_t end = begin + kRankCountSlice < chunkEnd ? begin + kRankCountSlice : chunkEnd;
  for (int p = threadIdx.x; p < W; p += blockDim.x) hist[p] = 0;
  for (int p = threadIdx.x; p <= W; p += blockDim.x) offs[p] = offsets[p];
  __syncthreads();
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) {
    for (int j = 0; j < k; ++j) {
      const int p = rankOfExpert(topkIdx[t * k + j], offs, W);
      if (p < 0) continue;
      bool earlier = false;
      for (int i = 0; i < j && !earlier; ++i) earlier = rankOfExpert(topkIdx[t * k + i], offs, W) == p;
      if (!earlier) atomicAdd(&hist[p], 1);
    }
  }
  __syncthreads();
  for (int p = threadIdx.x; p < W; p += blockDim.x)
    if (hist[p] != 0) atomicAdd(&counts[int64_t(m) * W + p], hist[p]);
}

// ---------------------------------------------------------------- moe_rank_dispatch

// Pass 1, one block per rank p: walks the tokens in tiles of blockDim, flags those with a slot on
// one of p's experts, and numbers them in token order with a block-wide exclusive scan; rowMap[t,p]
// gets the number (the row within p's block of rows) or -1, counts[p] the total. Few blocks (W), but
// each thread reads only k ids per tile, so this stays small next to the row copies of pass 2.
__global__ void rankScanKernel(const int32_t* __restrict__ topkIdx, const int32_t* __restrict__ offsets, int64_t T, int k,
                               int W, int32_t* __restrict__ rowMap, int32_t* __restrict__ counts) {
  __shared__ int32_t warpTotals[32];
  const int p = blockIdx.x;
  const int32_t lo = offsets[p], hi = offsets[p + 1];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  int32_t running = 0;
  for (int64_t base = 0; base < T; base += blockDim.x) {
    const int64_t t = base + threadIdx.x;
    int32_t flag = 0;
    if (t < T && hi > lo)
      for (int j = 0; j < k; ++j) {
        const int32_t e = topkIdx[t * k + j];
        if (e >= lo && e < hi) flag = 1;
      }
    // Inclusive scan within the warp, then over the warps' totals.
    int32_t incl = flag;
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) warpTotals[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      int32_t w = lane < warps ? warpTotals[lane] : 0;
      for (int o = 1; o < 32; o <<= 1) {
        const int32_t v = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += v;
      }
      if (lane < warps) warpTotals[lane] = w;  // inclusive over warps
    }
    __syncthreads();
    const int32_t before = (warp > 0 ? warpTotals[warp - 1] : 0) + incl - flag;
    if (t < T) rowMap[t * W + p] = flag ? running + before : -1;
    running += warpTotals[warps - 1];
    __syncthreads();  // warpTotals is rewritten by the next tile
  }
  if (threadIdx.x == 0) counts[p] = running;
}

// Pass 2, a block per token: each rank's first row (from counts) plus the token's number gives its
// row; the block copies x[t] there and writes the row's k slots for that rank, then rowMap[t,p]
// becomes the row itself.
__global__ void rankRowsKernel(FloatDst out, FloatSrc x, const int32_t* __restrict__ topkIdx, const float* __restrict__ topkW,
                               const int32_t* __restrict__ offsets, const int32_t* __restrict__ counts, int64_t T, int64_t H,
                               int k, int W, int32_t* __restrict__ rowMap, int32_t* __restrict__ localIdx,
                               float* __restrict__ localW) {
  extern __shared__ int32_t firstRow[];  // [W]
  if (threadIdx.x == 0) {
    int32_t row = 0;
    for (int p = 0; p < W; ++p) {
      firstRow[p] = row;
      row += counts[p];
    }
  }
  __syncthreads();
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    for (int p = 0; p < W; ++p) {
      const int32_t local = rowMap[t * W + p];
      if (local >= 0) {
        const int64_t row = int64_t(firstRow[p]) + local;
        for (int64_t h = threadIdx.x; h < H; h += blockDim.x) out.store(row * H + h, x[t * H + h]);
        const int32_t lo = offsets[p], hi = offsets[p + 1];
        for (int j = threadIdx.x; j < k; j += blockDim.x) {
          const int32_t e = topkIdx[t * k + j];
          const bool here = e >= lo && e < hi;
          localIdx[row * k + j] = here ? e - lo : -1;
          localW[row * k + j] = here ? topkW[t * k + j] : 0.0f;
        }
      }
      __syncthreads();  // every thread has read rowMap[t,p] before it changes
      if (threadIdx.x == 0 && local >= 0) rowMap[t * W + p] = firstRow[p] + local;
    }
  }
}

}  // namespace

// tensors: topkIdx[T,k] i32, topkW[T,k] f32, logits[T,E], bias[E] f32 (optional); params: k, renormalize, scale,
// scoring, method, groups, topkGroup; ints: expertGroup[E] (optional)
void routerOp(OpContext& c, const OpArgs& args) {
  const TensorRef& logits = args.tensors[2];
  RouterArgs a;
  a.T = logits.dim(0);
  a.E = int(logits.dim(1));
  a.k = int(args.params[0]);
  a.renormalize = args.params[1] != 0.0;
  a.scale = float(args.params[2]);
  a.sigmoid = args.params[3] != 0.0;
  a.method = int(args.params[4]);
  a.groups = a.method == 0 ? 0 : int(args.params[5]);
  a.keepGroups = int(args.params[6]);
  if (a.T == 0) return;
  const int E = a.E, G = a.groups;
  const int32_t* groupTable = nullptr;
  if (a.method != 0) {
    // groupOf[E], then each group's members in index order (the group's experts at [g*E/G, (g+1)*E/G)).
    std::vector<int32_t> table(size_t(2 * E));
    for (int e = 0; e < E; ++e) table[size_t(e)] = args.ints.empty() ? e / (E / G) : int32_t(args.ints[size_t(e)]);
    std::vector<int> fill(size_t(G), 0);
    for (int e = 0; e < E; ++e) {
      const int g = table[size_t(e)];
      table[size_t(E + g * (E / G) + fill[size_t(g)]++)] = e;
    }
    groupTable = static_cast<const int32_t*>(c.uploadTable(table.data(), table.size() * sizeof(int32_t)));
  }
  const float* bias = args.tensors.size() > 3 && args.tensors[3].data ? args.tensors[3].as<const float>() : nullptr;
  // Shared memory holds 2E + 2G floats per warp; wide routers get fewer warps per block.
  const size_t perWarp = size_t(2 * E + 2 * G) * sizeof(float);
  int warps = 8;
  while (warps > 1 && perWarp * warps > 48 * 1024) warps /= 2;
  if (perWarp > 48 * 1024) throw std::invalid_argument("router: E=" + std::to_string(E) + " experts is more than the CUDA kernel holds (6144)");
  const int64_t blocks = (a.T + warps - 1) / warps;
  routerKernel<<<unsigned(blocks), warps * 32, perWarp * warps, c.cuda>>>(args.tensors[0].as<int32_t>(), args.tensors[1].as<float>(),
                                                                          floatSrc(logits), bias, groupTable, a);
  checkLaunch("router");
}

// tensors: out[R,No], x[Rx,Nx]; ints: dstCol, srcCol, width, rowRepeat
void copyColsOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const int64_t R = out.dim(0), width = args.ints[2];
  if (R == 0 || width == 0) return;
  const int threads = 256;
  const int64_t es = int64_t(dtypeSize(out.dtype));
  const auto whole = [&](int64_t elems) { return (elems * es) % 16 == 0; };
  const bool chunks = out.dtype == x.dtype && whole(out.dim(1)) && whole(x.dim(1)) && whole(args.ints[0]) && whole(args.ints[1]) &&
                      whole(width) && reinterpret_cast<uintptr_t>(out.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
  if (chunks) {
    const int64_t per = 16 / es;  // elements per chunk
    const int64_t blocks = (R * (width / per) + threads - 1) / threads;
    copyColsChunkKernel<<<unsigned(blocks), threads, 0, c.cuda>>>(static_cast<uint4*>(out.data), static_cast<const uint4*>(x.data), R,
                                                                  out.dim(1) / per, x.dim(1) / per, args.ints[0] / per,
                                                                  args.ints[1] / per, width / per, args.ints[3]);
  } else {
    const int64_t blocks = (R * width + threads - 1) / threads;
    copyColsKernel<<<unsigned(blocks), threads, 0, c.cuda>>>(floatDst(out), floatSrc(x), R, out.dim(1), x.dim(1), args.ints[0],
                                                             args.ints[1], width, args.ints[3]);
  }
  checkLaunch("copy_cols");
}

// tensors: out[T*k,H], rowMap[T,k] i32, counts[E] i32, x[T,H], topkIdx[T,k] i32
void moePermuteOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  int32_t* rowMap = args.tensors[1].as<int32_t>();
  int32_t* counts = args.tensors[2].as<int32_t>();
  const TensorRef& x = args.tensors[3];
  const int32_t* topkIdx = args.tensors[4].as<const int32_t>();
  const int E = int(args.tensors[2].numel());
  const int64_t T = x.dim(0), H = x.dim(1), k = args.tensors[4].dim(1);
  const int64_t pairs = T * k;
  if (E == 0) {
    // No expert to route to: every pair is dropped.
    if (pairs > 0) checkCuda(cudaMemsetAsync(rowMap, 0xff, size_t(pairs) * sizeof(int32_t), c.cuda), "cudaMemsetAsync(rowMap)");
    return;
  }
  if (size_t(E) * sizeof(int32_t) > 48 * 1024)
    throw std::invalid_argument("moe_permute: E=" + std::to_string(E) + " experts is more than the CUDA kernel holds (12288)");
  if (pairs == 0) {
    checkCuda(cudaMemsetAsync(counts, 0, size_t(E) * sizeof(int32_t), c.cuda), "cudaMemsetAsync(counts)");
    return;
  }
  if (pairs > INT32_MAX) throw std::invalid_argument("moe_permute: more than 2^31 (token, slot) pairs");
  const int64_t chunks = (pairs + kChunk - 1) / kChunk;
  auto* chunkCounts = static_cast<int32_t*>(c.scratch(size_t(chunks) * E * sizeof(int32_t)));
  const size_t histBytes = size_t(E) * sizeof(int32_t);
  permuteCountKernel<<<unsigned(chunks), 256, histBytes, c.cuda>>>(topkIdx, pairs, E, chunkCounts);
  checkLaunch("moe_permute count");
  permuteScanKernel<<<1, 1024, histBytes, c.cuda>>>(chunkCounts, chunks, E, counts);
  checkLaunch("moe_permute scan");
  permuteMapKernel<<<unsigned(chunks), 32, histBytes, c.cuda>>>(topkIdx, pairs, E, chunkCounts, rowMap);
  checkLaunch("moe_permute map");
  if (H == 0) return;
  const unsigned blocks = unsigned(pairs < 65535LL * 16 ? pairs : 65535LL * 16);
  permuteCopyKernel<<<blocks, 128, 0, c.cuda>>>(floatDst(out), floatSrc(x), rowMap, pairs, int(k), H,
                                                 int(dtypeSize(x.dtype)));
  checkLaunch("moe_permute copy");
}

// tensors: counts[M,E] i32, topkIdx[T,k] i32; ints: bounds[M+1]
void moeCountOp(OpContext& c, const OpArgs& args) {
  const TensorRef& counts = args.tensors[0];
  const int64_t M = counts.dim(0), E = counts.dim(1), k = args.tensors[1].dim(1);
  if (M * E == 0) return;
  if (size_t(E) * sizeof(int32_t) > 48 * 1024)
    throw std::invalid_argument("moe_count: E=" + std::to_string(E) + " experts is more than the CUDA kernel holds (12288)");
  if (M > 65535) throw std::invalid_argument("moe_count: more than 65535 micro-chunks");
  checkCuda(cudaMemsetAsync(counts.data, 0, size_t(M * E) * sizeof(int32_t), c.cuda), "cudaMemsetAsync(moe_count)");
  std::vector<int32_t> bounds(args.ints.begin(), args.ints.end());
  int64_t widest = 0;
  for (int64_t m = 0; m < M; ++m) widest = std::max<int64_t>(widest, (bounds[m + 1] - bounds[m]) * k);
  if (widest == 0) return;
  const auto* devBounds = static_cast<const int32_t*>(c.uploadTable(bounds.data(), bounds.size() * sizeof(int32_t)));
  const dim3 grid(unsigned((widest + kCountSlice - 1) / kCountSlice), unsigned(M));
  countKernel<<<grid, 256, size_t(E) * sizeof(int32_t), c.cuda>>>(counts.as<int32_t>(), args.tensors[1].as<const int32_t>(),
                                                                  devBounds, int(k), int(E));
  checkLaunch("moe_count");
}

// tensors: out[T,H], y[R,H], rowMap[T,k] i32, topkW[T,k] f32; params: accumulate
void moeUnpermuteOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& y = args.tensors[1];
  const int64_t T = out.dim(0), H = out.dim(1), R = y.dim(0);
  const int k = int(args.tensors[2].dim(1));
  if (T * H == 0) return;
  const int threads = 256;
  if (out.dtype == DType::BF16 && y.dtype == DType::BF16 && H % 8 == 0 && aligned16({out.data, y.data})) {
    const dim3 grid(unsigned((H / 8 + threads - 1) / threads), unsigned(T < 65535 ? T : 65535));
    unpermuteBf16Kernel<<<grid, threads, 0, c.cuda>>>(out.as<__nv_bfloat16>(), y.as<const __nv_bfloat16>(),
                                                      args.tensors[2].as<const int32_t>(), args.tensors[3].as<const float>(),
                                                      T, H, R, k, args.params[0] != 0.0, c.stream.errorSlot());
    checkLaunch("moe_unpermute");
    return;
  }
  const int64_t xBlocks = (H + threads - 1) / threads;
  const dim3 grid(unsigned(xBlocks), unsigned(T < 65535 ? T : 65535));
  unpermuteKernel<<<grid, threads, 0, c.cuda>>>(floatDst(out), floatSrc(y), args.tensors[2].as<const int32_t>(),
                                                args.tensors[3].as<const float>(), T, H, R, k, args.params[0] != 0.0,
                                                c.stream.errorSlot());
  checkLaunch("moe_unpermute");
}


// tensors: counts[M,W] i32, topkIdx[T,k] i32; ints: offsets[W+1], then bounds[M+1]
void moeRankCountOp(OpContext& c, const OpArgs& args) {
  const TensorRef& counts = args.tensors[0];
  const int64_t M = counts.dim(0), W = counts.dim(1), k = args.tensors[1].dim(1);
  if (M * W == 0) return;
  if (W > kRankCountMaxRanks)
    throw std::invalid_argument("moe_rank_count: W=" + std::to_string(W) + " ranks is more than the CUDA kernel holds (" +
                                std::to_string(kRankCountMaxRanks) + ")");
  if (M > 65535) throw std::invalid_argument("moe_rank_count: more than 65535 micro-chunks");
  checkCuda(cudaMemsetAsync(counts.data, 0, size_t(M * W) * sizeof(int32_t), c.cuda), "cudaMemsetAsync(moe_rank_count)");
  std::vector<int32_t> table(args.ints.begin(), args.ints.end());  // offsets[W+1], bounds[M+1]
  int64_t widest = 0;
  for (int64_t m = 0; m < M; ++m) widest = std::max<int64_t>(widest, table[W + 1 + m + 1] - table[W + 1 + m]);
  if (widest == 0 || k == 0) return;
  const auto* dev = static_cast<const int32_t*>(c.uploadTable(table.data(), table.size() * sizeof(int32_t)));
  const dim3 grid(unsigned((widest + kRankCountSlice - 1) / kRankCountSlice), unsigned(M));
  rankCountKernel<<<grid, 256, size_t(2 * W + 1) * sizeof(int32_t), c.cuda>>>(counts.as<int32_t>(), args.tensors[1].as<const int32_t>(),
                                                                             dev, dev + W + 1, int(k), int(W));
  checkLaunch("moe_rank_count");
}

// tensors: out[R,H], rowMap[T,W] i32, counts[W] i32, localIdx[R,k] i32, localW[R,k] f32, x[T,H],
// topkIdx[T,k] i32, topkW[T,k] f32; ints: offsets[W+1]
void moeRankDispatchOp(OpContext& c, const OpArgs& args) {
  const TensorRef& x = args.tensors[5];
  const int64_t T = x.dim(0), H = x.dim(1), k = args.tensors[6].dim(1), W = args.tensors[2].dim(0);
  int32_t* counts = args.tensors[2].as<int32_t>();
  if (T == 0) {
    checkCuda(cudaMemsetAsync(counts, 0, size_t(W) * sizeof(int32_t), c.cuda), "cudaMemsetAsync(counts)");
    return;
  }
  if (T * W > INT32_MAX) throw std::invalid_argument("moe_rank_dispatch: more than 2^31 (token, rank) pairs");
  if (W > 65535) throw std::invalid_argument("moe_rank_dispatch: more than 65535 ranks");
  std::vector<int32_t> offsets(args.ints.begin(), args.ints.end());
  const auto* devOffsets = static_cast<const int32_t*>(c.uploadTable(offsets.data(), offsets.size() * sizeof(int32_t)));
  int32_t* rowMap = args.tensors[1].as<int32_t>();
  const auto* topkIdx = args.tensors[6].as<const int32_t>();
  rankScanKernel<<<unsigned(W), 1024, 0, c.cuda>>>(topkIdx, devOffsets, T, int(k), int(W), rowMap, counts);
  checkLaunch("moe_rank_dispatch scan");
  const unsigned blocks = unsigned(T < 65535LL * 16 ? T : 65535LL * 16);
  rankRowsKernel<<<blocks, 128, size_t(W) * sizeof(int32_t), c.cuda>>>(
      floatDst(args.tensors[0]), floatSrc(x), topkIdx, args.tensors[7].as<const float>(), devOffsets, counts, T, H, int(k),
      int(W), rowMap, args.tensors[3].as<int32_t>(), args.tensors[4].as<float>());
  checkLaunch("moe_rank_dispatch rows");
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("router", routerOp);
EPS_CUDA_OP("copy_cols", copyColsOp);
EPS_CUDA_OP("moe_permute", moePermuteOp);
EPS_CUDA_OP("moe_count", moeCountOp);
EPS_CUDA_OP("moe_unpermute", moeUnpermuteOp);
EPS_CUDA_OP("moe_rank_count", moeRankCountOp);
EPS_CUDA_OP("moe_rank_dispatch", moeRankDispatchOp);

}  // namespace eps::cuda
