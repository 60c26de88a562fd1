// Standalone check + timing of the sm_90a grouped GEMM (native/cuda/grouped_gemm_sm90.cu), issue 12.
//
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -I native/cuda \
//        native/cuda/bench/grouped_gemm_check.cu native/cuda/grouped_gemm_sm90.cu -o /tmp/ggc \
//        [-DWITH_CUBLAS -lcublas]
//   /tmp/ggc [--loads FILE] [--quick] [--no-time]
//
// 1. Correctness: random bf16 data (never zeros), ragged rows per segment (0 and 1 included), every
//    expert empty but one, all empty, S = 2E segments, N and K off the tile sizes; each config. The
//    reference is a naive CUDA kernel with fp32 accumulation over every row (small cases) or sampled
//    rows (the timed shapes: first, middle and last row of every segment); pass: relative L2 <= 1e-2
//    and no NaN. The output is poisoned (0xFFFF, a bf16 NaN) before each run: every valid row must be
//    written, every row past the segments must keep the poison.
//    Fused SwiGLU (args.swiglu), each config, on the cases with N = 2I, I % 8 == 0 (under --small one
//    case): the unfused path (the GEMM into gateUp [R, 2I], then a copy of the engine's swiglu kernel)
//    against the fused kernel into a poisoned [R, I]; pass: bit-identical in every row of the
//    segments, every row past them still poisoned.
// 2. Timing: expert shapes x balanced / Zipf loads, cudaEvent around each run, median of 20 after 3
//    warm-ups, TFLOP/s = 2 * rows * N * K / t. The loads are written to --loads FILE for
//    scripts/baselines/grouped_mm.py (torch._grouped_mm on the same counts). On the gate_up shapes also
//    the unfused GEMM + swiglu kernel against the fused kernel (auto config; "SWIGLU" lines, checked
//    bitwise too).
// 3. With -DWITH_CUBLAS: the 8192^3 bf16 cublasGemmEx ceiling of the same run.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif

#include "check_util.cuh"
#include "dtype.cuh"
#include "grouped_gemm_sm90.h"

using eps::cuda::GroupedGemmSm90Args;
using eps::cuda::groupedGemmSm90;

// ---- device helpers ----------------------------------------------------------------------------

// One warp per output element: ref[li, n] = sum_k a[rows[li], k] * w[experts[li], n, k], fp32.
__global__ void refKernel(float* ref, const __nv_bfloat16* a, const __nv_bfloat16* w, const int* rows,
                          const int* experts, int L, int N, int K) {
  const size_t warpId = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warpId >= size_t(L) * N) return;
  const int li = int(warpId / N), n = int(warpId % N);
  const __nv_bfloat16* ar = a + size_t(rows[li]) * K;
  const __nv_bfloat16* wr = w + (size_t(experts[li]) * N + n) * K;
  float s = 0.0f;
  for (int k = lane; k < K; k += 32) s += __bfloat162float(ar[k]) * __bfloat162float(wr[k]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) ref[warpId] = s;
}

// bad[0]: NaN (unwritten) elements in rows [0, total); bad[1]: elements past `total` that lost the poison.
__global__ void countBad(const uint16_t* out, size_t total, size_t all, unsigned long long* bad) {
  unsigned long long b0 = 0, b1 = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < all; i += size_t(gridDim.x) * blockDim.x) {
    const uint16_t v = out[i];
    const bool nan = (v & 0x7F80) == 0x7F80 && (v & 0x007F) != 0;
    if (i < total) b0 += nan;
    else b1 += (v != 0xFFFF);
  }
  if (b0) atomicAdd(&bad[0], b0);
  if (b1) atomicAdd(&bad[1], b1);
}

// The unfused path's second step: a copy of swigluBf16Kernel (native/cuda/kernels_elementwise.cu), out
// [T, I] from gateUp [T, 2I], eight elements per thread. The fused epilogue must match it bit for bit.
__global__ void swigluRefKernel(__nv_bfloat16* out, const __nv_bfloat16* gateUp, int64_t T, int64_t I) {
  const int64_t nv = I / 8, n = T * nv;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / nv, c = e - t * nv;
    float g[8], u[8], o[8];
    eps::cuda::loadBf16x8(gateUp + t * 2 * I + c * 8, g);
    eps::cuda::loadBf16x8(gateUp + t * 2 * I + I + c * 8, u);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = eps::cuda::swigluValue(g[i], u[i]);
    eps::cuda::storeBf16x8(out + t * I + c * 8, o);
  }
}

