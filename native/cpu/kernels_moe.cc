// The MoE routing ops: router (softmax + top-k), moe_permute (group token copies by expert),
// moe_unpermute (weighted sum of the expert outputs back per token), and moe_rank_dispatch (one row
// per (token, destination rank): the deduplicated dispatch) with moe_rank_count (its rows per micro-chunk).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "dtype.h"
#include "kernels.h"

namespace eps::cpu {
namespace {

// Copies one row between float tensors of possibly different dtypes.
void copyRow(const TensorRef& dst, int64_t dstOffset, const TensorRef& src, int64_t srcOffset, int64_t n,
             std::vector<float>& buf) {
  if (dst.dtype == src.dtype) {
    const size_t size = dtypeSize(src.dtype);
    std::memcpy(static_cast<char*>(dst.data) + dstOffset * size,
                static_cast<const char*>(src.data) + srcOffset * size, n * size);
    return;
  }
  buf.resize(n);
  loadFloats(src, srcOffset, n, buf.data());
  storeFloats(dst, dstOffset, n, buf.data());
}

}  // namespace

// tensors: topkIdx[T,k] i32, topkW[T,k] f32, logits[T,E], bias[E] f32 (optional); params: k, renormalize,
// scale, scoring (softmax, sigmoid), method (greedy, group_limited_greedy, noaux_tc), groups, topkGroup;
// ints: expertGroup[E] (optional; default: contiguous groups of E/groups).
// Scores s in fp32; choice c = s + bias; the group methods keep the topkGroup best groups (by the max
// of c, or by the sum of its two largest) and pick the k largest c among their experts; the weights
// are the unbiased s of the picked experts.
void routerKernel(const OpArgs& args) {
  const TensorRef& logits = args.tensors[2];
  int32_t* topkIdx = args.tensors[0].as<int32_t>();
  float* topkW = args.tensors[1].as<float>();
  const float* bias = args.tensors.size() > 3 && args.tensors[3].data ? args.tensors[3].as<const float>() : nullptr;
  const int64_t T = logits.dim(0), E = logits.dim(1);
  const int64_t k = int64_t(args.params[0]);
  const bool renormalize = args.params[1] != 0.0;
  const float scale = float(args.params[2]);
  const bool sigmoid = args.params[3] != 0.0;
  const int method = int(args.params[4]);
  const int64_t G = int64_t(args.params[5]), keepGroups = int64_t(args.params[6]);
  std::vector<int64_t> groupOf(E);
  for (int64_t e = 0; e < E; ++e) groupOf[e] = args.ints.empty() ? e / (E / G) : args.ints[e];
  parallelFor(T, 64, [&](int64_t t0, int64_t t1) {
    std::vector<float> p(E), choice(E), gscore(G), best1(G), best2(G);
    std::vector<int32_t> order(E), gorder(G);
    std::vector<char> kept(G);
    for (int64_t t = t0; t < t1; ++t) {
      loadFloats(logits, t * E, E, p.data());
      if (sigmoid) {
        for (float& x : p) x = std::isnan(x) ? -INFINITY : 1.0f / (1.0f + std::exp(-x));
      } else {
        // NaN logits (a broken model) are left out of the softmax and rank last.
        float maxLogit = -INFINITY;
        for (float x : p) maxLogit = x > maxLogit ? x : maxLogit;
        float sum = 0.0f;
        for (float& x : p) {
          if (std::isnan(x)) continue;
          x = std::exp(x - maxLogit);
          sum += x;
        }
        // -inf for NaN also keeps the comparator below a strict weak order.
        for (float& x : p) x = std::isnan(x) ? -INFINITY : x / sum;
      }
      for (int64_t e = 0; e < E; ++e) choice[e] = bias ? p[e] + bias[e] : p[e];
      if (method != 0) {
        std::fill(best1.begin(), best1.end(), -INFINITY);
        std::fill(best2.begin(), best2.end(), -INFINITY);
        for (int64_t e = 0; e < E; ++e) {
          const int64_t g = groupOf[e];
          if (choice[e] > best1[g]) {
            best2[g] = best1[g];
            best1[g] = choice[e];
          } else if (choice[e] > best2[g]) {
            best2[g] = choice[e];
          }
        }
        for (int64_t g = 0; g < G; ++g) gscore[g] = method == 1 ? best1[g] : best1[g] + best2[g];
        std::iota(gorder.begin(), gorder.end(), 0);
        std::partial_sort(gorder.begin(), gorder.begin() + keepGroups, gorder.end(),
                          [&](int32_t a, int32_t b) { return gscore[a] > gscore[b] || (gscore[a] == gscore[b] && a < b); });
        std::fill(kept.begin(), kept.end(), 0);
        for (int64_t j = 0; j < keepGroups; ++j) kept[gorder[j]] = 1;
        for (int64_t e = 0; e < E; ++e)
          if (!kept[groupOf[e]]) choice[e] = -INFINITY;
      }
      // The k largest choice scores, descending; equal ones in index order (masked experts only after all kept ones).
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return choice[a] > choice[b] || (choice[a] == choice[b] && a < b);
      });
      float picked = 0.0f;
      for (int64_t j = 0; j < k; ++j) picked += p[order[j]];
      const float divisor = renormalize ? (sigmoid ? picked + 1e-20f : picked) : 1.0f;
      for (int64_t j = 0; j < k; ++j) {
        topkIdx[t * k + j] = order[j];
        topkW[t * k + j] = p[order[j]] / divisor * scale;
      }
    }
  });
}

