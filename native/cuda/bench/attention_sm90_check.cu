// Standalone check + timing of the sm_90a prefill attention kernel (native/cuda/attention_sm90.cu), issue 13.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I native/cuda \
//        native/cuda/bench/attention_sm90_check.cu native/cuda/attention_sm90.cu -o /tmp/attn
//   /tmp/attn [--small] [--no-time] [--json FILE] [--mode V]
//
// 1. Correctness: random bf16 q, k, v (never zeros; q wider than k so the softmax has peaks), packed
//    sequences of 1..8K tokens (1, 127, 128, 129 and mixed batches among them), every head dim pair the
//    kernel takes, GQA and MHA, every variant (kVariants: schedules and grid orders). The reference is a CUDA kernel in fp32 (one warp per
//    query row and head, the exact softmax). Pass: relative L2 <= 1e-2 over all outputs, no NaN, every
//    output written (the output is poisoned with 0xFFFF, a bf16 NaN, before each run) and the guard rows
//    past T untouched; also printed: the share of output rows whose argmax over the head dim agrees.
// 2. Timing: issue 13's cases (those of `eps-moe bench attention`, src/bench/sizes.ts, head dim 256
//    left out), CUDA events around runs of 5 launches, median of 7 such runs after 3 warm-ups, per variant; TFLOP/s by the
//    bench's count, 2 * S^2/2 * (hd + hdv) * nq per sequence. --json FILE writes the rows of variant --mode V
//    (an index into kVariants; default: the kernel's defaults, attention_sm90.cu) as `eps-moe bench --json` does, for scripts/baselines/sdpa_attention.py --ours FILE.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <unistd.h>

#include "attention_sm90.h"
#include "check_util.cuh"

using eps::cuda::AttentionSm90Args;
using eps::cuda::AttentionTile;
using eps::cuda::kAttentionTileRows;

// What is checked and timed: schedules (AttentionSm90Args::mode; -1 the default per head dim) and grid orders
// (::headGroup, query heads per group; 0 the default). Schedules 0, 2, 4, 5 and 6 measured slower everywhere on an
// H100 (session 5 and session 6's first call, docs/bench/); test/gpu.ops still runs every one through the op.
struct Variant {
  const char* name;
  int mode, headGroup;
};
constexpr int kModes = 10;
constexpr int kDefault = 3;  // the variant the op runs by default (--json's rows unless --mode)
const Variant kVariants[kModes] = {{"serial", 1, 0}, {"pp3stage", 3, 0}, {"pp-split", 7, 0}, {"default", -1, 0},
                                   {"g-heads", -1, 1 << 30}, {"g-tile", -1, 1}, {"g4", -1, 4}, {"g8", -1, 8},
                                   {"g16", -1, 16}, {"g32", -1, 32}};

// One warp per (token, head): the exact causal softmax over the token's sequence, fp32.
__global__ void refKernel(float* ref, const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                          const int* cu, int B, int T, int nq, int nkv, int hd, int hdv, float scale) {
  const int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= int64_t(T) * nq) return;
  const int t = int(w / nq), h = int(w % nq), kvh = h / (nq / nkv);
  int b = 0;
  while (b + 1 < B && cu[b + 1] <= t) ++b;
  float qv[8], acc[8];
  for (int i = 0; i < 8; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < hd ? __bfloat162float(q[(int64_t(t) * nq + h) * hd + d]) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = cu[b]; j <= t; ++j) {
    float dot = 0.0f;
    for (int i = 0; i < 8; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) dot += qv[i] * __bfloat162float(k[(int64_t(j) * nkv + kvh) * hd + d]);
    }
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float s = dot * scale, mNew = fmaxf(m, s), corr = expf(m - mNew), p = expf(s - mNew);
    l = l * corr + p;
    for (int i = 0; i < 8; ++i) {
      const int d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < hdv ? p * __bfloat162float(v[(int64_t(j) * nkv + kvh) * hdv + d]) : 0.0f);
    }
    m = mNew;
  }
  for (int i = 0; i < 8; ++i) {
    const int d = lane + 32 * i;
    if (d < hdv) ref[(int64_t(t) * nq + h) * hdv + d] = acc[i] / l;
  }
}

struct Case {
  std::string name;
  std::vector<int> lens;
  int nq, nkv, hd, hdv;
};

