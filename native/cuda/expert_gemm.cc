// expert_matmul: the expert FFN GEMM over ragged per-expert row counts, in the kernels the EPS
// scheduler chooses between.
//
//   kernel 1, dense:        one cublasGemmEx per non-empty segment (best when experts have many rows:
//                           each GEMM runs at cuBLAS's full rate).
//   kernel 0, grouped:      one launch for every segment, through cublasGemmGroupedBatchedEx (best
//                           when experts have few rows: no per-expert launch gaps). cuBLAS's grouped
//                           API stays near 330 TFLOP/s on H100/H200 (../shared/gpu/README.md).
//   kernel 2, grouped_sm90: our Hopper grouped GEMM (grouped_gemm_sm90.cu: wgmma + TMA, persistent over
//                           a device-side work list), where it runs: a device of compute capability 9.0
//                           with the sm_90a image built, a, w and out bf16, N % 8 == 0, K % 8 == 0
//                           (groupedGemmSm90Takes). Elsewhere it is kernel 0, with the same result.
//
// swiglu (w = each expert's gate rows then up rows, out[R, N/2] = silu(gate) * up): grouped_sm90 applies it
// in its epilogue, so the [R, N] product is never written; the other kernels write the product to scratch
// memory and the swiglu op's kernel reads it (the same bits: the epilogue rounds gate and up to bf16 first).
//
// The counts come from host memory (ints) or from device memory (the optional segmentCounts tensor, so that a
// lone rank need not wait for them: moe_permute writes them). grouped_sm90 takes device counts as they are
// (a one-thread scan turns them into offsets in scratch memory); the others copy them to the host first,
// which waits for the stream.
#include <climits>
#include <cstdlib>
#include <vector>

#include "../opcheck.h"
#include "blas.h"
#include "grouped_gemm_sm90.h"