// tensors: out[R,No], x[Rx,Nx]; ints: dstCol, srcCol, width, rowRepeat.
// out[r, dstCol + c] = x[r / rowRepeat, srcCol + c] for c < width; the other columns of out are kept.
void copyColsKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const int64_t R = out.dim(0), No = out.dim(1), Nx = x.dim(1);
  const int64_t dstCol = args.ints[0], srcCol = args.ints[1], width = args.ints[2], rep = args.ints[3];
  if (width == 0) return;
  parallelFor(R, 256, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf;
    for (int64_t r = r0; r < r1; ++r) copyRow(out, r * No + dstCol, x, (r / rep) * Nx + srcCol, width, buf);
  });
}

// tensors: out[T*k,H], rowMap[T,k] i32, counts[E] i32, x[T,H], topkIdx[T,k] i32.
// A stable counting sort of the (token, slot) pairs by expert; pairs with an expert outside [0,E)
// are dropped (rowMap -1) and the rows they would have used at the end of `out` stay unwritten.
void moePermuteKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  int32_t* rowMap = args.tensors[1].as<int32_t>();
  int32_t* counts = args.tensors[2].as<int32_t>();
  const TensorRef& x = args.tensors[3];
  const int32_t* topkIdx = args.tensors[4].as<const int32_t>();
  const int64_t E = args.tensors[2].numel();
  const int64_t T = x.dim(0), H = x.dim(1), k = args.tensors[4].dim(1);

  std::vector<int64_t> cursor(E, 0);
  for (int64_t i = 0; i < T * k; ++i) {
    const int32_t e = topkIdx[i];
    if (e >= 0 && e < E) ++cursor[e];
  }
  for (int64_t e = 0; e < E; ++e) counts[e] = int32_t(cursor[e]);
  // Counts become each expert's next free row.
  int64_t offset = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t c = cursor[e];
    cursor[e] = offset;
    offset += c;
  }
  for (int64_t i = 0; i < T * k; ++i) {
    const int32_t e = topkIdx[i];
    rowMap[i] = (e >= 0 && e < E) ? int32_t(cursor[e]++) : -1;
  }

  parallelFor(T, 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf;
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int32_t row = rowMap[t * k + j];
        if (row >= 0) copyRow(out, int64_t(row) * H, x, t * H, H, buf);
      }
  });
}

// tensors: counts[M,E] i32, topkIdx[T,k] i32; ints: bounds[M+1] (token offsets of the micro-chunks).
void moeCountKernel(const OpArgs& args) {
  int32_t* counts = args.tensors[0].as<int32_t>();
  const int32_t* topkIdx = args.tensors[1].as<const int32_t>();
  const int64_t M = args.tensors[0].dim(0), E = args.tensors[0].dim(1), k = args.tensors[1].dim(1);
  std::fill(counts, counts + M * E, 0);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t i = args.ints[m] * k; i < args.ints[m + 1] * k; ++i) {
      const int32_t e = topkIdx[i];
      if (e >= 0 && e < E) ++counts[m * E + e];
    }
  }
}

// tensors: counts[M,W] i32, topkIdx[T,k] i32; ints: offsets[W+1], then bounds[M+1]. counts[m,p] =
// tokens of micro-chunk m with a slot on one of rank p's experts: the rows moe_rank_dispatch sends p
// from those tokens.
void moeRankCountKernel(const OpArgs& args) {
  int32_t* counts = args.tensors[0].as<int32_t>();
  const int32_t* topkIdx = args.tensors[1].as<const int32_t>();
  const int64_t M = args.tensors[0].dim(0), W = args.tensors[0].dim(1), k = args.tensors[1].dim(1);
  const std::vector<int64_t> offsets(args.ints.begin(), args.ints.begin() + W + 1);
  const int64_t* bounds = args.ints.data() + W + 1;
  std::fill(counts, counts + M * W, 0);
  std::vector<char> seen(W);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t t = bounds[m]; t < bounds[m + 1]; ++t) {
      std::fill(seen.begin(), seen.end(), 0);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = topkIdx[t * k + j];
        if (e < 0 || e >= offsets[W]) continue;
        const int64_t p = int64_t(std::upper_bound(offsets.begin(), offsets.end(), int64_t(e)) - offsets.begin()) - 1;
        if (!seen[p]) {
          seen[p] = 1;
          ++counts[m * W + p];
        }
      }
    }
}