// The host's tile list: 128-row query tiles, longest rows (most key blocks) first, as attention.cu does.
std::vector<AttentionTile> buildTiles(const std::vector<int>& lens) {
  std::vector<AttentionTile> tiles;
  int start = 0;
  for (int len : lens) {
    for (int q0 = 0; q0 < len; q0 += kAttentionTileRows) tiles.push_back({start, len, q0, 0});
    start += len;
  }
  std::stable_sort(tiles.begin(), tiles.end(), [](const AttentionTile& a, const AttentionTile& b) { return a.q0 > b.q0; });
  return tiles;
}

struct Buffers {
  __nv_bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
  AttentionTile* tiles = nullptr;
  int nTiles = 0, T = 0;
  size_t outElems = 0, guardElems = 0;
  void alloc(const Case& c, uint64_t seed) {
    T = 0;
    for (int l : c.lens) T += l;
    const size_t qn = size_t(T) * c.nq * c.hd, kn = size_t(T) * c.nkv * c.hd, vn = size_t(T) * c.nkv * c.hdv;
    outElems = size_t(T) * c.nq * c.hdv;
    guardElems = size_t(kAttentionTileRows) * c.nq * c.hdv;  // rows past T: must stay poisoned
    CK(cudaMalloc(&q, qn * 2));
    CK(cudaMalloc(&k, kn * 2));
    CK(cudaMalloc(&v, vn * 2));
    CK(cudaMalloc(&out, (outElems + guardElems) * 2));
    fillRandom<<<1024, 256>>>(q, qn, seed * 3 + 1, 2.0f);
    fillRandom<<<1024, 256>>>(k, kn, seed * 3 + 2, 1.0f);
    fillRandom<<<1024, 256>>>(v, vn, seed * 3 + 3, 1.0f);
    CK(cudaGetLastError());
    const std::vector<AttentionTile> t = buildTiles(c.lens);
    nTiles = int(t.size());
    CK(cudaMalloc(&tiles, t.size() * sizeof(AttentionTile)));
    CK(cudaMemcpy(tiles, t.data(), t.size() * sizeof(AttentionTile), cudaMemcpyHostToDevice));
  }
  void release() {
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(out), cudaFree(tiles);
  }
  AttentionSm90Args args(const Case& c, int mode) const {
    AttentionSm90Args a{};
    a.out = out, a.q = q, a.k = k, a.v = v, a.tiles = tiles, a.nTiles = nTiles, a.T = T;
    a.nq = c.nq, a.nkv = c.nkv, a.hd = c.hd, a.hdv = c.hdv, a.scale = 1.0f / sqrtf(float(c.hd));
    a.mode = kVariants[mode].mode;
    a.headGroup = kVariants[mode].headGroup;
    return a;
  }
};

// A kernel that deadlocks (a barrier never completing) must not eat the device call: give up after 10 s.
void syncOrDie(const char* what) {
  for (int i = 0; i < 10000; ++i) {
    const cudaError_t e = cudaStreamQuery(0);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) {
      fprintf(stderr, "CUDA error %s in %s\n", cudaGetErrorString(e), what);
      exit(2);
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, nullptr);
  }
  printf("HANG in %s\n", what);
  fflush(stdout);
  _exit(3);
}