// Launched as swigluOp launches swigluBf16Kernel.
static void swigluRef(__nv_bfloat16* out, const __nv_bfloat16* gateUp, int64_t T, int64_t I) {
  swigluRefKernel<<<eps::cuda::gridFor(T * I / 8, 256), 256>>>(out, gateUp, T, I);
  CK(cudaGetLastError());
}

// res[0]: elements of n whose bits differ; res[1]: the largest |got - ref| among them as float bits
// (non-negative floats order as their bits, and a NaN, e.g. unwritten poison, above them all).
__global__ void compareBits(const uint16_t* got, const uint16_t* ref, size_t n, unsigned long long* res) {
  unsigned long long count = 0;
  unsigned maxBits = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    if (got[i] == ref[i]) continue;
    ++count;
    const float d = fabsf(__uint_as_float(uint32_t(got[i]) << 16) - __uint_as_float(uint32_t(ref[i]) << 16));
    maxBits = max(maxBits, d != d ? 0x7FC00000u : __float_as_uint(d));
  }
  if (count) {
    atomicAdd(&res[0], count);
    atomicMax(&res[1], (unsigned long long)maxBits);
  }
}

// ---- host helpers ------------------------------------------------------------------------------

static float bf2f(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

struct Buffers {
  __nv_bfloat16 *a = nullptr, *w = nullptr, *out = nullptr;
  __nv_bfloat16 *ref = nullptr, *fused = nullptr;  // SwiGLU outputs [R, I]: unfused path's, fused kernel's
  int* offsets = nullptr;
  size_t aElems = 0, wElems = 0, outElems = 0, swigluElems = 0;
  int offCap = 0;
  void ensure(size_t ae, size_t we, size_t oe, int offs) {
    if (ae > aElems) { if (a) CK(cudaFree(a)); CK(cudaMalloc(&a, ae * 2)); aElems = ae; }
    if (we > wElems) { if (w) CK(cudaFree(w)); CK(cudaMalloc(&w, we * 2)); wElems = we; }
    if (oe > outElems) { if (out) CK(cudaFree(out)); CK(cudaMalloc(&out, oe * 2)); outElems = oe; }
    if (offs > offCap) { if (offsets) CK(cudaFree(offsets)); CK(cudaMalloc(&offsets, offs * 4)); offCap = offs; }
  }
  void ensureSwiglu(size_t n) {
    if (n <= swigluElems) return;
    if (ref) {
      CK(cudaFree(ref));
      CK(cudaFree(fused));
    }
    CK(cudaMalloc(&ref, n * 2));
    CK(cudaMalloc(&fused, n * 2));
    swigluElems = n;
  }
};

struct Case {
  std::string tag;
  int E, N, K;
  std::vector<int> counts;  // S = counts.size(), segment s uses expert s % E
  int tail = 0;             // rows allocated past the segments (must keep the poison)
  bool fullCheck = true;    // reference over every row, else sampled rows
  bool swiglu = false;      // also the fused SwiGLU with w as gate/up (N = 2I, I % 8 == 0)
};

// What is run: a config (grouped_gemm_sm90.h) and the m-tile band of the tile order.
struct Variant {
  int config, band;
  const char* name;
};
static const int kWhole = 1 << 30;  // one band: every m-tile of an n-tile before the next n-tile
static const Variant kCheckVariants[] = {
    {0, 0, "auto"},              {1, 8, "128x128 s6 reg b8"}, {2, 8, "128x256 s4 reg b8"}, {3, 8, "128x256 s3 tma b8"},
    {4, 8, "128x128 s5 tma b8"}, {3, 3, "128x256 s3 tma b3"}, {2, kWhole, "128x256 s4 reg b*"},
    {5, 8, "128x256 s4 slots b8"}};
static const Variant kTimeVariants[] = {{0, 0, "auto"},
                                        {2, kWhole, "256s4reg-b*"},
                                        {3, 8, "256s3tma-b8"},
                                        {4, 8, "128s5tma-b8"},
                                        {3, 16, "256s3tma-b16"},
                                        {5, 8, "256s4slot-b8"}};
static const int kNumTime = sizeof(kTimeVariants) / sizeof(kTimeVariants[0]);

static GroupedGemmSm90Args argsFor(const Case& c, Buffers& b, int64_t R, Variant v) {
  GroupedGemmSm90Args p{};
  p.a = b.a;
  p.w = b.w;
  p.out = b.out;
  p.offsets = b.offsets;
  p.R = R;
  p.S = int(c.counts.size());
  p.E = c.E;
  p.N = c.N;
  p.K = c.K;
  p.config = v.config;
  p.bandM = v.band;
  return p;
}

static uint64_t gSeed = 1234;

// Uploads fresh random inputs and the offsets; returns total rows.
static int64_t prepare(const Case& c, Buffers& b, int64_t& R) {
  int64_t total = 0;
  std::vector<int> offs(c.counts.size() + 1, 0);
  for (size_t s = 0; s < c.counts.size(); ++s) offs[s + 1] = offs[s] + c.counts[s], total += c.counts[s];
  R = std::max<int64_t>(1, total + c.tail);
  b.ensure(size_t(R) * c.K, size_t(c.E) * c.N * c.K, size_t(R) * c.N, int(offs.size()));
  fillRandom<<<1024, 256>>>(b.a, size_t(R) * c.K, gSeed++, 1.0f);
  CK(cudaGetLastError());
  fillRandom<<<1024, 256>>>(b.w, size_t(c.E) * c.N * c.K, gSeed++, 1.0f / sqrtf(float(c.K)));
  CK(cudaGetLastError());
  CK(cudaMemcpy(b.offsets, offs.data(), offs.size() * 4, cudaMemcpyHostToDevice));
  return total;
}

// Runs one config on poisoned output and checks it. Returns true when it passes.
static bool check(const Case& c, Buffers& b, int64_t total, int64_t R, Variant v, double* relOut) {
  fillPoison<<<1024, 256>>>(reinterpret_cast<uint16_t*>(b.out), size_t(R) * c.N);
  CK(cudaGetLastError());
  cudaError_t err = groupedGemmSm90(argsFor(c, b, R, v), 0);
  if (err != cudaSuccess) {
    printf("  %-34s %s: launch error %s\n", c.tag.c_str(), v.name, cudaGetErrorString(err));
    return false;
  }
  CK(cudaDeviceSynchronize());

  // Poison: every valid element written, every tail element untouched.
  unsigned long long* dBad;
  CK(cudaMalloc(&dBad, 16));
  CK(cudaMemset(dBad, 0, 16));
  countBad<<<1024, 256>>>(reinterpret_cast<uint16_t*>(b.out), size_t(total) * c.N, size_t(R) * c.N, dBad);
  CK(cudaGetLastError());
  unsigned long long bad[2];
  CK(cudaMemcpy(bad, dBad, 16, cudaMemcpyDeviceToHost));
  CK(cudaFree(dBad));

  // Reference rows: all, or first / middle / last of each segment.
  std::vector<int> rows, experts;
  int64_t row0 = 0;
  for (size_t s = 0; s < c.counts.size(); ++s) {
    const int n = c.counts[s];
    if (c.fullCheck) {
      for (int r = 0; r < n; ++r) rows.push_back(int(row0 + r)), experts.push_back(int(s % c.E));
    } else if (n > 0) {
      int picks[3] = {0, n / 2, n - 1};
      for (int i = 0; i < 3; ++i)
        if (i == 0 || picks[i] != picks[i - 1]) rows.push_back(int(row0 + picks[i])), experts.push_back(int(s % c.E));
    }
    row0 += n;
  }
  double rel = 0.0;
  bool nanSeen = false;
  if (!rows.empty()) {
    const int L = int(rows.size());
    int *dRows, *dExp;
    float* dRef;
    CK(cudaMalloc(&dRows, L * 4));
    CK(cudaMalloc(&dExp, L * 4));
    CK(cudaMalloc(&dRef, size_t(L) * c.N * 4));
    CK(cudaMemcpy(dRows, rows.data(), L * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dExp, experts.data(), L * 4, cudaMemcpyHostToDevice));
    const size_t threads = size_t(L) * c.N * 32;
    refKernel<<<unsigned((threads + 255) / 256), 256>>>(dRef, b.a, b.w, dRows, dExp, L, c.N, c.K);
    CK(cudaGetLastError());
    std::vector<float> ref(size_t(L) * c.N);
    CK(cudaMemcpy(ref.data(), dRef, ref.size() * 4, cudaMemcpyDeviceToHost));
    std::vector<uint16_t> got(c.N);
    double num = 0, den = 0;
    for (int li = 0; li < L; ++li) {
      CK(cudaMemcpy(got.data(), b.out + size_t(rows[li]) * c.N, size_t(c.N) * 2, cudaMemcpyDeviceToHost));
      for (int n = 0; n < c.N; ++n) {
        const double g = bf2f(got[n]), r = ref[size_t(li) * c.N + n];
        if (std::isnan(g)) nanSeen = true;
        num += (g - r) * (g - r);
        den += r * r;
      }
    }
    rel = den > 0 ? sqrt(num / den) : (num > 0 ? 1.0 : 0.0);
    CK(cudaFree(dRows));
    CK(cudaFree(dExp));
    CK(cudaFree(dRef));
  }
  const bool ok = !nanSeen && rel <= 1e-2 && bad[0] == 0 && bad[1] == 0;
  printf("  %-34s %-18s: rows %7lld checked %6zu rel_l2 %.3e unwritten %llu tail_clobbered %llu  %s\n",
         c.tag.c_str(), v.name, (long long)total, rows.size(), rel, bad[0], bad[1], ok ? "PASS" : "FAIL");
  if (relOut) *relOut = rel;
  return ok;
}

static GroupedGemmSm90Args fusedArgsFor(const Case& c, Buffers& b, int64_t R, Variant v) {
  GroupedGemmSm90Args p = argsFor(c, b, R, v);
  p.out = b.fused;
  p.swiglu = true;
  return p;
}

struct SwigluCompare {
  unsigned long long mismatches = 0, unwritten = 0, clobbered = 0;
  float maxDiff = 0;
  bool ok() const { return mismatches == 0 && unwritten == 0 && clobbered == 0; }
};

// The unfused path (the GEMM into gateUp = b.out, then swigluRef into b.ref over the segments' rows) and
// the fused kernel into a poisoned b.fused, both with variant v, compared bitwise; the launch error if any.
static cudaError_t compareSwiglu(const Case& c, Buffers& b, int64_t total, int64_t R, Variant v, SwigluCompare& res) {
  const int I = c.N / 2;
  b.ensureSwiglu(size_t(R) * I);
  fillPoison<<<1024, 256>>>(reinterpret_cast<uint16_t*>(b.out), size_t(R) * c.N);
  fillPoison<<<1024, 256>>>(reinterpret_cast<uint16_t*>(b.fused), size_t(R) * I);
  CK(cudaGetLastError());
  cudaError_t err = groupedGemmSm90(argsFor(c, b, R, v), 0);
  if (err != cudaSuccess) return err;
  swigluRef(b.ref, b.out, total, I);
  err = groupedGemmSm90(fusedArgsFor(c, b, R, v), 0);
  if (err != cudaSuccess) return err;
  CK(cudaDeviceSynchronize());

  unsigned long long* d;
  CK(cudaMalloc(&d, 32));
  CK(cudaMemset(d, 0, 32));
  compareBits<<<1024, 256>>>(reinterpret_cast<const uint16_t*>(b.fused), reinterpret_cast<const uint16_t*>(b.ref),
                             size_t(total) * I, d);
  countBad<<<1024, 256>>>(reinterpret_cast<const uint16_t*>(b.fused), size_t(total) * I, size_t(R) * I, d + 2);
  CK(cudaGetLastError());
  unsigned long long h[4];
  CK(cudaMemcpy(h, d, 32, cudaMemcpyDeviceToHost));
  CK(cudaFree(d));
  const uint32_t bits = uint32_t(h[1]);
  memcpy(&res.maxDiff, &bits, 4);
  res.mismatches = h[0], res.unwritten = h[2], res.clobbered = h[3];
  return cudaSuccess;
}

// The fused SwiGLU of one config against the unfused path. Returns true when it passes.
static bool checkSwiglu(const Case& c, Buffers& b, int64_t total, int64_t R, Variant v) {
  const std::string tag = "swiglu " + c.tag;
  SwigluCompare r;
  const cudaError_t err = compareSwiglu(c, b, total, R, v, r);
  if (err != cudaSuccess) {
    printf("  %-34s %s: launch error %s  FAIL\n", tag.c_str(), v.name, cudaGetErrorString(err));
    return false;
  }
  printf("  %-34s %-18s: rows %7lld mismatches %llu max_abs_diff %.3e unwritten %llu tail_clobbered %llu  %s\n",
         tag.c_str(), v.name, (long long)total, r.mismatches, r.maxDiff, r.unwritten, r.clobbered,
         r.ok() ? "PASS" : "FAIL");
  return r.ok();
}

// Median of `reps` timed calls of launch() (after 3 warm-ups), in ms; an event between consecutive calls.
template <class F>
static double medianMs(F&& launch, int reps) {
  for (int i = 0; i < 3; ++i) launch();
  CK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(reps + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  CK(cudaEventRecord(ev[0]));
  for (int i = 0; i < reps; ++i) {
    launch();
    CK(cudaEventRecord(ev[i + 1]));
  }
  CK(cudaEventSynchronize(ev[reps]));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CK(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

static double timeIt(const Case& c, Buffers& b, int64_t R, Variant v, int reps) {
  const GroupedGemmSm90Args p = argsFor(c, b, R, v);
  return medianMs([&] { CK(groupedGemmSm90(p, 0)); }, reps);
}

// Zipf loads: expert i (in a fixed shuffled order) gets weight 1/(rank+1)^s; counts rounded down to
// multiples of 8 (torch._grouped_mm's group alignment), the remainder to the heaviest expert.
static std::vector<int> zipfCounts(int E, int meanM, double sExp, uint64_t seed) {
  std::vector<double> wgt(E);
  double sum = 0;
  for (int i = 0; i < E; ++i) sum += (wgt[i] = 1.0 / pow(i + 1.0, sExp));
  std::vector<int> order(E);
  for (int i = 0; i < E; ++i) order[i] = i;
  uint64_t st = seed;
  for (int i = E - 1; i > 0; --i) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    std::swap(order[i], order[int((st >> 33) % uint64_t(i + 1))]);
  }
  const int64_t total = int64_t(E) * meanM;
  std::vector<int> counts(E, 0);
  int64_t used = 0;
  for (int i = 0; i < E; ++i) {
    const int c = int(floor(total * wgt[i] / sum / 8.0)) * 8;
    counts[order[i]] = c;
    used += c;
  }
  counts[order[0]] += int(total - used);
  return counts;
}

#ifdef WITH_CUBLAS
static double cublasCeiling() {
  const int n = 8192;
  __nv_bfloat16 *A, *B, *Cm;
  CK(cudaMalloc(&A, size_t(n) * n * 2));
  CK(cudaMalloc(&B, size_t(n) * n * 2));
  CK(cudaMalloc(&Cm, size_t(n) * n * 2));
  fillRandom<<<1024, 256>>>(A, size_t(n) * n, 99, 1.0f);
  fillRandom<<<1024, 256>>>(B, size_t(n) * n, 98, 1.0f);
  CK(cudaGetLastError());
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return 0;
  const float alpha = 1.0f, beta = 0.0f;
  auto gemm = [&] {
    return cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n, &beta, Cm,
                        CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  for (int i = 0; i < 3; ++i) gemm();
  CK(cudaDeviceSynchronize());
  const int reps = 20;
  std::vector<cudaEvent_t> ev(reps + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  CK(cudaEventRecord(ev[0]));
  for (int i = 0; i < reps; ++i) {
    gemm();
    CK(cudaEventRecord(ev[i + 1]));
  }
  CK(cudaEventSynchronize(ev[reps]));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CK(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]));
  std::sort(ms.begin(), ms.end());
  cublasDestroy(h);
  CK(cudaFree(A));
  CK(cudaFree(B));
  CK(cudaFree(Cm));
  return 2.0 * n * n * double(n) / (ms[reps / 2] * 1e-3) / 1e12;
}
#endif

int main(int argc, char** argv) {
  const char* loadsPath = nullptr;
  bool quick = false, doTime = true, small = false, doCases = true;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--loads") && i + 1 < argc) loadsPath = argv[++i];
    else if (!strcmp(argv[i], "--quick")) quick = true;
    else if (!strcmp(argv[i], "--no-time")) doTime = false;
    else if (!strcmp(argv[i], "--small")) small = true;  // the small cases only (for compute-sanitizer)
    else if (!strcmp(argv[i], "--skip-cases")) doCases = false;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s, %d SMs, cc %d.%d, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor,
         prop.l2CacheSize >> 20);
  if (!eps::cuda::groupedGemmSm90Supported(0)) {
    printf("grouped_gemm_sm90: not supported on this device\n");
    return 1;
  }
  Buffers b;
  int failures = 0;

  // ---- 1. correctness cases ----
  // The fused SwiGLU is checked on the cases with swiglu set; under --small (compute-sanitizer) only on
  // the I = 24 one (masked columns in every tile, TMA and masked row stores).
  std::vector<Case> cases;
  cases.push_back({"ragged E8 N256 K512", 8, 256, 512, {0, 1, 127, 128, 129, 300, 5, 64}, 50, true, !small});
  {
    std::vector<int> c(16, 0);
    c[5] = 777;
    cases.push_back({"one-expert E16 N512 K256", 16, 512, 256, c, 3, true, !small});
  }
  cases.push_back({"all-empty E4 N128 K64", 4, 128, 64, {0, 0, 0, 0}, 10, true, !small});
  const std::vector<int> twoRanks = {3, 0, 1, 130, 0, 257, 64, 1, 0, 0, 200, 2};
  cases.push_back({"2 ranks S=2E E6 N392 K200", 6, 392, 200, twoRanks, 7});
  cases.push_back({"tiny E1 N8 K8", 1, 8, 8, {1}, 0});
  cases.push_back({"E3 N24 K40 small rows", 3, 24, 40, {2, 0, 9}, 1});
  // For the fused SwiGLU: I = 24 (one partial n-tile: gate boxes reading up rows, up boxes past 2I), and
  // I = 200 (the last n-tile partial for both tile widths).
  cases.push_back({"S=2E E3 N48 K72 (I24)", 3, 48, 72, {2, 0, 9, 130, 65, 1}, 5, true, true});
  if (!small) {
    // 200 segments: config 5's tables no longer fit next to its 4 stages, so it runs config 3's kernel.
    std::vector<int> many(200);
    for (int i = 0; i < 200; ++i) many[i] = (i * 37) % 41;
    cases.push_back({"S=200 E8 N512 K128 (5 falls back)", 8, 512, 128, many, 3, true, true});
    cases.push_back({"2 ranks S=2E E6 N400 K200", 6, 400, 200, twoRanks, 7, true, true});
    cases.push_back({"E2 N1024 K1024 big+tiny", 2, 1024, 1024, {4096 + 77, 3}, 0, true, true});
    cases.push_back({"ragged E8 N1536 K2048 (I768)", 8, 1536, 2048, {0, 300, 1, 129, 64, 513, 77, 128}, 9, true, true});
    // Qwen3-like gate_up with ragged random counts (not multiples of 8), 0 and 1 included.
    std::vector<int> c(64);
    uint64_t st = 7;
    for (int i = 0; i < 64; ++i) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      c[i] = int((st >> 33) % 97);
    }
    c[3] = 0, c[10] = 1, c[11] = 0, c[63] = 1;
    cases.push_back({"ragged E64 N1536 K2048", 64, 1536, 2048, c, 5, true, true});
  }
  if (doCases)
    printf("correctness (rel L2 vs fp32-accumulating reference, poisoned output; swiglu: fused vs GEMM + swiglu "
           "kernel, bitwise):\n");
  for (const Case& c : (doCases ? cases : std::vector<Case>{})) {
    int64_t R;
    const int64_t total = prepare(c, b, R);
    for (const Variant& v : kCheckVariants) failures += !check(c, b, total, R, v, nullptr);
    if (c.swiglu)
      for (const Variant& v : kCheckVariants) failures += !checkSwiglu(c, b, total, R, v);
  }

  // ---- 2. timed shapes ----
  struct Shape {
    const char* name;
    int E, N, K;
    bool gateUp;  // N = 2I of an expert's gate/up projection: also timed with the fused SwiGLU
  };
  const Shape shapes[] = {{"E80 N3072 K5120", 80, 3072, 5120, true},
                          {"E64 N1536 K2048 (qwen3 gate_up)", 64, 1536, 2048, true},
                          {"E64 N2048 K768 (qwen3 down)", 64, 2048, 768, false},
                          {"E4 N28672 K4096", 4, 28672, 4096, true}};
  std::vector<int> Ms = {32, 64, 128, 256, 512, 1024, 2048, 4096};
  std::vector<int> zipfMs = {128, 512, 2048};
  if (quick) Ms = {128, 512}, zipfMs = {512};
  FILE* loads = loadsPath ? fopen(loadsPath, "w") : nullptr;
  struct Row {
    std::string tag;
    double tf[kNumTime];
    double rel;
  };
  std::vector<Row> table;
  struct SwigluRow {
    std::string tag;
    double unfusedMs, swigluMs, fusedMs;
    SwigluCompare cmp;
  };
  std::vector<SwigluRow> swigluTable;
  if (doTime) {
    printf("timing (median of 20, TFLOP/s on useful rows):\n");
    for (const Shape& sh : shapes) {
      std::vector<std::pair<std::string, std::vector<int>>> loadsList;
      for (int M : Ms) loadsList.push_back({"bal M=" + std::to_string(M), std::vector<int>(sh.E, M)});
      for (int M : zipfMs)
        loadsList.push_back({"zipf1.2 mean=" + std::to_string(M), zipfCounts(sh.E, M, 1.2, 42 + M)});
      for (auto& [label, counts] : loadsList) {
        Case c{std::string(sh.name) + " " + label, sh.E, sh.N, sh.K, counts, 0, false};
        int64_t R;
        const int64_t total = prepare(c, b, R);
        const double flops = 2.0 * double(total) * sh.N * sh.K;
        Row row{c.tag, {}, 0};
        for (int vi = 0; vi < kNumTime; ++vi) {
          double rel;
          failures += !check(c, b, total, R, kTimeVariants[vi], &rel);
          row.rel = std::max(row.rel, rel);
          const double ms = timeIt(c, b, R, kTimeVariants[vi], 20);
          row.tf[vi] = flops / (ms * 1e-3) / 1e12;
        }
        table.push_back(row);
        if (sh.gateUp) {
          // Auto config for both (they pick the same one): GEMM into gateUp + swiglu kernel vs fused.
          const Variant v = kTimeVariants[0];
          SwigluRow sr{c.tag, 0, 0, 0, {}};
          CK(compareSwiglu(c, b, total, R, v, sr.cmp));
          failures += !sr.cmp.ok();
          const GroupedGemmSm90Args p = argsFor(c, b, R, v), f = fusedArgsFor(c, b, R, v);
          const int I = sh.N / 2;
          sr.swigluMs = medianMs([&] { swigluRef(b.ref, b.out, R, I); }, 20);
          sr.unfusedMs = medianMs([&] { CK(groupedGemmSm90(p, 0)); swigluRef(b.ref, b.out, R, I); }, 20);
          sr.fusedMs = medianMs([&] { CK(groupedGemmSm90(f, 0)); }, 20);
          swigluTable.push_back(sr);
        }
        if (loads) {
          fprintf(loads, "%s|%d %d %d", c.tag.c_str(), sh.E, sh.N, sh.K);
          for (int x : counts) fprintf(loads, " %d", x);
          fprintf(loads, "\n");
        }
      }
    }
  }
  if (loads) fclose(loads);
  double ceiling = 0;
#ifdef WITH_CUBLAS
  ceiling = cublasCeiling();
#endif
  printf("\n");
  if (ceiling > 0) printf("CEILING cublasGemmEx bf16 8192^3: %.1f TFLOP/s\n", ceiling);
  printf("VARIANTS");
  for (const Variant& v : kTimeVariants) printf(" %s", v.name);
  printf("\n");
  for (const Row& r : table) {
    double best = 0;
    printf("RESULT %s |", r.tag.c_str());
    for (int vi = 0; vi < kNumTime; ++vi) printf(" %.1f", r.tf[vi]), best = std::max(best, r.tf[vi]);
    printf(" | %.2e | %.1f%%\n", r.rel, ceiling > 0 ? 100.0 * best / ceiling : 0.0);
  }
  if (!swigluTable.empty())
    printf("\nSWIGLU fused epilogue, auto config, us (median of 20): unfused = GEMM into gateUp + swiglu kernel; "
           "bitwise: fused vs unfused\n");
  for (const SwigluRow& r : swigluTable)
    printf("SWIGLU %-50s | unfused %9.1f (swiglu kernel %7.1f) | fused %9.1f | speedup %.3fx | mismatches %llu "
           "max_abs_diff %.3e unwritten %llu tail_clobbered %llu  %s\n",
           r.tag.c_str(), 1e3 * r.unfusedMs, 1e3 * r.swigluMs, 1e3 * r.fusedMs, r.unfusedMs / r.fusedMs,
           r.cmp.mismatches, r.cmp.maxDiff, r.cmp.unwritten, r.cmp.clobbered, r.cmp.ok() ? "PASS" : "FAIL");
  printf("%s: %d failure(s)\n", failures ? "FAILED" : "ALL PASS", failures);
  return failures ? 1 : 0;
}