// tensors: out[R,H], rowMap[T,W] i32, counts[W] i32, localIdx[R,k] i32, localW[R,k] f32, x[T,H],
// topkIdx[T,k] i32, topkW[T,k] f32; ints: offsets[W+1] (rank p holds experts [offsets[p], offsets[p+1])).
// One row per distinct (token, rank) pair, sorted by rank then token, so that each rank's rows are one
// contiguous block of an all-to-all; each row carries its token's slots re-expressed for that rank.
void moeRankDispatchKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  int32_t* rowMap = args.tensors[1].as<int32_t>();
  int32_t* counts = args.tensors[2].as<int32_t>();
  int32_t* localIdx = args.tensors[3].as<int32_t>();
  float* localW = args.tensors[4].as<float>();
  const TensorRef& x = args.tensors[5];
  const int32_t* topkIdx = args.tensors[6].as<const int32_t>();
  const float* topkW = args.tensors[7].as<const float>();
  const int64_t T = x.dim(0), H = x.dim(1), k = args.tensors[6].dim(1), W = args.tensors[2].dim(0);
  const std::vector<int64_t>& offsets = args.ints;
  // The rank of expert e (the last p with offsets[p] <= e), or -1 outside [0, offsets[W]).
  auto rankOf = [&](int32_t e) -> int64_t {
    if (e < 0 || e >= offsets[W]) return -1;
    return int64_t(std::upper_bound(offsets.begin(), offsets.end(), int64_t(e)) - offsets.begin()) - 1;
  };

  // Pass 1: which ranks each token goes to, and how many tokens each rank gets.
  std::vector<int64_t> total(W, 0);
  for (int64_t t = 0; t < T; ++t) {
    int32_t* map = rowMap + t * W;
    std::fill(map, map + W, -1);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t p = rankOf(topkIdx[t * k + j]);
      if (p >= 0 && map[p] < 0) {
        map[p] = 0;
        ++total[p];
      }
    }
  }
  // Pass 2: rows in (rank, token) order.
  std::vector<int64_t> cursor(W, 0);
  for (int64_t p = 0, offset = 0; p < W; ++p) {
    counts[p] = int32_t(total[p]);
    cursor[p] = offset;
    offset += total[p];
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t p = 0; p < W; ++p)
      if (rowMap[t * W + p] >= 0) rowMap[t * W + p] = int32_t(cursor[p]++);

  parallelFor(T, 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> buf;
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t p = 0; p < W; ++p) {
        const int32_t row = rowMap[t * W + p];
        if (row < 0) continue;
        copyRow(out, int64_t(row) * H, x, t * H, H, buf);
        for (int64_t j = 0; j < k; ++j) {
          const int32_t e = topkIdx[t * k + j];
          const bool here = rankOf(e) == p;
          localIdx[int64_t(row) * k + j] = here ? int32_t(e - offsets[p]) : -1;
          localW[int64_t(row) * k + j] = here ? topkW[t * k + j] : 0.0f;
        }
      }
  });
}

// tensors: out[T,H], y[R,H], rowMap[T,k] i32, topkW[T,k] f32; params: accumulate.
void moeUnpermuteKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& y = args.tensors[1];
  const int32_t* rowMap = args.tensors[2].as<const int32_t>();
  const float* topkW = args.tensors[3].as<const float>();
  const bool accumulate = args.params[0] != 0.0;
  const int64_t T = out.dim(0), H = out.dim(1), R = y.dim(0), k = args.tensors[2].dim(1);
  parallelFor(T, 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> acc(H), row(H);
    for (int64_t t = t0; t < t1; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t r = rowMap[t * k + j];
        if (r < 0) continue;
        if (r >= R) {
          throw std::out_of_range("rowMap[" + std::to_string(t) + "," + std::to_string(j) +
                                  "] = " + std::to_string(r) + " is outside y's " + std::to_string(R) + " rows");
        }
        const float w = topkW[t * k + j];
        loadFloats(y, int64_t(r) * H, H, row.data());
        for (int64_t h = 0; h < H; ++h) acc[h] += w * row[h];
      }
      if (accumulate) {
        loadFloats(out, t * H, H, row.data());
        for (int64_t h = 0; h < H; ++h) acc[h] += row[h];
      }
      storeFloats(out, t * H, H, acc.data());
    }
  });
}

// The ops this file implements (contracts: native/ops.md).
EPS_CPU_KERNEL("router", routerKernel);
EPS_CPU_KERNEL("copy_cols", copyColsKernel);
EPS_CPU_KERNEL("moe_permute", moePermuteKernel);
EPS_CPU_KERNEL("moe_count", moeCountKernel);
EPS_CPU_KERNEL("moe_rank_count", moeRankCountKernel);
EPS_CPU_KERNEL("moe_rank_dispatch", moeRankDispatchKernel);
EPS_CPU_KERNEL("moe_unpermute", moeUnpermuteKernel);

}  // namespace eps::cpu
