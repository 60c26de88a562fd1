// What the Hopper (sm_90a) kernels share: PTX wrappers for mbarriers, TMA loads, named barriers and
// wgmma (its fences and the m64n128k16 form with both operands in shared memory), the 128-byte-swizzle
// K-major shared-memory descriptor, and the driver's tensor-map encoder. Used by grouped_gemm_sm90.cu
// and attention_sm90.cu; the device wrappers assemble only for sm_90a and are called only from kernel
// bodies compiled for it.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <mutex>

#include "dtype.cuh"

namespace eps::cuda::sm90 {

__device__ __forceinline__ uint32_t smemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// ---- mbarriers ----
__device__ __forceinline__ void mbarInit(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred P1;\n"
      "LAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra DONE;\n"
      "bra LAB_WAIT;\n"
      "DONE:\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// ---- TMA ----
__device__ __forceinline__ void tmaLoad2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void prefetchTensorMap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// ---- named barriers (ids 1..15; 0 is __syncthreads') ----
__device__ __forceinline__ void namedBarrierSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void namedBarrierArrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// ---- wgmma ordering ----
__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving register reads/writes across the wgmma fences and waits.
__device__ __forceinline__ void fenceReg(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void fenceReg(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

// Shared-memory matrix descriptor of a K-major operand (the reduction dim along the 128-byte rows) in the
// 128-byte swizzle (layout type 1, bits 62-63): 8-row groups 1024 bytes apart (stride byte offset, bits
// 32-45); the leading byte offset is unused for this layout (1 by convention).
__device__ __forceinline__ uint64_t descKMajor(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// The fp32 accumulator operands of a wgmma m64nNk16 (N/2 per thread) as inline-asm read-write
// operands: EPS_SM90_ACC64(d) is "+f"(d[0]), ..., "+f"(d[63]) (N = 128).
#define EPS_SM90_ACC8(d, o)                                                                                   \
  "+f"(d[o + 0]), "+f"(d[o + 1]), "+f"(d[o + 2]), "+f"(d[o + 3]), "+f"(d[o + 4]), "+f"(d[o + 5]), "+f"(d[o + 6]), \
      "+f"(d[o + 7])
#define EPS_SM90_ACC32_AT(d, o) \
  EPS_SM90_ACC8(d, o + 0), EPS_SM90_ACC8(d, o + 8), EPS_SM90_ACC8(d, o + 16), EPS_SM90_ACC8(d, o + 24)
#define EPS_SM90_ACC32(d) EPS_SM90_ACC32_AT(d, 0)
#define EPS_SM90_ACC64(d) EPS_SM90_ACC32_AT(d, 0), EPS_SM90_ACC32_AT(d, 32)
#define EPS_SM90_ACC128(d) EPS_SM90_ACC64(d), EPS_SM90_ACC32_AT(d, 64), EPS_SM90_ACC32_AT(d, 96)

// wgmma m64n128k16, bf16 x bf16 -> fp32, both operands from shared memory and K-major (descKMajor);
// scaleD 0 overwrites d, 1 accumulates into it.
__device__ __forceinline__ void wgmmaSS_m64n128k16(float* d, uint64_t descA, uint64_t descB, int scaleD) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : EPS_SM90_ACC64(d)
      : "l"(descA), "l"(descB), "r"(scaleD));
}

// The driver's cuTensorMapEncodeTiled through the runtime (no -lcuda), looked up once; null where the
// driver lacks it (the kernels then report themselves unsupported).
inline PFN_cuTensorMapEncodeTiled_v12000 encodeTiled() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  return fn;
}

}  // namespace eps::cuda::sm90