namespace eps::cuda {

namespace {

// Rows [row0, row0 + rows) of a and out use expert `expert`'s weights.
struct Segment {
  int64_t expert;
  int64_t row0;
  int64_t rows;
};

struct ExpertProblem {
  const void* a;   // [R, K], plan.inType
  const void* w;   // [E, N, K], plan.inType
  void* out;       // [R, N], plan.outType
  DType inType, outType;
  int64_t N, K;
  std::vector<Segment> segments;  // non-empty ones only
};

void denseGemms(cublasHandle_t h, const ExpertProblem& p) {
  const size_t inSize = dtypeSize(p.inType), outSize = dtypeSize(p.outType);
  for (const Segment& s : p.segments) {
    const auto* a = static_cast<const char*>(p.a) + s.row0 * p.K * inSize;
    const auto* w = static_cast<const char*>(p.w) + s.expert * p.N * p.K * inSize;
    auto* out = static_cast<char*>(p.out) + s.row0 * p.N * outSize;
    gemmRowMajor(h, a, w, p.inType, out, p.outType, s.rows, p.N, p.K, 0.0f);
  }
}

// cuBLAS's grouped GEMM takes these type pairs only (fp32 compute).
bool groupedTakes(DType in, DType out) { return in == out; }

void groupedGemm(OpContext& c, cublasHandle_t h, const ExpertProblem& p) {
  const int G = int(p.segments.size());
  const size_t inSize = dtypeSize(p.inType), outSize = dtypeSize(p.outType);
  // One group per segment (their row counts differ); the matrices' addresses go to the device as
  // one table: A (weights), B (activations), C (outputs).
  std::vector<cublasOperation_t> transA(G, CUBLAS_OP_T), transB(G, CUBLAS_OP_N);
  std::vector<int> m(G, int(p.N)), n(G), k(G, int(p.K)), lda(G, int(p.K)), ldb(G, int(p.K)), ldc(G, int(p.N)),
      groupSize(G, 1);
  std::vector<float> alpha(G, 1.0f), beta(G, 0.0f);
  std::vector<const void*> table(size_t(3) * G);
  for (int g = 0; g < G; ++g) {
    const Segment& s = p.segments[g];
    n[g] = int(s.rows);
    table[g] = static_cast<const char*>(p.w) + s.expert * p.N * p.K * inSize;
    table[G + g] = static_cast<const char*>(p.a) + s.row0 * p.K * inSize;
    table[2 * G + g] = static_cast<char*>(p.out) + s.row0 * p.N * outSize;
  }
  auto* devTable = static_cast<void**>(c.uploadTable(table.data(), table.size() * sizeof(void*)));
  const void* const* aArray = const_cast<const void* const*>(devTable);
  const void* const* bArray = const_cast<const void* const*>(devTable + G);
  void* const* cArray = devTable + 2 * G;
  checkCublas(cublasGemmGroupedBatchedEx(h, transA.data(), transB.data(), m.data(), n.data(), k.data(), alpha.data(),
                                         aArray, cudaTypeOf(p.inType), lda.data(), bArray, cudaTypeOf(p.inType),
                                         ldb.data(), beta.data(), cArray, cudaTypeOf(p.outType), ldc.data(), G,
                                         groupSize.data(), CUBLAS_COMPUTE_32F),
              "cublasGemmGroupedBatchedEx");
}

// Kernel 2 where it runs: out = the grouped product through the Hopper kernel, the S segment counts in host
// memory (hostCounts) or in device memory (deviceCounts, S of them). False (nothing enqueued but the offsets'
// upload) where it does not: not bf16, not a 9.0 device or no sm_90a image, a shape it does not take; the
// caller then runs kernel 0.
// EPS_GROUPED_SM90_CONFIG (1-5, grouped_gemm_sm90.h) forces one config of the Hopper grouped GEMM, for
// measurement (a whole prefill with config 5 against auto); unset or anything else, auto.
int groupedSm90Config() {
  const char* env = std::getenv("EPS_GROUPED_SM90_CONFIG");
  const int config = env ? std::atoi(env) : 0;
  return config >= 1 && config <= 5 ? config : 0;
}

// EPS_GROUPED_SM90_BAND (a count of m-tiles, GroupedGemmSm90Args::bandM) sets the tile order's band, for measurement;
// unset or not positive, the kernel's default.
int groupedSm90Band() {
  const char* env = std::getenv("EPS_GROUPED_SM90_BAND");
  const int band = env ? std::atoi(env) : 0;
  return band > 0 ? band : 0;
}

bool groupedGemmSm90Ran(OpContext& c, const TensorRef& out, const TensorRef& a, const TensorRef& w, bool swiglu,
                        const std::vector<int64_t>* hostCounts, const int32_t* deviceCounts, size_t S) {
  if (a.dtype != DType::BF16 || w.dtype != DType::BF16 || out.dtype != DType::BF16) return false;
  if (!groupedGemmSm90Supported(c.ctx.device)) return false;
  const int64_t R = a.dim(0), K = a.dim(1), E = w.dim(0), N = w.dim(1);
  if (K % 8 != 0 || N % 8 != 0 || S > size_t(INT_MAX) - 1) return false;
  GroupedGemmSm90Args g{};
  g.a = a.data;
  g.w = w.data;
  g.out = out.data;
  g.R = R;
  g.S = int(S);
  g.E = int(E);
  g.N = int(N);
  g.K = int(K);
  g.config = groupedSm90Config();  // 0, auto: by rows per expert (R / E)
  g.bandM = groupedSm90Band();
  g.swiglu = swiglu;
  g.offsets = reinterpret_cast<const int32_t*>(a.data);  // a non-null stand-in: Takes reads only whether it is set
  if (!groupedGemmSm90Takes(g)) return false;
  if (hostCounts) {
    // Segment s is rows [offsets[s], offsets[s+1]) (R <= INT_MAX, checked by the caller).
    std::vector<int32_t> offsets(S + 1, 0);
    for (size_t s = 0; s < S; ++s) offsets[s + 1] = int32_t(offsets[s] + (*hostCounts)[s]);
    g.offsets = static_cast<const int32_t*>(c.uploadTable(offsets.data(), offsets.size() * sizeof(int32_t)));
  } else {
    // The kernel clamps offsets to [0, R]: counts that overrun R leave rows unwritten, never out of bounds.
    auto* offsets = static_cast<int32_t*>(c.scratch((S + 1) * sizeof(int32_t)));
    checkCuda(groupedGemmSm90Offsets(deviceCounts, int(S), offsets, c.cuda), "groupedGemmSm90Offsets(expert_matmul)");
    g.offsets = offsets;
  }
  const cudaError_t err = groupedGemmSm90(g, c.cuda);
  if (err == cudaErrorInvalidValue) {
    cudaGetLastError();  // not launched (a config that does not fit this device): the caller falls back
    return false;
  }
  checkCuda(err, "groupedGemmSm90(expert_matmul)");
  return true;
}

}  // namespace

void expertMatmulOp(OpContext& c, const OpArgs& args);

namespace {

// expert_matmul with swiglu where the Hopper epilogue does not run: the product [R, N] into scratch memory
// (the host counts' rows: with device counts their sum may be below R), then the swiglu op over those rows.
void swigluThroughScratch(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  int64_t rows = 0;
  for (int64_t n : args.ints) rows += n;
  if (rows == 0) return;
  const int64_t N = args.tensors[2].dim(1);
  OpArgs product = args;
  product.params[1] = 0.0;
  TensorRef& full = product.tensors[0];
  full = withShape(out, {args.tensors[1].dim(0), N});
  full.data = c.scratch(size_t(full.numel()) * dtypeSize(full.dtype));
  expertMatmulOp(c, product);
  runCudaOp(c, "swiglu", {withShape(out, {rows, N / 2}), withShape(full, {rows, N})});
}

}  // namespace

// tensors: out[R,N] (with swiglu [R,N/2]), a[R,K], w[E,N,K], segmentCounts[S] i32 (optional: the counts on the
// device); params: kernel (0 grouped, 1 dense, 2 grouped_sm90), swiglu; ints: counts[S] (when segmentCounts is absent), S a multiple
// of E, segment s using expert s % E.
void expertMatmulOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& a = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const TensorRef* deviceCounts = args.tensors.size() > 3 && args.tensors[3].present() ? &args.tensors[3] : nullptr;
  const int64_t R = a.dim(0), K = a.dim(1), E = w.dim(0), N = w.dim(1);
  if (R == 0 || N == 0) return;
  if (N > INT_MAX || K > INT_MAX || R > INT_MAX) throw std::invalid_argument("expert_matmul: a dimension is over cuBLAS's int range");

