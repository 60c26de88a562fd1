// attention (causal, packed sequences, grouped KV heads; the value head dim may differ from the
// query/key one, as in DeepSeek's MLA) and rope.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dtype.h"
#include "kernels.h"

namespace eps::cpu {
namespace {

// Queries of one head handled by one task: enough to amortise claiming it, few enough that the
// triangle of a long sequence still splits into many tasks.
constexpr int64_t kQueryBlock = 8;

struct AttentionTask {
  int64_t seqStart;  // first token of the sequence
  int64_t q0;        // first query of the block, relative to seqStart
  int64_t qLen;
  int64_t head;      // query head
};

struct AttentionScratch {
  std::vector<float> scores, q, acc;
};

// fp32 dot product with eight independent partial sums, so the compiler can vectorise it without
// being allowed to reassociate (no -ffast-math).
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float part[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int u = 0; u < 8; ++u) part[u] += a[d + u] * b[d + u];
  float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

AttentionScratch& attentionScratch() {
  thread_local AttentionScratch s;
  return s;
}

}  // namespace

// tensors: out[T,nq,hdv], q[T,nq,hd], k[T,nkv,hd - r], v[T,nkv,hdv], cuSeqlens[B+1], kShared[T,r] (optional, r = 0
// without it: every head's key is kShared's r dims, then k's); params: scale;
// ints: cuSeqlens (host copy). Two-pass softmax per query row in fp32: scores, max, exp and sum,
// then the weighted sum of values divided once by the sum.
void attentionKernel(const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& q = args.tensors[1];
  const TensorRef& k = args.tensors[2];
  const TensorRef& v = args.tensors[3];
  const float scale = float(args.params[0]);
  const int64_t T = q.dim(0), nq = q.dim(1), hd = q.dim(2), nkv = k.dim(1), hdv = v.dim(2);
  const int64_t group = nq / nkv;
  if (T == 0) return;
  // kShared [T, r] (optional): the first r dims of every head's key, k holding the other hd - r.
  const bool shared = args.tensors.size() > 5 && args.tensors[5].present();
  const int64_t r = shared ? args.tensors[5].dim(1) : 0, kd = hd - r;

  // K and V widened to fp32 once, head-major ([nkv][T][hd]), so a query row streams over
  // contiguous keys of its head instead of converting (and striding over) them again per query.
  std::vector<float> kf(nkv * T * hd), vf(nkv * T * hdv);
  parallelFor(T, 64, [&](int64_t t0, int64_t t1) {
    std::vector<float> row(nkv * std::max(hd, hdv)), sharedRow(r);
    for (int64_t t = t0; t < t1; ++t) {
      loadFloats(k, t * nkv * kd, nkv * kd, row.data());
      if (shared) loadFloats(args.tensors[5], t * r, r, sharedRow.data());
      for (int64_t h = 0; h < nkv; ++h) {
        std::copy_n(sharedRow.data(), r, &kf[(h * T + t) * hd]);
        std::copy_n(&row[h * kd], kd, &kf[(h * T + t) * hd + r]);
      }
      loadFloats(v, t * nkv * hdv, nkv * hdv, row.data());
      for (int64_t h = 0; h < nkv; ++h) std::copy_n(&row[h * hdv], hdv, &vf[(h * T + t) * hdv]);
    }
  });

  std::vector<AttentionTask> tasks;
  for (size_t b = 0; b + 1 < args.ints.size(); ++b) {
    const int64_t start = args.ints[b], len = args.ints[b + 1] - args.ints[b];
    for (int64_t h = 0; h < nq; ++h)
      for (int64_t q0 = 0; q0 < len; q0 += kQueryBlock)
        tasks.push_back({start, q0, std::min(kQueryBlock, len - q0), h});
  }
  // Longest rows first: the tail of the pool's work is then made of cheap tasks.
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const AttentionTask& x, const AttentionTask& y) { return x.q0 > y.q0; });

  parallelTasks(int64_t(tasks.size()), [&](int64_t ti) {
    const AttentionTask& task = tasks[ti];
    const int64_t kvHead = task.head / group;
    const float* keys = &kf[(kvHead * T + task.seqStart) * hd];
    const float* values = &vf[(kvHead * T + task.seqStart) * hdv];
    AttentionScratch& s = attentionScratch();
    s.scores.resize(task.q0 + task.qLen);
    s.q.resize(hd);
    s.acc.resize(hdv);
    for (int64_t i = task.q0; i < task.q0 + task.qLen; ++i) {
      const int64_t token = task.seqStart + i;
      loadFloats(q, (token * nq + task.head) * hd, hd, s.q.data());
      float maxScore = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        s.scores[j] = dot(s.q.data(), keys + j * hd, hd) * scale;
        maxScore = std::max(maxScore, s.scores[j]);
      }
      float sum = 0.0f;
      std::fill(s.acc.begin(), s.acc.end(), 0.0f);
      for (int64_t j = 0; j <= i; ++j) {
        const float p = std::exp(s.scores[j] - maxScore);
        sum += p;
        const float* value = values + j * hdv;
        for (int64_t d = 0; d < hdv; ++d) s.acc[d] += p * value[d];
      }
      const float inv = 1.0f / sum;
      for (int64_t d = 0; d < hdv; ++d) s.acc[d] *= inv;
      storeFloats(out, (token * nq + task.head) * hdv, hdv, s.acc.data());
    }
  });
}

// tensors: x[T,nh,hd] (in place), positions[T] i32, invFreq[rd/2] f32, normWeight[hd] optional;
// params: attentionScaling, normEps. With normWeight the heads are first normalised by the rmsnorm
// kernel itself (rounded to x's dtype in x), so the result is rmsnorm then rope by definition.
// The angle is pos * invFreq in fp32 (as transformers computes it); cos and sin of it are taken in
// double and rounded, then scaled in fp32; the rotation itself runs in fp32.
void ropeKernel(const OpArgs& args) {
  const TensorRef& x = args.tensors[0];
  if (args.tensors.size() > 3 && args.tensors[3].present()) {
    const TensorRef heads = withShape(x, {x.dim(0) * x.dim(1), x.dim(2)});
    runCpuKernel("rmsnorm", {heads, heads, args.tensors[3]}, {args.params[1]});
  }
  const int32_t* positions = args.tensors[1].as<const int32_t>();
  const float* invFreq = args.tensors[2].as<const float>();
  const float scaling = float(args.params[0]);
  const int64_t T = x.dim(0), nh = x.dim(1), hd = x.dim(2);
  const int64_t half = args.tensors[2].numel();
  parallelFor(T, 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> cosv(half), sinv(half), row(nh * hd);
    for (int64_t t = t0; t < t1; ++t) {
      const float pos = float(positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = pos * invFreq[i];
        cosv[i] = float(std::cos(double(angle))) * scaling;
        sinv[i] = float(std::sin(double(angle))) * scaling;
      }
      loadFloats(x, t * nh * hd, nh * hd, row.data());
      for (int64_t h = 0; h < nh; ++h) {
        float* head = &row[h * hd];
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = head[i], x2 = head[i + half];
          head[i] = x1 * cosv[i] - x2 * sinv[i];
          head[i + half] = x2 * cosv[i] + x1 * sinv[i];
        }
      }
      storeFloats(x, t * nh * hd, nh * hd, row.data());
    }
  });
}

// The ops this file implements (contracts: native/ops.md).
EPS_CPU_KERNEL("attention", attentionKernel);
EPS_CPU_KERNEL("rope", ropeKernel);

}  // namespace eps::cpu
