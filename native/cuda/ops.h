// The CUDA backend's ops: one launcher per op of native/ops.md, each registered by its file. A
// launcher enqueues kernels (and cuBLAS calls) on the op's stream and returns; it trusts shapes and
// dtypes (checkOp ran) and checks on the device only what lives there (indices, see device_error.h).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../backend.h"
#include "stream.h"

namespace eps::cuda {

// What a launcher gets beside its arguments.
class OpContext {
 public:
  explicit OpContext(CudaStream& s) : stream(s), ctx(s.context()), cuda(s.handle()) {}

  CudaStream& stream;
  CudaContext& ctx;
  cudaStream_t cuda;

  // Device memory for the op's own use, returned when the op has been enqueued (the allocator's
  // fences keep it from reuse until the stream has passed).
  void* scratch(size_t bytes);
  // A device copy of a host table (bytes copied now, through the pinned ring, in stream order).
  void* uploadTable(const void* host, size_t bytes);

  int smCount() const { return ctx.props.multiProcessorCount; }

 private:
  std::vector<std::shared_ptr<Storage>> scratch_;
};

using CudaKernel = void (*)(OpContext&, const OpArgs&);

// Op name -> launcher, for every op in ops.md. Each launcher's file registers it, one line each, at
// load time: EPS_CUDA_OP("rmsnorm", rmsnormOp); no other list names them.
std::unordered_map<std::string, CudaKernel>& cudaKernels();

struct RegisterCudaOp {
  RegisterCudaOp(const char* op, CudaKernel launcher) { cudaKernels().emplace(op, launcher); }
};
#define EPS_CUDA_OP(op, launcher) static const ::eps::cuda::RegisterCudaOp registered_##launcher(op, launcher)

// Enqueues another op's launcher from inside a launcher (the shapes a fused kernel does not take run as the ops
// it fuses).
inline void runCudaOp(OpContext& c, const char* op, std::vector<TensorRef> tensors, std::vector<double> params = {},
                      std::vector<int64_t> ints = {}) {
  OpArgs args;
  args.name = op;
  args.tensors = std::move(tensors);
  args.params = std::move(params);
  args.ints = std::move(ints);
  cudaKernels().at(op)(c, args);
}

// Helpers the GEMM code shares with the kernels (kernels_elementwise.cu): dst = src converting
// dtype (n elements), and out[m, :] = bias for every row (broadcast, converting dtype).
void convertFloats(cudaStream_t s, void* dst, DType dstType, const void* src, DType srcType, int64_t n);
void broadcastRows(cudaStream_t s, void* out, DType outType, const void* row, DType rowType, int64_t rows, int64_t cols);

}  // namespace eps::cuda