  const bool sm90 = args.params[0] == 2.0;
  const bool swiglu = args.params[1] != 0.0;
  if (deviceCounts) {
    const size_t S = size_t(deviceCounts->numel());
    if (sm90 && K > 0 && groupedGemmSm90Ran(c, out, a, w, swiglu, nullptr, deviceCounts->as<const int32_t>(), S)) return;
    // The other kernels plan their GEMMs on the host: bring the counts there (this waits for the stream).
    std::vector<int32_t> host(S);
    checkCuda(cudaMemcpyAsync(host.data(), deviceCounts->data, S * sizeof(int32_t), cudaMemcpyDeviceToHost, c.cuda),
              "cudaMemcpyAsync(expert_matmul counts)");
    checkCuda(cudaStreamSynchronize(c.cuda), "cudaStreamSynchronize(expert_matmul counts)");
    OpArgs withCounts = args;
    withCounts.tensors.resize(3);
    withCounts.ints = checkedDeviceCounts(host.data(), S, R);
    expertMatmulOp(c, withCounts);
    return;
  }
  if (sm90 && K > 0 && groupedGemmSm90Ran(c, out, a, w, swiglu, &args.ints, nullptr, args.ints.size())) return;
  if (swiglu) {
    swigluThroughScratch(c, args);
    return;
  }
  if (K == 0) {
    checkCuda(cudaMemsetAsync(out.data, 0, size_t(out.numel()) * dtypeSize(out.dtype), c.cuda), "cudaMemsetAsync(expert_matmul)");
    return;
  }

  cublasHandle_t h = blasHandle(c);
  const GemmPlan plan = planGemm(c, out, a, w);
  ExpertProblem p{plan.a, w.data, plan.out, plan.inType, plan.outType, N, K, {}};
  int64_t row = 0;
  for (size_t s = 0; s < args.ints.size(); ++s) {
    const int64_t rows = args.ints[s];
    if (rows > 0) p.segments.push_back({int64_t(s) % E, row, rows});
    row += rows;
  }
  // Kernel 2 lands here where the Hopper kernel does not run: as kernel 0.
  const bool grouped = args.params[0] != 1.0 && groupedTakes(p.inType, p.outType) && p.segments.size() > 1;
  if (grouped) groupedGemm(c, h, p);
  else denseGemms(h, p);
  finishGemm(c, plan, out);
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("expert_matmul", expertMatmulOp);

}  // namespace eps::cuda