float bf16ToFloat(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

bool checkCase(const Case& c, uint64_t seed) {
  Buffers buf;
  buf.alloc(c, seed);
  std::vector<int> cu(1, 0);
  for (int l : c.lens) cu.push_back(cu.back() + l);
  int* cuD;
  float* ref;
  CK(cudaMalloc(&cuD, cu.size() * 4));
  CK(cudaMemcpy(cuD, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&ref, buf.outElems * 4));
  const int64_t warps = int64_t(buf.T) * c.nq;
  refKernel<<<unsigned((warps * 32 + 255) / 256), 256>>>(ref, buf.q, buf.k, buf.v, cuD, int(c.lens.size()), buf.T, c.nq,
                                                         c.nkv, c.hd, c.hdv, 1.0f / sqrtf(float(c.hd)));
  CK(cudaGetLastError());
  std::vector<float> r(buf.outElems);
  CK(cudaMemcpy(r.data(), ref, buf.outElems * 4, cudaMemcpyDeviceToHost));
  std::vector<uint16_t> o(buf.outElems + buf.guardElems);
  bool allOk = true;
  for (int mode = 0; mode < kModes; ++mode) {
    fillPoison<<<1024, 256>>>(reinterpret_cast<uint16_t*>(buf.out), buf.outElems + buf.guardElems);
    CK(cudaGetLastError());
    const cudaError_t err = eps::cuda::attentionSm90(buf.args(c, mode), 0);
    if (err != cudaSuccess) {
      printf("FAIL %-44s mode %-8s launch: %s\n", c.name.c_str(), kVariants[mode].name, cudaGetErrorString(err));
      allOk = false;
      continue;
    }
    syncOrDie(c.name.c_str());
    CK(cudaMemcpy(o.data(), buf.out, o.size() * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0, maxAbs = 0;
    size_t unwritten = 0, nan = 0, guardHit = 0, argmaxAgree = 0;
    const size_t rows = buf.outElems / c.hdv;
    for (size_t row = 0; row < rows; ++row) {
      int am = 0, amRef = 0;
      for (int d = 0; d < c.hdv; ++d) {
        const size_t i = row * c.hdv + d;
        if (o[i] == 0xFFFF) ++unwritten;
        const float x = bf16ToFloat(o[i]);
        if (std::isnan(x)) ++nan;
        const double e = double(x) - r[i];
        num += e * e, den += double(r[i]) * r[i], maxAbs = std::max(maxAbs, std::fabs(e));
        if (x > bf16ToFloat(o[row * c.hdv + am])) am = d;
        if (r[i] > r[row * c.hdv + amRef]) amRef = d;
      }
      argmaxAgree += am == amRef;
    }
    for (size_t i = buf.outElems; i < o.size(); ++i) guardHit += o[i] != 0xFFFF;
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    const bool ok = rel <= 1e-2 && nan == 0 && unwritten == 0 && guardHit == 0;
    allOk &= ok;
    printf("%s %-44s mode %-8s T=%-6d rel L2 %.2e  max abs %.2e  argmax agree %.4f  unwritten %zu  NaN %zu  guard %zu\n",
           ok ? "ok  " : "FAIL", c.name.c_str(), kVariants[mode].name, buf.T, rel, maxAbs, double(argmaxAgree) / rows, unwritten,
           nan, guardHit);
  }
  cudaFree(cuD), cudaFree(ref);
  buf.release();
  return allOk;
}

double caseFlops(const Case& c) {
  double f = 0;
  for (int s : c.lens) f += 2.0 * (double(s) * s / 2) * (c.hd + c.hdv) * c.nq;
  return f;
}

int main(int argc, char** argv) {
  bool small = false, time = true;
  const char* json = nullptr;
  int jsonMode = -1;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--small")) small = true;
    else if (!strcmp(argv[i], "--no-time")) time = false;
    else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!strcmp(argv[i], "--mode") && i + 1 < argc) jsonMode = atoi(argv[++i]);
  }
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("device: %s, %d SMs, supported: %d\n", prop.name, prop.multiProcessorCount, int(eps::cuda::attentionSm90Supported(dev)));

  const std::vector<int> edge = {1, 127, 128, 129, 300, 2, 1000, 64, 255, 256, 257};
  std::vector<Case> checks = {
      {"hd128 GQA 4/2 len 1", {1}, 4, 2, 128, 128},
      {"hd128 GQA 4/2 len 127", {127}, 4, 2, 128, 128},
      {"hd128 GQA 4/2 len 128", {128}, 4, 2, 128, 128},
      {"hd128 GQA 4/2 len 129", {129}, 4, 2, 128, 128},
      {"hd128 GQA 4/2 packed 1..1000", edge, 4, 2, 128, 128},
      {"hd64 MHA 2/2 packed 1..1000", edge, 2, 2, 64, 64},
      {"mla 192/128 MHA 2/2 packed 1..1000", edge, 2, 2, 192, 128},
  };
  if (!small) {
    checks.push_back({"hd128 GQA 8/1 len 8192", {8192}, 8, 1, 128, 128});
    checks.push_back({"hd128 MHA 2/2 mixed 5000,37,3000,129,2047", {5000, 37, 3000, 129, 2047}, 2, 2, 128, 128});
    checks.push_back({"hd64 GQA 8/2 mixed 4096,1,700,129", {4096, 1, 700, 129}, 8, 2, 64, 64});
    checks.push_back({"hd64 MHA 1/1 len 8192", {8192}, 1, 1, 64, 64});
    checks.push_back({"mla 192/128 MHA 4/4 mixed 2048,2041,127,1", {2048, 2041, 127, 1}, 4, 4, 192, 128});
    checks.push_back({"mla 192/128 MHA 2/2 len 8192", {8192}, 2, 2, 192, 128});
  }
  bool allOk = true;
  uint64_t seed = 1234;
  for (const Case& c : checks) allOk &= checkCase(c, seed++);
  printf(allOk ? "ALL PASS\n" : "FAILED\n");
  if (!time) return allOk ? 0 : 1;

  const std::vector<int> mixed = {512, 1024, 2048, 4096, 700, 37, 8192, 1500, 3000, 129, 5000, 2199};
  const std::vector<Case> timed = {
      {"1 x 1K", {1024}, 32, 8, 128, 128},
      {"1 x 4K", {4096}, 32, 8, 128, 128},
      {"1 x 8K", {8192}, 32, 8, 128, 128},
      {"1 x 16K", {16384}, 32, 8, 128, 128},
      {"1 x 32K", {32768}, 32, 8, 128, 128},
      {"8 x 1K packed", std::vector<int>(8, 1024), 32, 8, 128, 128},
      {"12 mixed packed (37..8K)", mixed, 32, 8, 128, 128},
      {"1 x 4K hd64 64/8", {4096}, 64, 8, 64, 64},
      {"1 x 8K hd64 64/8", {8192}, 64, 8, 64, 64},
      {"1 x 4K mla 192/128 16h", {4096}, 16, 16, 192, 128},
      {"1 x 8K mla 192/128 16h", {8192}, 16, 16, 192, 128},
      {"1 x 4K mla 192/128 128h", {4096}, 128, 128, 192, 128},
      {"1 x 8K mla 192/128 128h", {8192}, 128, 128, 192, 128},
      {"1 x 16K mla 192/128 128h", {16384}, 128, 128, 192, 128},
      {"4 mixed packed mla 192/128 128h", {700, 2048, 4096, 1500}, 128, 128, 192, 128},
  };
  // Runs of 5 back-to-back launches between two events, so the host's per-launch work (tensor maps) hides
  // under the previous launch, as it does in a prefill step.
  constexpr int kBatch = 5;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  FILE* jf = json ? fopen(json, "w") : nullptr;
  if (jf) fprintf(jf, "{\"suites\": {\"attention\": [\n");
  printf("\n%-34s", "case");
  for (int mode = 0; mode < kModes; ++mode) printf(" %10s", kVariants[mode].name);
  printf("   (TFLOP/s, median of 7 x 5 runs)\n");
  for (size_t ci = 0; ci < timed.size(); ++ci) {
    const Case& c = timed[ci];
    Buffers buf;
    buf.alloc(c, 99 + ci);
    double tf[kModes];
    for (int mode = 0; mode < kModes; ++mode) {
      const AttentionSm90Args a = buf.args(c, mode);
      for (int w = 0; w < 3; ++w) CK(eps::cuda::attentionSm90(a, 0));
      std::vector<float> ms;
      for (int r = 0; r < 7; ++r) {
        CK(cudaEventRecord(e0));
        for (int i = 0; i < kBatch; ++i) CK(eps::cuda::attentionSm90(a, 0));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        ms.push_back(t / kBatch);
      }
      std::sort(ms.begin(), ms.end());
      tf[mode] = caseFlops(c) / (ms[ms.size() / 2] * 1e-3) / 1e12;
    }
    printf("%-34s", c.name.c_str());
    for (int mode = 0; mode < kModes; ++mode) printf(" %10.1f", tf[mode]);
    printf("\n");
    if (jf) {
      std::string lens;
      for (size_t i = 0; i < c.lens.size(); ++i) lens += (i ? "," : "") + std::to_string(c.lens[i]);
      fprintf(jf, "%s{\"name\": \"%s\", \"seqLens\": [%s], \"numHeads\": %d, \"numKvHeads\": %d, \"headDim\": %d, \"headDimV\": %d, \"tflops\": %.2f}\n",
              ci ? "," : "", c.name.c_str(), lens.c_str(), c.nq, c.nkv, c.hd, c.hdv, tf[jsonMode >= 0 ? jsonMode : kDefault]);
    }
    buf.release();
  }
  if (jf) fprintf(jf, "]}}\n"), fclose(jf);
  return allOk ? 0 : 1;
}
