// Return-code checks for the CUDA runtime, cuBLAS and NCCL. Every failure throws eps::CudaError
// naming the call and the library's own error name, e.g.
//   cudaMemcpyAsync(upload): cudaErrorInvalidValue (invalid argument)
// Out-of-memory is not handled here: the allocator turns it into eps::OutOfMemory itself.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace eps::cuda {

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string cudaErrorText(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
}

inline void checkCuda(cudaError_t err, const char* call) {
  if (err != cudaSuccess) throw CudaError(std::string(call) + ": " + cudaErrorText(err));
}

// After a kernel launch: a bad launch configuration is reported here, at once; a fault inside the
// kernel surfaces later, at the next call that synchronises (or in the stream's host callbacks).
inline void checkLaunch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw CudaError(std::string("launch of ") + kernel + ": " + cudaErrorText(err));
}

}  // namespace eps::cuda

#define EPS_CUDA_CHECK(call) ::eps::cuda::checkCuda((call), #call)
